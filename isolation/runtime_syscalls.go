// The Go runtime's share of the allow-lists: what it calls on its own,
// whatever our code does (measured with strace -f on Go 1.26, amd64, cgo
// linked for isolation/nsenter, GOMAXPROCS fixed, updatemaxprocs=0).

package isolation

import (
	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// cloneNamespaceFlags are the clone flags that would create namespaces: a
// thread never needs them.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

func init() {
	// Scheduling and memory.
	allow.Runtime("futex", "goroutine parking, locks, thread wake-ups", nil)
	allow.Runtime("nanosleep", "usleep in the scheduler and sysmon", nil)
	allow.Runtime("sched_yield", "osyield in spinning locks", nil)
	allow.Runtime("mmap", "heap and stack growth; never executable memory",
		&allow.ArgCheck{Arg: 2, Mask: unix.PROT_EXEC, Value: 0, Name: "prot without PROT_EXEC"})
	allow.Runtime("munmap", "returning memory, thread stacks of exiting threads", nil)
	allow.Runtime("madvise", "the scavenger returns unused heap to the kernel", nil)
	allow.Runtime("mprotect", "glibc's guard page for a new thread's stack; never executable",
		&allow.ArgCheck{Arg: 2, Mask: unix.PROT_EXEC, Value: 0, Name: "prot without PROT_EXEC"})

	// Threads. With cgo linked, the runtime starts threads through
	// pthread_create, which tries clone3 first and falls back to clone on
	// ENOSYS: clone3's flags live in memory, out of the filter's reach.
	allow.Runtime("clone", "new threads (newosproc / pthread_create); never new processes or namespaces",
		&allow.ArgCheck{Arg: 0, Mask: unix.CLONE_THREAD | cloneNamespaceFlags, Value: unix.CLONE_THREAD, Name: "CLONE_THREAD without CLONE_NEW*"})
	allow.FailWith(allow.Both, "clone3", unix.ENOSYS, "pthread_create falls back to clone, whose flags we can check")
	allow.Runtime("rseq", "glibc registers restartable sequences in every new thread, and aborts if that fails once the first thread had them", nil)
	allow.Runtime("set_robust_list", "glibc's start of every new thread", nil)
	allow.Runtime("exit", "a thread ends (a locked goroutine returned, or an idle M)", nil)
	allow.Runtime("exit_group", "the process ends", nil)
	allow.Runtime("gettid", "thread identity for signals and locks", nil)
	allow.Runtime("getpid", "preemption signals are sent with tgkill(getpid(), tid)", nil)
	allow.Runtime("tgkill", "asynchronous preemption (SIGURG to a thread)", nil)

	// Signals.
	allow.Runtime("rt_sigreturn", "return from every signal handler", nil)
	allow.Runtime("rt_sigprocmask", "signal masks of new threads and cgo calls", nil)
	allow.Runtime("sigaltstack", "signal stack of every new thread", nil)

	// The netpoller, started before the filter goes in (Postfork).
	allow.Runtime("epoll_pwait", "the netpoller; unix.EpollWait also calls this", nil)
	allow.Runtime("epoll_ctl", "the netpoller registers pollable descriptors", nil)
	allow.Runtime("read", "draining the netpoller's wake-up eventfd", nil)
	allow.Runtime("write", "waking the netpoller; writing a signal to os/signal's pipe", nil)

	// Time: clock_gettime runs in the vDSO, but the vDSO falls back to the
	// syscall when the clock source cannot be read from user space.
	allow.Runtime("clock_gettime", "vDSO fallback for time.Now and the scheduler's clock", nil)
}
