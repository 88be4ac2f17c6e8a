// End-to-end tests of TCP through the real pasta (issue 6): bulk integrity
// both ways with SHA-256 at both ends and the namespace's retransmission
// counters, 1000 concurrent connections and pasta's descriptors afterwards,
// half-close, resets, refusals and both close orders, and a receiver that
// stops reading (pasta idle, not buffering, then the transfer completes).
//
// Two paths cross pasta's tap, and the tests run over both: "outbound",
// a client in pasta's namespace connecting to the gateway address, which
// pasta maps to a server on the host namespace's loopback; "inbound", a
// client in the host namespace connecting to its own address at a port
// forwarded with -t, carried over the tap (a non-loopback source is never
// spliced) to a server in pasta's namespace. Every socket is opened by Go
// code on a thread inside the namespace it belongs to (nstest Do), and
// every wait is bounded.

package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// tcpWorld is pasta running in a host of its own, with --config-net and
// one TCP port forwarded from the host into the namespace.
type tcpWorld struct {
	peer nstest.Peer
	h    *nstest.Host
	p    *nstest.Pasta
	// port is the forwarded port (-t port); inbound is the server
	// listening on it in pasta's namespace, on the wildcard address.
	port    int
	inbound *net.TCPListener
	// worker is the PID of the process that runs the datapath: gopasst's
	// sandboxed child of the supervisor, or pasta itself (Debian's).
	worker int
	// outPort and outbound, in a splice world (newSpliceWorld), are the
	// namespace-to-host forward (-T outPort) and the host's server on
	// it, on the wildcard address of both families.
	outPort  int
	outbound *net.TCPListener
}

// newTCPWorld starts peer's pasta (--config-net, -t PORT, nothing else
// forwarded) in a new host as mode says, and the namespace's server on
// PORT. It fails t if a step fails.
func newTCPWorld(t *testing.T, peer nstest.Peer, mode pastaMode) *tcpWorld {
	t.Helper()
	w := &tcpWorld{peer: peer, h: nstest.NewHost(t)}
	w.port = w.h.FreePort(t, "tcp")
	ps := strconv.Itoa(w.port)
	w.p = startPasta(t, w.h, peer, mode, "--config-net", "-t", ps, "-u", "none", "-T", "none", "-U", "none")
	w.inbound = nsListenTCP(t, w.p, ":"+ps)
	w.worker = pastaWorker(t, w.p.PID)
	return w
}

// alive fails t at once if pasta has exited (with its status and output),
// so that the subtests after a crash do not each wait for their timeouts.
func (w *tcpWorld) alive(t *testing.T) {
	t.Helper()
	if w.p.Proc.Exited() {
		code, _ := w.p.Proc.Wait(0)
		t.Fatalf("pasta exited with status %d:\n%s", code, w.p.Proc.Output())
	}
}

// nsListenTCP opens a TCP listener on address inside pasta's namespace,
// closed at t's cleanup.
func nsListenTCP(t *testing.T, p *nstest.Pasta, address string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	if err := p.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", address)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in pasta's namespace: %v", address, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// pastaWorker returns the PID of the process of pasta pid that runs the
// datapath: its only child if it has one (gopasst's supervisor starts the
// sandboxed process; in attach mode it has no other child), else pid
// itself (Debian's pasta in the foreground). It waits up to 10 s for the
// child to appear after a first look finds none, as gopasst starts it
// right away.
func pastaWorker(t *testing.T, pid int) int {
	t.Helper()
	var kids []int
	nstest.Poll(2*time.Second, func() bool {
		kids = childPIDs(pid)
		return len(kids) > 0
	})
	switch len(kids) {
	case 0:
		return pid
	case 1:
		return kids[0]
	}
	t.Fatalf("pasta %d has %d children (%v): cannot tell which runs the datapath", pid, len(kids), kids)
	return 0
}

// childPIDs returns the children of every thread of pid.
func childPIDs(pid int) []int {
	var out []int
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// reasonDebianTCP is why these tests skip Debian's pasta: run against it
// (2026-11-23) they fail in ways that are its known limits, not the
// harness's: the namespace-to-host tap path stalls with retransmission
// timeouts (perf.md); a forwarded connection reaches the namespace only
// once the host's client has sent data; after the namespace's half-close
// the host's data stops; resets either way arrive as a plain FIN; a
// connection to a closed port times out instead of being refused.
const reasonDebianTCP = "fails these TCP checks (seen 2026-11-23): namespace-to-host stalls with retransmission timeouts, forwarded connections reach the namespace only after the host's client sends, data after the namespace's half-close stops, resets arrive as FIN, closed ports time out instead of refusing"

// forEachTCPPeer runs fn as a subtest per peer, like forEachPeer, skipping
// Debian's pasta with reasonDebianTCP.
func forEachTCPPeer(t *testing.T, fn func(t *testing.T, peer nstest.Peer)) {
	t.Helper()
	forEachPeerBut(t, reasonDebianTCP, fn)
}

// forEachPeerBut runs fn as a subtest per peer, like forEachPeer, skipping
// Debian's pasta with reason (its known limit for these checks).
func forEachPeerBut(t *testing.T, reason string, fn func(t *testing.T, peer nstest.Peer)) {
	t.Helper()
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		if peer.Name == "debian" {
			t.Skipf("%s %s", debianVersion, reason)
		}
		fn(t, peer)
	})
}

// tcpPath is one way through pasta's tap, or its splice path, for one
// address family.
type tcpPath struct {
	name    string
	inbound bool // host client to the forwarded port, else guest client to the gateway
	v6      bool
	// splice: between the loopbacks (inbound: the host's client to
	// 127.0.0.1 or ::1 at the -t port; outbound: the namespace's client
	// to its own loopback at the -T port), which pasta splices; needs a
	// splice world.
	splice bool
}

