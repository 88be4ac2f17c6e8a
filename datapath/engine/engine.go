// Package engine is the datapath's front door: it assembles the event loop,
// the flow table, the guest back end, the demultiplexer, the local services
// and the protocols around one tap.Backend, and runs them until a
// termination signal, the end of pasta's namespace or a fatal error. Both
// modes and the in-process tests build their datapath here, so the wiring
// exists once; cmd/passt only builds the configuration and the back end.
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
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config"
	"gopasst/datapath/demux"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/icmp"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/splice"
	"gopasst/datapath/tap"
	"gopasst/datapath/tcp"
	"gopasst/datapath/term"
	"gopasst/datapath/udp"
)

// Batch is how many frames are read from the guest per batch.
const Batch = tap.RxBatch

// QueueLen is how many frames a back end should queue towards the guest
// before it flushes: a full batch of guest frames can be answered in one
// flush.
const QueueLen = 2 * Batch

// Engine is a running datapath. Not safe for concurrent use: everything
// runs on the thread that calls Run (or Loop.Turn, in tests).
type Engine struct {
	Cfg   *config.Config
	Guest guest.State
	Loop  *loop.Loop
	Flows *flow.Table
	Tap   tap.Backend
	Demux *demux.Demux
	TCP   *tcp.Handler // nil with --no-tcp
	UDP   *udp.Handler // nil with --no-udp
	ICMP  *icmp.Handler

	opts Options
	scan *portScan // nil: no "auto" rule
	// Splice is pasta's TCP loopback path (nil in passt mode).
	Splice *splice.Handler
	frames [][]byte
	status int
	err    error
}

// Namespace is what the engine watches to know that pasta must exit:
// netns.NS, the spawned command or the attached namespace.
type Namespace interface {
	// FD returns the descriptor to watch for input, -1 for none.
	FD() int
	// Check is called when FD is readable: done true when the engine
	// must stop, with the status the process exits with.
	Check() (done bool, status int)
}

// Options are the pieces opened before the sandbox that the engine uses,
// and what ends its run.
type Options struct {
	// ICMP holds raw ICMP sockets opened with privileges before the
	// sandbox (nil: ping sockets per flow only).
	ICMP *icmp.Sockets
	// Signals: stop cleanly on SIGTERM, SIGINT, SIGHUP and SIGQUIT
	// (datapath/term). New installs the handlers, so it must run before
	// the seccomp filter; tests leave it off, so that the test binary
	// keeps its own signal handling.
	Signals bool
	// Namespace, if not nil, ends the run when it says so (pasta).
	Namespace Namespace
	// NSDo runs a function on a thread inside pasta's namespace
	// (netns.NS.Do): the sockets of -T/-U listeners, of the splice
	// path's namespace side and the namespace's /proc/net tables are
	// made there. Nil in passt mode (and in tests without a namespace):
	// then -T/-U rules and "auto" -t/-u rules are not served.
	NSDo func(func() error) error
	// SpliceAccel, if not nil, is the splice path's in-kernel
	// accelerator (datapath/sockmap, --accel-sockmap).
	SpliceAccel splice.Accelerator
	// Announce: when the run starts, send the ARP request and Neighbour
	// Solicitation the C original sends at "tap ready" (--config-net: the
	// guest interface is up and addressed already).
	Announce bool
}

// New builds the datapath for cfg around the guest back end be: flow
// table, loop, demultiplexer, services, protocols and their listeners.
// Call it before the sandbox (isolation.Prefork): it opens sockets, probes
// the kernel and, with o.Signals, installs signal handlers.
//
// cfg: the configuration, read only from now on; be: the guest back end,
// owned by the engine from now on; o: see Options. Returns the engine, or
// an error naming what could not be set up.
func New(cfg *config.Config, be tap.Backend, o Options) (*Engine, error) {
	minProcs()
	l, err := loop.New(flow.MaxFlows)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		Cfg:    cfg,
		Loop:   l,
		Flows:  flow.New(flow.MaxFlows),
		Tap:    be,
		opts:   o,
		frames: make([][]byte, Batch),
	}
	e.resetGuest()
	l.SetBusyPoll(cfg.BusyPoll)
	logging.Debugf("checksum: %s", checksum.Describe())
	e.Demux = demux.New(cfg, &e.Guest, Batch)
	l.Handle(loop.KindTap, e.tapReady)
	if err := be.Watch(watcher{l}); err != nil {
		return nil, fmt.Errorf("guest back end: %w", err)
	}
	l.OnTurnEnd(be.Flush)
	// What ends the run first: its descriptors must not be the ones the
	// listeners of "-t all" under a low limit leave without.
	if err := e.watchEnd(o); err != nil {
		return nil, err
	}
	if err := e.wire(o); err != nil {
		return nil, err
	}
	return e, nil
}

