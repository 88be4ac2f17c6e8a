// Socket calls of the hot path: data both ways, batches of datagrams,
// acknowledged bytes dropped without a copy, and the options read per
// segment.

package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

var _ = allow.Syscall(allow.Both, "sendmsg", "sys.Sendmsg: a TCP run of guest segments to the host socket in one call (tcp); a batch of frames to qemu in one call, and the rest of a frame a short write cut (tap.Stream.Flush, Ready)")

// Sendmsg writes the iovecs of msg to fd.
//
// fd: the socket; msg: header with its iovecs set; flags: MSG_* flags
// (MSG_DONTWAIT for a blocking socket). Returns the bytes written, or the
// errno.
func Sendmsg(fd int, msg *unix.Msghdr, flags int) (int, unix.Errno) {
	return msgCall(unix.SYS_SENDMSG, fd, msg, flags)
}

var _ = allow.Syscall(allow.Both, "recvmsg", "sys.Recvmsg: TCP host data peeked into frames (MSG_PEEK, tcp); ICMP errors from UDP error queues (MSG_ERRQUEUE, udp); frames from qemu, many per call (tap.Stream.Read)")

// Recvmsg reads from fd into the iovecs (and control buffer) of msg.
//
// fd: the socket; msg: header with its iovecs set; flags: MSG_* flags.
// Returns the bytes read (0 at end of stream), or the errno.
func Recvmsg(fd int, msg *unix.Msghdr, flags int) (int, unix.Errno) {
	return msgCall(unix.SYS_RECVMSG, fd, msg, flags)
}

// msgCall makes sendmsg or recvmsg (nr) on fd with msg, retrying EINTR.
// Returns the bytes moved, or the errno.
func msgCall(nr uintptr, fd int, msg *unix.Msghdr, flags int) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall(nr, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

var _ = allow.Syscall(allow.Both, "recvfrom", "sys.Discard: TCP data the guest acknowledged dropped from the socket (MSG_TRUNC, tcp); sys.Recvfrom: echo replies (icmp)")

// Discard drops n bytes from the head of stream socket fd's receive queue
// without copying them (recv with MSG_TRUNC and no buffer: TCP supports it
// since Linux 4.x). With SO_PEEK_OFF in use the kernel moves the peek
// offset back by the same amount, clamped at zero.
//
// fd: the socket; n: bytes to drop. Returns the bytes dropped, or the
// errno.
func Discard(fd int, n int) (int, unix.Errno) {
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

// Recvfrom reads one message from fd into b, its source address into name
// (*namelen bytes of room; the length of the address on return).
//
// flags: MSG_* flags (MSG_TRUNC makes the result the message's real
// length). Returns the length, or the errno (EAGAIN when there is none).
func Recvfrom(fd int, b []byte, flags int, name unsafe.Pointer, namelen *uint32) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
			uintptr(flags), uintptr(name), uintptr(unsafe.Pointer(namelen)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

var _ = allow.Syscall(allow.Both, "sendto", "sys.Sendto: echo requests on ping and raw ICMP sockets (icmp)")

// Sendto sends b on fd, to the address name of namelen bytes (nil, 0: the
// connected peer).
//
// flags: MSG_* flags. Returns the errno.
func Sendto(fd int, b []byte, flags int, name unsafe.Pointer, namelen uint32) unix.Errno {
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
			uintptr(flags), uintptr(name), uintptr(namelen))
		if e == unix.EINTR {
			continue
		}
		return e
	}
}

var _ = allow.Syscall(allow.Both, "recvmmsg", "sys.Recvmmsg: host datagrams read in batches straight into frames (udp flow sockets and -u listeners)")

// Recvmmsg receives up to len(hdrs) messages from fd into hdrs; each
// header's Len holds its byte count afterwards.
//
// flags: MSG_* flags (MSG_DONTWAIT for a blocking socket). Returns how many
// arrived, or the errno.
func Recvmmsg(fd int, hdrs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	return mmsgCall(unix.SYS_RECVMMSG, fd, hdrs, flags)
}

var _ = allow.Syscall(allow.Both, "sendmmsg", "sys.Sendmmsg: each UDP flow's guest datagrams of a batch in one call (udp)")

// Sendmmsg sends the messages hdrs describe on fd.
//
// flags: MSG_* flags. Returns how many were sent, or the errno of the first
// one when none was.
func Sendmmsg(fd int, hdrs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	return mmsgCall(unix.SYS_SENDMMSG, fd, hdrs, flags)
}

// mmsgCall makes recvmmsg or sendmmsg (nr) on fd with hdrs, retrying
// EINTR. Returns how many messages went, or the errno.
func mmsgCall(nr uintptr, fd int, hdrs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	if len(hdrs) == 0 {
		return 0, 0
	}
	for {
		r, _, e := unix.RawSyscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
			uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

var _ = allow.Syscall(allow.Both, "setsockopt", "sys.SetsockoptInt: TCP_NODELAY, TCP_MAXSEG, SO_PEEK_OFF, SO_KEEPALIVE on TCP flows; sys.CloseRST: SO_LINGER (tcp)")

// SetsockoptInt sets an integer socket option.
//
// fd: the socket; level, opt: the option; v: its value. Returns the errno.
func SetsockoptInt(fd, level, opt, v int) unix.Errno {
	x := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&x)), 4, 0)
	return e
}

