// Package term turns the termination signals into a descriptor for the
// event loop: SIGTERM, SIGINT, SIGHUP and SIGQUIT make an eventfd readable,
// and the loop, when it sees that, finishes its turn and returns, so that
// the process exits with status 0 as the C original's handler makes it.
//
// This matters because the daemon is the first process of its own PID
// namespace (isolation's package doc, "Processes"), and the kernel drops
// signals such a process has no handler for: Go's default reaction
// (re-raise with the default action) would be lost, and the runtime would
// end with status 2. With the signals routed here the exit is explicit.
//
// FD must be called before the seccomp filter goes in (isolation.Postfork):
// it installs signal handlers (rt_sigaction), which the filter forbids.
package term

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var term struct {
	once sync.Once
	fd   int
	err  error
	sig  atomic.Int32
}

// FD returns the eventfd that becomes readable when a termination signal
// arrives, creating it and installing the handlers at the first call. The
// descriptor is non-blocking and close-on-exec; it is never reset (one
// signal is enough to end the process). Returns the descriptor, or an
// error if the eventfd cannot be made.
func FD() (int, error) {
	term.once.Do(func() {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			term.fd, term.err = -1, fmt.Errorf("termination eventfd: %w", err)
			return
		}
		term.fd = fd
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT)
		go func() {
			one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
			for s := range ch {
				term.sig.Store(int32(s.(unix.Signal)))
				// write(2) on an eventfd: the Go runtime's own write
				// entry covers it (isolation/runtime_syscalls.go).
				unix.Write(fd, one)
			}
		}()
	})
	return term.fd, term.err
}

// Signal returns the last termination signal received, or 0.
func Signal() unix.Signal { return unix.Signal(term.sig.Load()) }