// addr returns where a client on path dials in w, and the namespace it
// dials from (the host's for inbound paths, pasta's for outbound ones),
// for paths whose server is one of w's listeners (all but the outbound tap
// path, whose server the caller makes).
func (w *tcpWorld) addr(path tcpPath) string {
	switch {
	case path.splice && path.inbound:
		return net.JoinHostPort(loopback(path.v6), strconv.Itoa(w.port))
	case path.splice:
		return net.JoinHostPort(loopback(path.v6), strconv.Itoa(w.outPort))
	case path.v6:
		return net.JoinHostPort(nstest.HostAddr6.Addr().String(), strconv.Itoa(w.port))
	}
	return net.JoinHostPort(nstest.HostAddr4.Addr().String(), strconv.Itoa(w.port))
}

// loopback returns the loopback address of the family.
func loopback(v6 bool) string {
	if v6 {
		return "::1"
	}
	return "127.0.0.1"
}

// tcpPaths are the four paths the tests run over.
var tcpPaths = []tcpPath{
	{name: "outbound-ipv4"},
	{name: "outbound-ipv6", v6: true},
	{name: "inbound-ipv4", inbound: true},
	{name: "inbound-ipv6", inbound: true, v6: true},
}

// splicePaths are the four loopback paths the splice tests run over.
var splicePaths = []tcpPath{
	{name: "splice-outbound-ipv4", splice: true},
	{name: "splice-outbound-ipv6", v6: true, splice: true},
	{name: "splice-inbound-ipv4", inbound: true, splice: true},
	{name: "splice-inbound-ipv6", inbound: true, v6: true, splice: true},
}

