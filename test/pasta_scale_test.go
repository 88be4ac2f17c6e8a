// Scale tests of pasta's tap path (issue 14): 10,000 concurrent TCP
// connections and 10,000 UDP flows from pasta's namespace to servers on
// the host's loopback, every byte checked at both ends, and pasta's
// descriptors and resident memory before, at the peak and after: the
// descriptors must come back to their count from before (TCP sockets are
// closed at the end of the loop turn that ends them, UDP flows at their
// conntrack-like timeout, which the wait allows for), and the memory
// within scaleRSSMargin of it.
//
// The test process holds the namespace's end of every connection or flow,
// and pasta the host's: each needs a limit of descriptors above 10,000,
// which the test raises for itself (raiseNofile) as far as it may, and
// which pasta inherits; what pasta makes of its limit (it raises the soft
// one to the hard one, as the C original does) is read from
// /proc/PID/limits and checked. The TCP echo server runs as a process of
// its own (TestPastaScaleEchoHelper), so that the test process needs no
// room for 20,000 sockets, which a root without CAP_SYS_RESOURCE (hard
// limit 20,000 here) cannot get.

package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/test/nstest"
)

const (
	// scaleConns is how many TCP connections and UDP flows are open at
	// once.
	scaleConns = 10000
	// scaleMsg is the size of each connection's or flow's own bytes
	// (an 8-byte index, then its stream).
	scaleMsg = 1024
	// scaleRSSMargin is how far above its resident memory from before the
	// load pasta may stay afterwards: per-flow state (a few hundred bytes a
	// flow across the protocol's arrays and the flow table) is touched
	// as flows are made and stays resident, and the Go runtime returns
	// freed heap to the kernel only gradually.
	scaleRSSMargin = 16 << 20
)

// reasonScale is why the scale tests skip Debian's pasta: its TCP tap
// path stalls (reasonDebianTCP), and its UDP behaviour at this scale was
// never checked.
const reasonScale = "not run at scale: " + reasonDebianTCP

