// Package stages tests the four isolation stages seen from outside, on the
// stagetest harness (test/stagetest, built here): /proc of the running
// daemon, traffic after seccomp, exit paths. These tests need root (they
// also start unprivileged variants as nstest.TestUser, which test/setup
// creates) and skip otherwise. They live under test/ because the harness
// links pasta's namespace and the datapath's allow-list, which isolation
// itself must not import.
package stages

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// harness builds stagetest (with extra build tags) once per tag set.
var harness = map[string]string{}

// TestMain removes the harness builds once every test is done.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, bin := range harness {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// buildHarness returns the path of the stagetest binary built with tags,
// in a directory every user can read and execute.
func buildHarness(t *testing.T, tags string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces, mounts, and runs variants as gopasst-test")
	}
	if p, ok := harness[tags]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "gopasst-isolation-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	name := "stagetest"
	if tags != "" {
		name += "-" + tags
	}
	bin := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-tags", tags, "-o", bin, "gopasst/test/stagetest").CombinedOutput()
	if err != nil {
		t.Fatalf("building stagetest: %v\n%s", err, out)
	}
	harness[tags] = bin
	return bin
}

// testUser returns the credentials of nstest.TestUser, skipping without it,
// with /dev/net/tun usable by it for t's duration.
func testUser(t *testing.T) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(nstest.TestUser)
	if err != nil {
		t.Skipf("no user %s (run test/setup)", nstest.TestUser)
	}
	nstest.WidenTun(t) // the harness opens /dev/net/tun as this user
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// freePort returns a TCP port free on 127.0.0.1 right now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// daemon is one started harness: the supervisor and the sandboxed process.
type daemon struct {
	t      *testing.T
	sup    *exec.Cmd
	pid    int // the sandboxed process
	port   int
	status chan int // supervisor's exit status
}

