// Package loop is gopasst's single event loop: one epoll instance on one
// locked OS thread handles every descriptor (the guest back end, every
// flow's socket, listeners, timers), not the Go netpoller and not a
// goroutine per connection. That is what makes batching and a flat,
// allocation-free hot path possible.
//
// Theory of operation: each registered descriptor carries a 64-bit Ref in
// its epoll data naming what it is (a Kind, one byte) and which flow or
// rule it belongs to. A turn of the loop waits for events (or the next
// timer), dispatches each to the handler registered for its Kind, fires the
// timers that are due, and then runs the end-of-turn hooks in order: this is
// where frames queued for the guest are flushed in one batch and where
// closed flows are finally freed, so a handler never frees state that a
// later event of the same turn still refers to.
package loop

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
)

// Kind says what a registered descriptor is, choosing its handler.
type Kind uint8

// Ref is the 64-bit epoll cookie: Kind in the top byte, the descriptor in
// the next 24 bits (fds stay below 2^24, as in the C original), and a 32-bit
// index (flow, rule or side) at the bottom.
type Ref uint64

// MakeRef builds a Ref.
func MakeRef(k Kind, fd int, index uint32) Ref {
	return Ref(uint64(k)<<56 | uint64(fd&0xffffff)<<32 | uint64(index))
}

// Kind returns the kind of descriptor r names.
func (r Ref) Kind() Kind { return Kind(r >> 56) }

// FD returns the descriptor r names.
func (r Ref) FD() int { return int(r>>32) & 0xffffff }

// Index returns the flow, rule or side index r carries.
func (r Ref) Index() uint32 { return uint32(r) }

// Handler handles the epoll events of one descriptor.
type Handler func(r Ref, events uint32)

// Loop is the event loop. It is not safe for concurrent use: everything runs
// on the thread that calls Run.
type Loop struct {
	epfd     int
	handlers [256]Handler
	events   []unix.EpollEvent
	endTurn  []func()
	timers   Timers
	ticks    []tick
	start    time.Time
	now      int64 // ns since start, refreshed once per turn
	stop     bool

	// Busy polling (SetBusyPoll): the most and the current spin
	// before a wait that would block, in ns; 0 max: off.
	spinMax, spin int64
	Spins         SpinStats
}

// SpinStats counts what busy polling did.
type SpinStats struct {
	Caught, Missed uint64 // spins that found events, spins that ended in a blocking wait
	SpinNs         int64  // time spent spinning
}

type tick struct {
	every int64
	next  int64
	fn    func(now int64)
}

// MaxEvents is how many events one epoll_wait returns at most.
const MaxEvents = 256

// New creates the loop with room for timerCap timers.
func New(timerCap int) (*Loop, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l := &Loop{epfd: fd, events: make([]unix.EpollEvent, MaxEvents), start: time.Now()}
	l.timers.init(timerCap)
	return l, nil
}

// Handle registers h for descriptors of kind k.
func (l *Loop) Handle(k Kind, h Handler) { l.handlers[k] = h }

// OnTurnEnd adds a hook run after every turn, in registration order.
func (l *Loop) OnTurnEnd(f func()) { l.endTurn = append(l.endTurn, f) }

// Every runs fn every d, from the loop's thread (the 1 s housekeeping tick).
func (l *Loop) Every(d time.Duration, fn func(now int64)) {
	l.ticks = append(l.ticks, tick{every: int64(d), next: l.Now() + int64(d), fn: fn})
}

func epollData(ev *unix.EpollEvent, r Ref) {
	ev.Fd = int32(uint32(r))
	ev.Pad = int32(uint32(r >> 32))
}

func refOf(ev *unix.EpollEvent) Ref {
	return Ref(uint64(uint32(ev.Pad))<<32 | uint64(uint32(ev.Fd)))
}

// Add registers fd for events with ref r.
func (l *Loop) Add(fd int, events uint32, r Ref) error {
	ev := unix.EpollEvent{Events: events}
	epollData(&ev, r)
	if e := sys.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); e != 0 {
		return fmt.Errorf("epoll_ctl add fd %d: %w", fd, e)
	}
	return nil
}

// Mod changes the events and ref of a registered fd.
func (l *Loop) Mod(fd int, events uint32, r Ref) error {
	ev := unix.EpollEvent{Events: events}
	epollData(&ev, r)
	if e := sys.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev); e != 0 {
		return fmt.Errorf("epoll_ctl mod fd %d: %w", fd, e)
	}
	return nil
}

