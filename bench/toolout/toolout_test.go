// Tests of the tool-output parsers on reports recorded on this machine
// (iperf3 3.12, bench/rr) and on neper's documented layout.

package toolout

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// read returns the test data file name or fails the test.
func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// near reports whether a and b agree to a relative 1e-9.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

func TestParseIperf3TCP(t *testing.T) {
	r, err := ParseIperf3(read(t, "iperf3-tcp-p2.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Protocol != "TCP" || r.Streams != 2 {
		t.Errorf("protocol %q streams %d, want TCP 2", r.Protocol, r.Streams)
	}
	if r.Bytes != 1433927680 || !near(r.BitsPerSec, 11464382309.262114) {
		t.Errorf("received %d bytes at %v bit/s", r.Bytes, r.BitsPerSec)
	}
	if g := r.Gbps(); g < 11.46 || g > 11.47 {
		t.Errorf("Gbps %v", g)
	}
	if r.LostPercent != 0 {
		t.Errorf("TCP has loss %v", r.LostPercent)
	}
}

func TestParseIperf3UDP(t *testing.T) {
	r, err := ParseIperf3(read(t, "iperf3-udp-1g.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Protocol != "UDP" {
		t.Errorf("protocol %q", r.Protocol)
	}
	// The receiver's figures, not the sender's: 122421824 of 124930112 bytes.
	if r.Bytes != 122421824 || !near(r.BitsPerSec, 978806884.0072757) {
		t.Errorf("received %d bytes at %v bit/s", r.Bytes, r.BitsPerSec)
	}
	if !near(r.SentBits, 999308987.21368778) {
		t.Errorf("sent %v bit/s", r.SentBits)
	}
	if r.LostPackets != 1704 || r.Packets != 84871 || !near(r.LostPercent, 2.0077529427012761) {
		t.Errorf("lost %d of %d (%v%%)", r.LostPackets, r.Packets, r.LostPercent)
	}
}

func TestParseIperf3Reverse6(t *testing.T) {
	r, err := ParseIperf3(read(t, "iperf3-tcp6-reverse.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Gbps() <= 0 || r.Streams != 1 {
		t.Errorf("Gbps %v streams %d", r.Gbps(), r.Streams)
	}
}

func TestParseIperf3Errors(t *testing.T) {
	_, err := ParseIperf3(read(t, "iperf3-refused.json"))
	if err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("refused connection: err %v", err)
	}
	for name, in := range map[string]string{
		"empty":        "",
		"not JSON":     "iperf3: error - unable to connect",
		"no end":       `{"start":{},"end":{}}`,
		"zero seconds": `{"end":{"sum_received":{"seconds":0,"bytes":1,"bits_per_second":1}}}`,
		"no bytes":     `{"end":{"sum_received":{"seconds":1,"bytes":0,"bits_per_second":0}}}`,
	} {
		if _, err := ParseIperf3([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// An iperf3 before 3.11 gives UDP only "sum": loss is applied to it.
func TestParseIperf3OldUDP(t *testing.T) {
	in := `{"start":{"test_start":{"protocol":"UDP","num_streams":1}},"end":{"sum":
		{"seconds":2,"bytes":1000,"bits_per_second":4000,"lost_percent":25,"lost_packets":1,"packets":4}}}`
	r, err := ParseIperf3([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != 750 || r.BitsPerSec != 3000 || r.SentBits != 4000 || r.LostPercent != 25 {
		t.Errorf("%+v", r)
	}
}

func TestParseRRNeper(t *testing.T) {
	r, err := ParseRR(string(read(t, "neper-tcp_rr.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if r.Transactions != 31437 || r.Throughput != 15713.41 {
		t.Errorf("transactions %d throughput %v", r.Transactions, r.Throughput)
	}
	// neper prints seconds: 0.000059392 s is 59.392 µs.
	if math.Abs(r.P50Us-59.392) > 1e-6 || math.Abs(r.P99Us-131.072) > 1e-6 || math.Abs(r.MinUs-18.432) > 1e-6 {
		t.Errorf("p50 %v p99 %v min %v", r.P50Us, r.P99Us, r.MinUs)
	}
	if us := r.UsPerTransaction(); math.Abs(us-63.64) > 0.01 {
		t.Errorf("µs per transaction %v", us)
	}
}

func TestParseRROwn(t *testing.T) {
	for _, name := range []string{"rr-tcp_crr.txt", "rr-udp_rr.txt"} {
		r, err := ParseRR(string(read(t, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Transactions <= 0 || r.Throughput <= 0 || r.P50Us <= 0 || r.P99Us < r.P50Us || r.MaxUs < r.P99Us {
			t.Errorf("%s: %+v", name, r)
		}
		// 1e6 / throughput is the mean latency, which the report also has.
		if us := r.UsPerTransaction(); math.Abs(us-r.MeanUs)/r.MeanUs > 0.05 {
			t.Errorf("%s: 1e6/throughput %v µs, mean %v µs", name, us, r.MeanUs)
		}
	}
}

func TestParseRRErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":         "",
		"no throughput": "num_transactions=5\n",
		"zero":          "num_transactions=0\nthroughput=0\n",
		"garbage":       "num_transactions=5\nthroughput=fast\n",
		"negative":      "num_transactions=5\nthroughput=-3\n",
		"bad latency":   "num_transactions=5\nthroughput=3\nlatency_p50=x\n",
	} {
		if _, err := ParseRR(in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzParseIperf3 checks that no input makes the parser panic or accept a
// report without received bytes.
func FuzzParseIperf3(f *testing.F) {
	for _, n := range []string{"iperf3-tcp-p2.json", "iperf3-udp-1g.json", "iperf3-refused.json"} {
		f.Add(read(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseIperf3(b)
		if err == nil && (r.Bytes <= 0 || r.Seconds <= 0) {
			t.Errorf("accepted %+v", r)
		}
	})
}

// FuzzParseRR checks that no input makes the parser panic or accept a
// report without transactions.
func FuzzParseRR(f *testing.F) {
	for _, n := range []string{"neper-tcp_rr.txt", "rr-tcp_crr.txt", "rr-udp_rr.txt"} {
		f.Add(string(read(f, n)))
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRR(s)
		if err == nil && (r.Transactions <= 0 || r.Throughput <= 0) {
			t.Errorf("accepted %+v", r)
		}
	})
}