// connect opens one connection along path and returns its two ends: the
// guest's (in pasta's namespace) and the host's. On the outbound path the
// guest is the client and a new server on the host's loopback accepts; on
// the inbound path the host's client connects to its own address at the
// forwarded port and w.inbound accepts. A connection refused by the host's
// side of the forward is retried for up to 5 s (pasta's listener may trail
// its readiness). Both ends are closed at t's cleanup.
func (w *tcpWorld) connect(t *testing.T, path tcpPath) (guest, host *net.TCPConn) {
	t.Helper()
	w.alive(t)
	var ln *net.TCPListener
	var dial func() (net.Conn, error)
	if path.splice && !path.inbound {
		// pasta's -T listener in the namespace may trail the tap
		// the harness waits for: retry a refusal, as inbound.
		ln = w.outbound
		addr := w.addr(path)
		dial = func() (net.Conn, error) {
			var c net.Conn
			var err error
			nstest.Poll(5*time.Second, func() bool {
				c, err = w.p.Dial("tcp", addr, 5*time.Second)
				return !errors.Is(err, syscall.ECONNREFUSED)
			})
			return c, err
		}
	} else if path.inbound {
		ln = w.inbound
		addr := w.addr(path)
		dial = func() (net.Conn, error) {
			var c net.Conn
			var err error
			nstest.Poll(5*time.Second, func() bool {
				err = w.h.Do(func() error {
					var derr error
					c, derr = net.DialTimeout("tcp", addr, 5*time.Second)
					return derr
				})
				return !errors.Is(err, syscall.ECONNREFUSED)
			})
			return c, err
		}
	} else {
		lo, gw := "127.0.0.1", nstest.HostGW4.String()
		if path.v6 {
			lo, gw = "::1", nstest.HostGW6.String()
		}
		ln = w.h.Listen(t, "tcp", net.JoinHostPort(lo, "0")).(*net.TCPListener)
		addr := net.JoinHostPort(gw, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		dial = func() (net.Conn, error) { return w.p.Dial("tcp", addr, 5*time.Second) }
	}

	// On the inbound path the accept waits for the client's port: the
	// listener is shared by the subtests, and a connection a failed one
	// left behind must not stand in for this one. pasta keeps the source
	// port of a forwarded connection, as passt does. (Outbound, the
	// listener is new, and pasta's socket has a port of its own.)
	clientPort := make(chan int, 1)
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		ln.SetDeadline(time.Now().Add(10 * time.Second))
		want := -1
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			if want < 0 {
				want = <-clientPort
			}
			// The splice path connects from a socket of pasta's
			// own on the other side: no port to compare.
			if !path.inbound || path.splice || c.RemoteAddr().(*net.TCPAddr).Port == want {
				accepted <- c
				return
			}
			t.Logf("%s: accepted a stray connection from %v (not from port %d): closed", path.name, c.RemoteAddr(), want)
			c.Close()
		}
	}()
	client, err := dial()
	if err == nil {
		clientPort <- client.LocalAddr().(*net.TCPAddr).Port
	}
	if err != nil {
		ln.SetDeadline(time.Now()) // ends the accept
		<-acceptErr
		err = fmt.Errorf("%s: dial: %w", path.name, err)
		if path.inbound && path.v6 {
			knownLimit(t, w.peer, reasonInbound6, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	var server net.Conn
	select {
	case server = <-accepted:
	case err := <-acceptErr:
		err = fmt.Errorf("%s: accept after the client connected: %w", path.name, err)
		if path.inbound && path.v6 {
			knownLimit(t, w.peer, reasonInbound6, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	if path.inbound {
		return server.(*net.TCPConn), client.(*net.TCPConn)
	}
	return client.(*net.TCPConn), server.(*net.TCPConn)
}

// The test data: a pseudo-random stream per seed, any byte of which can be
// computed from its offset (SplitMix64 of the seed and the 8-byte word
// index), so that a receiver checks each byte where it lands and reports
// the first wrong offset, whatever the chunking of its reads.

// streamWord returns the 8-byte word i of the stream of seed.
func streamWord(seed, i uint64) uint64 {
	z := seed*0x9e3779b97f4a7c15 + (i+1)*0xbf58476d1ce4e5b9
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// streamFill fills dst with the bytes of the stream of seed from offset off.
func streamFill(dst []byte, seed uint64, off int64) {
	for len(dst) > 0 {
		w := streamWord(seed, uint64(off)>>3)
		if s := off & 7; s == 0 && len(dst) >= 8 {
			binary.LittleEndian.PutUint64(dst, w)
			dst, off = dst[8:], off+8
		} else {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], w)
			n := copy(dst, b[s:])
			dst, off = dst[n:], off+int64(n)
		}
	}
}

// streamSent is what a sender reports: the SHA-256 of the bytes it wrote
// and how many it wrote.
type streamSent struct {
	n   int64
	sum [32]byte
	err error
}

// sendStream writes n bytes of the stream of seed to c, then half-closes
// it unless keepOpen. progress, if not nil, counts the bytes written so
// far. It returns the count and SHA-256 of what was written.
func sendStream(c *net.TCPConn, n int64, seed uint64, keepOpen bool, progress *atomic.Int64) streamSent {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var off int64
	for off < n {
		b := buf[:min(int64(len(buf)), n-off)]
		streamFill(b, seed, off)
		h.Write(b)
		k, err := c.Write(b)
		off += int64(k)
		if progress != nil {
			progress.Store(off)
		}
		if err != nil {
			return streamSent{off, [32]byte(h.Sum(nil)), fmt.Errorf("write at byte %d of %d: %w", off, n, err)}
		}
	}
	if !keepOpen {
		if err := c.CloseWrite(); err != nil {
			return streamSent{off, [32]byte(h.Sum(nil)), fmt.Errorf("shutdown(SHUT_WR) after %d bytes: %w", off, err)}
		}
	}
	return streamSent{off, [32]byte(h.Sum(nil)), nil}
}

// streamGot is what a receiver reports: the count and SHA-256 of the bytes
// read up to EOF (or the error), and the offset of the first byte that
// differed from the stream (-1 if none did).
type streamGot struct {
	n        int64
	sum      [32]byte
	firstBad int64
	err      error
}

// recvStream reads c until EOF (at most limit bytes in all; more is an
// error), checking every byte against the stream of seed. already, if not
// empty, is the start of the stream, read before: it counts, is hashed and
// checked first. progress, if not nil, counts the bytes read so far.
func recvStream(c *net.TCPConn, seed uint64, limit int64, already []byte, progress *atomic.Int64) streamGot {
	h := sha256.New()
	buf := make([]byte, max(256<<10, len(already)))
	want := make([]byte, len(buf))
	g := streamGot{firstBad: -1}
	for {
		var k int
		var err error
		if len(already) > 0 {
			k = copy(buf, already)
			already = nil
		} else {
			k, err = c.Read(buf)
		}
		if k > 0 {
			b := buf[:k]
			h.Write(b)
			if g.firstBad < 0 {
				streamFill(want[:k], seed, g.n)
				if !bytes.Equal(b, want[:k]) {
					i := 0
					for b[i] == want[i] {
						i++
					}
					g.firstBad = g.n + int64(i)
				}
			}
			g.n += int64(k)
			if progress != nil {
				progress.Store(g.n)
			}
		}
		if g.n > limit {
			g.err = fmt.Errorf("read %d bytes, more than the %d sent", g.n, limit)
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			g.err = fmt.Errorf("read after %d bytes: %w", g.n, err)
			break
		}
	}
	g.sum = [32]byte(h.Sum(nil))
	return g
}

// checkStream compares what a sender sent with what its receiver got, and
// returns a description of every difference, nil if none.
func checkStream(what string, s streamSent, g streamGot) error {
	var errs []error
	if s.err != nil {
		errs = append(errs, fmt.Errorf("%s: sender: %w", what, s.err))
	}
	if g.err != nil {
		errs = append(errs, fmt.Errorf("%s: receiver: %w", what, g.err))
	}
	if g.n != s.n {
		errs = append(errs, fmt.Errorf("%s: %d bytes received, %d sent", what, g.n, s.n))
	}
	if g.firstBad >= 0 {
		errs = append(errs, fmt.Errorf("%s: first wrong byte at offset %d", what, g.firstBad))
	}
	if g.sum != s.sum {
		errs = append(errs, fmt.Errorf("%s: SHA-256 %x received, %x sent", what, g.sum[:8], s.sum[:8]))
	}
	return errors.Join(errs...)
}

// nsCounters reads TcpRetransSegs and TcpExtTCPTimeouts in pasta's
// namespace, failing t if nstat fails.
func nsCounters(t *testing.T, p *nstest.Pasta) nstest.Nstat {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	st, err := nstest.ReadNstat(ctx, p.NSCmd)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPastaTCPIntegrity moves 256 MiB each way at once over one connection
// on each path (see tcpPaths), as root: both ends send the stream of their
// own seed and half-close, both read to EOF, and the SHA-256 (and every
// byte) each receiver got must be what its sender wrote. The guest's
// kernel may have needed at most maxSchedTimeouts retransmission timeouts
// (TcpExtTCPTimeouts in pasta's namespace; see there why not zero); its
// TcpRetransSegs and timeouts are logged.
func TestPastaTCPIntegrity(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		tcpIntegrity(t, newTCPWorld(t, peer, modeAttachRoot), 256<<20)
	})
}

// TestPastaTCPIntegrityUnprivileged is TestPastaTCPIntegrity with pasta run
// as the unprivileged test user, at 32 MiB each way.
func TestPastaTCPIntegrityUnprivileged(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		tcpIntegrity(t, newTCPWorld(t, peer, modeAttachUser), 32<<20)
	})
}

// maxSchedTimeouts bounds the guest's retransmission timeouts per
// transfer that the integrity test accepts. Not zero, because on a loaded
// machine (2 shared vCPUs, 4-5 % steal time, other engineers' tests) pasta
// is sometimes not scheduled for longer than the guest's 200 ms minimum
// RTO. Evidence, from datapath/tcp's TestBidirTrace (the same transfer
// in-process with a trace of every frame), after the fix for the one real
// defect found (no duplicate ACKs after the guest's NewReno recovery of
// data we had dropped, commit cc200a0): of 195 transfers at MTU 65520, the
// two with a timeout showed (1) a guest batch read and its ACK queued 230
// ms later within one handler call (one sendmsg), nothing else in between;
// (2) 421 ms without a tap read, after which the guest's original segment
// and its RTO retransmission came in the same batch: no segment was lost
// or left unacknowledged by the translation. In 288 pasta transfers
// (TestPastaTCPIntegrityUnprivileged looped while another copy loaded the
// CPUs) the two timeouts left were single ones with 3 and 5
// retransmissions, no fast retransmit, the signature of such a stall;
// before the fix, timeouts came with Reno recovery and up to 7 in a row.
// More than this bound still fails: that is a real loss.
const maxSchedTimeouts = 2

// tcpIntegrity runs the transfer of TestPastaTCPIntegrity, size bytes each
// way, over each of tcpPaths in w, each in a subtest.
func tcpIntegrity(t *testing.T, w *tcpWorld, size int64) {
	tcpIntegrityOver(t, w, size, tcpPaths)
}

// tcpIntegrityOver is tcpIntegrity over paths. On a splice path the tap
// must also have carried less than a sixteenth of the bytes: they went
// through pasta's pipes, not as frames.
func tcpIntegrityOver(t *testing.T, w *tcpWorld, size int64, paths []tcpPath) {
	for i, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			guest, host := w.connect(t, path)
			before := nsCounters(t, w.p)
			dropsBefore := tapDrops(t, w.p)
			tapBefore := tapCounters(t, w.p)
			softBefore := softnetDrops(t)
			deadline := time.Now().Add(90 * time.Second)
			guest.SetDeadline(deadline)
			host.SetDeadline(deadline)
			seedUp, seedDown := uint64(2*i+1), uint64(2*i+2)

			start := time.Now()
			var wg sync.WaitGroup
			var up, down streamSent
			var upGot, downGot streamGot
			var upTime, downTime time.Duration
			wg.Add(4)
			go func() { defer wg.Done(); up = sendStream(guest, size, seedUp, false, nil) }()
			go func() { defer wg.Done(); down = sendStream(host, size, seedDown, false, nil) }()
			go func() {
				defer wg.Done()
				upGot = recvStream(host, seedUp, size, nil, nil)
				upTime = time.Since(start)
			}()
			go func() {
				defer wg.Done()
				downGot = recvStream(guest, seedDown, size, nil, nil)
				downTime = time.Since(start)
			}()
			wg.Wait()
			after := nsCounters(t, w.p)
			drops := tapDrops(t, w.p)
			drops[0] -= dropsBefore[0]
			drops[1] -= dropsBefore[1]

			if err := checkStream("guest to host", up, upGot); err != nil {
				t.Error(err)
			}
			if err := checkStream("host to guest", down, downGot); err != nil {
				t.Error(err)
			}
			if tapAfter := tapCounters(t, w.p); path.splice {
				if moved := (tapAfter.RxBytes - tapBefore.RxBytes) + (tapAfter.TxBytes - tapBefore.TxBytes); moved > uint64(size/16) {
					t.Errorf("%s: the tap carried %d bytes of the %d each way: not spliced", path.name, moved, size)
				}
			}
			retrans := after.TcpRetransSegs - before.TcpRetransSegs
			timeouts := after.TcpExtTCPTimeouts - before.TcpExtTCPTimeouts
			t.Logf("%d MiB each way at once: guest to host %v (%.2f Gbit/s), host to guest %v (%.2f Gbit/s); namespace: TcpRetransSegs +%d, TcpExtTCPTimeouts +%d; tap drops: %d to pasta, %d from it",
				size>>20, upTime.Round(time.Millisecond), gbits(upGot.n, upTime),
				downTime.Round(time.Millisecond), gbits(downGot.n, downTime), retrans, timeouts, drops[1], drops[0])
			if timeouts > maxSchedTimeouts {
				t.Errorf("the guest's kernel hit %d retransmission timeouts during the transfer (TcpRetransSegs +%d, tap drops: %d frames to pasta, %d from it; softnet backlog drops +%d): segments lost or left unacknowledged in pasta; namespace counters that moved: %s",
					timeouts, retrans, drops[1], drops[0], softnetDrops(t)-softBefore, nstatDelta(before, after))
			} else if timeouts > 0 {
				t.Logf("accepted %d retransmission timeouts (at most %d: scheduling stalls, see maxSchedTimeouts); namespace counters that moved: %s",
					timeouts, maxSchedTimeouts, nstatDelta(before, after))
			}
		})
	}
}

