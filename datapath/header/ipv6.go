// IPv6 header view, extension header walk and builder (RFC 8200).
package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 is a view of an IPv6 packet: the 40-byte fixed header, any extension
// headers, and the upper-layer header and payload.
type IPv6 []byte

// ParseIPv6 validates an IPv6 packet and walks its extension headers
// (hop-by-hop first only, routing, destination options, fragment) to the
// upper-layer header. Fragments other than atomic ones (offset 0, M clear,
// RFC 6946) return ErrFragment. Jumbograms (payload length 0 with a
// hop-by-hop Jumbo option) are not supported and fail the length checks.
//
// b: the Ethernet payload. Returns the view trimmed to 40 + payload length
// (dropping Ethernet padding), the upper-layer protocol number (the last
// Next Header, possibly ProtoNoNext), the offset of the upper-layer header
// from the start of the view, or an error.
func ParseIPv6(b []byte) (ip IPv6, proto uint8, off int, err error) {
	if len(b) < IPv6Len {
		return nil, 0, 0, ErrTruncated
	}
	if b[0]>>4 != 6 {
		return nil, 0, 0, ErrVersion
	}
	end := IPv6Len + int(binary.BigEndian.Uint16(b[4:]))
	if end > len(b) {
		return nil, 0, 0, ErrTotalLen
	}
	b = b[:end]
	nh := b[6]
	off = IPv6Len
	// Each round consumes at least 8 bytes, so the walk is bounded by the
	// payload length (at most 8192 rounds).
	for {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts:
			if nh == ProtoHopByHop && off != IPv6Len {
				// RFC 8200 §4.3: only immediately after the header.
				return nil, 0, 0, ErrExtHeader
			}
			if off+8 > end {
				return nil, 0, 0, ErrExtHeader
			}
			l := (int(b[off+1]) + 1) * 8
			if off+l > end {
				return nil, 0, 0, ErrExtHeader
			}
			nh = b[off]
			off += l
		case ProtoFragment:
			if off+8 > end {
				return nil, 0, 0, ErrExtHeader
			}
			// Offset in the top 13 bits, M in the lowest bit.
			if fo := binary.BigEndian.Uint16(b[off+2:]); fo&0xfff9 != 0 {
				return nil, 0, 0, ErrFragment
			}
			nh = b[off]
			off += 8
		default:
			return IPv6(b), nh, off, nil
		}
	}
}

// TrafficClass returns the traffic class (DSCP and ECN).
func (ip IPv6) TrafficClass() uint8 {
	return uint8(binary.BigEndian.Uint16(ip[0:]) >> 4)
}

// FlowLabel returns the 20-bit flow label.
func (ip IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(ip[0:]) & 0xfffff }

// PayloadLen returns the payload length field (extension headers and
// upper layer).
func (ip IPv6) PayloadLen() int { return int(binary.BigEndian.Uint16(ip[4:])) }

// NextHeader returns the Next Header of the fixed header (the first
// extension header or the upper-layer protocol).
func (ip IPv6) NextHeader() uint8 { return ip[6] }

// HopLimit returns the hop limit.
func (ip IPv6) HopLimit() uint8 { return ip[7] }

// Src returns the source address.
func (ip IPv6) Src() [16]byte { return [16]byte(ip[8:24]) }

// Dst returns the destination address.
func (ip IPv6) Dst() [16]byte { return [16]byte(ip[24:40]) }

// SrcAddr returns the source address as a netip.Addr.
func (ip IPv6) SrcAddr() netip.Addr { return netip.AddrFrom16(ip.Src()) }

// DstAddr returns the destination address as a netip.Addr.
func (ip IPv6) DstAddr() netip.Addr { return netip.AddrFrom16(ip.Dst()) }

// Payload returns the bytes after the fixed header up to the payload
// length (extension headers included).
func (ip IPv6) Payload() []byte { return ip[IPv6Len : IPv6Len+ip.PayloadLen()] }

// SetPayloadLen sets the payload length field.
func (ip IPv6) SetPayloadLen(v uint16) { binary.BigEndian.PutUint16(ip[4:], v) }

// SetNextHeader sets the Next Header of the fixed header.
func (ip IPv6) SetNextHeader(v uint8) { ip[6] = v }

// SetHopLimit sets the hop limit.
func (ip IPv6) SetHopLimit(v uint8) { ip[7] = v }

// SetSrc sets the source address.
func (ip IPv6) SetSrc(a [16]byte) { copy(ip[8:24], a[:]) }

// SetDst sets the destination address.
func (ip IPv6) SetDst(a [16]byte) { copy(ip[24:40], a[:]) }

// IPv6Fields are the values EncodeIPv6 writes.
type IPv6Fields struct {
	TrafficClass uint8
	FlowLabel    uint32 // low 20 bits used
	PayloadLen   int    // upper-layer length (no extension headers are written)
	NextHeader   uint8
	HopLimit     uint8
	Src, Dst     [16]byte
}

// EncodeIPv6 writes a 40-byte IPv6 header at the start of b.
//
// b: destination buffer, at least IPv6Len bytes; f: the field values
// (f.PayloadLen must fit in 16 bits). Returns IPv6Len.
func EncodeIPv6(b []byte, f IPv6Fields) int {
	_ = b[IPv6Len-1]
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(f.TrafficClass)<<20|f.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(f.PayloadLen))
	b[6] = f.NextHeader
	b[7] = f.HopLimit
	copy(b[8:24], f.Src[:])
	copy(b[24:40], f.Dst[:])
	return IPv6Len
}
