// IPv4 header view, validation and builder (RFC 791).
package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 is a view of an IPv4 packet: header (with options) and payload.
type IPv4 []byte

// IPv4 flag and fragment offset bits of the 16-bit flags/offset field.
const (
	IPv4FlagDF     uint16 = 0x4000 // don't fragment
	IPv4FlagMF     uint16 = 0x2000 // more fragments
	IPv4OffsetMask uint16 = 0x1fff // fragment offset, in 8-byte units
)

// ParseIPv4 validates an IPv4 packet: version 4, IHL at least 5 and within
// the buffer, total length at least the header and at most the buffer.
// Fragments (MF set or a non-zero offset) return ErrFragment: gopasst does
// not reassemble, and a fragment's payload does not start with a transport
// header. The header checksum is not verified (see IsChecksumValid).
//
// b: the Ethernet payload. Returns the view trimmed to the total length
// (dropping Ethernet padding), or an error.
func ParseIPv4(b []byte) (IPv4, error) {
	if len(b) < IPv4MinLen {
		return nil, ErrTruncated
	}
	if b[0]>>4 != 4 {
		return nil, ErrVersion
	}
	hl := int(b[0]&0x0f) * 4
	if hl < IPv4MinLen || hl > len(b) {
		return nil, ErrHeaderLen
	}
	tl := int(binary.BigEndian.Uint16(b[2:]))
	if tl < hl || tl > len(b) {
		return nil, ErrTotalLen
	}
	if binary.BigEndian.Uint16(b[6:])&(IPv4FlagMF|IPv4OffsetMask) != 0 {
		return nil, ErrFragment
	}
	return IPv4(b[:tl]), nil
}

// HeaderLen returns the header length in bytes (IHL × 4).
func (ip IPv4) HeaderLen() int { return int(ip[0]&0x0f) * 4 }

// TOS returns the type of service byte (DSCP and ECN).
func (ip IPv4) TOS() uint8 { return ip[1] }

// TotalLen returns the total length field.
func (ip IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(ip[2:]) }

// ID returns the identification field.
func (ip IPv4) ID() uint16 { return binary.BigEndian.Uint16(ip[4:]) }

// FlagsOffset returns the flags and fragment offset field.
func (ip IPv4) FlagsOffset() uint16 { return binary.BigEndian.Uint16(ip[6:]) }

// TTL returns the time to live.
func (ip IPv4) TTL() uint8 { return ip[8] }

// Proto returns the upper-layer protocol number.
func (ip IPv4) Proto() uint8 { return ip[9] }

// Checksum returns the header checksum field.
func (ip IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(ip[10:]) }

// Src returns the source address.
func (ip IPv4) Src() [4]byte { return [4]byte(ip[12:16]) }

// Dst returns the destination address.
func (ip IPv4) Dst() [4]byte { return [4]byte(ip[16:20]) }

// SrcAddr returns the source address as a netip.Addr.
func (ip IPv4) SrcAddr() netip.Addr { return netip.AddrFrom4(ip.Src()) }

// DstAddr returns the destination address as a netip.Addr.
func (ip IPv4) DstAddr() netip.Addr { return netip.AddrFrom4(ip.Dst()) }

// Options returns the header options (empty for IHL 5).
func (ip IPv4) Options() []byte { return ip[IPv4MinLen:ip.HeaderLen()] }

// Payload returns the bytes after the header up to the total length.
func (ip IPv4) Payload() []byte { return ip[ip.HeaderLen():ip.TotalLen()] }

// PayloadLen returns the total length minus the header length.
func (ip IPv4) PayloadLen() int { return int(ip.TotalLen()) - ip.HeaderLen() }

// SetTOS sets the type of service byte.
func (ip IPv4) SetTOS(v uint8) { ip[1] = v }

// SetTotalLen sets the total length field.
func (ip IPv4) SetTotalLen(v uint16) { binary.BigEndian.PutUint16(ip[2:], v) }

// SetID sets the identification field.
func (ip IPv4) SetID(v uint16) { binary.BigEndian.PutUint16(ip[4:], v) }

// SetTTL sets the time to live.
func (ip IPv4) SetTTL(v uint8) { ip[8] = v }

// SetSrc sets the source address.
func (ip IPv4) SetSrc(a [4]byte) { copy(ip[12:16], a[:]) }

// SetDst sets the destination address.
func (ip IPv4) SetDst(a [4]byte) { copy(ip[16:20], a[:]) }

// SetChecksum computes the header checksum over HeaderLen bytes and
// stores it. Call it after every other header field is final.
func (ip IPv4) SetChecksum() {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], finish(sum(ip[:ip.HeaderLen()], 0)))
}

// IsChecksumValid reports whether the header checksum is correct.
func (ip IPv4) IsChecksumValid() bool {
	return sum(ip[:ip.HeaderLen()], 0) == 0xffff
}

// IPv4Fields are the values EncodeIPv4 writes. Unset fields are zero; the
// header has no options.
type IPv4Fields struct {
	TOS        uint8
	ID         uint16
	DF         bool // set the don't-fragment flag
	TTL        uint8
	Proto      uint8
	Src, Dst   [4]byte
	PayloadLen int // upper-layer length: total length = 20 + PayloadLen
}

// EncodeIPv4 writes a 20-byte IPv4 header (no options) at the start of b,
// with its header checksum.
//
// b: destination buffer, at least IPv4MinLen bytes; f: the field values
// (f.PayloadLen + 20 must fit in 16 bits). Returns IPv4MinLen.
func EncodeIPv4(b []byte, f IPv4Fields) int {
	_ = b[IPv4MinLen-1]
	b[0] = 0x45
	b[1] = f.TOS
	binary.BigEndian.PutUint16(b[2:], uint16(IPv4MinLen+f.PayloadLen))
	binary.BigEndian.PutUint16(b[4:], f.ID)
	var fo uint16
	if f.DF {
		fo = IPv4FlagDF
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = f.TTL
	b[9] = f.Proto
	b[10], b[11] = 0, 0
	copy(b[12:16], f.Src[:])
	copy(b[16:20], f.Dst[:])
	binary.BigEndian.PutUint16(b[10:], finish(sum(b[:IPv4MinLen], 0)))
	return IPv4MinLen
}
