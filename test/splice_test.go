// End-to-end tests of pasta's loopback path: connections from the host's
// loopback to a -t port, and from the namespace's loopback to a -T port,
// which pasta accepts on one side and connects on the other, moving the
// bytes with splice(2) through pipes (datapath/splice), never as frames on
// the tap. Also --no-splice (the same connection over the tap) and
// --splice-only (no tap at all, everything else refused).

package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// newSpliceWorld starts peer's pasta as mode says with --config-net, one
// port forwarded each way (-t PORT, -T OUTPORT) and nothing else, the
// namespace's server on PORT and the host's on OUTPORT (both on the
// wildcard address, both families).
func newSpliceWorld(t *testing.T, peer nstest.Peer, mode pastaMode, extra ...string) *tcpWorld {
	t.Helper()
	w := &tcpWorld{peer: peer, h: nstest.NewHost(t)}
	w.port = w.h.FreePort(t, "tcp")
	w.outPort = w.h.FreePort(t, "tcp")
	for w.outPort == w.port {
		w.outPort = w.h.FreePort(t, "tcp")
	}
	w.outbound = w.h.Listen(t, "tcp", ":"+strconv.Itoa(w.outPort)).(*net.TCPListener)
	args := append([]string{"--config-net", "-t", strconv.Itoa(w.port), "-T", strconv.Itoa(w.outPort), "-u", "none", "-U", "none"}, extra...)
	w.p = startPasta(t, w.h, peer, mode, args...)
	w.inbound = nsListenTCP(t, w.p, ":"+strconv.Itoa(w.port))
	w.worker = pastaWorker(t, w.p.PID)
	return w
}

// reasonDebianSplice is why the splice integrity test skips Debian's
// pasta: run against it (2026-12-03, 256 MiB each way at once) every
// splice path lost data in one direction or the other: 259000276,
// 265565440, 267610797 and 268392584 bytes arrived of 268435456, with
// nothing on the tap.
const reasonDebianSplice = "loses data on its splice path when both directions move at once (seen 2026-12-03: 259000276 of 268435456 bytes arrived, and similar on every path)"

// forEachSplicePeer runs fn per peer, skipping Debian's pasta with
// reasonDebianSplice.
func forEachSplicePeer(t *testing.T, fn func(t *testing.T, peer nstest.Peer)) {
	t.Helper()
	forEachPeerBut(t, reasonDebianSplice, fn)
}

// TestPastaSpliceIntegrity moves 256 MiB each way at once over each splice
// path (host loopback to the namespace, namespace loopback to the host,
// IPv4 and IPv6), every byte checked where it lands and the SHA-256 of
// each direction compared, and checks that the tap carried (almost)
// nothing of it. As the unprivileged user, 32 MiB each way.
func TestPastaSpliceIntegrity(t *testing.T) {
	forEachSplicePeer(t, func(t *testing.T, peer nstest.Peer) {
		tcpIntegrityOver(t, newSpliceWorld(t, peer, modeAttachRoot), 256<<20, splicePaths)
	})
	t.Run("gopasst/unprivileged", func(t *testing.T) {
		nstest.RequireUnprivileged(t)
		peer := gopasstPeer(t)
		tcpIntegrityOver(t, newSpliceWorld(t, peer, modeSpawnUser), 32<<20, splicePaths)
	})
}

// gopasstPeer returns our own pasta among the test peers, skipping t if
// the run has none.
func gopasstPeer(t *testing.T) nstest.Peer {
	t.Helper()
	for _, p := range peers(t) {
		if p.Name == "gopasst" {
			return p
		}
	}
	t.Skip("no gopasst binary in this run")
	return nstest.Peer{}
}

// TestPastaSpliceClose runs over each splice path the half-close by either
// side (the other keeps sending, every byte checked) and the reset by
// either side (the other's read fails with ECONNRESET within 2 s), then a
// -T connection to a host port nobody listens on, which must be refused
// (reset) rather than left hanging. pasta's descriptors must be back to
// their count from before within 10 s.
func TestPastaSpliceClose(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		w := newSpliceWorld(t, peer, modeAttachRoot)
		baseline := stableFDs(t, w.worker)
		for _, path := range splicePaths {
			for _, byGuest := range []bool{true, false} {
				who := "host"
				if byGuest {
					who = "guest"
				}
				t.Run(path.name+"/half-close-by-"+who, func(t *testing.T) { w.halfClose(t, path, byGuest) })
				t.Run(path.name+"/reset-by-"+who, func(t *testing.T) { w.reset(t, path, byGuest) })
			}
		}
		t.Run("refused", func(t *testing.T) {
			// The host's server goes away: the next -T connection
			// finds the port closed, and the namespace's client must
			// see the refusal as a reset (the connection was already
			// accepted by pasta's listener in the namespace).
			w.outbound.Close()
			c, err := w.p.Dial("tcp", w.addr(splicePaths[0]), 5*time.Second)
			if errors.Is(err, syscall.ECONNRESET) {
				return // reset before connect(2) returned: refused
			}
			if err != nil {
				t.Fatalf("dial pasta's -T listener: %v", err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := c.Read(make([]byte, 16))
			if !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
				t.Fatalf("read on a -T connection to a closed host port: %d bytes, %v; want a reset", n, errString(err))
			}
		})
		waitFDs(t, w.worker, baseline, 10*time.Second)
	})
}

