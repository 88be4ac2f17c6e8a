// Package sys is the datapath's system-call layer: the raw wrappers the hot
// path uses (tap and socket reads and writes, recvmmsg/sendmmsg,
// sendmsg/recvmsg with MSG_PEEK, MSG_TRUNC and MSG_ERRQUEUE, the socket
// options read and set per segment, epoll), each with its seccomp
// allow-list annotation (isolation/allow) beside it, naming who calls it.
//
// # Why not golang.org/x/sys/unix
//
// Its wrappers take interfaces (Sockaddr), build slices or return fresh
// structures, which allocates on every call; the hot path must allocate
// nothing per packet. These wrappers take preallocated arguments and return
// the bare errno (0 for success), which is a number, not an error
// interface: no allocation either on failure. EINTR is retried.
//
// # RawSyscall versus Syscall
//
// Every descriptor the datapath reads or writes is non-blocking (or the call
// says MSG_DONTWAIT), so these calls return at once: they use RawSyscall,
// which does not tell the Go scheduler about the call. Told (Syscall calls
// entersyscall), sysmon hands the P of a call that lasts over 20 µs to
// another thread (copying 64 KiB into a socket or the tap does), and the
// handover costs futex wake-ups and context switches for nothing: measured
// 0.57 -> 0.52 s/GB of translator CPU host to namespace at MTU 65520
// (commit 090dc40). A raw call cannot be preempted either, which is fine
// for calls that never wait.
//
// The two calls here that may wait use Syscall, so that the runtime can run
// other goroutines meanwhile: epoll_pwait, where the event loop sleeps, and
// writev to the capture file, a regular file whose writes may wait for the
// disk.
package sys
