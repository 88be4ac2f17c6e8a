// The isolation stages (isolation/, doc.go there) checked from outside on
// the real pasta binary, as isolation's own tests do on their stagetest
// harness: the sandboxed process's /proc (capabilities of every thread,
// seccomp, no_new_privs, empty root, namespaces, IDs, not dumpable),
// traffic opened after seccomp (TCP, UDP, ping, with the bytes checked at
// both ends), a workload that exercises the data path's syscalls under the
// filter (iperf3 both ways, 200 short connections, UDP flows), and the
// exit paths (SIGTERM to the daemon, the spawned command's status). Run as
// root: go test ./test/ -run Isolation -v -args -bin DIR.

package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// isoRuntimeCaps is what pasta keeps after stage 3 (CapEff, CapPrm and
// CapBnd of every thread): CAP_NET_BIND_SERVICE alone.
const isoRuntimeCaps = "0000000000000400"

// isoNobody is the UID and GID pasta changes to when started as root
// without --runas.
const isoNobody = 65534

// isoMode is one way of starting pasta for these tests.
type isoMode struct {
	name         string
	spawn        bool // run a command in a new namespace (else attach)
	runas0       bool // root with --runas 0
	unprivileged bool // run as nstest.TestUser
}

// isoModes are the six start-up paths: attach and spawn, each as root
// (switching to nobody), as root staying root, and unprivileged.
var isoModes = []isoMode{
	{name: "attach-root"},
	{name: "attach-root-runas0", runas0: true},
	{name: "attach-unprivileged", unprivileged: true},
	{name: "spawn-root", spawn: true},
	{name: "spawn-root-runas0", spawn: true, runas0: true},
	{name: "spawn-unprivileged", spawn: true, unprivileged: true},
}

// isoBinary returns gopasst's pasta (from -bin), skipping t unless it runs
// as root: these checks are about gopasst's own isolation, whatever -peer
// selects.
func isoBinary(t *testing.T) string {
	t.Helper()
	nstest.RequireRoot(t)
	return nstest.Binary(t, "pasta")
}

// isoStart starts pasta in a new host as m says, with --config-net and no
// port forwarding, plus args; in spawn mode the command is command (sleep
// 60 if nil). It returns the host, pasta as nstest sees it (the invoked
// process, the supervisor) and the PID of the sandboxed process, once that
// has installed its seccomp filter.
func isoStart(t *testing.T, bin string, m isoMode, command []string, args ...string) (*nstest.Host, *nstest.Pasta, int) {
	t.Helper()
	h := nstest.NewHost(t)
	args = append([]string{"--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none"}, args...)
	if m.runas0 {
		args = append(args, "--runas", "0")
	}
	opts := nstest.PastaOpts{Binary: bin, Args: args, Unprivileged: m.unprivileged}
	if m.spawn {
		opts.Command = command
		if opts.Command == nil {
			opts.Command = []string{"sleep", "60"}
		}
	}
	p := h.StartPasta(t, opts)
	d := isoDaemon(t, p.PID)
	nstest.WaitForErr(t, 10*time.Second, func() error {
		if s, err := isoStatus(d, "Seccomp"); err != nil || s != "2" {
			return fmt.Errorf("sandboxed process %d: Seccomp %q (%v), want 2", d, s, err)
		}
		return nil
	})
	return h, p, d
}

