package batch

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Msgs is a preallocated array of mmsghdr, each with one or more iovecs and
// an optional name (address) buffer, for recvmmsg and sendmmsg (the calls
// themselves are datapath/sys's, with their allow-list annotations: this
// package imports no package of ours). x/sys/unix has the Mmsghdr type but
// no wrapper, and its Recvmsg variants allocate.
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
