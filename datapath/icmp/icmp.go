// The echo handler: flows, requests from the guest, replies to it.
package icmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/packet"
	"gopasst/datapath/sys"
	"gopasst/datapath/tap"
	"gopasst/isolation/allow"
)

// Echo flows open their ping sockets after the filter is in (openPing);
// requests and replies go through sys.Sendto and sys.Recvfrom
// (sys_unsafe.go).
var (
	_ = allow.InetSocket(allow.Both, "icmp: a ping socket for each new echo flow, without raw sockets (Handler.pingSocket)")
	_ = allow.Syscall(allow.Both, "setsockopt", "icmp: SO_BINDTODEVICE (--outbound-if) on new ping sockets (Handler.pingSocket)")
	_ = allow.Syscall(allow.Both, "bind", "icmp: ping sockets bind the -o address (Handler.pingSocket)")
	_ = allow.Syscall(allow.Both, "connect", "icmp: ping sockets connect to the destination (Handler.pingSocket)")
	_ = allow.Syscall(allow.Both, "close", "icmp: closing the ping sockets of flows that timed out (Handler.free)")
	_ = allow.Syscall(allow.Both, "getsockopt", "icmp: SO_ERROR clears an error pending on a ping socket, errors are not relayed (Handler.readPing)")
)

const (
	// Timeout is how long a flow lives after the guest's last request.
	Timeout = 60 * time.Second
	// maxReads bounds the messages read per readiness event.
	maxReads = 64
	ttlOut   = 255

	// Loop references of the two raw sockets (flow indices are smaller).
	rawIndex4 = 0xfffffff0
	rawIndex6 = 0xfffffff1
)

// pingFlow is the state of one echo flow, indexed by its flow.Index.
type pingFlow struct {
	v6                 bool
	fd                 int32 // the flow's ping socket, -1 on a raw socket
	guestID, hostID    uint16
	lastSeq            int32 // sequence of the last reply, -1 for none
	last               int64 // loop time of the guest's last request
	pos                int32 // index in Handler.active
	scope              uint32
	guestSrc, guestDst [16]byte // the guest's address, the address it pinged
	host               [16]byte // the host-side destination
}

// Stats counts what the handler did.
type Stats struct {
	Requests, Replies        uint64
	Dropped                  uint64 // requests that could not be sent
	Duplicates               uint64 // replies dropped as duplicates
	Stray                    uint64 // replies on a raw socket that are no flow's
	FlowsCreated, FlowsFreed uint64
}

// Handler is the ICMP/ICMPv6 echo translator. Everything runs on the
// loop's thread.
type Handler struct {
	cfg *config.Config
	g   *guest.State
	out tap.Out
	l   *loop.Loop
	ft  *flow.Table
	raw Sockets

	flows  []pingFlow
	active []flow.Index
	nextID uint16
	warned bool

	name sockName
	buf  []byte // receive buffer, one IP packet

	Stats Stats
}

