// End-to-end fault test of pasta when its guest vanishes (issue 14, "Scale
// and faults"): an application in pasta's namespace holds TCP connections
// both ways (some moving data, some idle) and UDP flows both ways through
// the tap, and is killed with SIGKILL. Whatever pasta does then, spawning
// its command or attached to a namespace by PID or by file, with or
// without --no-netns-quit, the host's peers must see their connections end
// (no peer waits forever), pasta must exit with the status the C original
// gives, or keep running idle where told to, and nothing pasta started may
// be left: no process, no namespace.

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// guestAppEnv, set to a guestAppSpec in JSON, makes the test binary run
// TestPastaFaultGuestApp as the application in pasta's namespace.
const guestAppEnv = "GOPASST_FAULT_GUEST"

// guestAppSpec says what the guest application of TestPastaFaultVanish
// does. Connection k (dialled or accepted, counted separately) is busy
// (sends the stream of its index without end and reads what comes) for
// even k, idle (only reads) for odd k.
type guestAppSpec struct {
	Dial      []string // TCP servers to connect to, through pasta
	Listen    string   // TCP address to accept Accept connections on
	Accept    int
	UDPDial   string // UDP server to send a datagram to every 10 ms
	UDPListen string // UDP address whose datagrams are echoed
}

// guestAppLife bounds the guest application's life: it exits by itself
// (status 3) after this, if nobody killed it.
const guestAppLife = 120 * time.Second

// TestPastaFaultGuestApp is not a test: run by TestPastaFaultVanish as a
// process of its own inside pasta's namespace (this test binary, -test.run
// naming it, guestAppEnv set), it is the guest application: it opens what
// its guestAppSpec says (dials retried for up to 10 s, as pasta's
// --config-net may trail), prints "ready" once every connection is open
// and the UDP flows have exchanged a datagram, then moves data until it is
// killed, or exits with status 3 after guestAppLife. Errors are printed as
// "error: ..." with status 1.
func TestPastaFaultGuestApp(t *testing.T) {
	raw := os.Getenv(guestAppEnv)
	if raw == "" {
		t.Skip("the guest application of TestPastaFaultVanish, run as a process of its own")
	}
	fail := func(format string, args ...any) {
		fmt.Printf("error: "+format+"\n", args...)
		os.Exit(1)
	}
	var spec guestAppSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fail("spec: %v", err)
	}
	time.AfterFunc(guestAppLife, func() { fmt.Println("nobody killed me"); os.Exit(3) })
	serve := func(c net.Conn, k int) {
		go io.Copy(io.Discard, c)
		if k%2 == 0 {
			go func() {
				buf := make([]byte, 64<<10)
				for off := int64(0); ; off += int64(len(buf)) {
					streamFill(buf, uint64(k), off)
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}
	var wg sync.WaitGroup
	for k, addr := range spec.Dial {
		var c net.Conn
		var err error
		nstest.Poll(10*time.Second, func() bool {
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
			return err == nil
		})
		if err != nil {
			fail("dial %s: %v", addr, err)
		}
		serve(c, k)
	}
	if spec.Listen != "" {
		ln, err := net.Listen("tcp", spec.Listen)
		if err != nil {
			fail("listen: %v", err)
		}
		fmt.Println("listening")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range spec.Accept {
				c, err := ln.Accept()
				if err != nil {
					fail("accept: %v", err)
				}
				serve(c, k)
			}
		}()
	}
	if spec.UDPListen != "" {
		uc, err := net.ListenPacket("udp", spec.UDPListen)
		if err != nil {
			fail("udp listen: %v", err)
		}
		go udpEchoServer(uc, nil)
	}
	if spec.UDPDial != "" {
		var uc net.Conn
		var err error
		nstest.Poll(10*time.Second, func() bool {
			uc, err = net.Dial("udp", spec.UDPDial)
			if err == nil {
				_, err = udpRoundTrip(uc, []byte("first"), 3*time.Second)
			}
			return err == nil
		})
		if err != nil {
			fail("udp to %s: %v", spec.UDPDial, err)
		}
		go func() {
			for i := 0; ; i++ {
				uc.Write([]byte(fmt.Sprintf("datagram %d", i)))
				time.Sleep(10 * time.Millisecond)
			}
		}()
		go io.Copy(io.Discard, uc)
	}
	wg.Wait()
	fmt.Println("ready")
	select {}
}

// vanishWithin bounds how long after the guest vanished its host peers may
// still see their connections open, and pasta may still run: a liveness
// bound (pasta needs milliseconds here).
const vanishWithin = 20 * time.Second

// hostPeer is the host's end of one connection to the guest application:
// it reads (and, if busy, writes) until its connection ends.
type hostPeer struct {
	name            string
	c               *net.TCPConn
	busy            bool
	read, written   atomic.Int64
	readErr, wrErr  error
	done            chan struct{} // closed when reading (and writing) ended
	readAt, wroteAt time.Time
}

// start runs p's reader and, if busy, writer.
func (p *hostPeer) start() {
	p.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		for {
			n, err := p.c.Read(buf)
			p.read.Add(int64(n))
			if err != nil {
				p.readErr, p.readAt = err, time.Now()
				return
			}
		}
	}()
	if p.busy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				n, err := p.c.Write(buf)
				p.written.Add(int64(n))
				if err != nil {
					p.wrErr, p.wroteAt = err, time.Now()
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(p.done) }()
}

