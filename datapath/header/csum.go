// Internet checksum helpers for the views (RFC 1071), thin names over
// package checksum so that the views read naturally. The naive RFC 1071
// reference stays in the tests, which check these against it.
package header

import "gopasst/checksum"

// sum returns the 16-bit one's complement sum of b added to initial,
// folded (not complemented). An odd trailing byte is padded with zero.
//
// b: bytes to sum; initial: a previous folded sum (e.g. a pseudo-header).
// Returns the folded sum.
func sum(b []byte, initial uint16) uint16 { return checksum.Sum(b, initial) }

// pseudoIPv4 returns the folded sum of the IPv4 pseudo-header (RFC 768,
// RFC 793 §3.1).
//
// src, dst: addresses; proto: upper-layer protocol; length: upper-layer
// length (header and payload). Returns the folded sum.
func pseudoIPv4(src, dst [4]byte, proto uint8, length uint16) uint16 {
	return checksum.PseudoHeaderIPv4(src, dst, proto, length)
}

// pseudoIPv6 returns the folded sum of the IPv6 pseudo-header (RFC 8200
// §8.1).
//
// src, dst: addresses; proto: upper-layer protocol (the last Next Header);
// length: upper-layer length. Returns the folded sum.
func pseudoIPv6(src, dst *[16]byte, proto uint8, length uint32) uint16 {
	return checksum.PseudoHeaderIPv6(src, dst, proto, length)
}

// finish complements a folded sum into the value stored in a checksum field.
func finish(s uint16) uint16 { return ^s }
