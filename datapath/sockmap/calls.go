// The system calls Pair, Unpair and Read make at run time, after the
// seccomp filter is in: map updates, deletes and lookups (bpf), a
// socket's cookie (getsockopt SO_COOKIE), the nudge that hands bytes
// queued before Pair to the verdict program (setsockopt SO_RCVLOWAT), what
// a socket wrote (getsockopt TCP_INFO, ioctl SIOCOUTQ), and the copy of a
// given-back direction (recvfrom, write). They are raw and allocation-free,
// so that what runs after the filter is exactly these calls: cilium/ebpf
// serves the set-up only (Probe), before it.

package sockmap

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

var _ = allow.Syscall(allow.Pasta, "getsockopt", "sockmap: SO_COOKIE of the two sockets of a spliced connection, the keys of the maps (Accel.Pair); TCP_INFO's bytes acknowledged, for what the kernel still holds for a peer (Accel.Pair, Read)")

var _ = allow.Syscall(allow.Pasta, "setsockopt", "sockmap: SO_RCVLOWAT 1 (the default) on a paired socket, which makes TCP hand the bytes queued before Pair to the verdict program (Accel.Pair)")

// elemAttr is union bpf_attr as BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM
// and BPF_MAP_LOOKUP_ELEM read it: the map, pointers to key and value (the
// value unused by delete), and the update's flags.
type elemAttr struct {
	mapFD uint32
	_     uint32
	key   uint64
	value uint64
	flags uint64
}

// Flags of BPF_MAP_UPDATE_ELEM.
const (
	updateAny     = 0 // BPF_ANY: create or replace
	updateNoExist = 1 // BPF_NOEXIST: create only
)

// registerBPF puts the bpf system call, restricted to the map updates and
// deletes of Pair and Unpair, on pasta's seccomp allow-list. Probe calls it
// once the accelerator works, so that bpf is allowed only in a process that
// uses it (a registration at package level would allow it in every pasta,
// accelerated or not). It must run before the filter is built
// (isolation.Postfork); it is not safe for concurrent use, as allow's
// registry is not (Probe runs during set-up, on one goroutine).
//
// Returns false when the allow-list cannot name bpf: isolation/allow's
// syscall table lacks it, and a registration would panic.
func registerBPF() bool {
	if !allow.Known() {
		return true // no filter on this architecture: nothing to register
	}
	if _, ok := allow.Number("bpf"); !ok {
		return false
	}
	allow.SyscallArg(allow.Pasta, "bpf", allow.ArgCheck{Arg: 0, Mask: 0xffffffff, Value: unix.BPF_MAP_UPDATE_ELEM, Name: "BPF_MAP_UPDATE_ELEM"},
		"sockmap: adding the sockets of a spliced connection to the maps of the in-kernel accelerator (Accel.Pair, mapUpdate); only when Probe succeeded")
	allow.SyscallArg(allow.Pasta, "bpf", allow.ArgCheck{Arg: 0, Mask: 0xffffffff, Value: unix.BPF_MAP_DELETE_ELEM, Name: "BPF_MAP_DELETE_ELEM"},
		"sockmap: removing them before they are closed (Accel.Unpair, mapDelete); only when Probe succeeded")
	allow.SyscallArg(allow.Pasta, "bpf", allow.ArgCheck{Arg: 0, Mask: 0xffffffff, Value: unix.BPF_MAP_LOOKUP_ELEM, Name: "BPF_MAP_LOOKUP_ELEM"},
		"sockmap: what the program redirected, for what the kernel still holds (Accel.Read, mapLookup); only when Probe succeeded")
	return true
}

// mapUpdate sets the element of map fd under *key to *value (a socket's
// descriptor, for the socket maps).
//
// attr: scratch space for the call (the caller's, so that nothing escapes);
// key, value: pointers to the key and value, of the map's sizes; flags:
// updateAny or updateNoExist. Returns 0 or the errno (EEXIST for an
// existing key with updateNoExist, EOPNOTSUPP for a socket the map refuses:
// not TCP, not established, or with a ULP such as kTLS).
func mapUpdate(attr *elemAttr, fd int, key, value unsafe.Pointer, flags uint64) unix.Errno {
	*attr = elemAttr{mapFD: uint32(fd), key: uint64(uintptr(key)), value: uint64(uintptr(value)), flags: flags}
	return bpfElem(unix.BPF_MAP_UPDATE_ELEM, attr)
}

