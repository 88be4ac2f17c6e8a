// Recovery of guest data we dropped (a short write, or segments past a
// hole): duplicate ACKs until the guest has sent all of it again.

package tcp

import (
	"testing"

	"gopasst/datapath/packet"
)

// TestDupAcksUntilDroppedDataResent: the guest's segments past a hole are
// dropped; every ACK that is still short of the dropped data must come
// with three duplicates, also after the first retransmission filled the
// hole. The guest runs NewReno (no SACK): the ACK for its retransmission
// ends its fast recovery, and the segments it sent after entering it,
// which we dropped too, would otherwise wait for its retransmission
// timeout (seen in TestBidirTrace at MTU 65520: a 220-byte short write,
// six segments repaired by partial ACKs, then 212 ms of silence until the
// guest's RTO).
func TestDupAcksUntilDroppedDataResent(t *testing.T) {
	u := newUnitWorld(t)
	lfd, port := hostListen(t)
	_, gseq, hseq := u.handshake(t, lfd, port)
	const seg = 1000
	f1, f2 := make([]byte, 2000), make([]byte, 2000)

	// acks returns the ACK numbers of the pure ACKs queued since the last
	// call, and forgets them.
	acks := func() []uint32 {
		var a []uint32
		for k := 0; k < u.out.Queued(); k++ {
			tcp := queuedTCP(t, u.out, k)
			if tcp.Flags() != flagACK || tcp.PayloadLen() != 0 {
				t.Fatalf("frame %d: flags %#x, %d bytes", k, tcp.Flags(), tcp.PayloadLen())
			}
			a = append(a, tcp.Ack())
		}
		u.out.Flush()
		return a
	}
	want := func(step string, got []uint32, ack uint32, n int) {
		t.Helper()
		if len(got) != n {
			t.Fatalf("%s: %d ACKs %v, want %d of %d", step, len(got), got, n, ack)
		}
		for _, a := range got {
			if a != ack {
				t.Fatalf("%s: ACKs %v, want %d of %d", step, got, n, ack)
			}
		}
	}

	// Segments 0 and 2 of three: 2 lies past the hole and is dropped.
	u.h.FromGuest([]packet.Packet{
		guestFrame(f1, 40000, port, gseq, hseq, flagACK, 65535, nil, seg),
		guestFrame(f2, 40000, port, gseq+2*seg, hseq, flagACK, 65535, nil, seg),
	})
	want("hole", acks(), gseq+seg, 4)

	// The guest's fast retransmission fills the hole: segment 2 is
	// still missing, so the ACK of segment 1 needs its duplicates too.
	u.h.FromGuest([]packet.Packet{guestFrame(f1, 40000, port, gseq+seg, hseq, flagACK, 65535, nil, seg)})
	want("hole filled", acks(), gseq+2*seg, 4)

	// A further segment past the hole while segment 2 is missing: one
	// more duplicate, no new burst for the same ACK number.
	u.h.FromGuest([]packet.Packet{guestFrame(f2, 40000, port, gseq+3*seg, hseq, flagACK, 65535, nil, seg)})
	want("past the hole again", acks(), gseq+2*seg, 1)

	// Segments 2 and 3 again: everything is in, a single ACK.
	u.h.FromGuest([]packet.Packet{
		guestFrame(f1, 40000, port, gseq+2*seg, hseq, flagACK, 65535, nil, seg),
		guestFrame(f2, 40000, port, gseq+3*seg, hseq, flagACK, 65535, nil, seg),
	})
	want("all in", acks(), gseq+4*seg, 1)
	if c := &u.h.conns[u.h.active[0]]; c.flags&fLost != 0 {
		t.Errorf("fLost still set with nothing missing")
	}
}