// raiseNofile raises the test process's limit of open descriptors (soft
// and hard) to at least n, for the rest of the test, and restores it at
// cleanup. syscall.Setrlimit, not x/sys/unix's: it also tells the Go
// runtime not to put the limit it found at start back in children, so
// that pasta inherits the raised one. Fails t if the limit cannot be
// raised (root can, up to fs.nr_open).
func raiseNofile(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n && old.Max >= n {
		return
	}
	l := syscall.Rlimit{Cur: max(old.Cur, n), Max: max(old.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatalf("raising RLIMIT_NOFILE from %d/%d to %d: %v", old.Cur, old.Max, n, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// nofileOf returns the soft and hard limits of open descriptors of process
// pid, from /proc/PID/limits.
func nofileOf(pid int) (soft, hard uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		if len(f) < 2 {
			break
		}
		if soft, err = strconv.ParseUint(f[0], 10, 64); err != nil {
			return 0, 0, err
		}
		hard, err = strconv.ParseUint(f[1], 10, 64)
		return soft, hard, err
	}
	return 0, 0, fmt.Errorf("no \"Max open files\" in /proc/%d/limits", pid)
}

// vmRSS returns the resident memory of process pid in bytes (VmRSS in
// /proc/PID/status).
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		return kb << 10, err
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// scaleProbe follows pasta's datapath process during a scale test: its
// descriptor count and resident memory before the load, their peaks
// (sampled every 50 ms until stop), and after.
type scaleProbe struct {
	pid                int
	fds0, fdsPeak      int
	rss0, rssPeak      int64
	stopc              chan struct{}
	done               chan struct{}
	fdsPeakA, rssPeakA atomic.Int64
}

// newScaleProbe waits for pid's descriptor count to settle, reads the
// figures from before, checks pasta's descriptor limit against the need
// of n flows, and starts sampling. It fails t if pid cannot be read.
func newScaleProbe(t *testing.T, pid, n int) *scaleProbe {
	t.Helper()
	s := &scaleProbe{pid: pid, stopc: make(chan struct{}), done: make(chan struct{})}
	s.fds0 = stableFDs(t, pid)
	var err error
	if s.rss0, err = vmRSS(pid); err != nil {
		t.Fatal(err)
	}
	soft, hard, err := nofileOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pasta (%d): descriptor limit %d (hard %d), %d open, RSS %.1f MiB before the load",
		pid, soft, hard, s.fds0, float64(s.rss0)/(1<<20))
	if soft != hard {
		t.Errorf("pasta's soft descriptor limit %d is not its hard limit %d: it should have raised it", soft, hard)
	}
	if soft < uint64(s.fds0+n) {
		t.Fatalf("pasta's descriptor limit %d leaves no room for %d flows (%d open)", soft, n, s.fds0)
	}
	go s.sample()
	t.Cleanup(s.stop)
	return s
}

// observe reads the descriptor count and resident memory now, and keeps
// them if they are the highest yet: the sampler calls it, and a test at
// the moment it knows every flow is open (a sample 50 ms later may come
// after the first ones closed).
func (s *scaleProbe) observe() {
	if n, err := nstest.CountFDs(s.pid); err == nil {
		for old := s.fdsPeakA.Load(); int64(n) > old && !s.fdsPeakA.CompareAndSwap(old, int64(n)); old = s.fdsPeakA.Load() {
		}
	}
	if r, err := vmRSS(s.pid); err == nil {
		for old := s.rssPeakA.Load(); r > old && !s.rssPeakA.CompareAndSwap(old, r); old = s.rssPeakA.Load() {
		}
	}
}

// sample records the peaks every 50 ms until stop (bounded by the test's
// own duration: stop runs at cleanup at the latest).
func (s *scaleProbe) sample() {
	defer close(s.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.observe()
		select {
		case <-s.stopc:
			return
		case <-tick.C:
		}
	}
}

// stop ends the sampling and keeps the peaks; it may be called again.
func (s *scaleProbe) stop() {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
	s.fdsPeak, s.rssPeak = int(s.fdsPeakA.Load()), s.rssPeakA.Load()
}

// finish waits up to timeout (a bounded poll) for pasta's descriptor count
// to come back to where it was, stops sampling, and checks and logs the
// figures: the peak must show the n flows open at once, the memory after
// must be within scaleRSSMargin of the memory before.
func (s *scaleProbe) finish(t *testing.T, what string, n int, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	waitFDs(t, s.pid, s.fds0, timeout)
	back := time.Since(start)
	s.stop()
	rss, err := vmRSS(s.pid)
	if err != nil {
		t.Fatal(err)
	}
	fds, _ := nstest.CountFDs(s.pid)
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	t.Logf("%s: pasta (%d) descriptors %d before, %d at the peak, %d after (back in %v); RSS %.1f MiB before, %.1f at the peak, %.1f after",
		what, s.pid, s.fds0, s.fdsPeak, fds, back.Round(time.Millisecond), mib(s.rss0), mib(s.rssPeak), mib(rss))
	if s.fdsPeak < s.fds0+n {
		t.Errorf("pasta held at most %d descriptors (%d before): the %d flows were not all open at once", s.fdsPeak, s.fds0, n)
	}
	if rss > s.rss0+scaleRSSMargin {
		t.Errorf("pasta's RSS %.1f MiB after the load, %.1f before: more than %d MiB above", mib(rss), mib(s.rss0), scaleRSSMargin>>20)
	}
}

// scaleMessage returns flow i's own bytes: its index, then its stream.
func scaleMessage(i int) []byte {
	b := make([]byte, scaleMsg)
	binary.BigEndian.PutUint64(b, uint64(i))
	streamFill(b[8:], uint64(i)+0x5ca1e, 0)
	return b
}

// checkScaleMessage reports whether b is the message of some flow of n,
// and which.
func checkScaleMessage(b []byte, n int) (int, bool) {
	if len(b) != scaleMsg {
		return -1, false
	}
	i := binary.BigEndian.Uint64(b)
	if i >= uint64(n) {
		return -1, false
	}
	return int(i), bytes.Equal(b, scaleMessage(int(i)))
}

// errorList gathers the errors of many goroutines, keeping the first ten.
type errorList struct {
	mu    sync.Mutex
	n     int
	first []error
}

// add records err.
func (e *errorList) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n++; len(e.first) < 10 {
		e.first = append(e.first, err)
	}
}

// report fails t with the errors recorded, if any.
func (e *errorList) report(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, err := range e.first {
		t.Error(err)
	}
	if e.n > len(e.first) {
		t.Errorf("... %d errors in all", e.n)
	}
}

// scaleServe is the server half of TestPastaScaleTCP: it accepts n
// connections on ln and, for each, reads its message and checks it (the
// index is its own and seen once, the bytes its stream), echoes it once
// all n are accepted (so that all are open at once, whatever the
// clients do: accepted, if not nil, is called then), closes odd
// connections itself after the echo and waits for the client's close
// (EOF) on even ones. Every step is bounded by deadline. Returns the
// errors.
func scaleServe(ln *net.TCPListener, n int, deadline time.Time, accepted func()) *errorList {
	var errs errorList
	ln.SetDeadline(deadline)
	seen := make([]atomic.Bool, n)
	all := make(chan struct{})
	var wg sync.WaitGroup
	for k := 0; k < n; k++ {
		c, err := ln.Accept()
		if err != nil {
			errs.add(fmt.Errorf("accept after %d connections: %w", k, err))
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(deadline)
			msg := make([]byte, scaleMsg)
			if _, err := io.ReadFull(c, msg); err != nil {
				errs.add(fmt.Errorf("server: read from %v: %w", c.RemoteAddr(), err))
				return
			}
			i, ok := checkScaleMessage(msg, n)
			if !ok || seen[i].Swap(true) {
				errs.add(fmt.Errorf("server: from %v: not a message of its own (index %d, valid %v)", c.RemoteAddr(), i, ok))
				return
			}
			select {
			case <-all:
			case <-time.After(time.Until(deadline)):
			}
			if _, err := c.Write(msg); err != nil {
				errs.add(fmt.Errorf("server: echo %d: %w", i, err))
				return
			}
			if i%2 == 1 {
				return // the server closes first
			}
			if k, err := c.Read(msg[:1]); k != 0 || err != io.EOF {
				errs.add(fmt.Errorf("server: connection %d: %d bytes, %v after the echo, want EOF", i, k, err))
			}
		}()
	}
	if accepted != nil && errs.n == 0 {
		accepted()
	}
	close(all)
	wg.Wait()
	return &errs
}

// scaleClients is the client half of TestPastaScaleTCP: 8 threads, each
// made by do (which runs a function in the clients' namespace), dial their
// share of the n connections to dst one after the other; once all are
// open, established (if not nil) is called, then each connection sends its
// message, reads and checks the echo, reads EOF first on odd connections
// (the server closes those) and closes. Every step is bounded by
// deadline. Returns the errors and when the last connection was made.
func scaleClients(do func(func() error) error, dst string, n int, deadline time.Time, established func()) (*errorList, time.Time) {
	var errs errorList
	clients := make([]net.Conn, n)
	const dialers = 8
	var wg sync.WaitGroup
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := do(func() error {
				for i := d; i < n; i += dialers {
					c, err := net.DialTimeout("tcp4", dst, 10*time.Second)
					if err != nil {
						return fmt.Errorf("dial %d to %s: %w", i, dst, err)
					}
					clients[i] = c
				}
				return nil
			})
			if err != nil {
				errs.add(err)
			}
		}()
	}
	wg.Wait()
	done := time.Now()
	if errs.n > 0 {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
		return &errs, done
	}
	if established != nil {
		established()
	}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(deadline)
			msg := scaleMessage(i)
			if _, err := c.Write(msg); err != nil {
				errs.add(fmt.Errorf("client %d: write: %w", i, err))
				return
			}
			got := make([]byte, scaleMsg)
			if _, err := io.ReadFull(c, got); err != nil {
				errs.add(fmt.Errorf("client %d: read the echo: %w", i, err))
				return
			}
			if !bytes.Equal(got, msg) {
				errs.add(fmt.Errorf("client %d: the echo differs", i))
				return
			}
			if i%2 == 1 {
				// The server closed first: EOF, then close.
				if k, err := c.Read(got[:1]); k != 0 || err != io.EOF {
					errs.add(fmt.Errorf("client %d: %d bytes, %v after the echo, want EOF", i, k, err))
				}
			}
		}()
	}
	wg.Wait()
	return &errs, done
}