// New creates the echo handler, registers loop.KindPing and its 1 s tick
// with l, and adds the raw sockets of pre (nil: none) to the loop.
//
// cfg, g: configuration and learned guest addressing; out: frames towards
// the guest; l: the event loop; ft: the shared flow table; pre: what
// Prepare opened. Returns the handler or an error from the loop.
func New(cfg *config.Config, g *guest.State, out tap.Out, l *loop.Loop, ft *flow.Table, pre *Sockets) (*Handler, error) {
	h := &Handler{
		cfg: cfg, g: g, out: out, l: l, ft: ft,
		raw:    *NoSockets(),
		flows:  make([]pingFlow, ft.Cap()),
		nextID: uint16(rand.Uint32()),
		buf:    make([]byte, 65536),
	}
	if pre != nil {
		h.raw = *pre
	}
	l.Handle(loop.KindPing, h.sockEvent)
	l.Every(time.Second, h.tick)
	if h.raw.V4 >= 0 {
		if err := l.Add(h.raw.V4, unix.EPOLLIN, loop.MakeRef(loop.KindPing, h.raw.V4, rawIndex4)); err != nil {
			return nil, err
		}
	}
	if h.raw.V6 >= 0 {
		if err := l.Add(h.raw.V6, unix.EPOLLIN, loop.MakeRef(loop.KindPing, h.raw.V6, rawIndex6)); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Flows returns how many echo flows are open.
func (h *Handler) Flows() int { return len(h.active) }

// guestKey is a flow's key slot 0.
func guestKey(proto uint8, src netip.Addr, id uint16, dst netip.Addr) flow.Key {
	return flow.MakeKey(proto, src, id, dst, 0)
}

// hostKey is a raw-socket flow's key slot 1: destination and host-side id,
// DstPort 1 so that it never equals a guest key.
func hostKey(proto uint8, host netip.Addr, id uint16) flow.Key {
	return flow.MakeKey(proto, host, id, netip.IPv6Unspecified(), 1)
}

// FromGuest sends the guest's echo requests, creating flows as needed.
//
// pkts: validated ICMP echo request packets from the demultiplexer (other
// ICMP messages are ignored). The identifier and checksum of a request
// sent on a raw socket are rewritten in the guest's frame.
func (h *Handler) FromGuest(pkts []packet.Packet) {
	now := h.l.Now()
	for k := range pkts {
		p := &pkts[k]
		if p.L4 < 0 || p.L4Len < 0 || p.L4+p.L4Len > len(p.Frame) {
			h.Stats.Dropped++
			continue
		}
		b := p.L4Bytes()
		proto, typ := header.ProtoICMP, header.ICMPv4EchoRequest
		if p.V6 {
			proto, typ = header.ProtoICMPv6, header.ICMPv6EchoRequest
		}
		if p.Proto != proto || len(b) < header.ICMPv4MinLen || b[0] != typ || b[1] != 0 {
			continue
		}
		id := binary.BigEndian.Uint16(b[4:])
		key := guestKey(proto, p.Src, id, p.Dst)
		i, ok := h.ft.Lookup(&key)
		if ok && h.ft.Kind(i) != flow.Ping {
			h.Stats.Dropped++
			continue
		}
		if !ok {
			var err error
			if i, err = h.newFlow(p, id, &key); err != nil {
				h.Stats.Dropped++
				if logging.Debugging() {
					logging.Debugf("ping %v -> %v id %d: %v", p.Src, p.Dst, id, err)
				}
				continue
			}
		}
		f := &h.flows[i]
		f.last = now
		h.Stats.Requests++
		if err := h.send(f, b); err != nil {
			h.Stats.Dropped++
			if logging.Debugging() {
				logging.Debugf("ping flow %d: send: %v", i, err)
			}
		}
	}
}

// send sends a guest's echo request b (ICMP header and data) for flow f.
func (h *Handler) send(f *pingFlow, b []byte) error {
	if f.fd >= 0 {
		// Ping socket: the kernel sets our identifier and checksum.
		return sendto(int(f.fd), b, nil)
	}
	old := binary.BigEndian.Uint16(b[4:])
	binary.BigEndian.PutUint16(b[4:], f.hostID)
	binary.BigEndian.PutUint16(b[2:], checksum.Update16(binary.BigEndian.Uint16(b[2:]), old, f.hostID))
	if f.v6 {
		// The kernel fills the ICMPv6 checksum on raw sockets.
		h.name.set6(f.host, f.scope)
		return sendto(h.raw.V6, b, &h.name)
	}
	h.name.set4([4]byte(f.host[12:16]))
	return sendto(h.raw.V4, b, &h.name)
}

var (
	errNoRoute  = errors.New("destination not reachable from the guest")
	errNoSocket = errors.New("no ICMP socket allowed (ping_group_range)")
	errNoID     = errors.New("no free identifier")
)

// newFlow creates the flow of a first echo request.
//
// p: the request; id: its identifier; key: its flow key. Returns the flow
// or an error.
func (h *Handler) newFlow(p *packet.Packet, id uint16, key *flow.Key) (flow.Index, error) {
	if p.Src.IsUnspecified() || p.Src.IsMulticast() || p.Dst.IsMulticast() ||
		p.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return flow.None, errNoRoute
	}
	ini := nat.Side{Pif: nat.PifTap, Src: p.Src, Dst: p.Dst, SrcPort: id}
	tgt := nat.Target(h.cfg, h.g, key.Proto, &ini, nil)
	if tgt.Pif != nat.PifHost {
		return flow.None, errNoRoute
	}
	dst := tgt.Dst
	rawFD := h.raw.V4
	if p.V6 {
		rawFD = h.raw.V6
	}
	f := pingFlow{
		v6: p.V6, fd: -1, guestID: id, lastSeq: -1, scope: tgt.Scope,
		guestSrc: p.Src.As16(), guestDst: p.Dst.As16(), host: dst.As16(),
	}
	i, err := h.ft.Alloc(flow.Ping)
	if err != nil {
		return flow.None, err
	}
	if rawFD >= 0 {
		hid, ok := h.allocID(key.Proto, dst)
		if !ok {
			h.ft.Free(i)
			return flow.None, errNoID
		}
		f.hostID = hid
		hk := hostKey(key.Proto, dst, hid)
		if err := h.ft.Bind(i, 1, &hk); err != nil {
			h.ft.Free(i)
			return flow.None, err
		}
	} else {
		fd, err := h.pingSocket(&f, &tgt)
		if err != nil {
			h.ft.Free(i)
			return flow.None, err
		}
		f.fd = int32(fd)
	}
	if err := h.ft.Bind(i, 0, key); err != nil {
		h.free(i, &f)
		return flow.None, err
	}
	if f.fd >= 0 {
		if err := h.l.Add(int(f.fd), unix.EPOLLIN, loop.MakeRef(loop.KindPing, int(f.fd), uint32(i))); err != nil {
			h.free(i, &f)
			return flow.None, err
		}
	}
	f.pos = int32(len(h.active))
	h.active = append(h.active, i)
	h.flows[i] = f
	h.Stats.FlowsCreated++
	if logging.Debugging() {
		logging.Debugf("ping flow %d: %v -> %v (host %v) id %d", i, p.Src, p.Dst, dst, id)
	}
	return i, nil
}

// free releases what a flow holds: its socket and its slot.
func (h *Handler) free(i flow.Index, f *pingFlow) {
	if f.fd >= 0 {
		unix.Close(int(f.fd))
		f.fd = -1
	}
	h.ft.Free(i)
}

// allocID picks a host-side identifier for a raw-socket flow to host that
// no other flow of ours to host uses.
func (h *Handler) allocID(proto uint8, host netip.Addr) (uint16, bool) {
	for n := 0; n < 1<<16; n++ {
		id := h.nextID
		h.nextID++
		k := hostKey(proto, host, id)
		if _, used := h.ft.Lookup(&k); !used {
			return id, true
		}
	}
	return 0, false
}

// pingSocket opens the flow's ping socket, bound to the source address
// and device of its target side tgt (-o, --outbound-if) if any (port 0:
// the kernel picks the identifier) and connected to the destination. A
// refusal because of ping_group_range is warned about once.
func (h *Handler) pingSocket(f *pingFlow, tgt *nat.Side) (int, error) {
	af, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if f.v6 {
		af, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		if !h.warned {
			h.warned = true
			// No getegid here: it would be one more syscall
			// for the seccomp filter, for a log line.
			logging.Warnf("ICMP echo disabled: cannot open a ping socket (%v) and no raw socket was "+
				"opened at start; widen net.ipv4.ping_group_range to include our group, e.g. "+
				"sysctl -w net.ipv4.ping_group_range='0 2147483647'", err)
		}
		return -1, errNoSocket
	}
	if err != nil {
		return -1, fmt.Errorf("ping socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("ping socket: %s: %w", what, err)
	}
	if a := tgt.Src; a.IsValid() && !a.IsUnspecified() {
		var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: a.As4()}
		if f.v6 {
			sa = &unix.SockaddrInet6{Addr: a.As16()}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return fail("bind", err)
		}
	}
	if tgt.Dev != "" {
		if err := unix.BindToDevice(fd, tgt.Dev); err != nil {
			return fail("SO_BINDTODEVICE", err)
		}
	}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: f.host, ZoneId: f.scope}
	if !f.v6 {
		sa = &unix.SockaddrInet4{Addr: [4]byte(f.host[12:16])}
	}
	if err := unix.Connect(fd, sa); err != nil {
		return fail("connect", err)
	}
	return fd, nil
}

