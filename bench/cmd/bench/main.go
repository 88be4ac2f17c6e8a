// Command bench runs gopasst's benchmark matrix (iperf3 and request/response
// tests against gopasst's pasta and passt, Debian's pasta and passt,
// slirp4netns and the kernel's own paths) in a network namespace made for it, and writes the
// tables and plots to bench/results/<date>-<commit>/. `make bench` and
// `make bench-quick` run it; see bench/README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopasst/bench/harness"
)

// list is a repeatable, comma-separated flag.
type list []string

// String returns the flag's value.
func (l *list) String() string { return strings.Join(*l, ",") }

// Set adds the comma-separated items of v.
func (l *list) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// main parses the options, runs the matrix and exits 1 with one error line
// on failure.
func main() {
	harness.Dispatch()
	var only, tests, mtus, pasta, passt list
	bin := flag.String("bin", ".", "gopasst tree: its pasta binary and test/setup")
	quick := flag.Bool("quick", false, "the quick profile (one repetition, MTU 65520, fewer tests)")
	reps := flag.Int("reps", 0, "repetitions (default: 3, quick 1)")
	secs := flag.Int("t", 0, "iperf3 TCP test length in seconds (default: 2, quick 1)")
	rrLen := flag.Duration("rr-length", 0, "request/response test length (default: 1s, quick 500ms)")
	pin := flag.Bool("pin", false, "pin the client to CPU 0, server and translator to CPU 1 with taskset (helps on an idle machine, hurts when other processes hold CPUs)")
	out := flag.String("out", "", "results directory (default: <bin>/bench/results/<date>-<commit>[-quick])")
	setup := flag.Bool("setup", true, "run <bin>/test/setup when iperf3, pasta or slirp4netns is missing")
	neper := flag.String("neper", "", "directory of neper's tcp_rr, tcp_crr and udp_rr (default: tcp_rr's on PATH, else built from -neper-src, else bench/rr)")
	neperSrc := flag.String("neper-src", "/work/shared/tools/neper-ea5890f.tar.gz", "neper's source tarball, built into ~/.cache/gopasst when no -neper is given and no tcp_rr is on PATH (\"\": use bench/rr instead)")
	accel := flag.String("accel", "", "gopasst pasta's options (space-separated) that turn on its accelerated splice path: adds the column \"gopasst pasta, accelerated\" to the splice table")
	flag.Var(&only, "only", "configurations to run, comma-separated: gopasst, gopasst-tap, gopasst-splice, gopasst-accel, gopasst-passt, debian, debian-pasta, debian-passt, slirp4netns, veth, loopback, ceiling, extra, ours, peer, kernel, tap, splice, passt, stream (default: all)")
	flag.Var(&tests, "tests", "tests to run, comma-separated: tcp, udp, rr, tcp_rr, tcp_crr, udp_rr, throughput, latency, ipv4, ipv6, in, out, or a row (tcp4-out...) (default: all of the profile)")
	flag.Var(&mtus, "mtu", "MTU columns to run, comma-separated (default: the profile's)")
	flag.Var(&pasta, "pasta", "another pasta build to measure as a column (repeatable)")
	flag.Var(&passt, "passt", "another passt build to measure as a column of passt's table (repeatable)")
	flag.Parse()
	if v := os.Getenv("BENCH_ONLY"); v != "" && len(only) == 0 {
		_ = only.Set(v)
	}
	if v := os.Getenv("BENCH_TESTS"); v != "" && len(tests) == 0 {
		_ = tests.Set(v)
	}
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	o := harness.Options{Bin: abs, Profile: "full", Only: only, Tests: tests, Reps: *reps, TCPSecs: *secs,
		RRLen: *rrLen, Pin: *pin, ExtraPasta: pasta, ExtraPasst: passt, Setup: *setup, AccelArgs: strings.Fields(*accel),
		Command: "bench " + strings.Join(os.Args[1:], " ")}
	if *quick {
		o.Profile = "quick"
	}
	for _, m := range mtus {
		n, err := strconv.Atoi(m)
		if err != nil || n < 68 || n > 65520 {
			fail(fmt.Errorf("-mtu %q: want a number from 68 to 65520", m))
		}
		o.MTUs = append(o.MTUs, n)
	}
	for i, p := range o.ExtraPasta {
		if o.ExtraPasta[i], err = filepath.Abs(p); err != nil {
			fail(err)
		}
		if _, err := os.Stat(o.ExtraPasta[i]); err != nil {
			fail(fmt.Errorf("--pasta: %w", err))
		}
	}
	for i, p := range o.ExtraPasst {
		if o.ExtraPasst[i], err = filepath.Abs(p); err != nil {
			fail(err)
		}
		if _, err := os.Stat(o.ExtraPasst[i]); err != nil {
			fail(fmt.Errorf("--passt: %w", err))
		}
	}
	if *neper != "" {
		if o.Neper, err = filepath.Abs(*neper); err != nil {
			fail(err)
		}
		for _, b := range []string{"tcp_rr", "tcp_crr", "udp_rr"} {
			if _, err := os.Stat(filepath.Join(o.Neper, b)); err != nil {
				fail(fmt.Errorf("-neper: %w", err))
			}
		}
	}
	o.NeperSource = *neperSrc
	o.OutDir = *out
	if o.OutDir == "" {
		name := time.Now().UTC().Format("2006-01-02") + "-" + harness.Commit(abs)
		if *quick {
			name += "-quick"
		}
		o.OutDir = filepath.Join(abs, "bench", "results", name)
	}
	if err := harness.Run(o); err != nil {
		fail(err)
	}
	fmt.Printf("results: %s\n", o.OutDir)
	// A complete run into the tree's results directory becomes the
	// README's latest; selective runs (-only, -tests, -mtu) do not.
	results := filepath.Join(abs, "bench", "results")
	if *out == "" && len(only) == 0 && len(tests) == 0 && len(mtus) == 0 && *reps == 0 && *secs == 0 && *rrLen == 0 {
		if err := harness.UpdateReadme(filepath.Join(abs, "bench", "README.md"), o.OutDir, o.Profile); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		} else {
			fmt.Printf("bench/README.md now shows %s\n", strings.TrimPrefix(o.OutDir, results+"/"))
		}
	}
}

// fail prints err as one line and exits with status 1.
func fail(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	os.Exit(1)
}
