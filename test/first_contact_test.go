// What a newcomer and the programs that start pasta meet first, each on the
// real binary: /dev/net/tun at 0600 (as these images ship it) as root and
// as an unprivileged user, root of a user namespace that denies setgroups,
// the names of our processes, warnings printed once, --chroot-fallback,
// pasta's -F, the descriptor limit, and the README's first command.

package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/test/nstest"
)

// gwExchange moves a request and an answer over TCP from pasta's namespace
// to a server on the host's 127.0.0.1, through the gateway address (which
// pasta maps to the host's loopback), with the bytes checked at both ends.
func gwExchange(t *testing.T, h *nstest.Host, p *nstest.Pasta) {
	t.Helper()
	ln := h.Listen(t, "tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	req := bytes.Repeat([]byte("first contact "), 4000)
	ans := bytes.Repeat([]byte("answer "), 3000)
	dst := net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(port))
	if _, err := tcpExchange(ln, func() (net.Conn, error) { return p.Dial("tcp", dst, 5*time.Second) }, req, ans); err != nil {
		t.Fatalf("TCP through pasta to the host's loopback: %v", err)
	}
}

// TestFirstContactRootTun0600 starts pasta as root without --runas (so
// that it switches to nobody), attached and spawning, with /dev/net/tun
// at 0600: the device must not matter to root. The namespace must be
// configured, and TCP, UDP and ping must cross.
func TestFirstContactRootTun0600(t *testing.T) {
	nstest.NarrowTun(t)
	forEachPeerMode(t, []pastaMode{modeAttachNobody, modeSpawnNobody}, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		p, err := tryStartPasta(t, h, peer, mode, append([]string{"--config-net"}, quietArgs...)...)
		if err != nil {
			knownLimit(t, peer, "as nobody it cannot open /dev/net/tun at 0600", err)
		}
		checkConfigNet(t, peer, p)
		gwExchange(t, h, p)
		checkUDP(t, peer, h, p)
		checkPing(t, peer, p)
	})
}

// TestFirstContactUnprivilegedTun0600 runs pasta as the unprivileged test
// user with /dev/net/tun at 0600: it cannot work, and must say so in one
// line naming what to change, with status 1.
func TestFirstContactUnprivilegedTun0600(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.NarrowTun(t)
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		if peer.Name != "gopasst" {
			// Its namespace child stays behind when the tun open fails.
			t.Skipf("%s: leaves a process behind when it cannot open /dev/net/tun", debianVersion)
		}
		h := nstest.NewHost(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		argv := append([]string{"--reuid=" + nstest.TestUser, "--regid=" + nstest.TestUser, "--clear-groups",
			peer.Pasta, "--config-net"}, quietArgs...)
		cmd := h.Cmd(ctx, "setpriv", append(argv, "--", "true")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		lines := nonEmptyLines(stderr.String())
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(lines) != 1 {
			knownLimit(t, peer, "its message about /dev/net/tun differs",
				fmt.Errorf("status %v, stderr %q: want status 1 and one line", err, stderr.String()))
		}
		if !strings.Contains(lines[0], "/dev/net/tun") || !strings.Contains(lines[0], "chmod 0666 /dev/net/tun") {
			knownLimit(t, peer, "its message does not say what to change",
				fmt.Errorf("the line does not say what to change: %q", lines[0]))
		}
		t.Logf("%s: %s", peer.Name, lines[0])
	})
}

// TestFirstContactSetgroupsDenied runs pasta as root of a user namespace
// that denies setgroups (unshare -r, as many container and CI set-ups
// are): spawning a command must work, and exit with its status.
func TestFirstContactSetgroupsDenied(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
	// Root of such a namespace holds no privilege over the device: it
	// must be usable by everyone there, as Debian ships it.
	nstest.WidenTun(t)
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"--user", "--map-root-user", "--", peer.Pasta, "--config-net"}, quietArgs...)
		cmd := h.Cmd(ctx, "unshare", append(args, "--", "sh", "-c", "test \"$(cat /proc/self/setgroups)\" = deny && exit 7")...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			knownLimit(t, peer, "it fails clearing supplementary groups", fmt.Errorf("status %v (want the command's 7):\n%s", err, out))
		}
	})
}