// start runs the harness with args (the echo port and a PID file are
// added), as cred if not nil, and waits until the sandboxed process is
// ready (its PID written). Everything is stopped at the end of the test.
func start(t *testing.T, bin string, cred *syscall.Credential, args ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	os.Chmod(filepath.Dir(dir), 0o755)
	pidFile := filepath.Join(dir, "pid")
	d := &daemon{t: t, port: freePort(t), status: make(chan int, 1)}
	full := append([]string{"-port", strconv.Itoa(d.port), "-pid", pidFile}, args...)
	// Options first, then a command after "--" if any.
	for i, a := range args {
		if a == "--" {
			full = append(append([]string{"-port", strconv.Itoa(d.port), "-pid", pidFile}, args[:i]...), args[i:]...)
		}
	}
	d.sup = exec.Command(bin, full...)
	d.sup.Stderr = os.Stderr
	d.sup.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := d.sup.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.sup.Wait()
		d.status <- d.sup.ProcessState.ExitCode()
		if ws, ok := d.sup.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			d.status <- 128 + int(ws.Signal())
		}
	}()
	t.Cleanup(func() {
		if d.pid > 0 {
			syscall.Kill(d.pid, syscall.SIGKILL)
		}
		d.sup.Process.Kill()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			d.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			break
		}
		select {
		case s := <-d.status:
			if !strings.Contains(strings.Join(args, " "), "-f") && s == 0 {
				d.status <- s // daemonised: ready
				continue
			}
			t.Fatalf("supervisor exited with %d before ready", s)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if d.pid == 0 {
		t.Fatal("sandboxed process not ready within 10 s")
	}
	// Ready is said at the end of stage 3: the service answers once the
	// loop runs, after stage 4.
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.port))
		if err == nil {
			c.Close()
			if d.ask("hello") == "error" {
				return d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("echo service not answering within 10 s")
	return d
}

// ask sends one request to the echo service and returns the answer.
func (d *daemon) ask(req string) string {
	d.t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.port), 3*time.Second)
	if err != nil {
		d.t.Fatalf("%s: %v", req, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, req)
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// status reads a field of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	v, err := readLine(fmt.Sprintf("/proc/%d/status", pid), field+":")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readLine returns the rest of the first line of path starting with prefix.
func readLine(path, prefix string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no %q", path, prefix)
}

// ns returns the namespace link of pid ("self" for ours).
func ns(t *testing.T, pid, kind string) string {
	l, err := os.Readlink("/proc/" + pid + "/ns/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkIsolated asserts what every stage leaves visible from outside.
func checkIsolated(t *testing.T, d *daemon, capsWant string, uid, gid int) {
	t.Helper()
	pid := d.pid
	for field, want := range map[string]string{
		"Seccomp": "2", "NoNewPrivs": "1", "CapEff": capsWant, "CapPrm": capsWant,
		"CapBnd": capsWant, "CapAmb": "0000000000000000", "CapInh": "0000000000000000",
	} {
		if got := procStatus(t, pid, field); got != want {
			t.Errorf("%s: %s, want %s", field, got, want)
		}
	}
	if got := strings.Fields(procStatus(t, pid, "Uid")); got[0] != strconv.Itoa(uid) || got[1] != strconv.Itoa(uid) {
		t.Errorf("Uid: %v, want %d", got, uid)
	}
	if got := strings.Fields(procStatus(t, pid, "Gid")); got[0] != strconv.Itoa(gid) {
		t.Errorf("Gid: %v, want %d", got, gid)
	}
	if g := procStatus(t, pid, "Groups"); g != "" {
		t.Errorf("supplementary groups: %q", g)
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/", pid))
	if err != nil || len(entries) != 0 {
		t.Errorf("root not empty: %v %v", entries, err)
	}
	p := strconv.Itoa(pid)
	for _, kind := range []string{"ipc", "uts", "mnt"} {
		if ns(t, p, kind) == ns(t, "self", kind) {
			t.Errorf("%s namespace is the parent's", kind)
		}
	}
	if ns(t, p, "net") != ns(t, "self", "net") {
		t.Errorf("net namespace is not the host's")
	}
}

// checkTraffic asserts that new TCP and UDP flows work after seccomp, and
// that the runtime can start threads and collect garbage there.
func checkTraffic(t *testing.T, d *daemon) {
	t.Helper()
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	go func() {
		b := make([]byte, 64)
		for {
			n, a, err := u.ReadFrom(b)
			if err != nil {
				return
			}
			u.WriteTo(append([]byte("pong-"), b[:n]...), a)
		}
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b := make([]byte, 64)
			n, _ := c.Read(b)
			c.Write(append([]byte("pong-"), b[:n]...))
			c.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		if got := d.ask(fmt.Sprintf("udp %d", u.LocalAddr().(*net.UDPAddr).Port)); got != "udp pong-ping" {
			t.Errorf("new UDP flow after seccomp: %q", got)
		}
		if got := d.ask(fmt.Sprintf("tcp %d", l.Addr().(*net.TCPAddr).Port)); got != "tcp pong-ping" {
			t.Errorf("new TCP flow after seccomp: %q", got)
		}
		if got := d.ask("threads"); !strings.HasPrefix(got, "threads ok") {
			t.Errorf("threads after seccomp: %q", got)
		}
	}
}

// waitGone waits until pid no longer exists.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			return
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("process %d still there", pid)
}

// exitStatus waits for the supervisor's exit status.
func (d *daemon) exitStatus() int {
	select {
	case s := <-d.status:
		return s
	case <-time.After(10 * time.Second):
		d.t.Fatal("supervisor did not exit")
	}
	return -1
}

const (
	noCaps       = "0000000000000000"
	bindService  = "0000000000000400" // CAP_NET_BIND_SERVICE
	nobody       = 65534
	sigsysStatus = 128 + int(syscall.SIGSYS)
)

func TestPasstDaemonAsRoot(t *testing.T) {
	bin := buildHarness(t, "")
	d := start(t, bin, nil, "-mode", "passt")
	if s := d.exitStatus(); s != 0 {
		t.Fatalf("supervisor: %d, want 0 once daemonised", s)
	}
	checkIsolated(t, d, noCaps, nobody, nobody)
	p := strconv.Itoa(d.pid)
	if ns(t, p, "pid") == ns(t, "self", "pid") {
		t.Error("daemon is in our PID namespace")
	}
	if v := procStatus(t, d.pid, "NSpid"); !strings.HasSuffix(v, "\t1") && !strings.HasSuffix(v, " 1") {
		t.Errorf("daemon is not PID 1 of its namespace: NSpid %q", v)
	}
	checkNotDumpable(t, d.pid)
	checkTraffic(t, d)
	syscall.Kill(d.pid, syscall.SIGTERM)
	waitGone(t, d.pid)
}

// checkNotDumpable: nobody, without capabilities in the daemon's user
// namespace (root created it), could read a dumpable nobody process's
// environ; not this one's.
func checkNotDumpable(t *testing.T, pid int) {
	t.Helper()
	cmd := exec.Command("cat", fmt.Sprintf("/proc/%d/environ", pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("environ readable by nobody: dumpable (%d bytes)", len(out))
	}
}

func TestPasstForegroundRunAsRoot(t *testing.T) {
	bin := buildHarness(t, "")
	d := start(t, bin, nil, "-mode", "passt", "-f", "-runas", "0:0")
	checkIsolated(t, d, noCaps, 0, 0)
	checkTraffic(t, d)
	// SIGTERM to the supervisor is relayed; both exit cleanly.
	d.sup.Process.Signal(syscall.SIGTERM)
	if s := d.exitStatus(); s != 0 {
		t.Errorf("exit status after SIGTERM: %d, want 0", s)
	}
	waitGone(t, d.pid)
}

func TestPasstUnprivileged(t *testing.T) {
	bin := buildHarness(t, "")
	cred := testUser(t)
	d := start(t, bin, cred, "-mode", "passt", "-f")
	checkIsolated(t, d, noCaps, int(cred.Uid), int(cred.Gid))
	checkTraffic(t, d)
	// SIGTERM to the daemon itself, first process of its PID namespace.
	syscall.Kill(d.pid, syscall.SIGTERM)
	if s := d.exitStatus(); s != 0 {
		t.Errorf("exit status after SIGTERM to the daemon: %d, want 0", s)
	}
}

func TestPastaSpawn(t *testing.T) {
	bin := buildHarness(t, "")
	for _, tc := range []struct {
		name     string
		cred     *syscall.Credential
		args     []string
		uid, gid int
	}{
		{"root", nil, nil, nobody, nobody},
		{"root --runas 0", nil, []string{"-runas", "0"}, 0, 0},
		{"gopasst-test", testUser(t), nil, 995, 995},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cred != nil {
				tc.uid, tc.gid = int(tc.cred.Uid), int(tc.cred.Gid)
			}
			args := append(append([]string{"-mode", "pasta", "-H", "isotest"}, tc.args...),
				"--", "sh", "-c", `[ "$(hostname)" = isotest ] && [ "$$" = 1 ] && [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/net/ipv4/ping_group_range)" = "0	0" ] && ip link show tap0 >/dev/null || exit 3; sleep 30`)
			d := start(t, bin, tc.cred, args...)
			checkIsolated(t, d, bindService, tc.uid, tc.gid)
			checkTraffic(t, d)
			if got := d.ask("ns"); !strings.HasPrefix(got, "ns ok ") {
				t.Errorf("socket in the namespace after seccomp: %q", got)
			}
			syscall.Kill(d.pid, syscall.SIGTERM)
			if s := d.exitStatus(); s != 0 {
				t.Errorf("exit status after SIGTERM: %d, want 0", s)
			}
		})
	}
}

// pasta exits with its command's status, 128 + signal if killed.
func TestPastaExitStatus(t *testing.T) {
	bin := buildHarness(t, "")
	for cmd, want := range map[string]int{"exit 7": 7, "true": 0} {
		d := start(t, bin, testUser(t), "-mode", "pasta", "--", "sh", "-c", "sleep 0.5; "+cmd)
		if s := d.exitStatus(); s != want {
			t.Errorf("%q: exit status %d, want %d", cmd, s, want)
		}
	}
	// The command is the first process of its PID namespace: only a
	// SIGKILL from outside ends it.
	d := start(t, bin, testUser(t), "-mode", "pasta", "--", "sleep", "30")
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", d.pid, d.pid))
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || child == 0 {
		t.Fatalf("no command process under %d: %q %v", d.pid, b, err)
	}
	syscall.Kill(child, syscall.SIGKILL)
	if s := d.exitStatus(); s != 128+9 {
		t.Errorf("command killed: exit status %d, want %d", s, 128+9)
	}
}

// A syscall outside the list kills the process (test build only).
func TestForbiddenSyscallKills(t *testing.T) {
	bin := buildHarness(t, "seccomptest")
	d := start(t, bin, testUser(t), "-mode", "passt", "-f")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.port))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(c, "forbidden")
	c.Close()
	if s := d.exitStatus(); s != sigsysStatus {
		t.Errorf("exit status %d, want %d (SIGSYS)", s, sigsysStatus)
	}
	// The normal build has no way to make that call.
	d = start(t, buildHarness(t, ""), nil, "-mode", "passt", "-f")
	if got := d.ask("forbidden"); got != "unsupported" {
		t.Errorf("normal build answers %q to forbidden", got)
	}
}

