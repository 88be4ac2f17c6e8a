// The engine's types and its public face: options, New, Connect, Close and
// the counters.

package splice

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

// Side says in which network namespace a socket is made.
type Side uint8

const (
	Host Side = iota // the translator's own namespace (the calling thread)
	NS               // pasta's namespace: through Options.NSDo
)

// String returns "host" or "namespace".
func (s Side) String() string {
	if s == Host {
		return "host"
	}
	return "namespace"
}

// Options configures a Handler.
type Options struct {
	// NSDo runs fn on a thread inside pasta's namespace and returns its
	// error (netns.NS.Do). Nil: NS sockets are made on the calling thread
	// (tests that run everything in one namespace).
	NSDo func(fn func() error) error
	// PoolSize is how many sockets are pre-opened per family per side (0:
	// 32, as the C original).
	PoolSize int
	// Pipes is how many pipe pairs (the two pipes of one connection) are
	// kept ready (0: 32).
	Pipes int
	// MaxConns is the most connections at once (0: 16384); beyond it
	// Connect refuses.
	MaxConns int
	// Accel is an optional in-kernel path (nil: splice only).
	Accel Accelerator
}

// Accelerator moves the bytes of two connected sockets inside the kernel
// (an eBPF sockmap, built in datapath/sockmap).
type Accelerator interface {
	// Pair makes the kernel forward what a receives to b and what b
	// receives to a. Called once both sockets are connected and before any
	// byte was spliced. An error means: keep splicing (logged once at
	// debug).
	Pair(a, b int) error
	// Unpair undoes Pair; called before either socket is closed.
	Unpair(a, b int)
}

// Reader is an Accelerator that also gives the read side of its paired
// connections (datapath/sockmap): the engine calls Read in place of
// splice(from -> pipe) for them. It returns what splice would (bytes now
// in the pipe, 0 at the end of stream, an errno), and unix.EBUSY while
// the kernel still holds bytes of from's for to: the direction then
// neither reads nor shuts to down, and waits for EPOLLOUT on to.
type Reader interface {
	Read(from, to, pipe, n int) (int, unix.Errno)
}

// Stats are the engine's counters since New. Every Connect is Accepted;
// it ends Refused (no connection: refused at once, or the connect failed)
// or Connected, and every connected one ends Reset or Closed (cleanly).
type Stats struct {
	Accepted     uint64 // Connect calls
	Connected    uint64 // connects that completed
	Refused      uint64 // Connect calls that got no connection
	Reset        uint64 // connected ones ended by a reset
	Closed       uint64 // connected ones ended by FINs both ways
	BytesToDst   uint64 // bytes from accepted sockets to their destinations
	BytesFromDst uint64 // bytes back
	Pairs        uint64 // connections the Accelerator took
	PairErrors   uint64 // connections it refused
}

const (
	defaultPoolSize = 32
	defaultPipes    = 32
	defaultMaxConns = 16384
	// maxPipeSize is the first pipe size tried; it halves until all pipes
	// of the first pool take it.
	maxPipeSize = 8 << 20
	// maxRounds bounds the reads of one direction per event.
	maxRounds = 8
	// maxFD: descriptors must fit the 24 bits of a loop.Ref.
	maxFD = 1<<24 - 1
)

// Handler is the splice engine. It is not safe for concurrent use: all of
// it runs on the loop's thread (New may run before the loop turns).
type Handler struct {
	l     *loop.Loop
	nsDo  func(fn func() error) error
	accel Accelerator
	rd    Reader // accel, if it is a Reader

	conns   []conn
	free    []int32 // free slots, used from the end
	closing []int32 // slots closed this turn, freed at its end
	n       int     // connections open

	socks    [2][2]sockPool // [Side][family: 0 IPv4, 1 IPv6]
	pipes    pipePool
	pipeSize int

	stats      Stats
	fillNS     func() error // h.fillNSPools, bound once (no allocation per call)
	sa4        unix.RawSockaddrInet4
	sa6        unix.RawSockaddrInet6
	pairLogged bool
	done       bool
}