// isoChildren returns the children of every thread of pid.
func isoChildren(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// isoDaemon returns the sandboxed process of the pasta supervisor sup: its
// only child (isolation.User starts it; the spawned command is the
// sandboxed process's child). It fails t if there is not exactly one.
func isoDaemon(t *testing.T, sup int) int {
	t.Helper()
	var kids []int
	nstest.WaitFor(t, 10*time.Second, func() bool {
		kids = isoChildren(sup)
		return len(kids) == 1
	})
	return kids[0]
}

// isoStatus returns the value of field in /proc/PID/status (or of a task's,
// with pid "PID/task/TID").
func isoStatus[P int | string](pid P, field string) (string, error) {
	path := fmt.Sprintf("/proc/%v/status", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no %s", path, field)
}

// isoSameNS reports whether two namespace files (or /run/netns names) are
// the same namespace.
func isoSameNS(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		t.Fatalf("stat %s: %v", a, err)
	}
	if err := syscall.Stat(b, &sb); err != nil {
		t.Fatalf("stat %s: %v", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// isoIDs returns the UID and GID pasta should end up with in mode m (as
// the initial user namespace sees them).
func isoIDs(t *testing.T, m isoMode) (int, int) {
	t.Helper()
	switch {
	case m.unprivileged:
		u, err := user.Lookup(nstest.TestUser)
		if err != nil {
			t.Skipf("no %s: run test/setup", nstest.TestUser)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return uid, gid
	case m.runas0:
		return 0, 0
	}
	return isoNobody, isoNobody
}

// isoCheckOutside asserts what the four stages leave visible from outside
// the sandboxed process d of supervisor sup, in host h: status fields
// (Seccomp, NoNewPrivs, capability sets, IDs, groups), an empty root,
// IPC/UTS/mount namespaces of its own, the host's network namespace, and
// not dumpable.
func isoCheckOutside(t *testing.T, h *nstest.Host, sup, d, uid, gid int) {
	t.Helper()
	for field, want := range map[string]string{
		"Seccomp": "2", "NoNewPrivs": "1",
		"CapEff": isoRuntimeCaps, "CapPrm": isoRuntimeCaps, "CapBnd": isoRuntimeCaps,
		"CapInh": "0000000000000000", "CapAmb": "0000000000000000",
	} {
		if got, err := isoStatus(d, field); err != nil || got != want {
			t.Errorf("%s of %d: %q (%v), want %s", field, d, got, err, want)
		}
	}
	for field, want := range map[string]int{"Uid": uid, "Gid": gid} {
		got, err := isoStatus(d, field)
		f := strings.Fields(got)
		if err != nil || len(f) != 4 || f[0] != strconv.Itoa(want) || f[1] != f[0] || f[2] != f[0] || f[3] != f[0] {
			t.Errorf("%s of %d: %q (%v), want %d for real, effective, saved and filesystem", field, d, got, err, want)
		}
	}
	if g, _ := isoStatus(d, "Groups"); g != "" {
		t.Errorf("supplementary groups of %d: %q, want none", d, g)
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/", d))
	if err != nil || len(entries) != 0 {
		t.Errorf("root of %d not empty: %d entries, %v", d, len(entries), err)
	}
	for _, kind := range []string{"ipc", "uts", "mnt"} {
		if isoSameNS(t, fmt.Sprintf("/proc/%d/ns/%s", d, kind), fmt.Sprintf("/proc/%d/ns/%s", sup, kind)) {
			t.Errorf("%s namespace of %d is its parent's", kind, d)
		}
	}
	if !isoSameNS(t, fmt.Sprintf("/proc/%d/ns/net", d), h.Path()) {
		t.Errorf("network namespace of %d is not the host's (%s)", d, h.Path())
	}
	// pasta in the foreground (nstest passes -f) keeps its PID namespace:
	// isolation.User leaves CLONE_NEWPID out, as the C original does.
	if !isoSameNS(t, fmt.Sprintf("/proc/%d/ns/pid", d), fmt.Sprintf("/proc/%d/ns/pid", sup)) {
		t.Errorf("foreground pasta %d has a PID namespace of its own", d)
	}
	isoCheckNotDumpable(t, d)
}

// isoCheckThreads asserts that every thread of d holds only what pasta
// keeps at run time: capability sets are per thread, /proc/PID/status
// shows the main thread's alone.
func isoCheckThreads(t *testing.T, d int) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", d))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		p := fmt.Sprintf("%d/task/%s", d, task.Name())
		for field, want := range map[string]string{
			"CapEff": isoRuntimeCaps, "CapPrm": isoRuntimeCaps, "CapBnd": isoRuntimeCaps,
			"CapAmb": "0000000000000000", "Seccomp": "2", "NoNewPrivs": "1",
		} {
			got, err := isoStatus(p, field)
			if errors.Is(err, os.ErrNotExist) {
				break // the thread ended meanwhile
			}
			if got != want {
				t.Errorf("thread %s of %d: %s %q (%v), want %s", task.Name(), d, field, got, err, want)
			}
		}
	}
	t.Logf("%d threads of %d checked", len(tasks), d)
}

// isoPeerPrefix returns the command prefix that runs a program as a peer
// of process pid: in its user namespace (joined with nsenter unless it is
// ours), with its UID and GID there, and with no capabilities but the one
// pasta keeps (CAP_NET_BIND_SERVICE, so that the peer's permitted set
// covers the target's, as the kernel's ptrace check also asks). Such a
// peer may read /proc/PID/environ of a dumpable process of the same IDs,
// and only of a dumpable one: it has no CAP_SYS_PTRACE over the namespace
// the process's memory belongs to.
func isoPeerPrefix(t *testing.T, pid int) []string {
	t.Helper()
	uid := isoInnerID(t, pid, "Uid", "uid_map")
	gid := isoInnerID(t, pid, "Gid", "gid_map")
	groups := "--clear-groups"
	var prefix []string
	if !isoSameNS(t, fmt.Sprintf("/proc/%d/ns/user", pid), "/proc/self/ns/user") {
		prefix = []string{"nsenter", fmt.Sprintf("--user=/proc/%d/ns/user", pid), "--"}
		// setgroups is denied in namespaces made by unshare -r and by
		// isolation.User; the peer's groups do not matter to the check.
		groups = "--keep-groups"
	}
	return append(prefix, "setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(gid), groups,
		"--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
		"--bounding-set=-all,+net_bind_service")
}

// isoInnerID returns the first ID of field ("Uid", "Gid") of process pid as
// its own user namespace sees it, through its map file ("uid_map",
// "gid_map").
func isoInnerID(t *testing.T, pid int, field, mapFile string) int {
	t.Helper()
	v, err := isoStatus(pid, field)
	f := strings.Fields(v)
	if err != nil || len(f) == 0 {
		t.Fatalf("%s of %d: %q %v", field, pid, v, err)
	}
	outer, _ := strconv.Atoi(f[0])
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, mapFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		m := strings.Fields(l)
		if len(m) != 3 {
			continue
		}
		in, _ := strconv.Atoi(m[0])
		out, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		if outer >= out && outer-out < n {
			return in + outer - out
		}
	}
	t.Fatalf("%s %d of %d not mapped in its namespace:\n%s", field, outer, pid, b)
	return -1
}

// isoCanReadEnviron reports whether a peer of process of (see
// isoPeerPrefix) can read /proc/PID/environ of process pid.
func isoCanReadEnviron(t *testing.T, of, pid int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	argv := append(isoPeerPrefix(t, of), "cat", fmt.Sprintf("/proc/%d/environ", pid))
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("%s: %v %s", strings.Join(argv, " "), err, out)
	}
	return err == nil
}

// isoCheckNotDumpable asserts that process d is not dumpable: a peer (same
// user namespace, IDs and capabilities, none over its namespace) cannot
// read its environ, while it can read that of a control process started
// the same way as itself.
func isoCheckNotDumpable(t *testing.T, d int) {
	t.Helper()
	argv := append(isoPeerPrefix(t, d), "sleep", "10")
	ctrl := exec.Command(argv[0], argv[1:]...)
	if err := ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ctrl.Process.Kill(); ctrl.Wait() }()
	// nsenter and setpriv exec: wait until the PID runs sleep.
	nstest.WaitFor(t, 5*time.Second, func() bool { return isoCommIs(ctrl.Process.Pid, "sleep") })
	if !isoCanReadEnviron(t, d, ctrl.Process.Pid) {
		t.Fatalf("control: a peer of %d cannot read the environ of a dumpable process like it either: the check proves nothing", d)
	}
	if isoCanReadEnviron(t, d, d) {
		t.Errorf("sandboxed process %d is dumpable: a peer without capabilities over it reads its environ", d)
	}
}

// isoRandom returns n random bytes.
func isoRandom(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// isoTCPServer accepts on ln until it is closed; for each connection it
// reads a 4-byte length and that many bytes, reports them on got, and
// answers with reply(request). Every connection has a deadline.
func isoTCPServer(ln net.Listener, got chan<- []byte, reply func([]byte) []byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			var hdr [4]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			req := make([]byte, int(hdr[0])<<24|int(hdr[1])<<16|int(hdr[2])<<8|int(hdr[3]))
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			select {
			case got <- req:
			default:
			}
			c.Write(reply(req))
		}()
	}
}

