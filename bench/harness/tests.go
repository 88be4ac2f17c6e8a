// The tests, the two profiles, and running one test against an instance.

package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopasst/bench/report"
	"gopasst/bench/toolout"
)

// testSpec is one measurement on one instance, filling one table row (and
// the translator's CPU per GB row of every throughput test, the loss row of
// fixed-rate UDP).
type testSpec struct {
	row     string // report row
	kind    string // "tcp", "udp", "rr"
	family  int    // 4 or 6
	out     bool   // namespace to host (client in the namespace)
	rate    string // UDP: iperf3 -b ("0": flood)
	rr      string // RR: tcp_rr, tcp_crr, udp_rr
	lossRow string
	cpuRow  string
	// largestOnly: only at a configuration family's largest MTU, as the C
	// original measures latency, and host-to-namespace throughput over the
	// tap, once per table (it keeps the full matrix within 15 minutes).
	largestOnly bool
	// path: only on that path ("": every path), for rows that only one
	// table has.
	path string
}

// tags returns the words -tests matches against.
func (t testSpec) tags() []string {
	dir := "in"
	if t.out {
		dir = "out"
	}
	tags := []string{t.row, t.kind, "ipv" + strconv.Itoa(t.family), dir}
	if t.kind == "rr" {
		tags = append(tags, t.rr, strings.TrimSuffix(t.rr, "_rr")+"rr", "latency")
		if t.rr == "tcp_crr" {
			tags = append(tags, "crr")
		}
	} else {
		tags = append(tags, "throughput")
	}
	return tags
}

// selected reports whether t matches one of the -tests tokens (none: all).
func (t testSpec) selected(only []string) bool {
	if len(only) == 0 {
		return true
	}
	for _, o := range only {
		for _, g := range t.tags() {
			if strings.EqualFold(o, g) {
				return true
			}
		}
	}
	return false
}

// allTests is the full profile's list, in the order rows are published.
var allTests = []testSpec{
	{row: "tcp6-out", kind: "tcp", family: 6, out: true, cpuRow: "cpu-tcp6-out"},
	{row: "tcp4-out", kind: "tcp", family: 4, out: true, cpuRow: "cpu-tcp4-out"},
	{row: "tcp6-in", kind: "tcp", family: 6, largestOnly: true, cpuRow: "cpu-tcp6-in"},
	{row: "tcp4-in", kind: "tcp", family: 4, cpuRow: "cpu-tcp4-in"},
	{row: "udp6-out", kind: "udp", family: 6, out: true, rate: "0", cpuRow: "cpu-udp6-out"},
	{row: "udp4-out", kind: "udp", family: 4, out: true, rate: "0", cpuRow: "cpu-udp4-out"},
	{row: "udp4-in", kind: "udp", family: 4, rate: "0", largestOnly: true, cpuRow: "cpu-udp4-in"},
	{row: "udp6-in", kind: "udp", family: 6, rate: "0", largestOnly: true, path: "splice", cpuRow: "cpu-udp6-in"},
	{row: "udp4-out-1g", kind: "udp", family: 4, out: true, rate: "1G", lossRow: "udp4-out-1g-loss", cpuRow: "cpu-udp4-out-1g"},
	{row: "tcprr4-out", kind: "rr", family: 4, out: true, rr: "tcp_rr", largestOnly: true},
	{row: "tcprr4-in", kind: "rr", family: 4, rr: "tcp_rr", largestOnly: true},
	{row: "tcpcrr4-out", kind: "rr", family: 4, out: true, rr: "tcp_crr", largestOnly: true},
	{row: "tcpcrr4-in", kind: "rr", family: 4, rr: "tcp_crr", largestOnly: true},
	{row: "udprr4-out", kind: "rr", family: 4, out: true, rr: "udp_rr", largestOnly: true},
	{row: "udprr4-in", kind: "rr", family: 4, rr: "udp_rr", largestOnly: true},
	{row: "tcprr6-out", kind: "rr", family: 6, out: true, rr: "tcp_rr", largestOnly: true},
	{row: "tcprr6-in", kind: "rr", family: 6, rr: "tcp_rr", largestOnly: true},
	{row: "tcpcrr6-out", kind: "rr", family: 6, out: true, rr: "tcp_crr", largestOnly: true},
	{row: "tcpcrr6-in", kind: "rr", family: 6, rr: "tcp_crr", largestOnly: true},
	{row: "udprr6-out", kind: "rr", family: 6, out: true, rr: "udp_rr", largestOnly: true},
	{row: "udprr6-in", kind: "rr", family: 6, rr: "udp_rr", largestOnly: true},
}

