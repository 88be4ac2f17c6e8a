// Package harness runs the benchmark matrix: every configuration (kernel
// references, peers, gopasst) against every test, repeated, inside an outer
// network namespace made for the run, and writes the results.
//
// # Theory of operation
//
// Run is called on the host. It re-executes the current program in a new
// network namespace (clone with CLONE_NEWNET), passing the options in the
// environment; Dispatch, called first thing by the program's main (or a
// test's TestMain), recognises the inner process and runs the matrix
// there. That namespace plays the host: loopback, an uplink veth pair with
// 198.18.0.2/24 and 2001:db8:9a55::2/64, default routes to gateways nothing
// answers, so no packet of the benchmark can leave the machine. When the
// inner process ends, the namespace goes with it; Run then checks that no
// process is left in it and ends any it finds, by PID.
//
// Inside, the host-side rr server listens on 5211 for the whole run, and
// a one-off iperf3 server is started around each iperf3 test. For each
// repetition, each configuration is set up (a namespace and its translator, or a veth pair, or nothing for loopback), probed with a
// bounded connection, measured with each test, and torn down, so
// repetitions interleave and slow drift of the machine spreads over all
// columns alike. A configuration whose probe fails is left out, with its
// reason in the notes, and not tried again (its family neither: gopasst's
// other MTUs share the verdict).
//
// Every child runs in its own process group with SIGKILL as its parent-
// death signal; every bounded command is killed at its timeout; the
// long-running ones are ended by PID at teardown, on error and on SIGINT
// or SIGTERM.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"gopasst/bench/report"
	"gopasst/bench/rr"
)

// Options select what a run measures and where its results go.
type Options struct {
	Bin        string        // gopasst tree: <Bin>/pasta, <Bin>/test/setup
	Profile    string        // "full" or "quick"
	Only       []string      // configuration tokens (gopasst, veth, debian, slirp4netns, loopback, extra, tap, splice, passt, stream, ceiling...)
	Tests      []string      // test tokens (tcp, udp, rr, tcp_rr, tcp4-out, ipv6, in, out...)
	MTUs       []int         // restrict the MTU columns
	Reps       int           // repetitions (0: the profile's)
	TCPSecs    int           // iperf3 TCP length (0: the profile's)
	RRLen      time.Duration // RR length (0: the profile's)
	Pin        bool          // pin client, server and translator to CPUs
	ExtraPasta []string      // more pasta builds, each a column
	ExtraPasst []string      // more passt builds, each a column of passt's table
	OutDir     string        // results directory
	Command    string        // the command line, for the record
	Setup      bool          // run test/setup when tools are missing
	Neper      string        // directory of neper's tcp_rr, tcp_crr, udp_rr ("": look on PATH)
	// NeperSource is neper's source tarball, built (buildNeper) when
	// Neper is "" and no tcp_rr is on PATH ("": bench/rr then).
	NeperSource string
	AccelArgs   []string // gopasst pasta's options for its accelerated splice path (nil: no such column)
	RRCommand   []string // how to run the rr tool (set by Run)
}

// envInner carries the options to the re-executed inner process.
const envInner = "GOPASST_BENCH_INNER"

