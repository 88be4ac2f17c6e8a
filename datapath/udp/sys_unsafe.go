// The few places where this package looks at kernel structures through
// unsafe pointers: the address buffers recvmmsg fills, and the message
// header of the error queue read (MSG_ERRQUEUE).
package udp

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
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
// control bytes, and the errno (EAGAIN when the queue is empty).
func (q *errQueue) read(fd int) (payload, ctrl []byte, err unix.Errno) {
	q.iov.Base = &q.data[0]
	q.iov.SetLen(len(q.data))
	q.hdr = unix.Msghdr{Iov: &q.iov, Iovlen: 1, Control: &q.ctrl[0]}
	q.hdr.SetControllen(len(q.ctrl))
	r, e := sys.Recvmsg(fd, &q.hdr, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	if e != 0 {
		return nil, nil, e
	}
	n := min(r, len(q.data))
	cl := min(int(q.hdr.Controllen), len(q.ctrl))
	return q.data[:n], q.ctrl[:cl], 0
}

// setControl points message header h at control buffer b.
func setControl(h *unix.Msghdr, b []byte) {
	h.Control = &b[0]
	h.SetControllen(len(b))
}
