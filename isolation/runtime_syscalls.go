// The Go runtime's share of the allow-lists: what it calls on its own,
// whatever our code does (measured with strace -f on Go 1.26, amd64, cgo
// linked for isolation/nsenter, GOMAXPROCS fixed, updatemaxprocs=0).

package isolation

import "golang.org/x/sys/unix"

// cloneNamespaceFlags are the clone flags that would create namespaces: a
// thread never needs them.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// unknownArch is set where no syscall table exists (syscalls_other.go).
var unknownArch bool

func init() {
	if unknownArch {
		return
	}
	// Scheduling and memory.
	allowRuntime("futex", "goroutine parking, locks, thread wake-ups", nil)
	allowRuntime("nanosleep", "usleep in the scheduler and sysmon", nil)
	allowRuntime("sched_yield", "osyield in spinning locks", nil)
	allowRuntime("mmap", "heap and stack growth; never executable memory",
		&ArgCheck{Arg: 2, Mask: unix.PROT_EXEC, Value: 0, Name: "prot without PROT_EXEC"})
	allowRuntime("munmap", "returning memory, thread stacks of exiting threads", nil)
	allowRuntime("madvise", "the scavenger returns unused heap to the kernel", nil)
	allowRuntime("mprotect", "glibc's guard page for a new thread's stack; never executable",
		&ArgCheck{Arg: 2, Mask: unix.PROT_EXEC, Value: 0, Name: "prot without PROT_EXEC"})

	// Threads. With cgo linked, the runtime starts threads through
	// pthread_create, which tries clone3 first and falls back to clone on
	// ENOSYS: clone3's flags live in memory, out of the filter's reach.
	allowRuntime("clone", "new threads (newosproc / pthread_create); never new processes or namespaces",
		&ArgCheck{Arg: 0, Mask: unix.CLONE_THREAD | cloneNamespaceFlags, Value: unix.CLONE_THREAD, Name: "CLONE_THREAD without CLONE_NEW*"})
	failWith(Both, "clone3", unix.ENOSYS, "pthread_create falls back to clone, whose flags we can check")
	allowRuntime("rseq", "glibc registers restartable sequences in every new thread, and aborts if that fails once the first thread had them", nil)
	allowRuntime("set_robust_list", "glibc's start of every new thread", nil)
	allowRuntime("exit", "a thread ends (a locked goroutine returned, or an idle M)", nil)
	allowRuntime("exit_group", "the process ends", nil)
	allowRuntime("gettid", "thread identity for signals and locks", nil)
	allowRuntime("getpid", "preemption signals are sent with tgkill(getpid(), tid)", nil)
	allowRuntime("tgkill", "asynchronous preemption (SIGURG to a thread)", nil)

	// Signals.
	allowRuntime("rt_sigreturn", "return from every signal handler", nil)
	allowRuntime("rt_sigprocmask", "signal masks of new threads and cgo calls", nil)
	allowRuntime("sigaltstack", "signal stack of every new thread", nil)

	// The netpoller, started before the filter goes in (Postfork).
	allowRuntime("epoll_pwait", "the netpoller; unix.EpollWait also calls this", nil)
	allowRuntime("epoll_ctl", "the netpoller registers pollable descriptors", nil)
	allowRuntime("read", "draining the netpoller's wake-up eventfd", nil)
	allowRuntime("write", "waking the netpoller; writing a signal to os/signal's pipe", nil)

	// Time: clock_gettime runs in the vDSO, but the vDSO falls back to the
	// syscall when the clock source cannot be read from user space.
	allowRuntime("clock_gettime", "vDSO fallback for time.Now and the scheduler's clock", nil)
}
