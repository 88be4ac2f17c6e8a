// Interim allow-list entries for the data path, registered here until the
// code that makes each call lands: the event loop, UDP, ICMP, TCP, splice.
// Each engineer moves the entries for their calls into an init function in
// their own file (isolation.Allow next to the call) and deletes them here;
// a name registered in both places is simply allowed once.

package isolation

import "golang.org/x/sys/unix"

func init() {
	if unknownArch {
		return
	}
	// The event loop.
	Allow(Both, "epoll_pwait", "the event loop waits on every descriptor (unix.EpollWait)")
	Allow(Both, "epoll_ctl", "adding, changing and removing flows' sockets in the event loop")
	Allow(Both, "timerfd_settime", "arming the loop's timers (TCP retransmission, 1 s housekeeping)")
	Allow(Both, "close", "closing sockets of ended flows")
	Allow(Both, "fcntl", "O_NONBLOCK on accepted sockets")

	// Guest side: the qemu stream socket (passt) or the tap device (pasta).
	Allow(Both, "read", "frames from the tap device; qemu socket stream")
	Allow(Both, "readv", "frames from the tap device or qemu socket into pool slots")
	Allow(Both, "write", "frames to the tap device")
	Allow(Both, "writev", "batches of frames to the tap device or qemu socket")
	Allow(Passt, "accept4", "a qemu reconnecting to our listening UNIX socket")
	Allow(Both, "recvfrom", "qemu socket reads; ping replies")
	Allow(Both, "recvmsg", "error queues (IP_RECVERR), PKTINFO, MSG_PEEK at SO_PEEK_OFF")

	// Host side: new flows after seccomp.
	AllowInetSocket(Both, "a host socket for each new TCP, UDP or ping flow")
	Allow(Both, "bind", "UDP flows bind the guest's source port; -o source address; auto-forwarded listeners")
	Allow(Both, "connect", "TCP and UDP flows connect to their destination")
	Allow(Both, "listen", "listeners opened by auto port forwarding rescans")
	Allow(Both, "accept4", "inbound TCP connections on forwarded ports")
	Allow(Both, "setsockopt", "SO_REUSEADDR, TCP_MAXSEG, IP_RECVERR, IP_TTL... on new sockets")
	Allow(Both, "getsockopt", "TCP_INFO for the window offered to the guest; SO_ERROR")
	Allow(Both, "getsockname", "the local address the kernel picked for a UDP or TCP flow")
	Allow(Both, "recvmmsg", "batch reads from host UDP sockets")
	Allow(Both, "sendmmsg", "batch writes to host UDP sockets")
	Allow(Both, "sendmsg", "TCP data from the guest in one call per flow; UDP with ancillary data")
	Allow(Both, "sendto", "ping requests; single datagrams")
	Allow(Both, "shutdown", "half-closing TCP flows on FIN")
	AllowArg(Both, "ioctl", ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.SIOCOUTQ, Name: "SIOCOUTQ"},
		"bytes not yet acknowledged by the TCP peer (window towards the guest)")
	AllowArg(Both, "ioctl", ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.SIOCINQ, Name: "SIOCINQ/FIONREAD"},
		"bytes queued on a socket or the qemu stream")

	// pasta's loopback path.
	Allow(Pasta, "splice", "moving spliced TCP data through pipes without copying")
	Allow(Pasta, "pipe2", "pipes for new spliced connections")
}
