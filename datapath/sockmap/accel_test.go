// Tests of the accelerator on its own, with real loopback sockets: Probe,
// pairing, bytes both ways (those queued before Pair first), a bare FIN,
// refusals, a full accelerator, no allocation, sockets in two network
// namespaces and of two families, and maps left empty by Unpair.

package sockmap

import (
	"errors"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/test/nstest"
)

// mapEntries counts the elements of the accelerator's three maps: the
// hashes by iteration, the sockmap by a lookup of every slot.
func mapEntries(t testing.TB, x *Accel) (flows, peers, sources int) {
	t.Helper()
	var k8 uint64
	var fs flowState
	it := x.flows.Iterate()
	for it.Next(&k8, &fs) {
		flows++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterating flows: %v", err)
	}
	var cookie uint64
	it = x.peers.Iterate()
	for it.Next(&k8, &cookie) {
		peers++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterating peers: %v", err)
	}
	var attr elemAttr
	for k := uint32(0); k < uint32(2*x.Capacity()); k++ {
		switch e := mapLookup(&attr, x.sourcesFD, unsafe.Pointer(&k), unsafe.Pointer(&cookie)); e {
		case 0:
			sources++
		case unix.ENOENT:
		default:
			t.Fatalf("looking up source %d: %v", k, e)
		}
	}
	return
}

// checkEmpty fails t unless no pair and no map element is left.
func checkEmpty(t testing.TB, x *Accel) {
	t.Helper()
	if n := x.InUse(); n != 0 {
		t.Errorf("%d pairs in use, want 0", n)
	}
	if f, p, s := mapEntries(t, x); f+p+s != 0 {
		t.Errorf("maps hold %d flow states, %d peers, %d sources; want none", f, p, s)
	}
}

// TestProbe: Probe's result is cached, and an accelerator has its maps.
func TestProbe(t *testing.T) {
	x := requireAccel(t)
	y, err := Probe(Options{MaxPairs: 1})
	if err != nil || y != x {
		t.Fatalf("second Probe: %p, %v; want the first's %p", y, err, x)
	}
	if x.Capacity() != DefaultMaxPairs {
		t.Errorf("capacity %d, want %d", x.Capacity(), DefaultMaxPairs)
	}
	for _, fd := range x.FDs() {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("map descriptor %d: %v", fd, err)
		}
	}
	checkEmpty(t, x)
}