// profile is what a run measures and for how long.
type profile struct {
	name      string
	reps      int
	tcpSecs   int           // iperf3 TCP test length
	udpSecs   int           // iperf3 UDP test length
	rrLen     time.Duration // RR test length
	streams   int           // iperf3 -P for TCP, as the C original's tables
	tests     []string      // rows; nil: all
	tapMTUs   []int         // pasta's tap path and passt's stream path
	vethMTUs  []int
	slirpMTUs []int
	// ceilingMTUs: the stream ceiling's, as the veth reference's (the
	// limit at the smallest and the largest MTU).
	ceilingMTUs []int
}

// profiles: the full matrix fits 15 minutes on 2 cores, the quick one 3.
var profiles = map[string]profile{
	"full": {name: "full", reps: 3, tcpSecs: 2, udpSecs: 1, rrLen: time.Second, streams: 2,
		tapMTUs: []int{1500, 4000, 16384, 65520}, vethMTUs: []int{1500, 65520}, slirpMTUs: []int{65520},
		ceilingMTUs: []int{1500, 65520}},
	"quick": {name: "quick", reps: 1, tcpSecs: 1, udpSecs: 1, rrLen: 500 * time.Millisecond, streams: 2,
		tests:   []string{"tcp4-out", "tcp4-in", "udp4-out", "tcprr4-out", "tcpcrr4-out", "udprr4-out", "startup", "rss-idle"},
		tapMTUs: []int{65520}, vethMTUs: []int{65520}, slirpMTUs: []int{65520}, ceilingMTUs: []int{65520}},
}

// tests returns the tests of the run for configuration c.
func (e *env) tests(c config, largest bool) []testSpec {
	var out []testSpec
	for _, t := range allTests {
		if e.prof.tests != nil {
			keep := false
			for _, r := range e.prof.tests {
				keep = keep || r == t.row
			}
			if !keep {
				continue
			}
		}
		if !t.selected(e.opts.Tests) {
			continue
		}
		if t.largestOnly && !largest {
			continue
		}
		if t.path != "" && t.path != c.path {
			continue
		}
		out = append(out, t)
	}
	return out
}

// rowWanted reports whether a row measured outside the test list (the
// start-up and idle memory rows) is part of the run: in the profile's rows
// (all if it lists none) and named by -tests (all if it names none).
func (e *env) rowWanted(row string) bool {
	if e.prof.tests != nil && !slices.Contains(e.prof.tests, row) {
		return false
	}
	if len(e.opts.Tests) == 0 {
		return true
	}
	for _, o := range e.opts.Tests {
		if strings.EqualFold(o, row) || strings.EqualFold(o, "memory") && strings.HasPrefix(row, "rss") {
			return true
		}
	}
	return false
}

// startupRuns is how many times a start-up sample runs the command.
const startupRuns = 11