// isoTCPRoundTrip connects from pasta's namespace to dst, sends req (length
// first) and returns the n bytes of the answer.
func isoTCPRoundTrip(p *nstest.Pasta, dst string, req []byte, n int) ([]byte, error) {
	c, err := p.Dial("tcp", dst, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	l := len(req)
	if _, err := c.Write(append([]byte{byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)}, req...)); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	back := make([]byte, n)
	if _, err := io.ReadFull(c, back); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return back, nil
}

// isoReverse returns b reversed, so that an answer differs from its request.
func isoReverse(b []byte) []byte {
	r := make([]byte, len(b))
	for i, v := range b {
		r[len(b)-1-i] = v
	}
	return r
}

// isoCheckTraffic opens new flows after seccomp from pasta's namespace to
// servers on the host's 127.0.0.1 through the gateway: TCP (64 KiB each
// way) and UDP (1200 bytes each way), checking the bytes at both ends, and
// pings the gateway; then pings the IPv6 gateway and opens a TCP flow to
// the host's ::1 through it.
func isoCheckTraffic(t *testing.T, h *nstest.Host, p *nstest.Pasta) {
	t.Helper()
	gw := nstest.HostGW4.String()
	ln := h.Listen(t, "tcp", "127.0.0.1:0")
	got := make(chan []byte, 1)
	go isoTCPServer(ln, got, isoReverse)
	req := isoRandom(t, 64<<10)
	back, err := isoTCPRoundTrip(p, net.JoinHostPort(gw, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), req, len(req))
	if err != nil {
		t.Errorf("TCP through pasta after seccomp: %v", err)
	} else {
		if srv := <-got; !bytes.Equal(srv, req) {
			t.Errorf("TCP: the server received %d bytes, not the %d sent", len(srv), len(req))
		}
		if !bytes.Equal(back, isoReverse(req)) {
			t.Errorf("TCP: the client received other bytes than the server sent")
		}
	}

	var uc net.PacketConn
	if err := h.Do(func() error {
		var err error
		uc, err = net.ListenPacket("udp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	ugot := make(chan []byte, 4)
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := uc.ReadFrom(b)
			if err != nil {
				return
			}
			msg := bytes.Clone(b[:n])
			select {
			case ugot <- msg:
			default:
			}
			uc.WriteTo(isoReverse(msg), from)
		}
	}()
	udst := net.JoinHostPort(gw, strconv.Itoa(uc.LocalAddr().(*net.UDPAddr).Port))
	if err := isoUDPRoundTrip(p, udst, isoRandom(t, 1200), ugot); err != nil {
		t.Errorf("UDP through pasta after seccomp: %v", err)
	}

	for _, dst := range []string{gw, nstest.HostGW6.String()} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := p.NSCmd(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "3 packets transmitted, 3 received") {
			t.Errorf("ping %s through pasta after seccomp: %v\n%s", dst, err, out)
		}
	}

	// IPv6: TCP to the host's ::1 through the IPv6 gateway.
	ln6 := h.Listen(t, "tcp", "[::1]:0")
	got6 := make(chan []byte, 1)
	go isoTCPServer(ln6, got6, isoReverse)
	req6 := isoRandom(t, 16<<10)
	back6, err := isoTCPRoundTrip(p, net.JoinHostPort(nstest.HostGW6.String(), strconv.Itoa(ln6.Addr().(*net.TCPAddr).Port)), req6, len(req6))
	if err != nil {
		t.Errorf("TCP over IPv6 through pasta after seccomp: %v", err)
	} else if srv := <-got6; !bytes.Equal(srv, req6) || !bytes.Equal(back6, isoReverse(req6)) {
		t.Errorf("TCP over IPv6: bytes differ at one end")
	}
}