// Del removes fd from the loop. Closing a descriptor removes it too; Del is
// for descriptors that stay open.
func (l *Loop) Del(fd int) {
	sys.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// Now returns the monotonic time in nanoseconds since the loop started, as
// of the current turn.
func (l *Loop) Now() int64 {
	if l.now == 0 {
		l.now = int64(time.Since(l.start))
	}
	return l.now
}

// Refresh re-reads the clock (for handlers that need a fresh time mid-turn).
func (l *Loop) Refresh() int64 {
	l.now = int64(time.Since(l.start))
	return l.now
}

// Timers gives access to the loop's per-flow timers.
func (l *Loop) Timers() *Timers { return &l.timers }

// Stop makes Run return after the current turn.
func (l *Loop) Stop() { l.stop = true }

// Run turns the loop until Stop is called or epoll fails.
func (l *Loop) Run() error {
	for !l.stop {
		if err := l.Turn(-1); err != nil {
			return err
		}
	}
	return nil
}

// Turn waits at most maxWait (negative: until the next timer or event) and
// handles what happened, then runs the end-of-turn hooks.
func (l *Loop) Turn(maxWait time.Duration) error {
	timeout := l.nextWait()
	if maxWait >= 0 {
		ms := int(maxWait / time.Millisecond)
		if timeout < 0 || ms < timeout {
			timeout = ms
		}
	}
	var n int
	var e unix.Errno
	if timeout != 0 && l.spinMax > 0 {
		n, e = l.spinWait(timeout)
	} else {
		n, e = sys.EpollWait(l.epfd, l.events, timeout)
	}
	if e != 0 {
		return fmt.Errorf("epoll_wait: %w", e)
	}
	l.Refresh()
	for i := 0; i < n; i++ {
		ev := &l.events[i]
		r := refOf(ev)
		if h := l.handlers[r.Kind()]; h != nil {
			h(r, ev.Events)
		}
	}
	l.timers.fire(l.now)
	for i := range l.ticks {
		t := &l.ticks[i]
		if l.now >= t.next {
			t.next = l.now + t.every
			t.fn(l.now)
		}
	}
	for _, f := range l.endTurn {
		f()
	}
	return nil
}

// SetBusyPoll makes the loop spin on the epoll instance for up to max
// before a wait that would block, adaptively: the spin grows (doubling,
// up to max) when events came soon after it gave up, and shrinks (halving)
// when it gave up and the wait then lasted longer than max, so that a
// loop whose events come at long intervals soon stops spinning (as the
// kernel's haltpoll governor does for idle CPUs). An event caught while
// spinning saves the sleep and the wake-up of the loop's thread (a
// context switch each, and the scheduler's latency): a request/response
// exchange is answered sooner, for the CPU time of the spin. 0 turns it
// off (the default).
func (l *Loop) SetBusyPoll(max time.Duration) {
	l.spinMax = int64(max)
	l.spin = l.spinMax
}

// spinWait is the wait of a turn with busy polling: non-blocking polls
// until an event comes or the spin is over, then a blocking wait of at
// most timeout ms (-1: none), with the spin adapted (see SetBusyPoll).
// Returns what EpollWait returns.
func (l *Loop) spinWait(timeout int) (int, unix.Errno) {
	start := l.Refresh()
	if l.spin > 0 {
		end := start + l.spin
		for {
			n, e := sys.EpollPoll(l.epfd, l.events)
			if n != 0 || e != 0 {
				l.Spins.Caught++
				l.Spins.SpinNs += l.Refresh() - start
				return n, e
			}
			if l.Refresh() >= end {
				break
			}
		}
		l.Spins.SpinNs += l.now - start
	}
	l.Spins.Missed++
	blockStart := l.Refresh()
	n, e := sys.EpollWait(l.epfd, l.events, timeout)
	waited := l.Refresh() - blockStart
	switch {
	case waited > l.spinMax:
		// Spinning longer would not have caught it: spin less.
		l.spin /= 2
		if l.spin < l.spinMax/64 {
			l.spin = 0
		}
	case n > 0:
		// It came soon after the spin gave up: spin longer.
		l.spin = min(max(2*l.spin, l.spinMax/16), l.spinMax)
	}
	return n, e
}

// nextWait returns the epoll timeout in ms until the earliest timer or tick,
// -1 for none. Timers are rounded up so that a due timer is never polled
// early in a busy loop.
func (l *Loop) nextWait() int {
	now := l.Refresh()
	next := int64(-1)
	if d, ok := l.timers.earliest(); ok {
		next = d
	}
	for _, t := range l.ticks {
		if next < 0 || t.next < next {
			next = t.next
		}
	}
	if next < 0 {
		return -1
	}
	if next <= now {
		return 0
	}
	return int((next - now + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}