// tapDrops returns the frames the namespace's kernel dropped on pasta's
// tap: received (from pasta) and transmitted (to pasta: the tap's queue
// was full because pasta did not read it in time), from /proc/net/dev.
func tapDrops(t *testing.T, p *nstest.Pasta) [2]uint64 {
	t.Helper()
	for _, l := range strings.Split(p.NSOutput(t, "cat", "/proc/net/dev"), "\n") {
		name, rest, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(name) != p.Tap {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			t.Fatalf("/proc/net/dev line %q: %d fields, want 16", l, len(f))
		}
		rx, err1 := strconv.ParseUint(f[3], 10, 64)
		tx, err2 := strconv.ParseUint(f[11], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("/proc/net/dev line %q: %v", l, err)
		}
		return [2]uint64{rx, tx}
	}
	t.Fatalf("no %s in the namespace's /proc/net/dev", p.Tap)
	return [2]uint64{}
}

// softnetDrops returns the packets the kernel dropped because a CPU's input
// backlog was full (the second column of /proc/net/softnet_stat, summed
// over CPUs): a frame written to the tap is queued there before the
// namespace's stack sees it, and a drop there shows in no interface counter.
func softnetDrops(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			v, _ := strconv.ParseUint(f[1], 16, 64)
			sum += v
		}
	}
	return sum
}

