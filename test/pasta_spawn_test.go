// End-to-end tests of how pasta is started: spawning a command (its exit
// status becomes pasta's, 128+signal if it is killed), and as root without
// --runas, where pasta switches to nobody.

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// TestPastaSpawnExit runs `pasta --config-net -- sh -c 'ip -j addr show;
// exit 7'` as root (--runas 0) and as the unprivileged user: the command
// must see the host's addresses on the tap, and pasta must exit with the
// command's status, 7. Then it spawns `sleep 600`, kills the sleep with
// SIGKILL, and expects pasta to exit with 128+9.
func TestPastaSpawnExit(t *testing.T) {
	forEachPeerMode(t, []pastaMode{modeSpawnRoot, modeSpawnUser}, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		t.Run("exit-status", func(t *testing.T) {
			code, stdout, stderr, err := runSpawn(h, peer, mode, 20*time.Second, "sh", "-c", "ip -j addr show; exit 7")
			if err != nil {
				t.Fatal(err)
			}
			if code != 7 {
				t.Errorf("pasta exited with %d, want the command's 7; stderr:\n%s", code, stderr)
			}
			links, err := parseLinks(stdout)
			if err != nil {
				t.Fatalf("%v; stderr:\n%s", err, stderr)
			}
			tap := nstest.LinkByName(links, nstest.Uplink)
			if tap == nil || tap.Addr("198.18.0.2", 24) == nil || !tap.Has("UP") {
				t.Errorf("the command did not see %s up with 198.18.0.2/24: %+v", nstest.Uplink, links)
			}
		})
		t.Run("killed", func(t *testing.T) {
			args := slices.Concat([]string{"-f", "--config-net"}, quietArgs)
			if mode.runas0 {
				args = append(args, "--runas", "0")
			}
			argv := []string{peer.Pasta}
			if mode.unprivileged {
				argv = []string{"setpriv", "--reuid=" + nstest.TestUser, "--regid=" + nstest.TestUser, "--clear-groups", peer.Pasta}
			}
			argv = slices.Concat(argv, args, []string{"--", "sleep", "600"})
			proc := h.Start(t, argv[0], argv[1:]...)
			var child int
			nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
				if proc.Exited() {
					t.Fatalf("pasta exited early:\n%s", proc.Output())
				}
				var err error
				child, err = spawnedChild(proc.PID(), "sleep", h.Path())
				return err
			})
			// Killed from outside its PID namespace: as the namespace's
			// init it would ignore signals it has no handler for, SIGKILL
			// from an ancestor namespace excepted.
			if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %d: %v", child, err)
			}
			code, err := proc.Wait(10 * time.Second)
			if err != nil {
				t.Fatalf("pasta still running after its command was killed: %v\n%s", err, proc.Output())
			}
			if code != 128+int(syscall.SIGKILL) {
				t.Errorf("pasta exited with %d after its command was killed by SIGKILL, want %d; output:\n%s",
					code, 128+int(syscall.SIGKILL), proc.Output())
			}
		})
	})
}

// runSpawn runs peer's pasta in host h, as mode says, with --config-net
// and quietArgs, spawning command, and waits up to timeout for it to exit.
// It returns pasta's exit status, its standard output and error, and an
// error if it could not run or did not exit in time.
func runSpawn(h *nstest.Host, peer nstest.Peer, mode pastaMode, timeout time.Duration, command ...string) (int, string, string, error) {
	args := slices.Concat([]string{"-f", "--config-net"}, quietArgs)
	if mode.runas0 {
		args = append(args, "--runas", "0")
	}
	argv := []string{peer.Pasta}
	if mode.unprivileged {
		argv = []string{"setpriv", "--reuid=" + nstest.TestUser, "--regid=" + nstest.TestUser, "--clear-groups", peer.Pasta}
	}
	argv = slices.Concat(argv, args, []string{"--"}, command)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := h.Cmd(ctx, argv[0], argv[1:]...)
	cmd.Dir = os.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, stdout.String(), stderr.String(), fmt.Errorf("%s: no exit within %v\nstdout:\n%s\nstderr:\n%s",
			strings.Join(argv, " "), timeout, stdout.String(), stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1, stdout.String(), stderr.String(), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String(), nil
}

// parseLinks finds the JSON array `ip -j addr show` printed in out (pasta
// may print around it) and decodes it.
func parseLinks(out string) ([]nstest.Link, error) {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "[") {
			var links []nstest.Link
			if err := json.Unmarshal([]byte(line), &links); err != nil {
				return nil, fmt.Errorf("ip -j addr show: %w in %q", err, line)
			}
			return links, nil
		}
	}
	return nil, fmt.Errorf("no ip -j output in:\n%s", out)
}

// spawnedChild returns the PID of a descendant of pid that runs comm in a
// network namespace other than nsPath's: the command pasta spawned, once it
// runs.
func spawnedChild(pid int, comm, nsPath string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	parent := map[int]int{}
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// After the command name in parentheses: state, then the parent.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			parent[c] = pp
		}
	}
	for c := range parent {
		for a, hops := parent[c], 0; a > 1 && hops < 64; a, hops = parent[a], hops+1 {
			if a == pid {
				if checkOwnNetns(c, comm, nsPath) == nil {
					return c, nil
				}
				break
			}
		}
	}
	return 0, fmt.Errorf("no descendant of %d runs %s in its own network namespace yet", pid, comm)
}