// TestPastaSpliceMany opens 1000 short connections one after the other
// over the inbound and the outbound IPv4 splice paths (1 KiB each way,
// checked), then 1000 at once (TestPastaTCPConcurrent's check), and
// requires pasta's descriptor count, pipes included, back to where it was.
func TestPastaSpliceMany(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		w := newSpliceWorld(t, peer, modeAttachRoot)
		for _, path := range []tcpPath{splicePaths[0], splicePaths[2]} {
			t.Run(path.name+"/sequential", func(t *testing.T) { w.sequential(t, path, 1000) })
			t.Run(path.name+"/concurrent", func(t *testing.T) { w.concurrent(t, path, 1000) })
		}
	})
}

// sequential opens n connections over path one after the other; each
// carries 1 KiB each way, checked, and is closed by the client before the
// next opens. pasta's descriptors (sockets and pipes) must come back to
// their count from before.
func (w *tcpWorld) sequential(t *testing.T, path tcpPath, n int) {
	w.alive(t)
	baseline := stableFDs(t, w.worker)
	ln := w.inbound
	dialNS := w.h.Do
	if !path.inbound {
		ln, dialNS = w.outbound, w.p.Do
	}
	addr := w.addr(path)
	deadline := time.Now().Add(90 * time.Second)
	srvErr := make(chan error, 1)
	go func() {
		ln.SetDeadline(deadline)
		for i := range n {
			c, err := ln.Accept()
			if err != nil {
				srvErr <- fmt.Errorf("accept %d: %w", i, err)
				return
			}
			c.SetDeadline(deadline)
			buf := make([]byte, 1024)
			if _, err := io.ReadFull(c, buf); err != nil {
				c.Close()
				srvErr <- fmt.Errorf("server %d: read: %w", i, err)
				return
			}
			for j := range buf {
				buf[j] ^= 0xff
			}
			_, err = c.Write(buf)
			c.Close()
			if err != nil {
				srvErr <- fmt.Errorf("server %d: write: %w", i, err)
				return
			}
		}
		srvErr <- nil
	}()
	start := time.Now()
	err := dialNS(func() error {
		msg, back := make([]byte, 1024), make([]byte, 1024)
		for i := range n {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return fmt.Errorf("dial %d: %w", i, err)
			}
			c.SetDeadline(deadline)
			streamFill(msg, uint64(i), 0)
			if _, err := c.Write(msg); err != nil {
				c.Close()
				return fmt.Errorf("client %d: write: %w", i, err)
			}
			_, err = io.ReadFull(c, back)
			c.Close()
			if err != nil {
				return fmt.Errorf("client %d: read: %w", i, err)
			}
			for j := range back {
				if back[j] != msg[j]^0xff {
					return fmt.Errorf("client %d: byte %d of the answer wrong", i, j)
				}
			}
		}
		return nil
	})
	if err != nil {
		ln.SetDeadline(time.Now())
		<-srvErr
		t.Fatal(err)
	}
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	waitFDs(t, w.worker, baseline, 10*time.Second)
	t.Logf("%d connections one after the other in %v (%.0f/s); pasta's descriptors back to %d",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), baseline)
}

// TestPastaNoSplice: with --no-splice, a connection from the host's
// loopback to a -t port crosses the tap as frames (at least the bytes
// moved), bytes checked both ways.
func TestPastaNoSplice(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		w := newSpliceWorld(t, peer, modeAttachRoot, "--no-splice")
		path := splicePaths[2] // the host's loopback to -t
		before := tapCounters(t, w.p)
		guest, host := w.connect(t, path)
		const size = 1 << 20
		sent := make(chan streamSent, 1)
		go func() { sent <- sendStream(host, size, 41, false, nil) }()
		guest.SetDeadline(time.Now().Add(20 * time.Second))
		if err := checkStream("host to guest", <-sent, recvStream(guest, 41, size, nil, nil)); err != nil {
			t.Fatal(err)
		}
		// Host to namespace: the namespace's kernel received the bytes
		// from the tap (its rx), and sent only ACKs back.
		if after := tapCounters(t, w.p); after.RxBytes-before.RxBytes < size {
			t.Errorf("--no-splice: the tap received %d bytes, less than the %d moved: the connection did not cross it", after.RxBytes-before.RxBytes, size)
		}
	})
}