// nstatDelta lists the counters that changed between two readings, for a
// failure message.
func nstatDelta(before, after nstest.Nstat) string {
	var out []string
	for k, v := range after.All {
		if d := v - before.All[k]; d != 0 {
			out = append(out, fmt.Sprintf("%s +%d", k, d))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// gbits returns n bytes over d in Gbit/s.
func gbits(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) * 8 / d.Seconds() / 1e9
}

// stableFDs waits (up to 10 s) until the descriptor count of pid stays the
// same for 1.5 s, longer than pasta's 1 s tick that refills its socket
// pools, and returns it.
func stableFDs(t *testing.T, pid int) int {
	t.Helper()
	last, since := -1, time.Now()
	ok := nstest.Poll(10*time.Second, func() bool {
		n, err := nstest.CountFDs(pid)
		if err != nil {
			t.Fatal(err)
		}
		if n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= 1500*time.Millisecond
	})
	if !ok {
		t.Fatalf("descriptor count of pasta (%d) never settled: last %d", pid, last)
	}
	return last
}

// waitFDs waits up to timeout for the descriptor count of pid to come back
// to want (deferred closes run at the end of a loop turn; pools refill on
// the 1 s tick), failing t with the last count if it does not.
func waitFDs(t *testing.T, pid, want int, timeout time.Duration) {
	t.Helper()
	var n int
	if !nstest.Poll(timeout, func() bool {
		var err error
		if n, err = nstest.CountFDs(pid); err != nil {
			t.Fatal(err)
		}
		return n == want
	}) {
		t.Errorf("pasta (%d) holds %d descriptors %v after the connections closed, %d before: %s",
			pid, n, timeout, want, fdKinds(pid))
	}
}

// fdKinds summarises the open descriptors of pid by what they point at
// ("socket", "anon_inode:[timerfd]", ...), for messages.
func fdKinds(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	kinds := map[string]int{}
	for _, e := range entries {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if i := strings.Index(l, ":["); i >= 0 && !strings.HasPrefix(l, "anon_inode") {
			l = l[:i]
		}
		kinds[l]++
	}
	return fmt.Sprint(kinds)
}

// TestPastaTCPConcurrent opens 1000 connections at once on the outbound
// and on the inbound IPv4 path (all established before any data moves),
// then each moves 4 KiB each way (the guest's first, the host's answer
// after it, both checked byte for byte), then all close. pasta's datapath
// process must hold at least 1000 more descriptors while they are open
// (proof that we count the right process) and come back to its count from
// before within 10 s of the last close.
func TestPastaTCPConcurrent(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		w := newTCPWorld(t, peer, modeAttachRoot)
		for _, path := range []tcpPath{tcpPaths[0], tcpPaths[2]} {
			t.Run(path.name, func(t *testing.T) { w.concurrent(t, path, 1000) })
		}
	})
}

