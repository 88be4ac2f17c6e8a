// Building frames towards the guest: Ethernet, IPv4 or IPv6 and TCP
// headers in front of a payload that is already in place (a peek from the
// host socket lands straight in the payload area of the frame), with the
// TCP checksum computed once per frame over pseudo-header, header and
// payload.

package tcp

import (
	"encoding/binary"

	"gopasst/checksum"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
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
	binary.BigEndian.PutUint16(t[16:], checksum.Checksum(t, pseudo))
	return off + tcpLen
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
	h.out.Commit(n)
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
	h.out.Commit(h.build(f, &k, p.V6, &s))
	h.Stats.FramesOut++
}
