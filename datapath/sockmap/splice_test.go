// Tests of the accelerator through the real splice engine
// (splice.New with Options.Accel): bulk both ways at once with FINs right
// behind the data, a slow reader that sends a direction back to the
// engine, resets both ways, round trips, early bytes, and many short
// connections, each leaving the maps empty.

package sockmap

import (
	"io"
	"testing"
	"time"
)

// TestSpliceBulk moves 64 MiB each way at once through the engine with
// the accelerator, each sender shutting down right after its last write,
// and compares SHA-256 on both ends.
func TestSpliceBulk(t *testing.T) {
	x := requireAccel(t)
	e := newEngine(t, x)
	before := e.accelStats()
	c, s := e.dial(t)
	const n = 64 << 20
	sent := make(chan result, 2)
	go func() { sent <- sendStream(c, n, 64<<10, 1, false) }()
	go func() { sent <- sendStream(s, n, 64<<10, 2, false) }()
	atServer := make(chan result, 1)
	go func() { atServer <- recvStream(s, 256<<10, 0) }()
	atClient := recvStream(c, 256<<10, 0)
	s1, s2 := <-sent, <-sent
	if s1.sum == s2.sum {
		t.Fatal("the two streams are the same")
	}
	up, down := s1, s2
	if got := <-atServer; got.sum == s2.sum {
		up, down = s2, s1
		checkStream(t, "client to server", up, got)
	} else {
		checkStream(t, "client to server", up, got)
	}
	checkStream(t, "server to client", down, atClient)
	st := e.waitConns()
	if st.Pairs != 1 || st.Closed != 1 || st.Reset != 0 {
		t.Errorf("engine stats %+v, want 1 pair closed cleanly", st)
	}
	d := e.accelStats()
	t.Logf("directions given back to the engine: %d", d.Returned-before.Returned)
	if d.Pairs-before.Pairs != 1 || d.Unpairs-before.Unpairs != 1 {
		t.Errorf("accelerator stats %+v (before %+v)", d, before)
	}
	checkEmpty(t, x)
}

// TestSpliceSlowReader: a reader much slower than its sender pushes the
// direction over MaxQueued; the engine takes it over (Read copies what
// the program passed up) with no byte lost or reordered, and the sender
// is held back by TCP's window meanwhile (the kernel holds at most about
// MaxQueued for the slow peer).
func TestSpliceSlowReader(t *testing.T) {
	x := requireAccel(t)
	e := newEngine(t, x)
	before := e.accelStats()
	c, s := e.dial(t)
	const n = 24 << 20
	sent := make(chan result, 1)
	go func() { sent <- sendStream(c, n, 64<<10, 3, false) }()
	// About 1.5 s: 64 KiB every 4 ms is 16 MiB/s.
	got := recvStream(s, 64<<10, 4*time.Millisecond)
	checkStream(t, "to the slow reader", <-sent, got)
	// The other direction still works, and ends.
	reply := []byte("done")
	s.Write(reply)
	s.CloseWrite()
	b, err := io.ReadAll(deadlined(c))
	if err != nil || string(b) != string(reply) {
		t.Errorf("client read %q, %v; want %q", b, err, reply)
	}
	st := e.waitConns()
	if st.Closed != 1 || st.Reset != 0 {
		t.Errorf("engine stats %+v", st)
	}
	if r := e.accelStats().Returned - before.Returned; r < 1 {
		t.Errorf("no direction given back to the engine: the reader was not slow enough to test it")
	}
	checkEmpty(t, x)
}

// deadlined returns c with a read deadline ioTimeout away.
func deadlined(c interface {
	io.Reader
	SetReadDeadline(time.Time) error
}) io.Reader {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	return c
}

// TestSpliceReset: a reset on either side reaches the other, and the pair
// leaves the maps.
func TestSpliceReset(t *testing.T) {
	x := requireAccel(t)
	e := newEngine(t, x)
	for _, clientResets := range []bool{true, false} {
		c, s := e.dial(t)
		c.Write([]byte("hello"))
		b := make([]byte, 5)
		if err := readFull(s, b); err != nil {
			t.Fatal(err)
		}
		from, to := c, s
		if !clientResets {
			from, to = s, c
		}
		from.SetLinger(0)
		from.Close()
		to.SetReadDeadline(time.Now().Add(ioTimeout))
		_, err := io.ReadAll(to)
		if !isReset(err) {
			t.Errorf("client resets %v: the other side read %v, want a reset", clientResets, err)
		}
	}
	if st := e.waitConns(); st.Reset != 2 {
		t.Errorf("engine stats %+v, want 2 resets", st)
	}
	checkEmpty(t, x)
}

// TestSpliceRR: request/response round trips of one byte, and bytes the
// client wrote before the engine's connect completed (queued on the
// accepted socket before Pair) arriving first.
func TestSpliceRR(t *testing.T) {
	x := requireAccel(t)
	e := newEngine(t, x)
	c, s := e.dial(t)
	b := make([]byte, 1)
	for i := 0; i < 5000; i++ {
		c.Write([]byte{byte(i)})
		if err := readFull(s, b); err != nil || b[0] != byte(i) {
			t.Fatalf("round trip %d: server read %v, %v", i, b, err)
		}
		s.Write([]byte{byte(i * 7)})
		if err := readFull(c, b); err != nil || b[0] != byte(i*7) {
			t.Fatalf("round trip %d: client read %v, %v", i, b, err)
		}
	}
	c.Close()
	s.Close()
	if st := e.waitConns(); st.Pairs != 1 || st.BytesToDst+st.BytesFromDst != 0 {
		t.Errorf("engine stats %+v: want 1 pair, no byte spliced", st)
	}
	checkEmpty(t, x)
}

// TestSpliceShort: many short connections, each with early bytes, a
// request, an answer and a close from the server first: no pair, map
// element or descriptor left.
func TestSpliceShort(t *testing.T) {
	x := requireAccel(t)
	e := newEngine(t, x)
	fds := countFDs(t)
	for i := 0; i < 300; i++ {
		c, s := e.dial(t)
		c.Write([]byte("request"))
		b := make([]byte, 7)
		if err := readFull(s, b); err != nil || string(b) != "request" {
			t.Fatalf("connection %d: server read %q, %v", i, b, err)
		}
		s.Write([]byte("answer"))
		s.Close()
		got, err := io.ReadAll(deadlined(c))
		if err != nil || string(got) != "answer" {
			t.Fatalf("connection %d: client read %q, %v", i, got, err)
		}
		c.Close()
	}
	st := e.waitConns()
	if st.Pairs != 300 || st.Reset != 0 {
		t.Errorf("engine stats %+v", st)
	}
	checkEmpty(t, x)
	// The test's own connections were closed; the engine's pools refill
	// to what they held.
	if now := countFDs(t); now > fds+8 {
		t.Errorf("%d descriptors open, %d before", now, fds)
	}
}
