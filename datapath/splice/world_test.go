// The tests' world: an event loop with a splice Handler, a listener whose
// accepted connections the loop hands to Connect (as pasta's -t listeners
// will), and a server the connections go to, all on this namespace's
// loopback (Options.NSDo nil: both "sides" are here).

package splice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/loop"
	"gopasst/datapath/sys"
)

// Kinds for the tests' own descriptors: numbers no package of the tree uses.
const (
	kindTestListen loop.Kind = 250 // the listener whose connections are spliced
	kindTestWake   loop.Kind = 251 // an eventfd that wakes the loop for world.do
)

// world is one loop with its handler. Everything that touches the handler
// runs on the loop's goroutine (world.do), or on the test's goroutine when
// the world is driven by hand (world.turn, no goroutine started).
type world struct {
	t       testing.TB
	l       *loop.Loop
	h       *Handler
	epfd    int // the loop's epoll descriptor, found at creation, closed at the end
	ln      int // the spliced listener
	lnAddr  netip.AddrPort
	dst     netip.AddrPort // where Connect goes
	wake    int            // eventfd
	reqs    chan func()
	stop    atomic.Bool
	running atomic.Bool
	done    chan struct{}
	accept  int // connections accepted by the loop
	errs    []error
	closed  bool
}

// newLoop makes a loop and finds its epoll descriptor (the loop has no
// Close), so that the world can close it when it ends.
func newLoop(t testing.TB) (*loop.Loop, int) {
	t.Helper()
	isEpoll := func(fd int) bool {
		target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		return target == "anon_inode:[eventpoll]"
	}
	before := map[int]bool{}
	for fd := range fdSet(t) {
		before[fd] = isEpoll(fd)
	}
	l, err := loop.New(16)
	if err != nil {
		t.Fatal(err)
	}
	epfd := -1
	for fd := range fdSet(t) {
		if !before[fd] && isEpoll(fd) {
			epfd = fd
		}
	}
	if epfd < 0 {
		t.Fatal("cannot find the loop's epoll descriptor")
	}
	return l, epfd
}

// fdSet returns the descriptors open in this process.
func fdSet(t testing.TB) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]bool{}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err == nil {
			m[fd] = true
		}
	}
	return m
}

// countFDs returns how many descriptors are open in this process, less the
// one ReadDir holds while it reads.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1
}

// loopbackAddr returns 127.0.0.1 or ::1, skipping the test if this
// namespace has no IPv6 loopback.
func loopbackAddr(t testing.TB, v6 bool) netip.Addr {
	t.Helper()
	if !v6 {
		return netip.MustParseAddr("127.0.0.1")
	}
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
	return netip.MustParseAddr("::1")
}

// rawListen opens a non-blocking listening socket on addr, port 0, and
// returns it with the address it got.
func rawListen(t testing.TB, addr netip.Addr) (int, netip.AddrPort) {
	t.Helper()
	af := unix.AF_INET
	var sa unix.Sockaddr
	if addr.Is6() {
		af, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: addr.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: addr.As4()}
	}
	fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		return fd, netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return fd, netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	unix.Close(fd)
	t.Fatalf("getsockname: %T", got)
	return -1, netip.AddrPort{}
}

