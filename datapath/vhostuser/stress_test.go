// A stress test of the RX side against a driver that reposts what it gets
// back at once: random reservations, commits, single frames and flushes.

package vhostuser

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestRXStress plays a driver that reposts every buffer as soon as it is
// returned, against random producers: reservations of random sizes,
// commits of some of them with random lengths, single frames, flushes.
// Every used entry must name a buffer that is posted and not returned
// since, and no buffer may be lost.
func TestRXStress(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		b := newBackend(t)
		fe := newFrontEnd(t, b)
		fe.start(allBut)
		fe.postRX(256, feBufSize)
		posted := make([]bool, 256)
		for i := range posted {
			posted[i] = true
		}
		bufs := make([][]byte, 16)
		var want []int // lengths of the frames committed, in order
		pendNB := 0    // entries left in the frame being read
		got := 0
		frameLen := 0
		for round := 0; round < 300; round++ {
			switch rng.IntN(4) {
			case 0, 1:
				n := b.Reserve(bufs[:1+rng.IntN(16)])
				c := rng.IntN(n + 1)
				for i := 0; i < c; i++ {
					l := 60 + rng.IntN(65549-60)
					if rng.IntN(3) == 0 {
						l = 60 + rng.IntN(1500)
					}
					b.Commit(l)
					want = append(want, l)
				}
			case 2:
				b.Frame()
				l := 60 + rng.IntN(200)
				b.Commit(l)
				want = append(want, l)
			case 3:
				b.Flush()
			}
			if rng.IntN(3) == 0 {
				b.Flush()
			}
			// The driver takes what was published and reposts it.
			for fe.usedSeen[rxQ] != fe.usedIdx(rxQ) {
				id, l := fe.usedEntry(rxQ, fe.usedSeen[rxQ])
				fe.usedSeen[rxQ]++
				if l == 0 {
					t.Fatalf("seed %d: used entry of 0 bytes", seed)
				}
				if pendNB == 0 {
					d, _, _ := ringAddr(rxQ)
					gpa := binary.LittleEndian.Uint64(fe.mem[d+16*uint64(id):])
					pendNB = int(binary.LittleEndian.Uint16(fe.gpaBytes(gpa+10, 2)))
					frameLen = 0
				}
				frameLen += int(l)
				pendNB--
				if pendNB == 0 {
					if got >= len(want) || frameLen != 12+want[got] {
						t.Fatalf("seed %d round %d: frame %d of %d bytes, want %d", seed, round, got, frameLen, 12+want[min(got, len(want)-1)])
					}
					got++
				}
				if id >= 256 || !posted[id] {
					t.Fatalf("seed %d round %d: buffer %d returned while not posted", seed, round, id)
				}
				posted[id] = false
				fe.freed = append(fe.freed, uint16(id))
			}
			for _, h := range fe.freed {
				posted[h] = true
			}
			fe.repostRX()
		}
	}
}
