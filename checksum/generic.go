// The portable kernel: unrolled 64-bit ones'-complement accumulation in Go.

package checksum

import (
	"encoding/binary"
	"math/bits"
)

// sumGeneric returns a 64-bit ones'-complement sum of b read as
// little-endian 64-bit words, a short tail zero-padded. Folded to 16 bits it
// is the ones'-complement sum of b's little-endian 16-bit words (an odd last
// byte is the low byte of a zero-padded word), which is the byte swap of the
// RFC 1071 big-endian sum (RFC 1071 §2(B): the sum is byte-order
// independent). The result is zero only if every byte of b is zero.
//
// Each bits.Add64 compiles to one ADC, so the 8-word unrolled loop is a
// single carry chain with one load per 8 bytes; the carry is carried across
// iterations rather than added back each time, which could overflow.
func sumGeneric(b []byte) uint64 {
	var s, c uint64
	for len(b) >= 64 {
		_ = b[63]
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[32:40]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[40:48]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[48:56]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[56:64]), c)
		b = b[64:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	// Tail of 0-7 bytes: every piece starts at an even offset, so each keeps
	// its little-endian word positions and the pieces can simply be added.
	var t uint64
	if len(b) >= 4 {
		t = uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		t += uint64(binary.LittleEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		t += uint64(b[0])
	}
	s, c = bits.Add64(s, t, c)
	s, c = bits.Add64(s, 0, c)
	// If c is 1 here, s is 0: the end-around carry cannot overflow.
	return s + c
}

// add64 adds two 64-bit ones'-complement sums with end-around carry.
//
// a, b: the sums. Returns the ones'-complement sum, zero only if both are.
func add64(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	// A carry means s <= 2^64-2, so adding it back cannot overflow.
	return s + c
}
