// Helpers shared by the end-to-end tests of pasta (test/pasta_*_test.go):
// the ways pasta is started, the peers it is tested as, the tap's byte
// counters, ping, UDP echo and a bounded TCP exchange. The tests drive the
// real binary inside namespaces made by test/nstest; -peer selects
// Debian's pasta, gopasst's (-bin DIR) or both.

package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// debianVersion names the Debian pasta these tests were checked against,
// for the reasons given when one of its known limitations skips a check.
const debianVersion = "Debian's pasta 0.0~git20230309"

// quietArgs are the options every test passes unless it needs others: no
// automatic port forwarding either way, so that the only sockets pasta
// holds are the ones the test asks for.
var quietArgs = []string{"-t", "none", "-u", "none", "-T", "none", "-U", "none"}

// pastaMode is one way of starting pasta: attached to a namespace or
// spawning a command, as root or as nstest.TestUser, with or without
// --runas 0.
type pastaMode struct {
	name         string
	unprivileged bool // run pasta as nstest.TestUser
	spawn        bool // pasta creates the namespace and runs a command there
	runas0       bool // pass --runas 0 (root only)
}

// Modes the main cases run in. As root without --runas, pasta switches to
// nobody; that case has its own test (TestPastaRootWithoutRunas) because
// Debian's pasta cannot attach to a namespace that way.
var (
	modeAttachRoot   = pastaMode{name: "attach-root", runas0: true}
	modeAttachUser   = pastaMode{name: "attach-unprivileged", unprivileged: true}
	modeSpawnRoot    = pastaMode{name: "spawn-root", spawn: true, runas0: true}
	modeSpawnUser    = pastaMode{name: "spawn-unprivileged", spawn: true, unprivileged: true}
	modeAttachNobody = pastaMode{name: "attach-root-nobody"}
	modeSpawnNobody  = pastaMode{name: "spawn-root-nobody", spawn: true}
	mainModes        = []pastaMode{modeAttachRoot, modeAttachUser, modeSpawnRoot, modeSpawnUser}
)

// Addresses of the host's own (on its lo, outside the uplink's addresses
// that --config-net copies) inside the uplink's prefixes: the namespace
// routes them to pasta, which reaches them as they are, without the
// gateway-to-loopback mapping. See addHostLocal.
var (
	hostLocal4 = netip.MustParseAddr("198.18.0.9")
	hostLocal6 = netip.MustParseAddr("2001:db8:9a55::9")
)

// addHostLocal puts hostLocal4/32 and hostLocal6/128 on host h's lo, so that
// something answers there (ping, UDP servers bound to them).
func addHostLocal(t *testing.T, h *nstest.Host) {
	t.Helper()
	h.Output(t, "ip", "addr", "add", hostLocal4.String()+"/32", "dev", "lo")
	h.Output(t, "ip", "addr", "add", hostLocal6.String()+"/128", "dev", "lo", "nodad")
}

// peers returns the pasta implementations selected with -peer, skipping t
// (with the reason) if there are none or the test cannot run here.
func peers(t *testing.T) []nstest.Peer {
	t.Helper()
	nstest.RequireRoot(t)
	ps := nstest.Peers(t)
	if len(ps) == 0 {
		t.Skip("no pasta to test: run test/setup (Debian's passt), or give -bin DIR with -peer gopasst")
	}
	return ps
}

// forEachPeer runs fn as a subtest named after each selected peer.
func forEachPeer(t *testing.T, fn func(t *testing.T, peer nstest.Peer)) {
	t.Helper()
	for _, peer := range peers(t) {
		t.Run(peer.Name, func(t *testing.T) { fn(t, peer) })
	}
}

// forEachPeerMode runs fn as a subtest "<peer>/<mode>" for each selected
// peer and each of modes.
func forEachPeerMode(t *testing.T, modes []pastaMode, fn func(t *testing.T, peer nstest.Peer, mode pastaMode)) {
	t.Helper()
	for _, peer := range peers(t) {
		for _, mode := range modes {
			t.Run(peer.Name+"/"+mode.name, func(t *testing.T) {
				if mode.unprivileged {
					nstest.RequireUnprivileged(t) // and /dev/net/tun usable, for this test only
				}
				fn(t, peer, mode)
			})
		}
	}
}

// startPasta starts peer's pasta in host h as mode says, with args (plus
// --runas 0 if the mode wants it), and waits until it is ready (see
// nstest.StartPasta). In spawn mode the command is `sleep 600`, which the
// harness stops at cleanup.
func startPasta(t *testing.T, h *nstest.Host, peer nstest.Peer, mode pastaMode, args ...string) *nstest.Pasta {
	t.Helper()
	args = slices.Clone(args)
	if mode.runas0 {
		args = append(args, "--runas", "0")
	}
	opts := nstest.PastaOpts{Binary: peer.Pasta, Args: args, Unprivileged: mode.unprivileged}
	if mode.spawn {
		opts.Command = []string{"sleep", "600"}
	}
	return h.StartPasta(t, opts)
}

// knownLimit reports a failed check: if the peer is Debian's pasta and the
// failure is one of its known limitations (reason), it skips t saying so;
// otherwise it fails t with err. A nil err does nothing.
func knownLimit(t *testing.T, peer nstest.Peer, reason string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if peer.Name == "debian" {
		t.Skipf("%s: %s (seen: %v)", debianVersion, reason, err)
	}
	t.Fatal(err)
}

// nsRun runs name with args inside pasta's namespace, bounded by timeout,
// and returns its standard output and standard error, and its error.
func nsRun(p *nstest.Pasta, timeout time.Duration, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return runOut(p.NSCmd(ctx, name, args...))
}