// New creates the handler, registers it with l for loop.KindTCPSplice (and
// its end-of-turn hook and 1 s refill tick), sizes the pipes (F_SETPIPE_SZ:
// 8 MiB tried on the first pool of pipes, halving until all succeed, never
// below the default) and fills the pools. Call it before the sandbox
// (seccomp): it may enter the namespace through NSDo.
//
// l: the event loop whose thread runs the handler; o: the options (zero
// values take the defaults). Returns the handler, or an error if the pipes
// cannot be made (a socket pool that cannot be filled is not an error: see
// Connect).
func New(l *loop.Loop, o Options) (*Handler, error) {
	if o.PoolSize <= 0 {
		o.PoolSize = defaultPoolSize
	}
	if o.Pipes <= 0 {
		o.Pipes = defaultPipes
	}
	if o.MaxConns <= 0 {
		o.MaxConns = defaultMaxConns
	}
	if o.MaxConns > 1<<30 {
		return nil, fmt.Errorf("splice: %d connections at most is beyond 2^30", o.MaxConns)
	}
	h := &Handler{
		l:       l,
		nsDo:    o.NSDo,
		accel:   o.Accel,
		conns:   make([]conn, o.MaxConns),
		free:    make([]int32, o.MaxConns),
		closing: make([]int32, 0, o.MaxConns),
	}
	for i := range h.free {
		// Slot 0 at the end: the first connections take the lowest slots.
		h.free[i] = int32(o.MaxConns - 1 - i)
		h.conns[i].reset()
	}
	for s := range h.socks {
		for f := range h.socks[s] {
			h.socks[s][f].init(o.PoolSize)
		}
	}
	h.rd, _ = o.Accel.(Reader)
	h.fillNS = h.fillNSPools
	size, err := h.pipes.init(o.Pipes)
	if err != nil {
		h.closePools()
		return nil, err
	}
	h.pipeSize = size
	h.Refill()
	l.Handle(loop.KindTCPSplice, h.event)
	l.OnTurnEnd(h.reap)
	l.Every(time.Second, h.tick)
	if logging.Debugging() {
		logging.Debugf("TCP splice: pipes of %d bytes, %d sockets per pool", size, o.PoolSize)
	}
	return h, nil
}

// Errors Connect returns (wrapped with the details).
var (
	ErrTooMany  = errors.New("too many spliced connections")
	ErrNoSocket = errors.New("no socket in the pool")
	ErrClosed   = errors.New("splice handler closed")
)

// Connect splices fd, a connection just accepted (non-blocking) on a
// listener, to a new connection towards dst from a socket of side to (taken
// from the pool of dst's family). It owns fd from now on whatever happens:
// on failure fd is closed with a reset (SO_LINGER 0). Allocation-free in
// steady state.
//
// fd: the accepted socket; to: the side the new connection is made from;
// dst: where it goes. Returns nil once the connect is under way (its
// completion or failure comes as events), or the error, for the caller's
// debug log.
func (h *Handler) Connect(fd int, to Side, dst netip.AddrPort) error {
	h.stats.Accepted++
	if h.done {
		return h.refuse(fd, ErrClosed)
	}
	if fd < 0 || fd > maxFD {
		return h.refuse(fd, fmt.Errorf("splice: descriptor %d beyond %d", fd, maxFD))
	}
	if len(h.free) == 0 {
		return h.refuse(fd, fmt.Errorf("splice: to %v: %w (%d)", dst, ErrTooMany, len(h.conns)))
	}
	addr := dst.Addr().Unmap()
	fam := 1
	if addr.Is4() {
		fam = 0
	} else if !addr.Is6() {
		return h.refuse(fd, fmt.Errorf("splice: invalid destination %v", dst))
	}
	p := &h.socks[to&1][fam]
	if p.n == 0 {
		h.fillSide(to & 1)
	}
	s := p.take()
	if s < 0 {
		return h.refuse(fd, fmt.Errorf("splice: to %v: %w (%s, IPv%d)", dst, ErrNoSocket, to, 4+2*fam))
	}
	if s > maxFD {
		unix.Close(s)
		return h.refuse(fd, fmt.Errorf("splice: pooled descriptor %d beyond %d", s, maxFD))
	}
	if e := h.connect(s, addr, dst.Port()); e != 0 && e != unix.EINPROGRESS {
		unix.Close(s)
		return h.refuse(fd, fmt.Errorf("splice: connect to %v: %w", dst, e))
	}
	i := h.free[len(h.free)-1]
	h.free = h.free[:len(h.free)-1]
	c := &h.conns[i]
	c.sock = [2]int32{int32(fd), int32(s)}
	c.flags = fUsed | fConnecting
	c.events = [2]uint32{unix.EPOLLET, unix.EPOLLOUT}
	h.n++
	for k := 0; k < 2; k++ {
		if err := h.l.Add(int(c.sock[k]), c.events[k], ref(i, k, c.sock[k])); err != nil {
			h.stats.Refused++
			h.close(i, true)
			return fmt.Errorf("splice: to %v: %w", dst, err)
		}
	}
	if p.n < p.size/2 {
		h.Refill()
	}
	return nil
}

