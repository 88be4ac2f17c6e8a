// pasta.go: pasta started inside a Host, attached to a namespace or
// spawning one, as root or as the unprivileged test user.

package nstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUser is the unprivileged user (made by test/setup) that rootless tests
// run pasta as.
const TestUser = "gopasst-test"

// PastaOpts say how to start pasta.
type PastaOpts struct {
	// Binary is the pasta to run; default gopasst's (Binary(t, "pasta"),
	// which skips the test without -bin).
	Binary string
	// Args are pasta's options. -f is added unless present: the harness
	// tracks pasta by its PID, so it must not daemonise.
	Args []string
	// Command, if set, is spawn mode: pasta creates the namespace and runs
	// Command there (`pasta ARGS -- COMMAND...`); the command must stay
	// alive as long as the test needs the namespace. Empty: attach mode,
	// to a namespace made by `unshare --user --map-root-user --net --
	// sleep 600` (`pasta ARGS PID`).
	Command []string
	// Unprivileged runs pasta (and, in attach mode, the namespace's
	// process) as TestUser, through setpriv.
	Unprivileged bool
	// Ready, if set, replaces the default readiness check (see StartPasta):
	// it returns nil once the namespace is as the test needs it.
	Ready func(p *Pasta) error
	// ReadyTimeout bounds the wait for readiness (default ReadyTimeout).
	ReadyTimeout time.Duration
}

// Pasta is a running pasta and the namespace it serves.
type Pasta struct {
	Host *Host
	// Proc is pasta itself; Target, in attach mode, the process holding
	// the namespace pasta attached to (nil in spawn mode).
	Proc, Target *Proc
	// PID is pasta's PID, TargetPID the PID of a process inside the
	// namespace (attach: the sleep; spawn: the command pasta runs).
	PID, TargetPID int
	// Tap is the name of pasta's tap interface in the namespace, found
	// while waiting for readiness ("" if a custom Ready did not need it).
	Tap string
}

// setprivArgs returns the command prefix that runs a program as TestUser,
// with no supplementary groups.
func setprivArgs() []string {
	return []string{"setpriv", "--reuid=" + TestUser, "--regid=" + TestUser, "--clear-groups"}
}

// RequireUnprivileged skips t, with the reason, unless TestUser exists,
// and makes /dev/net/tun usable by it for t's duration (WidenTun).
func RequireUnprivileged(t testing.TB) {
	t.Helper()
	if _, err := user.Lookup(TestUser); err != nil {
		t.Skipf("user %s missing (%v): run test/setup", TestUser, err)
	}
	WidenTun(t)
}

// StartPasta starts pasta inside host h as opts say, and waits until the
// namespace is ready: in spawn mode until a child of pasta runs the command
// in another network namespace; then until a tap interface exists in the
// namespace, and with --config-net until it is up with an address wider
// than link scope and a default route. pasta, the
// namespace's process and anything they leave behind are stopped at t's
// cleanup. It fails t if pasta exits early or is not ready in time, with
// pasta's output.
func (h *Host) StartPasta(t testing.TB, opts PastaOpts) *Pasta {
	t.Helper()
	if opts.Binary == "" {
		opts.Binary = Binary(t, "pasta")
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = ReadyTimeout
	}
	var prefix []string
	if opts.Unprivileged {
		RequireUnprivileged(t)
		prefix = setprivArgs()
	}
	p := &Pasta{Host: h}

	args := slices.Clone(opts.Args)
	if !slices.Contains(args, "-f") && !slices.Contains(args, "--foreground") {
		args = append([]string{"-f"}, args...)
	}
	if len(opts.Command) == 0 {
		argv := prefixed(prefix, "unshare", "--user", "--map-root-user", "--net", "--", "sleep", "600")
		p.Target = h.Start(t, argv[0], argv[1:]...)
		p.TargetPID = p.Target.PID()
		WaitForErr(t, ReadyTimeout, func() error {
			if p.Target.Exited() {
				return fmt.Errorf("namespace holder exited:\n%s", p.Target.Output())
			}
			return inOtherNetns(p.TargetPID, "sleep", h.Path())
		})
		args = append(args, strconv.Itoa(p.TargetPID))
	} else {
		args = append(append(args, "--"), opts.Command...)
	}

	argv := prefixed(prefix, opts.Binary, args...)
	p.Proc = h.Start(t, argv[0], argv[1:]...)
	p.PID = p.Proc.PID()

	ready := opts.Ready
	if ready == nil {
		ready = func(p *Pasta) error { return p.defaultReady(opts) }
	}
	deadline := time.Now().Add(opts.ReadyTimeout)
	for {
		if p.Proc.Exited() {
			code, _ := p.Proc.Wait(0)
			t.Fatalf("%s exited with status %d before it was ready:\n%s", p.Proc.Name(), code, p.Proc.Output())
		}
		err := ready(p)
		if err == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v: %v\noutput:\n%s", p.Proc.Name(), opts.ReadyTimeout, err, p.Proc.Output())
		}
		time.Sleep(pollInterval)
	}
}

