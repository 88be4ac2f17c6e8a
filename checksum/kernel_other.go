// Kernels for architectures without assembly, and for the purego build.

//go:build !amd64 || purego

package checksum

import "math"

// vectorMin is the length below which no vector kernel is used: all of them.
const vectorMin = math.MaxInt

// available reports which kernels can run: only the Go kernel here.
//
// Returns one flag per kernelID.
func available() [numKernels]bool {
	return [numKernels]bool{kernelGeneric: true}
}

// sumLE returns the 64-bit ones'-complement little-endian sum of b (see
// sumGeneric).
//
// b: the bytes. Returns the unfolded sum, zero only if b is all zero.
func sumLE(b []byte) uint64 {
	return sumGeneric(b)
}

// sumWith sums b with kernel k, for tests and benchmarks; only the Go kernel
// exists in this build.
//
// k: the kernel (ignored); b: the bytes. Returns as sumLE.
func sumWith(k kernelID, b []byte) uint64 {
	return sumGeneric(b)
}
