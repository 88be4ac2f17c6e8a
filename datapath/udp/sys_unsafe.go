// The few places where this package looks at kernel structures through
// unsafe pointers: the address buffers recvmmsg fills, and the one recvmsg
// call (MSG_ERRQUEUE) x/sys/unix has no allocation-free wrapper for.
package udp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// nameBytes returns the bytes of an address buffer filled by recvmmsg, up to
// the length the kernel reported.
//
// n: the buffer; l: msg_namelen after the call. Returns at most
// sizeof(*n) bytes.
func nameBytes(n *unix.RawSockaddrInet6, l uint32) []byte {
	if l > unix.SizeofSockaddrInet6 {
		l = unix.SizeofSockaddrInet6
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(n)), l)
}

// errQueue is a preallocated recvmsg(MSG_ERRQUEUE) call: one data buffer
// for the quoted payload, one control buffer for the extended error.
type errQueue struct {
	hdr  unix.Msghdr
	iov  unix.Iovec
	data [1280]byte
	ctrl [256]byte
}

// read takes one message off fd's error queue.
//
// fd: the socket. Returns the quoted payload (truncated to the buffer), the
// control bytes, and an error (EAGAIN when the queue is empty).
func (q *errQueue) read(fd int) (payload, ctrl []byte, err error) {
	q.iov.Base = &q.data[0]
	q.iov.SetLen(len(q.data))
	q.hdr = unix.Msghdr{Iov: &q.iov, Iovlen: 1, Control: &q.ctrl[0]}
	q.hdr.SetControllen(len(q.ctrl))
	for {
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&q.hdr)),
			unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil, nil, e
		}
		n := min(int(r), len(q.data))
		cl := min(int(q.hdr.Controllen), len(q.ctrl))
		return q.data[:n], q.ctrl[:cl], nil
	}
}

// setControl points message header h at control buffer b.
func setControl(h *unix.Msghdr, b []byte) {
	h.Control = &b[0]
	h.SetControllen(len(b))
}

// sendmmsg sends the messages hdrs describe on fd, without blocking.
//
// Returns how many were sent, or the error of the first one (an
// unix.Errno) when none was.
func sendmmsg(fd int, hdrs []unix.Mmsghdr) (int, error) {
	if len(hdrs) == 0 {
		return 0, nil
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])),
			uintptr(len(hdrs)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}