// TestPastaRootWithoutRunas starts pasta as root without --runas, attached
// and spawning: pasta switches to nobody. Where it still serves the
// namespace, the main cases must work in it (--config-net, ping, UDP);
// where it cannot, it must say so and exit with status 1.
func TestPastaRootWithoutRunas(t *testing.T) {
	forEachPeerMode(t, []pastaMode{modeAttachNobody, modeSpawnNobody}, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		p, err := tryStartPasta(t, h, peer, mode, append([]string{"--config-net"}, quietArgs...)...)
		var ee *earlyExit
		if errors.As(err, &ee) && ee.code == 1 && len(nonEmptyLines(ee.output)) == 1 {
			t.Logf("pasta refused, with status 1 and one line: %s", strings.TrimSpace(ee.output))
			return
		}
		if err != nil {
			reason := "as nobody it cannot open the user namespace of a namespace root made"
			if mode.spawn {
				reason = "as nobody it cannot write the new namespace's uid_map, and hangs before running the command"
			}
			knownLimit(t, peer, reason, err)
		}
		checkConfigNet(t, peer, p)
		checkPing(t, peer, p)
		checkUDP(t, peer, h, p)
	})
}

// tryStartPasta is startPasta for a start that may fail: it returns why
// (an *earlyExit, or pasta's output when the namespace is not ready within
// half of nstest.ReadyTimeout) instead of failing t. Ready means a
// tap up with a global address in the namespace (mode must use
// --config-net). Processes it starts are stopped at t's cleanup.
func tryStartPasta(t *testing.T, h *nstest.Host, peer nstest.Peer, mode pastaMode, args ...string) (*nstest.Pasta, error) {
	t.Helper()
	args = slices.Concat([]string{"-f"}, args)
	if mode.runas0 {
		args = append(args, "--runas", "0")
	}
	var prefix []string
	if mode.unprivileged {
		prefix = []string{"setpriv", "--reuid=" + nstest.TestUser, "--regid=" + nstest.TestUser, "--clear-groups"}
	}
	p := &nstest.Pasta{Host: h}
	if mode.spawn {
		args = append(args, "--", "sleep", "600")
	} else {
		argv := slices.Concat(prefix, []string{"unshare", "--user", "--map-root-user", "--net", "--", "sleep", "600"})
		p.Target = h.Start(t, argv[0], argv[1:]...)
		p.TargetPID = p.Target.PID()
		nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
			if p.Target.Exited() {
				t.Fatalf("namespace holder exited:\n%s", p.Target.Output())
			}
			return checkOwnNetns(p.TargetPID, "sleep", h.Path())
		})
		args = append(args, strconv.Itoa(p.TargetPID))
	}
	argv := slices.Concat(prefix, []string{peer.Pasta}, args)
	p.Proc = h.Start(t, argv[0], argv[1:]...)
	p.PID = p.Proc.PID()

	deadline := time.Now().Add(nstest.ReadyTimeout / 2)
	var last error
	for time.Now().Before(deadline) {
		if p.Proc.Exited() {
			code, _ := p.Proc.Wait(0)
			return nil, &earlyExit{code, p.Proc.Output()}
		}
		if last = pastaReady(p, mode, h); last == nil {
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("not ready within %v (%v); output:\n%s", nstest.ReadyTimeout/2, last, p.Proc.Output())
}

// earlyExit is tryStartPasta's error when pasta exited before it was
// ready.
type earlyExit struct {
	code   int    // exit status
	output string // what it wrote to stdout and stderr
}

// Error returns the exit status and the output.
func (e *earlyExit) Error() string {
	return fmt.Sprintf("pasta exited with status %d:\n%s", e.code, e.output)
}

// nonEmptyLines returns the lines of s that are not blank.
func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// pastaReady returns nil once p's namespace has a tap that is up with a
// global address, and why not otherwise; in spawn mode it first finds the
// spawned command (p.TargetPID).
func pastaReady(p *nstest.Pasta, mode pastaMode, h *nstest.Host) error {
	if mode.spawn && p.TargetPID == 0 {
		pid, err := spawnedChild(p.PID, "sleep", h.Path())
		if err != nil {
			return err
		}
		p.TargetPID = pid
	}
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	links, err := nstest.Links(ctx, p.NSCmd)
	if err != nil {
		return err
	}
	for i := range links {
		l := &links[i]
		if l.Name == "lo" || !l.Has("UP") {
			continue
		}
		for _, a := range l.Addrs {
			if a.Scope == "global" && !a.Tentative {
				p.Tap = l.Name
				return nil
			}
		}
	}
	return errors.New("no tap up with a global address yet")
}

// checkOwnNetns returns nil if process pid runs comm in a network
// namespace other than nsPath's, and why not otherwise.
func checkOwnNetns(pid int, comm, nsPath string) error {
	name, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(name)); got != comm {
		return fmt.Errorf("pid %d runs %q, not %q yet", pid, got, comm)
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"), &a); err != nil {
		return err
	}
	if err := syscall.Stat(nsPath, &b); err != nil {
		return err
	}
	if a.Dev == b.Dev && a.Ino == b.Ino {
		return fmt.Errorf("pid %d still in %s", pid, nsPath)
	}
	return nil
}
