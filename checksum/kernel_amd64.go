// amd64 kernels: feature detection and the Go side of the assembly.

//go:build amd64 && !purego

package checksum

import "github.com/klauspost/cpuid/v2"

// Buffers shorter than these are summed by the Go kernel even when a vector
// kernel is active: below them the call, the zeroing of eight vector
// accumulators and the horizontal reduction cost more than they save
// (measured, see README.md).
const (
	minAVX2   = 320
	minAVX512 = 128

	// vectorMin is the length below which no vector kernel is used.
	vectorMin = min(minAVX2, minAVX512)
)

// sumAVX2 is in sum_amd64.s: a 64-bit value congruent, modulo 0xffff, to
// the little-endian 16-bit word sum of b, zero only if b is.
//
//go:noescape
func sumAVX2(b []byte) uint64

// sumAVX512 is in sum_amd64.s: a 64-bit value congruent, modulo 0xffff, to
// the little-endian 16-bit word sum of b, zero only if b is.
//
//go:noescape
func sumAVX512(b []byte) uint64

// available reports which kernels this CPU can run.
//
// Returns one flag per kernelID. AVX-512 needs F (the 512-bit adds and
// shifts) and BW (the byte-masked load); cpuid also checks that the OS saves
// the vector state (XGETBV), without which the instructions would fault.
func available() [numKernels]bool {
	var a [numKernels]bool
	a[kernelGeneric] = true
	a[kernelAVX2] = cpuid.CPU.Supports(cpuid.AVX, cpuid.AVX2)
	a[kernelAVX512] = cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW)
	return a
}

// sumLE returns the 64-bit ones'-complement little-endian sum of b (see
// sumGeneric) with the active kernel, or with the Go kernel when b is too
// short for the vector kernel to pay off.
//
// b: the bytes. Returns the unfolded sum, zero only if b is all zero.
func sumLE(b []byte) uint64 {
	switch {
	case active == kernelAVX512 && len(b) >= minAVX512:
		return sumAVX512Chunks(b)
	case active == kernelAVX2 && len(b) >= minAVX2:
		return sumAVX2Chunks(b)
	}
	return sumGeneric(b)
}

// sumWith sums b with kernel k whatever its length, for tests and benchmarks.
//
// k: the kernel (must be available); b: the bytes. Returns as sumLE.
func sumWith(k kernelID, b []byte) uint64 {
	switch k {
	case kernelAVX512:
		return sumAVX512Chunks(b)
	case kernelAVX2:
		return sumAVX2Chunks(b)
	}
	return sumGeneric(b)
}

// sumAVX2Chunks sums b with the AVX2 kernel, maxChunk bytes at a time. Every
// chunk starts at an even offset, so their sums add without byte swapping.
//
// b: the bytes. Returns as sumLE.
func sumAVX2Chunks(b []byte) uint64 {
	var s uint64
	for len(b) > maxChunk {
		s = add64(s, sumAVX2(b[:maxChunk]))
		b = b[maxChunk:]
	}
	return add64(s, sumAVX2(b))
}

// sumAVX512Chunks sums b with the AVX-512 kernel, maxChunk bytes at a time.
//
// b: the bytes. Returns as sumLE.
func sumAVX512Chunks(b []byte) uint64 {
	var s uint64
	for len(b) > maxChunk {
		s = add64(s, sumAVX512(b[:maxChunk]))
		b = b[maxChunk:]
	}
	return add64(s, sumAVX512(b))
}
