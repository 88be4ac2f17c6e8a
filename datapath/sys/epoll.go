// The event loop's calls.

package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

var _ = allow.Syscall(allow.Both, "epoll_pwait", "sys.EpollWait: the event loop waits on every descriptor (loop.Loop.Turn)")

// EpollWait waits up to msec milliseconds (-1: without limit) for events on
// epoll instance epfd, with the signal mask unchanged. It uses Syscall: the
// loop sleeps here (see the package doc).
//
// events: where the events go (at least one). Returns how many arrived (0
// on timeout or EINTR), or the errno.
func EpollWait(epfd int, events []unix.EpollEvent, msec int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))),
		uintptr(len(events)), uintptr(msec), 0, 0)
	if e == unix.EINTR {
		return 0, 0
	}
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// EpollPoll returns the events ready on epoll instance epfd without
// waiting (busy polling, loop.Loop.SetBusyPoll): a timeout of 0 never
// sleeps, so it is a RawSyscall, like the other non-blocking calls.
//
// events: where the events go (at least one). Returns how many there
// are, or the errno.
func EpollPoll(epfd int, events []unix.EpollEvent) (int, unix.Errno) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))),
		uintptr(len(events)), 0, 0, 0)
	if e == unix.EINTR {
		return 0, 0
	}
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

var _ = allow.Syscall(allow.Both, "epoll_ctl", "sys.EpollCtl: adding, changing and removing flows' sockets in the event loop (loop.Loop.Add, Mod, Del)")

// EpollCtl adds (EPOLL_CTL_ADD), changes (MOD) or removes (DEL) fd on epoll
// instance epfd.
//
// ev: the events and data (nil for DEL). Returns the errno.
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}