// prefixed returns prefix followed by name and args, as one argument list.
func prefixed(prefix []string, name string, args ...string) []string {
	return append(append(slices.Clone(prefix), name), args...)
}

// defaultReady is the readiness check StartPasta uses without opts.Ready.
// In spawn mode it also finds TargetPID. It returns why the namespace is
// not ready yet, nil once it is.
func (p *Pasta) defaultReady(opts PastaOpts) error {
	if len(opts.Command) > 0 && p.TargetPID == 0 {
		comm := filepath.Base(opts.Command[0])
		for _, c := range descendants(p.PID) {
			if inOtherNetns(c.pid, comm, p.Host.Path()) == nil {
				p.TargetPID = c.pid
				break
			}
		}
		if p.TargetPID == 0 {
			return fmt.Errorf("no child of pasta runs %s in another namespace yet", comm)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), CmdTimeout)
	defer cancel()
	links, err := Links(ctx, p.NSCmd)
	if err != nil {
		return err
	}
	var tap *Link
	for i := range links {
		if links[i].Name != "lo" {
			tap = &links[i]
			break
		}
	}
	if tap == nil {
		return errors.New("no tap interface in the namespace yet")
	}
	p.Tap = tap.Name
	if !slices.Contains(opts.Args, "--config-net") {
		return nil
	}
	if !tap.Has("UP") {
		return fmt.Errorf("%s not up yet", tap.Name)
	}
	addr := false
	for _, a := range tap.Addrs {
		addr = addr || (a.Scope == "global" && !a.Tentative)
	}
	if !addr {
		return fmt.Errorf("%s has no global address yet", tap.Name)
	}
	for _, fam := range []string{"-4", "-6"} {
		routes, err := Routes(ctx, p.NSCmd, fam)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == "default" {
				return nil
			}
		}
	}
	return errors.New("no default route in the namespace yet")
}

// inOtherNetns returns nil if process pid runs comm (as /proc/PID/comm
// shows it: at most 15 bytes) in a network namespace other than the one of
// nsPath, and why not otherwise.
func inOtherNetns(pid int, comm, nsPath string) error {
	if len(comm) > 15 {
		comm = comm[:15]
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(b)); got != comm {
		return fmt.Errorf("pid %d runs %q, not %q yet", pid, got, comm)
	}
	same, err := sameFile(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"), nsPath)
	if err != nil {
		return err
	}
	if same {
		return fmt.Errorf("pid %d still in %s", pid, nsPath)
	}
	return nil
}

// sameFile reports whether paths a and b name the same inode (for
// namespace files: the same namespace).
func sameFile(a, b string) (bool, error) {
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		return false, fmt.Errorf("stat %s: %w", a, err)
	}
	if err := syscall.Stat(b, &sb); err != nil {
		return false, fmt.Errorf("stat %s: %w", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// NSPath returns the network namespace file of pasta's namespace.
func (p *Pasta) NSPath() string {
	return filepath.Join("/proc", strconv.Itoa(p.TargetPID), "ns", "net")
}

// NSCmd returns a command that runs name with args inside pasta's network
// namespace, bounded by ctx. As root it enters the network namespace only
// (`nsenter -t PID -n`): root keeps every capability over namespaces owned
// by any user namespace, where entering the user namespace too would lose
// them when the namespace belongs to TestUser (root is unmapped there), and
// fail when it is our own user namespace. Otherwise it enters the user
// namespace as well (`nsenter -t PID -U -n --preserve-credentials`).
func (p *Pasta) NSCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	nsargs := []string{"-t", strconv.Itoa(p.TargetPID), "-n"}
	if os.Geteuid() != 0 {
		nsargs = []string{"-t", strconv.Itoa(p.TargetPID), "-U", "-n", "--preserve-credentials"}
	}
	cmd := exec.CommandContext(ctx, "nsenter", append(append(nsargs, "--", name), args...)...)
	cmd.WaitDelay = time.Second
	return cmd
}

// NSOutput runs name with args inside pasta's namespace with CmdTimeout and
// returns its standard output, failing t if it fails.
func (p *Pasta) NSOutput(t testing.TB, name string, args ...string) string {
	t.Helper()
	return output(t, p.NSCmd, name, args...)
}

// Do runs fn on a thread inside pasta's network namespace (see DoIn): the
// way to open sockets there from the test. Root only.
func (p *Pasta) Do(fn func() error) error {
	return DoIn(p.NSPath(), fn)
}

// Dial connects to address over network from inside pasta's namespace,
// within timeout. Root only.
func (p *Pasta) Dial(network, address string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := p.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, address, timeout)
		return err
	})
	return c, err
}

// Stop stops pasta (SIGTERM, SIGKILL after StopTimeout; see Proc.Stop) and
// returns its exit code. The namespace's process stays until cleanup.
func (p *Pasta) Stop() int { return p.Proc.Stop() }