// Environment of TestPastaScaleHelper: scaleHelperN, set to a number of
// connections, makes the test binary run it; scaleHelperDial, if set, is
// the address its clients dial (else it serves).
const (
	scaleHelperN    = "GOPASST_SCALE_N"
	scaleHelperDial = "GOPASST_SCALE_DIAL"
)

// TestPastaScaleHelper is not a test: run by TestPastaScaleTCP as a
// process of its own (this test binary, -test.run naming it, scaleHelperN
// set to n), in the host's namespace, it is the host's half of the n
// connections, so that they do not count against the test process's
// descriptor limit, which a test process without CAP_SYS_RESOURCE cannot
// raise past its hard limit (20,000 here: less than both ends of 10,000
// connections). With scaleHelperDial it is the clients (scaleClients, to
// that address); else it listens on 127.0.0.1, prints "port N" and is the
// server (scaleServe). Then it prints "done N" and exits 0, or prints the
// first errors and exits 1. Everything is bounded by a 60 s deadline.
func TestPastaScaleHelper(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(scaleHelperN))
	if err != nil {
		t.Skip("the host's half of TestPastaScaleTCP, run as a process of its own")
	}
	deadline := time.Now().Add(60 * time.Second)
	var errs *errorList
	if dst := os.Getenv(scaleHelperDial); dst != "" {
		errs, _ = scaleClients(func(f func() error) error { return f() }, dst, n, deadline, nil)
	} else {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			fmt.Printf("error: listen: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
		errs = scaleServe(ln.(*net.TCPListener), n, deadline, nil)
	}
	if errs.n > 0 {
		for _, err := range errs.first {
			fmt.Printf("error: %v\n", err)
		}
		fmt.Printf("error: %d in all\n", errs.n)
		os.Exit(1)
	}
	fmt.Printf("done %d\n", n)
	os.Exit(0)
}