// Dispatch must be called first by any program that calls Run (and by the
// TestMain of tests that do): it runs the rr tool when the program was
// started as "PROGRAM rr ...", and the matrix when started by Run in the
// new namespace, and exits in both cases. Otherwise it returns.
func Dispatch() {
	if len(os.Args) > 1 && os.Args[1] == "rr" {
		os.Exit(rr.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	v := os.Getenv(envInner)
	if v == "" {
		return
	}
	os.Unsetenv(envInner)
	var o Options
	if err := json.Unmarshal([]byte(v), &o); err != nil {
		fmt.Fprintf(os.Stderr, "bench: inner options: %v\n", err)
		os.Exit(1)
	}
	os.Exit(inner(o))
}

// Check returns an error saying what is missing for a run, if anything,
// after running test/setup (as root, when o.Setup) to install it.
func Check(o Options) error {
	if os.Geteuid() != 0 {
		return errors.New("the benchmark needs root (namespaces, veth pairs): run it with sudo")
	}
	if _, ok := profiles[o.Profile]; !ok {
		return fmt.Errorf("unknown profile %q (full, quick)", o.Profile)
	}
	missing := func() []string {
		var m []string
		for _, p := range []string{"iperf3", "pasta", "slirp4netns", "unshare", "nsenter", "ip"} {
			if _, ok := lookPath(p); !ok {
				m = append(m, p)
			}
		}
		return m
	}
	m := missing()
	setup := filepath.Join(o.Bin, "test", "setup")
	if len(m) > 0 && o.Setup {
		if _, err := os.Stat(setup); err == nil {
			fmt.Fprintf(os.Stderr, "bench: %s missing: running %s\n", strings.Join(m, ", "), setup)
			if _, _, err := run(context.Background(), 15*time.Minute, []string{setup}); err != nil {
				return fmt.Errorf("%s: %w", setup, err)
			}
			m = missing()
		}
	}
	for _, p := range m {
		if p == "iperf3" || p == "unshare" || p == "nsenter" || p == "ip" {
			return fmt.Errorf("%s not found: run %s as root (installs iperf3, passt, slirp4netns from Debian)", p, setup)
		}
	}
	return nil
}

// Run runs the matrix in a new network namespace made for it, waits for
// it, and checks that nothing is left behind. SIGINT and SIGTERM are
// passed on, so the inner run ends its processes and writes what it has.
func Run(o Options) error {
	if err := Check(o); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	o.RRCommand = []string{exe, "rr"}
	js, err := json.Marshal(o)
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envInner+"="+string(js))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("new network namespace: %w", err)
	}
	nsLink, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	for waiting := true; waiting; {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "bench: %v: ending the run\n", s)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case werr = <-done:
			waiting = false
		}
	}
	if left := leftovers(nsLink); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "bench: processes left in the benchmark namespace, ending them: %v\n", left)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if werr != nil {
		return fmt.Errorf("benchmark run: %w", werr)
	}
	return nil
}

// leftovers returns the PIDs of processes whose network namespace is
// nsLink (the run's namespace): only the run can have started them.
func leftovers(nsLink string) []int {
	if nsLink == "" {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == nsLink {
			pids = append(pids, pid)
		}
	}
	return pids
}

// env is the state of a run inside its namespace.
type env struct {
	opts      Options
	prof      profile
	procs     procs
	log       io.Writer
	rrCmd     []string
	neper     string // the directory of neper's tcp_rr, tcp_crr and udp_rr, "" when absent
	sockDir   string
	timedOut  map[string]string // configuration (with MTU) and row: the time-out seen
	oursPasta string            // the run's copy of gopasst's pasta
	oursPasst string            // and of its passt
	peerBin   string            // test/streampeer, built for the run ("": not needed or not built)
	// vhostPeerBin is test/vhostpeer, built with peerBin ("": not built).
	vhostPeerBin string
	hostRR       *proc
	notes        []string

	cpuClient, cpuServer, cpuTranslator int // -1: not pinned
}

// logf writes a progress line.
func (e *env) logf(format string, a ...any) {
	fmt.Fprintf(e.log, time.Now().Format("15:04:05 ")+format+"\n", a...)
}

// note records a line for the published notes and logs it.
func (e *env) note(s string) {
	for _, n := range e.notes {
		if n == s {
			return
		}
	}
	e.notes = append(e.notes, s)
	e.logf("note: %s", s)
}

// pin prefixes args with taskset for cpu, when pinning is on.
func (e *env) pin(cpu int, args []string) []string {
	if cpu < 0 {
		return args
	}
	return append([]string{"taskset", "-c", strconv.Itoa(cpu)}, args...)
}

