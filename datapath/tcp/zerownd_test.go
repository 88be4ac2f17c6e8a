// A receiver that stops reading, on either side: no spinning, no loss.

package tcp_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"gopasst/datapath/tcp"
)

// TestZeroWindow: a receiver that stops reading must not make the
// translator buffer or spin: with the transfer blocked its CPU stays near
// idle, and the transfer completes intact once the receiver reads again.
// Both directions: the guest stops reading (its window closes), and the
// host stops reading (our window to the guest closes).
func TestZeroWindow(t *testing.T) {
	port := hostPort(t)
	w := newWorld(t, 65520, func(h *tcp.Handler) {
		if err := h.ListenPort(netip.MustParseAddr("127.0.0.1"), port); err != nil {
			t.Fatal(err)
		}
	})
	const size = 64 << 20
	for _, dir := range []string{"guest stops reading", "host stops reading"} {
		t.Run(dir, func(t *testing.T) {
			var sender, receiver net.Conn
			if dir == "guest stops reading" {
				l, err := w.listenNS("tcp4", fmt.Sprintf(":%d", port))
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				acc := make(chan net.Conn, 1)
				go func() { c, _ := l.Accept(); acc <- c }()
				if sender, err = net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
					t.Fatal(err)
				}
				receiver = <-acc
			} else {
				l, addr := hostListener(t)
				acc := make(chan net.Conn, 1)
				go func() { c, _ := l.Accept(); acc <- c }()
				var err error
				if sender, err = w.dialNS("tcp4", addr, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				receiver = <-acc
			}
			defer sender.Close()
			defer receiver.Close()
			sender.SetDeadline(time.Now().Add(60 * time.Second))
			receiver.SetDeadline(time.Now().Add(60 * time.Second))
			sent := make(chan result32, 1)
			go func() {
				s, err := sendHashed(sender, size, 7)
				sent <- result32{s, err}
			}()
			// Let every buffer on the way fill up, then measure the
			// translator's CPU while nothing can move.
			time.Sleep(time.Second)
			c0, t0 := cpuTime(), time.Now()
			time.Sleep(2 * time.Second)
			cpu := (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
			select {
			case r := <-sent:
				t.Fatalf("sender finished while the receiver was not reading: %v", r.err)
			default:
			}
			n, got, err := recvHashed(receiver)
			r := <-sent
			if err != nil || r.err != nil || n != size || got != r.sum {
				t.Fatalf("after the stall: %d of %d bytes, %v, %v, hash match %v", n, size, err, r.err, got == r.sum)
			}
			t.Logf("CPU while stalled: %.1f%% of a core", 100*cpu)
			if cpu > 0.05 {
				t.Errorf("translator used %.0f%% CPU while the transfer was stalled", 100*cpu)
			}
		})
	}
}

type result32 struct {
	sum [32]byte
	err error
}
