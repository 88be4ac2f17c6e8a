// Host socket set-up for flows and listeners: options, buffer sizes, bind
// and connect. This runs once per flow or listener, never per datagram.
package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// Flows are made after the filter is in: newSocket, setBuffers and
// bindDevice here, and openFlowSocket (udp.go), which binds and connects.
var (
	_ = allow.InetSocket(allow.Both, "udp: a host socket for each new flow, guest datagram to a new 4-tuple or a new peer on a -u port (newSocket)")
	_ = allow.Syscall(allow.Both, "setsockopt", "udp: SO_REUSEADDR, IP(V6)_RECVERR, IPV6_V6ONLY, buffer sizes, SO_BINDTODEVICE on new flow sockets (newSocket, setBuffers, bindDevice); IP_TTL/IPV6_UNICAST_HOPS when the guest's TTL changes (Handler.setTTL)")
	_ = allow.Syscall(allow.Both, "bind", "udp: flow sockets bind the guest's source port (-o address), reply sockets the address a peer reached (Handler.openFlowSocket)")
	_ = allow.Syscall(allow.Both, "connect", "udp: flow sockets connect to their peer, so the kernel demultiplexes for us (Handler.openFlowSocket)")
	_ = allow.Syscall(allow.Both, "close", "udp: closing the sockets of flows that timed out or failed (Handler.close, openFlowSocket)")
)

// sockBuf is the receive and send buffer size asked for every flow and
// listener socket. The kernel's default (net.core.rmem_default, about
// 208 KiB) holds only a few dozen large datagrams: measured here, the C
// original, which keeps the defaults, delivers about 100 KB of an unpaced
// 1 MiB burst on the loopback path, because the burst arrives faster than
// one loop turn drains it. 4 MiB holds such a burst. SO_RCVBUF/SO_SNDBUF are
// capped by net.core.rmem_max/wmem_max; SO_RCVBUFFORCE/SO_SNDBUFFORCE lift
// the cap when we have CAP_NET_ADMIN (root before the sandbox, pasta in its
// user namespace does not count), so those are tried first.
const sockBuf = 4 << 20

// setBuffers sizes fd's receive and send buffers (see sockBuf). Failures
// are ignored: the socket works with smaller buffers too.
//
// force: whether SO_*BUFFORCE worked last time; cleared on failure, so that
// an unprivileged process does not pay two failing system calls per flow.
func setBuffers(fd int, force *bool) {
	if *force {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) == nil &&
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) == nil {
			return
		}
		*force = false
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
}

// sockaddr converts addr:port into a unix.Sockaddr of addr's family.
//
// addr: the address (IPv4 or IPv6, an IPv4-mapped one is unmapped for an
// IPv4 socket when v6 is false); scope: IPv6 scope id (0 for none); v6: the
// socket's family. Returns the sockaddr.
func sockaddr(addr netip.Addr, port uint16, scope uint32, v6 bool) unix.Sockaddr {
	if !v6 {
		return &unix.SockaddrInet4{Port: int(port), Addr: addr.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(port), ZoneId: scope, Addr: addr.As16()}
}

// newSocket creates a non-blocking UDP socket of the given family with the
// options every socket of ours has: SO_REUSEADDR (flows share the guest's
// port with other flows and with listeners), IP(V6)_RECVERR (ICMP errors on
// the error queue), IPV6_V6ONLY (a flow socket is of one family; dual is
// for dual-stack listeners) and big buffers.
//
// v6: AF_INET6 instead of AF_INET; dual: IPV6_V6ONLY off; force: see
// setBuffers. Returns the descriptor or an error.
func newSocket(v6, dual bool, force *bool) (int, error) {
	af := unix.AF_INET
	if v6 {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if v6 {
		v6only := 1
		if dual {
			v6only = 0
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("IP_RECVERR: %w", err)
	}
	setBuffers(fd, force)
	return fd, nil
}

// bindDevice binds fd to the network device ifname (SO_BINDTODEVICE).
func bindDevice(fd int, ifname string) error {
	if ifname == "" {
		return nil
	}
	if err := unix.BindToDevice(fd, ifname); err != nil {
		return fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, err)
	}
	return nil
}

// errRetryable reports whether a bind to a specific port failed for a reason
// that binding to an ephemeral port avoids (port taken by a socket without
// SO_REUSEADDR, or privileged).
func errRetryable(err error) bool {
	return errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EACCES)
}

// scopeID returns the IPv6 scope id for a link-local host-side address:
// the template interface's index, 0 otherwise.
func scopeID(a netip.Addr, templateIx int) uint32 {
	if a.Is6() && !a.Is4In6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		return uint32(templateIx)
	}
	return 0
}

// newSocket is newSocket (the function) made in pasta's namespace when ns
// is set, on the namespace worker's thread through NSDo: a socket belongs
// to the namespace of the thread that creates it, wherever it is used
// afterwards.
func (h *Handler) newSocket(v6, dual, ns bool) (int, error) {
	if !ns {
		return newSocket(v6, dual, &h.bufForce)
	}
	if h.NSDo == nil {
		return -1, errors.New("no namespace to make the socket in")
	}
	fd := -1
	err := h.NSDo(func() error {
		var err error
		fd, err = newSocket(v6, dual, &h.bufForce)
		return err
	})
	return fd, err
}

// setName writes peer:port into sa as the name for a socket of family v6
// (an IPv4 peer as an IPv4-mapped address there), or as a sockaddr_in in
// sa's first bytes, and returns its length.
func setName(sa *unix.RawSockaddrInet6, peer netip.Addr, port uint16, v6 bool) uint32 {
	if !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: peer.Unmap().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: peer.As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unix.SizeofSockaddrInet6
}
