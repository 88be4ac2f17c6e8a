// The Internet checksum API: sums, folding, pseudo-headers, incremental
// updates and scatter-gather sums.

package checksum

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds the ones'-complement sum of b, read as big-endian 16-bit words
// with an odd last byte padded with a zero byte (RFC 1071), to initial.
//
// b: the bytes, any length and alignment; initial: a partial sum to add, such
// as a pseudo-header sum, or 0. Returns the folded 16-bit partial sum, not
// complemented; it is 0 only if b and initial are all zero.
func Sum(b []byte, initial uint16) uint16 {
	// The kernels sum little-endian words; the big-endian sum is its byte
	// swap (RFC 1071 §2(B)), so swap the initial value in and the result out.
	var s uint64
	if len(b) < vectorMin {
		// Headers (20 to 60 bytes) are the common case: skip a call level.
		s = sumGeneric(b)
	} else {
		s = sumLE(b)
	}
	s = add64(s, uint64(bits.ReverseBytes16(initial)))
	return bits.ReverseBytes16(Fold64(s))
}

// Checksum returns the value to store in a header's checksum field.
//
// b: the covered bytes, with the checksum field itself zeroed; initial: the
// pseudo-header sum, or 0 for an IPv4 header or ICMPv4. Returns ^Sum(b,
// initial). A UDP sender must still turn a result of 0 into 0xffff (RFC 768).
func Checksum(b []byte, initial uint16) uint16 {
	return ^Sum(b, initial)
}

// Fold reduces a 32-bit ones'-complement accumulator to 16 bits, adding the
// carries back in (end-around carry).
//
// s: the accumulator. Returns the 16-bit sum, 0 only if s is 0.
func Fold(s uint32) uint16 {
	s = s&0xffff + s>>16 // at most 0x1fffe
	s = s&0xffff + s>>16 // at most 0xffff
	return uint16(s)
}

// Fold64 reduces a 64-bit ones'-complement accumulator to 16 bits.
//
// s: the accumulator. Returns the 16-bit sum, 0 only if s is 0.
func Fold64(s uint64) uint16 {
	lo, c := bits.Add32(uint32(s), uint32(s>>32), 0)
	// A carry means lo <= 2^32-2, so adding it back cannot overflow.
	return Fold(lo + c)
}

// Combine adds two 16-bit partial sums in ones' complement, as if the bytes
// behind b followed those behind a (b must start at an even offset; see
// SumVec otherwise).
//
// a, b: the partial sums (not complemented). Returns their sum.
func Combine(a, b uint16) uint16 {
	return Fold(uint32(a) + uint32(b))
}

// PseudoHeaderIPv4 sums the IPv4 pseudo-header of TCP (RFC 793 §3.1), UDP
// (RFC 768) and UDP-Lite: source, destination, a zero byte, the protocol and
// the upper-layer length.
//
// src, dst: the addresses; proto: the IP protocol number; length: header plus
// payload of the upper layer. Returns the partial sum, to pass as initial to
// Sum or Checksum over the upper-layer header and payload.
func PseudoHeaderIPv4(src, dst [4]byte, proto uint8, length uint16) uint16 {
	s := uint32(binary.BigEndian.Uint16(src[0:2])) +
		uint32(binary.BigEndian.Uint16(src[2:4])) +
		uint32(binary.BigEndian.Uint16(dst[0:2])) +
		uint32(binary.BigEndian.Uint16(dst[2:4])) +
		uint32(proto) + uint32(length)
	return Fold(s)
}

// PseudoHeaderIPv6 sums the IPv6 pseudo-header (RFC 8200 §8.1): source,
// destination, the 32-bit upper-layer length, three zero bytes and the next
// header value.
//
// src, dst: the addresses; proto: the upper-layer protocol (the last next
// header, not an extension header); length: upper-layer header plus payload
// (for a jumbogram, the jumbo length). Returns the partial sum, to pass as
// initial to Sum or Checksum.
func PseudoHeaderIPv6(src, dst *[16]byte, proto uint8, length uint32) uint16 {
	// Big-endian 64-bit words: their ones'-complement sum folds straight
	// to the big-endian 16-bit sum, no byte swap needed.
	s, c := bits.Add64(binary.BigEndian.Uint64(src[0:8]), binary.BigEndian.Uint64(src[8:16]), 0)
	s, c = bits.Add64(s, binary.BigEndian.Uint64(dst[0:8]), c)
	s, c = bits.Add64(s, binary.BigEndian.Uint64(dst[8:16]), c)
	s, c = bits.Add64(s, uint64(length)<<32|uint64(proto), c)
	s, c = bits.Add64(s, 0, c)
	return Fold64(s + c)
}

// Update16 updates a stored checksum after one aligned 16-bit field of the
// covered data changed, without summing the data again: RFC 1624 eqn. 3,
// HC' = ~(~HC + ~m + m'), which unlike eqn. 2 never yields 0xffff (-0) for a
// non-zero sum.
//
// check: the checksum field as stored (complemented); old, new: the field's
// old and new values, big-endian as on the wire. Returns the new checksum
// field. It equals a full recomputation except when the new data is all
// zero: then it returns 0 where Checksum returns 0xffff.
func Update16(check, old, new uint16) uint16 {
	return ^Fold(uint32(^check) + uint32(^old) + uint32(new))
}

// Update32 is Update16 for an aligned 32-bit field, such as an IPv4 address:
// both 16-bit halves change at once (RFC 1624 eqn. 3).
//
// check: the checksum field as stored; old, new: the field's old and new
// values, big-endian as on the wire. Returns the new checksum field.
func Update32(check uint16, old, new uint32) uint16 {
	s := uint32(^check) +
		uint32(^uint16(old>>16)) + uint32(^uint16(old)) +
		new>>16 + new&0xffff
	return ^Fold(s)
}

// SumVec adds the ones'-complement sum of several buffers, taken as if they
// were one concatenated buffer (an iovec), to initial, without copying.
//
// A buffer that starts at an odd offset of the concatenation has its bytes in
// the other half of every 16-bit word: its own sum is byte-swapped before
// being added (a swap is a multiplication by 2^8, and 2^8 * 2^8 == 1 modulo
// 0xffff). Its odd last byte is then the low byte of a word whose high byte
// ended the previous buffer, which its zero padding already accounts for.
//
// bufs: the pieces, in order, any lengths including odd and empty; initial:
// as for Sum. Returns the folded partial sum, as Sum of the concatenation.
func SumVec(bufs [][]byte, initial uint16) uint16 {
	s := uint64(bits.ReverseBytes16(initial))
	odd := false
	for _, b := range bufs {
		v := sumLE(b)
		if odd {
			v = uint64(bits.ReverseBytes16(Fold64(v)))
		}
		s = add64(s, v)
		odd = odd != (len(b)&1 == 1)
	}
	return bits.ReverseBytes16(Fold64(s))
}