// ended reports whether p's connection has ended on the host's side.
func (p *hostPeer) ended() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// how says how p's connection ended, for logs and messages.
func (p *hostPeer) how() string {
	s := fmt.Sprintf("%s: read %s after %.1f MiB", p.name, endName(p.readErr), mib(p.read.Load()))
	if p.busy {
		s += fmt.Sprintf(", write %s after %.1f MiB", endName(p.wrErr), mib(p.written.Load()))
	}
	return s
}

// endName names how a read or write ended: EOF, ECONNRESET, EPIPE, still
// going, or the error.
func endName(err error) string {
	switch {
	case err == nil:
		return "still going"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, syscall.EPIPE):
		return "EPIPE"
	}
	return err.Error()
}

// vanishWorld is one run of TestPastaFaultVanish: pasta in a host of its
// own, the guest application, the host's peers and servers.
type vanishWorld struct {
	h          *nstest.Host
	pasta      *nstest.Proc
	app        *nstest.Proc // the guest application's own Proc (attach modes)
	appPID     int
	tport      int // -t, to the application's listener
	uport      int // -u, to the application's UDP echo
	peers      []*hostPeer
	udpIn      net.Conn      // the host's client of the -u forward
	udpEchoes  atomic.Int64  // datagrams the host's UDP server got from the guest
	udpInEcho  atomic.Int64  // echoes udpIn got back
	nsIno      uint64        // the guest namespace's inode
	procs      []procStamp   // pasta and everything below it, before the kill
	pastaPIDs  []int         // pasta's supervisor and datapath process
	udpInErr   atomic.Value  // error (net.Error or errno) udpIn's reader ended with
	udpInEnded chan struct{} // closed when udpIn's reader ended
}

// vanishMode is one way pasta serves the guest in TestPastaFaultVanish.
type vanishMode struct {
	name       string
	spawn      bool // pasta runs the application as its command
	foreground bool // -f (spawn only: pasta is in the foreground anyway)
	byFile     bool // attach with --netns FILE (else PID)
	noQuit     bool // --no-netns-quit
}

