// The one place this package looks at socket addresses through unsafe
// pointers: the raw buffers accept4 fills and connect reads.

package tcp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// unsafePointer converts a socket address buffer for a typed view.
func unsafePointer(sa *unix.RawSockaddrAny) unsafe.Pointer { return unsafe.Pointer(sa) }

// putPort stores port in network byte order in a sockaddr's port field.
func putPort(dst *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

// sockaddrPort returns the port of a raw socket address.
func sockaddrPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