// resetGuest forgets what was learned about the guest: its MAC is the
// configured one (pasta: the namespace interface's), else broadcast until
// the guest's first frame, as in the C original.
func (e *Engine) resetGuest() {
	e.Guest = guest.State{MAC: e.Cfg.GuestMAC}
	if e.Guest.MAC == [6]byte{} {
		e.Guest.MAC = guest.BroadcastMAC
	}
}

// watcher lets the back end watch its descriptors in the loop
// (tap.Watcher), each with kind loop.KindTap and the back end's index.
type watcher struct{ l *loop.Loop }

// Watch implements tap.Watcher.
func (w watcher) Watch(fd int, events uint32, idx uint32) error {
	r := loop.MakeRef(loop.KindTap, fd, idx)
	err := w.l.Add(fd, events, r)
	if errors.Is(err, unix.EEXIST) {
		err = w.l.Mod(fd, events, r)
	}
	return err
}

// Unwatch implements tap.Watcher.
func (w watcher) Unwatch(fd int) { w.l.Del(fd) }

// tapReady passes the events of a back end descriptor to the back end and
// acts on what it reports.
func (e *Engine) tapReady(r loop.Ref, events uint32) {
	ev, err := e.Tap.Ready(r.Index(), events)
	if errors.Is(err, tap.ErrDone) {
		// The one guest we serve went away (passt -1): a clean end,
		// status 0, as the C original's.
		logging.Infof("%v: exiting", err)
		e.Stop()
		return
	}
	if err != nil {
		e.fail(err)
		return
	}
	// EventDown needs nothing here: the back end logged it and drops
	// frames until the next guest (EventUp).
	if ev&tap.EventUp != 0 {
		e.resetGuest()
		e.Announce()
	}
	if ev&tap.EventFrames != 0 {
		e.readFrames()
	}
	if ev&tap.EventWritable != 0 && e.TCP != nil {
		// The guest side takes frames again: TCP flows that stopped
		// peeking for want of buffers go on (their data waited in the
		// host sockets).
		e.TCP.Resume()
	}
}

// readFrames reads every frame the guest has queued, a batch at a time,
// and dispatches each batch.
func (e *Engine) readFrames() {
	for {
		n, err := e.Tap.Read(e.frames)
		if n > 0 {
			e.Demux.Batch(e.frames[:n])
			clear(e.frames[:n]) // the views end at the next Read
		}
		if err != nil {
			e.fail(err)
			return
		}
		if n < len(e.frames) {
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

// fail records the first fatal error, logs it and stops the loop.
func (e *Engine) fail(err error) {
	if e.err == nil {
		e.err = err
		logging.Errorf("%v", err)
	}
	e.Loop.Stop()
}

// Stop makes Run return cleanly after the current turn.
func (e *Engine) Stop() { e.Loop.Stop() }

// Run turns the loop until a termination signal (Options.Signals), the
// end of the namespace (Options.Namespace), Stop, or a fatal error. It
// first sends the announcements if Options.Announce asks for them.
//
// Returns the exit status the process should end with (the spawned
// command's, or 0), and the fatal error if one ended the run.
func (e *Engine) Run() (status int, err error) {
	if e.opts.Announce {
		e.Announce()
	}
	if err := e.Loop.Run(); err != nil {
		return 1, err
	}
	if e.err != nil {
		return 1, e.err
	}
	return e.status, nil
}

// Close closes the protocols' sockets and the back end (tests, and an
// orderly shutdown; the process exit does the same otherwise).
func (e *Engine) Close() {
	if e.TCP != nil {
		e.TCP.Close()
	}
	if e.UDP != nil {
		e.UDP.Close()
	}
	if e.Splice != nil {
		e.Splice.Close()
	}
	if e.ICMP != nil {
		e.ICMP.Close()
	}
	e.Tap.Close()
}

// watchEnd registers what ends the run: the termination signals and the
// namespace (see Options).
func (e *Engine) watchEnd(o Options) error {
	if o.Signals {
		fd, err := term.FD()
		if err != nil {
			return err
		}
		e.Loop.Handle(loop.KindSignal, func(loop.Ref, uint32) {
			logging.Debugf("signal %v: exiting", term.Signal())
			e.Stop()
		})
		if err := e.Loop.Add(fd, unix.EPOLLIN, loop.MakeRef(loop.KindSignal, fd, 0)); err != nil {
			return err
		}
	}
	if ns := o.Namespace; ns != nil {
		if fd := ns.FD(); fd >= 0 {
			e.Loop.Handle(loop.KindChild, func(loop.Ref, uint32) {
				if done, st := ns.Check(); done {
					e.status = st
					e.Stop()
				}
			})
			if err := e.Loop.Add(fd, unix.EPOLLIN, loop.MakeRef(loop.KindChild, fd, 0)); err != nil {
				return err
			}
		}
	}
	return nil
}