// pasta attached to a named namespace creates its tap there, stays in the
// host's network namespace, and exits when the namespace is deleted.
func TestPastaAttachNetns(t *testing.T) {
	bin := buildHarness(t, "")
	name := fmt.Sprintf("gopasst-iso-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	for _, runas := range []string{"", "0"} {
		args := []string{"-mode", "pasta", "-netns", name}
		uid := nobody
		if runas != "" {
			args, uid = append(args, "-runas", runas), 0
		}
		d := start(t, bin, nil, args...)
		checkIsolated(t, d, bindService, uid, uid)
		if out, err := exec.Command("ip", "-n", name, "link", "show", "tap0").CombinedOutput(); err != nil {
			t.Errorf("tap0 in %s: %v %s", name, err, out)
		}
		checkTraffic(t, d)
		if got := d.ask("ns"); !strings.HasPrefix(got, "ns ok ") {
			t.Errorf("socket in the namespace after seccomp: %q", got)
		}
		if runas == "" {
			syscall.Kill(d.pid, syscall.SIGTERM)
			waitGone(t, d.pid)
			exec.Command("ip", "-n", name, "link", "del", "tap0").Run()
			continue
		}
		// Deleting the namespace (its name) ends pasta: inotify.
		exec.Command("ip", "netns", "del", name).Run()
		waitGone(t, d.pid)
	}
}

