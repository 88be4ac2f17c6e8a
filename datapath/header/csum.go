// Internet checksum helpers for the views (RFC 1071). They delegate to
// package checksum once it lands; until then a small reference sum lives
// here so that the builders can be used and tested.
package header

import "encoding/binary"

// sum returns the 16-bit one's complement sum of b added to initial,
// folded (not complemented). An odd trailing byte is padded with zero.
//
// b: bytes to sum; initial: a previous folded sum (e.g. a pseudo-header).
// Returns the folded sum.
func sum(b []byte, initial uint16) uint16 {
	s := uint64(initial)
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = (s >> 16) + (s & 0xffff)
	}
	return uint16(s)
}

// pseudoIPv4 returns the folded sum of the IPv4 pseudo-header (RFC 768,
// RFC 793 §3.1).
//
// src, dst: addresses; proto: upper-layer protocol; length: upper-layer
// length (header and payload). Returns the folded sum.
func pseudoIPv4(src, dst [4]byte, proto uint8, length uint16) uint16 {
	s := uint32(binary.BigEndian.Uint16(src[:])) + uint32(binary.BigEndian.Uint16(src[2:])) +
		uint32(binary.BigEndian.Uint16(dst[:])) + uint32(binary.BigEndian.Uint16(dst[2:])) +
		uint32(proto) + uint32(length)
	for s > 0xffff {
		s = (s >> 16) + (s & 0xffff)
	}
	return uint16(s)
}

// pseudoIPv6 returns the folded sum of the IPv6 pseudo-header (RFC 8200
// §8.1).
//
// src, dst: addresses; proto: upper-layer protocol (the last Next Header);
// length: upper-layer length. Returns the folded sum.
func pseudoIPv6(src, dst *[16]byte, proto uint8, length uint32) uint16 {
	s := uint64(sum(src[:], 0)) + uint64(sum(dst[:], 0)) +
		uint64(proto) + uint64(length>>16) + uint64(length&0xffff)
	for s > 0xffff {
		s = (s >> 16) + (s & 0xffff)
	}
	return uint16(s)
}

// finish complements a folded sum into the value stored in a checksum field.
func finish(s uint16) uint16 { return ^s }