// concurrent runs TestPastaTCPConcurrent's check with n connections over
// path.
func (w *tcpWorld) concurrent(t *testing.T, path tcpPath, n int) {
	const size = 4 << 10
	w.alive(t)
	baseline := stableFDs(t, w.worker)
	start := time.Now()

	// The server side: the host's loopback (outbound) or the namespace
	// (inbound). It accepts n connections and only then serves them.
	var ln *net.TCPListener
	var dialAddr string
	if path.splice && !path.inbound {
		ln, dialAddr = w.outbound, w.addr(path)
	} else if path.inbound {
		ln, dialAddr = w.inbound, w.addr(path)
	} else {
		ln = w.h.Listen(t, "tcp", "127.0.0.1:0").(*net.TCPListener)
		dialAddr = net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	deadline := time.Now().Add(60 * time.Second)
	servers := make(chan []*net.TCPConn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		ln.SetDeadline(deadline)
		var cs []*net.TCPConn
		for len(cs) < n {
			c, err := ln.AcceptTCP()
			if err != nil {
				for _, c := range cs {
					c.Close()
				}
				acceptErr <- fmt.Errorf("accept after %d connections: %w", len(cs), err)
				return
			}
			cs = append(cs, c)
		}
		servers <- cs
	}()

	// The clients: 8 threads in the client's namespace, each dialling its
	// share one after the other.
	dialNS := w.p.Do
	if path.inbound {
		dialNS = w.h.Do
	}
	clients := make([]*net.TCPConn, n)
	const dialers = 8
	var wg sync.WaitGroup
	dialErrs := make(chan error, dialers)
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := dialNS(func() error {
				for i := d; i < n; i += dialers {
					c, err := net.DialTimeout("tcp4", dialAddr, 10*time.Second)
					if err != nil {
						return fmt.Errorf("dial %d to %s: %w", i, dialAddr, err)
					}
					clients[i] = c.(*net.TCPConn)
				}
				return nil
			})
			if err != nil {
				dialErrs <- err
			}
		}()
	}
	wg.Wait()
	close(dialErrs)
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	})
	for err := range dialErrs {
		t.Fatal(err)
	}
	var srv []*net.TCPConn
	select {
	case srv = <-servers:
	case err := <-acceptErr:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range srv {
			c.Close()
		}
	})
	established := time.Since(start)
	peak, err := nstest.CountFDs(w.worker)
	if err != nil {
		t.Fatal(err)
	}

	guests, hosts := clients, srv
	if path.inbound {
		guests, hosts = srv, clients
	}
	// Every guest sends its index then 4 KiB of its stream; the host end
	// that receives it checks it and answers with 4 KiB of the stream of
	// index + n. Host ends do not know which guest they carry: the index
	// tells them.
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c := guests[i]
			c.SetDeadline(deadline)
			msg := make([]byte, 8+size)
			binary.BigEndian.PutUint64(msg, uint64(i))
			streamFill(msg[8:], uint64(i), 0)
			if _, err := c.Write(msg); err != nil {
				errs <- fmt.Errorf("guest %d: write: %w", i, err)
				return
			}
			got := make([]byte, size)
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- fmt.Errorf("guest %d: read the answer: %w", i, err)
				return
			}
			want := make([]byte, size)
			streamFill(want, uint64(i+n), 0)
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("guest %d: wrong answer", i)
			}
		}()
		go func() {
			defer wg.Done()
			c := hosts[i]
			c.SetDeadline(deadline)
			msg := make([]byte, 8+size)
			if _, err := io.ReadFull(c, msg); err != nil {
				errs <- fmt.Errorf("host end %d (%v): read: %w", i, c.RemoteAddr(), err)
				return
			}
			idx := binary.BigEndian.Uint64(msg)
			want := make([]byte, size)
			if idx < uint64(n) {
				streamFill(want, idx, 0)
			}
			if idx >= uint64(n) || !bytes.Equal(msg[8:], want) {
				errs <- fmt.Errorf("host end %d: wrong request (index %d)", i, idx)
				return
			}
			streamFill(want, idx+uint64(n), 0)
			if _, err := c.Write(want); err != nil {
				errs <- fmt.Errorf("host end %d: write the answer: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 10 {
			t.Error(err)
		}
	}
	if failed > 10 {
		t.Errorf("... %d errors in all", failed)
	}
	exchanged := time.Since(start)

	// Half the connections closed by the guest first, half by the host.
	for i := range n {
		if i%2 == 0 {
			guests[i].Close()
			hosts[i].Close()
		} else {
			hosts[i].Close()
			guests[i].Close()
		}
	}
	closed := time.Now()
	waitFDs(t, w.worker, baseline, 10*time.Second)
	t.Logf("%d connections established in %v, exchanged by %v; pasta (%d) held %d descriptors at the peak, %d before; back in %v",
		n, established.Round(time.Millisecond), exchanged.Round(time.Millisecond), w.worker, peak, baseline,
		time.Since(closed).Round(time.Millisecond))
	if peak < baseline+n {
		t.Errorf("pasta (%d) held only %d descriptors with %d connections open (%d before): not the datapath's process?", w.worker, peak, n, baseline)
	}
}

// TestPastaTCPClose runs, over each of tcpPaths, the ways a connection
// ends: half-close by either side (the other keeps sending, every byte
// checked), reset by either side (SO_LINGER 0: the other side's read fails
// with ECONNRESET), and full close by either side first (the other reads
// the data and EOF, not a reset, and no socket of the connection is left in
// either namespace in a state other than TIME-WAIT). Then a connection from
// the namespace to a closed port on the host must be refused within 1 s.
// At the end pasta's datapath process must hold the descriptors it held
// before.
func TestPastaTCPClose(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		w := newTCPWorld(t, peer, modeAttachRoot)
		baseline := stableFDs(t, w.worker)
		for _, path := range tcpPaths {
			t.Run(path.name, func(t *testing.T) {
				for _, side := range []string{"guest", "host"} {
					t.Run("half-close-by-"+side, func(t *testing.T) { w.halfClose(t, path, side == "guest") })
				}
				for _, side := range []string{"guest", "host"} {
					t.Run("reset-by-"+side, func(t *testing.T) { w.reset(t, path, side == "guest") })
				}
				for _, side := range []string{"guest", "host"} {
					t.Run(side+"-closes-first", func(t *testing.T) { w.closeFirst(t, path, side == "guest") })
				}
			})
		}
		for _, v6 := range []bool{false, true} {
			name := "refused-ipv4"
			if v6 {
				name = "refused-ipv6"
			}
			t.Run(name, func(t *testing.T) { w.refused(t, v6) })
		}
		waitFDs(t, w.worker, baseline, 10*time.Second)
	})
}

// ends returns the two ends of a connection in the order (first, second)
// with first the guest's if guestFirst.
func ends(guest, host *net.TCPConn, guestFirst bool) (first, second *net.TCPConn, firstName, secondName string) {
	if guestFirst {
		return guest, host, "guest", "host"
	}
	return host, guest, "host", "guest"
}

// halfClose: one side (the guest's if byGuest) sends 64 KiB and
// shuts down writing; the other reads it to EOF, then sends 1 MiB and
// closes, which the first side, still reading, must receive in full.
func (w *tcpWorld) halfClose(t *testing.T, path tcpPath, byGuest bool) {
	guest, host := w.connect(t, path)
	first, second, fname, sname := ends(guest, host, byGuest)
	deadline := time.Now().Add(20 * time.Second)
	first.SetDeadline(deadline)
	second.SetDeadline(deadline)

	sent := make(chan streamSent, 1)
	go func() { sent <- sendStream(first, 64<<10, 11, false, nil) }()
	got := recvStream(second, 11, 64<<10, nil, nil)
	if err := checkStream(fname+" to "+sname+" before the half-close", <-sent, got); err != nil {
		t.Fatal(err)
	}
	// The first side has shut down writing and seen no EOF yet: the second
	// keeps sending on its open half.
	go func() { sent <- sendStream(second, 1<<20, 12, false, nil) }()
	got = recvStream(first, 12, 1<<20, nil, nil)
	if err := checkStream(sname+" to "+fname+" after the half-close", <-sent, got); err != nil {
		t.Error(err)
	}
}

