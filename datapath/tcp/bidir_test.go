// Experiment: both directions at once over one connection (as pasta's
// integrity test does), with an in-memory trace of every frame, dumped
// when the guest's kernel hits a retransmission timeout.

package tcp_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"gopasst/datapath/tap"
	"gopasst/datapath/tcp"
)

// ringRecorder returns the hook that records every frame queued towards
// the guest in r, with the counters of the handler *h once it exists.
func ringRecorder(r *ring, h **tcp.Handler) func(frame []byte, vh *tap.VnetHdr) {
	return func(frame []byte, _ *tap.VnetHdr) {
		stats := ""
		if *h != nil {
			s := (*h).Stats
			stats = fmt.Sprintf(" {sw %d dup %d fr %d rto %d}", s.ShortWrites, s.DupAcks, s.FastRetrans, s.RTOs)
		}
		r.add(">guest " + describe(frame) + stats)
	}
}

// ring keeps the last lines of a trace.
type ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
	start time.Time
}

func newRing(n int) *ring { return &ring{lines: make([]string, n), start: time.Now()} }

func (r *ring) add(s string) {
	r.mu.Lock()
	r.lines[r.next] = fmt.Sprintf("%9.6f %s", time.Since(r.start).Seconds(), s)
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

func (r *ring) dump(f *os.File) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full {
		for _, l := range r.lines[r.next:] {
			fmt.Fprintln(f, l)
		}
	}
	for _, l := range r.lines[:r.next] {
		fmt.Fprintln(f, l)
	}
}

// TestBidirTrace moves size bytes each way at once, namespace to host
// loopback, repeatedly, and dumps the trace on a guest timeout.
func TestBidirTrace(t *testing.T) {
	if os.Getenv("TCP_BIDIR") == "" {
		t.Skip("experiment: set TCP_BIDIR")
	}
	mtu := 65520
	if m, err := strconv.Atoi(os.Getenv("TCP_MTU")); err == nil {
		mtu = m
	}
	rounds := 20
	if m, err := strconv.Atoi(os.Getenv("TCP_ROUNDS")); err == nil {
		rounds = m
	}
	r := newRing(200000)
	var hp *tcp.Handler
	ringHook = func(w *world) func([]byte, *tap.VnetHdr) { return ringRecorder(r, &hp) }
	defer func() { ringHook = nil }()
	guestTrace = r
	defer func() { guestTrace = nil }()
	w := newWorld(t, mtu, nil)
	hp = w.h
	dumps := 0
	for round := 0; round < rounds; round++ {
		for _, v6 := range []bool{false, true} {
			network, lo, gw := "tcp4", netip.MustParseAddr("127.0.0.1"), gw4
			if v6 {
				network, lo, gw = "tcp6", netip.IPv6Loopback(), gw6
			}
			l, err := net.Listen(network, netip.AddrPortFrom(lo, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			port := uint16(l.Addr().(*net.TCPAddr).Port)
			acc := make(chan net.Conn, 1)
			go func() { c, _ := l.Accept(); acc <- c }()
			g, err := w.dialNS(network, netip.AddrPortFrom(gw, port).String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var hc net.Conn
			select {
			case hc = <-acc:
			case <-time.After(5 * time.Second):
				t.Fatal("accept timed out")
			}
			l.Close()
			r.add(fmt.Sprintf("=== round %d v6=%v port %d", round, v6, port))
			r0, to0 := tcpCounters(t, w.ns)
			size := int64(32 << 20)
			deadline := time.Now().Add(60 * time.Second)
			g.SetDeadline(deadline)
			hc.SetDeadline(deadline)
			var wg sync.WaitGroup
			var e1, e2, e3, e4 error
			var n1, n2 int64
			start := time.Now()
			wg.Add(4)
			go func() { defer wg.Done(); _, e1 = sendHashed(g, size, 1) }()
			go func() { defer wg.Done(); _, e2 = sendHashed(hc, size, 2) }()
			go func() { defer wg.Done(); n1, _, e3 = recvHashed(hc) }()
			go func() { defer wg.Done(); n2, _, e4 = recvHashed(g) }()
			wg.Wait()
			d := time.Since(start)
			g.Close()
			hc.Close()
			r1, to1 := tcpCounters(t, w.ns)
			t.Logf("round %d v6=%v: %v, guest retrans %d timeouts %d; %+v; errs %v %v %v %v; %d %d", round, v6, d.Round(time.Millisecond), r1-r0, to1-to0, w.h.Stats, e1, e2, e3, e4, n1, n2)
			if to1 > to0 || d > 2*time.Second {
				time.Sleep(100 * time.Millisecond)
				f, _ := os.Create(fmt.Sprintf("%s/gopasst-bidir-trace-%d-%d.txt", os.TempDir(), os.Getpid(), round))
				r.dump(f)
				f.Close()
				t.Errorf("round %d v6=%v: %d timeouts, trace in %s", round, v6, to1-to0, f.Name())
				if dumps++; dumps == 3 {
					return
				}
			}
		}
	}
}
