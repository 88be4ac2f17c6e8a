// Thread CPU clock stub where clock_gettime is not wired up.

//go:build !linux

package checksum

import "time"

// threadCPUTime returns 0: no thread CPU clock here, so the benchmarks
// report only wall-clock throughput.
func threadCPUTime() time.Duration { return 0 }