// TestPastaFaultVanish starts the guest application (TestPastaFaultGuestApp)
// in pasta's namespace with eight TCP connections (four to servers on the
// host's loopback through the gateway, IPv4 and IPv6, and four from the
// host's own addresses through -t; half of each moving data both ways, half
// idle) and two UDP flows (to an echo server on the host's loopback, and
// from the host through -u to the application's echo), waits until every
// busy connection has moved 1 MiB each way, and kills it (SIGKILL: the
// guest vanishes). Then, in every mode, every host peer's read and write
// must have ended (EOF, ECONNRESET or EPIPE) within vanishWithin, and:
//   - spawn (with -f, and without: pasta stays in the foreground when it
//     runs a command): the command was the namespace's init, so its death
//     empties the namespace; pasta exits with 128+9, the command's status,
//     as the C original does;
//   - attach to PID: the holder of the namespace is killed too; pasta exits
//     with status 0 (the C original's exit when the namespace goes away);
//   - attach with --netns FILE: the file is deleted (ip netns delete);
//     pasta exits with status 0;
//   - --netns FILE with --no-netns-quit: pasta must go on running with the
//     namespace kept alive by its tap alone, using less than 10% of a core
//     over 2 s (a behaviour check: no busy loop), until SIGTERM ends it
//     with status 0.
//
// Once pasta has exited: no process it had below it is left, no process
// is in the guest's network namespace any more (so it is gone), the host's
// UDP client of the -u forward gets ECONNREFUSED (pasta's socket is gone),
// and the -t and -u ports can be bound again.
func TestPastaFaultVanish(t *testing.T) {
	forEachTCPPeer(t, func(t *testing.T, peer nstest.Peer) {
		for _, m := range []vanishMode{
			{name: "spawn-foreground", spawn: true, foreground: true},
			{name: "spawn", spawn: true},
			{name: "attach-pid", foreground: true},
			{name: "attach-netns-file", foreground: true, byFile: true},
			{name: "attach-netns-file-no-quit", foreground: true, byFile: true, noQuit: true},
		} {
			t.Run(m.name, func(t *testing.T) { vanish(t, peer, m) })
		}
	})
}

