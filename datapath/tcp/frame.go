// Building frames towards the guest: Ethernet, IPv4 or IPv6 and TCP
// headers in front of a payload that is already in place (a peek from the
// host socket lands straight in the payload area of the frame), with the
// TCP checksum computed once per frame over pseudo-header, header and
// payload, or left partial for the guest's kernel when the tap has
// offloads (then a frame may also carry many segments, see commit).

package tcp

import (
	"encoding/binary"

	"gopasst/checksum"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
)

// TCP flag bits, short names for the hot code.
const (
	flagFIN = header.TCPFlagFIN
	flagSYN = header.TCPFlagSYN
	flagRST = header.TCPFlagRST
	flagPSH = header.TCPFlagPSH
	flagACK = header.TCPFlagACK
)

// Header lengths of the frames we build (no IP or TCP options on data).
const (
	hdrLen4 = header.EthernetLen + header.IPv4MinLen + header.TCPMinLen // 54
	hdrLen6 = header.EthernetLen + header.IPv6Len + header.TCPMinLen    // 74
	synOpts = 8                                                         // MSS, NOP, WS
)

// hdrLen returns the header bytes in front of the payload of a data frame.
func hdrLen(v6 bool) int {
	if v6 {
		return hdrLen6
	}
	return hdrLen4
}

// segment describes a segment to the guest for build.
type segment struct {
	seq, ack uint32
	flags    uint8
	wnd      uint16
	mss      uint16 // if non-zero: SYN options MSS (and WS if ws >= 0)
	ws       int8
	plen     int // payload bytes already at the payload offset
}

// build writes the headers of a frame towards the guest for the
// connection whose guest-side key is k (the guest is k.Src:k.SrcPort, the
// peer it sees is k.Dst:k.DstPort), and the TCP checksum.
//
// f: the frame buffer, payload (if any) already at hdrLen(v6) (+ synOpts
// for a SYN, which carries no payload); k: the key; v6: the family; s: the
// segment. Returns the frame length.
func (h *Handler) build(f []byte, k *flow.Key, v6 bool, s *segment) int {
	copy(f[0:6], h.g.MAC[:])
	copy(f[6:12], h.cfg.OurMAC[:])
	optLen := 0
	if s.mss != 0 {
		optLen = synOpts
	}
	tcpLen := header.TCPMinLen + optLen + s.plen
	var off int
	var pseudo uint16
	if v6 {
		binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv6)
		header.EncodeIPv6(f[header.EthernetLen:], header.IPv6Fields{
			PayloadLen: tcpLen, NextHeader: header.ProtoTCP, HopLimit: 255,
			Src: k.Dst, Dst: k.Src,
		})
		off = header.EthernetLen + header.IPv6Len
		pseudo = checksum.PseudoHeaderIPv6(&k.Dst, &k.Src, header.ProtoTCP, uint32(tcpLen))
	} else {
		binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv4)
		src, dst := [4]byte(k.Dst[12:16]), [4]byte(k.Src[12:16])
		header.EncodeIPv4(f[header.EthernetLen:], header.IPv4Fields{
			DF: true, TTL: 255, Proto: header.ProtoTCP, Src: src, Dst: dst, PayloadLen: tcpLen,
		})
		off = header.EthernetLen + header.IPv4MinLen
		pseudo = checksum.PseudoHeaderIPv4(src, dst, header.ProtoTCP, uint16(tcpLen))
	}
	t := f[off : off+tcpLen]
	header.EncodeTCP(t, header.TCPFields{
		SrcPort: k.DstPort, DstPort: k.SrcPort, Seq: s.seq, Ack: s.ack,
		Flags: s.flags, Window: s.wnd, OptLen: optLen,
	})
	if optLen != 0 {
		header.PutTCPOptMSS(t[header.TCPMinLen:], s.mss)
		if s.ws >= 0 {
			header.PutTCPOptWS(t[header.TCPMinLen+4:], uint8(s.ws))
		} else {
			t[24], t[25], t[26], t[27] = header.TCPOptNOP, header.TCPOptNOP, header.TCPOptNOP, header.TCPOptNOP
		}
	}
	if h.csumOff {
		// Checksum offload: the field holds the pseudo-header sum, as
		// the kernel's own TSO leaves it (__tcp_v4_send_check); the
		// guest's kernel trusts a partial checksum on local delivery
		// and completes it only if it forwards the frame.
		binary.BigEndian.PutUint16(t[16:], pseudo)
	} else {
		binary.BigEndian.PutUint16(t[16:], checksum.Checksum(t, pseudo))
	}
	return off + tcpLen
}