// inner runs the matrix inside the new namespace and writes the results;
// it returns the exit status.
func inner(o Options) int {
	e := &env{opts: o, prof: profiles[o.Profile], log: os.Stderr, rrCmd: o.RRCommand,
		cpuClient: -1, cpuServer: -1, cpuTranslator: -1, timedOut: map[string]string{}}
	e.procs.log = func(f string, a ...any) {}
	if o.Reps > 0 {
		e.prof.reps = o.Reps
	}
	if o.TCPSecs > 0 {
		e.prof.tcpSecs = o.TCPSecs
	}
	if o.RRLen > 0 {
		e.prof.rrLen = o.RRLen
	}
	if o.Pin && runtime.NumCPU() >= 2 {
		// Two CPUs: the client alone on one, the server and the translator
		// on the other (the translator's work and the receiving server's
		// alternate: each waits for the other's data).
		e.cpuClient, e.cpuServer, e.cpuTranslator = 0, 1, 1
	}
	e.neper = neperDir(o.Neper)
	if e.neper == "" && o.Neper == "" && o.NeperSource != "" {
		// No neper given or on PATH: build the real one, as our users
		// run it, rather than fall back to bench/rr.
		if dir, err := buildNeper(o.NeperSource); err != nil {
			fmt.Fprintf(os.Stderr, "bench: neper not built (%v): bench/rr serves the RR rows\n", err)
		} else {
			e.neper = neperDir(dir)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var interrupted atomic.Bool
	go func() {
		if _, ok := <-sig; ok {
			interrupted.Store(true)
			cancel()
		}
	}()
	defer e.procs.stopAll()
	var err error
	e.sockDir, err = os.MkdirTemp("/tmp", "gopasst-bench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(e.sockDir)
	start := time.Now()
	load0 := loadavg()
	if err := setupOuter(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	if e.neper == "" {
		if e.hostRR, err = e.startServer("host rr", nil, append(append([]string{}, e.rrCmd...), "-P", strconv.Itoa(hostPortRR)), hostPortRR); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
	}
	samples := e.matrix(ctx)
	meta := e.meta(start, load0)
	if interrupted.Load() {
		meta.Notes = append(meta.Notes, "interrupted: partial results")
	}
	if _, err := report.Write(o.OutDir, meta, samples); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	e.logf("results in %s (%s)", o.OutDir, meta.Runtime)
	if interrupted.Load() {
		return 130
	}
	return 0
}

// matrix runs every repetition of every configuration and test, and
// returns the samples.
func (e *env) matrix(ctx context.Context) []report.Sample {
	cfgs := e.configs()
	largest := map[string]int{}
	for _, c := range cfgs {
		largest[c.family] = max(largest[c.family], c.mtu)
	}
	est := 0.0
	for _, c := range cfgs {
		est += 1.5
		for _, t := range e.tests(c, c.mtu == largest[c.family]) {
			switch t.kind {
			case "tcp":
				est += float64(e.prof.tcpSecs) + 0.6
			case "udp":
				est += float64(e.prof.udpSecs) + 0.6
			default:
				est += e.prof.rrLen.Seconds() + 0.2
			}
		}
	}
	e.logf("profile %s: %d configurations, %d repetition(s), about %s if every configuration works",
		e.prof.name, len(cfgs), e.prof.reps, (time.Duration(est*float64(e.prof.reps)) * time.Second).Round(time.Second))
	broken := map[string]string{}
	var samples []report.Sample
	for rep := 1; rep <= e.prof.reps; rep++ {
		for _, c := range cfgs {
			if ctx.Err() != nil {
				return samples
			}
			if _, ok := broken[c.family]; ok {
				continue
			}
			e.logf("rep %d/%d: %s", rep, e.prof.reps, c.name())
			in, err := e.setup(ctx, c)
			if err != nil {
				var nw errNotWorking
				if errors.As(err, &nw) && rep == 1 {
					broken[c.family] = nw.reason
					what := "not working"
					if c.role == report.RoleOurs {
						what = "not working yet"
					}
					e.note(fmt.Sprintf("%s: %s: %s; left out", c.name(), what, nw.reason))
				} else {
					e.note(fmt.Sprintf("%s, repetition %d: set-up failed: %v", c.name(), rep, err))
				}
				continue
			}
			if in.translator != nil && e.rowWanted("rss-idle") {
				// Before any test: what the translator holds once set up
				// and probed, resident now (VmRSS), its whole tree.
				if kb, err := treeRSSKiB(in.translator.pid()); err == nil {
					samples = append(samples, sample(in, rep, "rss-idle", float64(kb)/1024, nil))
				}
			}
			if c.kind == "pasta" && c.path == "tap" && c.mtu == largest[c.family] && e.rowWanted("startup") {
				samples = append(samples, e.startup(ctx, rep, in))
			}
			for _, t := range e.tests(c, c.mtu == largest[c.family]) {
				if ctx.Err() != nil {
					break
				}
				samples = append(samples, e.runTest(ctx, rep, in, t)...)
			}
			e.teardown(in)
			if in.peakRSS > 0 {
				samples = append(samples, sample(in, rep, "rss", float64(in.peakRSS)/1024, nil))
			}
		}
	}
	return samples
}

// buildNeper builds neper's tcp_rr, tcp_crr and udp_rr from the source
// tarball src (neper-COMMIT.tar.gz, see /work/shared/tools/README.md)
// into a cache directory named after it (under $XDG_CACHE_HOME or
// ~/.cache, gopasst/neper-COMMIT), once: a later run finds the programs
// there. gcc and make only (2 s); neper warns about a missing libnuma and
// builds without it. Returns the directory of the programs.
func buildNeper(src string) (string, error) {
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("neper's source: %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	name := strings.TrimSuffix(filepath.Base(src), ".tar.gz")
	dir := filepath.Join(cache, "gopasst", name)
	if neperDir(filepath.Join(dir, "neper")) != "" {
		return filepath.Join(dir, "neper"), nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range [][]string{{"tar", "xzf", src, "-C", dir}, {"make", "-s", "-C", filepath.Join(dir, "neper"), "tcp_rr", "tcp_crr", "udp_rr"}} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, lastLine(string(out)))
		}
	}
	return filepath.Join(dir, "neper"), nil
}

// neperDir returns the directory holding neper's three RR programs: dir
// when given (-neper), else the directory of tcp_rr on PATH; "" when one
// of tcp_rr, tcp_crr and udp_rr is missing there (bench/rr serves then).
func neperDir(dir string) string {
	if dir == "" {
		p, ok := lookPath("tcp_rr")
		if !ok {
			return ""
		}
		dir = filepath.Dir(p)
	}
	for _, b := range []string{"tcp_rr", "tcp_crr", "udp_rr"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return ""
		}
	}
	return dir
}

// loadavg returns the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// firstLine returns the first line of the output of args, or "".
func firstLine(args ...string) string {
	out, stderr, _ := run(context.Background(), 5*time.Second, args)
	if strings.TrimSpace(out) == "" {
		out = stderr
	}
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Failed to send") {
			return l
		}
	}
	return ""
}