// vanish runs TestPastaFaultVanish in mode m.
func vanish(t *testing.T, peer nstest.Peer, m vanishMode) {
	w := &vanishWorld{h: nstest.NewHost(t), udpInEnded: make(chan struct{})}
	w.tport, w.uport = w.h.FreePort(t, "tcp"), w.h.FreePort(t, "udp")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	// The host's servers: TCP for the application's dials, and a UDP
	// echo server.
	var lns []*net.TCPListener
	var dials []string
	for _, fam := range []struct{ lo, gw string }{{"127.0.0.1", nstest.HostGW4.String()}, {"::1", nstest.HostGW6.String()}} {
		ln := w.h.Listen(t, "tcp", net.JoinHostPort(fam.lo, "0")).(*net.TCPListener)
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		for range 2 {
			lns = append(lns, ln)
			dials = append(dials, net.JoinHostPort(fam.gw, port))
		}
	}
	uecho := listenUDP(t, w.h, "127.0.0.1")
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := uecho.ReadFrom(buf)
			if err != nil {
				return
			}
			w.udpEchoes.Add(1)
			uecho.WriteTo(buf[:n], from)
		}
	}()
	spec := guestAppSpec{
		Dial:      dials,
		Listen:    ":" + strconv.Itoa(w.tport),
		Accept:    4,
		UDPDial:   net.JoinHostPort(nstest.HostGW4.String(), strconv.Itoa(uecho.LocalAddr().(*net.UDPAddr).Port)),
		UDPListen: ":" + strconv.Itoa(w.uport),
	}
	js, _ := json.Marshal(spec)
	appArgv := []string{"env", guestAppEnv + "=" + string(js), self, "-test.run=^TestPastaFaultGuestApp$", "-test.timeout=3m"}

	// Accept the application's connections as they come.
	accepted := make(chan *net.TCPConn, len(dials))
	for _, ln := range []*net.TCPListener{lns[0], lns[2]} {
		go func() {
			ln.SetDeadline(time.Now().Add(60 * time.Second))
			for range 2 {
				c, err := ln.AcceptTCP()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
	}

	args := []string{"--config-net", "-t", strconv.Itoa(w.tport), "-u", strconv.Itoa(w.uport), "-T", "none", "-U", "none", "--runas", "0"}
	if m.foreground {
		args = append([]string{"-f"}, args...)
	}
	var holder *nstest.Proc
	var nsName string
	out := func() string { return w.pasta.Output() }
	switch {
	case m.spawn:
		w.pasta = w.h.Start(t, peer.Pasta, append(append(args, "--"), appArgv...)...)
	case m.byFile:
		nsName = ownNetns(t)
		if m.noQuit {
			args = append(args, "--no-netns-quit")
		}
		w.pasta = w.h.Start(t, peer.Pasta, append(args, "--netns", "/run/netns/"+nsName)...)
	default:
		holder = w.h.Start(t, "unshare", "--net", "--", "sleep", "600")
		nstest.WaitForErr(t, nstest.ReadyTimeout, func() error { return inOtherNetnsThan(holder.PID(), "sleep", w.h.Path()) })
		w.pasta = w.h.Start(t, peer.Pasta, append(args, strconv.Itoa(holder.PID()))...)
	}
	if !m.spawn {
		// The application, started in the namespace once pasta's tap is
		// there (its dials retry while --config-net finishes).
		nsPath := "/run/netns/" + nsName
		if holder != nil {
			nsPath = fmt.Sprintf("/proc/%d/ns/net", holder.PID())
		}
		nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
			if w.pasta.Exited() {
				t.Fatalf("pasta exited early:\n%s", w.pasta.Output())
			}
			return hasTap(nsPath)
		})
		w.app = nstest.StartCmd(t, exec.Command("nsenter", append([]string{"--net=" + nsPath, "--"}, appArgv...)...))
		w.appPID = w.app.PID()
		out = func() string { return w.app.Output() }
	}

	// The host's clients of the -t forward, dialled once the application
	// listens; and of the -u forward.
	nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
		if w.pasta.Exited() {
			t.Fatalf("pasta exited early (status %d):\n%s", exitCode(w.pasta), w.pasta.Output())
		}
		if o := out(); strings.Contains(o, "error:") {
			t.Fatalf("the guest application failed:\n%s", o)
		} else if !strings.Contains(o, "listening") {
			return errors.New("the guest application does not listen yet")
		}
		return nil
	})
	for k, dst := range []string{nstest.HostAddr4.Addr().String(), nstest.HostAddr4.Addr().String(),
		nstest.HostAddr6.Addr().String(), nstest.HostAddr6.Addr().String()} {
		var c net.Conn
		if err := w.h.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", net.JoinHostPort(dst, strconv.Itoa(w.tport)), 5*time.Second)
			return err
		}); err != nil {
			t.Fatalf("host client %d of the -t forward: %v", k, err)
		}
		t.Cleanup(func() { c.Close() })
		w.peers = append(w.peers, &hostPeer{name: fmt.Sprintf("inbound%d", k), c: c.(*net.TCPConn)})
	}
	if err := w.h.Do(func() error {
		var err error
		w.udpIn, err = net.Dial("udp", net.JoinHostPort(nstest.HostAddr4.Addr().String(), strconv.Itoa(w.uport)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.udpIn.Close() })
	if _, err := udpRoundTrip(w.udpIn, []byte("first"), 6*time.Second); err != nil {
		t.Fatalf("no echo through the -u forward: %v", err)
	}
	nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
		if o := out(); strings.Contains(o, "error:") {
			t.Fatalf("the guest application failed:\n%s", o)
		} else if !strings.Contains(o, "ready") {
			return errors.New("the guest application is not ready yet")
		}
		return nil
	})
	for k := range len(dials) {
		select {
		case c := <-accepted:
			t.Cleanup(func() { c.Close() })
			w.peers = append(w.peers, &hostPeer{name: fmt.Sprintf("outbound%d", k), c: c})
		case <-time.After(10 * time.Second):
			t.Fatalf("the host accepted %d of the application's %d connections", k, len(dials))
		}
	}
	// The busy connections are those on which the application sends
	// (which of its connections a host end carries, the host cannot tell
	// otherwise): the host writes on them too.
	time.Sleep(200 * time.Millisecond)
	for _, p := range w.peers {
		var one [1]byte
		p.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _ := p.c.Read(one[:])
		p.c.SetReadDeadline(time.Time{})
		p.busy = n > 0
		p.read.Add(int64(n))
		p.start()
	}
	go func() {
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			w.udpIn.Write([]byte(fmt.Sprintf("in %d", i)))
			w.udpIn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, err := w.udpIn.Read(buf)
			if err == nil {
				w.udpInEcho.Add(1)
			} else if !isTimeout(err) {
				w.udpInErr.Store(err)
				close(w.udpInEnded)
				return
			}
		}
	}()

	// Mid-transfer: every busy connection has moved 1 MiB each way.
	busy := 0
	for _, p := range w.peers {
		if p.busy {
			busy++
		}
	}
	if busy != 4 {
		t.Fatalf("%d busy connections, want 4 (2 outbound, 2 inbound)", busy)
	}
	nstest.WaitForErr(t, 30*time.Second, func() error {
		for _, p := range w.peers {
			if p.ended() {
				t.Fatalf("before the guest vanished: %s", p.how())
			}
			if p.busy && (p.read.Load() < 1<<20 || p.written.Load() < 1<<20) {
				return fmt.Errorf("%s: %d bytes read, %d written", p.name, p.read.Load(), p.written.Load())
			}
		}
		return nil
	})
	if !nstest.Poll(5*time.Second, func() bool { return w.udpEchoes.Load() >= 2 && w.udpInEcho.Load() >= 2 }) {
		t.Fatalf("UDP flows: the host's server got %d datagrams from the guest, its client %d echoes (%v)",
			w.udpEchoes.Load(), w.udpInEcho.Load(), w.udpInErr.Load())
	}

	// What must be gone afterwards.
	if m.spawn {
		w.appPID = appDescendant(w.pasta.PID(), filepath.Base(self))
		if w.appPID == 0 {
			t.Fatalf("no process below pasta runs %s", filepath.Base(self))
		}
	}
	w.nsIno = nsInode(t, w.appPID)
	w.procs = stampTree(w.pasta.PID())
	w.pastaPIDs = []int{w.pasta.PID()}
	for _, c := range childPIDs(w.pasta.PID()) {
		if nsInodeOf(c) != w.nsIno { // the sandboxed datapath process, not the command
			w.pastaPIDs = append(w.pastaPIDs, c)
		}
	}

	// The guest vanishes.
	killed := time.Now()
	if err := syscall.Kill(w.appPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the guest application %d: %v", w.appPID, err)
	}
	if holder != nil {
		syscall.Kill(holder.PID(), syscall.SIGKILL)
	}
	if m.byFile {
		if _, _, err := runOut(exec.Command("ip", "netns", "delete", nsName)); err != nil {
			t.Fatal(err)
		}
	}

	w.checkPeersEnded(t, killed)
	if m.noQuit {
		// pasta stays, the namespace alive through its tap alone: idle.
		time.Sleep(500 * time.Millisecond)
		if w.pasta.Exited() {
			t.Fatalf("pasta exited (status %d) with --no-netns-quit:\n%s", exitCode(w.pasta), w.pasta.Output())
		}
		t0, c0 := time.Now(), w.ticks(t)
		time.Sleep(2 * time.Second)
		cpu := float64(w.ticks(t)-c0) / 100 / time.Since(t0).Seconds()
		t.Logf("--no-netns-quit: with the namespace's processes killed and its file deleted, pasta used %.1f%% of a core over 2 s", 100*cpu)
		if cpu >= 0.10 {
			t.Errorf("pasta used %.1f%% of a core with its namespace empty and deleted, want < 10%%", 100*cpu)
		}
		if w.pasta.Exited() {
			t.Fatalf("pasta exited (status %d) with --no-netns-quit:\n%s", exitCode(w.pasta), w.pasta.Output())
		}
		syscall.Kill(w.pasta.PID(), syscall.SIGTERM)
	}
	code, err := w.pasta.Wait(vanishWithin)
	if err != nil {
		t.Fatalf("pasta still running %v after the guest vanished: %v\n%s", vanishWithin, err, w.pasta.Output())
	}
	want := 0
	if m.spawn {
		want = 128 + int(syscall.SIGKILL)
	}
	t.Logf("pasta exited with status %d %v after the guest was killed", code, time.Since(killed).Round(time.Millisecond))
	if code != want {
		t.Errorf("pasta exited with status %d, want %d; output:\n%s", code, want, w.pasta.Output())
	}
	w.checkNothingLeft(t)
}

