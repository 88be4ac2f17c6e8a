// Benchmarks of every kernel and of the dispatched Sum at packet sizes.

package checksum

import (
	"fmt"
	"runtime"
	"testing"
)

// benchSizes are the sizes the README table reports: a small TCP segment,
// typical small frames, the IPv4 minimum reassembly size, Ethernet MTU, a
// jumbo frame and the largest IP packet.
var benchSizes = []int{64, 256, 576, 1500, 9000, 65535}

// sink keeps benchmark results alive.
var sink uint16

// measure runs f over p for the benchmark, reporting bytes per second by
// the wall clock (MB/s, from SetBytes) and by the thread's CPU clock
// (cpu-MB/s, immune to preemption by other processes on a shared machine).
func measure(b *testing.B, p []byte, f func([]byte) uint16) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.SetBytes(int64(len(p)))
	t0 := threadCPUTime()
	for b.Loop() {
		sink += f(p)
	}
	if d := threadCPUTime() - t0; d > 0 {
		b.ReportMetric(float64(len(p))*float64(b.N)/d.Seconds()/1e6, "cpu-MB/s")
	}
}

// BenchmarkSum measures each kernel called directly (through the same
// fold and byte swap as Sum) and the dispatched Sum, in bytes per second.
// "dispatch" is what callers get: the active kernel with the Go kernel below
// its length threshold.
func BenchmarkSum(b *testing.B) {
	avail := available()
	type bk struct {
		name string
		f    func([]byte) uint16
	}
	var ks []bk
	for k := kernelGeneric; k < numKernels; k++ {
		if avail[k] {
			ks = append(ks, bk{kernelNames[k], func(p []byte) uint16 { return Fold64sum(sumWith(k, p), 0) }})
		}
	}
	ks = append(ks, bk{"dispatch", func(p []byte) uint16 { return Sum(p, 0) }})
	ks = append(ks, bk{"reference", func(p []byte) uint16 { return refSum(p, 0) }})
	buf := make([]byte, 65536+64)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	b.Logf("%s", Describe())
	// Size first, so the kernels compared at one size run close together
	// in time on a machine whose load drifts.
	for _, n := range benchSizes {
		for _, k := range ks {
			b.Run(fmt.Sprintf("%d/%s", n, k.name), func(b *testing.B) {
				measure(b, buf[:n], k.f)
			})
		}
	}
}

// BenchmarkSumSmall finds where the vector kernels start to beat the Go
// kernel, which sets minAVX2 and minAVX512.
func BenchmarkSumSmall(b *testing.B) {
	avail := available()
	buf := make([]byte, 1024)
	for _, n := range []int{16, 32, 48, 64, 96, 128, 160, 192, 256, 384} {
		for k := kernelGeneric; k < numKernels; k++ {
			if !avail[k] {
				continue
			}
			b.Run(fmt.Sprintf("%s/%d", kernelNames[k], n), func(b *testing.B) {
				measure(b, buf[:n], func(p []byte) uint16 { return Fold64sum(sumWith(k, p), 0) })
			})
		}
	}
}

// BenchmarkSumOffset measures the dispatched Sum on buffers that start 1
// and 32 bytes past a 64-byte-aligned address, to show the cost of
// misaligned loads.
func BenchmarkSumOffset(b *testing.B) {
	buf := make([]byte, 65536+128)
	for _, off := range []int{0, 1, 32} {
		for _, n := range []int{1500, 65535} {
			b.Run(fmt.Sprintf("off%d/%d", off, n), func(b *testing.B) {
				measure(b, buf[off:off+n], func(p []byte) uint16 { return Sum(p, 0) })
			})
		}
	}
}

// BenchmarkSumVec measures a 65535-byte payload split into an odd-length
// header piece and 1448-byte segments, as a TCP frame built from pieces.
func BenchmarkSumVec(b *testing.B) {
	buf := make([]byte, 65535)
	var vec [][]byte
	vec = append(vec, buf[:51])
	for rest := buf[51:]; len(rest) > 0; {
		k := min(1448, len(rest))
		vec, rest = append(vec, rest[:k]), rest[k:]
	}
	measure(b, buf, func([]byte) uint16 { return SumVec(vec, 0) })
}
