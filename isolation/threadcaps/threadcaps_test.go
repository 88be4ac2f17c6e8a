// NarrowAll on a process of its own (this test binary, re-executed): every
// thread, those the runtime started before and those started after, ends
// with the narrowed sets.

package threadcaps

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// envChild makes the re-executed test binary run child instead of tests.
const envChild = "GOPASST_THREADCAPS_CHILD"

// keep is what the child narrows to: CAP_NET_BIND_SERVICE, as pasta keeps.
const keep = 1 << unix.CAP_NET_BIND_SERVICE

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// blockThreads starts n goroutines locked to threads of their own, blocked
// until release is closed, and returns once they all run.
func blockThreads(n int, release chan struct{}) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			runtime.LockOSThread()
			wg.Done()
			<-release
		}()
	}
	wg.Wait()
}

// handlerOf returns the address of the handler installed for sig (the
// first word of the kernel's struct sigaction).
func handlerOf(sig unix.Signal) uintptr {
	var act [4]uintptr // handler, flags, restorer, mask
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&act[0])), 8, 0, 0)
	return act[0]
}

// checkAll returns an error naming the first thread outside keep.
func checkAll(taskDir int) (int, error) {
	tids, err := listTasks(taskDir)
	if err != nil {
		return 0, err
	}
	for _, tid := range tids {
		st, err := readStatus(taskDir, tid)
		if err != nil {
			continue
		}
		if ok, _ := narrowed(taskDir, tid, keep); !ok {
			return len(tids), fmt.Errorf("thread %d: CapEff %x CapPrm %x CapBnd %x CapAmb %x CapInh %x",
				tid, st.eff, st.prm, st.bnd, st.amb, st.inh)
		}
	}
	return len(tids), nil
}

// child is the re-executed process: it makes threads, narrows, and checks
// every thread before and after making more. It returns the exit status
// (0 for success), with the reason on stderr.
func child() int {
	fail := func(f string, a ...any) int { fmt.Fprintf(os.Stderr, f+"\n", a...); return 1 }
	taskDir, err := unix.Open("/proc/self/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("%v", err)
	}
	// os/signal's thread, which blocks the signals nobody asked for.
	signal.Notify(make(chan os.Signal, 1), unix.SIGTERM)
	release := make(chan struct{})
	blockThreads(8, release)
	if n, err := checkAll(taskDir); err == nil {
		return fail("before NarrowAll, all %d threads already narrow: nothing to test", n)
	}
	sig := broadcastSignal()
	before := handlerOf(sig)
	if err := NarrowAll(taskDir, keep); err != nil {
		return fail("NarrowAll: %v", err)
	}
	n, err := checkAll(taskDir)
	if err != nil {
		return fail("after NarrowAll: %v", err)
	}
	// Threads created now copy narrowed ones.
	more := make(chan struct{})
	blockThreads(8, more)
	runtime.GC()
	m, err := checkAll(taskDir)
	if err != nil {
		return fail("threads started after NarrowAll: %v", err)
	}
	if m <= n {
		return fail("no new threads: %d then %d", n, m)
	}
	// The runtime's handler is back: a late signal is ignored.
	if sig != 0 {
		if after := handlerOf(sig); after != before {
			return fail("handler of signal %d: %#x before, %#x after", sig, before, after)
		}
		unix.Tgkill(unix.Getpid(), unix.Gettid(), sig)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	close(more)
	fmt.Printf("ok %d %d\n", n, m)
	return 0
}

// TestNarrowAll runs the child as is, and as the first process of a new
// PID namespace whose /proc is still the parent's (as gopasst's daemon in
// the background): thread IDs there are not the ones tgkill() takes.
func TestNarrowAll(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the bounding set can only be cut with CAP_SETPCAP")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		flags uintptr
	}{{"same PID namespace", 0}, {"new PID namespace", unix.CLONE_NEWPID}} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run", "^$")
			cmd.Env = append(os.Environ(), envChild+"=1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: tc.flags}
			var out []byte
			var err error
			done := make(chan struct{})
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatal("child did not finish in 30 s")
			}
			if err != nil || !strings.HasPrefix(string(out), "ok ") {
				t.Fatalf("child: %v\n%s", err, out)
			}
			t.Logf("threads narrowed (before, after more were started): %s", strings.TrimSpace(strings.TrimPrefix(string(out), "ok ")))
		})
	}
}
