// Inbound UDP: listeners for forwarded ports (-u), and the flows a datagram
// from a new peer creates (addressing.md §3, §6).
package udp

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
)

// listener is one listening socket of a forwarding rule.
type listener struct {
	fd     int // -1: a free slot
	spec   *fwd.Spec
	rule   int    // index in spec.Rules
	port   uint16 // the port it is bound to
	v6     bool   // AF_INET6 socket (dual-stack or IPv6 only)
	ns     bool   // in pasta's namespace (-U), else on the host (-u)
	scan   bool   // opened by the port scan ("auto"), closed by it too
	ifname string
}

// scanKey names the listener the port scan opened for one port of one
// rule.
type scanKey struct {
	spec *fwd.Spec
	rule int
	port uint16
}

// errNoFDs: the descriptor budget or limit is exhausted.
var errNoFDs = errors.New("out of file descriptors")

// Listen opens and registers a listening socket for every port of spec's
// UDP rules but the scan ("auto") ones, which SyncScan opens as ports
// appear on the other side. Call it before the sandbox: listeners on ports
// below ip_unprivileged_port_start need the privileges we have only then.
//
// A port that cannot be bound is fatal for a normal rule. For a weak rule
// ("all", exclusions only) it is logged, and fatal only if none of the
// rule's ports could be bound, as in the C original (which warns per
// port; we log those at debug level, as for TCP). Running out of
// descriptors is never fatal: the ports open so far stay forwarded, with
// one warning.
//
// spec: the -u rules (ns false) or pasta's -U rules (ns true: listening in
// the namespace, through NSDo), kept by reference: the rules must not
// change while the handler runs. Returns an error naming the first fatal
// failure.
func (h *Handler) Listen(spec *fwd.Spec, ns bool) error {
	if spec == nil {
		return nil
	}
	bound := make([]int, len(spec.Rules))
	failed := make([]bool, len(spec.Rules))
	for l := range spec.Listeners() {
		if l.Proto != fwd.UDP || l.Flags&fwd.Scan != 0 {
			continue
		}
		opened, err := h.listen(spec, l, ns, false)
		switch {
		case errors.Is(err, errNoFDs):
			h.Budget.Exhausted(err)
			return nil
		case err != nil && l.Flags&fwd.Weak != 0:
			// One line per port of "all" would be a thousand lines
			// as an unprivileged user (ports below 1024): debug, as
			// TCP's.
			failed[l.Rule] = true
			logging.Debugf("%v", err)
		case err != nil:
			return err
		case opened:
			bound[l.Rule]++
		}
	}
	for r := range spec.Rules {
		if failed[r] && bound[r] == 0 {
			return fmt.Errorf("UDP forwarding %s: no port could be bound", spec.Rules[r].String())
		}
	}
	return nil
}

// listen opens and registers the socket of listener l of spec, on the host
// or in pasta's namespace (ns); scan marks it as the port scan's. Returns
// whether a socket was opened (a family that is off is skipped) and an
// error naming the port.
func (h *Handler) listen(spec *fwd.Spec, l fwd.Listener, ns, scan bool) (bool, error) {
	addr, dual, ok := l.Bind(h.cfg.V4.Enabled, h.cfg.V6.Enabled)
	if !ok {
		return false, nil
	}
	v6 := addr.Is6()
	if !h.Budget.Take() {
		return false, fmt.Errorf("UDP port %d: %w for more listeners", l.Port, errNoFDs)
	}
	fd, err := h.openListener(addr, l.Port, v6, dual, l.IfName, ns)
	if err != nil {
		h.Budget.Give()
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			return false, fmt.Errorf("UDP port %d: %v: %w", l.Port, err, errNoFDs)
		}
		return false, fmt.Errorf("UDP port %d on %s: %w", l.Port, listenName(addr, dual), err)
	}
	k := h.freeListener()
	h.listeners[k] = listener{fd: fd, spec: spec, rule: l.Rule, port: l.Port, v6: v6, ns: ns, scan: scan, ifname: l.IfName}
	if err := h.l.Add(fd, unix.EPOLLIN, loop.MakeRef(loop.KindUDPListen, fd, uint32(k))); err != nil {
		h.closeListener(k)
		return false, err
	}
	if scan {
		h.scanned[scanKey{spec, l.Rule, l.Port}] = k
	}
	return true, nil
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

// closeListener closes listener k and frees its slot; the flows it made
// have their own sockets and go on.
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

