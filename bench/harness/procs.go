// Starting, bounding and ending the processes of a run, and reading what
// the tables need about them from /proc.

package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a long-running process we started (server, translator, holder of
// a namespace).
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{} // closed when it exited
	err    error         // its exit status, valid after done
}

// procs keeps every long-running process a run started, so that all of
// them end with the run, by PID, whatever happens.
type procs struct {
	mu   sync.Mutex
	live map[int]*proc
	log  func(format string, a ...any)
}

// lockedBuffer is a bytes.Buffer safe for the writer goroutine of exec and
// a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil // keep the start: it holds the first error
	}
	return l.b.Write(p)
}

// sysAttr returns the attributes of every child: its own process group,
// so a Ctrl-C on the terminal reaches only us and we end children in
// order, and SIGKILL if we die first.
func sysAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// start starts args as a long-running process called name and returns it.
func (p *procs) start(name string, args []string) (*proc, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = sysAttr()
	var eb lockedBuffer
	cmd.Stderr = &eb
	cmd.Stdout = &eb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pr := &proc{name: name, cmd: cmd, stderr: &eb, done: make(chan struct{})}
	p.mu.Lock()
	if p.live == nil {
		p.live = make(map[int]*proc)
	}
	p.live[cmd.Process.Pid] = pr
	p.mu.Unlock()
	p.log("started %s (pid %d): %s", name, cmd.Process.Pid, strings.Join(args, " "))
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	return pr, nil
}

// output returns what the process wrote so far (its first 64 KiB).
func (pr *proc) output() string {
	pr.stderr.mu.Lock()
	defer pr.stderr.mu.Unlock()
	return strings.TrimSpace(pr.stderr.b.String())
}

// exited reports whether the process has ended.
func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// pid returns the process ID.
func (pr *proc) pid() int { return pr.cmd.Process.Pid }

// stop ends the process: SIGTERM, then SIGKILL after grace, and waits
// for it (bounded: a process that survives SIGKILL for 5 s is reported).
func (p *procs) stop(pr *proc, grace time.Duration) {
	if pr == nil {
		return
	}
	pid := pr.pid()
	if !pr.exited() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(grace):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			select {
			case <-pr.done:
			case <-time.After(5 * time.Second):
				p.log("%s (pid %d) survived SIGKILL for 5 s", pr.name, pid)
			}
		}
	}
	p.mu.Lock()
	delete(p.live, pid)
	p.mu.Unlock()
}

// stopAll ends every process still running, newest first (servers and
// translators before the namespaces they live in).
func (p *procs) stopAll() {
	p.mu.Lock()
	var all []*proc
	for _, pr := range p.live {
		all = append(all, pr)
	}
	p.mu.Unlock()
	for i := 0; i < len(all); i++ { // newest (highest start order) first
		for j := i + 1; j < len(all); j++ {
			if all[j].cmd.Process.Pid > all[i].cmd.Process.Pid {
				all[i], all[j] = all[j], all[i]
			}
		}
	}
	for _, pr := range all {
		p.stop(pr, time.Second)
	}
}

// run runs args to completion within timeout and returns its standard
// output and error; a process still running at the timeout is killed.
func run(ctx context.Context, timeout time.Duration, args []string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = sysAttr()
	cmd.WaitDelay = 2 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %v", timeout)
	} else if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		err = fmt.Errorf("%s: %v: %s", args[0], err, msg)
	}
	return out.String(), errb.String(), err
}

// cpuTicks returns the user plus system time of process pid (all its
// threads) in clock ticks, from /proc/PID/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)  // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return u + st, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture we build for.
const clockTicks = 100

// peakRSSKiB returns VmHWM of process pid in KiB, from /proc/PID/status.
func peakRSSKiB(pid int) (int64, error) { return statusKiB(pid, "VmHWM:") }

// statusKiB returns the field (with its colon) of /proc/PID/status, in KiB.
func statusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no " + strings.TrimSuffix(field, ":"))
}

// listening reports whether the network namespace of process pid has a
// TCP socket listening on port (IPv4 or IPv6), from /proc/PID/net/tcp*.
func listening(pid, port int) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			// local_address is field 1, st (0A: LISTEN) field 3.
			if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" {
				return true
			}
		}
	}
	return false
}

// waitFor polls cond every 20 ms until it holds or timeout passes, and
// reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tree returns pid and all its descendants, from /proc/PID/task/*/children
// (bounded to 64 processes): translators may run their data path in a
// child (gopasst forks into new PID and mount namespaces), so the process
// we started is not the one that works.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && len(out) < 64; i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// treeTicks returns the CPU ticks of pid and its descendants (their sum).
func treeTicks(pid int) (int64, error) {
	var sum int64
	for i, p := range tree(pid) {
		t, err := cpuTicks(p)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue // a child that just exited
		}
		sum += t
	}
	return sum, nil
}

// treePeakRSSKiB returns the sum of VmHWM over pid and its descendants: an
// upper bound of the translator's peak memory.
func treePeakRSSKiB(pid int) (int64, error) { return treeKiB(pid, "VmHWM:") }

// treeRSSKiB returns the sum of VmRSS (resident now) over pid and its
// descendants.
func treeRSSKiB(pid int) (int64, error) { return treeKiB(pid, "VmRSS:") }

// treeKiB returns the sum of a /proc/PID/status field over pid and its
// descendants (an error only if pid's own cannot be read).
func treeKiB(pid int, field string) (int64, error) {
	var sum int64
	for i, p := range tree(pid) {
		kb, err := statusKiB(p, field)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue
		}
		sum += kb
	}
	return sum, nil
}
