//go:build !cgo

// Without cgo the runtime knows every thread, and
// syscall.AllThreadsSyscall runs a system call on each: NarrowAll uses it.

package threadcaps

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NarrowAll narrows every thread of the process to keep (see the cgo
// build's doc comment), here with syscall.AllThreadsSyscall, which needs
// the same result on every thread: it is called while all threads still
// hold the same sets. taskDir is a descriptor of /proc/self/task, used to
// check the result. It returns an error naming the failed step.
func NarrowAll(taskDir int, keep uint64) error {
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT,
		unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != unix.EINVAL {
		return fmt.Errorf("clearing ambient capabilities on every thread: %w", e)
	}
	for c := 0; c < 64; c++ {
		if keep&(1<<uint(c)) != 0 {
			continue
		}
		in, _ := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if in != 1 {
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			return fmt.Errorf("dropping capability %d from every thread's bounding set: %w", c, e)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		m := uint32(keep >> (32 * i))
		data[i].Effective &= m
		data[i].Permitted &= m
		data[i].Inheritable = 0
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)),
		uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset on every thread: %w", e)
	}
	tids, err := listTasks(taskDir)
	if err != nil {
		return err
	}
	for _, tid := range tids {
		if ok, _ := narrowed(taskDir, tid, keep); !ok {
			return fmt.Errorf("thread %d still holds capabilities outside %#x", tid, keep)
		}
	}
	return nil
}

// broadcastSignal returns 0: this build sends no signal of its own.
func broadcastSignal() unix.Signal { return 0 }
