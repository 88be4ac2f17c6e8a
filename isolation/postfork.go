// Stage 4, postfork: not dumpable, no new privileges, seccomp.

package isolation

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
	"gopasst/isolation/nsenter"
)

// Postfork is stage 4, called in the sandboxed process right after Prefork
// (which completed daemonisation), before the event loop.
//
// Should:
//   - make the process not dumpable: no core files, no ptrace or /proc
//     access to its memory by others with the same UID;
//   - set no_new_privs, then install the mode's seccomp allow-list with
//     SECCOMP_FILTER_FLAG_TSYNC, which applies both to every thread; any
//     other syscall kills the process;
//   - first start what the runtime starts lazily and would need syscalls
//     for that are not allowed later: fix GOMAXPROCS (which stops the
//     periodic CPU-limit re-reads), start the netpoller (epoll_create1,
//     eventfd2), and keep glibc's malloc from reading /sys in threads
//     started later.
//
// Signal handlers cannot be installed after it (rt_sigaction is not on the
// lists): whoever wants signals, the event loop's termination descriptor
// (datapath/term) above all, must ask for them before.
//
// Mustn't:
//   - come before Prefork: mount, pivot_root and prctl are not allowed by
//     the filter.
//
// It returns an error if any step fails; the caller exits with status 1.
func Postfork(cfg *Config) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("postfork: PR_SET_DUMPABLE: %w", err)
	}
	prog, err := Filter(cfg.Mode)
	if err != nil {
		return fmt.Errorf("postfork: %w", err)
	}
	if !allow.Known() {
		return fmt.Errorf("postfork: no seccomp syscall table for %s", runtime.GOARCH)
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	} else {
		return fmt.Errorf("postfork: starting the netpoller: %w", err)
	}
	if err := nsenter.BeforeSeccomp(); err != nil {
		return fmt.Errorf("postfork: %w", err)
	}
	return installFilter(prog)
}

// installFilter sets no_new_privs and installs prog on every thread, from a
// locked thread so that the flag and the filter land on the same one before
// TSYNC copies both to the others.
func installFilter(prog []unix.SockFilter) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("postfork: PR_SET_NO_NEW_PRIVS: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("postfork: installing seccomp filter: %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("postfork: seccomp: thread %d could not be synchronised", r)
	}
	return nil
}
