// sendto and recvfrom without allocation (x/sys/unix's wrappers convert
// addresses through interfaces, which allocates on every call): the
// address buffers, over the syscall layer's wrappers.
package icmp

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
)

// sockName is an address buffer for sendto/recvfrom, big enough for both
// families.
type sockName struct {
	raw unix.RawSockaddrInet6
	len uint32
}

// set4 stores an IPv4 address (port 0) in n.
func (n *sockName) set4(a [4]byte) {
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&n.raw))
	*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a}
	n.len = unix.SizeofSockaddrInet4
}

// set6 stores an IPv6 address (port 0) with its scope id in n.
func (n *sockName) set6(a [16]byte, scope uint32) {
	n.raw = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a, Scope_id: scope}
	n.len = unix.SizeofSockaddrInet6
}

// bytes returns the address as the kernel wrote or will read it.
func (n *sockName) bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&n.raw)), min(n.len, unix.SizeofSockaddrInet6))
}

// sendto sends b on fd, to the address in to (nil: the connected peer).
//
// Returns the error (an unix.Errno) or nil.
func sendto(fd int, b []byte, to *sockName) error {
	var name unsafe.Pointer
	var nl uint32
	if to != nil {
		name, nl = unsafe.Pointer(&to.raw), to.len
	}
	if e := sys.Sendto(fd, b, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, name, nl); e != 0 {
		return e
	}
	return nil
}

// recvfrom reads one message from fd into b and its source into from.
//
// Returns the message length (the real one: MSG_TRUNC) or the error
// (EAGAIN when there is none).
func recvfrom(fd int, b []byte, from *sockName) (int, error) {
	from.len = unix.SizeofSockaddrInet6
	n, e := sys.Recvfrom(fd, b, unix.MSG_DONTWAIT|unix.MSG_TRUNC, unsafe.Pointer(&from.raw), &from.len)
	if e != 0 {
		return 0, e
	}
	return n, nil
}
