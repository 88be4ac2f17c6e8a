// ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) message views, validation and
// checksums. The bytes after the 4-byte type/code/checksum are the
// identifier and sequence number for echo messages, the MTU for
// fragmentation-needed and packet-too-big errors.
package header

import "encoding/binary"

// ICMPv4 is a view of an ICMPv4 message.
type ICMPv4 []byte

// ICMPv6 is a view of an ICMPv6 message.
type ICMPv6 []byte

// ParseICMPv4 checks that b holds at least the 8-byte ICMPv4 header. The
// checksum is not verified.
//
// b: the IPv4 payload. Returns the view or ErrTruncated.
func ParseICMPv4(b []byte) (ICMPv4, error) {
	if len(b) < ICMPv4MinLen {
		return nil, ErrTruncated
	}
	return ICMPv4(b), nil
}

// Type returns the message type.
func (m ICMPv4) Type() uint8 { return m[0] }

// Code returns the message code.
func (m ICMPv4) Code() uint8 { return m[1] }

// Checksum returns the checksum field.
func (m ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:]) }

// Ident returns the echo identifier.
func (m ICMPv4) Ident() uint16 { return binary.BigEndian.Uint16(m[4:]) }

// Seq returns the echo sequence number.
func (m ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// MTU returns the next-hop MTU of a fragmentation-needed error (RFC 1191).
func (m ICMPv4) MTU() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// Payload returns the bytes after the 8-byte header.
func (m ICMPv4) Payload() []byte { return m[ICMPv4MinLen:] }

// SetType sets the message type.
func (m ICMPv4) SetType(t uint8) { m[0] = t }

// SetCode sets the message code.
func (m ICMPv4) SetCode(c uint8) { m[1] = c }

// SetIdent sets the echo identifier.
func (m ICMPv4) SetIdent(v uint16) { binary.BigEndian.PutUint16(m[4:], v) }

// SetSeq sets the echo sequence number.
func (m ICMPv4) SetSeq(v uint16) { binary.BigEndian.PutUint16(m[6:], v) }

// SetMTU sets the next-hop MTU (and clears the unused field before it).
func (m ICMPv4) SetMTU(v uint16) {
	m[4], m[5] = 0, 0
	binary.BigEndian.PutUint16(m[6:], v)
}

// SetChecksum computes the checksum over the whole view and stores it.
func (m ICMPv4) SetChecksum() {
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], finish(sum(m, 0)))
}

// IsChecksumValid reports whether the checksum over the view is correct.
func (m ICMPv4) IsChecksumValid() bool { return sum(m, 0) == 0xffff }

// ParseICMPv6 checks that b holds at least 8 bytes (every ICMPv6 message
// gopasst handles has at least the 4-byte header and 4 more bytes). The
// checksum is not verified.
//
// b: the upper-layer bytes of an IPv6 packet. Returns the view or
// ErrTruncated.
func ParseICMPv6(b []byte) (ICMPv6, error) {
	if len(b) < ICMPv6MinLen {
		return nil, ErrTruncated
	}
	return ICMPv6(b), nil
}

// Type returns the message type.
func (m ICMPv6) Type() uint8 { return m[0] }

// Code returns the message code.
func (m ICMPv6) Code() uint8 { return m[1] }

// Checksum returns the checksum field.
func (m ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:]) }

// Ident returns the echo identifier.
func (m ICMPv6) Ident() uint16 { return binary.BigEndian.Uint16(m[4:]) }

// Seq returns the echo sequence number.
func (m ICMPv6) Seq() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// MTU returns the MTU of a packet-too-big error.
func (m ICMPv6) MTU() uint32 { return binary.BigEndian.Uint32(m[4:]) }

// Payload returns the bytes after the 8-byte header (for NDP messages:
// the target address or RA fields, then options).
func (m ICMPv6) Payload() []byte { return m[ICMPv6MinLen:] }

// SetType sets the message type.
func (m ICMPv6) SetType(t uint8) { m[0] = t }

// SetCode sets the message code.
func (m ICMPv6) SetCode(c uint8) { m[1] = c }

// SetIdent sets the echo identifier.
func (m ICMPv6) SetIdent(v uint16) { binary.BigEndian.PutUint16(m[4:], v) }

// SetSeq sets the echo sequence number.
func (m ICMPv6) SetSeq(v uint16) { binary.BigEndian.PutUint16(m[6:], v) }

// SetMTU sets the MTU of a packet-too-big error.
func (m ICMPv6) SetMTU(v uint32) { binary.BigEndian.PutUint32(m[4:], v) }

// SetChecksum computes the checksum over the whole view and the IPv6
// pseudo-header (RFC 4443 §2.3) and stores it.
//
// src, dst: the addresses of the enclosing IPv6 header.
func (m ICMPv6) SetChecksum(src, dst *[16]byte) {
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], finish(sum(m, pseudoIPv6(src, dst, ProtoICMPv6, uint32(len(m))))))
}

// IsChecksumValid reports whether the checksum over the view is correct.
func (m ICMPv6) IsChecksumValid(src, dst *[16]byte) bool {
	return sum(m, pseudoIPv6(src, dst, ProtoICMPv6, uint32(len(m)))) == 0xffff
}
