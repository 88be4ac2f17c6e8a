// iperf3 measurements through the in-process harness (opt-in: GOPASST_IPERF=1).

package tcp_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/tcp"
)

// iperfResult is the part of iperf3's JSON output we read.
type iperfResult struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
	} `json:"end"`
	Error string `json:"error"`
}

// cpuTime returns this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// iperf runs one iperf3 client (in the namespace when out, on the host
// otherwise) against a server on the other side, and returns its JSON.
func (w *world) iperf(t *testing.T, out, v6 bool, secs int, extra ...string) (iperfResult, time.Duration) {
	t.Helper()
	port := w.inPort
	srvAddr, cliAddr := "127.0.0.1", gw4.String()
	if v6 {
		srvAddr, cliAddr = "::1", gw6.String()
	}
	var srv, cli *exec.Cmd
	if out {
		port = hostPort(t)
		srv = exec.Command("iperf3", "-s", "-1", "-B", srvAddr, "-p", fmt.Sprint(port))
		cli = exec.Command("ip", append([]string{"netns", "exec", w.ns, "iperf3", "-c", cliAddr, "-p", fmt.Sprint(port),
			"-t", fmt.Sprint(secs), "-J"}, extra...)...)
	} else {
		ga := guest4.String()
		if v6 {
			ga = guest6.String()
		}
		srv = exec.Command("ip", "netns", "exec", w.ns, "iperf3", "-s", "-1", "-B", ga, "-p", fmt.Sprint(port))
		cli = exec.Command("iperf3", append([]string{"-c", srvAddr, "-p", fmt.Sprint(port), "-t", fmt.Sprint(secs), "-J"}, extra...)...)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	time.Sleep(300 * time.Millisecond)
	c0 := cpuTime()
	js, err := cli.Output()
	cpu := cpuTime() - c0
	var r iperfResult
	if jerr := json.Unmarshal(js, &r); jerr != nil || err != nil || r.Error != "" {
		t.Fatalf("iperf3: %v, %v, %s", err, jerr, r.Error)
	}
	return r, cpu
}

// TestIperf measures throughput with iperf3 through the handler, both
// ways, watching the guest's retransmission counters. Run with
// GOPASST_IPERF=1 (and TCP_MTU to pick one MTU).
func TestIperf(t *testing.T) {
	if os.Getenv("GOPASST_IPERF") == "" {
		t.Skip("set GOPASST_IPERF=1 to measure with iperf3")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3")
	}
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("GOPASST_IPERF_SECS")); err == nil {
		secs = s
	}
	mtus := []int{65520, 1500}
	if m, err := strconv.Atoi(os.Getenv("TCP_MTU")); err == nil {
		mtus = []int{m}
	}
	for _, mtu := range mtus {
		port := hostPort(t)
		w := newWorld(t, mtu, func(h *tcp.Handler) {
			if err := h.ListenPort(netip.MustParseAddr("127.0.0.1"), port); err != nil {
				t.Fatal(err)
			}
			if err := h.ListenPort(netip.IPv6Loopback(), port); err != nil {
				t.Fatal(err)
			}
		})
		w.inPort = port
		for _, v6 := range []bool{false, true} {
			if f := os.Getenv("GOPASST_IPERF_V6"); f != "" && (f == "1") != v6 {
				continue
			}
			for _, out := range []bool{true, false} {
				if d := os.Getenv("GOPASST_IPERF_DIR"); d != "" && (d == "out") != out {
					continue
				}
				r0, to0 := tcpCounters(t, w.ns)
				// The bench harness's options (the C original's): two
				// streams, and ns to host a window fitting the MTU.
				extra := []string{"-P", "2"}
				if out && mtu <= 1500 {
					extra = append(extra, "-w", "512K")
				} else if out {
					extra = append(extra, "-w", "8M")
				}
				r, cpu := w.iperf(t, out, v6, secs, extra...)
				r1, to1 := tcpCounters(t, w.ns)
				dir := "host->ns"
				if out {
					dir = "ns->host"
				}
				gbps := r.End.SumReceived.BitsPerSecond / 1e9
				t.Logf("MTU %5d v6=%-5v %s: %6.2f Gbit/s, translator CPU %3.0f%%, %.2f CPU-s/GB; guest TcpRetransSegs %d, TCPTimeouts %d; iperf3 retransmits %d",
					mtu, v6, dir, gbps, 100*cpu.Seconds()/float64(secs), cpu.Seconds()/(gbps*float64(secs)/8),
					r1-r0, to1-to0, r.End.SumSent.Retransmits)
			}
		}
		w.halt()
		t.Logf("MTU %d: %+v, tap %+v", mtu, w.h.Stats, w.dev.Stats)
	}
}

// TestRR measures TCP_RR and TCP_CRR (the bench's rr tool, path in
// GOPASST_RR) from the namespace to a host server through the handler.
func TestRR(t *testing.T) {
	rr := os.Getenv("GOPASST_RR")
	if rr == "" {
		t.Skip("set GOPASST_RR to the bench rr tool (go build -o /tmp/rr ./bench/cmd/rr)")
	}
	w := newWorld(t, 65520, nil)
	port := hostPort(t)
	srv := exec.Command(rr, "-B", "127.0.0.1", "-P", fmt.Sprint(port), "-lifetime", "60s")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	for _, test := range []string{"tcp_rr", "tcp_crr"} {
		out, err := exec.Command("ip", "netns", "exec", w.ns, rr, "-c", "-H", gw4.String(), "-P", fmt.Sprint(port),
			"-test", test, "-l", "3s").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", test, err, out)
		}
		t.Logf("%s: %s", test, out)
	}
	w.halt()
	t.Logf("%+v", w.h.Stats)
}