// checkPeersEnded waits up to vanishWithin after killed for every host
// peer's connection to end, and fails t naming those that did not.
func (w *vanishWorld) checkPeersEnded(t *testing.T, killed time.Time) {
	t.Helper()
	nstest.Poll(vanishWithin, func() bool {
		for _, p := range w.peers {
			if !p.ended() {
				return false
			}
		}
		return true
	})
	var last time.Time
	for _, p := range w.peers {
		if !p.ended() {
			t.Errorf("%v after the guest vanished, the host's end still open: %s", vanishWithin, p.how())
			p.c.Close()
			continue
		}
		for _, at := range []time.Time{p.readAt, p.wroteAt} {
			if at.After(last) {
				last = at
			}
		}
		t.Log(p.how())
	}
	t.Logf("every host peer's connection ended within %v of the kill", last.Sub(killed).Round(time.Millisecond))
}

// ticks returns the CPU time, in clock ticks, pasta's processes used.
func (w *vanishWorld) ticks(t *testing.T) int64 {
	var sum int64
	for _, pid := range w.pastaPIDs {
		n, err := procTicks(pid)
		if err != nil {
			t.Fatal(err)
		}
		sum += n
	}
	return sum
}

// checkNothingLeft fails t if, after pasta exited, any process that was
// below it runs, any process is in the guest's network namespace, the -u
// forward's client has not seen ECONNREFUSED, or the -t and -u ports cannot
// be bound again. Each check waits a bounded time.
func (w *vanishWorld) checkNothingLeft(t *testing.T) {
	t.Helper()
	var left []string
	if !nstest.Poll(5*time.Second, func() bool {
		left = nil
		for _, p := range w.procs {
			if p.alive() {
				left = append(left, fmt.Sprintf("%d (%s)", p.pid, p.comm))
			}
		}
		return len(left) == 0
	}) {
		t.Errorf("processes pasta had below it still run: %s", strings.Join(left, ", "))
	}
	var inNS []int
	if !nstest.Poll(5*time.Second, func() bool { inNS = pidsInNetns(w.nsIno); return len(inNS) == 0 }) {
		t.Errorf("processes still in the guest's network namespace (inode %d): %v", w.nsIno, inNS)
	}
	select {
	case <-w.udpInEnded:
		err, _ := w.udpInErr.Load().(error)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("the host's client of the -u forward ended with %v, want ECONNREFUSED", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the host's client of the -u forward still gets no refusal 10 s after pasta exited (%d echoes in all)", w.udpInEcho.Load())
	}
	if err := w.h.Do(func() error {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(w.tport))
		if err != nil {
			return err
		}
		ln.Close()
		uc, err := net.ListenPacket("udp", ":"+strconv.Itoa(w.uport))
		if err != nil {
			return err
		}
		return uc.Close()
	}); err != nil {
		t.Errorf("the forwarded ports after pasta exited: %v", err)
	}
}