// sockEvent reads the replies waiting on a ping socket or a raw socket.
func (h *Handler) sockEvent(r loop.Ref, events uint32) {
	switch idx := r.Index(); {
	case idx == rawIndex4 && r.FD() == h.raw.V4:
		h.readRaw(h.raw.V4, false)
	case idx == rawIndex6 && r.FD() == h.raw.V6:
		h.readRaw(h.raw.V6, true)
	case int(idx) < len(h.flows):
		i := flow.Index(idx)
		if h.ft.Kind(i) != flow.Ping || int(h.flows[i].fd) != r.FD() {
			return
		}
		h.readPing(&h.flows[i], events)
	}
}

// readPing reads the replies on a flow's ping socket (only its own: the
// socket is connected and the kernel matches the identifier).
func (h *Handler) readPing(f *pingFlow, events uint32) {
	fd := int(f.fd)
	if events&unix.EPOLLERR != 0 {
		// Errors are not relayed (as the C original): reading the
		// pending error clears it.
		sys.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	}
	for k := 0; k < maxReads; k++ {
		n, err := recvfrom(fd, h.buf, &h.name)
		if err != nil {
			return
		}
		if n > len(h.buf) {
			continue // truncated
		}
		r, err := parseEcho(h.buf[:n], f.v6)
		if err != nil {
			continue
		}
		h.reply(f, r.seq, r.data)
	}
}