// pasta PID, unprivileged, joins the process's user namespace through the
// nsenter constructor, and exits when the process does (pidfd).
func TestPastaAttachPIDUnprivileged(t *testing.T) {
	bin := buildHarness(t, "")
	cred := testUser(t)
	target := exec.Command("unshare", "--user", "--map-root-user", "--net", "sleep", "30")
	target.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	// unshare execs sleep once its namespaces exist.
	for i := 0; i < 200; i++ {
		if ns(t, strconv.Itoa(target.Process.Pid), "net") != ns(t, "self", "net") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := start(t, bin, cred, "-mode", "pasta", "-target", strconv.Itoa(target.Process.Pid))
	p := strconv.Itoa(d.pid)
	if ns(t, p, "user") != ns(t, strconv.Itoa(target.Process.Pid), "user") {
		t.Errorf("not in the target's user namespace")
	}
	checkIsolated(t, d, bindService, int(cred.Uid), int(cred.Gid))
	if got := d.ask("ns"); !strings.HasPrefix(got, "ns ok ") {
		t.Errorf("socket in the namespace after seccomp: %q", got)
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(target.Process.Pid), "-n", "ip", "link", "show", "tap0").CombinedOutput()
	if err != nil {
		t.Errorf("tap0 in the target namespace: %v %s", err, out)
	}
	target.Process.Kill()
	target.Wait()
	waitGone(t, d.pid)
}