// TestPairBothWays: bytes queued on both sockets before Pair arrive first,
// then round trips and a few MiB each way go through the kernel alone
// (our process reads nothing), and Unpair leaves the maps empty. Its
// accelerator's budget is beyond what is sent: with nobody to call Read,
// a direction over the budget would stop (TestSpliceSlowReader tests it).
func TestPairBothWays(t *testing.T) {
	requireAccel(t)
	x, err := newAccel(Options{MaxPairs: 4, MaxQueued: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	w := newWorld(t, nil)
	early1, early2 := []byte("queued before Pair on a"), []byte("and on b")
	w.c1.Write(early1)
	w.s2.Write(early2)
	waitQueued(t, w.a, len(early1))
	waitQueued(t, w.b, len(early2))
	if err := x.Pair(w.a, w.b); err != nil {
		t.Fatal(err)
	}
	defer x.Unpair(w.a, w.b)
	got := make([]byte, len(early1))
	if err := readFull(w.s2, got); err != nil || string(got) != string(early1) {
		t.Fatalf("server2 read %q, %v; want %q", got, err, early1)
	}
	got = got[:len(early2)]
	if err := readFull(w.c1, got); err != nil || string(got) != string(early2) {
		t.Fatalf("client1 read %q, %v; want %q", got, err, early2)
	}
	b := make([]byte, 1)
	for i := 0; i < 200; i++ {
		w.c1.Write([]byte{byte(i)})
		if err := readFull(w.s2, b); err != nil || b[0] != byte(i) {
			t.Fatalf("round trip %d: server2 read %v, %v", i, b, err)
		}
		w.s2.Write([]byte{byte(^i)})
		if err := readFull(w.c1, b); err != nil || b[0] != byte(^i) {
			t.Fatalf("round trip %d: client1 read %v, %v", i, b, err)
		}
	}
	const n = 4 << 20
	res := make(chan result, 2)
	go func() { res <- sendStream(w.c1, n, 64<<10, 1, true) }()
	go func() { res <- sendStream(w.s2, n, 64<<10, 2, true) }()
	got2 := make(chan result, 1)
	go func() { got2 <- recvN(w.s2, n) }()
	got1 := recvN(w.c1, n)
	sent := [2]result{<-res, <-res}
	if sent[0].err != nil || sent[1].err != nil {
		t.Fatalf("senders: %v, %v", sent[0].err, sent[1].err)
	}
	g2 := <-got2
	if got1.err != nil || g2.err != nil {
		t.Fatalf("receivers: %v, %v", got1.err, g2.err)
	}
	if g2.sum != sent[0].sum && g2.sum != sent[1].sum || got1.sum != sent[0].sum && got1.sum != sent[1].sum || got1.sum == g2.sum {
		t.Fatalf("SHA-256 differ: sent %x %x, got %x %x", sent[0].sum[:8], sent[1].sum[:8], g2.sum[:8], got1.sum[:8])
	}
	if q := queued(t, w.a) + queued(t, w.b); q != 0 {
		t.Errorf("%d bytes reached our sockets", q)
	}
	x.Unpair(w.a, w.b)
	checkEmpty(t, x)
}

// recvN reads exactly n bytes of c (ioTimeout at most) and hashes them.
func recvN(c interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, n int64) result {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 256<<10)
	h := newHash()
	var res result
	for res.n < n {
		b := buf
		if rem := n - res.n; rem < int64(len(b)) {
			b = b[:rem]
		}
		k, err := c.Read(b)
		h.Write(b[:k])
		res.n += int64(k)
		if err != nil {
			res.err = err
			break
		}
	}
	h.Sum(res.sum[:0])
	return res
}

// TestBareFIN: a FIN alone (a zero-length skb) is not redirected: the
// kernel would fail the peer's write of it with EPIPE and set the peer's
// error (seen on 6.18), resetting a connection that only half-closed.
func TestBareFIN(t *testing.T) {
	x := requireAccel(t)
	w := newWorld(t, nil)
	if err := x.Pair(w.a, w.b); err != nil {
		t.Fatal(err)
	}
	defer x.Unpair(w.a, w.b)
	w.c1.Write([]byte("abc"))
	b := make([]byte, 3)
	if err := readFull(w.s2, b); err != nil {
		t.Fatal(err)
	}
	w.c1.CloseWrite()
	if ev := pollEvents(t, w.a, unix.POLLRDHUP, ioTimeout); ev&unix.POLLRDHUP == 0 {
		t.Fatalf("socket a events %#x, want POLLRDHUP", ev)
	}
	if e, err := unix.GetsockoptInt(w.b, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
		t.Fatalf("socket b: SO_ERROR %v, %v after client1's FIN", unix.Errno(e), err)
	}
	w.s2.Write([]byte("xyz"))
	if err := readFull(w.c1, b); err != nil || string(b) != "xyz" {
		t.Fatalf("after the FIN, client1 read %q, %v", b, err)
	}
	// The FIN is ours to pass on: Read says so once nothing is held.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if n, e := x.Read(w.a, w.b, p[1], 1<<16); n != 0 || e != 0 {
		t.Fatalf("Read after the FIN: %d, %v; want 0, 0", n, e)
	}
	if n := testing.AllocsPerRun(100, func() { x.Read(w.a, w.b, p[1], 1<<16) }); n != 0 {
		t.Errorf("%v allocations per Read", n)
	}
}

// TestPairRefused: sockets the kernel refuses leave nothing behind, and
// Pair says why.
func TestPairRefused(t *testing.T) {
	x := requireAccel(t)
	before := x.Stats().Refused
	w := newWorld(t, nil)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := x.Pair(w.a, fd); err == nil {
		x.Unpair(w.a, fd)
		t.Fatal("Pair of an unconnected socket succeeded")
	} else {
		t.Logf("unconnected: %v", err)
	}
	u, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(u)
	if err := x.Pair(w.a, u); err == nil {
		x.Unpair(w.a, u)
		t.Fatal("Pair with a UDP socket succeeded")
	}
	if err := x.Pair(w.a, w.a); err == nil {
		t.Fatal("Pair of a socket with itself succeeded")
	}
	if err := x.Pair(w.a, w.b); err != nil {
		t.Fatalf("the good pair after refusals: %v", err)
	}
	if err := x.Pair(w.b, w.a); !errors.Is(err, unix.EALREADY) {
		t.Errorf("pairing twice: %v, want EALREADY", err)
	}
	x.Unpair(w.a, w.b)
	if got := x.Stats().Refused - before; got != 4 {
		t.Errorf("%d refusals counted, want 4", got)
	}
	checkEmpty(t, x)
	// Still usable as plain sockets.
	w.c1.Write([]byte("x"))
	waitQueued(t, w.a, 1)
}

