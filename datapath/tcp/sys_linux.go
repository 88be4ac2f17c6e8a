// Raw system calls of the TCP translation. golang.org/x/sys/unix wrappers
// such as Recvmsg, GetsockoptTCPInfo or Connect take interfaces or return
// fresh structures, which allocate; the data path calls the kernel directly
// with preallocated arguments instead, and returns the bare errno.
//
// Every descriptor here is non-blocking (or the call says MSG_DONTWAIT), so
// the calls use RawSyscall: the Go scheduler is not told about them, which
// it needs only for calls that may block. Told (entersyscall), sysmon hands
// the P of a call lasting over 20 µs to another thread (a 64 KiB copy
// does), with futex wake-ups and context switches for nothing.

package tcp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendmsg writes the iovecs of msg to fd.
//
// fd: the socket; msg: header with its iovecs set; flags: MSG_* flags.
// Returns the bytes written, or the errno (EINTR retried).
func sendmsg(fd int, msg *unix.Msghdr, flags int) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// recvmsg reads from fd into the iovecs of msg.
//
// fd: the socket; msg: header with its iovecs set; flags: MSG_* flags.
// Returns the bytes read (0 at end of stream), or the errno.
func recvmsg(fd int, msg *unix.Msghdr, flags int) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// discard drops n bytes from the head of fd's receive queue without copying
// them (recv with MSG_TRUNC and no buffer: TCP supports it since 4.x). With
// SO_PEEK_OFF in use the kernel moves the peek offset back by the same
// amount, clamped at zero.
//
// fd: the socket; n: bytes to drop. Returns the bytes dropped, or the errno.
func discard(fd int, n int) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), 0, uintptr(n),
			unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// setInt sets an integer socket option.
//
// fd: the socket; level, opt: the option; v: its value. Returns the errno.
func setInt(fd, level, opt, v int) unix.Errno {
	x := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&x)), 4, 0)
	return e
}

// getInt reads an integer socket option.
//
// fd: the socket; level, opt: the option. Returns the value, or the errno.
func getInt(fd, level, opt int) (int, unix.Errno) {
	var x int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&x)), uintptr(unsafe.Pointer(&l)), 0)
	return int(x), e
}

// memInfo reads SO_MEMINFO: the socket's buffer sizes and queued memory as
// the kernel accounts them (skb overhead included).
//
// fd: the socket; m: where to store the SK_MEMINFO_* values. Returns the
// errno.
func memInfo(fd int, m *[unix.SK_MEMINFO_VARS]uint32) unix.Errno {
	l := uint32(unsafe.Sizeof(*m))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(m)), uintptr(unsafe.Pointer(&l)), 0)
	return e
}

// tcpInfo reads TCP_INFO into ti.
//
// fd: the socket; ti: destination. Returns the length the kernel filled in
// (older kernels fill less than the structure), or the errno.
func tcpInfo(fd int, ti *unix.TCPInfo) (int, unix.Errno) {
	l := uint32(unsafe.Sizeof(*ti))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(ti)), uintptr(unsafe.Pointer(&l)), 0)
	return int(l), e
}

// shutdownWrite half-closes fd (our FIN to the host peer).
//
// fd: the socket. Returns the errno.
func shutdownWrite(fd int) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return e
}

// closeRST closes fd so that the peer sees a reset rather than a FIN
// (SO_LINGER with a zero timeout).
//
// fd: the socket.
func closeRST(fd int) {
	lg := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&lg)), unsafe.Sizeof(lg), 0)
	unix.Close(fd)
}

// connectRaw starts a connect() to the address in sa.
//
// fd: the socket; sa: a RawSockaddrInet4 or RawSockaddrInet6; l: its size.
// Returns the errno (EINPROGRESS for a non-blocking connect under way).
func connectRaw(fd int, sa unsafe.Pointer, l uintptr) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), l)
	return e
}

// accept4 takes a pending connection from listener fd, non-blocking and
// close-on-exec, storing the peer's address in sa.
//
// fd: the listener; sa: the peer address buffer. Returns the new
// descriptor, or the errno.
func accept4(fd int, sa *unix.RawSockaddrAny) (int, unix.Errno) {
	l := uint32(unsafe.Sizeof(*sa))
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)),
		uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// getsockname stores fd's local address in sa.
//
// fd: the socket; sa: the address buffer. Returns the errno.
func getsockname(fd int, sa *unix.RawSockaddrAny) unix.Errno {
	l := uint32(unsafe.Sizeof(*sa))
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(sa)),
		uintptr(unsafe.Pointer(&l)))
	return e
}

// outQueue returns the bytes in fd's send queue, sent or not, that the
// peer has not acknowledged (SIOCOUTQ).
//
// fd: the socket. Returns the byte count, or the errno.
func outQueue(fd int) (int, unix.Errno) {
	var x int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&x)))
	return int(x), e
}

// unsafePointer converts a socket address buffer for a typed view.
func unsafePointer(sa *unix.RawSockaddrAny) unsafe.Pointer { return unsafe.Pointer(sa) }
