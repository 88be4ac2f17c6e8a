package batch

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Msgs is a preallocated array of mmsghdr, each with one or more iovecs and
// an optional name (address) buffer, for recvmmsg and sendmmsg. x/sys/unix
// has the Mmsghdr type but no wrapper, and its Recvmsg variants allocate;
// these calls go straight to the system call.
type Msgs struct {
	Hdrs   []unix.Mmsghdr
	Iovs   []unix.Iovec
	Names  []unix.RawSockaddrInet6 // big enough for IPv4 and IPv6
	iovPer int
}

// NewMsgs allocates n message headers with iovPer iovecs each and a name
// buffer per message.
func NewMsgs(n, iovPer int) *Msgs {
	m := &Msgs{
		Hdrs:   make([]unix.Mmsghdr, n),
		Iovs:   make([]unix.Iovec, n*iovPer),
		Names:  make([]unix.RawSockaddrInet6, n),
		iovPer: iovPer,
	}
	for i := range m.Hdrs {
		m.Hdrs[i].Hdr.Iov = &m.Iovs[i*iovPer]
		m.Hdrs[i].Hdr.Iovlen = 1
	}
	return m
}

// SetBuf points message i's single iovec at b.
func (m *Msgs) SetBuf(i int, b []byte) {
	iov := &m.Iovs[i*m.iovPer]
	iov.Base = unsafe.SliceData(b)
	iov.SetLen(len(b))
	m.Hdrs[i].Hdr.Iovlen = 1
}

// SetBufs points message i's iovecs at bufs (at most iovPer of them).
func (m *Msgs) SetBufs(i int, bufs ...[]byte) {
	for j, b := range bufs {
		iov := &m.Iovs[i*m.iovPer+j]
		iov.Base = unsafe.SliceData(b)
		iov.SetLen(len(b))
	}
	m.Hdrs[i].Hdr.Iovlen = uint64(len(bufs))
}

// WithNames makes every message carry its name buffer (recvmmsg fills in
// the peer's address; sendmmsg sends to it).
func (m *Msgs) WithNames() {
	for i := range m.Hdrs {
		m.Hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.Names[i]))
		m.Hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(m.Names[i]))
	}
}

// ResetNames restores the name length of the first n messages before a
// recvmmsg, which shrinks it to the returned address's size.
func (m *Msgs) ResetNames(n int) {
	for i := 0; i < n; i++ {
		if m.Hdrs[i].Hdr.Name != nil {
			m.Hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(m.Names[i]))
		}
	}
}

// Recvmmsg receives up to n messages from fd into the first n headers and
// returns how many arrived; each header's Len holds its byte count.
func Recvmmsg(fd int, m *Msgs, n int, flags int) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.Hdrs[0])), uintptr(n), uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}

// Sendmmsg sends the first n messages on fd and returns how many went.
func Sendmmsg(fd int, m *Msgs, n int, flags int) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.Hdrs[0])), uintptr(n), uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}
