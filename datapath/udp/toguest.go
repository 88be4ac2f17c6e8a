// Host to guest: datagrams read from flow sockets straight into frames, the
// headers written in front, and ICMP errors from the error queue relayed as
// ICMP/ICMPv6 messages.
package udp

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"

	"gopasst/batch"
	"gopasst/checksum"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/sys"
	"gopasst/datapath/tap"
)

// maxPayload returns how many payload bytes fit in a frame buffer of size
// n after hdr bytes of headers, within the IP length field (65535 bytes
// for the whole IPv4 packet, for the IPv6 payload).
func maxPayload(n, hdr int) int {
	lim := 65535 - header.IPv4MinLen - header.UDPLen
	if hdr == hdr6 {
		lim = 65535 - header.UDPLen
	}
	return max(0, min(n-hdr, lim))
}

// sockEvent handles readiness of a flow socket.
func (h *Handler) sockEvent(r loop.Ref, events uint32) {
	i := flow.Index(r.Index())
	if int(i) >= len(h.flows) || h.ft.Kind(i) != flow.UDP {
		return
	}
	f := &h.flows[i]
	if int(f.fd) != r.FD() {
		return // a stale event for a descriptor closed this turn
	}
	if events&unix.EPOLLERR != 0 {
		h.drainErrors(f)
	}
	if events&unix.EPOLLIN != 0 {
		h.readFlow(f)
	}
}

// readFlow moves every datagram queued on f's socket to the guest: each
// recvmmsg reads into the payload area of reserved frames, then each frame
// gets its headers and is committed. With GSO towards the guest, small
// datagrams go through readFlowStaged instead.
func (h *Handler) readFlow(f *udpFlow) {
	if h.stage != nil && f.inSize <= stageMaxSize {
		h.readFlowStaged(f)
		return
	}
	hdr := hdr4
	if f.ep.v6 {
		hdr = hdr6
	}
	peer := netip.AddrFrom16(f.host).Unmap()
	for round := 0; round < maxRounds; round++ {
		n := h.out.Reserve(h.frames)
		if n == 0 {
			h.dropWaiting(int(f.fd), h.recv)
			return
		}
		for j := 0; j < n; j++ {
			b := h.frames[j]
			h.recv.SetBuf(j, b[hdr:hdr+maxPayload(len(b), hdr)])
		}
		h.recv.ResetNames(n)
		m, e := sys.Recvmmsg(int(f.fd), h.recv.Hdrs[:n], unix.MSG_DONTWAIT)
		if e != 0 || m == 0 {
			return
		}
		w := 0
		for j := 0; j < m; j++ {
			mh := &h.recv.Hdrs[j]
			dl := int(mh.Len)
			if mh.Hdr.Flags&unix.MSG_TRUNC != 0 {
				h.Stats.ToGuestDropped++
				continue
			}
			// A connected socket only receives from its peer, except
			// what arrived between bind and connect (another peer
			// reaching a listener's address and port): drop that.
			src, sport, err := parseSockaddr(nameBytes(&h.recv.Names[j], mh.Hdr.Namelen))
			if err != nil || src != peer || sport != f.hostPort {
				h.Stats.ToGuestDropped++
				continue
			}
			if w != j {
				// Frames commit in order: close the gap a dropped
				// datagram left (only ever after a drop).
				copy(h.frames[w][hdr:hdr+dl], h.frames[j][hdr:hdr+dl])
			}
			h.commit(f.ep.v6, h.fill(&f.ep, h.frames[w], dl, h.csumOff), dl, 1)
			f.inSize = int32(dl)
			w++
			inc(&f.hostSent)
		}
		h.Stats.ToGuest += uint64(w)
		if w > 0 {
			f.last = h.l.Now()
		}
		if m < n {
			return
		}
	}
}

// dropWaiting reads and drops one batch of the datagrams waiting on fd, for
// when the guest back end has no buffers for them (a stream socket that is
// full): UDP sockets are level-triggered, and datagrams left there would
// wake the loop at once, again and again, until the guest side drains. A
// UDP datagram may be lost; the loop must not spin.
//
// fd: the socket; m: the message headers to read with (h.recv or h.lrecv).
func (h *Handler) dropWaiting(fd int, m *batch.Msgs) {
	for j := range m.Hdrs {
		m.SetBuf(j, h.sink[:])
	}
	m.ResetNames(len(m.Hdrs))
	n, e := sys.Recvmmsg(fd, m.Hdrs, unix.MSG_DONTWAIT)
	if e == 0 {
		h.Stats.ToGuestDropped += uint64(n)
	}
}

