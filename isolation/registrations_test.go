// Stand-ins for the datapath's registrations in this package's tests: the
// filter is built from whatever the binary links, and the isolation tests
// link no datapath package (the layering rules forbid it). These cover
// every kind of entry the datapath makes: plain, per mode, argument checks
// and the socket family check. The real lists are checked on the built
// binaries (test/, --print-seccomp).

package isolation

import (
	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

var (
	_ = allow.Syscall(allow.Both, "recvmmsg", "test: stand-in for udp's batch reads")
	_ = allow.Syscall(allow.Pasta, "splice", "test: stand-in for a pasta-only entry")
	_ = allow.Syscall(allow.Pasta, "waitid", "test: stand-in for netns's reaping")
	_ = allow.SyscallArg(allow.Both, "ioctl", allow.ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.SIOCOUTQ, Name: "SIOCOUTQ"},
		"test: stand-in for tcp's SIOCOUTQ")
	_ = allow.SyscallArg(allow.Pasta, "ioctl", allow.ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.SIOCINQ, Name: "SIOCINQ"},
		"test: stand-in for a second argument check, in one mode")
	_ = allow.InetSocket(allow.Both, "test: stand-in for the flows' sockets")
)
