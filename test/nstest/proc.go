// proc.go: background processes that are always stopped and reaped, with
// the descendants they leave behind.

package nstest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts used by the harness. Every wait is bounded by one of them.
const (
	// CmdTimeout bounds a short command (ip, nsenter, nstat, sysctl).
	CmdTimeout = 30 * time.Second
	// StopTimeout is how long a process gets between SIGTERM and SIGKILL,
	// and again to be reaped after SIGKILL.
	StopTimeout = 5 * time.Second
	// ReadyTimeout bounds waiting for a process to be ready (a namespace
	// created, pasta's tap configured).
	ReadyTimeout = 20 * time.Second
)

// Proc is a background process started by the harness. It is stopped and
// reaped at the cleanup of the test that started it, with whatever
// descendants it still has.
type Proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	name string
	out  *os.File // stdout and stderr

	done    chan struct{} // closed once the process is reaped
	waitErr error         // cmd.Wait's result, valid after done

	stopOnce sync.Once
}

// StartCmd starts cmd in the background as a Proc of test t: stdout and
// stderr go to a file (read them with Output), and a cleanup stops it. cmd
// must not have Stdout or Stderr set. It fails the test if cmd cannot
// start.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "proc-*.log")
	if err != nil {
		t.Fatalf("output file: %v", err)
	}
	// A file, not a pipe: a descendant inheriting a pipe would keep
	// exec.Cmd.Wait from returning until it exits too.
	cmd.Stdout, cmd.Stderr = out, out
	p := &Proc{t: t, cmd: cmd, name: strings.Join(cmd.Args, " "), out: out, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", p.name, p.PID(), p.Output())
		}
		out.Close()
	})
	return p
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Name returns the command line, for messages.
func (p *Proc) Name() string { return p.name }

// Output returns what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string {
	b, err := os.ReadFile(p.out.Name())
	if err != nil {
		return fmt.Sprintf("(output unreadable: %v)", err)
	}
	return string(b)
}

// Exited reports whether the process has exited (and was reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit by itself. It returns
// its exit code (128 + signal number if killed, as a shell reports it), or
// an error if it is still running at the deadline.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	if p.Exited() {
		return p.exitCode(), nil
	}
	select {
	case <-p.done:
		return p.exitCode(), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s (pid %d) still running after %v", p.name, p.PID(), timeout)
	}
}

// exitCode returns the exit code of a reaped process, 128 + signal if a
// signal ended it.
func (p *Proc) exitCode() int {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return p.cmd.ProcessState.ExitCode()
}

// Stop ends the process if it still runs: SIGTERM, then SIGKILL after
// StopTimeout; then it kills (by PID) the descendants it had when Stop was
// called and that still run, so that nothing the test started survives. It
// returns the exit code (see Wait). Calling it again returns the same code;
// the test is failed if the process cannot be reaped.
func (p *Proc) Stop() int {
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		desc := descendants(p.PID())
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if _, err := p.Wait(StopTimeout); err != nil {
			p.t.Logf("%s (pid %d) ignored SIGTERM for %v: SIGKILL", p.name, p.PID(), StopTimeout)
			_ = p.cmd.Process.Kill()
			if _, err := p.Wait(StopTimeout); err != nil {
				p.t.Errorf("cannot reap %s (pid %d): %v", p.name, p.PID(), err)
			}
		}
		killAll(p.t, desc)
	})
	if !p.Exited() {
		return -1
	}
	return p.exitCode()
}

// procID names one process for certain: PIDs are reused, the pair (PID,
// start time in clock ticks since boot) is not.
type procID struct {
	pid   int
	start uint64
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first), or nil if the process is gone.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// The command name is in parentheses and may contain anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// startTime returns the start time of pid (field 22 of /proc/PID/stat), 0
// if the process is gone.
func startTime(pid int) uint64 {
	f := statFields(pid)
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// alive reports whether id still names a running (not zombie) process.
func alive(id procID) bool {
	f := statFields(id.pid)
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v == id.start
}

// descendants returns the processes below pid (children, their children,
// ...), found through the parent PID of every process in /proc.
func descendants(pid int) []procID {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(c)
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], c)
		}
	}
	var out []procID
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 4096 {
		cur := queue[0]
		queue = queue[1:]
		for _, c := range children[cur] {
			if st := startTime(c); st != 0 {
				out = append(out, procID{c, st})
				queue = append(queue, c)
			}
		}
	}
	return out
}

// killAll sends SIGKILL to every process of ids still running and waits up
// to StopTimeout for them to be gone (reaped by whoever is their parent
// now), failing t otherwise.
func killAll(t testing.TB, ids []procID) {
	for _, id := range ids {
		if alive(id) {
			_ = syscall.Kill(id.pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(StopTimeout)
	for _, id := range ids {
		for alive(id) {
			if time.Now().After(deadline) {
				t.Errorf("descendant pid %d survives SIGKILL", id.pid)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// CountFDs returns the number of open file descriptors of process pid.
func CountFDs(pid int) (int, error) {
	entries, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		return 0, fmt.Errorf("count descriptors of %d: %w", pid, err)
	}
	return len(entries), nil
}

// errNotRoot is what RequireRoot reports.
var errNotRoot = errors.New("needs root (creates network namespaces); CI runs the integration tests as root")

// RequireRoot skips the test, with the reason, unless it runs as root with
// ip(8) available.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(errNotRoot)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("ip(8) not found (%v): run test/setup", err)
	}
}
