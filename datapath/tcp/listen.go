// Inbound connections: listening sockets for forwarded ports (-t), opened
// before the sandbox, and accepted connections turned into a SYN to the
// guest.

package tcp

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"gopasst/datapath/flow"
	"gopasst/datapath/fwd"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/sys"
)

// listener is one listening socket and where its connections go.
type listener struct {
	fd    int
	port  uint16     // the port listened on
	to    uint16     // the guest's port
	taddr netip.Addr // fixed guest-side address, invalid: the guest's own
}

// Listen opens a listening socket for each port of every rule of spec
// that is not a scan ("auto") rule; scan rules are opened by the port
// scanner as ports appear. Weak rules (all, exclusions) skip ports that
// cannot be bound, with a warning.
//
// spec: the -t rules. Returns an error naming the first port that could
// not be bound.
func (h *Handler) Listen(spec *fwd.Spec) error {
	for l := range spec.Listeners() {
		if l.Flags&fwd.Scan != 0 {
			continue
		}
		r := &spec.Rules[l.Rule]
		err := h.listen(l.Addr, l.DualStack, l.IfName, l.Port, r.Target(l.Port), r.TAddr)
		if err != nil {
			if l.Flags&fwd.Weak != 0 {
				logging.Debugf("%v", err)
				continue
			}
			return err
		}
	}
	return nil
}

// ListenPort opens one listener on addr:port forwarding to the same port
// of the guest. The zero addr is the dual-stack wildcard.
//
// addr: the local address; port: the port. Returns an error naming the
// port.
func (h *Handler) ListenPort(addr netip.Addr, port uint16) error {
	if !addr.IsValid() {
		return h.listen(netip.IPv6Unspecified(), true, "", port, port, netip.Addr{})
	}
	return h.listen(addr, false, "", port, port, netip.Addr{})
}

// listen opens, binds and registers one listening socket.
func (h *Handler) listen(addr netip.Addr, dual bool, ifname string, port, to uint16, taddr netip.Addr) error {
	af := unix.AF_INET6
	if addr.Is4() {
		af = unix.AF_INET
	}
	fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tcp port %d: socket: %w", port, err)
	}
	fail := func(what string, err error) error {
		unix.Close(fd)
		return fmt.Errorf("tcp port %d: %s %v: %w", port, what, addr, err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	var sa unix.Sockaddr
	if af == unix.AF_INET6 {
		v6only := 1
		if dual {
			v6only = 0
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("IPV6_V6ONLY on", err)
		}
		sa = &unix.SockaddrInet6{Addr: addr.As16(), Port: int(port)}
	} else {
		sa = &unix.SockaddrInet4{Addr: addr.As4(), Port: int(port)}
	}
	if ifname != "" {
		if err := unix.BindToDevice(fd, ifname); err != nil {
			return fail("SO_BINDTODEVICE "+ifname+" on", err)
		}
	}
	if h.cfg.Freebind {
		unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen on", err)
	}
	idx := uint32(len(h.listeners))
	if err := h.l.Add(fd, unix.EPOLLIN, loop.MakeRef(loop.KindTCPListen, fd, idx)); err != nil {
		return fail("epoll for", err)
	}
	h.listeners = append(h.listeners, listener{fd: fd, port: port, to: to, taddr: taddr})
	return nil
}

// Close closes every listener and connection (tests, and shutdown).
func (h *Handler) Close() {
	for _, l := range h.listeners {
		unix.Close(l.fd)
	}
	h.listeners = nil
	for k := len(h.active) - 1; k >= 0; k-- {
		h.closeConn(h.active[k], true)
	}
	h.reap()
}

// listenEvent accepts the pending connections of a listener (a bounded
// number per event; the listener is level-triggered).
func (h *Handler) listenEvent(r loop.Ref, ev uint32) {
	li := int(r.Index())
	if li >= len(h.listeners) {
		return
	}
	l := &h.listeners[li]
	for n := 0; n < acceptBatch; n++ {
		fd, e := sys.Accept4(l.fd, &h.sa)
		if e == unix.EAGAIN || e == unix.ECONNABORTED {
			return
		}
		if e != 0 {
			logging.Debugf("tcp: accept on port %d: %v", l.port, e)
			return
		}
		h.accepted(l, fd)
	}
}

// accepted turns an accepted host connection into a SYN to the guest.
func (h *Handler) accepted(l *listener, fd int) {
	var peer netip.Addr
	var pport uint16
	switch h.sa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafePointer(&h.sa))
		peer, pport = netip.AddrFrom4(sa.Addr), sockaddrPort(&sa.Port)
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafePointer(&h.sa))
		peer, pport = netip.AddrFrom16(sa.Addr).Unmap(), sockaddrPort(&sa.Port)
	default:
		sys.CloseRST(fd)
		return
	}
	ini := nat.Side{Pif: nat.PifHost, Src: peer, SrcPort: pport, DstPort: l.port}
	tgt := nat.Target(h.cfg, h.g, header.ProtoTCP, &ini, &nat.Rule{To: l.to, TAddr: l.taddr})
	if tgt.Pif != nat.PifTap {
		sys.CloseRST(fd)
		return
	}
	src, dst := tgt.Src, tgt.Dst
	key := flow.Key{Proto: header.ProtoTCP, Src: dst.As16(), Dst: src.As16(), SrcPort: l.to, DstPort: pport}
	i, err := h.alloc(&key)
	if err != nil {
		logging.Debugf("tcp: inbound %v:%d: %v", peer, pport, err)
		sys.CloseRST(fd)
		return
	}
	sys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := &h.conns[i]
	c.fd = int32(fd)
	c.v6 = src.Is6()
	isn := h.isnKey.isn(&key, h.l.Now())
	c.seqToTap, c.seqAckFromTap, c.seqMax = isn, isn, isn
	c.wndFromTap = initWnd
	c.wsToTap = ourWS
	c.mss = mssDefault
	c.events = sockAccepted
	h.Stats.Accepted++
	if err := h.setEpoll(i, evData); err != nil {
		h.closeConn(i, true)
		return
	}
	h.updateWindow(i)
	h.ctrlSeq(i, flagSYN, isn)
	c.seqToTap++
	c.seqMax, c.seqAckFromTap = c.seqToTap, c.seqToTap
	h.l.Timers().Set(int32(i), h.l.Now()+rtoInit, h.timerFn)
}