var _ = allow.Syscall(allow.Both, "getsockopt", "sys.GetsockoptInt: SO_ERROR of a connect; sys.MemInfo: the window offered to the guest; sys.TCPInfo (tcp)")

// GetsockoptInt reads an integer socket option.
//
// fd: the socket; level, opt: the option. Returns the value, or the errno.
func GetsockoptInt(fd, level, opt int) (int, unix.Errno) {
	var x int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&x)), uintptr(unsafe.Pointer(&l)), 0)
	return int(x), e
}

// MemInfo reads SO_MEMINFO: the socket's buffer sizes and queued memory as
// the kernel accounts them (skb overhead included).
//
// fd: the socket; m: where to store the SK_MEMINFO_* values. Returns the
// errno.
func MemInfo(fd int, m *[unix.SK_MEMINFO_VARS]uint32) unix.Errno {
	l := uint32(unsafe.Sizeof(*m))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(m)), uintptr(unsafe.Pointer(&l)), 0)
	return e
}

// TCPInfo reads TCP_INFO into ti.
//
// fd: the socket; ti: destination. Returns the length the kernel filled in
// (older kernels fill less than the structure), or the errno.
func TCPInfo(fd int, ti *unix.TCPInfo) (int, unix.Errno) {
	l := uint32(unsafe.Sizeof(*ti))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(ti)), uintptr(unsafe.Pointer(&l)), 0)
	return int(l), e
}

var _ = allow.Syscall(allow.Both, "shutdown", "sys.ShutdownWrite: the guest's FIN half-closes its TCP flow's socket (tcp)")

// ShutdownWrite half-closes fd (our FIN to the host peer).
//
// fd: the socket. Returns the errno.
func ShutdownWrite(fd int) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return e
}

var _ = allow.Syscall(allow.Both, "close", "sys.CloseRST: closing a reset TCP flow's socket (tcp)")

// CloseRST closes fd so that the peer sees a reset rather than a FIN
// (SO_LINGER with a zero timeout).
//
// fd: the socket.
func CloseRST(fd int) {
	lg := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&lg)), unsafe.Sizeof(lg), 0)
	unix.Close(fd)
}

var _ = allow.Syscall(allow.Both, "connect", "sys.Connect: a TCP flow's non-blocking connect to its destination (tcp)")

// Connect starts a connect() to the address sa of l bytes (a
// RawSockaddrInet4 or RawSockaddrInet6).
//
// fd: the socket. Returns the errno (EINPROGRESS for a non-blocking connect
// under way).
func Connect(fd int, sa unsafe.Pointer, l uintptr) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), l)
	return e
}

var _ = allow.Syscall(allow.Both, "accept4", "sys.Accept4: inbound TCP connections on forwarded ports (tcp listeners); qemu connecting to passt's socket, stream or vhost-user (tap.AcceptNext)")

// Accept4 takes a pending connection from listener fd, non-blocking and
// close-on-exec, storing the peer's address in sa.
//
// fd: the listener; sa: the peer address buffer. Returns the new
// descriptor, or the errno.
func Accept4(fd int, sa *unix.RawSockaddrAny) (int, unix.Errno) {
	l := uint32(unsafe.Sizeof(*sa))
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)),
		uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

var _ = allow.SyscallArg(allow.Both, "ioctl", allow.ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.SIOCOUTQ, Name: "SIOCOUTQ"},
	"sys.OutQueue: bytes the TCP peer has not acknowledged, for the window towards the guest (tcp)")

// OutQueue returns the bytes in fd's send queue, sent or not, that the
// peer has not acknowledged (SIOCOUTQ).
//
// fd: the socket. Returns the byte count, or the errno.
func OutQueue(fd int) (int, unix.Errno) {
	var x int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&x)))
	return int(x), e
}

// Getsockname stores the local address of socket fd in sa (the callers
// register the syscall: they are the ones that need it).
//
// Returns the errno.
func Getsockname(fd int, sa *unix.RawSockaddrAny) unix.Errno {
	l := uint32(unsafe.Sizeof(*sa))
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l)))
	return e
}
