// End-to-end handshake tests through a real guest kernel: echo both ways, refusals.

package tcp_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"gopasst/datapath/tcp"
)

// echoServer accepts on l and echoes every connection until EOF.
func echoServer(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.Copy(c, c)
		}()
	}
}

// TestOutboundEcho: the guest connects to the gateway (mapped to the
// host's loopback), sends a message, the host echoes it, both close.
func TestOutboundEcho(t *testing.T) {
	w := newWorld(t, 65520, nil)
	for _, fam := range []struct {
		net, lo string
		gw      netip.Addr
	}{{"tcp4", "127.0.0.1", gw4}, {"tcp6", "[::1]", gw6}} {
		l, err := net.Listen(fam.net, fam.lo+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go echoServer(l)
		port := l.Addr().(*net.TCPAddr).Port
		c, err := w.dialNS(fam.net, netip.AddrPortFrom(fam.gw, uint16(port)).String(), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: dial: %v", fam.net, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := bytes.Repeat([]byte("hello, host "), 10000)
		go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo: %d bytes back of %d, %v", fam.net, len(got), len(msg), err)
		}
	}
}

// TestRefused: connecting to a closed host port gives the guest a
// refusal, quickly.
func TestRefused(t *testing.T) {
	w := newWorld(t, 65520, nil)
	port := hostPort(t)
	for _, gw := range []netip.Addr{gw4, gw6} {
		start := time.Now()
		_, err := w.dialNS("tcp", netip.AddrPortFrom(gw, port).String(), 5*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%v: dial to a closed port: %v, want ECONNREFUSED", gw, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%v: refusal took %v", gw, d)
		}
	}
}

// TestInboundEcho: a host client connects to a forwarded port on the
// host's loopback; the guest's server echoes.
func TestInboundEcho(t *testing.T) {
	port := hostPort(t)
	w := newWorld(t, 65520, func(h *tcp.Handler) {
		if err := h.ListenPort(netip.MustParseAddr("127.0.0.1"), port); err != nil {
			t.Fatal(err)
		}
		if err := h.ListenPort(netip.IPv6Loopback(), port); err != nil {
			t.Fatal(err)
		}
	})
	l, err := w.listenNS("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echoServer(l)
	for _, lo := range []string{"127.0.0.1", "[::1]"} {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", lo, port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := bytes.Repeat([]byte("hello, guest "), 10000)
		go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo: %d bytes back of %d, %v", lo, len(got), len(msg), err)
		}
	}
}
