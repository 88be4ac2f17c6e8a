// UDP header view, validation, checksum and builder (RFC 768).
package header

import "encoding/binary"

// UDP is a view of a UDP datagram: 8-byte header and payload.
type UDP []byte

// ParseUDP validates a UDP datagram: at least 8 bytes, length field at
// least 8 and at most the buffer. The checksum is not verified.
//
// b: the IP payload (upper-layer bytes). Returns the view trimmed to the
// length field, or ErrTruncated / ErrTotalLen.
func ParseUDP(b []byte) (UDP, error) {
	if len(b) < UDPLen {
		return nil, ErrTruncated
	}
	l := int(binary.BigEndian.Uint16(b[4:]))
	if l < UDPLen || l > len(b) {
		return nil, ErrTotalLen
	}
	return UDP(b[:l]), nil
}

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:]) }

// Length returns the length field (header and payload).
func (u UDP) Length() uint16 { return binary.BigEndian.Uint16(u[4:]) }

// Checksum returns the checksum field.
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:]) }

// Payload returns the bytes after the header up to the length field.
func (u UDP) Payload() []byte { return u[UDPLen:u.Length()] }

// PayloadLen returns the length field minus the header.
func (u UDP) PayloadLen() int { return int(u.Length()) - UDPLen }

// SetSrcPort sets the source port.
func (u UDP) SetSrcPort(p uint16) { binary.BigEndian.PutUint16(u[0:], p) }

// SetDstPort sets the destination port.
func (u UDP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(u[2:], p) }

// SetLength sets the length field.
func (u UDP) SetLength(l uint16) { binary.BigEndian.PutUint16(u[4:], l) }

// SetChecksumValue stores v in the checksum field as is.
func (u UDP) SetChecksumValue(v uint16) { binary.BigEndian.PutUint16(u[6:], v) }

// SetChecksumIPv4 computes the checksum over the first Length bytes and
// the IPv4 pseudo-header and stores it (0 is sent as 0xffff, RFC 768).
//
// src, dst: the addresses of the enclosing IPv4 header.
func (u UDP) SetChecksumIPv4(src, dst [4]byte) {
	l := u.Length()
	u[6], u[7] = 0, 0
	c := finish(sum(u[:l], pseudoIPv4(src, dst, ProtoUDP, l)))
	if c == 0 {
		c = 0xffff
	}
	u.SetChecksumValue(c)
}

// SetChecksumIPv6 computes the checksum over the first Length bytes and
// the IPv6 pseudo-header and stores it (0 is sent as 0xffff, RFC 8200
// §8.1).
//
// src, dst: the addresses of the enclosing IPv6 header.
func (u UDP) SetChecksumIPv6(src, dst *[16]byte) {
	l := u.Length()
	u[6], u[7] = 0, 0
	c := finish(sum(u[:l], pseudoIPv6(src, dst, ProtoUDP, uint32(l))))
	if c == 0 {
		c = 0xffff
	}
	u.SetChecksumValue(c)
}

// IsChecksumValidIPv4 reports whether the checksum is correct or absent
// (zero, allowed over IPv4).
func (u UDP) IsChecksumValidIPv4(src, dst [4]byte) bool {
	if u.Checksum() == 0 {
		return true
	}
	l := u.Length()
	return sum(u[:l], pseudoIPv4(src, dst, ProtoUDP, l)) == 0xffff
}

// IsChecksumValidIPv6 reports whether the checksum is correct (a zero
// checksum is invalid over IPv6).
func (u UDP) IsChecksumValidIPv6(src, dst *[16]byte) bool {
	l := u.Length()
	return u.Checksum() != 0 && sum(u[:l], pseudoIPv6(src, dst, ProtoUDP, uint32(l))) == 0xffff
}

// EncodeUDP writes a UDP header at the start of b with a zero checksum
// (fill it with SetChecksumIPv4/IPv6 once the payload is in place).
//
// b: destination buffer, at least UDPLen bytes; src, dst: ports;
// payloadLen: bytes after the header. Returns UDPLen.
func EncodeUDP(b []byte, src, dst uint16, payloadLen int) int {
	_ = b[UDPLen-1]
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	binary.BigEndian.PutUint16(b[4:], uint16(UDPLen+payloadLen))
	b[6], b[7] = 0, 0
	return UDPLen
}
