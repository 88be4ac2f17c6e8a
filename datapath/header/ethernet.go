// Ethernet II frame header view and builder.
package header

import "encoding/binary"

// Ethernet is a view of an Ethernet II frame: 6-byte destination, 6-byte
// source, 2-byte EtherType, then the payload.
type Ethernet []byte

// ParseEthernet checks that b holds at least an Ethernet header.
//
// b: the frame. Returns the view, or ErrTruncated.
func ParseEthernet(b []byte) (Ethernet, error) {
	if len(b) < EthernetLen {
		return nil, ErrTruncated
	}
	return Ethernet(b), nil
}

// Dst returns the destination MAC address.
func (e Ethernet) Dst() [6]byte { return [6]byte(e[0:6]) }

// Src returns the source MAC address.
func (e Ethernet) Src() [6]byte { return [6]byte(e[6:12]) }

// Type returns the EtherType.
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:]) }

// Payload returns the bytes after the header (including any padding).
func (e Ethernet) Payload() []byte { return e[EthernetLen:] }

// SetDst sets the destination MAC address.
func (e Ethernet) SetDst(mac [6]byte) { copy(e[0:6], mac[:]) }

// SetSrc sets the source MAC address.
func (e Ethernet) SetSrc(mac [6]byte) { copy(e[6:12], mac[:]) }

// SetType sets the EtherType.
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[12:], t) }

// EncodeEthernet writes an Ethernet header at the start of b.
//
// b: destination buffer, at least EthernetLen bytes; dst, src: MAC
// addresses; etherType: EtherTypeIPv4, EtherTypeIPv6 or EtherTypeARP.
// Returns EthernetLen.
func EncodeEthernet(b []byte, dst, src [6]byte, etherType uint16) int {
	_ = b[EthernetLen-1]
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], etherType)
	return EthernetLen
}