// startup measures the start-up row on pasta instance in: the wall time of
// `BIN --config-net -f --runas 0 -- true`, spawn to exit (the namespace
// made and configured, the command run, the exit seen), over startupRuns
// runs of the instance's binary (the median is the sample; the fastest and
// slowest are in Extra). The C original drops to nobody as root without
// --runas and then cannot open its own namespace here: both get --runas 0,
// as the instances do. Not pinned: a user's pasta is not.
func (e *env) startup(ctx context.Context, rep int, in *instance) report.Sample {
	ms := make([]float64, 0, startupRuns)
	for i := 0; i < startupRuns && ctx.Err() == nil; i++ {
		t0 := time.Now()
		_, stderr, err := run(ctx, 5*time.Second, []string{in.cfg.bin, "--config-net", "-f", "--runas", "0", "--", "true"})
		if err != nil {
			return sample(in, rep, "startup", 0, fmt.Errorf("%v: %s", err, lastLine(stderr)))
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
	}
	if len(ms) == 0 {
		return sample(in, rep, "startup", 0, ctx.Err())
	}
	slices.Sort(ms)
	s := sample(in, rep, "startup", ms[len(ms)/2], nil)
	s.Extra = map[string]float64{"min_ms": ms[0], "max_ms": ms[len(ms)-1], "runs": float64(len(ms))}
	e.logf("  %s startup: %.1f ms (%.1f-%.1f)", in.cfg.name(), ms[len(ms)/2], ms[0], ms[len(ms)-1])
	return s
}

// spliceUDPLen is the datagram length of the UDP tests on the loopback
// path (issue 12's local flood: 1400 bytes, a datagram the size of the
// ones a service sends over a 1500-byte link, so that the test counts the
// translator's per-datagram work rather than the loopback's 64 KiB copies).
const spliceUDPLen = 1400

// udpLenFor returns the iperf3 datagram length of a UDP test of family on
// configuration c: spliceUDPLen on the loopback path, else udpLen.
func udpLenFor(c config, family int) int {
	if c.path == "splice" {
		return spliceUDPLen
	}
	return udpLen(c.mtu, family)
}

// udpLen returns the iperf3 datagram length that fills one packet of mtu:
// the MTU less 28 bytes of IPv4 and UDP headers or 48 of IPv6 and UDP, as
// the C original's UDP tables do; without an MTU, the largest datagram.
func udpLen(mtu, family int) int {
	hdr := 28
	if family == 6 {
		hdr = 48
	}
	if mtu == 0 || mtu > 65535 {
		mtu = 65535
	}
	return mtu - hdr
}

// tcpWindow returns iperf3's -w (and -l) for a TCP test, the C original's
// choices: on the tap path, namespace to host, 512k at MTU 1500, 1M at
// 4000, 8M above; on the loopback path -w 4M -l 1M; host to namespace
// over the tap, the defaults.
func tcpWindow(c config, t testSpec) []string {
	if c.path == "splice" {
		return []string{"-w", "4M", "-l", "1M"}
	}
	if !t.out {
		return nil
	}
	switch {
	case c.mtu <= 1500:
		return []string{"-w", "512K"}
	case c.mtu <= 4000:
		return []string{"-w", "1M"}
	}
	return []string{"-w", "8M"}
}

// udpWindow returns iperf3's -w for UDP test t, the same on every
// configuration: for a flood, the largest socket buffer the kernel grants
// (net.core.rmem_max and wmem_max, at most 4 MiB); nothing at a fixed rate,
// which the defaults keep up with. iperf3 sets it as SO_SNDBUF on the
// client's socket and SO_RCVBUF on the server's, so the flood measures the
// path and not the default receive buffer of 208 KiB (three 64 KiB
// datagrams), which the kernel's own veth overruns too (issue 14: 1.8 % of
// veth's flood lost there, 70 % of ours). It is capped by the limits
// because iperf3 3.12 fails a test whose buffer the kernel set below what
// it asked for.
func udpWindow(t testSpec) []string {
	if t.rate != "0" {
		return nil
	}
	w := 4 << 20
	for _, f := range []string{"/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil // unknown limits: the defaults, as before
		}
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v < w {
			w = v
		}
	}
	if w <= 212992 {
		return nil // nothing above the default to ask for
	}
	return []string{"-w", strconv.Itoa(w)}
}

// floodWindowNote says which -w the UDP floods of this run use, for the
// results' header.
func floodWindowNote() string {
	w := udpWindow(testSpec{rate: "0"})
	if w == nil {
		return "the default socket buffers"
	}
	return "-w " + w[1] + " on both ends"
}

// sample returns a sample of test row for instance in, repetition rep.
func sample(in *instance, rep int, row string, v float64, err error) report.Sample {
	s := report.Sample{Rep: rep, Config: in.cfg.label, Role: in.cfg.role, Mode: in.cfg.mode,
		Path: in.cfg.path, MTU: in.cfg.mtu, Row: row, Value: v}
	if err != nil {
		s.Err = err.Error()
		s.Value = 0
	}
	return s
}

// sides returns, for test t on in, the client's command prefix, the
// address it connects to, and whether the server side is the namespace.
func (e *env) sides(in *instance, t testSpec) (prefix []string, target string, nsServer bool) {
	i := 0
	if t.family == 6 {
		i = 1
	}
	if t.out {
		return in.nsPrefix(), in.hostTarget[i], false
	}
	return nil, in.nsTarget[i], true
}

// tapLimit is the most a test on the splice path may move over the
// namespace's tap (both directions, bytes) and still count as spliced: the
// neighbour and router traffic of a few seconds stays far below it, one
// second of TCP_RR over the tap (about 100 bytes a transaction) or any
// throughput test far above.
const tapLimit = 64 << 10

