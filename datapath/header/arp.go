// ARP packet view (RFC 826), restricted to Ethernet hardware and IPv4
// protocol addresses: the only kind a guest on our link sends.
package header

import (
	"encoding/binary"
	"net/netip"
)

// ARP is a view of an Ethernet/IPv4 ARP packet (the Ethernet payload).
type ARP []byte

// ParseARP checks that b is an Ethernet/IPv4 ARP packet: at least ARPLen
// bytes, hardware type 1, protocol type 0x0800, address lengths 6 and 4.
//
// b: the Ethernet payload. Returns the view trimmed to ARPLen, or
// ErrTruncated / ErrARPFormat.
func ParseARP(b []byte) (ARP, error) {
	if len(b) < ARPLen {
		return nil, ErrTruncated
	}
	if binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != EtherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return nil, ErrARPFormat
	}
	return ARP(b[:ARPLen]), nil
}

// Op returns the operation (ARPRequest, ARPReply, ...).
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:]) }

// SenderMAC returns the sender hardware address.
func (a ARP) SenderMAC() [6]byte { return [6]byte(a[8:14]) }

// SenderIP returns the sender protocol address.
func (a ARP) SenderIP() [4]byte { return [4]byte(a[14:18]) }

// TargetMAC returns the target hardware address.
func (a ARP) TargetMAC() [6]byte { return [6]byte(a[18:24]) }

// TargetIP returns the target protocol address.
func (a ARP) TargetIP() [4]byte { return [4]byte(a[24:28]) }

// SenderAddr returns the sender protocol address as a netip.Addr.
func (a ARP) SenderAddr() netip.Addr { return netip.AddrFrom4(a.SenderIP()) }

// TargetAddr returns the target protocol address as a netip.Addr.
func (a ARP) TargetAddr() netip.Addr { return netip.AddrFrom4(a.TargetIP()) }

// EncodeARP writes an Ethernet/IPv4 ARP packet at the start of b.
//
// b: destination buffer, at least ARPLen bytes; op: ARPRequest or
// ARPReply; sha, spa: sender MAC and IPv4 address; tha, tpa: target MAC and
// IPv4 address. Returns ARPLen.
func EncodeARP(b []byte, op uint16, sha [6]byte, spa [4]byte, tha [6]byte, tpa [4]byte) int {
	_ = b[ARPLen-1]
	binary.BigEndian.PutUint16(b[0:], 1)
	binary.BigEndian.PutUint16(b[2:], EtherTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], sha[:])
	copy(b[14:18], spa[:])
	copy(b[18:24], tha[:])
	copy(b[24:28], tpa[:])
	return ARPLen
}
