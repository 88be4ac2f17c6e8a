// Inbound connections: listening sockets for forwarded ports, on the host
// (-t) and, in pasta, in the namespace (-T); fixed ports opened before the
// sandbox, "auto" ports opened and closed by the port scan; accepted
// connections turned into a SYN to the guest, or handed to the splice path.

package tcp

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"gopasst/datapath/flow"
	"gopasst/datapath/fwd"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/procnet"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

// Splicer is pasta's loopback path (datapath/splice): it takes an accepted
// connection and moves its bytes to a new connection it makes, without
// frames.
type Splicer interface {
	// Connect splices fd, just accepted, to a new connection to dst
	// made from a socket in pasta's namespace (toNS) or the host's. It
	// owns fd from then on, also on failure (closed with a reset).
	Connect(fd int, toNS bool, dst netip.AddrPort) error
}

// listener is one listening socket and where its connections go.
type listener struct {
	fd   int // -1: a free slot
	ns   bool
	scan bool // opened by the port scan ("auto"), closed by it too
	spec *fwd.Spec
	rule int    // index in spec.Rules
	port uint16 // the port listened on
	// local is the bound address when it is a single one; invalid for a
	// wildcard (the address a connection reached is then asked of the
	// accepted socket, where the splice path needs it).
	local netip.Addr
}

// scanKey names the listener the scan opened for one port of one rule.
type scanKey struct {
	spec *fwd.Spec
	rule int
	port uint16
}

// errNoFDs: the descriptor budget or limit is exhausted.
var errNoFDs = errors.New("out of file descriptors")

// Listen opens a listening socket for each port of every rule of spec
// that is not a scan ("auto") rule; scan rules are opened by SyncScan as
// ports appear on the other side. Weak rules (all, exclusions) skip ports
// that cannot be bound, with a debug line. When descriptors run out (the
// budget, or the limit itself), the ports opened so far stay forwarded and
// the rest are not, with one warning: that is never fatal.
//
// spec: the -t rules (ns false) or pasta's -T rules (ns true, listening in
// the namespace; needs NSDo), kept by reference. Returns an error naming
// the first port of a non-weak rule that could not be bound.
func (h *Handler) Listen(spec *fwd.Spec, ns bool) error {
	for l := range spec.Listeners() {
		if l.Flags&fwd.Scan != 0 {
			continue
		}
		err := h.listen(spec, l, ns, false)
		switch {
		case errors.Is(err, errNoFDs):
			h.Budget.Exhausted(err)
			return nil
		case err != nil && l.Flags&fwd.Weak != 0:
			logging.Debugf("%v", err)
		case err != nil:
			return err
		}
	}
	return nil
}

// ListenPort opens one host listener on addr:port forwarding to the same
// port of the guest, outside any configured rule (tests). The zero addr is
// the dual-stack wildcard.
//
// Returns an error naming the port.
func (h *Handler) ListenPort(addr netip.Addr, port uint16) error {
	spec := &fwd.Spec{Proto: fwd.TCP, Rules: []fwd.Rule{{Proto: fwd.TCP, Addr: addr, First: port, Last: port, To: port}}}
	for l := range spec.Listeners() {
		if err := h.listen(spec, l, false, false); err != nil {
			return err
		}
	}
	return nil
}