// commit queues a frame made by build. With offloads the frame gets a
// virtio-net header: partial checksum (the TCP checksum field at csum_start
// + 16) and, for a payload longer than the guest's MSS, segmentation
// (gso_size = MSS), which is what makes a super-frame legal on a link
// whose MTU is smaller: the guest's kernel takes it as one GRO-style
// packet of many segments.
//
// n: the frame length from build; v6: the family; plen: its payload
// length; mss: the guest's MSS.
func (h *Handler) commit(n int, v6 bool, plen int, mss uint16) {
	if !h.csumOff {
		h.out.Commit(n)
		return
	}
	l4 := header.EthernetLen + header.IPv4MinLen
	gso := uint8(tap.GSOTCPv4)
	if v6 {
		l4 = header.EthernetLen + header.IPv6Len
		gso = tap.GSOTCPv6
	}
	h.vh = tap.VnetHdr{Flags: tap.VnetNeedsCsum, HdrLen: uint16(n - plen), CsumStart: uint16(l4), CsumOffset: 16}
	if plen > int(mss) && mss != 0 {
		h.vh.GSOType, h.vh.GSOSize = gso, mss
	}
	h.out.CommitOffload(n, &h.vh)
}

// framePayload returns how many payload bytes one frame to connection c's
// guest carries: its MSS, or with segmentation offload as many whole
// segments as fit in the largest frame (64 KiB of IP packet, and the
// frame buffer).
func (h *Handler) framePayload(c *conn) int {
	mss := int(c.mss)
	if !h.csumOff || h.noGSO {
		return mss
	}
	l := min(65535-header.IPv4MinLen-header.TCPMinLen, tap.MaxFrame-hdrLen4)
	if c.v6 {
		l = min(65535-header.TCPMinLen, tap.MaxFrame-hdrLen6)
	}
	if mss >= l {
		return l
	}
	return l - l%mss
}

// ctrl queues a segment without payload for connection i at its current
// sequence, carrying the current ACK and window.
//
// i: the connection; flags: TCP flags. Returns nothing; the frame goes out
// at the end of the turn.
func (h *Handler) ctrl(i flow.Index, flags uint8) {
	h.ctrlSeq(i, flags, h.conns[i].seqToTap)
}

// ctrlSeq is ctrl with an explicit sequence number (handshake and FIN
// retransmissions, keepalive and window probes). SYNs carry our MSS and,
// when scaling is offered or agreed, our window scale, and an unscaled
// window.
func (h *Handler) ctrlSeq(i flow.Index, flags uint8, seq uint32) {
	c := &h.conns[i]
	k, ok := h.ft.Key(i, 0)
	if !ok {
		return
	}
	s := segment{seq: seq, ack: c.seqFromTap, flags: flags, wnd: c.wndToTap, ws: -1}
	if flags&flagACK == 0 {
		s.ack = 0
	}
	if flags&flagSYN != 0 {
		s.mss = h.mss4
		if c.v6 {
			s.mss = h.mss6
		}
		if c.flags&fWS != 0 || c.events&sockAccepted != 0 {
			s.ws = int8(c.wsToTap)
		}
		// A SYN's window is never scaled (RFC 7323 §2.2).
		w := uint32(c.wndToTap) << c.wsToTap
		s.wnd = uint16(min(max(w, initWnd), 65535))
	}
	f := h.out.Frame()
	n := h.build(f, k, c.v6, &s)
	h.commit(n, c.v6, 0, 0)
	h.Stats.FramesOut++
	c.seqAckToTap = c.seqFromTap
}

// rstUnknown answers a guest segment that matches no connection with a
// reset, as RFC 9293 §3.10.7.1 asks; resets are never answered.
//
// p: the guest's packet.
func (h *Handler) rstUnknown(p *packet.Packet) {
	t := header.TCP(p.L4Bytes())
	fl := t.Flags()
	if fl&flagRST != 0 {
		return
	}
	k := flow.Key{Proto: header.ProtoTCP, Src: p.Src.As16(), Dst: p.Dst.As16(), SrcPort: p.SrcPort, DstPort: p.DstPort}
	s := segment{ws: -1}
	if fl&flagACK != 0 {
		s.seq, s.flags = t.Ack(), flagRST
	} else {
		n := uint32(t.PayloadLen())
		if fl&flagSYN != 0 {
			n++
		}
		if fl&flagFIN != 0 {
			n++
		}
		s.ack, s.flags = t.Seq()+n, flagRST|flagACK
	}
	f := h.out.Frame()
	h.commit(h.build(f, &k, p.V6, &s), p.V6, 0, 0)
	h.Stats.FramesOut++
}
