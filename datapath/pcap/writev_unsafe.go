// The raw writev(2) call of the pcap Writer: unix.Writev builds its iovec
// array on every call (an allocation); ours is preallocated in the Writer.
package pcap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// writev writes iov to fd with one system call.
//
// fd: the file; iov: non-empty iovecs whose Base pointers stay alive for
// the call. Returns the bytes written, or the errno.
func writev(fd int, iov []unix.Iovec) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}
