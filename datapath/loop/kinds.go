package loop

// The kinds of descriptor the loop handles, in one list so that no two
// packages pick the same number.
const (
	KindNone       Kind = iota
	KindTap             // the guest back end (tap device or qemu stream socket)
	KindTapListen       // passt: the listening UNIX socket for qemu
	KindSignal          // termination signals, from isolation
	KindChild           // pasta: the spawned command exited (pidfd)
	KindNetnsWatch      // pasta: the target namespace went away (inotify)
	KindTCP             // a TCP flow's host socket (tap path)
	KindTCPListen       // a forwarded TCP port's listening socket
	KindTCPSplice       // a spliced TCP flow's socket (pasta)
	KindUDP             // a UDP flow's host socket
	KindUDPListen       // a forwarded UDP port's socket
	KindPing            // an ICMP/ICMPv6 echo socket
	KindUDPSplice       // a socket of a UDP flow on pasta's loopback path
)