// TestFirstContactProcessNames starts pasta spawning `sleep 600` and
// checks that every process of ours has the name pasta was invoked by (the
// supervisor and the sandboxed process, a re-execution of /proc/self/exe or,
// where it is installed, of the optimised build beside it), and that pidof
// finds them.
func TestFirstContactProcessNames(t *testing.T) {
	forEachPeerMode(t, []pastaMode{modeSpawnRoot}, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		p := startPasta(t, h, peer, mode, append([]string{"--config-net"}, quietArgs...)...)
		// Ours: the supervisor and its children that run the same
		// executable or its optimised build (the sandboxed process,
		// started from passt.avx2 when that exists; not the command's).
		exe := strings.TrimSuffix(mustReadlink(t, fmt.Sprintf("/proc/%d/exe", p.PID)), ".avx2")
		ours := []int{p.PID}
		nstest.WaitFor(t, 10*time.Second, func() bool {
			ours = ours[:1]
			for _, k := range childrenNamed(p.PID, "") {
				if e, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", k)); e == exe || e == exe+".avx2" {
					ours = append(ours, k)
				}
			}
			return len(ours) > 1 || peer.Name != "gopasst"
		})
		for _, pid := range ours {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil {
				t.Fatal(err)
			}
			if comm := strings.TrimSpace(string(b)); comm != "pasta" && comm != "pasta.avx2" {
				knownLimit(t, peer, "its processes have another name", fmt.Errorf("process %d is called %q, want pasta", pid, comm))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "pidof", "pasta").Output()
		for _, pid := range ours {
			if !strings.Contains(" "+strings.TrimSpace(string(out))+" ", " "+strconv.Itoa(pid)+" ") {
				t.Errorf("pidof pasta: %q does not list %d", out, pid)
			}
		}
		t.Logf("%s: processes %v named pasta, pidof: %s", peer.Name, ours, strings.TrimSpace(string(out)))
	})
}

// childrenNamed returns the PIDs of pid's children whose comm is name (any
// name if "").
func childrenNamed(pid int, name string) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		k, _ := strconv.Atoi(f)
		if name != "" {
			c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k))
			if strings.TrimSpace(string(c)) != name {
				continue
			}
		}
		out = append(out, k)
	}
	return out
}

// mustReadlink returns the target of link, failing t if there is none.
func mustReadlink(t *testing.T, link string) string {
	t.Helper()
	s, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFirstContactWarningsOnce gives an option that is warned about
// (rootlesskit's --stderr) to a spawning pasta, whose options are parsed
// by the invoked and by the sandboxed process, and to an unprivileged
// pasta attaching, which also executes itself again to join the user
// namespace first: the warning must be printed once.
func TestFirstContactWarningsOnce(t *testing.T) {
	const warning = "--stderr will be dropped soon"
	forEachPeerMode(t, []pastaMode{modeSpawnRoot, modeAttachUser}, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		p := startPasta(t, h, peer, mode, append([]string{"--stderr", "--config-net"}, quietArgs...)...)
		// The sandboxed process parses its options during set-up, so
		// by readiness both parses are done.
		p.Stop()
		if n := strings.Count(p.Proc.Output(), warning); n != 1 {
			knownLimit(t, peer, "it warns more than once", fmt.Errorf("%q printed %d times:\n%s", warning, n, p.Proc.Output()))
		}
	})
}

// TestFirstContactNofile starts pasta with a soft descriptor limit below
// the hard one: the sandboxed process must run with the hard limit, as the
// C original raises it (-t all needs a socket per port).
func TestFirstContactNofile(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("no prlimit(1)")
	}
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		opts := nstest.PastaOpts{Binary: "prlimit", Args: append([]string{"--nofile=1024:8192", peer.Pasta, "-f",
			"--config-net", "--runas", "0"}, quietArgs...), Command: []string{"sleep", "600"}}
		p := h.StartPasta(t, opts)
		var pids []int
		nstest.WaitFor(t, 10*time.Second, func() bool {
			pids = append([]int{p.PID}, childrenNamed(p.PID, "")...)
			return len(pids) > 1
		})
		for _, pid := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 5 && strings.HasPrefix(l, "Max open files") {
					if f[3] != "8192" {
						knownLimit(t, peer, "it keeps the soft limit", fmt.Errorf("process %d: %s", pid, l))
					}
				}
			}
		}
	})
}

