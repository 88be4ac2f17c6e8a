// The server side: one TCP listener (tcp_rr and tcp_crr alike) and one UDP
// socket on the same port, answering every request with a response.

package rr

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// ServerOptions describe a server.
type ServerOptions struct {
	Addr         string        // listen address; "" listens on :: (dual-stack), or 0.0.0.0 without IPv6
	Port         int           // TCP and UDP port
	RequestSize  int           // bytes per request (default 1)
	ResponseSize int           // bytes per response (default 1)
	IdleTimeout  time.Duration // a connection silent this long is closed (default 10 s)
}

// listenSocket returns a bound socket of type typ on o's address; without
// an address it binds :: with IPV6_V6ONLY off, falling back to 0.0.0.0
// where the namespace has no IPv6.
func listenSocket(o ServerOptions, typ int) (int, error) {
	var sa unix.Sockaddr
	family := unix.AF_INET6
	if o.Addr != "" {
		var err error
		sa, family, err = sockaddr(o.Addr, o.Port)
		if err != nil {
			return -1, err
		}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil && o.Addr == "" {
		family = unix.AF_INET
		fd, err = unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if sa == nil {
		if family == unix.AF_INET6 {
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
			sa = &unix.SockaddrInet6{Port: o.Port}
		} else {
			sa = &unix.SockaddrInet4{Port: o.Port}
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind port %d: %w", o.Port, err)
	}
	return fd, nil
}

// Serve answers requests on o.Port until a listening socket fails; it
// returns that error, or an error at once when it cannot listen. ready, if
// not nil, is called once both sockets are bound.
func Serve(o ServerOptions, ready func()) error {
	if o.RequestSize <= 0 {
		o.RequestSize = 1
	}
	if o.ResponseSize <= 0 {
		o.ResponseSize = 1
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Second
	}
	if o.Addr != "" {
		if _, err := netip.ParseAddr(o.Addr); err != nil {
			return fmt.Errorf("listen address %q: %w", o.Addr, err)
		}
	}
	lfd, err := listenSocket(o, unix.SOCK_STREAM)
	if err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	if err := unix.Listen(lfd, 1024); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ufd, err := listenSocket(o, unix.SOCK_DGRAM)
	if err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	if ready != nil {
		ready()
	}
	errc := make(chan error, 2)
	go func() { errc <- serveUDP(ufd, o) }()
	go func() { errc <- serveTCP(lfd, o) }()
	return <-errc
}

// serveTCP accepts connections on lfd and answers each in its own
// goroutine, until accept fails for a reason other than a signal or a
// connection that went away before it was accepted.
func serveTCP(lfd int, o ServerOptions) error {
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		switch {
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err == unix.EMFILE || err == unix.ENFILE:
			time.Sleep(10 * time.Millisecond)
			continue
		case err != nil:
			return fmt.Errorf("accept: %w", err)
		}
		go serveConn(fd, o)
	}
}

// serveConn answers requests on the connection fd until the peer closes
// it, an error occurs or it stays idle for o.IdleTimeout; it closes fd.
func serveConn(fd int, o ServerOptions) {
	defer unix.Close(fd)
	if setTimeouts(fd, o.IdleTimeout) != nil {
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	req := make([]byte, o.RequestSize)
	resp := make([]byte, o.ResponseSize)
	for {
		if readFull(fd, req) != nil {
			return
		}
		resp[0] = req[0]
		if writeFull(fd, resp) != nil {
			return
		}
	}
}

// serveUDP answers every datagram on fd with a response to its sender,
// echoing the request's first byte (the client's sequence number).
func serveUDP(fd int, o ServerOptions) error {
	req := make([]byte, 65536)
	resp := make([]byte, o.ResponseSize)
	for {
		n, from, err := unix.Recvfrom(fd, req, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("recvfrom: %w", err)
		}
		if n < 1 || from == nil {
			continue
		}
		resp[0] = req[0]
		if err := unix.Sendto(fd, resp, 0, from); err != nil && !errors.Is(err, unix.EAGAIN) {
			// The sender went away (ICMP unreachable came back): keep serving.
			continue
		}
	}
}