// fill writes the Ethernet, IP and UDP headers of a datagram from ep's peer
// to the guest in front of the n payload bytes already at hdr4/hdr6 in b,
// with the UDP checksum, or with only its pseudo-header sum when the frame
// goes with a partial checksum (see commit).
//
// ep: the flow's endpoints as the guest sees them; b: the frame buffer;
// partial: leave the checksum to the guest's kernel. Returns the frame
// length.
func (h *Handler) fill(ep *endpoints, b []byte, n int, partial bool) int {
	var u []byte
	var pseudo uint16
	if !ep.v6 {
		header.EncodeEthernet(b, h.g.MAC, h.cfg.OurMAC, header.EtherTypeIPv4)
		src, dst := [4]byte(ep.peer[12:16]), [4]byte(ep.guest[12:16])
		header.EncodeIPv4(b[header.EthernetLen:], header.IPv4Fields{
			DF: true, TTL: ttlOut, Proto: header.ProtoUDP,
			Src: src, Dst: dst, PayloadLen: header.UDPLen + n,
		})
		u = b[hdr4-header.UDPLen : hdr4+n]
		pseudo = checksum.PseudoHeaderIPv4(src, dst, header.ProtoUDP, uint16(len(u)))
	} else {
		header.EncodeEthernet(b, h.g.MAC, h.cfg.OurMAC, header.EtherTypeIPv6)
		header.EncodeIPv6(b[header.EthernetLen:], header.IPv6Fields{
			PayloadLen: header.UDPLen + n, NextHeader: header.ProtoUDP, HopLimit: ttlOut,
			Src: ep.peer, Dst: ep.guest,
		})
		u = b[hdr6-header.UDPLen : hdr6+n]
		pseudo = checksum.PseudoHeaderIPv6(&ep.peer, &ep.guest, header.ProtoUDP, uint32(len(u)))
	}
	header.EncodeUDP(u, ep.peerPort, ep.guestPort, n)
	if partial {
		// As the kernel's own checksum offload leaves it (udp4_hwcsum):
		// the guest's kernel trusts a partial checksum on local delivery
		// and completes it only if it forwards the frame.
		binary.BigEndian.PutUint16(u[6:], pseudo)
		return hdrLen(ep.v6) + n
	}
	c := checksum.Checksum(u, pseudo)
	if c == 0 {
		c = 0xffff // RFC 768, RFC 8200 §8.1: zero means "no checksum"
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return hdrLen(ep.v6) + n
}

// hdrLen returns the header bytes in front of a UDP payload in a frame to
// the guest: hdr6 for IPv6, hdr4 for IPv4.
func hdrLen(v6 bool) int {
	if v6 {
		return hdr6
	}
	return hdr4
}

// commit queues a frame made by fill. With offloads (h.csumOff) the frame gets
// a virtio-net header saying its UDP checksum is partial and, when it holds
// segs > 1 datagrams of seg payload bytes each (the last may be shorter),
// UDP segmentation (GSO_UDP_L4): the guest's kernel cuts it into those
// datagrams (at the receiving socket, or when it forwards the frame).
//
// v6: the family; n: the frame length; seg, segs: the segmentation.
func (h *Handler) commit(v6 bool, n, seg, segs int) {
	if !h.csumOff {
		h.out.Commit(n)
		return
	}
	hl := hdrLen(v6)
	h.vh = tap.VnetHdr{Flags: tap.VnetNeedsCsum, HdrLen: uint16(hl),
		CsumStart: uint16(hl - header.UDPLen), CsumOffset: 6}
	if segs > 1 {
		h.vh.GSOType, h.vh.GSOSize = tap.GSOUDPL4, uint16(seg)
	}
	h.out.CommitOffload(n, &h.vh)
}

// drainErrors reads f's socket error queue and relays each ICMP error to
// the guest. Reading the queue also clears the socket's pending error, so
// the next send does not fail for a datagram long gone.
func (h *Handler) drainErrors(f *udpFlow) {
	for k := 0; k < maxErrors; k++ {
		payload, ctrl, errno := h.eq.read(int(f.fd))
		if errno != 0 {
			return
		}
		e, err := parseRecvErr(ctrl)
		if err != nil {
			h.Stats.BadErrQueue++
			continue
		}
		h.relayError(f, &e, payload)
	}
}

// ICMP error payload limits: RFC 792 quotes 64 bits of the original
// datagram; for ICMPv6 the whole error must fit in the IPv6 minimum MTU
// (RFC 4443 §2.4 (c)): 1280 - outer IPv6 - ICMPv6 - inner IPv6 - UDP. (The
// C original allows 1232 payload bytes, 48 more than fit.)
const (
	icmp4Quote = 8
	icmp6Quote = 1280 - header.IPv6Len - header.ICMPv6MinLen - header.IPv6Len - header.UDPLen
)

// relayError sends the guest the ICMP error its own datagram caused: from
// the address the guest sent to if the flow's peer sent the error, else
// from the offender as translated by nat.ToGuest (dropped if it has no
// guest-side address), with the inner IP and UDP headers as the guest sent
// them and the quoted payload bytes.
//
// f: the flow; e: the extended error; payload: the quoted UDP payload.
func (h *Handler) relayError(f *udpFlow, e *recvErr, payload []byte) {
	ep := &f.ep
	var src [16]byte
	switch {
	case !e.Offender.IsValid() || e.Offender == netip.AddrFrom16(f.host).Unmap():
		src = ep.peer
	default:
		a, ok := nat.ToGuest(h.cfg, h.g, e.Offender)
		if !ok || a.Is4() == ep.v6 {
			return
		}
		src = a.As16()
	}
	want := uint8(unix.SO_EE_ORIGIN_ICMP)
	if ep.v6 {
		want = unix.SO_EE_ORIGIN_ICMP6
	}
	if e.Origin != want {
		return
	}
	h.icmpError(ep, f.ttl, &src, e.Type, e.Code, e.Info, payload)
}

// icmpError queues to the guest an ICMP (IPv4) or ICMPv6 error of type typ
// and code about a datagram the guest sent: from src, quoting the
// datagram's IP and UDP headers as the guest sent them (addresses, ports,
// its TTL or hop limit) and as many payload bytes as icmp4Quote and
// icmp6Quote allow.
//
// ep: the datagram's endpoints (guest to peer); ttl: its TTL or hop limit;
// src: the error's source, 16 bytes (IPv4-mapped for IPv4); info: the MTU
// of "fragmentation needed" and "packet too big", the pointer of a
// parameter problem, unused otherwise; payload: the datagram's UDP payload.
func (h *Handler) icmpError(ep *endpoints, ttl uint8, src *[16]byte, typ, code uint8, info uint32, payload []byte) {
	b := h.out.Frame()
	if !ep.v6 {
		dl := min(len(payload), icmp4Quote)
		il := header.ICMPv4MinLen + header.IPv4MinLen + header.UDPLen + dl
		if header.EthernetLen+header.IPv4MinLen+il > len(b) {
			return
		}
		s4, g4, p4 := [4]byte(src[12:16]), [4]byte(ep.guest[12:16]), [4]byte(ep.peer[12:16])
		header.EncodeEthernet(b, h.g.MAC, h.cfg.OurMAC, header.EtherTypeIPv4)
		header.EncodeIPv4(b[header.EthernetLen:], header.IPv4Fields{
			TTL: ttlOut, Proto: header.ProtoICMP, Src: s4, Dst: g4, PayloadLen: il,
		})
		ic := b[header.EthernetLen+header.IPv4MinLen:][:il]
		ic[0], ic[1] = typ, code
		clear(ic[2:8])
		switch {
		case typ == header.ICMPv4DestUnreach && code == header.ICMPv4CodeFragNeeded:
			binary.BigEndian.PutUint16(ic[6:], uint16(min(info, 0xffff)))
		case typ == header.ICMPv4ParamProblem:
			ic[4] = uint8(info) // the pointer
		}
		in := ic[header.ICMPv4MinLen:]
		header.EncodeIPv4(in, header.IPv4Fields{
			TTL: ttl, Proto: header.ProtoUDP, Src: g4, Dst: p4,
			PayloadLen: header.UDPLen + dl,
		})
		u := in[header.IPv4MinLen:]
		header.EncodeUDP(u, ep.guestPort, ep.peerPort, dl)
		copy(u[header.UDPLen:], payload[:dl])
		c := checksum.Checksum(u, checksum.PseudoHeaderIPv4(g4, p4, header.ProtoUDP, uint16(len(u))))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
		binary.BigEndian.PutUint16(ic[2:], checksum.Checksum(ic, 0))
		h.out.Commit(header.EthernetLen + header.IPv4MinLen + il)
		h.Stats.ICMPErrors++
		return
	}
	dl := min(len(payload), icmp6Quote)
	il := header.ICMPv6MinLen + header.IPv6Len + header.UDPLen + dl
	if header.EthernetLen+header.IPv6Len+il > len(b) {
		return
	}
	header.EncodeEthernet(b, h.g.MAC, h.cfg.OurMAC, header.EtherTypeIPv6)
	header.EncodeIPv6(b[header.EthernetLen:], header.IPv6Fields{
		PayloadLen: il, NextHeader: header.ProtoICMPv6, HopLimit: ttlOut, Src: *src, Dst: ep.guest,
	})
	ic := b[header.EthernetLen+header.IPv6Len:][:il]
	ic[0], ic[1] = typ, code
	clear(ic[2:8])
	switch typ {
	case header.ICMPv6PacketTooBig, header.ICMPv6ParamProblem:
		binary.BigEndian.PutUint32(ic[4:], info) // MTU, pointer
	}
	in := ic[header.ICMPv6MinLen:]
	header.EncodeIPv6(in, header.IPv6Fields{
		PayloadLen: header.UDPLen + dl, NextHeader: header.ProtoUDP, HopLimit: ttl,
		Src: ep.guest, Dst: ep.peer,
	})
	u := in[header.IPv6Len:]
	header.EncodeUDP(u, ep.guestPort, ep.peerPort, dl)
	copy(u[header.UDPLen:], payload[:dl])
	c := checksum.Checksum(u, checksum.PseudoHeaderIPv6(&ep.guest, &ep.peer, header.ProtoUDP, uint32(len(u))))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	binary.BigEndian.PutUint16(ic[2:], checksum.Checksum(ic, checksum.PseudoHeaderIPv6(src, &ep.guest, header.ProtoICMPv6, uint32(il))))
	h.out.Commit(header.EthernetLen + header.IPv6Len + il)
	h.Stats.ICMPErrors++
}
