// Many concurrent connections, every order of closing, half-close and resets.

package tcp_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// openFDs counts this process's open descriptors.
//
// Pipes are not counted: the test's echo servers copy with io.Copy between
// TCP connections, which Go does with splice(2) through pipes kept in a
// sync.Pool until a garbage collection frees them (2000 of them after the
// 1000 echoes of TestConcurrent whenever no collection ran in between);
// they are the test's own, and the handler opens no pipes.
func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			continue
		}
		n++
	}
	return n
}

// hostListener listens on the host's IPv4 loopback and returns the
// address the guest dials for it.
func hostListener(t testing.TB) (net.Listener, string) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, netip.AddrPortFrom(gw4, uint16(l.Addr().(*net.TCPAddr).Port)).String()
}

// TestConcurrent opens 1000 connections from the guest at once, each
// echoing a little data; all must complete, and afterwards every socket
// the handler opened must be closed again.
func TestConcurrent(t *testing.T) {
	const n = 1000
	w := newWorld(t, 65520, nil)
	l, addr := hostListener(t)
	go echoServer(l)
	time.Sleep(50 * time.Millisecond)
	before := openFDs(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	// Sockets are made inside the namespace by one thread, then used
	// from many goroutines.
	conns := make([]net.Conn, n)
	var dialErr error
	err := inNS(w.ns, func() error {
		for i := range conns {
			d := net.Dialer{Timeout: 10 * time.Second}
			c, err := d.Dial("tcp4", addr)
			if err != nil {
				dialErr = fmt.Errorf("dial %d: %w", i, err)
				return nil
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil || dialErr != nil {
		t.Fatal(err, dialErr)
	}
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: %d bytes back of %d: %v", i, len(got), len(msg), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The last FINs and ACKs cross within a few loop turns.
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	after := openFDs(t)
	w.halt()
	if after > before || w.h.Conns() != 0 {
		t.Fatalf("descriptors %d before, %d after; %d connections left", before, after, w.h.Conns())
	}
	t.Logf("%+v", w.h.Stats)
}

// TestCloseOrders checks both orders of closing, and resets either way.
func TestCloseOrders(t *testing.T) {
	w := newWorld(t, 65520, nil)
	l, addr := hostListener(t)
	accept := func() net.Conn {
		t.Helper()
		l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := w.dialNS("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	msg := bytes.Repeat([]byte("0123456789"), 50000)

	t.Run("server closes first", func(t *testing.T) {
		g := dial()
		defer g.Close()
		h := accept()
		h.Write(msg)
		h.Close()
		got, err := io.ReadAll(g)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("guest read %d of %d bytes: %v", len(got), len(msg), err)
		}
	})
	t.Run("guest closes first", func(t *testing.T) {
		g := dial()
		h := accept()
		defer h.Close()
		g.Write(msg)
		g.Close()
		got, err := io.ReadAll(h)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("host read %d of %d bytes: %v", len(got), len(msg), err)
		}
	})
	t.Run("half-close", func(t *testing.T) {
		g := dial()
		defer g.Close()
		h := accept()
		defer h.Close()
		g.Write(msg)
		g.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(h)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("host read %d of %d bytes: %v", len(got), len(msg), err)
		}
		// The other direction still works after the guest's FIN.
		h.Write(msg[:1000])
		h.(*net.TCPConn).CloseWrite()
		got, err = io.ReadAll(g)
		if err != nil || !bytes.Equal(got, msg[:1000]) {
			t.Fatalf("guest read %d of 1000 bytes after its FIN: %v", len(got), err)
		}
	})
	t.Run("host resets", func(t *testing.T) {
		g := dial()
		defer g.Close()
		h := accept()
		h.(*net.TCPConn).SetLinger(0)
		h.Close()
		_, err := io.ReadAll(g)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("guest read after the host's reset: %v, want ECONNRESET", err)
		}
	})
	t.Run("guest resets", func(t *testing.T) {
		g := dial()
		h := accept()
		defer h.Close()
		g.(*net.TCPConn).SetLinger(0)
		g.Close()
		_, err := io.ReadAll(h)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("host read after the guest's reset: %v, want ECONNRESET", err)
		}
	})
	time.Sleep(300 * time.Millisecond) // the last FIN and ACK cross
	w.halt()
	if w.h.Conns() != 0 {
		for _, l := range w.h.DumpConns() {
			t.Log(l)
		}
		t.Fatalf("%d connections left", w.h.Conns())
	}
}
