// Sequence number arithmetic (modulo 2^32, RFC 9293 §3.4) and initial
// sequence numbers from a keyed hash (RFC 6528).

package tcp

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"

	"gopasst/datapath/flow"
)

// seqLT reports whether a comes before b. Like the C original we order
// only values less than 2^31 apart, which every window we use (at most
// 16 MiB in flight) satisfies.
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

// seqLE reports whether a comes before or equals b.
func seqLE(a, b uint32) bool { return int32(a-b) <= 0 }

// seqGT reports whether a comes after b.
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

// seqGE reports whether a comes after or equals b.
func seqGE(a, b uint32) bool { return int32(a-b) >= 0 }

// isnKey is the secret of the ISN hash, one per process.
type isnKey [2]uint64

// newISNKey draws a fresh secret.
func newISNKey() isnKey {
	var b [16]byte
	rand.Read(b[:])
	return isnKey{binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])}
}

// isn returns an initial sequence number for the connection k, as RFC
// 6528 §3 asks: a keyed pseudo-random function of the 4-tuple plus a
// clock that advances every 32 ns (so a reused tuple moves forward,
// about 2^32 per 137 s, not unlike the 4 µs timer of RFC 793).
//
// k: the flow's guest-side key; nowNS: monotonic nanoseconds. Returns the
// ISN.
func (key *isnKey) isn(k *flow.Key, nowNS int64) uint32 {
	var m [40]byte
	copy(m[0:16], k.Src[:])
	copy(m[16:32], k.Dst[:])
	binary.LittleEndian.PutUint16(m[32:], k.SrcPort)
	binary.LittleEndian.PutUint16(m[34:], k.DstPort)
	h := siphash24(key[0], key[1], &m)
	return uint32(h^h>>32) + uint32(nowNS>>5)
}

// siphash24 is SipHash-2-4 (Aumasson, Bernstein 2012) of a fixed 40-byte
// message under the 128-bit key k0, k1.
func siphash24(k0, k1 uint64, m *[40]byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	for i := 0; i < 40; i += 8 {
		w := binary.LittleEndian.Uint64(m[i:])
		v3 ^= w
		round()
		round()
		v0 ^= w
	}
	// Final block: only the length byte (40 bytes is a multiple of 8).
	w := uint64(40) << 56
	v3 ^= w
	round()
	round()
	v0 ^= w
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
