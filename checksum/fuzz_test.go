// Fuzz target: every kernel, SumVec and the reference must agree.

package checksum

import "testing"

// FuzzKernels sums data from offset off with every kernel, with the
// dispatched Sum, and with SumVec over data cut at cut, and compares each
// with the reference.
func FuzzKernels(f *testing.F) {
	seeds := [][]byte{
		nil, {0x01}, {0xff, 0xff}, {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7},
		make([]byte, 127), make([]byte, 1500),
	}
	ones := make([]byte, 4099)
	for i := range ones {
		ones[i] = 0xff
	}
	seeds = append(seeds, ones)
	ramp := make([]byte, 9001)
	for i := range ramp {
		ramp[i] = byte(i * 7)
	}
	seeds = append(seeds, ramp)
	for i, s := range seeds {
		f.Add(s, uint8(i), uint16(0xffff*(i%2)), uint16(len(s)/3|1))
	}
	ks := testKernels(f)
	f.Fuzz(func(t *testing.T, data []byte, off uint8, initial uint16, cut uint16) {
		if len(data) > 0 {
			data = data[int(off)%len(data):]
		}
		checkAll(t, ks, data, initial, "fuzz")
		c := int(cut) % (len(data) + 1)
		if got, want := SumVec([][]byte{data[:c], data[c:]}, initial), refSum(data, initial); got != want {
			t.Fatalf("SumVec cut at %d of %d = %#04x, want %#04x", c, len(data), got, want)
		}
	})
}