// TestPairFull: a full accelerator refuses with ErrFull.
func TestPairFull(t *testing.T) {
	requireAccel(t)
	x, err := newAccel(Options{MaxPairs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	w1, w2 := newWorld(t, nil), newWorld(t, nil)
	if err := x.Pair(w1.a, w1.b); err != nil {
		t.Fatal(err)
	}
	if err := x.Pair(w2.a, w2.b); !errors.Is(err, ErrFull) {
		t.Errorf("second pair: %v, want ErrFull", err)
	}
	x.Unpair(w1.a, w1.b)
	if err := x.Pair(w2.a, w2.b); err != nil {
		t.Errorf("after Unpair: %v", err)
	}
	x.Unpair(w2.a, w2.b)
	checkEmpty(t, x)
}

// TestPairAllocs: Pair and Unpair allocate nothing in steady state.
func TestPairAllocs(t *testing.T) {
	x := requireAccel(t)
	w := newWorld(t, nil)
	x.Pair(w.a, w.b)
	x.Unpair(w.a, w.b)
	if n := testing.AllocsPerRun(100, func() {
		if err := x.Pair(w.a, w.b); err != nil {
			t.Fatal(err)
		}
		x.Unpair(w.a, w.b)
	}); n != 0 {
		t.Errorf("%v allocations per Pair and Unpair", n)
	}
	checkEmpty(t, x)
}

// TestPairAcrossNamespaces: the two sockets live in different network
// namespaces (as pasta's: the host's and the container's); cookies are
// unique across namespaces, and the redirect does not care.
func TestPairAcrossNamespaces(t *testing.T) {
	x := requireAccel(t)
	ns := nstest.NewNetns(t, "peer")
	ns.Output(t, "ip", "link", "set", "lo", "up")
	w := newWorld(t, ns)
	if err := x.Pair(w.a, w.b); err != nil {
		t.Fatal(err)
	}
	defer x.Unpair(w.a, w.b)
	msg := []byte("from the host's loopback to the namespace's")
	w.c1.Write(msg)
	got := make([]byte, len(msg))
	if err := readFull(w.s2, got); err != nil || string(got) != string(msg) {
		t.Fatalf("server2 read %q, %v", got, err)
	}
	w.s2.Write(msg[:4])
	if err := readFull(w.c1, got[:4]); err != nil || string(got[:4]) != string(msg[:4]) {
		t.Fatalf("client1 read %q, %v", got[:4], err)
	}
	x.Unpair(w.a, w.b)
	checkEmpty(t, x)
}

// TestPairIPv6: an IPv6 connection paired with an IPv4 one (pasta splices
// either family to either).
func TestPairIPv6(t *testing.T) {
	x := requireAccel(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	c6, err := net.DialTimeout("tcp6", ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	s6, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s6.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s6.Close()
	w := newWorld(t, nil)
	a := int(f.Fd())
	if err := x.Pair(a, w.b); err != nil {
		t.Fatal(err)
	}
	defer x.Unpair(a, w.b)
	c6.Write([]byte("six to four"))
	got := make([]byte, 11)
	if err := readFull(w.s2, got); err != nil || string(got) != "six to four" {
		t.Fatalf("server2 read %q, %v", got, err)
	}
	w.s2.Write([]byte("four to six"))
	if err := readFull(c6, got); err != nil || string(got) != "four to six" {
		t.Fatalf("IPv6 client read %q, %v", got, err)
	}
	x.Unpair(a, w.b)
	checkEmpty(t, x)
}

// TestNudge shows what Pair's nudge (SO_RCVLOWAT) is for: without it, bytes
// queued on a socket before Pair wait for the next segment to arrive, as
// the kernel runs the program from data_ready only.
func TestNudge(t *testing.T) {
	requireAccel(t)
	x, err := newAccel(Options{MaxPairs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	x.skipNudge = true
	w := newWorld(t, nil)
	w.c1.Write([]byte("early"))
	waitQueued(t, w.a, 5)
	if err := x.Pair(w.a, w.b); err != nil {
		t.Fatal(err)
	}
	defer x.Unpair(w.a, w.b)
	b := make([]byte, 16)
	w.s2.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := w.s2.Read(b); err == nil {
		t.Fatalf("without the nudge, server2 read %q at once", b[:n])
	}
	w.c1.Write([]byte("-late"))
	if err := readFull(w.s2, b[:10]); err != nil || string(b[:10]) != "early-late" {
		t.Fatalf("after more bytes, server2 read %q, %v", b[:10], err)
	}
}
