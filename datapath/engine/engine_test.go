// Unit tests of the engine as the front door: frames injected through
// taptest's fake guest back end reach the right service (ARP, DHCP) or
// protocol (UDP, TCP, towards real host sockets on loopback), malformed
// frames are counted and dropped, the run ends as Run documents (the
// namespace's status, a back end's error, announcements first), and a
// steady batch of known UDP flows allocates nothing.
package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
)

// wait bounds every wait for the datapath: the loop is turned, a host
// socket read, a run awaited at most this long.
const wait = 2 * time.Second

// testConfig is configtest's dual-stack configuration (gateways mapped to
// the host's loopback) with an MTU and no forwarding rules, so that the
// engine opens no listeners of its own.
func testConfig() *config.Config {
	cfg := configtest.DualStack()
	cfg.MTU = 65520
	return cfg
}

// newEngine builds an engine around a recording fake back end (queue of
// QueueLen frames, copies kept) with opts, closed at cleanup.
func newEngine(t *testing.T, opts Options) (*Engine, *taptest.Backend) {
	t.Helper()
	be := taptest.New(QueueLen)
	e := newEngineOn(t, be, opts)
	return e, be
}

// newEngineOn builds an engine around the back end be with opts, closed at
// cleanup.
func newEngineOn(t *testing.T, be tap.Backend, opts Options) *Engine {
	t.Helper()
	e, err := New(testConfig(), be, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// turnUntil turns the loop until cond holds, for at most wait; it fails
// the test if cond never held.
func turnUntil(t *testing.T, e *Engine, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		if err := e.Loop.Turn(10 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
}

// turns turns the loop n times, for what must not happen.
func turns(t *testing.T, e *Engine, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := e.Loop.Turn(5 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
}

// fromGuest4 describes an IPv4 frame from the guest to the gateway, as a
// guest that resolved the gateway to our MAC sends it.
func fromGuest4(proto uint8) taptest.IP {
	return taptest.IP{MACDst: config.DefaultMAC, MACSrc: configtest.GuestMAC,
		Src: configtest.Guest4, Dst: configtest.Gateway4, Proto: proto, TTL: 64}
}

// guestSYN builds a guest TCP SYN from Guest4:sport to Gateway4:dport with
// sequence number isn and an MSS option, its checksum filled in (taptest
// computes UDP and ICMP checksums only).
func guestSYN(sport, dport uint16, isn uint32) []byte {
	l4 := make([]byte, header.TCPMinLen+4)
	header.EncodeTCP(l4, header.TCPFields{SrcPort: sport, DstPort: dport, Seq: isn,
		Flags: header.TCPFlagSYN, Window: 65535, OptLen: 4})
	header.PutTCPOptMSS(l4[header.TCPMinLen:], 1460)
	f := fromGuest4(header.ProtoTCP).Frame(l4)
	header.TCP(f[header.EthernetLen+header.IPv4MinLen:]).SetChecksumIPv4(configtest.Guest4.As4(), configtest.Gateway4.As4())
	return f
}

// ipv4Frame decodes a frame towards the guest as Ethernet and IPv4 with
// header's parsers, checking the Ethernet addresses (to the guest, from
// us) and the IPv4 header checksum. It fails the test otherwise.
func ipv4Frame(t *testing.T, f []byte) header.IPv4 {
	t.Helper()
	eth, err := header.ParseEthernet(f)
	if err != nil {
		t.Fatal(err)
	}
	if eth.Dst() != configtest.GuestMAC || eth.Src() != config.DefaultMAC || eth.Type() != header.EtherTypeIPv4 {
		t.Fatalf("Ethernet header % x, want to the guest from us, IPv4", f[:header.EthernetLen])
	}
	ip, err := header.ParseIPv4(eth.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if !ip.IsChecksumValid() {
		t.Error("bad IPv4 header checksum")
	}
	return ip
}

// framesOf returns the frames recorded towards the guest whose parsed
// transport protocol is proto (IPv4 or IPv6).
func framesOf(be *taptest.Backend, proto uint8) [][]byte {
	var r [][]byte
	for _, f := range be.Frames() {
		if p, err := packet.Parse(f); err == nil && p.EtherType != header.EtherTypeARP && p.Proto == proto {
			r = append(r, f)
		}
	}
	return r
}

// TestARP: an ARP request from the guest for the gateway goes to the ARP
// service, which answers with exactly one reply from our MAC to the
// guest's MAC and address.
func TestARP(t *testing.T) {
	e, be := newEngine(t, Options{})
	req := make([]byte, 60) // padded to the Ethernet minimum, as the kernel sends it
	n := header.EncodeEthernet(req, guest.BroadcastMAC, configtest.GuestMAC, header.EtherTypeARP)
	header.EncodeARP(req[n:], header.ARPRequest, configtest.GuestMAC, configtest.Guest4.As4(),
		[6]byte{}, configtest.Gateway4.As4())
	be.Inject(req)
	turnUntil(t, e, "the ARP reply", func() bool { return be.Count() > 0 })
	turns(t, e, 3) // a second reply would show now

	if be.Count() != 1 {
		t.Fatalf("%d frames towards the guest, want one ARP reply", be.Count())
	}
	f := be.Frames()[0]
	eth, err := header.ParseEthernet(f)
	if err != nil {
		t.Fatal(err)
	}
	if eth.Dst() != configtest.GuestMAC || eth.Src() != config.DefaultMAC || eth.Type() != header.EtherTypeARP {
		t.Fatalf("Ethernet header % x", f[:header.EthernetLen])
	}
	a, err := header.ParseARP(eth.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if a.Op() != header.ARPReply || a.SenderMAC() != config.DefaultMAC || a.SenderAddr() != configtest.Gateway4 ||
		a.TargetMAC() != configtest.GuestMAC || a.TargetAddr() != configtest.Guest4 {
		t.Fatalf("ARP reply op %d %x %v → %x %v", a.Op(), a.SenderMAC(), a.SenderAddr(), a.TargetMAC(), a.TargetAddr())
	}
	if e.Demux.Stats.Malformed != 0 || e.Demux.Stats.ServiceErrors != 0 {
		t.Fatalf("demux stats %+v", e.Demux.Stats)
	}
}

// TestUDP: a guest datagram to the gateway reaches a host socket on
// 127.0.0.1 (the gateway maps to the host's loopback) with exactly its
// payload, and the host's reply comes back to the guest from the gateway
// at that port, to the guest's port, with a valid checksum.
func TestUDP(t *testing.T) {
	e, be := newEngine(t, Options{})
	host, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	port := uint16(host.LocalAddr().(*net.UDPAddr).Port)
	const gport = 40000
	ping, pong := []byte("datagram from the guest"), []byte("and the host's answer")

	be.Inject(fromGuest4(header.ProtoUDP).Frame(taptest.UDP(gport, port, ping)))
	turnUntil(t, e, "the guest's frame to be read", func() bool { return be.Pending() == 0 })
	// The datagram was sent while the frame was dispatched, on this
	// thread: the host socket has it now or never.
	host.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, from, err := host.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("host socket: %v", err)
	}
	if !bytes.Equal(buf[:n], ping) {
		t.Fatalf("host got %q, want %q", buf[:n], ping)
	}
	if from.Addr().Unmap() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("host saw the datagram from %v, want loopback", from)
	}

	if _, err := host.WriteToUDPAddrPort(pong, from); err != nil {
		t.Fatal(err)
	}
	turnUntil(t, e, "the reply towards the guest", func() bool { return len(framesOf(be, header.ProtoUDP)) > 0 })
	fs := framesOf(be, header.ProtoUDP)
	if len(fs) != 1 {
		t.Fatalf("%d UDP frames towards the guest, want 1", len(fs))
	}
	ip := ipv4Frame(t, fs[0])
	if ip.SrcAddr() != configtest.Gateway4 || ip.DstAddr() != configtest.Guest4 || ip.Proto() != header.ProtoUDP {
		t.Fatalf("IPv4 %v → %v proto %d", ip.SrcAddr(), ip.DstAddr(), ip.Proto())
	}
	u, err := header.ParseUDP(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if u.SrcPort() != port || u.DstPort() != gport {
		t.Errorf("UDP ports %d → %d, want %d → %d", u.SrcPort(), u.DstPort(), port, gport)
	}
	if u.Checksum() == 0 || !u.IsChecksumValidIPv4(ip.Src(), ip.Dst()) {
		t.Error("bad UDP checksum")
	}
	if !bytes.Equal(u.Payload(), pong) {
		t.Errorf("guest got %q, want %q", u.Payload(), pong)
	}
}

// TestTCP: a guest SYN to the gateway makes the TCP handler connect to a
// host listener on 127.0.0.1, which accepts the connection, and the guest
// gets a SYN+ACK acknowledging its SYN.
func TestTCP(t *testing.T) {
	e, be := newEngine(t, Options{})
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	const gport, isn = 40001, 123456789

	be.Inject(guestSYN(gport, port, isn))
	turnUntil(t, e, "the SYN+ACK", func() bool { return len(framesOf(be, header.ProtoTCP)) > 0 })
	fs := framesOf(be, header.ProtoTCP)
	if len(fs) != 1 {
		t.Fatalf("%d TCP frames towards the guest, want one SYN+ACK", len(fs))
	}
	ip := ipv4Frame(t, fs[0])
	if ip.SrcAddr() != configtest.Gateway4 || ip.DstAddr() != configtest.Guest4 {
		t.Fatalf("IPv4 %v → %v", ip.SrcAddr(), ip.DstAddr())
	}
	s, err := header.ParseTCP(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if s.Flags() != header.TCPFlagSYN|header.TCPFlagACK || s.Ack() != isn+1 {
		t.Fatalf("answer to the SYN: flags %#x ack %d, want SYN+ACK %d", s.Flags(), s.Ack(), isn+1)
	}
	if s.SrcPort() != port || s.DstPort() != gport {
		t.Errorf("TCP ports %d → %d, want %d → %d", s.SrcPort(), s.DstPort(), port, gport)
	}
	if !s.IsChecksumValidIPv4(ip.Src(), ip.Dst()) {
		t.Error("bad TCP checksum")
	}

	// The SYN+ACK goes out once the host connection is established, so
	// the listener has it queued already.
	ln.SetDeadline(time.Now().Add(wait))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("host listener: %v", err)
	}
	defer c.Close()
	if ra := c.RemoteAddr().(*net.TCPAddr); !ra.IP.IsLoopback() {
		t.Errorf("host connection from %v, want loopback", ra)
	}
}

// dhcpDiscover builds a DHCPDISCOVER as a client without an address sends
// it: from 0.0.0.0:68 to 255.255.255.255:67, Ethernet broadcast, chaddr the
// guest's MAC, no broadcast flag, option 53 only, padded to the 300-byte
// BOOTP minimum.
func dhcpDiscover(xid uint32) []byte {
	m := make([]byte, 300)
	m[0], m[1], m[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, 6-byte addresses
	binary.BigEndian.PutUint32(m[4:], xid)
	copy(m[28:], configtest.GuestMAC[:])
	binary.BigEndian.PutUint32(m[236:], 0x63825363) // magic cookie
	copy(m[240:], []byte{53, 1, 1, 255})            // DHCPDISCOVER, end
	return taptest.IP{MACDst: guest.BroadcastMAC, MACSrc: configtest.GuestMAC,
		Src: netip.IPv4Unspecified(), Dst: netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		Proto: header.ProtoUDP, TTL: 64}.Frame(taptest.UDP(68, 67, m))
}

// TestDHCP: a DHCPDISCOVER from the guest goes to the DHCP service, which
// offers the guest's configured address from the gateway.
func TestDHCP(t *testing.T) {
	e, be := newEngine(t, Options{})
	const xid = 0x9a55beef
	be.Inject(dhcpDiscover(xid))
	turnUntil(t, e, "the DHCP offer", func() bool { return be.Count() > 0 })
	turns(t, e, 3)

	if be.Count() != 1 {
		t.Fatalf("%d frames towards the guest, want one offer", be.Count())
	}
	ip := ipv4Frame(t, be.Frames()[0])
	if ip.SrcAddr() != configtest.Gateway4 || ip.DstAddr() != configtest.Guest4 || ip.Proto() != header.ProtoUDP {
		t.Fatalf("IPv4 %v → %v proto %d", ip.SrcAddr(), ip.DstAddr(), ip.Proto())
	}
	u, err := header.ParseUDP(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if u.SrcPort() != 67 || u.DstPort() != 68 || !u.IsChecksumValidIPv4(ip.Src(), ip.Dst()) {
		t.Fatalf("UDP %d → %d, checksum valid %v", u.SrcPort(), u.DstPort(), u.IsChecksumValidIPv4(ip.Src(), ip.Dst()))
	}
	m := u.Payload()
	if len(m) < 244 || m[0] != 2 || binary.BigEndian.Uint32(m[4:]) != xid ||
		netip.AddrFrom4([4]byte(m[16:20])) != configtest.Guest4 || !bytes.Equal(m[28:34], configtest.GuestMAC[:]) {
		t.Fatalf("BOOTP reply % x", m[:min(len(m), 44)])
	}
	// Option 53 must say OFFER (2): walk the options after the cookie.
	typ := -1
	for o := m[240:]; len(o) >= 2 && o[0] != 255; {
		if o[0] == 0 {
			o = o[1:]
			continue
		}
		if o[0] == 53 && o[1] == 1 {
			typ = int(o[2])
		}
		o = o[min(len(o), 2+int(o[1])):]
	}
	if typ != 2 {
		t.Fatalf("DHCP message type %d, want OFFER (2)", typ)
	}
}

// TestMalformed: frames that do not parse (too short for Ethernet, a
// truncated IPv4 header, garbage after an IPv4 EtherType, a UDP datagram
// cut short, a truncated IPv6 header) are each counted as malformed, and
// nothing goes to the guest.
func TestMalformed(t *testing.T) {
	e, be := newEngine(t, Options{})
	udp := fromGuest4(header.ProtoUDP).Frame(taptest.UDP(40000, 9, []byte("payload")))
	eth4 := udp[:header.EthernetLen]
	eth6 := []byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x86, 0xdd}
	garbage := append(append([]byte{}, eth4...), bytes.Repeat([]byte{0xa5}, 40)...)
	frames := map[string][]byte{
		"short ethernet": udp[:10],
		"short ipv4":     udp[:header.EthernetLen+12],
		"garbage ipv4":   garbage,
		"short udp":      udp[:header.EthernetLen+header.IPv4MinLen+4],
		"short ipv6":     append(append([]byte{}, eth6...), 0x60, 0, 0, 0),
	}
	for name, f := range frames {
		// The precondition: the parser refuses each one.
		if _, err := packet.Parse(f); err == nil {
			t.Fatalf("%s: parses", name)
		}
		be.Inject(f)
	}
	want := uint64(len(frames))
	turnUntil(t, e, "the frames to be dispatched", func() bool { return e.Demux.Stats.Frames == want })
	turns(t, e, 3)
	if e.Demux.Stats.Malformed != want {
		t.Errorf("%d frames counted malformed, want %d (%+v)", e.Demux.Stats.Malformed, want, e.Demux.Stats)
	}
	if be.Count() != 0 {
		t.Errorf("%d frames sent to the guest, want none", be.Count())
	}
}

// pipeNS is a Namespace over a pipe: done, with status, once a byte can
// be read from it.
type pipeNS struct {
	r, w   int
	status int
	checks atomic.Int32 // calls of Check that found the pipe readable
}

// newPipeNS returns a pipeNS whose pipe is closed at cleanup.
func newPipeNS(t *testing.T, status int) *pipeNS {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return &pipeNS{r: p[0], w: p[1], status: status}
}

// FD implements Namespace.
func (n *pipeNS) FD() int { return n.r }

// Check implements Namespace: done only if a byte was there, so that a
// spurious call would not end the run.
func (n *pipeNS) Check() (bool, int) {
	var b [1]byte
	if k, _ := unix.Read(n.r, b[:]); k != 1 {
		return false, 0
	}
	n.checks.Add(1)
	return true, n.status
}

// end makes the pipe readable.
func (n *pipeNS) end(t *testing.T) {
	if _, err := unix.Write(n.w, []byte{1}); err != nil {
		t.Error(err)
	}
}

// runBounded runs e.Run on another goroutine and returns what it returned,
// failing the test if it did not return within wait. The test goroutine
// touches nothing of e meanwhile (the engine is single-threaded).
func runBounded(t *testing.T, e *Engine) (int, error) {
	t.Helper()
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.Run()
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		return r.status, r.err
	case <-time.After(wait):
		t.Fatal("Run did not return")
		return 0, nil
	}
}

// TestRunNamespaceEnd: Run keeps turning until the namespace's descriptor
// becomes readable, then returns the status Check gave, without error.
func TestRunNamespaceEnd(t *testing.T) {
	ns := newPipeNS(t, 7)
	e, _ := newEngine(t, Options{Namespace: ns})
	var written atomic.Bool
	// The write is the only thing the timer does: it must not call t
	// (the test may be over when it fires, if Run returned early).
	tm := time.AfterFunc(50*time.Millisecond, func() {
		written.Store(true)
		unix.Write(ns.w, []byte{1})
	})
	defer tm.Stop()
	st, err := runBounded(t, e)
	if !written.Load() {
		t.Fatal("Run returned before the namespace ended")
	}
	if st != 7 || err != nil {
		t.Fatalf("Run: (%d, %v), want (7, nil)", st, err)
	}
	if ns.checks.Load() != 1 {
		t.Fatalf("Check found the end %d times, want once", ns.checks.Load())
	}
}

// brokenBackend is taptest's back end whose Ready fails, as a tap that was
// removed does.
type brokenBackend struct {
	*taptest.Backend
	err error
}

// Ready implements tap.Backend: it fails.
func (b *brokenBackend) Ready(uint32, uint32) (tap.Event, error) { return 0, b.err }

// TestRunBackendError: an error from the back end's Ready ends Run with
// that error and a failure status.
func TestRunBackendError(t *testing.T) {
	errGone := errors.New("tap device gone")
	be := &brokenBackend{Backend: taptest.New(QueueLen), err: errGone}
	e := newEngineOn(t, be, Options{})
	// A frame makes the back end's descriptor readable, so the loop asks
	// Ready.
	be.Inject(dhcpDiscover(1))
	st, err := runBounded(t, e)
	if !errors.Is(err, errGone) {
		t.Fatalf("Run: %v, want %v", err, errGone)
	}
	if st == 0 {
		t.Fatal("Run failed with exit status 0")
	}
	if be.Count() != 0 || e.Demux.Stats.Frames != 0 {
		t.Fatalf("%d frames sent, %d dispatched after the back end failed", be.Count(), e.Demux.Stats.Frames)
	}
}

// TestRunAnnounce: with Announce, Run first sends the ARP request for the
// guest's address from the gateway and the Neighbour Solicitation for its
// IPv6 address from our link-local address, before anything ends it.
func TestRunAnnounce(t *testing.T) {
	ns := newPipeNS(t, 0)
	e, be := newEngine(t, Options{Namespace: ns, Announce: true})
	// Readable from the start: Run announces, turns once and ends.
	ns.end(t)
	if st, err := runBounded(t, e); st != 0 || err != nil {
		t.Fatalf("Run: (%d, %v), want (0, nil)", st, err)
	}
	if be.Count() != 2 {
		t.Fatalf("%d frames towards the guest, want the ARP request and the NS", be.Count())
	}

	f := be.Frames()[0]
	eth, _ := header.ParseEthernet(f)
	a, err := header.ParseARP(eth.Payload())
	if err != nil || eth.Type() != header.EtherTypeARP || eth.Dst() != guest.BroadcastMAC || eth.Src() != config.DefaultMAC {
		t.Fatalf("first frame % x: %v", f, err)
	}
	if a.Op() != header.ARPRequest || a.SenderMAC() != config.DefaultMAC || a.SenderAddr() != configtest.Gateway4 ||
		a.TargetAddr() != configtest.Guest4 {
		t.Fatalf("ARP op %d %x %v → %v", a.Op(), a.SenderMAC(), a.SenderAddr(), a.TargetAddr())
	}

	f = be.Frames()[1]
	eth, _ = header.ParseEthernet(f)
	g6 := configtest.Guest6.As16()
	// The guest's MAC is unknown yet: the solicited-node multicast MAC.
	if eth.Type() != header.EtherTypeIPv6 || eth.Src() != config.DefaultMAC ||
		eth.Dst() != [6]byte{0x33, 0x33, 0xff, g6[13], g6[14], g6[15]} {
		t.Fatalf("second frame's Ethernet header % x", f[:header.EthernetLen])
	}
	ip, proto, off, err := header.ParseIPv6(eth.Payload())
	if err != nil || proto != header.ProtoICMPv6 {
		t.Fatalf("second frame: IPv6 %v, next header %d", err, proto)
	}
	if ip.SrcAddr() != configtest.OurLL || ip.DstAddr() != configtest.Guest6 || ip.HopLimit() != 255 {
		t.Fatalf("NS %v → %v hop limit %d", ip.SrcAddr(), ip.DstAddr(), ip.HopLimit())
	}
	m, err := header.ParseICMPv6(ip[off:])
	if err != nil {
		t.Fatal(err)
	}
	src, dst := ip.Src(), ip.Dst()
	if m.Type() != header.ICMPv6NeighborSolicit || !m.IsChecksumValid(&src, &dst) || len(m) < 24 ||
		netip.AddrFrom16([16]byte(m[8:24])) != configtest.Guest6 {
		t.Fatalf("NS % x", m)
	}
}

// TestBatchAllocs: a batch of datagrams of UDP flows the engine knows
// already goes through the demultiplexer to the host sockets without
// allocating, as the datapath promises. The frames are built beforehand:
// Inject copies, so the measurement calls Demux.Batch directly.
func TestBatchAllocs(t *testing.T) {
	e, be := newEngine(t, Options{})
	host, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	port := uint16(host.LocalAddr().(*net.UDPAddr).Port)
	frames := [][]byte{
		fromGuest4(header.ProtoUDP).Frame(taptest.UDP(40010, port, []byte("first flow"))),
		fromGuest4(header.ProtoUDP).Frame(taptest.UDP(40011, port, []byte("second flow"))),
	}
	// Open the flows through the loop, and drain what they sent.
	be.Inject(frames...)
	turnUntil(t, e, "the flows to open", func() bool { return be.Pending() == 0 })
	buf := make([]byte, 65536)
	drain := func(n int) {
		host.SetReadDeadline(time.Now().Add(wait))
		for i := 0; i < n; i++ {
			if _, _, err := host.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatalf("host socket, datagram %d of %d: %v", i+1, n, err)
			}
		}
	}
	drain(len(frames))
	flows := e.Flows.Count()

	be.Keep = false
	const runs = 50
	if a := testing.AllocsPerRun(runs, func() { e.Demux.Batch(frames) }); a != 0 {
		t.Errorf("%v allocations per batch of known UDP flows", a)
	}
	// AllocsPerRun calls once more to warm up: every call's datagrams
	// must have crossed, through the same flows.
	drain((runs + 1) * len(frames))
	if e.Flows.Count() != flows || e.Demux.Stats.Malformed != 0 {
		t.Fatalf("flows %d → %d, stats %+v", flows, e.Flows.Count(), e.Demux.Stats)
	}
}