// isoUDPRoundTrip sends req from a new socket in pasta's namespace to dst
// and checks that the server (reporting on got) received it and the client
// its reversal; up to three tries, a datagram can be lost.
func isoUDPRoundTrip(p *nstest.Pasta, dst string, req []byte, got <-chan []byte) error {
	c, err := p.Dial("udp", dst, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for try := 0; try < 3; try++ {
		if _, err := c.Write(req); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if !bytes.Equal(buf[:n], isoReverse(req)) {
			return fmt.Errorf("client received %d other bytes than the server sent", n)
		}
		for {
			select {
			case srv := <-got:
				if bytes.Equal(srv, req) {
					return nil
				}
			default:
				return errors.New("server did not report the datagram sent")
			}
		}
	}
	return fmt.Errorf("no answer from %s in 3 tries", dst)
}

// isoTerm sends SIGTERM to the sandboxed process d and checks that it ends
// and that pasta (the supervisor) exits with status 0; a spawned command
// still running then is killed.
func isoTerm(t *testing.T, p *nstest.Pasta, d int) {
	t.Helper()
	cmdPID := p.TargetPID
	spawned := len(isoChildren(d)) > 0
	if err := syscall.Kill(d, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := p.Proc.Wait(10 * time.Second)
	if err != nil {
		t.Fatalf("pasta after SIGTERM to its sandboxed process %d: %v", d, err)
	}
	if code != 0 {
		t.Errorf("pasta's exit status after SIGTERM to %d: %d, want 0\n%s", d, code, p.Proc.Output())
	}
	if !nstest.Poll(5*time.Second, func() bool { return syscall.Kill(d, 0) == syscall.ESRCH }) {
		t.Errorf("sandboxed process %d still there after pasta exited", d)
	}
	if spawned && isoCommIsNot(cmdPID, "") {
		// As with the C original (Debian's pasta behaves the same): the
		// command, released, outlives pasta. It is ours to end, and
		// nstest's cleanup only ends descendants of a running pasta.
		t.Logf("spawned command %d outlives pasta (as the C original's does): SIGKILL", cmdPID)
		syscall.Kill(cmdPID, syscall.SIGKILL)
	}
}

// TestIsolationPasta starts pasta in each of the six ways and checks,
// once its seccomp filter is in: the outside view of every stage, every
// thread's capabilities, new flows of each kind, and that SIGTERM to the
// sandboxed process ends pasta with status 0.
func TestIsolationPasta(t *testing.T) {
	bin := isoBinary(t)
	for _, m := range isoModes {
		t.Run(m.name, func(t *testing.T) {
			uid, gid := isoIDs(t, m)
			h, p, d := isoStart(t, bin, m, nil)
			t.Logf("supervisor %d, sandboxed process %d, namespace process %d", p.PID, d, p.TargetPID)
			isoCheckOutside(t, h, p.PID, d, uid, gid)
			isoCheckThreads(t, d)
			isoCheckTraffic(t, h, p)
			// Threads started after seccomp inherit what their creator
			// had: look again after the traffic.
			isoCheckThreads(t, d)
			isoTerm(t, p, d)
		})
	}
}

// TestIsolationPastaExitStatus checks that pasta exits with its command's
// status, and 128 + the signal that killed the command.
func TestIsolationPastaExitStatus(t *testing.T) {
	bin := isoBinary(t)
	for _, m := range []isoMode{{name: "root", spawn: true}, {name: "unprivileged", spawn: true, unprivileged: true}} {
		t.Run(m.name+"/exit-7", func(t *testing.T) {
			h := nstest.NewHost(t)
			opts := nstest.PastaOpts{Binary: bin, Unprivileged: m.unprivileged,
				Args:    []string{"-t", "none", "-u", "none", "-T", "none", "-U", "none"},
				Command: []string{"sh", "-c", "sleep 1; exit 7"},
				Ready:   func(*nstest.Pasta) error { return nil }}
			p := h.StartPasta(t, opts)
			code, err := p.Proc.Wait(20 * time.Second)
			if err != nil || code != 7 {
				t.Errorf("pasta -- sh -c 'exit 7': status %d (%v), want 7\n%s", code, err, p.Proc.Output())
			}
		})
		t.Run(m.name+"/killed", func(t *testing.T) {
			_, p, d := isoStart(t, bin, m, nil)
			// The command is the first process of its PID namespace:
			// only SIGKILL from outside ends it.
			if err := syscall.Kill(p.TargetPID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			code, err := p.Proc.Wait(10 * time.Second)
			if err != nil || code != 128+int(syscall.SIGKILL) {
				t.Errorf("command killed: pasta's status %d (%v), want %d\n%s", code, err, 128+int(syscall.SIGKILL), p.Proc.Output())
			}
			if !nstest.Poll(5*time.Second, func() bool { return syscall.Kill(d, 0) == syscall.ESRCH }) {
				t.Errorf("sandboxed process %d still there", d)
			}
		})
	}
}

// TestIsolationPastaBackground starts pasta attached to a namespace in the
// background (no -f): the supervisor exits 0 once the sandboxed process is
// ready, and that one is the first process of a PID namespace of its own,
// with the same outside view otherwise.
func TestIsolationPastaBackground(t *testing.T) {
	bin := isoBinary(t)
	h := nstest.NewHost(t)
	target := h.Start(t, "unshare", "--user", "--map-root-user", "--net", "--", "sleep", "60")
	nstest.WaitFor(t, 10*time.Second, func() bool {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", target.PID()))
		m, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
		return err == nil && l != m && isoCommIs(target.PID(), "sleep")
	})
	pidFile := filepath.Join(t.TempDir(), "pasta.pid")
	sup := h.Start(t, bin, "--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
		"--runas", "0", "-P", pidFile, strconv.Itoa(target.PID()))
	code, err := sup.Wait(20 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("pasta in the background: supervisor status %d (%v), want 0\n%s", code, err, sup.Output())
	}
	b, err := os.ReadFile(pidFile)
	d, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || d <= 0 {
		t.Fatalf("PID file: %q %v", b, err)
	}
	t.Cleanup(func() {
		if isoCommIsNot(d, "") {
			syscall.Kill(d, syscall.SIGKILL)
		}
	})
	nstest.WaitForErr(t, 10*time.Second, func() error {
		if s, _ := isoStatus(d, "Seccomp"); s != "2" {
			return fmt.Errorf("daemon %d: Seccomp %q", d, s)
		}
		return nil
	})
	nspid, _ := isoStatus(d, "NSpid")
	if f := strings.Fields(nspid); len(f) != 2 || f[1] != "1" {
		t.Errorf("daemon %d is not the first process of its own PID namespace: NSpid %q", d, nspid)
	}
	if isoSameNS(t, fmt.Sprintf("/proc/%d/ns/pid", d), "/proc/self/ns/pid") {
		t.Errorf("daemon %d is in our PID namespace", d)
	}
	isoCheckThreads(t, d)
	if err := syscall.Kill(d, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !nstest.Poll(10*time.Second, func() bool { return !isoCommIsNot(d, "") }) {
		t.Errorf("daemon %d still running 10 s after SIGTERM", d)
	}
}

// isoCommIs reports whether pid runs comm.
func isoCommIs(pid int, comm string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(b)) == comm
}

// isoCommIsNot reports whether pid exists, is not a zombie and does not
// run comm ("" for any command).
func isoCommIsNot(pid int, comm string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || strings.Contains(string(b), ") Z ") || strings.Contains(string(b), ") X ") {
		return false
	}
	return comm == "" || !isoCommIs(pid, comm)
}

// isoDmesgSeccomp returns the kernel's seccomp audit lines (type=1326)
// logged since the kernel log had n lines, and the current line count.
func isoDmesgSeccomp(n int) ([]string, int) {
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		return nil, 0
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	var hits []string
	if n <= len(lines) {
		for _, l := range lines[n:] {
			if strings.Contains(l, "type=1326") || strings.Contains(l, "seccomp") {
				hits = append(hits, l)
			}
		}
	}
	return hits, len(lines)
}

// iperfResult is the part of iperf3's JSON output used here.
type iperfResult struct {
	End struct {
		SumSent     struct{ Bytes float64 } `json:"sum_sent"`
		SumReceived struct{ Bytes float64 } `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// isoIperf runs iperf3 for 2 s from pasta's namespace to a one-off server
// on the host's 127.0.0.1 through the gateway, reversed if reverse, and
// returns the bytes received.
func isoIperf(t *testing.T, h *nstest.Host, p *nstest.Pasta, reverse bool) float64 {
	t.Helper()
	port := strconv.Itoa(h.FreePort(t, "tcp"))
	h.Start(t, "iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", port)
	args := []string{"-c", nstest.HostGW4.String(), "-p", port, "-t", "2", "-J", "--connect-timeout", "3000"}
	if reverse {
		args = append(args, "-R")
	}
	var res iperfResult
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err = p.NSCmd(ctx, "iperf3", args...).Output()
		cancel()
		res = iperfResult{}
		json.Unmarshal(out, &res)
		// The server may not listen yet: retry refusals only.
		if strings.Contains(res.Error, "refused") {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		break
	}
	if err != nil || res.Error != "" || res.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 %v: %v %q\n%.2000s", args, err, res.Error, out)
	}
	return res.End.SumReceived.Bytes
}

// TestIsolationPastaWorkload runs a real workload through pasta under its
// seccomp filter, attached as root staying root and spawned as the
// unprivileged user: iperf3 for 2 s each way, 200 short TCP connections
// (1 KiB each way, bytes checked), 50 UDP flows, then checks that pasta
// was not killed (by SIGSYS: status 159, or in the kernel log) and still
// ends cleanly on SIGTERM.
func TestIsolationPastaWorkload(t *testing.T) {
	bin := isoBinary(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed")
	}
	for _, m := range []isoMode{isoModes[1], isoModes[0], isoModes[5]} {
		t.Run(m.name, func(t *testing.T) {
			_, logStart := isoDmesgSeccomp(1 << 30)
			h, p, d := isoStart(t, bin, m, nil)
			defer func() {
				if hits, _ := isoDmesgSeccomp(logStart); len(hits) > 0 {
					t.Errorf("kernel log: seccomp events during the test:\n%s", strings.Join(hits, "\n"))
				}
			}()
			up := isoIperf(t, h, p, false)
			down := isoIperf(t, h, p, true)
			t.Logf("iperf3 2 s: %.1f Gbit/s namespace to host, %.1f Gbit/s host to namespace", up*8/2e9, down*8/2e9)

			ln := h.Listen(t, "tcp", "127.0.0.1:0")
			got := make(chan []byte, 1)
			go isoTCPServer(ln, got, isoReverse)
			dst := net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
			deadline := time.Now().Add(60 * time.Second)
			for i := 0; i < 200 && time.Now().Before(deadline); i++ {
				req := isoRandom(t, 1024)
				back, err := isoTCPRoundTrip(p, dst, req, len(req))
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				if srv := <-got; !bytes.Equal(srv, req) || !bytes.Equal(back, isoReverse(req)) {
					t.Fatalf("connection %d: bytes differ (server %d, client %d)", i, len(srv), len(back))
				}
			}

			var uc net.PacketConn
			if err := h.Do(func() error {
				var err error
				uc, err = net.ListenPacket("udp", "127.0.0.1:0")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			ugot := make(chan []byte, 4)
			var mu sync.Mutex
			go func() {
				b := make([]byte, 2048)
				for {
					n, from, err := uc.ReadFrom(b)
					if err != nil {
						return
					}
					msg := bytes.Clone(b[:n])
					mu.Lock()
					select {
					case ugot <- msg:
					default:
					}
					mu.Unlock()
					uc.WriteTo(isoReverse(msg), from)
				}
			}()
			udst := net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(uc.LocalAddr().(*net.UDPAddr).Port))
			for i := 0; i < 50; i++ {
				if err := isoUDPRoundTrip(p, udst, isoRandom(t, 512), ugot); err != nil {
					t.Fatalf("UDP flow %d: %v", i, err)
				}
			}

			if p.Proc.Exited() {
				code, _ := p.Proc.Wait(0)
				t.Fatalf("pasta exited during the workload with status %d (159: SIGSYS, seccomp)\n%s", code, p.Proc.Output())
			}
			isoCheckThreads(t, d)
			isoTerm(t, p, d)
		})
	}
}

// TestIsolationPastaForwarding exercises the forwarded-port paths under
// seccomp (accept4 on listeners opened before the sandbox, sockets made
// in the namespace through the worker, spliced TCP, UDP sockets per
// flow): -t/-u from the host's loopback into the namespace and -T/-U the
// other way, 50 TCP connections and 20 UDP flows each way with the bytes
// checked, then pasta must still run and end on SIGTERM.
func TestIsolationPastaForwarding(t *testing.T) {
	bin := isoBinary(t)
	for _, m := range []isoMode{isoModes[1], isoModes[3], isoModes[5]} {
		t.Run(m.name, func(t *testing.T) {
			h := nstest.NewHost(t)
			in := h.FreePort(t, "tcp")
			out := h.FreePort(t, "tcp")
			for out == in {
				out = h.FreePort(t, "tcp")
			}
			_, logStart := isoDmesgSeccomp(1 << 30)
			opts := nstest.PastaOpts{Binary: bin, Unprivileged: m.unprivileged, Args: []string{"--config-net",
				"-t", strconv.Itoa(in), "-u", strconv.Itoa(in), "-T", strconv.Itoa(out), "-U", strconv.Itoa(out)}}
			if m.runas0 {
				opts.Args = append(opts.Args, "--runas", "0")
			}
			if m.spawn {
				opts.Command = []string{"sleep", "60"}
			}
			p := h.StartPasta(t, opts)
			d := isoDaemon(t, p.PID)
			nstest.WaitForErr(t, 10*time.Second, func() error {
				if s, _ := isoStatus(d, "Seccomp"); s != "2" {
					return fmt.Errorf("sandboxed process %d: Seccomp %q", d, s)
				}
				return nil
			})
			defer func() {
				if hits, _ := isoDmesgSeccomp(logStart); len(hits) > 0 {
					t.Errorf("kernel log: seccomp events during the test:\n%s", strings.Join(hits, "\n"))
				}
			}()
			// Servers: in the namespace on the -t/-u port, on the
			// host's loopback on the -T/-U port.
			var nsLn, hostLn net.Listener
			var nsUDP, hostUDP net.PacketConn
			if err := p.Do(func() error {
				var err error
				if nsLn, err = net.Listen("tcp", ":"+strconv.Itoa(in)); err != nil {
					return err
				}
				nsUDP, err = net.ListenPacket("udp", ":"+strconv.Itoa(in))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := h.Do(func() error {
				var err error
				if hostLn, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(out)); err != nil {
					return err
				}
				hostUDP, err = net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(out))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []io.Closer{nsLn, hostLn, nsUDP, hostUDP} {
				defer c.Close()
			}
			for _, dir := range []struct {
				name   string
				ln     net.Listener
				uc     net.PacketConn
				dialIn func(fn func() error) error
				port   int
			}{
				{"host to namespace (-t/-u)", nsLn, nsUDP, h.Do, in},
				{"namespace to host (-T/-U)", hostLn, hostUDP, p.Do, out},
			} {
				got := make(chan []byte, 1)
				go isoTCPServer(dir.ln, got, isoReverse)
				ugot := make(chan []byte, 4)
				go func(uc net.PacketConn) {
					b := make([]byte, 2048)
					for {
						n, from, err := uc.ReadFrom(b)
						if err != nil {
							return
						}
						msg := bytes.Clone(b[:n])
						select {
						case ugot <- msg:
						default:
						}
						uc.WriteTo(isoReverse(msg), from)
					}
				}(dir.uc)
				dst := net.JoinHostPort("127.0.0.1", strconv.Itoa(dir.port))
				dial := func(network string) (net.Conn, error) {
					var c net.Conn
					err := dir.dialIn(func() error {
						var err error
						c, err = net.DialTimeout(network, dst, 5*time.Second)
						return err
					})
					return c, err
				}
				for i := 0; i < 50; i++ {
					req := isoRandom(t, 4096)
					c, err := dial("tcp")
					for try := 0; i == 0 && try < 50 && errors.Is(err, syscall.ECONNREFUSED); try++ {
						// The namespace's -T listener may trail the
						// tap the harness waited for.
						time.Sleep(100 * time.Millisecond)
						c, err = dial("tcp")
					}
					if err != nil {
						t.Fatalf("%s: TCP connection %d: %v", dir.name, i, err)
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					l := len(req)
					c.Write(append([]byte{byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)}, req...))
					back := make([]byte, l)
					_, err = io.ReadFull(c, back)
					c.Close()
					if err != nil {
						t.Fatalf("%s: TCP connection %d: %v", dir.name, i, err)
					}
					if srv := <-got; !bytes.Equal(srv, req) || !bytes.Equal(back, isoReverse(req)) {
						t.Fatalf("%s: TCP connection %d: bytes differ", dir.name, i)
					}
				}
				for i := 0; i < 20; i++ {
					c, err := dial("udp")
					if err != nil {
						t.Fatalf("%s: UDP flow %d: %v", dir.name, i, err)
					}
					req := isoRandom(t, 700)
					var back []byte
					for try := 0; try < 3 && back == nil; try++ {
						c.Write(req)
						c.SetReadDeadline(time.Now().Add(2 * time.Second))
						b := make([]byte, 2048)
						if n, err := c.Read(b); err == nil {
							back = b[:n]
						}
					}
					c.Close()
					if !bytes.Equal(back, isoReverse(req)) {
						t.Fatalf("%s: UDP flow %d: answer %d bytes, not the reversed %d", dir.name, i, len(back), len(req))
					}
					if srv := <-ugot; !bytes.Equal(srv, req) {
						t.Fatalf("%s: UDP flow %d: the server received other bytes", dir.name, i)
					}
				}
				t.Logf("%s: 50 TCP connections, 20 UDP flows", dir.name)
			}
			if p.Proc.Exited() {
				code, _ := p.Proc.Wait(0)
				t.Fatalf("pasta exited with status %d (159: SIGSYS, seccomp)\n%s", code, p.Proc.Output())
			}
			isoCheckThreads(t, d)
			isoTerm(t, p, d)
		})
	}
}

// isoCountLine matches the summary --print-seccomp ends with.
var isoCountLine = regexp.MustCompile(`(\w+): (\d+) syscalls allowed: (\d+) needed by the Go runtime, (\d+) by gopasst alone \(the C original: (\d+)\)`)

// TestIsolationSeccompCounts prints the allow-list counts of both modes
// (--print-seccomp) next to the C original's, and checks that every mode
// gives them.
func TestIsolationSeccompCounts(t *testing.T) {
	bin := isoBinary(t)
	for _, name := range []string{"passt", "pasta"} {
		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		out, err := exec.CommandContext(ctx, filepath.Join(filepath.Dir(bin), name), "--print-seccomp").Output()
		cancel()
		if err != nil {
			t.Fatalf("%s --print-seccomp: %v", name, err)
		}
		m := isoCountLine.FindStringSubmatch(string(out))
		if m == nil || m[1] != name {
			t.Fatalf("%s --print-seccomp: no count line in:\n%s", name, out)
		}
		total, _ := strconv.Atoi(m[2])
		rt, _ := strconv.Atoi(m[3])
		ours, _ := strconv.Atoi(m[4])
		if rt+ours != total {
			t.Errorf("%s: %d runtime + %d ours != %d", name, rt, ours, total)
		}
		t.Logf("%s: %d syscalls (%d for the Go runtime, %d for gopasst alone); the C original: %s", name, total, rt, ours, m[5])
	}
}