// readRaw reads the echo replies on a raw socket and hands each to the
// flow its source and identifier name. Replies that are no flow's (other
// programs' pings) are dropped.
func (h *Handler) readRaw(fd int, v6 bool) {
	proto := header.ProtoICMP
	if v6 {
		proto = header.ProtoICMPv6
	}
	for k := 0; k < maxReads; k++ {
		n, err := recvfrom(fd, h.buf, &h.name)
		if err != nil {
			return
		}
		if n > len(h.buf) {
			continue
		}
		var src netip.Addr
		var r echoReply
		if v6 {
			if src, err = parseSource(h.name.bytes()); err == nil {
				r, err = parseEcho(h.buf[:n], true)
			}
		} else {
			src, r, err = parseRaw4(h.buf[:n])
		}
		if err != nil {
			h.Stats.Stray++
			continue
		}
		key := hostKey(proto, src, r.id)
		i, ok := h.ft.Lookup(&key)
		if !ok || h.ft.Kind(i) != flow.Ping {
			h.Stats.Stray++
			continue
		}
		h.reply(&h.flows[i], r.seq, r.data)
	}
}

// reply sends the guest the echo reply for flow f: from the address it
// pinged, with its identifier, TTL/hop limit 255. A reply with the
// sequence number of the flow's previous reply is a duplicate and dropped,
// as pasta does.
//
// seq: the sequence number; data: the reply's data after the ICMP header.
func (h *Handler) reply(f *pingFlow, seq uint16, data []byte) {
	if int32(seq) == f.lastSeq {
		h.Stats.Duplicates++
		return
	}
	f.lastSeq = int32(seq)
	b := h.out.Frame()
	il := header.ICMPv4MinLen + len(data)
	if !f.v6 {
		if header.EthernetLen+header.IPv4MinLen+il > min(len(b), header.EthernetLen+65535) {
			return
		}
		src, dst := [4]byte(f.guestDst[12:16]), [4]byte(f.guestSrc[12:16])
		header.EncodeEthernet(b, h.g.MAC, h.cfg.OurMAC, header.EtherTypeIPv4)
		header.EncodeIPv4(b[header.EthernetLen:], header.IPv4Fields{
			DF: true, TTL: ttlOut, Proto: header.ProtoICMP, Src: src, Dst: dst, PayloadLen: il,
		})
		m := b[header.EthernetLen+header.IPv4MinLen:][:il]
		m[0], m[1], m[2], m[3] = header.ICMPv4EchoReply, 0, 0, 0
		binary.BigEndian.PutUint16(m[4:], f.guestID)
		binary.BigEndian.PutUint16(m[6:], seq)
		copy(m[header.ICMPv4MinLen:], data)
		binary.BigEndian.PutUint16(m[2:], checksum.Checksum(m, 0))
		h.out.Commit(header.EthernetLen + header.IPv4MinLen + il)
		h.Stats.Replies++
		return
	}
	if header.EthernetLen+header.IPv6Len+il > len(b) || il > 65535 {
		return
	}
	header.EncodeEthernet(b, h.g.MAC, h.cfg.OurMAC, header.EtherTypeIPv6)
	header.EncodeIPv6(b[header.EthernetLen:], header.IPv6Fields{
		PayloadLen: il, NextHeader: header.ProtoICMPv6, HopLimit: ttlOut, Src: f.guestDst, Dst: f.guestSrc,
	})
	m := b[header.EthernetLen+header.IPv6Len:][:il]
	m[0], m[1], m[2], m[3] = header.ICMPv6EchoReply, 0, 0, 0
	binary.BigEndian.PutUint16(m[4:], f.guestID)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[header.ICMPv6MinLen:], data)
	binary.BigEndian.PutUint16(m[2:], checksum.Checksum(m,
		checksum.PseudoHeaderIPv6(&f.guestDst, &f.guestSrc, header.ProtoICMPv6, uint32(il))))
	h.out.Commit(header.EthernetLen + header.IPv6Len + il)
	h.Stats.Replies++
}

// tick closes the flows whose guest sent no request for Timeout.
//
// now: the loop time.
func (h *Handler) tick(now int64) {
	for k := len(h.active) - 1; k >= 0; k-- {
		if k >= len(h.active) {
			continue
		}
		i := h.active[k]
		if now-h.flows[i].last >= int64(Timeout) {
			h.close(i)
		}
	}
}

// close ends flow i.
func (h *Handler) close(i flow.Index) {
	f := &h.flows[i]
	last := h.active[len(h.active)-1]
	h.active[f.pos] = last
	h.flows[last].pos = f.pos
	h.active = h.active[:len(h.active)-1]
	h.free(i, f)
	h.Stats.FlowsFreed++
}

// Close ends every flow; the raw sockets belong to the caller of Prepare.
func (h *Handler) Close() {
	for len(h.active) > 0 {
		h.close(h.active[len(h.active)-1])
	}
}