// SyncScan makes the listeners of spec's scan ("auto") rules follow want,
// the ports bound on the other side (see tcp.Handler.SyncScan).
//
// spec: the rules (-u: ns false, -U: ns true); want: the ports to forward,
// without those we listen on ourselves on the other side.
func (h *Handler) SyncScan(spec *fwd.Spec, ns bool, want *procnet.Ports) {
	listening := func(r int, port uint16) bool {
		_, ok := h.scanned[scanKey{spec, r, port}]
		return ok
	}
	spec.ScanChanges(want, listening, func(l fwd.Listener, open bool) bool {
		if !open {
			h.closeListener(h.scanned[scanKey{spec, l.Rule, l.Port}])
			logging.Debugf("auto: closed %s port %d (%s)", "UDP", l.Port, fwd.SideName(ns))
			return true
		}
		if _, err := h.listen(spec, l, ns, true); err != nil {
			if errors.Is(err, errNoFDs) {
				h.Budget.Exhausted(err)
				return false
			}
			logging.Debugf("auto: %v", err)
		} else {
			logging.Debugf("auto: listening on %s port %d (%s)", "UDP", l.Port, fwd.SideName(ns))
		}
		return true
	})
}

// Listening adds to p the ports of our listeners in pasta's namespace (ns)
// or on the host, which the port scan of that side must not take for the
// far side's.
func (h *Handler) Listening(ns bool, p *procnet.Ports) {
	for k := range h.listeners {
		if ln := &h.listeners[k]; ln.fd >= 0 && ln.ns == ns {
			p.Add(ln.port)
		}
	}
}

// listenName formats a listening address for error messages.
func listenName(a netip.Addr, dual bool) string {
	if dual {
		return "*"
	}
	return a.String()
}

// openListener creates a listening socket with PKTINFO (to learn which
// local address a datagram reached, needed for the reply socket).
//
// addr, port: where to bind; v6: AF_INET6; dual: take IPv4 too; ifname:
// device to bind to, "" for none; ns: in pasta's namespace. Returns the
// descriptor or an error.
func (h *Handler) openListener(addr netip.Addr, port uint16, v6, dual bool, ifname string, ns bool) (int, error) {
	fd, err := h.newSocket(v6, dual, ns)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if v6 {
		// For IPv4 datagrams on a dual-stack socket the kernel reports
		// the destination as an IPv4-mapped address.
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
	if err != nil {
		return fail(fmt.Errorf("PKTINFO: %w", err))
	}
	if h.cfg.Freebind {
		if v6 {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		}
		if err != nil {
			return fail(fmt.Errorf("FREEBIND: %w", err))
		}
	}
	if err := bindDevice(fd, ifname); err != nil {
		return fail(err)
	}
	if err := sys.BindListener(fd, sockaddr(addr, port, 0, v6)); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	return fd, nil
}

// listenEvent handles readiness of a listener.
func (h *Handler) listenEvent(r loop.Ref, events uint32) {
	k := int(r.Index())
	if k >= len(h.listeners) || h.listeners[k].fd != r.FD() || h.listeners[k].fd < 0 {
		return
	}
	ln := &h.listeners[k]
	if events&unix.EPOLLERR != 0 {
		// A listener sends nothing itself; whatever is queued is of no
		// flow's concern. Read it so that EPOLLERR stops.
		for j := 0; j < maxErrors; j++ {
			if _, _, e := h.eq.read(ln.fd); e != 0 {
				break
			}
		}
	}
	if events&unix.EPOLLIN != 0 {
		if ln.ns {
			h.readSpliceListener(ln)
		} else {
			h.readListener(ln)
		}
	}
}

// readListener reads datagrams from a listener into reserved frames, finds
// or creates the flow of each, and queues it to the guest. The payload is
// read at the offset of its family's headers; on an IPv6 socket an IPv4
// datagram (dual-stack) is only known after the read, and moved 20 bytes
// down: this is the first datagram of each flow only, later ones arrive on
// the flow's own socket.
func (h *Handler) readListener(ln *listener) {
	hdr := hdr4
	if ln.v6 {
		hdr = hdr6
	}
	for round := 0; round < maxRounds; round++ {
		n := h.out.Reserve(h.frames)
		if n == 0 {
			h.dropWaiting(ln.fd, h.lrecv)
			return
		}
		for j := 0; j < n; j++ {
			b := h.frames[j]
			h.lrecv.SetBuf(j, b[hdr:hdr+maxPayload(len(b), hdr)])
			h.lrecv.Hdrs[j].Hdr.SetControllen(ctrlLen)
		}
		h.lrecv.ResetNames(n)
		m, e := sys.Recvmmsg(ln.fd, h.lrecv.Hdrs[:n], unix.MSG_DONTWAIT)
		if e != 0 || m == 0 {
			return
		}
		w := 0
		for j := 0; j < m; j++ {
			mh := &h.lrecv.Hdrs[j]
			dl := int(mh.Len)
			if mh.Hdr.Flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
				h.Stats.ToGuestDropped++
				continue
			}
			name := nameBytes(&h.lrecv.Names[j], mh.Hdr.Namelen)
			peer, pport, err := parseSockaddr(name)
			if err != nil {
				h.Stats.ToGuestDropped++
				continue
			}
			cl := min(int(mh.Hdr.Controllen), ctrlLen)
			local, err := parsePktinfo(h.ctrl[j*ctrlLen : j*ctrlLen+cl])
			if err != nil {
				h.Stats.ToGuestDropped++
				continue
			}
			rule := &ln.spec.Rules[ln.rule]
			if nat.Splices(h.cfg, peer, &nat.Rule{To: rule.Target(ln.port), TAddr: rule.TAddr}) {
				// Host loopback: the loopback path, no frame.
				h.spliceInbound(ln, peer, pport, local, h.frames[j][hdr:hdr+dl])
				continue
			}
			ep := h.inbound(ln, peer, pport, sockaddrScope(name), local)
			if ep == nil {
				h.Stats.ToGuestDropped++
				continue
			}
			to := hdr4
			if ep.v6 {
				to = hdr6
			}
			if to > hdr && maxPayload(len(h.frames[w]), to) < dl {
				h.Stats.ToGuestDropped++
				continue
			}
			if w != j || to != hdr {
				copy(h.frames[w][to:to+dl], h.frames[j][hdr:hdr+dl])
			}
			h.commit(ep.v6, h.fill(ep, h.frames[w], dl, h.csumOff), dl, 1)
			w++
		}
		h.Stats.ToGuest += uint64(w)
		if m < n {
			return
		}
	}
}

