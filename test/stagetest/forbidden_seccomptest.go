//go:build seccomptest

// The forbidden syscall, compiled only into the test build (-tags
// seccomptest): the normal build has no way to trigger it.

package main

import "golang.org/x/sys/unix"

func init() {
	forbidden = func() {
		// getppid is harmless, which makes it a fair probe: it is on no
		// allow-list, so the filter must kill us for it.
		unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
	}
}