// startScaleHelper starts TestPastaScaleHelper in host h for n
// connections, as their clients dialling dial if it is not empty, else as
// their server, whose port it returns. It fails t if the helper gives no
// port.
func startScaleHelper(t *testing.T, h *nstest.Host, n int, dial string) (*nstest.Proc, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{scaleHelperN + "=" + strconv.Itoa(n)}
	if dial != "" {
		env = append(env, scaleHelperDial+"="+dial)
	}
	proc := h.Start(t, "env", append(env, self, "-test.run=^TestPastaScaleHelper$")...)
	if dial != "" {
		return proc, ""
	}
	var port string
	nstest.Poll(10*time.Second, func() bool {
		for _, line := range strings.Split(proc.Output(), "\n") {
			if v, ok := strings.CutPrefix(line, "port "); ok {
				port = v
				return true
			}
		}
		return proc.Exited()
	})
	if port == "" {
		t.Fatalf("the scale helper gave no port:\n%s", proc.Output())
	}
	return proc, port
}

// waitScaleHelper waits for helper proc to end by deadline (plus 5 s) and
// fails t unless it ends with status 0 having done its n connections.
func waitScaleHelper(t *testing.T, proc *nstest.Proc, n int, deadline time.Time) {
	t.Helper()
	code, err := proc.Wait(time.Until(deadline) + 5*time.Second)
	if out := proc.Output(); err != nil || code != 0 || !strings.Contains(out, fmt.Sprintf("done %d\n", n)) {
		t.Fatalf("the host's half: status %d, %v:\n%s", code, err, out)
	}
}

// kernelCounters returns counter name of the namespace run executes in
// (nstat), or 0 if it cannot be read: for the logs only.
func kernelCounters(run nstest.CmdFunc, names ...string) []uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	st, err := nstest.ReadNstat(ctx, run)
	out := make([]uint64, len(names))
	if err == nil {
		for k, name := range names {
			out[k] = st.All[name]
		}
	}
	return out
}

// scaleCounters are the kernel's counters TestPastaScaleTCP logs: in
// pasta's namespace, the guest's retransmission timeouts (segments pasta
// took longer than the guest's RTO, at least 200 ms, to acknowledge); in
// the host, connections dropped because a listener's backlog was full
// (pasta's -t listener, for inbound connections).
func scaleCounters(w *tcpWorld) (guestRTOs, hostOverflows uint64) {
	return kernelCounters(w.p.NSCmd, "TcpExtTCPTimeouts")[0], kernelCounters(w.h.Cmd, "TcpExtListenOverflows")[0]
}