// inbound returns the endpoints towards the guest for a datagram from
// peer:pport that reached local on listener ln, creating its flow if it
// has none. Datagrams to a broadcast or multicast local address keep that
// destination towards the guest and make no flow (a reply socket cannot be
// bound to them). Returns nil if the datagram cannot be delivered.
//
// scope: the peer's IPv6 scope id (link-local peers).
func (h *Handler) inbound(ln *listener, peer netip.Addr, pport uint16, scope uint32, local netip.Addr) *endpoints {
	rule := &ln.spec.Rules[ln.rule]
	target := rule.Target(ln.port)
	ini := nat.Side{Pif: nat.PifHost, Src: peer, Dst: local, SrcPort: pport, DstPort: ln.port}
	tgt := nat.Target(h.cfg, h.g, header.ProtoUDP, &ini, &nat.Rule{To: target, TAddr: rule.TAddr})
	if tgt.Pif != nat.PifTap {
		return nil
	}
	seen, gaddr := tgt.Src, tgt.Dst
	group := local.IsMulticast() || local == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	key := flow.MakeKey(header.ProtoUDP, gaddr, target, seen, pport)
	if i, ok := h.ft.Lookup(&key); ok {
		if h.ft.Kind(i) != flow.UDP {
			return nil
		}
		f := &h.flows[i]
		f.last = h.l.Now()
		inc(&f.hostSent)
		return &f.ep
	}
	v6 := !peer.Is4()
	if group {
		h.groupEP = endpoints{v6: v6, guest: gaddr.As16(), peer: seen.As16(), guestPort: target, peerPort: pport}
		return &h.groupEP
	}
	i, err := h.ft.Alloc(flow.UDP)
	if err != nil {
		// Dropped: the host peer is not told (we would need a raw
		// socket to send it an ICMP error); its next datagram tries
		// again.
		h.Stats.FlowFailures++
		h.Stats.TableFull++
		h.full.Refuse(h.l.Now(), h.ft)
		return nil
	}
	h.full.Admitted()
	// The reply socket: exactly the local address and port the peer
	// reached, so that the peer sees our answers come from there.
	fd, via, err := h.replySocket(ln, v6, local, peer, pport, scope)
	if err != nil {
		h.ft.Free(i)
		h.Stats.FlowFailures++
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			h.Stats.NoFDs++
			h.nofd.Refuse(h.l.Now(), h.ft)
		}
		if logging.Debugging() {
			logging.Debugf("UDP inbound flow from [%v]:%d: %v", peer, pport, err)
		}
		return nil
	}
	f := &h.flows[i]
	*f = udpFlow{
		ep: endpoints{
			v6: v6, guest: gaddr.As16(), peer: seen.As16(),
			guestPort: target, peerPort: pport,
		},
		host: peer.As16(), hostPort: pport,
		fd: int32(fd), via: via, via6: ln.v6, inbound: true, hostSent: 1,
	}
	if err := h.register(i, &key); err != nil {
		h.Stats.FlowFailures++
		return nil
	}
	return &f.ep
}
