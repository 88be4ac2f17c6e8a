// The paths that save system calls per connection or per transaction:
// the peek offset turned on only once data is in flight, and the window
// estimated between SO_MEMINFO queries. Each is checked by the bytes and
// sequence numbers that cross, not by counting calls.

package tcp

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/packet"
)

// pattern returns n bytes of a pattern that differs at every offset of
// interest, from offset off on.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) * 7 / 3)
	}
	return b
}

// hostData writes b to the host socket hfd and turns the loop until
// frames towards the guest are queued; it returns their payloads, each
// with its sequence number, and flushes them.
func (u *unitWorld) hostData(t *testing.T, hfd int, b []byte) (seqs []uint32, data [][]byte) {
	t.Helper()
	if len(b) > 0 {
		if n, err := unix.Write(hfd, b); n != len(b) {
			t.Fatalf("host write: %d, %v", n, err)
		}
	}
	for i := 0; i < 50 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	return u.takeData(t)
}

// takeData returns the payloads of the frames queued towards the guest,
// with their sequence numbers, and flushes them.
func (u *unitWorld) takeData(t *testing.T) (seqs []uint32, data [][]byte) {
	t.Helper()
	for k := 0; k < u.out.Queued(); k++ {
		tcp := queuedTCP(t, u.out, k)
		if tcp.PayloadLen() > 0 {
			seqs = append(seqs, tcp.Seq())
			data = append(data, bytes.Clone(tcp.Payload()))
		}
	}
	u.out.Flush()
	return seqs, data
}

// wantData fails t unless the payloads are one segment at seq holding want.
func wantData(t *testing.T, step string, seqs []uint32, data [][]byte, seq uint32, want []byte) {
	t.Helper()
	if len(data) != 1 || seqs[0] != seq || !bytes.Equal(data[0], want) {
		l := -1
		if len(data) > 0 {
			l = len(data[0])
		}
		t.Fatalf("%s: %d segments (first at %v, %d bytes), want %d bytes at %d", step, len(data), seqs, l, len(want), seq)
	}
}

// TestPeekOffsetLazy: the peek offset is turned on at the first peek
// with data in flight. Data sent before and after that, resent after a
// rewind that comes before the offset was ever turned on, and after one
// that comes after, reaches the guest at the right sequence numbers with
// the right bytes; acknowledged data is dropped from the socket in step.
func TestPeekOffsetLazy(t *testing.T) {
	u := newUnitWorld(t)
	lfd, port := hostListen(t)
	hfd, gseq, hseq := u.handshake(t, lfd, port)
	f := make([]byte, 200)
	dupAck := func(ack uint32) {
		u.h.FromGuest([]packet.Packet{guestFrame(f, 40000, port, gseq, ack, flagACK, 65535, nil, 0)})
	}

	// Nothing in flight: a plain peek from the head.
	s, d := u.hostData(t, hfd, pattern(0, 500))
	wantData(t, "first data", s, d, hseq, pattern(0, 500))
	if c := &u.h.conns[u.h.active[0]]; u.h.peekOff && c.flags&fPeekOff != 0 {
		t.Fatalf("peek offset on before any peek with data in flight")
	}

	// A duplicate ACK before the offset was ever on: resent from the
	// head, the same bytes.
	dupAck(hseq)
	s, d = u.takeData(t)
	wantData(t, "resent before the offset", s, d, hseq, pattern(0, 500))

	// More data with 500 bytes in flight: peeked past them.
	s, d = u.hostData(t, hfd, pattern(500, 700))
	wantData(t, "data past data in flight", s, d, hseq+500, pattern(500, 700))

	// A rewind with the offset on: everything again from the guest's ACK.
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40000, port, gseq, hseq+200, flagACK, 65535, nil, 0)})
	u.out.Flush()
	dupAck(hseq + 200)
	s, d = u.takeData(t)
	wantData(t, "resent after the offset", s, d, hseq+200, pattern(200, 1000))

	// All acknowledged: the next data starts where the stream goes on.
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40000, port, gseq, hseq+1200, flagACK, 65535, nil, 0)})
	u.out.Flush()
	s, d = u.hostData(t, hfd, pattern(1200, 300))
	wantData(t, "after the ACK of everything", s, d, hseq+1200, pattern(1200, 300))
}

// TestWindowEstimate: a guest that sends within the window we offer,
// small segments (where the window is estimated between SO_MEMINFO
// queries) alternating with segments as large as the window allows, to a
// host peer that reads nothing, never has a byte refused by the socket
// (no short write) and ends at a zero window; once the peer reads, the
// window opens again (a window update, no stall) and the peer has every
// byte in order.
func TestWindowEstimate(t *testing.T) {
	u := newUnitWorld(t)
	lfd, port := hostListen(t)
	hfd, gseq, hseq := u.handshake(t, lfd, port)
	const seg, maxRun = 60000, 1
	frames := make([][]byte, maxRun)
	for k := range frames {
		frames[k] = make([]byte, 200+seg)
	}
	f := frames[0]
	start := gseq
	lastWnd := func() uint32 {
		t.Helper()
		n := u.out.Queued()
		if n == 0 {
			t.Fatalf("no ACK at %d", gseq-start)
		}
		a := queuedTCP(t, u.out, n-1)
		if a.Ack() != gseq {
			t.Fatalf("ACK %d, want %d", a.Ack()-start, gseq-start)
		}
		w := uint32(a.Window()) << ourWS
		u.out.Flush()
		return w
	}
	// The ACK of the handshake's last segment is not queued: ask with
	// a keepalive, which gets an answer.
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40000, port, gseq-1, hseq, flagACK, 65535, nil, 0)})
	wnd := lastWnd()
	pkts := make([]packet.Packet, 0, maxRun)
	for round := 0; round < 2000 && wnd > 0; round++ {
		// Small writes (the estimate's case) alternate with segments
		// of up to the whole window.
		left := min(int(wnd), seg)
		if round%2 == 0 {
			left = min(left, 100)
		}
		pkts = pkts[:0]
		seq := gseq
		for k := 0; left > 0 && k < maxRun; k++ {
			n := min(left, seg)
			p := guestFrame(frames[k], 40000, port, seq, hseq, flagACK|flagPSH, 65535, nil, n)
			copy(p.L4Bytes()[20:], pattern(int(seq-start), n))
			pkts = append(pkts, p)
			seq += uint32(n)
			left -= n
		}
		u.h.FromGuest(pkts)
		if u.h.Stats.ShortWrites != 0 {
			t.Fatalf("short write in round %d at %d bytes: the window promised more than the socket took", round, gseq-start)
		}
		gseq = seq
		wnd = lastWnd()
	}
	if wnd != 0 {
		t.Fatalf("window still %d after %d bytes", wnd, gseq-start)
	}
	sent := int(gseq - start)
	t.Logf("%d bytes to a zero window", sent)

	// The peer reads everything: the window opens again.
	got := make([]byte, 0, sent)
	buf := make([]byte, 1<<16)
	for len(got) < sent {
		n, err := unix.Read(hfd, buf)
		if n <= 0 {
			t.Fatalf("host read after %d of %d bytes: %v", len(got), sent, err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, pattern(0, sent)) {
		t.Fatalf("the host peer's bytes differ from what the guest sent")
	}
	for i := 0; i < 100 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	if w := lastWnd(); w == 0 {
		t.Fatalf("no window update after the peer read")
	}
}
