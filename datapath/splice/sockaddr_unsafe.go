// The one place this package uses unsafe: socket addresses handed to
// connect(2) as raw pointers, and the port's network byte order.

package splice

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
)

// setPort stores port in network byte order in a sockaddr's port field.
func setPort(dst *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

// connect4 starts a connect of s to sa. Returns the errno.
func connect4(s int, sa *unix.RawSockaddrInet4) unix.Errno {
	return sys.Connect(s, unsafe.Pointer(sa), unsafe.Sizeof(*sa))
}

// connect6 starts a connect of s to sa. Returns the errno.
func connect6(s int, sa *unix.RawSockaddrInet6) unix.Errno {
	return sys.Connect(s, unsafe.Pointer(sa), unsafe.Sizeof(*sa))
}
