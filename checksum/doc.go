// Package checksum computes the Internet checksum (RFC 1071) of the headers
// and payloads gopasst writes towards the guest: IPv4 headers, TCP, UDP and
// ICMP, with their pseudo-headers, in one pass and without allocating.
//
// # Theory of operation
//
// The Internet checksum is the ones'-complement sum of the data read as
// big-endian 16-bit words. Ones'-complement addition is addition modulo
// 0xffff with "end-around carry", and two facts make it fast:
//
//   - 2^16 == 1 modulo 0xffff, so any wider word is congruent to the sum of
//     its 16-bit pieces: the data can be summed as 64-bit words (or as
//     vector lanes) and folded to 16 bits once at the end (Fold, Fold64).
//   - The sum is byte-order independent (RFC 1071 §2(B)): summing the data
//     as little-endian words gives the byte swap of the big-endian sum. The
//     kernels load native little-endian words and Sum swaps once at the end.
//
// A byte swap is a multiplication by 2^8, which is its own inverse modulo
// 0xffff; that is how SumVec adds a piece starting at an odd offset of an
// iovec: its own sum, byte-swapped.
//
// # Kernels
//
// Three kernels sum a buffer, all into the same unfolded 64-bit value:
//
//   - generic: pure Go, 64-byte unrolled, one ADC chain (math/bits.Add64).
//     Used on every architecture, for the purego build tag, and for buffers
//     shorter than the vector kernels' thresholds.
//   - avx2: amd64 assembly, four 32-byte accumulators. Each 64-bit lane keeps
//     a wrapping sum of whole words and a sum of their upper 32-bit halves,
//     from which the exact sum is rebuilt after the loop: one load, one shift
//     and two adds per 32 bytes and no carry handling in the loop (see
//     sum_amd64.s); scalar add-with-carry code sums the last len%32 bytes.
//   - avx512: the same scheme on 64-byte vectors with memory operands, and a
//     byte-masked load for the tail, so that any length is one call.
//
// The kernel is chosen once, at package initialisation, from the CPU
// features reported by github.com/klauspost/cpuid/v2: the fastest one the
// CPU runs. The environment variable GOPASST_CSUM=generic|avx2|avx512 forces
// one (an unsupported or unknown value is ignored and said so by Describe).
// Kernel names the choice, Describe explains it; the program logs it at
// debug level (-d). README.md has the measured speeds.
//
// # Results
//
// Sum and SumVec return a folded partial sum, not complemented; Checksum
// returns the complement, ready for a header field. A partial sum is 0 only
// if all the data is zero; otherwise ones'-complement "negative zero"
// (0xffff) is kept, so a non-zero packet never gets a checksum field of
// 0xffff. Update16 and Update32 change a stored checksum after a field
// rewrite (RFC 1624 eqn. 3), as address and port translation needs.
package checksum
