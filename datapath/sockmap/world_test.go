// Test worlds: two loopback TCP connections as the splice engine sees
// them (client1 to the accepted socket a, the connected socket b to
// server2), and the accelerator they are paired by.

package sockmap

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/test/nstest"
)

// ioTimeout bounds every wait of these tests.
const ioTimeout = 10 * time.Second

// requireAccel returns the process's accelerator, or skips t with Probe's
// reason (not root, BPF not allowed, an old kernel).
func requireAccel(t testing.TB) *Accel {
	t.Helper()
	x, err := Probe(Options{Unfiltered: true})
	if errors.Is(err, ErrNotSupported) {
		t.Skipf("no sockmap accelerator here: %v", err)
	}
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return x
}

// world is client1 -> a (accepted here) and b (connected here) -> server2:
// a and b are what the splice engine holds and pairs.
type world struct {
	c1, s2 *net.TCPConn
	a, b   int
}

// listenRaw opens a TCP listener on 127.0.0.1, port chosen by the kernel,
// in the calling thread's namespace. Returns its descriptor and port.
func listenRaw() (int, int, error) { return listenRawOn(false) }

// listenRawOn is listenRaw on ::1 if v6.
func listenRawOn(v6 bool) (int, int, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if v6 {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("listen: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("getsockname: %w", err)
	}
	if v6 {
		return fd, got.(*unix.SockaddrInet6).Port, nil
	}
	return fd, got.(*unix.SockaddrInet4).Port, nil
}

// newWorld builds a world: client1 and a in the test's namespace, b and
// server2 in ns (nil: the test's namespace too). The sockets are closed at
// t's cleanup (a and b only if the test has not closed them: see
// closeRaw).
func newWorld(t testing.TB, ns *nstest.Netns) *world {
	t.Helper()
	w := &world{a: -1, b: -1}
	// client1 -> a
	lfd, port, err := listenRaw()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	c1, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), ioTimeout)
	if err != nil {
		t.Fatalf("client1: %v", err)
	}
	w.c1 = c1.(*net.TCPConn)
	t.Cleanup(func() { w.c1.Close() })
	w.a, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept a: %v", err)
	}
	t.Cleanup(func() { w.closeRaw(&w.a) })
	// b -> server2
	var ln net.Listener
	if ns == nil {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	} else {
		ln = ns.Listen(t, "tcp4", "127.0.0.1:0")
	}
	dst := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: ln.Addr().(*net.TCPAddr).Port}
	mk := func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket b: %w", err)
		}
		w.b = fd
		return nil
	}
	if ns == nil {
		err = mk()
	} else {
		err = ns.Do(mk)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.closeRaw(&w.b) })
	// The socket stays in the namespace it was made in: connect from here.
	if err := unix.Connect(w.b, dst); err != nil {
		t.Fatalf("connect b: %v", err)
	}
	s2, err := ln.Accept()
	if err != nil {
		t.Fatalf("server2: %v", err)
	}
	w.s2 = s2.(*net.TCPConn)
	t.Cleanup(func() { w.s2.Close() })
	for _, fd := range []int{w.a, w.b} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			t.Fatal(err)
		}
	}
	w.c1.SetNoDelay(true)
	w.s2.SetNoDelay(true)
	return w
}

// closeRaw closes *fd unless it is -1 already, and sets it to -1.
func (w *world) closeRaw(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// readFull reads len(buf) bytes from c within ioTimeout. Returns the
// error of the read, if any.
func readFull(c net.Conn, buf []byte) error {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err := io.ReadFull(c, buf)
	return err
}

// queued returns the bytes in fd's receive queue (SIOCINQ).
func queued(t testing.TB, fd int) int {
	t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		t.Fatalf("SIOCINQ: %v", err)
	}
	return n
}

// waitQueued waits until fd's receive queue holds at least n bytes (by
// ioTimeout), failing t otherwise.
func waitQueued(t testing.TB, fd, n int) {
	t.Helper()
	if !nstest.Poll(ioTimeout, func() bool { return queued(t, fd) >= n }) {
		t.Fatalf("socket %d: %d bytes queued after %v, want %d", fd, queued(t, fd), ioTimeout, n)
	}
}

// pollEvents waits up to d for events on fd (POLLIN, POLLRDHUP, ...) and
// returns the revents (0 on time-out).
func pollEvents(t testing.TB, fd int, events int16, d time.Duration) int16 {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	deadline := time.Now().Add(d)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms < 0 {
			ms = 0
		}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if n == 0 {
			return 0
		}
		return fds[0].Revents
	}
}

// countFDs returns the number of descriptors this process has open.
func countFDs(t testing.TB) int {
	t.Helper()
	n, err := nstest.CountFDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