// TestPastaSpliceOnly: with --splice-only pasta makes no tap (the
// namespace has only lo), a connection from the host's loopback to the -t
// port reaches the namespace's server at its loopback (--splice-only
// implies --host-lo-to-ns-lo) with bytes checked, and one from the host's
// own address to the same port is refused.
func TestPastaSpliceOnly(t *testing.T) {
	peer := gopasstPeer(t)
	h := nstest.NewHost(t)
	port := h.FreePort(t, "tcp")
	ps := strconv.Itoa(port)
	// Ready: no tap to wait for; pasta's -t listener on the host is
	// what the test needs.
	p := h.StartPasta(t, nstest.PastaOpts{Binary: peer.Pasta, Args: []string{"--splice-only", "-t", ps, "--runas", "0"},
		Ready: func(p *nstest.Pasta) error { return listeningTCP(p.PID, port) }})
	links := p.NSOutput(t, "ip", "-o", "link", "show")
	if strings.Count(strings.TrimSpace(links), "\n") != 0 || !strings.Contains(links, "lo:") {
		t.Fatalf("--splice-only: the namespace should have only lo:\n%s", links)
	}
	ln := nsListenTCP(t, p, ":"+ps)
	request, answer := randomBytes(t, 64<<10), randomBytes(t, 64<<10)
	peerAddr, err := tcpExchange(ln, func() (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", "127.0.0.1:"+ps, 5*time.Second)
			return err
		})
		return c, err
	}, request, answer)
	if err != nil {
		t.Fatal(err)
	}
	if a := peerAddr.(*net.TCPAddr).IP; !a.IsLoopback() {
		t.Errorf("--splice-only: the namespace's server saw %v, want a loopback source (--host-lo-to-ns-lo)", peerAddr)
	}
	err = h.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(nstest.HostAddr4.Addr().String(), ps), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 1))
		return err
	})
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNREFUSED) && err != io.EOF {
		t.Errorf("--splice-only: a connection from the host's own address got %v, want it refused", errString(err))
	}
}

// listeningTCP returns nil if a TCP socket listens on port in the network
// namespace of process pid (its /proc/PID/net/tcp and tcp6), an error
// saying it does not otherwise.
func listeningTCP(pid, port int) error {
	want := fmt.Sprintf(":%04X ", port)
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			// local_address rem_address st: LISTEN is 0A.
			if fs := strings.Fields(l); len(fs) > 3 && strings.HasSuffix(fs[1]+" ", want) && fs[3] == "0A" {
				return nil
			}
		}
	}
	return fmt.Errorf("nothing listens on TCP port %d yet", port)
}

// TestPastaSockmap runs the splice tests' checks with --accel-sockmap, as root
// (the accelerator's maps and program need CAP_BPF, CAP_NET_ADMIN and
// CAP_PERFMON of the initial user namespace, which pasta's supervisor has
// and hands over): pasta must say with -d that the accelerator is on, then
// 64 MiB each way at once over the four splice paths (bytes checked, the
// tap carrying nothing), half-close and reset, and 300 connections one
// after the other with descriptors counted back. Skipped, with pasta's
// reason, where the kernel lacks what the probe needs.
func TestPastaSockmap(t *testing.T) {
	peer := gopasstPeer(t)
	w := newSpliceWorld(t, peer, modeAttachRoot, "--accel-sockmap", "-d")
	out := ""
	nstest.Poll(5*time.Second, func() bool {
		out = w.p.Proc.Output()
		return strings.Contains(out, "sockmap accelerator")
	})
	if i := strings.Index(out, "no sockmap accelerator:"); i >= 0 {
		line, _, _ := strings.Cut(out[i:], "\n")
		t.Skipf("the probe failed here: %s", line)
	}
	if !strings.Contains(out, "sockmap accelerator on") {
		t.Fatalf("pasta --accel-sockmap -d did not say which path it uses:\n%s", out)
	}
	tcpIntegrityOver(t, w, 64<<20, splicePaths)
	for _, path := range []tcpPath{splicePaths[0], splicePaths[2]} {
		t.Run(path.name+"/half-close", func(t *testing.T) { w.halfClose(t, path, false) })
		t.Run(path.name+"/reset", func(t *testing.T) { w.reset(t, path, true) })
		t.Run(path.name+"/sequential", func(t *testing.T) { w.sequential(t, path, 300) })
	}
	// A refusal is the designed fallback (splice) for a socket the
	// kernel will not put in a sockhash, e.g. one whose peer closed
	// already (EOPNOTSUPP outside ESTABLISHED); any other is a defect.
	for _, l := range strings.Split(w.p.Proc.Output(), "\n") {
		if strings.Contains(l, "accelerator refused") && !strings.Contains(l, "operation not supported") {
			t.Errorf("the accelerator refused a connection: %s", l)
		}
	}
}
