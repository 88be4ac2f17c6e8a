// Reads and writes of whole buffers: frames on the tap device, records in
// the capture file.

package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

var _ = allow.Syscall(allow.Pasta, "read", "sys.Read: frames from the tap device without a virtio-net header (tap.Device.Read)")

// Read reads one message (a frame, on a tap) from fd into b.
//
// fd: a non-blocking descriptor; b: a non-empty buffer. Returns the bytes
// read (0 at end of file), or the errno.
func Read(fd int, b []byte) (int, unix.Errno) { return bufCall(unix.SYS_READ, fd, b) }

var _ = allow.Syscall(allow.Pasta, "readv", "sys.Readv: frames from the tap device after their virtio-net header (tap.Device.Read)")

// Readv reads one message from fd into the buffers of iov, in order (on a
// tap: the virtio-net header into the first, the frame into the second).
//
// fd: a non-blocking descriptor; iov: the buffers. Returns the bytes read,
// or the errno.
func Readv(fd int, iov []unix.Iovec) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

var _ = allow.Syscall(allow.Pasta, "write", "sys.Write: frames to the tap device, one per call (tap.Device.Flush)")

// Write writes b to fd in one call (on a tap: one frame).
//
// fd: a non-blocking descriptor; b: a non-empty buffer. Returns the bytes
// written, or the errno.
func Write(fd int, b []byte) (int, unix.Errno) { return bufCall(unix.SYS_WRITE, fd, b) }

// bufCall makes read or write (nr) on fd with b, retrying EINTR. Returns
// the bytes moved, or the errno.
func bufCall(nr uintptr, fd int, b []byte) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall(nr, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

var _ = allow.Syscall(allow.Both, "writev", "sys.WritevFile: --pcap records, header and frame in one call (pcap.Writer)")

// WritevFile writes the buffers of iov to the regular file fd in one call.
// It uses Syscall: a file write may wait for the disk (see the package
// doc).
//
// fd: the file; iov: non-empty iovecs whose buffers stay alive for the
// call. Returns the bytes written, or the errno.
func WritevFile(fd int, iov []unix.Iovec) (int, unix.Errno) {
	for {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return int(r), e
		}
		return int(r), 0
	}
}
