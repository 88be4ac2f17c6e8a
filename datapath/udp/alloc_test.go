// The steady-state datagram paths allocate nothing.
package udp

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config/configtest"
	"gopasst/datapath/packet"
)

// TestAllocsGuestToHost: datagrams of existing flows (a batch of two flows,
// three datagrams each) cost no allocation.
func TestAllocsGuestToHost(t *testing.T) {
	enterNetns(t)
	r := newRig(t, 64, false)
	a, b := listenUDP(t, lo4, 0), listenUDP(t, lo6, 0)
	var pkts []packet.Packet
	for i := 0; i < 3; i++ {
		pkts = append(pkts, guestUDP(configtest.Guest4, 44000, configtest.Gateway4, a.port, 64, make([]byte, 1000)),
			guestUDP(configtest.Guest6, 44000, configtest.Gateway6, b.port, 64, make([]byte, 1000)))
	}
	r.h.FromGuest(pkts) // creates the flows
	sent := r.h.Stats.ToHost
	allocs := testing.AllocsPerRun(100, func() { r.h.FromGuest(pkts) })
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
	if got := r.h.Stats.ToHost - sent; got != 101*6 {
		t.Fatalf("%d datagrams sent, want %d", got, 101*6)
	}
}

// TestAllocsHostToGuest: a datagram from the peer of an existing flow, read
// with recvmmsg into a reserved frame and completed with headers and
// checksum, costs no allocation, loop turn included.
func TestAllocsHostToGuest(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, false)
			srv := listenUDP(t, fam.loopback, 0)
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 44001, fam.gw, srv.port, 64, []byte("x"))})
			_, from := srv.recv(t)
			if err := unix.Connect(srv.fd, sockaddrOf(from)); err != nil {
				t.Fatal(err)
			}
			payload := make([]byte, 1400)
			before := r.out.Count()
			allocs := testing.AllocsPerRun(100, func() {
				unix.Write(srv.fd, payload)
				r.l.Turn(time.Second)
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per datagram", allocs)
			}
			if got := r.out.Count() - before; got != 101 {
				t.Fatalf("%d frames to the guest, want 101", got)
			}
		})
	}
}
