// Pipes and splice(2): the calls of pasta's TCP splice path
// (datapath/splice), which moves a loopback connection's bytes from one
// socket to another through a pipe without copying them to user space.
//
// Their seccomp registrations sit in datapath/splice, beside the code that
// calls these wrappers, not here: every binary links this package, and a
// registration here would allow splice, pipe2 and fcntl in pasta whether
// or not anything that calls them is linked in (the allow-lists must carry
// nothing "for later": test/seccomp_sites_test.go).

package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Splice moves up to n bytes from descriptor in to descriptor out, one of
// which must be a pipe, without offsets (both are sockets or pipes).
//
// flags: SPLICE_F_* (the splice path always passes SPLICE_F_MOVE and
// SPLICE_F_NONBLOCK, the latter for the pipe's side: the socket's own
// O_NONBLOCK governs the socket's). Returns the bytes moved (0 from a
// socket: the peer's FIN, the end of the stream), or the errno (EAGAIN:
// nothing to read, or no room in the pipe or the socket). EINTR is retried.
func Splice(in, out, n, flags int) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), uintptr(flags))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// Pipe2 makes a pipe, its read end in p[0] and its write end in p[1].
//
// flags: O_* flags (O_NONBLOCK|O_CLOEXEC for the splice path). Returns the
// errno.
func Pipe2(p *[2]int32, flags int) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_PIPE2, uintptr(unsafe.Pointer(p)), uintptr(flags), 0)
	return e
}

// SetPipeSize asks the kernel to make pipe fd hold size bytes
// (F_SETPIPE_SZ). The kernel rounds size up to a power of two of pages;
// beyond fs.pipe-max-size it needs CAP_SYS_RESOURCE, and a user over
// fs.pipe-user-pages-soft gets EPERM for any growth.
//
// fd: either end of the pipe. Returns the capacity the pipe has now, or
// the errno (the pipe keeps its old capacity then).
func SetPipeSize(fd, size int) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_SETPIPE_SZ, uintptr(size))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// PipeSize returns the capacity of pipe fd in bytes (F_GETPIPE_SZ), or the
// errno.
func PipeSize(fd int) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}