// TestFirstContactChrootFallback runs pasta, attaching to a namespace, in
// a chroot whose root is no mount point, where pivot_root is impossible:
// without --chroot-fallback it must refuse in one line naming pivot_root
// and the option; with it, it must serve the namespace (traffic crosses)
// with one warning.
func TestFirstContactChrootFallback(t *testing.T) {
	nstest.RequireRoot(t)
	bin := nstest.Binary(t, "pasta")
	dir := filepath.Dir(bin)
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallback=%v", fallback), func(t *testing.T) {
			h := nstest.NewHost(t)
			guest := nstest.NewNetns(t, "chroot")
			root := t.TempDir()
			opt := ""
			if fallback {
				opt = "--chroot-fallback"
			}
			// In a mount namespace of its own: bind the system's
			// directories and the binaries into root, chroot there,
			// and run pasta attached to the guest namespace.
			script := `set -e
r=` + root + `
for d in /bin /sbin /lib /lib64 /usr /etc /proc /sys /dev /run /var; do
	[ -e $d ] || continue
	if [ -L $d ]; then cp -a $d $r/; else mkdir -p $r$d; mount --rbind $d $r$d; fi
done
mkdir -p $r/tmp $r` + dir + `
mount --bind ` + dir + ` $r` + dir + `
exec chroot $r ` + bin + ` -f --runas 0 ` + opt + ` --config-net --netns ` + guest.Path() + ` -t none -u none -T none -U none`
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := h.Cmd(ctx, "unshare", "--mount", "--propagation", "private", "bash", "-c", script)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			if !fallback {
				var err error
				select {
				case err = <-done:
				case <-time.After(20 * time.Second):
					cmd.Process.Kill()
					<-done
					t.Fatalf("without the option pasta did not exit:\n%s", stderr.String())
				}
				var ee *exec.ExitError
				lines := nonEmptyLines(stderr.String())
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(lines) != 1 ||
					!strings.Contains(lines[0], "pivot_root") || !strings.Contains(lines[0], "--chroot-fallback") {
					t.Fatalf("without the option: %v, stderr %q: want status 1, one line naming pivot_root and --chroot-fallback", err, stderr.String())
				}
				t.Logf("refused: %s", lines[0])
				return
			}
			t.Cleanup(func() {
				cmd.Process.Signal(unix.SIGTERM) // bash exec'd pasta: this is pasta
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-done
				}
			})
			nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
				select {
				case err := <-done:
					t.Fatalf("pasta exited: %v\n%s", err, stderr.String())
				default:
				}
				return tapConfigured(guest, "")
			})
			checkGuestTCP(t, h, guest)
			warn := 0
			for _, l := range nonEmptyLines(stderr.String()) {
				if strings.Contains(l, "--chroot-fallback") {
					warn++
				}
			}
			if warn != 1 {
				t.Fatalf("with the option: %d lines about the fallback, want one:\n%s", warn, stderr.String())
			}
			t.Logf("served, saying: %s", strings.TrimSpace(stderr.String()))
		})
	}
}

// tapConfigured returns nil once netns n has an interface (name, or any
// but lo if "") carrying the host's IPv4 address (copied by --config-net).
func tapConfigured(n *nstest.Netns, name string) error {
	args := []string{"-4", "-o", "addr", "show"}
	if name != "" {
		args = append(args, "dev", name)
	}
	o, err := n.Cmd(context.Background(), "ip", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(o), nstest.HostAddr4.Addr().String()+"/") {
		return fmt.Errorf("no interface with %v: %s %v", nstest.HostAddr4.Addr(), o, err)
	}
	return nil
}

// checkGuestTCP moves a request and an answer over TCP from netns guest to
// a server on host h's 127.0.0.1, through the gateway address, with the
// bytes checked at both ends.
func checkGuestTCP(t *testing.T, h *nstest.Host, guest *nstest.Netns) {
	t.Helper()
	ln := h.Listen(t, "tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	dst := net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(port))
	req, ans := bytes.Repeat([]byte("from the guest "), 1000), []byte("answered")
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := guest.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", dst, 5*time.Second)
			return err
		})
		return c, err
	}
	if _, err := tcpExchange(ln, dial, req, ans); err != nil {
		t.Fatalf("TCP from the namespace to the host's loopback: %v", err)
	}
}

// TestFirstContactPastaFD hands pasta a tap device opened by the test in
// the namespace to serve (-F 3, --netns): pasta must use it, configure it
// with --config-net, and carry traffic over it.
func TestFirstContactPastaFD(t *testing.T) {
	nstest.RequireRoot(t)
	bin := nstest.Binary(t, "pasta")
	h := nstest.NewHost(t)
	guest := nstest.NewNetns(t, "fdguest")
	var tapFD int
	if err := guest.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq("fdtap0")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		tapFD = fd
		return nil
	}); err != nil {
		t.Fatalf("tap in the guest namespace: %v", err)
	}
	f := os.NewFile(uintptr(tapFD), "tap")
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"-f", "-F", "3", "--netns", guest.Path(), "--config-net", "--runas", "0"}, quietArgs...)
	cmd := h.Cmd(ctx, bin, args...)
	cmd.ExtraFiles = []*os.File{f}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	// Ready: the tap we made carries the host's address, copied.
	nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
		select {
		case err := <-done:
			t.Fatalf("pasta -F exited: %v\n%s", err, out.String())
		default:
		}
		return tapConfigured(guest, "fdtap0")
	})
	checkGuestTCP(t, h, guest)
}

// TestReadmeFirstCommand runs the demo of the README's first command
// (test/demo, after make) exactly as a newcomer would, as root, with
// /dev/net/tun at 0600 as these images ship it: it must end with status 0
// and show the steps that crossed pasta.
func TestReadmeFirstCommand(t *testing.T) {
	nstest.RequireRoot(t)
	bin := nstest.Binary(t, "pasta")
	demo := filepath.Join(filepath.Dir(bin), "test", "demo")
	if _, err := os.Stat(demo); err != nil {
		t.Skipf("no %s: -bin is not the top of the tree", demo)
	}
	nstest.NarrowTun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo)
	cmd.Env = append(os.Environ(), "PASTA=", "PASTA_ARGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("test/demo: %v\n%s", err, out)
	}
	for _, want := range []string{"lease", "2 packets transmitted, 2 received", "hello from the host", "pasta exited with status 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("test/demo's output lacks %q:\n%s", want, out)
		}
	}
}