// meta describes the run for the published results.
func (e *env) meta(start time.Time, load0 string) report.Meta {
	m := report.Meta{
		Date:    start.UTC().Format("2006-01-02 15:04 UTC"),
		Commit:  Commit(e.opts.Bin),
		Command: e.opts.Command,
		Profile: e.prof.name,
		Reps:    e.prof.reps,
		Tools:   map[string]string{},
		Notes:   e.notes,
		Runtime: time.Since(start).Round(time.Second).String(),
		Load: fmt.Sprintf("load average %s at the start, %s at the end; other engineers may run tests "+
			"on this machine at the same time, which shows as spread", load0, loadavg()),
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	m.Machine = fmt.Sprintf("%d CPUs (%s), Linux %s", runtime.NumCPU(), model, firstLine("uname", "-r"))
	if e.cpuClient >= 0 {
		m.Pinning = fmt.Sprintf("pinned with taskset: client on CPU %d, server on CPU %d, translator on CPU %d",
			e.cpuClient, e.cpuServer, e.cpuTranslator)
	} else {
		m.Pinning = "not pinned (the scheduler places client, server and translator): on this shared machine other " +
			"engineers' processes hold CPUs, and pinned processes cannot move away from them (veth TCP gave 1-5 Gbit/s " +
			"pinned against 10-16 unpinned side by side); -pin pins the client to CPU 0, server and translator to CPU 1"
	}
	m.Tools["iperf3"] = firstLine("iperf3", "--version")
	if p, ok := lookPath("pasta"); ok {
		m.Tools["Debian pasta"] = p + ": " + firstLine("dpkg-query", "-W", "-f", "${Package} ${Version}", "passt")
	}
	if p, ok := lookPath("slirp4netns"); ok {
		m.Tools["slirp4netns"] = p + ": " + firstLine("slirp4netns", "--version")
	}
	if e.oursPasta != "" {
		m.Tools["gopasst pasta"] = firstLine(e.oursPasta, "--version") + " (copied from " + e.opts.Bin + " at the start of the run)"
	}
	if e.oursPasta != "" && len(e.opts.AccelArgs) > 0 {
		m.Tools[labelAccel] = "gopasst pasta with " + strings.Join(e.opts.AccelArgs, " ") + " on the splice path"
	}
	if e.peerBin != "" {
		if p, ok := lookPath("passt"); ok {
			m.Tools["Debian passt"] = p + ": " + firstLine("dpkg-query", "-W", "-f", "${Package} ${Version}", "passt")
		}
		if e.oursPasst != "" {
			m.Tools["gopasst passt"] = firstLine(e.oursPasst, "--version") + " (copied from " + e.opts.Bin + " at the start of the run)"
		}
		m.Tools["passt's guest"] = "test/streampeer, built from " + e.opts.Bin + " at the start of the run"
	}
	if e.neper != "" {
		m.Tools["request/response"] = "neper " + firstLine(filepath.Join(e.neper, "tcp_rr"), "--nolog", "--version") + " (" + e.neper + ")"
	} else {
		m.Tools["request/response"] = "bench/rr (neper's tcp_rr, tcp_crr, udp_rr definitions; neper is not installed)"
	}
	m.Method = []string{
		fmt.Sprintf("TCP: iperf3 -t %d -Z -P %d (the C original's window sizes: -w 512K/1M/8M by MTU from the namespace, -w 4M -l 1M on loopback); receiver's throughput", e.prof.tcpSecs, e.prof.streams),
		fmt.Sprintf("UDP: iperf3 -u -t %d, datagrams of MTU - 28 bytes (IPv4) or - 48 (IPv6), on the splice path %d bytes, -b 0 (flood, with %s) and -b 1G; receiver's throughput and loss", e.prof.udpSecs, spliceUDPLen, floodWindowNote()),
		fmt.Sprintf("RR: %v per test, 1-byte request and response, one flow; latency = 1e6 / transactions per second; measured at each configuration's largest MTU, as the C original; so are host-to-namespace IPv6 TCP and UDP throughput", e.prof.rrLen),
		"Translator CPU: utime+stime of the translator and its child processes over the iperf3 run, per GB received; peak RSS: the sum of their VmHWM",
		"Outer namespace: 198.18.0.2/24 and 2001:db8:9a55::2/64 on a veth pair, default routes to 198.18.0.1 and 2001:db8:9a55::1 (nothing answers); pasta's tap path: namespace to the gateway address (mapped to the host's loopback), host to its own 198.18.0.2; splice path: 127.0.0.1 and ::1 on both sides (-t/-u and -T/-U), every test's bytes on the namespace's tap counted (above 64 KiB: not spliced, the figure is an error)",
	}
	if e.peerBin != "" {
		m.Method = append(m.Method,
			"passt: passt -f -s SOCKET --mtu M -t/-u the guest's ports --runas 0 in the outer namespace; the guest is a namespace whose tap (eth0, MTU M) test/streampeer bridges to passt's socket in qemu's framing, addressed statically as passt advertises (198.18.0.2/24 and 2001:db8:9a55::2/64, default routes via the gateways); guest to host: to the gateway address (the host's loopback), host to guest: to the forwarded ports on 127.0.0.1 and ::1; translator CPU and RSS: passt and its children, not the guest's peer",
			"stream ceiling: streampeer relay between two streampeers (taps in the outer namespace and in the guest's, no translation): the speed of the stream path itself; veth: the kernel's limit, as in pasta's table")
	}
	return m
}

// Commit returns the short commit of the tree at dir, with "-dirty" when
// the tree has uncommitted changes to tracked files, or "unknown".
func Commit(dir string) string {
	out, _, err := run(context.Background(), 5*time.Second, []string{"git", "-C", dir, "rev-parse", "--short", "HEAD"})
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(out)
	if st, _, err := run(context.Background(), 10*time.Second, []string{"git", "-C", dir, "status", "--porcelain", "--untracked-files=no"}); err == nil && strings.TrimSpace(st) != "" {
		c += "-dirty"
	}
	return c
}
