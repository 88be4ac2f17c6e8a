// Termination signals as a descriptor for the event loop.

package isolation

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

// TermFD returns an eventfd that becomes readable when SIGTERM, SIGINT,
// SIGHUP or SIGQUIT arrives. The event loop adds it to epoll and, when it
// fires, flushes what it must and returns: the process then exits with
// status 0, as the C original's handler does.
//
// This matters because the daemon is the first process of its own PID
// namespace, and the kernel drops signals such a process has no handler
// for: Go's default reaction (re-raise with the default action) would be
// lost, and the runtime would end with status 2. With the signals routed
// here the exit is explicit and clean. Call it before Postfork (Postfork
// calls it too): it installs signal handlers, which seccomp forbids later.
func TermFD() (int, error) {
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
				unix.Write(fd, one)
			}
		}()
	})
	return term.fd, term.err
}

// TermSignal returns the last termination signal received, or 0.
func TermSignal() unix.Signal { return unix.Signal(term.sig.Load()) }
