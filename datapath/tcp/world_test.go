// In-process end-to-end harness: the real kernel of a network namespace
// we create plays the guest behind a tap device, the handler under test
// translates, and servers and clients in the test's own namespace play the
// host (on loopback only: the guest reaches them through the gateway
// address, which maps to the host's loopback).

package tcp

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
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/loop"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
)

// Addresses of the test world (perf.md's benchmarking range).
var (
	gw4    = netip.MustParseAddr("198.18.0.1")
	guest4 = netip.MustParseAddr("198.18.0.2")
	gw6    = netip.MustParseAddr("2001:db8:9a55::1")
	guest6 = netip.MustParseAddr("2001:db8:9a55::2")
)

var worldSeq atomic.Int32

// ringHook, if set, wraps the world's tap.Out (bidir_test.go's trace);
// guestTrace, if set, records every guest frame.
var (
	ringHook   func(w *world) tap.Out
	guestTrace *ring
)

// world is one namespace with a tap device served by a Handler.
type world struct {
	t    *testing.T
	ns   string
	cfg  config.Config
	g    guest.State
	l    *loop.Loop
	ft   *flow.Table
	dev  *tap.Device
	h    *Handler
	stop atomic.Bool
	done chan struct{}

	bufs  [][]byte
	sizes []int
	pkts  []packet.Packet

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

// newWorld creates the namespace, its tap at mtu, and a running handler.
// setup, if not nil, runs before the loop starts (to open listeners).
func newWorld(t *testing.T, mtu int, setup func(h *Handler)) *world {
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

	w.cfg = config.Config{Mode: config.ModePasta, MTU: mtu, OurMAC: config.DefaultMAC}
	w.cfg.V4 = config.IP{Enabled: true, Addr: guest4, PrefixLen: 24, Gateway: gw4, MapHostLoopback: gw4}
	w.cfg.V6 = config.IP{Enabled: true, Addr: guest6, PrefixLen: 64, Gateway: gw6, MapHostLoopback: gw6,
		OurLL: netip.MustParseAddr("fe80::1")}
	w.g.MAC = guest.BroadcastMAC
	const nflows = 8192
	w.ft = flow.New(nflows)
	w.l, err = loop.New(nflows)
	if err != nil {
		t.Fatal(err)
	}
	w.dev = tap.NewDevice(fd, 256, nil)
	const batch = 128
	w.bufs = make([][]byte, batch)
	for i := range w.bufs {
		w.bufs[i] = make([]byte, tap.MaxFrame)
	}
	w.sizes = make([]int, batch)
	w.pkts = make([]packet.Packet, 0, batch)
	w.l.Handle(loop.KindTap, w.tapReady)
	if err := w.l.Add(fd, unix.EPOLLIN, loop.MakeRef(loop.KindTap, fd, 0)); err != nil {
		t.Fatal(err)
	}
	w.l.OnTurnEnd(w.dev.Flush)
	var out tap.Out = w.dev
	if os.Getenv("TCP_TRACE") != "" {
		out = &traceOut{Device: w.dev}
	}
	if ringHook != nil {
		out = ringHook(w)
	}
	w.h, err = New(&w.cfg, &w.g, out, w.l, w.ft)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(w.h)
	}
	go func() {
		defer close(w.done)
		runtime.LockOSThread()
		for !w.stop.Load() {
			if err := w.l.Turn(20 * time.Millisecond); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		w.halt()
		w.h.Close()
		unix.Close(fd)
	})
	return w
}

// halt stops the loop; the handler can be inspected afterwards.
func (w *world) halt() {
	if !w.stop.Swap(true) {
		<-w.done
	}
}

// tapReady reads every frame the namespace sent and hands the TCP ones to
// the handler, a batch at a time: the part of the lead's demultiplexer the
// handler needs.
func (w *world) tapReady(r loop.Ref, ev uint32) {
	for {
		n, err := w.dev.Read(w.bufs, w.sizes)
		if err != nil {
			w.t.Error(err)
			return
		}
		w.pkts = w.pkts[:0]
		for i := 0; i < n; i++ {
			if p, ok := parseFrame(w.bufs[i][:w.sizes[i]], &w.g); ok {
				w.pkts = append(w.pkts, p)
			}
		}
		if len(w.pkts) > 0 {
			if os.Getenv("TCP_TRACE") != "" {
				for i := range w.pkts {
					fmt.Fprintf(os.Stderr, "%s guest> %s\n", time.Now().Format("05.000000"), describe(w.pkts[i].Frame))
				}
			}
			if guestTrace != nil {
				for i := range w.pkts {
					guestTrace.add("guest> " + describe(w.pkts[i].Frame))
				}
			}
			w.h.FromGuest(w.pkts)
		}
		if n < len(w.bufs) {
			return
		}
	}
}

// parseFrame validates a guest frame and returns its TCP packet, learning
// the guest's MAC.
func parseFrame(f []byte, g *guest.State) (packet.Packet, bool) {
	eth, err := header.ParseEthernet(f)
	if err != nil {
		return packet.Packet{}, false
	}
	p := packet.Packet{Frame: f, L3: header.EthernetLen}
	switch eth.Type() {
	case header.EtherTypeIPv4:
		ip, err := header.ParseIPv4(f[header.EthernetLen:])
		if err != nil {
			return p, false
		}
		p.L4, p.L4Len, p.Proto = header.EthernetLen+ip.HeaderLen(), ip.PayloadLen(), ip.Proto()
		p.Src, p.Dst = ip.SrcAddr(), ip.DstAddr()
	case header.EtherTypeIPv6:
		ip, proto, off, err := header.ParseIPv6(f[header.EthernetLen:])
		if err != nil {
			return p, false
		}
		p.V6, p.L4, p.Proto = true, header.EthernetLen+off, proto
		p.L4Len = header.IPv6Len + ip.PayloadLen() - off
		p.Src, p.Dst = ip.SrcAddr(), ip.DstAddr()
	default:
		return p, false
	}
	g.MAC = eth.Src()
	if p.Proto != header.ProtoTCP {
		return p, false
	}
	t, err := header.ParseTCP(p.L4Bytes())
	if err != nil {
		return p, false
	}
	p.SrcPort, p.DstPort = t.SrcPort(), t.DstPort()
	return p, true
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
func hostPort(t testing.TB) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// traceOut prints every frame queued towards the guest.
type traceOut struct{ *tap.Device }

// Commit prints the frame and queues it.
func (o *traceOut) Commit(n int) {
	var b [1][]byte
	o.Device.Reserve(b[:])
	fmt.Fprintf(os.Stderr, "%s >guest %s\n", time.Now().Format("05.000000"), describe(b[0][:n]))
	o.Device.Commit(n)
}

// CommitOffload prints the frame and queues it with its virtio-net header.
func (o *traceOut) CommitOffload(n int, h *tap.VnetHdr) {
	var b [1][]byte
	o.Device.Reserve(b[:])
	fmt.Fprintf(os.Stderr, "%s >guest %s (gso %d/%d)\n", time.Now().Format("05.000000"), describe(b[0][:n]), h.GSOType, h.GSOSize)
	o.Device.CommitOffload(n, h)
}

// describe summarises a TCP frame.
func describe(f []byte) string {
	var g guest.State
	p, ok := parseFrame(f, &g)
	if !ok {
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
