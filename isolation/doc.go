// Package isolation is gopasst's self-isolation: what it gives up, and
// when, so that a compromise through the guest or container traffic it
// parses all day can do almost nothing.
//
// # Theory of operation
//
// Nothing can be given up before the work that needs it is done, so
// isolation happens in four stages, each as early as the work before it
// allows. They keep the C original's names and order; each is one function,
// called from main at exactly one point:
//
//  1. Initial, first thing in main: drops every capability no later step
//     needs and closes descriptors inherited by accident (all without
//     FD_CLOEXEC above 2, except --fd). It must not depend on the options
//     (they are not parsed) nor remove filesystem access.
//  2. User, once options are parsed and the host discovered: settles the
//     final UID/GID (--runas; nobody when started as root in the initial
//     user namespace), clears supplementary groups, joins the user
//     namespace pasta attaches to (--userns, pasta PID) or creates one, and
//     starts the sandboxed process there (see "Processes"). It must not
//     remove filesystem access: set-up still opens /dev/net/tun, /proc
//     files, resolv.conf.
//  3. Prefork, after all set-up (every descriptor the event loop will use
//     is open): makes every mount unbindable, mounts an empty read-only
//     tmpfs, pivot_roots into it and detaches the old root; clears the
//     bounding set and narrows capabilities to what the mode needs at run
//     time (passt: none; pasta: NET_BIND_SERVICE); redirects standard
//     streams when in the background and tells the supervisor it is ready,
//     which completes daemonisation. It must not install seccomp yet (mount
//     and prctl are not on the lists).
//  4. Postfork, right after, before the event loop: not dumpable,
//     no_new_privs, and the mode's seccomp allow-list on every thread
//     (TSYNC), killing the process on anything else.
//
// # Processes
//
// A Go process is multi-threaded before main runs, and Linux refuses
// unshare(CLONE_NEWUSER) and setns() into a user or mount namespace to a
// multi-threaded process; IPC, UTS and mount namespaces unshared by one
// thread would cover that thread only. Namespaces are therefore created
// with a new process: User re-executes the program (/proc/self/exe, same
// argv, so the sandboxed process parses the same configuration) with clone
// flags for a user namespace where one is needed and, because they can only
// be created there, the IPC, UTS, mount and (unless pasta stays in the
// foreground) PID namespaces that Prefork then completes in-process:
// pivot_root acts on the whole mount namespace, so all threads. The PID
// namespace is what the C original gets by unsharing before its fork to the
// background: the daemon is the first process of its own PID namespace and
// cannot see or signal any other.
//
//   - The invoked process, the supervisor, stays outside: it relays
//     SIGTERM, SIGINT, SIGHUP and SIGQUIT, writes the --pid file with the
//     sandboxed process's PID once that is ready, and exits 0 then
//     (background) or with its exit status (foreground, 128 + signal if
//     one killed it). Started as root, it drops to the final IDs as soon as
//     the sandboxed process is ready. It parses nothing from the guest.
//   - The sandboxed process does all set-up, the last two stages and the
//     event loop. It gets the --fd descriptor at its own number and, under
//     their names, what was registered with Carry: descriptors only the
//     invoked process could open (the target network namespace of pasta,
//     files in a root-only directory, raw sockets opened as root).
//
// Which user namespace the sandboxed process runs in:
//   - passt, and pasta spawning a command: a new one mapping its UID/GID 0
//     to the final IDs (maps written by the supervisor, the parent, as Go's
//     SysProcAttr does: the C original, started as root, cannot write them
//     any more once it is nobody); except root staying root (--runas 0),
//     who already holds every capability and keeps the initial namespace.
//   - pasta attaching: the namespace owning the target network namespace,
//     where it needs capabilities: joined first through the isolation/nsenter
//     constructor (the supervisor re-executes itself to join, before the
//     runtime starts), or the supervisor's own when it already has
//     CAP_SYS_ADMIN there. Root in the initial namespace never joins one (it
//     would lose its host privileges); it runs the sandboxed process as
//     nobody, carrying the stage 2 capabilities across execve as ambient ones.
//
// pasta's command runs in namespaces of its own, created by pasta's
// namespace code (datapath/netns, called by cmd/passt) from the sandboxed
// process, so they belong to its user namespace.
//
// # Capabilities and threads
//
// Capability sets are per thread in Linux, and Go's runtime starts threads
// (sysmon, a template thread, workers) before main; capset() from Go acts
// on the calling thread only, and syscall.AllThreadsSyscall is unavailable
// with cgo. So capabilities change where the whole process can be reached:
//   - at execve: the sandboxed process starts as root of its own user
//     namespace (all capabilities there), or with ambient capabilities;
//   - in the nsenter constructor, before the runtime starts any thread: it
//     narrows the sandboxed process to the stage 2 set (SYS_ADMIN, SETPCAP,
//     NET_BIND_SERVICE; pasta also NET_ADMIN and SYS_PTRACE), which every
//     later thread inherits;
//   - Prefork then clears the bounding and ambient sets and narrows the
//     others on the main thread (what /proc/PID/status shows), on the
//     namespace worker (RegisterThread), and on every other thread through
//     isolation/threadcaps: a real-time signal whose C handler makes the
//     same raw system calls on the thread it lands on (glibc does the same
//     for setuid()), sent to each thread of /proc/self/task until all of
//     them show the narrowed sets. Threads started later copy a narrowed
//     one. Without that, the runtime's threads kept the stage 2 set: for
//     pasta started as root and attaching (nobody in the initial user
//     namespace, with ambient capabilities), CAP_NET_ADMIN over the host's
//     network namespace, usable through an rtnetlink socket with the
//     socket/bind/sendmsg the filter allows, from any code running on one
//     of those threads. The integration tests (test/isolation_test.go)
//     check every thread of the real binary.
//
// # The allow-lists
//
// Every syscall gopasst makes after Postfork is registered, with the
// reason, in the leaf registry isolation/allow, by a declaration beside the
// function that makes the call; the registry records the file and line, so
// that the printed list points at each call site:
//
//	var _ = allow.Syscall(allow.Both, "recvmmsg", "sys.Recvmmsg: host datagrams in batches")
//	var _ = allow.SyscallArg(allow.Both, "ioctl", allow.ArgCheck{Arg: 1,
//		Mask: 0xffffffff, Value: unix.SIOCOUTQ, Name: "SIOCOUTQ"}, "unacknowledged bytes")
//
// The datapath's hot-path calls live in one package, datapath/sys, each
// with its annotation; the rest (sockets of new flows, the logger's file)
// are annotated where they are made. The names must be in
// allow/syscalls_amd64.go (add them there). The Go runtime's own needs are
// listed apart in runtime_syscalls.go, so each count can be told. The lists
// are a property of the binary: whatever it links registers. Filter builds
// the BPF program: architecture check, x32 numbers refused, binary search
// over the allowed numbers, argument checks (clone only for threads, never
// with namespace flags; mmap and mprotect never executable; ioctl only for
// listed requests; socket only for IPv4 and IPv6), kill for anything else;
// clone3 fails with ENOSYS so that glibc falls back to clone, whose flags
// the filter can read. PrintSeccomp lists each mode's entries with their
// places and reasons and the counts (--print-seccomp).
//
// This package imports no datapath package: the caller fills Config from
// its configuration, passes what must be carried across (Carry), and
// registers its worker threads (RegisterThread); lines are logged through
// log/slog, whose handler the program installs (datapath/logging).
//
// # Security, for the README
//
// gopasst isolates itself as the C original does: from start-up it gives up
// capabilities and leaked descriptors, runs as an unprivileged user (nobody
// when started as root) in its own user, IPC, UTS, mount and, when in the
// background, PID namespaces, with an empty read-only filesystem and no
// capabilities outside its own namespaces (pasta keeps only
// CAP_NET_BIND_SERVICE), and finally under a seccomp filter that kills it
// on any syscall outside a list built from annotations next to the code
// that needs each one. With the Go runtime included, the lists hold 40
// syscalls for passt and 43 for pasta on x86_64 (the C original: 34 and
// 43); 23 of them are there for the Go runtime (futex, thread creation,
// signals, memory; 4 of those, read, write, epoll_pwait and epoll_ctl, the
// data path needs anyway), 17 (passt) and 20 (pasta) for gopasst alone. The
// runtime's needs are listed apart with a reason for each, and
// clone is allowed only to create threads, mmap and mprotect never for
// executable memory.
package isolation