// reset: after 64 KiB from the host, one side (the guest's if byGuest)
// closes with SO_LINGER 0, which sends RST; pasta must carry the reset
// across, so that the other side's next read fails with ECONNRESET within
// 2 s.
func (w *tcpWorld) reset(t *testing.T, path tcpPath, byGuest bool) {
	guest, host := w.connect(t, path)
	first, second, fname, sname := ends(guest, host, byGuest)
	deadline := time.Now().Add(10 * time.Second)
	guest.SetDeadline(deadline)
	host.SetDeadline(deadline)
	sent := make(chan streamSent, 1)
	go func() { sent <- sendStream(host, 64<<10, 21, true, nil) }()
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(guest, buf); err != nil {
		t.Fatalf("guest: read before the reset: %v", err)
	}
	if s := <-sent; s.err != nil {
		t.Fatal(s.err)
	}

	if err := first.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	n, err := second.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s reset the connection: the %s's read gave %d bytes, %s after %v; want ECONNRESET",
			fname, sname, n, errString(err), time.Since(start).Round(time.Millisecond))
	}
}

// closeFirst: one side (the guest's if byGuest) sends 64 KiB and reads
// 256 KiB from the other, then closes; the other reads the 64 KiB and then
// EOF (not a reset), then closes too. Within 3 s no socket of the
// connection may be left in either namespace in a state but TIME-WAIT, and
// the first closer's socket must be in TIME-WAIT (ss): a FIN pasta never
// acknowledged would leave LAST-ACK or FIN-WAIT-1 behind, one it never
// passed on CLOSE-WAIT or FIN-WAIT-2, a reset no TIME-WAIT.
func (w *tcpWorld) closeFirst(t *testing.T, path tcpPath, byGuest bool) {
	guest, host := w.connect(t, path)
	first, second, fname, sname := ends(guest, host, byGuest)
	deadline := time.Now().Add(20 * time.Second)
	guest.SetDeadline(deadline)
	host.SetDeadline(deadline)
	ports := []int{host.LocalAddr().(*net.TCPAddr).Port, host.RemoteAddr().(*net.TCPAddr).Port,
		guest.LocalAddr().(*net.TCPAddr).Port, guest.RemoteAddr().(*net.TCPAddr).Port}

	// Each side sends the stream of its own seed; the first side closes
	// once its data is written and it has read the other's.
	var wg sync.WaitGroup
	var toFirst, toSecond streamSent
	var gotFirst streamGot
	wg.Add(2)
	go func() { defer wg.Done(); toFirst = sendStream(second, 256<<10, 31, true, nil) }()
	go func() { defer wg.Done(); toSecond = sendStream(first, 64<<10, 32, true, nil) }()
	buf := make([]byte, 256<<10)
	if _, err := io.ReadFull(first, buf); err != nil {
		t.Fatalf("%s: read before closing: %v", fname, err)
	}
	want := make([]byte, len(buf))
	streamFill(want, 31, 0)
	if !bytes.Equal(buf, want) {
		t.Errorf("%s got the wrong bytes before closing", fname)
	}
	wg.Wait()
	if toFirst.err != nil || toSecond.err != nil {
		t.Fatalf("senders: %v, %v", toFirst.err, toSecond.err)
	}
	first.Close()
	gotFirst = recvStream(second, 32, 64<<10, nil, nil)
	if err := checkStream(fname+" to "+sname+" then close", toSecond, gotFirst); err != nil {
		t.Error(err)
	}
	second.Close()

	// The first closer's socket ends in TIME-WAIT in its namespace: proof
	// of a clean close (a reset leaves none) and that ss shows the
	// connection at all.
	var left []string
	timeWait := false
	nstest.Poll(3*time.Second, func() bool {
		left, timeWait = nil, false
		for _, ns := range []struct {
			name string
			out  string
		}{{"host", w.h.Output(t, "ss", "-Htan")}, {"guest", w.p.NSOutput(t, "ss", "-Htan")}} {
			for _, l := range connSockets(ns.out, ports) {
				if !strings.HasPrefix(l, "TIME-WAIT") {
					left = append(left, ns.name+": "+l)
				} else if ns.name == fname {
					timeWait = true
				}
			}
		}
		return len(left) == 0 && timeWait
	})
	if len(left) > 0 {
		t.Errorf("%s closed first, then the %s: 3 s later sockets of the connection remain:\n%s",
			fname, sname, strings.Join(left, "\n"))
	}
	if !timeWait {
		t.Errorf("%s closed first, then the %s: no socket of the connection in TIME-WAIT on the %s's side (ss -tan): not a clean close", fname, sname, fname)
	}
}

// connSockets returns the lines of `ss -Htan` output whose local and peer
// ports are both among ports, with the whitespace squeezed.
func connSockets(out string, ports []int) []string {
	has := func(addr string) bool {
		i := strings.LastIndexByte(addr, ':')
		p, err := strconv.Atoi(addr[i+1:])
		if err != nil {
			return false
		}
		for _, q := range ports {
			if p == q {
				return true
			}
		}
		return false
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && f[0] != "LISTEN" && has(f[3]) && has(f[4]) {
			lines = append(lines, strings.Join(f, " "))
		}
	}
	return lines
}