// refuse ends a Connect that got no connection: fd closed with a reset,
// counted. Returns err.
func (h *Handler) refuse(fd int, err error) error {
	h.stats.Refused++
	if fd >= 0 {
		sys.CloseRST(fd)
	}
	return err
}

// ref returns the loop reference of socket k (0: accepted, 1: connected)
// of slot i, whose descriptor is fd.
func ref(i int32, k int, fd int32) loop.Ref {
	return loop.MakeRef(loop.KindTCPSplice, int(fd), uint32(i)<<1|uint32(k))
}

// Conns returns how many connections are open now (connecting included).
func (h *Handler) Conns() int { return h.n }

// Stats returns the counters.
func (h *Handler) Stats() Stats { return h.stats }

// PipeSize returns the pipe size New chose, in bytes.
func (h *Handler) PipeSize() int { return h.pipeSize }

// Close resets every open connection and closes the pools: for tests and
// shutdown. The handler refuses connections afterwards; its loop hooks stay
// registered and do nothing.
func (h *Handler) Close() {
	if h.done {
		return
	}
	for i := range h.conns {
		if c := &h.conns[i]; c.flags&fUsed != 0 && c.flags&fClosed == 0 {
			if c.flags&fConnecting != 0 {
				h.stats.Refused++
			} else {
				h.stats.Reset++
			}
			h.close(int32(i), true)
		}
	}
	h.reap()
	h.closePools()
	h.l.Handle(loop.KindTCPSplice, nil)
	h.done = true
}

// tick is the loop's 1 s callback: it tops up the pools.
func (h *Handler) tick(int64) {
	if !h.done {
		h.Refill()
	}
}

// reap frees the slots of the connections closed during the turn (the
// loop's end-of-turn hook).
func (h *Handler) reap() {
	for _, i := range h.closing {
		h.conns[i].reset()
		h.free = append(h.free, i)
	}
	h.closing = h.closing[:0]
}

// The calls a connection's set-up and teardown make after the sandbox.
var (
	_ = allow.Syscall(allow.Pasta, "connect", "splice: a pooled socket's non-blocking connect towards a spliced connection's destination (Handler.Connect)")
	_ = allow.Syscall(allow.Pasta, "close", "splice: closing spliced sockets and their pipes (Handler.close), and a refused connection (sys.CloseRST)")
	_ = allow.Syscall(allow.Pasta, "setsockopt", "splice: SO_LINGER 0 for resets (sys.CloseRST), TCP_NODELAY and TCP_QUICKACK on connected sockets (Handler.established)")
)

// connect starts a non-blocking connect of s to addr, port (addr is IPv4
// or IPv6, unmapped). Returns the errno (EINPROGRESS: under way).
func (h *Handler) connect(s int, addr netip.Addr, port uint16) unix.Errno {
	if addr.Is4() {
		h.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.As4()}
		setPort(&h.sa4.Port, port)
		return connect4(s, &h.sa4)
	}
	h.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.As16()}
	setPort(&h.sa6.Port, port)
	return connect6(s, &h.sa6)
}
