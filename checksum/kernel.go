// Kernel choice: which implementation sums bytes, picked once at start-up.

package checksum

import (
	"fmt"
	"os"
)

// kernelID names one implementation of the byte-summing loop.
type kernelID uint8

const (
	kernelGeneric kernelID = iota // unrolled pure Go (generic.go)
	kernelAVX2                    // AVX2 assembly, scalar tail
	kernelAVX512                  // AVX-512 assembly, masked tail
	numKernels
)

// EnvKernel is the environment variable that forces a kernel: "generic",
// "avx2" or "avx512". A kernel this CPU cannot run, or an unknown name, is
// ignored in favour of the automatic choice (see Describe).
const EnvKernel = "GOPASST_CSUM"

// kernelNames are the names Kernel returns and EnvKernel accepts.
var kernelNames = [numKernels]string{"generic", "avx2", "avx512"}

// maxChunk bounds the bytes one assembly call sums, so that its exact
// 64-bit lane sums cannot overflow (see sum_amd64.s).
const maxChunk = 1 << 32

var (
	// active is the kernel Sum and SumVec use, set once by init.
	active kernelID
	// selection explains the choice, for the debug log.
	selection string
)

func init() {
	active, selection = choose(os.Getenv(EnvKernel), available())
}

// choose picks the kernel to use.
//
// env: value of EnvKernel ("" when unset); avail: which kernels this CPU and
// build can run. Returns the kernel, and a one-line explanation for the log.
// Without a usable override the fastest available kernel wins; on the
// machines measured (README.md) that is AVX-512, then AVX2, then Go.
func choose(env string, avail [numKernels]bool) (kernelID, string) {
	best := kernelGeneric
	for k := kernelGeneric; k < numKernels; k++ {
		if avail[k] && preferred(k) {
			best = k
		}
	}
	if env == "" {
		return best, fmt.Sprintf("checksum kernel %s (automatic, %s)", kernelNames[best], availString(avail))
	}
	for k := kernelGeneric; k < numKernels; k++ {
		if kernelNames[k] != env {
			continue
		}
		if !avail[k] {
			return best, fmt.Sprintf("checksum kernel %s (%s=%s not supported here, %s)", kernelNames[best], EnvKernel, env, availString(avail))
		}
		return k, fmt.Sprintf("checksum kernel %s (forced by %s, %s)", kernelNames[k], EnvKernel, availString(avail))
	}
	return best, fmt.Sprintf("checksum kernel %s (%s=%q unknown, want generic, avx2 or avx512)", kernelNames[best], EnvKernel, env)
}

// availString lists the kernels that can run, for the log line.
//
// avail: which kernels can run. Returns e.g. "available: generic avx2".
func availString(avail [numKernels]bool) string {
	s := "available:"
	for k := kernelGeneric; k < numKernels; k++ {
		if avail[k] {
			s += " " + kernelNames[k]
		}
	}
	return s
}

// Kernel reports the name of the kernel in use: "generic", "avx2" or
// "avx512". Short buffers may still be summed by the Go kernel, where it is
// faster (see sumLE).
func Kernel() string {
	return kernelNames[active]
}

// Describe returns one line saying which kernel is in use and why (automatic
// choice, forced by GOPASST_CSUM, or an override that was ignored), for the
// debug log.
func Describe() string {
	return selection
}

// preferred reports whether the automatic choice may pick kernel k when the
// CPU can run it (the choice prefers the highest such kernel).
//
// k: the kernel. Returns true for every kernel measured faster than the ones
// below it on this project's machines.
func preferred(k kernelID) bool {
	return true
}