// runOut runs cmd and returns its standard output, its standard error and
// its error (with the command line).
func runOut(cmd *exec.Cmd) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w\n%s%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// devCounters are one interface's byte and packet counters from
// /proc/net/dev.
type devCounters struct {
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// parseNetDev returns the counters of interface ifname in the contents of
// /proc/net/dev, or an error if it is not there or malformed.
func parseNetDev(content, ifname string) (devCounters, error) {
	for _, line := range strings.Split(content, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != ifname {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return devCounters{}, fmt.Errorf("/proc/net/dev line %q: %d fields, want 16", line, len(f))
		}
		var v [16]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return devCounters{}, fmt.Errorf("/proc/net/dev line %q: %w", line, err)
			}
			v[i] = n
		}
		return devCounters{RxBytes: v[0], RxPackets: v[1], TxBytes: v[8], TxPackets: v[9]}, nil
	}
	return devCounters{}, fmt.Errorf("no %s in /proc/net/dev:\n%s", ifname, content)
}

// tapCounters returns the counters of pasta's tap as the namespace's
// /proc/net/dev shows them, failing t if it cannot read them.
func tapCounters(t *testing.T, p *nstest.Pasta) devCounters {
	t.Helper()
	c, err := parseNetDev(p.NSOutput(t, "cat", "/proc/net/dev"), p.Tap)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkTapMoved fails t unless the tap's counters grew from before to
// after by at least the given bytes and packets each way: proof that the
// traffic crossed pasta and not some other path.
func checkTapMoved(t *testing.T, before, after devCounters, minBytes, minPackets uint64) {
	t.Helper()
	if after.TxBytes-before.TxBytes < minBytes || after.TxPackets-before.TxPackets < minPackets ||
		after.RxBytes-before.RxBytes < minBytes || after.RxPackets-before.RxPackets < minPackets {
		t.Errorf("tap counters moved too little (want >= %d bytes, %d packets each way): tx %d B/%d pkts, rx %d B/%d pkts",
			minBytes, minPackets,
			after.TxBytes-before.TxBytes, after.TxPackets-before.TxPackets,
			after.RxBytes-before.RxBytes, after.RxPackets-before.RxPackets)
	}
}

// ping runs `ping -c count` to dst inside pasta's namespace (ping -6 for an
// IPv6 dst), replies awaited 2 s each and the whole run bounded, and
// returns an error with ping's output unless every request was answered.
func ping(p *nstest.Pasta, dst string, count int) error {
	args := []string{"-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", "-w", strconv.Itoa(count + 3)}
	if strings.Contains(dst, ":") {
		args = append([]string{"-6"}, args...)
	}
	out, _, err := nsRun(p, 30*time.Second, "ping", append(args, dst)...)
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%d packets transmitted, %d received", count, count)
	if !strings.Contains(out, want) {
		return fmt.Errorf("ping %s: want %q in:\n%s", dst, want, out)
	}
	return nil
}

// udpEchoServer answers every datagram on c with the same bytes until c is
// closed, and sends what it received, in order, on got (buffered; extra
// datagrams beyond its capacity are answered but not reported).
func udpEchoServer(c net.PacketConn, got chan<- []byte) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		msg := slices.Clone(buf[:n])
		select {
		case got <- msg:
		default:
		}
		if _, err := c.WriteTo(msg, from); err != nil {
			return
		}
	}
}

// udpRoundTrip sends request on the connected socket c and returns the
// first datagram that comes back within timeout. Up to three tries, one
// per third of the timeout, as a datagram can be lost while a flow is set
// up.
func udpRoundTrip(c net.Conn, request []byte, timeout time.Duration) ([]byte, error) {
	buf := make([]byte, 65536)
	var last error
	for try := 0; try < 3; try++ {
		if _, err := c.Write(request); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
		c.SetReadDeadline(time.Now().Add(timeout / 3))
		n, err := c.Read(buf)
		if err == nil {
			return buf[:n], nil
		}
		last = err
		if !errors.Is(err, syscall.EAGAIN) && !isTimeout(err) {
			break
		}
	}
	return nil, last
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tcpExchange connects with dial, sends request, and reads the answer the
// server (accepting on ln) sends back after reading the whole request; the
// server then closes. It returns the address the server saw the client
// at, or an error if a step fails or the bytes differ at either end. Every
// step has a deadline.
func tcpExchange(ln net.Listener, dial func() (net.Conn, error), request, answer []byte) (net.Addr, error) {
	deadline := time.Now().Add(15 * time.Second)
	type result struct {
		got  []byte
		peer net.Addr
		err  error
	}
	srv := make(chan result, 1)
	go func() {
		ln.(*net.TCPListener).SetDeadline(deadline)
		c, err := ln.Accept()
		if err != nil {
			srv <- result{err: fmt.Errorf("accept: %w", err)}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		got := make([]byte, len(request))
		_, err = io.ReadFull(c, got)
		if err == nil {
			_, err = c.Write(answer)
		}
		srv <- result{got: got, peer: c.RemoteAddr(), err: err}
	}()

	c, err := dial()
	if err != nil {
		<-srv
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	var werr error
	if _, err := c.Write(request); err != nil {
		werr = fmt.Errorf("client write: %w", err)
	}
	back := make([]byte, len(answer))
	n, rerr := io.ReadFull(c, back)
	r := <-srv
	switch {
	case werr != nil:
		return r.peer, werr
	case r.err != nil:
		return r.peer, fmt.Errorf("server: %w", r.err)
	case !bytes.Equal(r.got, request):
		return r.peer, fmt.Errorf("server received %d bytes, not the %d sent", len(r.got), len(request))
	case rerr != nil || !bytes.Equal(back[:n], answer):
		return r.peer, fmt.Errorf("client received %d bytes (%v), not the %d the server sent", n, rerr, len(answer))
	}
	return r.peer, nil
}
