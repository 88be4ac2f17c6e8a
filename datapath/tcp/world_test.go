// In-process end-to-end harness: the real kernel of a network namespace
// we create plays the guest behind a tap device, the datapath under test
// (built through engine.New, as cmd/passt builds it, around that tap)
// translates, and servers and clients in the test's own namespace play the
// host (on loopback only: the guest reaches them through the gateway
// address, which maps to the host's loopback).

package tcp_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/engine"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
	"gopasst/datapath/tcp"
)

// Addresses of the test world (perf.md's benchmarking range), the unit
// tests' (export_test.go).
var gw4, guest4, gw6, guest6 = tcp.WorldAddrs()

var worldSeq atomic.Int32

// ringHook, if set, gives the hook that records every frame towards the
// guest (bidir_test.go's trace); guestTrace, if set, records every guest
// frame.
var (
	ringHook   func(w *world) func(frame []byte, h *tap.VnetHdr)
	guestTrace *ring
)

// world is one namespace with a tap device served by a datapath.
type world struct {
	t    *testing.T
	ns   string
	cfg  config.Config
	e    *engine.Engine
	dev  *tap.Device
	h    *tcp.Handler // e.TCP
	stop atomic.Bool
	done chan struct{}

	inPort uint16 // forwarded port for inbound tests
}

// needRoot skips t unless running as root with ip(8) available.
func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a tap device")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8)")
	}
}

// ip runs ip(8) with args, failing t on error.
func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNS runs f on a thread that entered namespace ns (sockets made there
// stay in it); the thread dies afterwards instead of returning to the pool.
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// newWorld creates the namespace, its tap at mtu, and a running datapath
// serving TCP only (the other protocols and the services are off, as the
// namespace is configured statically). setup, if not nil, runs before the
// loop starts (to open listeners).
func newWorld(t *testing.T, mtu int, setup func(h *tcp.Handler)) *world {
	needRoot(t)
	w := &world{t: t, ns: fmt.Sprintf("gptcp%d-%d", os.Getpid(), worldSeq.Add(1)), done: make(chan struct{})}
	ip(t, "netns", "add", w.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", w.ns).Run() })
	var fd int
	err := inNS(w.ns, func() error {
		var err error
		fd, _, err = tap.CreateDevice("tap0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	mac := "9a:55:9a:55:9a:55"
	ip(t, "-n", w.ns, "link", "set", "lo", "up")
	// txqueuelen as pasta sets it (netconf): at MTU 1500 the default 1000
	// frames overflow while the loop is busy, and the guest recovers
	// slowly from the burst of losses.
	ip(t, "-n", w.ns, "link", "set", "tap0", "mtu", fmt.Sprint(mtu), "txqueuelen", "10000", "up")
	ip(t, "-n", w.ns, "addr", "add", guest4.String()+"/24", "dev", "tap0")
	ip(t, "-n", w.ns, "-6", "addr", "add", guest6.String()+"/64", "dev", "tap0", "nodad")
	ip(t, "-n", w.ns, "route", "add", "default", "via", gw4.String())
	ip(t, "-n", w.ns, "-6", "route", "add", "default", "via", gw6.String())
	ip(t, "-n", w.ns, "neigh", "add", gw4.String(), "lladdr", mac, "dev", "tap0", "nud", "permanent")
	ip(t, "-n", w.ns, "-6", "neigh", "add", gw6.String(), "lladdr", mac, "dev", "tap0", "nud", "permanent")

	// NoSplice: these worlds test the tap path with connections from
	// the host's loopback, which pasta would otherwise splice.
	w.cfg = config.Config{Mode: config.ModePasta, MTU: mtu, OurMAC: config.DefaultMAC, NoSplice: true,
		NoUDP: true, NoICMP: true, NoDHCP: true, NoNDP: true, NoDHCPv6: true, NoRA: true}
	w.cfg.V4 = config.IP{Enabled: true, Addr: guest4, PrefixLen: 24, Gateway: gw4, MapHostLoopback: gw4}
	w.cfg.V6 = config.IP{Enabled: true, Addr: guest6, PrefixLen: 64, Gateway: gw6, MapHostLoopback: gw6,
		OurLL: netip.MustParseAddr("fe80::1")}
	w.dev = tap.NewDevice(fd, engine.QueueLen, nil)
	be := &taptest.Tap{Backend: w.dev}
	if os.Getenv("TCP_TRACE") != "" {
		be.ToGuest = func(f []byte, h *tap.VnetHdr) {
			gso := ""
			if h != nil {
				gso = fmt.Sprintf(" (gso %d/%d)", h.GSOType, h.GSOSize)
			}
			fmt.Fprintf(os.Stderr, "%s >guest %s%s\n", time.Now().Format("05.000000"), describe(f), gso)
		}
	}
	if ringHook != nil {
		be.ToGuest = ringHook(w)
	}
	be.FromGuest = func(f []byte) {
		if p, err := packet.Parse(f); err != nil || p.Proto != header.ProtoTCP {
			return
		}
		if os.Getenv("TCP_TRACE") != "" {
			fmt.Fprintf(os.Stderr, "%s guest> %s\n", time.Now().Format("05.000000"), describe(f))
		}
		if guestTrace != nil {
			guestTrace.add("guest> " + describe(f))
		}
	}
	w.e, err = engine.New(&w.cfg, be, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.h = w.e.TCP
	if setup != nil {
		setup(w.h)
	}
	go func() {
		defer close(w.done)
		runtime.LockOSThread()
		for !w.stop.Load() {
			if err := w.e.Loop.Turn(20 * time.Millisecond); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		w.halt()
		w.e.Close()
	})
	return w
}

// halt stops the loop; the datapath can be inspected afterwards.
func (w *world) halt() {
	if !w.stop.Swap(true) {
		<-w.done
	}
}

// dialNS connects from inside the namespace.
func (w *world) dialNS(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNS(w.ns, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// listenNS listens inside the namespace.
func (w *world) listenNS(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNS(w.ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// hostPort returns a free TCP port on the host's loopback.
var hostPort = tcp.HostPort

// describe summarises a TCP frame.
func describe(f []byte) string {
	p, err := packet.Parse(f)
	if err != nil || p.Proto != header.ProtoTCP {
		return "non-TCP"
	}
	t := header.TCP(p.L4Bytes())
	fl := ""
	for i, n := range "FSRPA" {
		if t.Flags()&(1<<i) != 0 {
			fl += string(n)
		}
	}
	return fmt.Sprintf("%v:%d > %v:%d [%s] seq %d ack %d win %d len %d", p.Src, p.SrcPort, p.Dst, p.DstPort, fl, t.Seq(), t.Ack(), t.Window(), t.PayloadLen())
}