// newWorld makes the loop, the handler with options o, and the spliced
// listener on the loopback address of dst's family; connections accepted
// there go to dst. The world is driven by hand (turn) until run is called.
func newWorld(t testing.TB, o Options, dst netip.AddrPort) *world {
	t.Helper()
	w := &world{t: t, dst: dst, reqs: make(chan func(), 16), done: make(chan struct{})}
	w.l, w.epfd = newLoop(t)
	h, err := New(w.l, o)
	if err != nil {
		unix.Close(w.epfd)
		t.Fatal(err)
	}
	w.h = h
	w.ln, w.lnAddr = rawListen(t, dst.Addr())
	w.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	w.l.Handle(kindTestListen, w.onListen)
	w.l.Handle(kindTestWake, w.onWake)
	if err := w.l.Add(w.ln, unix.EPOLLIN, loop.MakeRef(kindTestListen, w.ln, 0)); err != nil {
		t.Fatal(err)
	}
	if err := w.l.Add(w.wake, unix.EPOLLIN, loop.MakeRef(kindTestWake, w.wake, 0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return w
}

// onListen accepts what is pending on the spliced listener (a bounded
// batch) and hands each connection to Connect, as a -t listener does.
func (w *world) onListen(loop.Ref, uint32) {
	var sa unix.RawSockaddrAny
	for n := 0; n < 128; n++ {
		fd, e := sys.Accept4(w.ln, &sa)
		if e != 0 {
			return
		}
		w.accept++
		if err := w.h.Connect(fd, NS, w.dst); err != nil && len(w.errs) < 16 {
			w.errs = append(w.errs, err)
		}
	}
}

// onWake runs the functions world.do queued.
func (w *world) onWake(loop.Ref, uint32) {
	var b [8]byte
	unix.Read(w.wake, b[:])
	for {
		select {
		case f := <-w.reqs:
			f()
		default:
			return
		}
	}
}

// turn runs one turn of the loop, waiting at most d.
func (w *world) turn(d time.Duration) {
	if err := w.l.Turn(d); err != nil {
		w.t.Fatal(err)
	}
}

// run starts the loop's goroutine, locked to its thread, turning until
// the world closes (or for five minutes at most).
func (w *world) run() {
	w.running.Store(true)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(w.done)
		deadline := time.Now().Add(5 * time.Minute)
		for !w.stop.Load() && time.Now().Before(deadline) {
			if err := w.l.Turn(100 * time.Millisecond); err != nil {
				return
			}
		}
		w.onWake(0, 0)
	}()
}

// do runs f on the loop's goroutine and waits for it.
func (w *world) do(f func()) {
	ch := make(chan struct{})
	w.reqs <- func() { f(); close(ch) }
	var one = [8]byte{1}
	unix.Write(w.wake, one[:])
	select {
	case <-ch:
	case <-w.done:
		w.t.Fatal("loop ended")
	case <-time.After(30 * time.Second):
		w.t.Fatal("loop did not answer in 30 s")
	}
}

// stats returns the handler's counters and open connections, read on the
// loop's goroutine.
func (w *world) stats() (Stats, int) {
	var s Stats
	var n int
	w.do(func() { s, n = w.h.Stats(), w.h.Conns() })
	return s, n
}

// waitConns waits (10 s at most) until n connections are open.
func (w *world) waitConns(n int) Stats {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, got := w.stats()
		if got == n {
			return s
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%d connections open, want %d (stats %+v)", got, n, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// close stops the loop, closes the handler and the world's descriptors.
func (w *world) close() {
	if w.closed {
		return
	}
	w.closed = true
	if w.running.Load() {
		w.stop.Store(true)
		var one = [8]byte{1}
		unix.Write(w.wake, one[:])
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			w.t.Fatal("loop did not stop in 30 s")
		}
	}
	w.h.Close()
	unix.Close(w.ln)
	unix.Close(w.wake)
	unix.Close(w.epfd)
	for _, err := range w.errs {
		w.t.Logf("Connect: %v", err)
	}
}

// server is a Go listener the spliced connections go to.
type server struct {
	ln    net.Listener
	addr  netip.AddrPort
	conns chan *net.TCPConn
}

// newServer listens on addr, port 0, and queues accepted connections.
func newServer(t testing.TB, addr netip.Addr) *server {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String()), conns: make(chan *net.TCPConn, 2048)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(s.conns)
				return
			}
			s.conns <- c.(*net.TCPConn)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

// next returns the next accepted connection, failing after 10 s.
func (s *server) next(t testing.TB) *net.TCPConn {
	t.Helper()
	select {
	case c, ok := <-s.conns:
		if !ok {
			t.Fatal("server closed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection reached the server in 10 s")
	}
	return nil
}

// dial connects a client to the world's spliced listener.
func (w *world) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", w.lnAddr.String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// isReset reports whether err is a connection reset.
func isReset(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || (err != nil && strings.Contains(err.Error(), "connection reset"))
}

// readAll reads c to its end, failing after d.
func readAll(c *net.TCPConn, d time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}