// listen opens, binds and registers one listening socket for l, a
// listener of spec, on the host or in the namespace (ns); scan marks it as
// the port scan's. A family that is off is skipped without error.
func (h *Handler) listen(spec *fwd.Spec, l fwd.Listener, ns, scan bool) error {
	addr, dual, ok := l.Bind(h.cfg.V4.Enabled, h.cfg.V6.Enabled)
	if !ok {
		return nil
	}
	if !h.Budget.Take() {
		return fmt.Errorf("tcp port %d: %w for more listeners", l.Port, errNoFDs)
	}
	fd, err := h.listenSocket(addr, dual, l.IfName, l.Port, ns)
	if err != nil {
		h.Budget.Give()
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			return fmt.Errorf("%v: %w", err, errNoFDs)
		}
		return err
	}
	if h.spare < 0 {
		// Before the first listener takes connections: see shed.
		h.spare = newSpare()
	}
	k := h.freeListener()
	ln := &h.listeners[k]
	*ln = listener{fd: fd, ns: ns, scan: scan, spec: spec, rule: l.Rule, port: l.Port}
	if !addr.IsUnspecified() {
		ln.local = addr
	}
	if err := h.l.Add(fd, unix.EPOLLIN, loop.MakeRef(loop.KindTCPListen, fd, uint32(k))); err != nil {
		h.closeListener(k)
		return fmt.Errorf("tcp port %d: %w", l.Port, err)
	}
	if scan {
		h.scanned[scanKey{spec, l.Rule, l.Port}] = k
	}
	return nil
}

// freeListener returns the index of a free listener slot, growing the
// table if none is free.
func (h *Handler) freeListener() int {
	if n := len(h.freeL); n > 0 {
		k := h.freeL[n-1]
		h.freeL = h.freeL[:n-1]
		return k
	}
	h.listeners = append(h.listeners, listener{fd: -1})
	return len(h.listeners) - 1
}

// closeListener closes listener k and frees its slot. Connections it
// accepted have their own sockets and go on.
func (h *Handler) closeListener(k int) {
	ln := &h.listeners[k]
	if ln.fd < 0 {
		return
	}
	unix.Close(ln.fd)
	h.Budget.Give()
	if ln.scan {
		delete(h.scanned, scanKey{ln.spec, ln.rule, ln.port})
	}
	*ln = listener{fd: -1}
	h.freeL = append(h.freeL, k)
}

// The sockets of -T listeners are made on the namespace worker's thread:
// the namespace a socket belongs to is fixed when it is created.
var _ = allow.Syscall(allow.Pasta, "listen", "tcp: listeners of ports the port scan (auto) finds bound on the other side, opened after the sandbox (Handler.listenSocket)")

