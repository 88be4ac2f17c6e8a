// Tests of the RR tool against its own server on loopback.

package rr

import (
	"bytes"
	"net"
	"testing"
	"time"

	"gopasst/bench/toolout"
)

// freePort returns a TCP port that was free on loopback a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestClientServer runs each test for a bounded count against a server on
// loopback and checks that the report parses back with sane figures.
func TestClientServer(t *testing.T) {
	port := freePort(t)
	ready := make(chan struct{})
	go func() {
		err := Serve(ServerOptions{Addr: "127.0.0.1", Port: port}, func() { close(ready) })
		t.Errorf("server stopped: %v", err)
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
	for _, test := range []string{TCPRR, TCPCRR, UDPRR} {
		r, err := RunClient(ClientOptions{Test: test, Host: "127.0.0.1", Port: port,
			Duration: 3 * time.Second, Count: 200})
		if err != nil {
			t.Fatalf("%s: %v", test, err)
		}
		if r.Transactions != 200 || r.Throughput <= 0 || r.Min <= 0 || r.Max < r.P99 || r.P99 < r.P50 {
			t.Errorf("%s: %+v", test, r)
		}
		var out bytes.Buffer
		if err := r.Write(&out); err != nil {
			t.Fatal(err)
		}
		p, err := toolout.ParseRR(out.String())
		if err != nil {
			t.Fatalf("%s: own report does not parse: %v\n%s", test, err, out.String())
		}
		if p.Transactions != 200 || p.P50Us <= 0 {
			t.Errorf("%s: parsed %+v", test, p)
		}
	}
}

// TestClientNoServer checks that a client with nobody listening fails
// within its bound instead of hanging.
func TestClientNoServer(t *testing.T) {
	port := freePort(t)
	start := time.Now()
	for _, test := range []string{TCPRR, TCPCRR} {
		if _, err := RunClient(ClientOptions{Test: test, Host: "127.0.0.1", Port: port, Count: 1}); err == nil {
			t.Errorf("%s: no error without a server", test)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestPercentile(t *testing.T) {
	s := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {99, 10}, {0, 1}, {100, 10}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}