// refused: the namespace connects to the gateway at a port nothing listens
// on in the host: the host's RST must come back through pasta as a
// refusal within 1 s.
func (w *tcpWorld) refused(t *testing.T, v6 bool) {
	w.alive(t)
	gw := nstest.HostGW4.String()
	if v6 {
		gw = nstest.HostGW6.String()
	}
	addr := net.JoinHostPort(gw, strconv.Itoa(w.h.FreePort(t, "tcp")))
	start := time.Now()
	c, err := w.p.Dial("tcp", addr, 5*time.Second)
	took := time.Since(start)
	if c != nil {
		c.Close()
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect from the namespace to %s (closed on the host): %s after %v, want ECONNREFUSED",
			addr, errString(err), took.Round(time.Millisecond))
	}
	if took > time.Second {
		t.Errorf("connect to %s refused after %v, want within 1 s", addr, took.Round(time.Millisecond))
	}
}

// procTicks returns utime+stime of pid (all its threads), in clock ticks
// (USER_HZ, 100 per second on Linux).
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u + s, nil
}

// procRSS returns the resident set of pid in bytes (VmRSS).
func procRSS(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: VmRSS %q: %w", path, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS", path)
}

// TestPastaTCPZeroWindow: a receiver that stops reading while the other
// side sends 128 MiB, on the outbound and inbound IPv4 paths, the guest
// stopping (its window to pasta closes) and the host stopping (pasta's
// socket fills and its window to the guest must close). Once the sender
// is blocked, pasta (supervisor and datapath process) must use less than
// 10% of a core over 2 s, the sender must not advance, and pasta's RSS
// must not have grown with the data (it holds no payload: what the sender
// could write sits in kernel socket buffers). Then the receiver reads
// again and must get all bytes, intact.
func TestPastaTCPZeroWindow(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		w := newTCPWorld(t, peer, modeAttachRoot)
		for _, path := range []tcpPath{tcpPaths[0], tcpPaths[2]} {
			for _, side := range []string{"guest", "host"} {
				t.Run(path.name+"/"+side+"-stops-reading", func(t *testing.T) { w.zeroWindow(t, path, side == "guest") })
			}
		}
	})
}

// zeroWindow runs TestPastaTCPZeroWindow's check on path, with the guest
// as the receiver if guestStops, else the host.
func (w *tcpWorld) zeroWindow(t *testing.T, path tcpPath, guestStops bool) {
	const size = 128 << 20
	guest, host := w.connect(t, path)
	receiver, sender, rname, sname := ends(guest, host, guestStops)
	deadline := time.Now().Add(60 * time.Second)
	receiver.SetDeadline(deadline)
	sender.SetDeadline(deadline)
	rss0, err := procRSS(w.worker)
	if err != nil {
		t.Fatal(err)
	}

	var written atomic.Int64
	sent := make(chan streamSent, 1)
	go func() { sent <- sendStream(sender, size, 41, false, &written) }()
	// Read the first MiB, so the flow is under way, then stop.
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(receiver, first); err != nil {
		t.Fatalf("%s: first MiB: %v", rname, err)
	}
	want := make([]byte, len(first))
	streamFill(want, 41, 0)
	if !bytes.Equal(first, want) {
		t.Fatalf("%s: wrong bytes in the first MiB", rname)
	}
	// Blocked: the sender has not advanced for 500 ms.
	last, since := int64(-1), time.Now()
	if !nstest.Poll(15*time.Second, func() bool {
		if n := written.Load(); n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= 500*time.Millisecond
	}) {
		t.Fatalf("the %s kept writing for 15 s with the %s not reading: %d bytes written", sname, rname, written.Load())
	}
	if last >= size {
		t.Fatalf("the %s wrote all %d bytes with the %s reading only 1 MiB: buffered somewhere", sname, last, rname)
	}

	pids := []int{w.worker}
	if w.worker != w.p.PID {
		pids = append(pids, w.p.PID)
	}
	ticks := func() int64 {
		var sum int64
		for _, pid := range pids {
			n, err := procTicks(pid)
			if err != nil {
				t.Fatal(err)
			}
			sum += n
		}
		return sum
	}
	t0, c0 := time.Now(), ticks()
	time.Sleep(2 * time.Second)
	c1, elapsed := ticks(), time.Since(t0)
	cpu := float64(c1-c0) / 100 / elapsed.Seconds()
	moved := written.Load() - last
	rss1, err := procRSS(w.worker)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("blocked with %.1f MiB written, 1 MiB read; over %v pasta used %.1f%% of a core, the sender moved %d bytes; RSS %.1f MiB before, %.1f MiB blocked",
		float64(last)/(1<<20), elapsed.Round(time.Millisecond), cpu*100, moved, float64(rss0)/(1<<20), float64(rss1)/(1<<20))
	if cpu >= 0.10 {
		t.Errorf("pasta used %.1f%% of a core while the transfer was blocked, want < 10%%", cpu*100)
	}
	if moved > 1<<20 {
		t.Errorf("the %s wrote %d more bytes in 2 s with the %s not reading", sname, moved, rname)
	}
	// pasta keeps no payload: its RSS may move by its own bookkeeping, not
	// by the tens of MiB the sender has queued.
	if grew := rss1 - rss0; grew > 8<<20 {
		t.Errorf("pasta's RSS grew by %.1f MiB while %.1f MiB were queued towards a receiver not reading",
			float64(grew)/(1<<20), float64(last)/(1<<20))
	}

	// Read again: the rest must arrive, intact.
	start := time.Now()
	got := recvStream(receiver, 41, size, first, nil)
	s := <-sent
	if err := checkStream(sname+" to "+rname+" after the stall", s, got); err != nil {
		t.Error(err)
	}
	t.Logf("the remaining %.1f MiB arrived in %v", float64(got.n-int64(len(first)))/(1<<20), time.Since(start).Round(time.Millisecond))
}