// TestPastaScaleTCP runs scaleConns TCP connections at once through
// pasta's tap, each way in turn. Outbound: from pasta's namespace to an
// echo server on the host's loopback (through the gateway address);
// inbound: from the host to its own address at a port forwarded with -t,
// to an echo server in the namespace. The host's half of the connections
// is TestPastaScaleHelper, in a process of its own. All connections are
// established before any data moves; then each sends its own scaleMsg
// bytes and reads them back, checked at the server (which must see every
// connection's message once) and at the client; even connections are
// closed by the client first, odd ones by the server. pasta's descriptors
// must come back to their count from before within 30 s (they close at
// the end of the turn that ends a connection: no wait for TIME_WAIT,
// which the kernel keeps without a descriptor).
func TestPastaScaleTCP(t *testing.T) {
	forEachPeerBut(t, reasonScale, func(t *testing.T, peer nstest.Peer) {
		n := scaleConns
		raiseNofile(t, uint64(n+4096))
		w := newTCPWorld(t, peer, modeAttachRoot)
		t.Run("outbound", func(t *testing.T) {
			rto0, ovf0 := scaleCounters(w)
			probe := newScaleProbe(t, w.worker, n)
			start := time.Now()
			deadline := start.Add(60 * time.Second)
			srv, port := startScaleHelper(t, w.h, n, "")
			dst := net.JoinHostPort(nstest.HostGW4.String(), port)
			// Once every client's connect() has returned, pasta has
			// sent each its SYN+ACK, which it does once its own
			// connect() to the server succeeded: it holds every host
			// socket then.
			errs, established := scaleClients(w.p.Do, dst, n, deadline, probe.observe)
			errs.report(t)
			waitScaleHelper(t, srv, n, deadline)
			rto, ovf := scaleCounters(w)
			t.Logf("%d connections established in %v, echoed and closed by %v; guest retransmission timeouts %d, host listen overflows %d", n,
				established.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond), rto-rto0, ovf-ovf0)
			probe.finish(t, "TCP outbound", n, 30*time.Second)
		})
		t.Run("inbound", func(t *testing.T) {
			rto0, ovf0 := scaleCounters(w)
			probe := newScaleProbe(t, w.worker, n)
			start := time.Now()
			deadline := start.Add(60 * time.Second)
			cli, _ := startScaleHelper(t, w.h, n, w.addr(tcpPaths[2]))
			// Once the namespace accepted the n-th connection, and
			// before any is echoed (so none closed), pasta holds
			// every accepted host socket.
			var accepted time.Duration
			errs := scaleServe(w.inbound, n, deadline, func() {
				accepted = time.Since(start)
				probe.observe()
			})
			errs.report(t)
			waitScaleHelper(t, cli, n, deadline)
			rto, ovf := scaleCounters(w)
			t.Logf("%d connections accepted in %v, echoed and closed by %v; guest retransmission timeouts %d, host listen overflows %d", n,
				accepted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), rto-rto0, ovf-ovf0)
			probe.finish(t, "TCP inbound", n, 30*time.Second)
		})
	})
}

// udpTimeouts returns the conntrack UDP timeouts pasta reads at start in
// host h (nf_conntrack_udp_timeout and _stream), or their defaults (30 s,
// 120 s) where the sysctls are absent, as datapath/udp does.
func udpTimeouts(t *testing.T, h *nstest.Host) (single, stream time.Duration) {
	read := func(name string, def time.Duration) time.Duration {
		out, _, err := runOut(h.Cmd(t.Context(), "cat", "/proc/sys/net/netfilter/"+name))
		if err != nil {
			return def
		}
		s, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil || s <= 0 {
			return def
		}
		return time.Duration(s) * time.Second
	}
	return read("nf_conntrack_udp_timeout", 30*time.Second), read("nf_conntrack_udp_timeout_stream", 120*time.Second)
}