// runTest runs test t on instance in and returns its samples: the figure,
// or an error sample when the test failed. On the splice path it counts
// the bytes the namespace's tap carried meanwhile (extra "tap_bytes"): a
// test whose traffic to 127.0.0.1 or ::1 crossed the tap (tapLimit) did not
// measure the splice path, and its figures become errors saying so.
func (e *env) runTest(ctx context.Context, rep int, in *instance, t testSpec) []report.Sample {
	if in.cfg.path != "splice" || in.ns == nil {
		return e.measure(ctx, rep, in, t)
	}
	before := in.ns.tapBytes(in.ifname)
	out := e.measure(ctx, rep, in, t)
	after := in.ns.tapBytes(in.ifname)
	if before < 0 || after < 0 {
		return out
	}
	if d := after - before; !checkSpliced(out, d, in.ifname) {
		e.logf("  %s %s: %d bytes crossed %s: not the splice path", in.cfg.name(), t.row, d, in.ifname)
	}
	return out
}

// checkSpliced records d, the bytes the tap ifname carried during a test
// on the splice path, in each of the test's samples (extra "tap_bytes"),
// and reports whether the test stayed off the tap (d within tapLimit);
// when it did not, its figures become errors saying so.
func checkSpliced(out []report.Sample, d int64, ifname string) bool {
	for i := range out {
		if out[i].Extra == nil {
			out[i].Extra = map[string]float64{}
		}
		out[i].Extra["tap_bytes"] = float64(d)
		if d > tapLimit && out[i].Err == "" {
			out[i].Err = fmt.Sprintf("crossed the tap (%d bytes on %s): not the splice path", d, ifname)
			out[i].Value = 0
		}
	}
	return d <= tapLimit
}

// measure runs test t on instance in and returns its samples (see runTest).
func (e *env) measure(ctx context.Context, rep int, in *instance, t testSpec) []report.Sample {
	prefix, target, nsServer := e.sides(in, t)
	if target == "" {
		e.note(fmt.Sprintf("%s: no IPv%d path to the host's loopback: its IPv%d rows are left empty", in.cfg.label, t.family, t.family))
		return nil
	}
	var out []report.Sample
	switch t.kind {
	case "tcp", "udp":
		port := hostPortIperf
		if nsServer {
			port = nsPortIperf
		}
		secs := e.prof.tcpSecs
		if t.kind == "udp" {
			secs = e.prof.udpSecs
		}
		args := []string{"iperf3", "-c", target, "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-J",
			"--connect-timeout", "3000"}
		if t.kind == "tcp" {
			args = append(args, "-Z", "-P", strconv.Itoa(e.prof.streams))
			args = append(args, tcpWindow(in.cfg, t)...)
		} else {
			args = append(args, "-u", "-b", t.rate, "-l", strconv.Itoa(udpLenFor(in.cfg, t.family)))
			args = append(args, udpWindow(t)...)
		}
		if why, ok := e.timedOut[in.cfg.name()+" "+t.row]; ok {
			out = append(out, sample(in, rep, t.row, 0, errors.New(why)))
			if t.lossRow != "" {
				out = append(out, sample(in, rep, t.lossRow, 0, errors.New(why)))
			}
			return out
		}
		// A one-off server per test (-1), as the C original's scripts start
		// and stop one around each measurement: a persistent iperf3 3.12
		// server can stay "busy" after a client that gave up.
		var sp []string
		if nsServer {
			sp = in.nsPrefix()
		}
		srv, err := e.startServer("iperf3 server", sp, []string{"iperf3", "-s", "-1", "-p", strconv.Itoa(port)}, port)
		if err != nil {
			return []report.Sample{sample(in, rep, t.row, 0, err)}
		}
		defer e.procs.stop(srv, time.Second)
		cpu0 := e.translatorTicks(in)
		stdout, _, err := run(ctx, time.Duration(secs+8)*time.Second, e.pin(e.cpuClient, append(append([]string{}, prefix...), args...)))
		cpu1 := e.translatorTicks(in)
		var r toolout.Iperf3
		if err == nil {
			r, err = toolout.ParseIperf3([]byte(stdout))
		} else if _, perr := toolout.ParseIperf3([]byte(stdout)); perr != nil && strings.HasPrefix(perr.Error(), "iperf3: ") {
			err = perr // iperf3's own message says more than its exit status
		}
		e.sampleRSS(in)
		if err != nil {
			e.logf("  %s %s: %v", in.cfg.name(), t.row, err)
			if strings.HasPrefix(err.Error(), "timed out") {
				// Do not spend the time-out again in the later repetitions
				// of the same configuration (other MTUs still try).
				e.timedOut[in.cfg.name()+" "+t.row] = err.Error() + " (once; not tried again at this MTU)"
			}
			out = append(out, sample(in, rep, t.row, 0, err))
			if t.lossRow != "" {
				out = append(out, sample(in, rep, t.lossRow, 0, err))
			}
			return out
		}
		s := sample(in, rep, t.row, r.Gbps(), nil)
		s.Extra = map[string]float64{"sent_gbps": r.SentBits / 1e9, "bytes": float64(r.Bytes)}
		if t.kind == "tcp" {
			s.Extra["retransmits"] = float64(r.Retransmits)
		} else {
			s.Extra["lost_percent"] = r.LostPercent
		}
		out = append(out, s)
		e.logf("  %s %s: %.2f Gbps", in.cfg.name(), t.row, r.Gbps())
		if t.lossRow != "" {
			out = append(out, sample(in, rep, t.lossRow, r.LostPercent, nil))
		}
		if t.cpuRow != "" && cpu0 >= 0 && cpu1 >= cpu0 && r.Bytes > 0 {
			secs := float64(cpu1-cpu0) / clockTicks
			out = append(out, sample(in, rep, t.cpuRow, secs/(float64(r.Bytes)/1e9), nil))
		}
	case "rr":
		r, err := e.runRR(ctx, in, t, prefix, target, nsServer)
		e.sampleRSS(in)
		if err != nil {
			e.logf("  %s %s: %v", in.cfg.name(), t.row, err)
			return []report.Sample{sample(in, rep, t.row, 0, err)}
		}
		s := sample(in, rep, t.row, r.UsPerTransaction(), nil)
		s.Extra = map[string]float64{"transactions_per_s": r.Throughput, "p50_us": r.P50Us, "p90_us": r.P90Us,
			"p99_us": r.P99Us, "min_us": r.MinUs, "max_us": r.MaxUs}
		if r.Lost > 0 {
			s.Extra["lost"] = float64(r.Lost)
		}
		e.logf("  %s %s: %.1f µs/transaction (p50 %.1f, p99 %.1f)", in.cfg.name(), t.row, r.UsPerTransaction(), r.P50Us, r.P99Us)
		out = append(out, s)
	}
	return out
}

