// The splice engine's world for the tests and benchmarks that run the
// accelerator through datapath/splice: an event loop with a splice
// Handler (Options.Accel: an Accel, or nil for splice alone), a listener
// whose connections the loop hands to Connect, and the server they go to,
// all on this namespace's loopback.

package sockmap

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/loop"
	"gopasst/datapath/splice"
	"gopasst/datapath/sys"
)

// Kinds for the world's own descriptors: numbers no package of the tree
// uses (as in datapath/splice's tests).
const (
	kindTestListen loop.Kind = 250 // the listener whose connections are spliced
	kindTestWake   loop.Kind = 251 // an eventfd that wakes the loop for engine.do
)

// engine is one loop turning on its own locked thread, with its handler.
// Everything that touches the handler runs on that thread (do).
type engine struct {
	t    testing.TB
	l    *loop.Loop
	h    *splice.Handler
	x    *Accel // nil: splice alone
	ln   int    // the spliced listener
	addr string // its address, host:port
	srv  net.Listener
	dst  netip.AddrPort
	wake int
	reqs chan func()
	stop atomic.Bool
	done chan struct{}
	tid  atomic.Int32 // the loop thread's id, for its CPU time
	// closed: close ran (on the test's goroutine).
	closed bool
}

// newEngine starts an engine whose connections go to a new server on
// 127.0.0.1; x is the accelerator (nil: splice alone). It is stopped at
// t's cleanup, after the handler closed every connection.
func newEngine(t testing.TB, x *Accel) *engine {
	t.Helper()
	return newEngineOn(t, x, false)
}

// newEngineOn is newEngine on ::1 (listener, server and both spliced
// sockets IPv6) if v6, else on 127.0.0.1.
func newEngineOn(t testing.TB, x *Accel, v6 bool) *engine {
	t.Helper()
	e := &engine{t: t, x: x, reqs: make(chan func(), 4), done: make(chan struct{})}
	var err error
	if v6 {
		e.srv, err = net.Listen("tcp6", "[::1]:0")
	} else {
		e.srv, err = net.Listen("tcp4", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	e.dst = e.srv.Addr().(*net.TCPAddr).AddrPort()
	if e.l, err = loop.New(16); err != nil {
		t.Fatal(err)
	}
	o := splice.Options{PoolSize: 4, Pipes: 4}
	if x != nil {
		o.Accel = x
	}
	if e.h, err = splice.New(e.l, o); err != nil {
		t.Fatal(err)
	}
	lfd, port, err := listenRawOn(v6)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(lfd, true); err != nil {
		t.Fatal(err)
	}
	e.ln, e.addr = lfd, fmt.Sprintf("127.0.0.1:%d", port)
	if v6 {
		e.addr = fmt.Sprintf("[::1]:%d", port)
	}
	if e.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	e.l.Handle(kindTestListen, e.onListen)
	e.l.Handle(kindTestWake, e.onWake)
	if err := e.l.Add(e.ln, unix.EPOLLIN, loop.MakeRef(kindTestListen, e.ln, 0)); err != nil {
		t.Fatal(err)
	}
	if err := e.l.Add(e.wake, unix.EPOLLIN, loop.MakeRef(kindTestWake, e.wake, 0)); err != nil {
		t.Fatal(err)
	}
	go e.run()
	t.Cleanup(e.close)
	return e
}

// run turns the loop on a locked thread until stop is set.
func (e *engine) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(e.done)
	e.tid.Store(int32(unix.Gettid()))
	for !e.stop.Load() {
		if err := e.l.Turn(50 * time.Millisecond); err != nil {
			e.t.Errorf("loop: %v", err)
			return
		}
	}
}

// onListen accepts what the listener has and hands it to the handler, to
// the server (from the host side: NSDo is nil, all is one namespace).
func (e *engine) onListen(loop.Ref, uint32) {
	var sa unix.RawSockaddrAny
	for {
		fd, errno := sys.Accept4(e.ln, &sa)
		if errno != 0 {
			return
		}
		if err := e.h.Connect(fd, splice.Host, e.dst); err != nil {
			e.t.Errorf("Connect: %v", err)
		}
	}
}

// onWake runs the functions do queued.
func (e *engine) onWake(loop.Ref, uint32) {
	var b [8]byte
	unix.Read(e.wake, b[:])
	for {
		select {
		case f := <-e.reqs:
			f()
		default:
			return
		}
	}
}

// do runs f on the loop's thread and waits for it (ioTimeout at most).
func (e *engine) do(f func()) {
	e.t.Helper()
	ch := make(chan struct{})
	e.reqs <- func() { f(); close(ch) }
	one := [8]byte{1}
	unix.Write(e.wake, one[:])
	select {
	case <-ch:
	case <-time.After(ioTimeout):
		e.t.Fatal("the loop did not answer")
	}
}

// stats returns the handler's counters.
func (e *engine) stats() (st splice.Stats) {
	e.do(func() { st = e.h.Stats() })
	return st
}

// waitConns waits until the handler has no connection left (ioTimeout at
// most) and returns its counters.
func (e *engine) waitConns() splice.Stats {
	e.t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		var n int
		e.do(func() { n = e.h.Conns() })
		if n == 0 {
			return e.stats()
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d spliced connections still open after %v", n, ioTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// close resets what is left, stops the loop and closes the descriptors;
// only the first call does.
func (e *engine) close() {
	if e.closed {
		return
	}
	e.closed = true
	e.do(func() { e.h.Close() })
	e.stop.Store(true)
	<-e.done
	unix.Close(e.ln)
	unix.Close(e.wake)
	e.srv.Close()
}

// dial connects a client through the engine and returns it with the
// server's side of the spliced connection, both with TCP_NODELAY.
func (e *engine) dial(t testing.TB) (c, s *net.TCPConn) {
	t.Helper()
	cc, err := net.DialTimeout("tcp", e.addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c = cc.(*net.TCPConn)
	t.Cleanup(func() { c.Close() })
	e.srv.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
	ss, err := e.srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s = ss.(*net.TCPConn)
	t.Cleanup(func() { s.Close() })
	c.SetNoDelay(true)
	s.SetNoDelay(true)
	return c, s
}

// threadCPU returns the CPU time the loop's thread used so far.
func (e *engine) threadCPU() time.Duration {
	return taskCPU(int(e.tid.Load()))
}

// accelStats returns the accelerator's counters, read on the loop's
// thread (zero without an accelerator).
func (e *engine) accelStats() (st Stats) {
	if e.x != nil {
		e.do(func() { st = e.x.Stats() })
	}
	return st
}