// exitCode returns p's exit status (see nstest.Proc.Wait), -1 if it runs.
func exitCode(p *nstest.Proc) int {
	code, err := p.Wait(0)
	if err != nil {
		return -1
	}
	return code
}

// ownNetns creates a named network namespace for t (ip netns add) that the
// test may delete itself, and deletes it at cleanup if it is still there
// (nstest.NewNetns's cleanup would fail on one the test deleted).
func ownNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("gopasst-vanish-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	if _, _, err := runOut(exec.Command("ip", "netns", "add", name)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			if _, _, err := runOut(exec.Command("ip", "netns", "delete", name)); err != nil {
				t.Error(err)
			}
		}
	})
	return name
}

// hasTap returns nil once the namespace nsPath has an interface other than
// lo with a global IPv4 address (pasta's tap, configured), why not
// otherwise.
func hasTap(nsPath string) error {
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "--", "ip", "-4", "-o", "addr", "show", "scope", "global").Output()
	if err != nil {
		return fmt.Errorf("ip addr in %s: %w", nsPath, err)
	}
	if !bytes.Contains(out, []byte("inet ")) {
		return fmt.Errorf("no global IPv4 address in %s yet", nsPath)
	}
	return nil
}

// inOtherNetnsThan returns nil once pid runs comm in a network namespace
// other than nsPath's.
func inOtherNetnsThan(pid int, comm, nsPath string) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != comm {
		return fmt.Errorf("pid %d does not run %s yet", pid, comm)
	}
	var a, h syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		return err
	}
	if err := syscall.Stat(nsPath, &h); err != nil {
		return err
	}
	if a.Ino == h.Ino {
		return fmt.Errorf("pid %d still in %s", pid, nsPath)
	}
	return nil
}