// runRR runs one request/response test with neper, when installed, or
// with the rr tool, and returns its parsed report.
func (e *env) runRR(ctx context.Context, in *instance, t testSpec, prefix []string, target string, nsServer bool) (toolout.RR, error) {
	port, ctl := hostPortRR, hostPortCtl
	if nsServer {
		port, ctl = nsPortRR, nsPortCtl
	}
	var args []string
	if e.neper != "" {
		// neper has one server binary per test: start it on the server side.
		var sp []string
		if nsServer {
			sp = in.nsPrefix()
		}
		bin := filepath.Join(e.neper, t.rr)
		// The server listens in the test's family (-4/-6: neper's
		// server binds one family only, IPv4 by default).
		srv, err := e.startServer("neper "+t.rr, sp, []string{bin, "--nolog", "-P", strconv.Itoa(port), "-C", strconv.Itoa(ctl),
			"-" + strconv.Itoa(t.family)}, ctl)
		if err != nil {
			return toolout.RR{}, err
		}
		defer e.procs.stop(srv, time.Second)
		secs := int(e.prof.rrLen.Seconds() + 0.5)
		args = []string{bin, "--nolog", "-c", "-H", target, "-P", strconv.Itoa(port), "-C", strconv.Itoa(ctl),
			"-l", strconv.Itoa(max(secs, 1)), "-p", "50,90,99", "-" + strconv.Itoa(t.family)}
	} else {
		args = append(append([]string{}, e.rrCmd...), "-c", "-H", target, "-P", strconv.Itoa(port),
			"-test", t.rr, "-l", e.prof.rrLen.String(), "-timeout", "1s")
	}
	stdout, _, err := run(ctx, e.prof.rrLen+15*time.Second, e.pin(e.cpuClient, append(append([]string{}, prefix...), args...)))
	if err != nil {
		return toolout.RR{}, err
	}
	return toolout.ParseRR(stdout)
}

// translatorTicks returns the translator's CPU ticks so far, or -1.
func (e *env) translatorTicks(in *instance) int64 {
	if in.translator == nil || in.translator.exited() {
		return -1
	}
	t, err := treeTicks(in.translator.pid())
	if err != nil {
		return -1
	}
	return t
}

// sampleRSS records the translator's peak RSS so far.
func (e *env) sampleRSS(in *instance) {
	if in.translator == nil || in.translator.exited() {
		return
	}
	if kb, err := treePeakRSSKiB(in.translator.pid()); err == nil && kb > in.peakRSS {
		in.peakRSS = kb
	}
}