// listenSocket creates, binds and starts listening on one TCP socket.
//
// addr, dual: where to bind (dual: :: taking IPv4 too); ifname: device to
// bind to, "" for none; port: the port; ns: make it in pasta's namespace.
// Returns the descriptor, or an error naming the port.
func (h *Handler) listenSocket(addr netip.Addr, dual bool, ifname string, port uint16, ns bool) (int, error) {
	af := unix.AF_INET6
	if addr.Is4() {
		af = unix.AF_INET
	}
	fd, err := h.socket(af, ns)
	if err != nil {
		return -1, fmt.Errorf("tcp port %d: socket: %w", port, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("tcp port %d: %s %v: %w", port, what, addr, err)
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
	if err := sys.BindListener(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen on", err)
	}
	return fd, nil
}

var _ = allow.InetSocket(allow.Pasta, "tcp: listeners of ports the port scan (auto) finds bound, on the host or in the namespace (Handler.socket)")

// socket creates a non-blocking TCP socket of family af, in pasta's
// namespace if ns (through NSDo, on the namespace worker's thread), else
// in ours. Returns the descriptor or the error.
func (h *Handler) socket(af int, ns bool) (int, error) {
	mk := func() (int, error) {
		return unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	}
	if !ns {
		return mk()
	}
	if h.NSDo == nil {
		return -1, errors.New("no namespace to listen in")
	}
	fd := -1
	err := h.NSDo(func() error {
		var err error
		fd, err = mk()
		return err
	})
	return fd, err
}

// SyncScan makes the listeners of spec's scan ("auto") rules follow want,
// the ports bound on the other side: a port of a scan rule's range that is
// in want and not listened on gets a listener, one that is listened on and
// no longer in want loses it. Failures are logged at debug level and tried
// again at the next scan; connections accepted earlier go on.
//
// spec: the rules (-t: ns false, -T: ns true); want: the ports to forward,
// the caller having removed those we listen on ourselves on the other
// side.
func (h *Handler) SyncScan(spec *fwd.Spec, ns bool, want *procnet.Ports) {
	listening := func(r int, port uint16) bool {
		_, ok := h.scanned[scanKey{spec, r, port}]
		return ok
	}
	spec.ScanChanges(want, listening, func(l fwd.Listener, open bool) bool {
		if !open {
			h.closeListener(h.scanned[scanKey{spec, l.Rule, l.Port}])
			logging.Debugf("auto: closed %s port %d (%s)", "TCP", l.Port, fwd.SideName(ns))
			return true
		}
		if err := h.listen(spec, l, ns, true); err != nil {
			if errors.Is(err, errNoFDs) {
				h.Budget.Exhausted(err)
				return false
			}
			logging.Debugf("auto: %v", err)
		} else {
			logging.Debugf("auto: listening on %s port %d (%s)", "TCP", l.Port, fwd.SideName(ns))
		}
		return true
	})
}

// Listening adds to p the ports of our listeners in pasta's namespace (ns)
// or on the host: what the port scan of that side must not take for the
// far side's servers.
func (h *Handler) Listening(ns bool, p *procnet.Ports) {
	for k := range h.listeners {
		if ln := &h.listeners[k]; ln.fd >= 0 && ln.ns == ns {
			p.Add(ln.port)
		}
	}
}

// Close closes every listener and connection (tests, and shutdown).
func (h *Handler) Close() {
	for k := range h.listeners {
		h.closeListener(k)
	}
	if h.spare >= 0 {
		unix.Close(h.spare)
		h.spare = -1
	}
	for k := len(h.active) - 1; k >= 0; k-- {
		h.closeConn(h.active[k], true)
	}
	h.reap()
}

// listenEvent accepts the pending connections of a listener (a bounded
// number per event; the listener is level-triggered).
func (h *Handler) listenEvent(r loop.Ref, ev uint32) {
	li := int(r.Index())
	if li >= len(h.listeners) || h.listeners[li].fd != r.FD() {
		return
	}
	l := &h.listeners[li]
	for n := 0; n < acceptBatch; n++ {
		fd, e := sys.Accept4(l.fd, &h.sa)
		if e == unix.EAGAIN || e == unix.ECONNABORTED {
			return
		}
		if e == unix.EMFILE || e == unix.ENFILE {
			h.shed(l)
			return
		}
		if e != 0 {
			logging.Debugf("tcp: accept on port %d: %v", l.port, e)
			return
		}
		h.nofd.Admitted()
		h.accepted(l, fd)
	}
}

// A descriptor in reserve for accepting at the descriptor limit.
var (
	_ = allow.InetSocket(allow.Both, "tcp: the spare descriptor that lets a listener at the descriptor limit accept and reset its connections (Handler.shed)")
	_ = allow.Syscall(allow.Both, "close", "tcp: the spare descriptor, given up to accept at the descriptor limit (Handler.shed)")
)

// newSpare returns a descriptor to hold in reserve (a socket never used),
// or -1 if none can be had.
func newSpare() int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// shed empties the backlog of listener l when accept fails for want of a
// descriptor: it gives up the spare descriptor, accepts and resets up to
// acceptBatch pending connections with the one slot that frees, and takes
// a spare again. Without it the listener, level-triggered, would stay
// readable with nothing able to take its connections, and the loop would
// spin on it (seen: 83% of a core while one connection waited), while the
// peers' connections hung in the backlog until it filled. With no spare
// (it could not be had again since), the connections wait, and the next
// event on l tries again. The C original does not guard against this.
func (h *Handler) shed(l *listener) {
	if h.spare < 0 {
		if h.spare = newSpare(); h.spare < 0 {
			return
		}
	}
	unix.Close(h.spare)
	h.spare = -1
	for n := 0; n < acceptBatch; n++ {
		fd, e := sys.Accept4(l.fd, &h.sa)
		if e != 0 {
			break
		}
		sys.CloseRST(fd)
		h.Stats.NoFDs++
		h.nofd.Refuse(h.l.Now(), h.ft)
	}
	h.spare = newSpare()
}

var _ = allow.Syscall(allow.Pasta, "getsockname", "tcp: the loopback address a spliced connection reached on a wildcard listener, which the splice path connects to (Handler.accepted)")

// accepted turns an accepted connection into a SYN to the guest, or hands
// it to the splice path, as nat.Target decides.
func (h *Handler) accepted(l *listener, fd int) {
	peer, pport, ok := sockaddrAddr(&h.sa)
	if !ok {
		sys.CloseRST(fd)
		return
	}
	rule := &l.spec.Rules[l.rule]
	nr := nat.Rule{To: rule.Target(l.port), TAddr: rule.TAddr}
	pif := nat.PifHost
	if l.ns {
		pif = nat.PifSplice
	}
	ini := nat.Side{Pif: pif, Src: peer, SrcPort: pport, Dst: l.local, DstPort: l.port}
	if !ini.Dst.IsValid() && (l.ns || nat.Splices(h.cfg, peer, &nr)) {
		// Only the splice path needs the local address: ask the
		// socket where a wildcard listener's connection arrived.
		var sa unix.RawSockaddrAny
		if e := sys.Getsockname(fd, &sa); e == 0 {
			ini.Dst, _, _ = sockaddrAddr(&sa)
		}
	}
	tgt := nat.Target(h.cfg, h.g, header.ProtoTCP, &ini, &nr)
	switch tgt.Pif {
	case nat.PifTap:
		h.toGuest(fd, peer, pport, &tgt)
	case nat.PifSplice, nat.PifHost:
		if h.Splice == nil {
			sys.CloseRST(fd)
			return
		}
		dst := netip.AddrPortFrom(tgt.Dst, tgt.DstPort)
		if err := h.Splice.Connect(fd, tgt.Pif == nat.PifSplice, dst); err != nil {
			logging.Debugf("tcp: splice [%v]:%d -> %v: %v", peer, pport, dst, err)
		}
	default:
		sys.CloseRST(fd)
	}
}

// sockaddrAddr returns the address and port of an IPv4 or IPv6 sockaddr
// (IPv4-mapped addresses unmapped), ok false for another family.
func sockaddrAddr(sa *unix.RawSockaddrAny) (netip.Addr, uint16, bool) {
	switch sa.Addr.Family {
	case unix.AF_INET:
		s := (*unix.RawSockaddrInet4)(unsafePointer(sa))
		return netip.AddrFrom4(s.Addr), sockaddrPort(&s.Port), true
	case unix.AF_INET6:
		s := (*unix.RawSockaddrInet6)(unsafePointer(sa))
		return netip.AddrFrom16(s.Addr).Unmap(), sockaddrPort(&s.Port), true
	}
	return netip.Addr{}, 0, false
}

// toGuest starts the tap path for accepted connection fd from peer:pport:
// a SYN to the guest at tgt's addresses.
func (h *Handler) toGuest(fd int, peer netip.Addr, pport uint16, tgt *nat.Side) {
	src, dst := tgt.Src, tgt.Dst
	key := flow.Key{Proto: header.ProtoTCP, Src: dst.As16(), Dst: src.As16(), SrcPort: tgt.DstPort, DstPort: pport}
	i, err := h.alloc(&key)
	if err != nil {
		// Accepted and reset (a full table is logged by alloc): the
		// listener's backlog keeps draining, so connections after the
		// table frees up are served, and the peer learns at once.
		if logging.Debugging() {
			logging.Debugf("tcp: inbound [%v]:%d: %v", peer, pport, err)
		}
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
