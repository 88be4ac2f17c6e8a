// The offloads a guest did not negotiate, done here: a partial checksum
// completed, a TCP super-frame cut into segments of its MSS (what the
// kernel's software GSO does for a device without TSO). Offloads is
// fixed before any front end connects, so producers may use them and the
// guest that comes may not know them: the test peer, whose tap has no
// virtio-net header, acks neither GUEST_CSUM nor GUEST_TSO.

package vhostuser

import (
	"encoding/binary"

	"gopasst/checksum"
	"gopasst/datapath/tap"
)

// completeCsum fills in the partial checksum of frame f that h describes:
// the field at CsumStart+CsumOffset holds the pseudo-header sum, and the
// sum over [CsumStart, end) with it in place is the checksum's
// complement. UDP (offset 6) turns 0 into 0xffff. Returns false if the
// offsets do not lie in the frame.
func completeCsum(f []byte, h *tap.VnetHdr) bool {
	cs, co := int(h.CsumStart), int(h.CsumOffset)
	if cs+co+2 > len(f) {
		return false
	}
	v := checksum.Checksum(f[cs:], 0)
	if co == 6 && v == 0 {
		v = 0xffff
	}
	binary.BigEndian.PutUint16(f[cs+co:], v)
	return true
}

// segment cuts the TCP super-frame f (h: GSO TCPv4 or TCPv6, GSOSize the
// MSS) into frames of at most GSOSize payload bytes each, headers copied
// and fixed (IPv4 total length, identification and header checksum, IPv6
// payload length, TCP sequence number, FIN and PSH on the last segment
// only, CWR on the first only, the full TCP checksum), and delivers them
// complete. A frame that is not what h says is dropped (logged once).
func (b *Backend) segment(f []byte, h *tap.VnetHdr) {
	const eth = 14
	if len(f) < eth+20 {
		b.dropBadOffload()
		return
	}
	v6 := h.GSOType&^tap.GSOECN == tap.GSOTCPv6
	var l3 int
	switch {
	case !v6 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[eth]>>4 == 4:
		l3 = int(f[eth]&0xf) * 4
	case v6 && binary.BigEndian.Uint16(f[12:]) == 0x86dd && f[eth]>>4 == 6 && f[eth+6] == 6:
		l3 = 40
	default:
		b.dropBadOffload()
		return
	}
	l4 := eth + l3
	if l3 < 20 || l4+20 > len(f) {
		b.dropBadOffload()
		return
	}
	doff := int(f[l4+12]>>4) * 4
	hl := l4 + doff
	mss := int(h.GSOSize)
	if doff < 20 || hl > len(f) || mss == 0 || hl+mss > tap.MaxFrame {
		b.dropBadOffload()
		return
	}
	b.Stats.SoftGSO++
	payload := f[hl:]
	seq := binary.BigEndian.Uint32(f[l4+4:])
	flags := f[l4+13]
	var id uint16
	if !v6 {
		id = binary.BigEndian.Uint16(f[eth+4:])
	}
	out := b.rx.seg
	for off, k := 0, 0; off < len(payload) || (off == 0 && len(payload) == 0); k++ {
		chunk := min(mss, len(payload)-off)
		s := out[:hl+chunk]
		copy(s, f[:hl])
		copy(s[hl:], payload[off:off+chunk])
		last := off+chunk >= len(payload)
		t := s[l4:]
		fl := flags
		if !last {
			fl &^= 0x01 | 0x08 // FIN, PSH
		}
		if k > 0 {
			fl &^= 0x80 // CWR
		}
		t[13] = fl
		binary.BigEndian.PutUint32(t[4:], seq+uint32(off))
		tl := doff + chunk
		t[16], t[17] = 0, 0
		var pseudo uint16
		if v6 {
			binary.BigEndian.PutUint16(s[eth+4:], uint16(tl))
			pseudo = checksum.PseudoHeaderIPv6((*[16]byte)(s[eth+8:eth+24]), (*[16]byte)(s[eth+24:eth+40]), 6, uint32(tl))
		} else {
			ip := s[eth:l4]
			binary.BigEndian.PutUint16(ip[2:], uint16(l3+tl))
			binary.BigEndian.PutUint16(ip[4:], id+uint16(k))
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], checksum.Checksum(ip, 0))
			pseudo = checksum.PseudoHeaderIPv4([4]byte(ip[12:16]), [4]byte(ip[16:20]), 6, uint16(tl))
		}
		binary.BigEndian.PutUint16(t[16:], checksum.Checksum(t[:tl], pseudo))
		b.Stats.SoftSegments++
		b.deliver1(s, nil)
		off += chunk
		if len(payload) == 0 {
			break
		}
	}
}