// nsInodeOf returns the inode of pid's network namespace, 0 if unknown.
func nsInodeOf(pid int) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0
	}
	return st.Ino
}

// nsInode returns the inode of pid's network namespace, failing t if it
// cannot be read.
func nsInode(t *testing.T, pid int) uint64 {
	t.Helper()
	ino := nsInodeOf(pid)
	if ino == 0 {
		t.Fatalf("network namespace of %d unreadable", pid)
	}
	return ino
}

// pidsInNetns returns the processes (any of whose threads is) in the
// network namespace of inode ino.
func pidsInNetns(ino uint64) []int {
	var out []int
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, f := range tasks {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) == nil && st.Ino == ino {
			pid, _ := strconv.Atoi(strings.Split(f, "/")[2])
			out = append(out, pid)
		}
	}
	return out
}

// appDescendant returns the PID of the process below pid whose comm is
// comm (at most 15 bytes, as /proc shows it), 0 if none.
func appDescendant(pid int, comm string) int {
	if len(comm) > 15 {
		comm = comm[:15]
	}
	for _, p := range stampTree(pid) {
		if p.comm == comm {
			return p.pid
		}
	}
	return 0
}

// procStamp names a process for certain (its PID and start time) with its
// command name.
type procStamp struct {
	pid   int
	start string
	comm  string
}

// stamp returns pid's procStamp, ok false if it is gone.
func stamp(pid int) (procStamp, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStamp{}, false
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[j+1:]))
	if i < 0 || len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return procStamp{}, false
	}
	return procStamp{pid: pid, start: f[19], comm: string(b[i+1 : j])}, true
}

// alive reports whether p still runs (not a zombie, same start time).
func (p procStamp) alive() bool {
	q, ok := stamp(p.pid)
	return ok && q.start == p.start
}

// stampTree returns pid and every process below it.
func stampTree(pid int) []procStamp {
	var out []procStamp
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 1000 {
		cur := queue[0]
		queue = queue[1:]
		if s, ok := stamp(cur); ok {
			out = append(out, s)
			queue = append(queue, childPIDs(cur)...)
		}
	}
	return out
}