// TestPastaScaleUDP opens scaleConns UDP sockets in pasta's namespace,
// each on its own port and connected to the gateway address (pasta maps it
// to an echo server on the host's loopback), so pasta holds as many flows
// at once. Each sends its own scaleMsg bytes, which the server checks (and
// must see from as many distinct sources, once each) and echoes; each
// client checks its echo. At most 256 are in flight at a time, and a
// datagram without an answer in 2 s is sent again (at most 3 times:
// UDP may drop; the retries are counted and logged). pasta's descriptors
// must come back to their count from before once the flows time out: the
// wait is bounded by the timeout of a flow that was answered once (a
// retried one is a "stream", with the longer timeout), plus 10 s.
func TestPastaScaleUDP(t *testing.T) {
	forEachPeerBut(t, reasonScale, func(t *testing.T, peer nstest.Peer) {
		n := scaleConns
		raiseNofile(t, uint64(n+4096))
		h := nstest.NewHost(t)
		p := startPasta(t, h, peer, modeAttachRoot, append([]string{"--config-net"}, quietArgs...)...)
		single, stream := udpTimeouts(t, h)
		probe := newScaleProbe(t, pastaWorker(t, p.PID), n)
		start := time.Now()
		deadline := start.Add(60 * time.Second)

		srv := listenUDP(t, h, "127.0.0.1").(*net.UDPConn)
		srv.SetReadBuffer(8 << 20)
		srv.SetDeadline(deadline)
		port := srv.LocalAddr().(*net.UDPAddr).Port
		var errs errorList
		var got [scaleConns]atomic.Int32 // datagrams the server took for each flow
		var sources sync.Map             // distinct sources the server saw
		var nsources atomic.Int32
		srvDone := make(chan struct{})
		go func() {
			defer close(srvDone)
			buf := make([]byte, 2*scaleMsg)
			for {
				k, from, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return // closed at cleanup, or the deadline
				}
				i, ok := checkScaleMessage(buf[:k], n)
				if !ok {
					errs.add(fmt.Errorf("server: %d bytes from %v: not a message of its own (index %d)", k, from, i))
					continue
				}
				if got[i].Add(1) == 1 {
					if _, dup := sources.LoadOrStore(from, i); dup {
						errs.add(fmt.Errorf("server: flow %d came from %v, as another flow did", i, from))
					} else {
						nsources.Add(1)
					}
				}
				srv.WriteToUDPAddrPort(buf[:k], from)
			}
		}()

		// The clients, each on its own port, made in pasta's namespace.
		dst := &net.UDPAddr{IP: net.IP(nstest.HostGW4.AsSlice()), Port: port}
		clients := make([]*net.UDPConn, n)
		t.Cleanup(func() {
			for _, c := range clients {
				if c != nil {
					c.Close()
				}
			}
		})
		if err := p.Do(func() error {
			for i := range clients {
				c, err := net.DialUDP("udp4", nil, dst)
				if err != nil {
					return fmt.Errorf("socket %d: %w", i, err)
				}
				clients[i] = c
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		probe.observe() // no flow in pasta yet: a baseline check of the sampling
		ports := map[int]bool{}
		for _, c := range clients {
			ports[c.LocalAddr().(*net.UDPAddr).Port] = true
		}
		if len(ports) != n {
			t.Fatalf("%d distinct source ports for %d sockets", len(ports), n)
		}

		var retries atomic.Int32
		sem := make(chan struct{}, 256)
		var wg sync.WaitGroup
		for i, c := range clients {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				msg := scaleMessage(i)
				buf := make([]byte, 2*scaleMsg)
				for try := 0; try < 3 && time.Now().Before(deadline); try++ {
					if try > 0 {
						retries.Add(1)
					}
					if _, err := c.Write(msg); err != nil {
						errs.add(fmt.Errorf("client %d: write: %w", i, err))
						return
					}
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					k, err := c.Read(buf)
					if isTimeout(err) {
						continue
					}
					if err != nil {
						errs.add(fmt.Errorf("client %d: read: %w", i, err))
						return
					}
					if !bytes.Equal(buf[:k], msg) {
						errs.add(fmt.Errorf("client %d: the echo differs (%d bytes)", i, k))
					}
					return
				}
				errs.add(fmt.Errorf("client %d: no echo in 3 tries", i))
			}()
		}
		wg.Wait()
		exchanged := time.Since(start)
		// Every flow has been answered: pasta holds all their sockets
		// until they time out.
		probe.observe()
		errs.report(t)
		missing := 0
		for i := range got {
			if got[i].Load() == 0 {
				missing++
			}
		}
		if missing > 0 || int(nsources.Load()) != n {
			t.Errorf("the server got no datagram of %d flows, and saw %d distinct sources for %d flows", missing, nsources.Load(), n)
		}
		// The flows stay open in pasta until they time out: the
		// clients can go now.
		for _, c := range clients {
			c.Close()
		}
		wait := single
		if retries.Load() > 0 {
			wait = stream
		}
		t.Logf("%d flows echoed in %v (%d datagrams sent again); waiting up to %v for them to time out in pasta (timeouts %v, stream %v)",
			n, exchanged.Round(time.Millisecond), retries.Load(), wait+10*time.Second, single, stream)
		probe.finish(t, "UDP", n, wait+10*time.Second)
		srv.Close()
		<-srvDone
	})
}

// hostDial connects to addr over TCP from host h, within 5 s.
func hostDial(h *nstest.Host, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	return c, err
}

// TestPastaDescriptorLimit puts pasta's datapath process at its limit of
// descriptors (lowered from outside with prlimit to 300 above what it
// holds idle) and checks that it refuses what it cannot serve at once and
// recovers: of 400 connections from the namespace, the ones past the
// limit are refused (ECONNREFUSED, from the RST pasta sends when it
// cannot make a socket), none hangs; at the limit, a connection to the
// forwarded port is reset at once (pasta accepts it with a spare
// descriptor rather than leave it in the listener's backlog, which also
// kept its loop spinning on the readable listener), and a datagram of a
// new UDP flow comes back as port unreachable (ECONNREFUSED). Once the
// connections close and pasta's descriptors are back to their count,
// each path works again with its bytes checked.
func TestPastaDescriptorLimit(t *testing.T) {
	forEachPeerBut(t, reasonScale, func(t *testing.T, peer nstest.Peer) {
		const room, dials = 300, 400
		w := newTCPWorld(t, peer, modeAttachRoot)
		base := stableFDs(t, w.worker)
		lim := unix.Rlimit{Cur: uint64(base + room), Max: uint64(base + room)}
		if err := unix.Prlimit(w.worker, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			t.Fatalf("prlimit on pasta (%d): %v", w.worker, err)
		}

		// The host's server: holds each connection until the client
		// closes it, echoing what it gets.
		ln := w.h.Listen(t, "tcp", "127.0.0.1:0")
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(30 * time.Second))
					io.Copy(c, c)
				}()
			}
		}()
		dst := net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		var cs []net.Conn
		t.Cleanup(func() {
			for _, c := range cs {
				c.Close()
			}
		})
		refused := 0
		err := w.p.Do(func() error {
			for i := 0; i < dials; i++ {
				c, err := net.DialTimeout("tcp4", dst, 5*time.Second)
				switch {
				case err == nil:
					cs = append(cs, c)
				case errors.Is(err, syscall.ECONNREFUSED):
					refused++
				default:
					return fmt.Errorf("dial %d at the descriptor limit: %w (want success or ECONNREFUSED)", i, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d connections made and %d refused with pasta (%d) limited to %d descriptors (%d held idle)",
			len(cs), refused, w.worker, base+room, base)
		if refused == 0 || len(cs) < room/2 {
			t.Fatalf("%d connections made, %d refused: the limit did not bite, or too early", len(cs), refused)
		}

		// At the limit: a forwarded connection is reset at once (so
		// soon, at times, that connect() itself reports it).
		in, err := hostDial(w.h, w.addr(tcpPaths[2]))
		if err == nil {
			in.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = in.Read(make([]byte, 1))
			in.Close()
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a connection to the forwarded port at the limit: %v, want ECONNRESET at once", err)
		}
		// At the limit: a new UDP flow is refused.
		srv := listenUDP(t, w.h, "127.0.0.1")
		go udpEchoServer(srv, nil)
		uport := srv.LocalAddr().(*net.UDPAddr).Port
		u, err := dialUDP(w.p, nstest.HostGW4.String(), uport)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := udpRoundTrip(u, []byte("at the limit"), 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("a new UDP flow at the limit: %v, want ECONNREFUSED", errString(err))
		}
		u.Close()

		// Recovery.
		for _, c := range cs {
			c.Close()
		}
		cs = nil
		waitFDs(t, w.worker, base, 10*time.Second)
		msg := randomBytes(t, 4096)
		c, err := w.p.Dial("tcp4", dst, 5*time.Second)
		if err != nil {
			t.Fatalf("a connection after the limit: %v", err)
		}
		cs = append(cs, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len(msg))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo after the limit: %v, equal %v", err, bytes.Equal(got, msg))
		}
		if _, err := tcpExchange(w.inbound, func() (net.Conn, error) { return hostDial(w.h, w.addr(tcpPaths[2])) },
			msg, msg[:1000]); err != nil {
			t.Fatalf("a forwarded connection after the limit: %v", err)
		}
		u, err = dialUDP(w.p, nstest.HostGW4.String(), uport)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		if back, err := udpRoundTrip(u, msg[:1000], 6*time.Second); err != nil || !bytes.Equal(back, msg[:1000]) {
			t.Fatalf("a UDP flow after the limit: %v", errString(err))
		}
	})
}
