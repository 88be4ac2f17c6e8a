// Package engine assembles the datapath: the event loop, the flow table, the
// guest back end, the demultiplexer, the local services and the protocols,
// and runs them. Both modes and the in-process tests build their datapath
// here, so the wiring exists once.
//
// Theory of operation: one loop turn reads every frame the guest has queued
// (in batches of Batch frames), hands each batch to the demultiplexer, lets
// the protocols react to host sockets that became ready, and at the end of
// the turn writes every frame queued towards the guest and frees the flows
// that closed. New reads from the guest stop while the frames it caused are
// unwritten only within a turn; the queue is sized so that a full batch of
// guest frames can be answered without an intermediate flush.
package engine

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/demux"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/icmp"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/tap"
	"gopasst/datapath/tcp"
	"gopasst/datapath/udp"
)

// Batch is how many frames are read from the guest per batch.
const Batch = 128

// Engine is a running datapath.
type Engine struct {
	Cfg   *config.Config
	Guest guest.State
	Loop  *loop.Loop
	Flows *flow.Table
	Dev   *tap.Device
	Demux *demux.Demux
	TCP   *tcp.Handler
	UDP   *udp.Handler
	ICMP  *icmp.Handler

	inBufs  [][]byte
	inSizes []int
	inMem   []byte
	frames  [][]byte
	closed  bool
	err     error
}

// Options are the pieces opened before the sandbox that the engine uses.
type Options struct {
	TapFD int      // the guest back end's descriptor (tap device)
	Pcap  tap.Pcap // nil: no capture
	// ICMP holds raw ICMP sockets opened with privileges before the
	// sandbox (nil: ping sockets per flow only).
	ICMP *icmp.Sockets
}

// New builds the datapath for cfg around the guest back end in o.
func New(cfg *config.Config, o Options) (*Engine, error) {
	minProcs()
	l, err := loop.New(flow.MaxFlows)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		Cfg:     cfg,
		Loop:    l,
		Flows:   flow.New(flow.MaxFlows),
		Dev:     tap.NewDevice(o.TapFD, 2*Batch, o.Pcap),
		inBufs:  make([][]byte, Batch),
		inSizes: make([]int, Batch),
		frames:  make([][]byte, 0, Batch),
	}
	e.Guest.MAC = cfg.GuestMAC
	if e.Guest.MAC == [6]byte{} {
		e.Guest.MAC = guest.BroadcastMAC
	}
	e.inMem = make([]byte, Batch*tap.MaxFrame)
	for i := range e.inBufs {
		e.inBufs[i] = e.inMem[i*tap.MaxFrame : (i+1)*tap.MaxFrame : (i+1)*tap.MaxFrame]
	}
	e.Demux = demux.New(cfg, &e.Guest, Batch)
	l.Handle(loop.KindTap, e.tapReady)
	if err := l.Add(o.TapFD, unix.EPOLLIN|unix.EPOLLRDHUP, loop.MakeRef(loop.KindTap, o.TapFD, 0)); err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	l.OnTurnEnd(e.Dev.Flush)
	if err := e.wire(o); err != nil {
		return nil, err
	}
	return e, nil
}

// tapReady reads every frame the guest has queued, a batch at a time, and
// dispatches each batch.
func (e *Engine) tapReady(r loop.Ref, events uint32) {
	if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 && events&unix.EPOLLIN == 0 {
		e.fail(fmt.Errorf("guest interface closed"))
		return
	}
	for {
		n, err := e.Dev.Read(e.inBufs, e.inSizes)
		if n > 0 {
			e.frames = e.frames[:0]
			for i := 0; i < n; i++ {
				e.frames = append(e.frames, e.inBufs[i][:e.inSizes[i]])
			}
			e.Demux.Batch(e.frames)
		}
		if err != nil {
			e.fail(err)
			return
		}
		if n < len(e.inBufs) {
			return
		}
	}
}

// minProcs gives the Go scheduler at least two Ps, also when the process
// may run on one CPU only (taskset, cpusets: the runtime then starts with
// GOMAXPROCS 1). With a single P, sysmon takes the P away from every
// system call that lasts more than 20 µs (copying 64 KiB into the tap or a
// socket does) and wakes another thread to run the P, while it polls every
// 20 µs itself: futex wake-ups and context switches on our own CPU, about
// 15 % of the CPU the translation needs host to namespace. With a second,
// idle P, retake leaves a P in a system call alone. It must run before
// the sandbox (isolation.Postfork then fixes GOMAXPROCS at this value).
func minProcs() {
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
}

func (e *Engine) fail(err error) {
	if e.err == nil {
		e.err = err
		logging.Errorf("%v", err)
	}
	e.Loop.Stop()
}

// Stop makes Run return cleanly after the current turn.
func (e *Engine) Stop() { e.Loop.Stop() }

// Run turns the loop until Stop or a fatal error.
func (e *Engine) Run() error {
	if err := e.Loop.Run(); err != nil {
		return err
	}
	return e.err
}