// mapDelete removes the element of map fd under *key.
//
// attr: scratch space for the call; key: pointer to the key. Returns 0 or
// the errno (ENOENT: not there, for example because the kernel removed a
// closed or reset socket itself).
func mapDelete(attr *elemAttr, fd int, key unsafe.Pointer) unix.Errno {
	*attr = elemAttr{mapFD: uint32(fd), key: uint64(uintptr(key))}
	return bpfElem(unix.BPF_MAP_DELETE_ELEM, attr)
}

// bpfElem makes bpf(cmd, attr), retrying EINTR. It uses Syscall, not
// RawSyscall: a socket map update takes the socket's lock (lock_sock),
// which may sleep. Returns 0 or the errno.
func bpfElem(cmd uintptr, attr *elemAttr) unix.Errno {
	for {
		_, _, e := unix.Syscall(unix.SYS_BPF, cmd, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
		if e != unix.EINTR {
			return e
		}
	}
}

// socketCookie reads the cookie of socket fd into *cookie: the 64-bit
// number the kernel gives a socket once (sock_gen_cookie), unique until
// reboot and across network namespaces, that bpf_get_socket_cookie returns
// for it in the verdict program. Returns 0 or the errno.
func socketCookie(fd int, cookie *uint64) unix.Errno {
	l := uint32(8)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_COOKIE,
		uintptr(unsafe.Pointer(cookie)), uintptr(unsafe.Pointer(&l)), 0)
	return e
}

// nudge sets SO_RCVLOWAT to 1 (its default) on TCP socket fd. TCP's
// setter (tcp_set_rcvlowat) then calls tcp_data_ready, which runs the
// socket's sk_data_ready when bytes are queued: once the socket is in the
// sources map that is sk_psock_verdict_data_ready, which hands every
// queued skb to the verdict program. Without it, bytes queued before Pair
// would wait for the next segment to arrive (see doc.go). Returns 0 or the
// errno.
func nudge(fd int) unix.Errno {
	one := int32(1)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT,
		uintptr(unsafe.Pointer(&one)), 4, 0)
	return e
}

var _ = allow.SyscallArg(allow.Pasta, "ioctl", allow.ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.SIOCOUTQ, Name: "SIOCOUTQ"},
	"sockmap: the bytes in a paired socket's send queue, for what the kernel still holds for it (Accel.Read, written)")

var _ = allow.Syscall(allow.Pasta, "recvfrom", "sockmap: a paired socket's end of stream, and the bytes its program passed up over the budget (Accel.Read, recvFrom)")

var _ = allow.Syscall(allow.Pasta, "write", "sockmap: those bytes written into the direction's pipe (Accel.Read, writeFD)")

// mapLookup reads the element of map fd under *key into *value.
//
// attr: scratch space for the call; key, value: pointers of the map's
// sizes. Returns 0 or the errno (ENOENT: not there).
func mapLookup(attr *elemAttr, fd int, key, value unsafe.Pointer) unix.Errno {
	*attr = elemAttr{mapFD: uint32(fd), key: uint64(uintptr(key)), value: uint64(uintptr(value))}
	return bpfElem(unix.BPF_MAP_LOOKUP_ELEM, attr)
}

// tcpInfo reads TCP_INFO of socket fd into info. Returns 0 or the errno.
func tcpInfo(fd int, info *unix.TCPInfo) unix.Errno {
	l := uint32(unsafe.Sizeof(*info))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(info)), uintptr(unsafe.Pointer(&l)), 0)
	return e
}

// outq returns the bytes in socket fd's send queue, sent or not, not yet
// acknowledged (SIOCOUTQ). Returns the count or the errno.
func outq(fd int) (int, unix.Errno) {
	var n int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	return int(n), e
}

// recvFrom reads up to len(b) bytes of socket fd into b (recvfrom with no
// address). flags: MSG_*. Returns the bytes read (0: end of stream) or the
// errno; EINTR is retried.
func recvFrom(fd int, b []byte, flags int) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
		if e != unix.EINTR {
			return int(r), e
		}
	}
}

// writeFD writes b to descriptor fd (a pipe). Returns the bytes written
// or the errno; EINTR is retried.
func writeFD(fd int, b []byte) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		if e != unix.EINTR {
			return int(r), e
		}
	}
}
