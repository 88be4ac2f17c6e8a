// Test scaffolding: a private network namespace per test, a recording
// tap.Out, the test configuration and guest packet builders.
package udp

import (
	"encoding/binary"
	"net/netip"
	"runtime"
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

func init() {
	// Keep the main goroutine on the main thread, so that a test
	// goroutine that enters a namespace (enterNetns) never runs there: a
	// locked goroutine that exits on any other thread takes the thread,
	// and with it the namespace, away.
	runtime.LockOSThread()
}

// enterNetns moves the calling test goroutine, locked to its thread, into a
// new network namespace with lo up: every socket the test creates lives
// there, so tests need no free ports on the machine and leave nothing
// behind. The thread is never unlocked: it exits with the test goroutine,
// and the namespace goes with it and the last socket. Skips without
// CAP_SYS_ADMIN.
func enterNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace (needs CAP_SYS_ADMIN): %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	// ::1 appears when lo comes up, but wait until it can be bound.
	for i := 0; i < 100; i++ {
		s, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return // no IPv6 at all: IPv6 tests skip on their own
		}
		err = unix.Bind(s, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()})
		unix.Close(s)
		if err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeOut is a tap.Out that keeps copies of the committed frames (or only
// counts them, for allocation and burst tests).
type fakeOut struct {
	slots  [][]byte
	n      int // committed in the current queue
	keep   bool
	frames [][]byte
	count  int // frames committed in total
	bytes  int // their total length
}

func newFakeOut(slots int, keep bool) *fakeOut {
	o := &fakeOut{keep: keep}
	mem := make([]byte, slots*tap.MaxFrame)
	for i := 0; i < slots; i++ {
		o.slots = append(o.slots, mem[i*tap.MaxFrame:(i+1)*tap.MaxFrame:(i+1)*tap.MaxFrame])
	}
	return o
}

func (o *fakeOut) Frame() []byte {
	if o.n == len(o.slots) {
		o.Flush()
	}
	return o.slots[o.n]
}

func (o *fakeOut) Commit(n int) {
	if o.keep {
		o.frames = append(o.frames, append([]byte(nil), o.slots[o.n][:n]...))
	}
	o.n++
	o.count++
	o.bytes += n
}

func (o *fakeOut) Reserve(bufs [][]byte) int {
	if len(o.slots)-o.n < len(bufs) {
		o.Flush()
	}
	k := min(len(bufs), len(o.slots)-o.n)
	for i := 0; i < k; i++ {
		bufs[i] = o.slots[o.n+i]
	}
	return k
}

func (o *fakeOut) Flush() { o.n = 0 }

var (
	guestMAC = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	guest4   = netip.MustParseAddr("192.0.2.10")
	gw4      = netip.MustParseAddr("192.0.2.1")
	dns4     = netip.MustParseAddr("192.0.2.53")
	guest6   = netip.MustParseAddr("2001:db8::10")
	gw6      = netip.MustParseAddr("2001:db8::1")
	dns6     = netip.MustParseAddr("2001:db8::53")
	lo4      = netip.MustParseAddr("127.0.0.1")
	lo6      = netip.IPv6Loopback()
)

// testConfig is a configuration whose gateways map to the host's loopback
// and whose DNS-match addresses forward to the host's loopback resolver.
func testConfig() *config.Config {
	return &config.Config{
		OurMAC: config.DefaultMAC,
		MTU:    config.DefaultMTU,
		V4: config.IP{Enabled: true, Addr: guest4, PrefixLen: 24, Gateway: gw4,
			MapHostLoopback: gw4, DNSMatch: dns4, DNSHost: lo4},
		V6: config.IP{Enabled: true, Addr: guest6, PrefixLen: 64, Gateway: gw6,
			OurLL: netip.MustParseAddr("fe80::1"), MapHostLoopback: gw6, DNSMatch: dns6, DNSHost: lo6},
	}
}

// rig is one handler with its loop, table and recording Out.
type rig struct {
	cfg *config.Config
	g   *guest.State
	out *fakeOut
	l   *loop.Loop
	ft  *flow.Table
	h   *Handler
}

func newRig(t *testing.T, slots int, keep bool) *rig {
	t.Helper()
	r := &rig{cfg: testConfig(), g: &guest.State{MAC: guestMAC}, out: newFakeOut(slots, keep)}
	var err error
	if r.l, err = loop.New(1024); err != nil {
		t.Fatal(err)
	}
	r.ft = flow.New(1024)
	if r.h, err = New(r.cfg, r.g, r.out, r.l, r.ft); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.h.Close)
	return r
}

// waitFrames turns the loop until at least n frames were committed, for at
// most two seconds.
func (r *rig) waitFrames(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for r.out.count < n && time.Now().Before(deadline) {
		if err := r.l.Turn(50 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if r.out.count < n {
		t.Fatalf("%d frames towards the guest, want %d", r.out.count, n)
	}
}

// guestUDP builds a UDP datagram from the guest as the demultiplexer hands
// it over: a whole Ethernet frame and the parsed fields.
func guestUDP(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ttl uint8, payload []byte) packet.Packet {
	v6 := src.Is6()
	l3 := header.IPv4MinLen
	if v6 {
		l3 = header.IPv6Len
	}
	b := make([]byte, header.EthernetLen+l3+header.UDPLen+len(payload))
	et := header.EtherTypeIPv4
	if v6 {
		et = header.EtherTypeIPv6
	}
	header.EncodeEthernet(b, config.DefaultMAC, guestMAC, et)
	ul := header.UDPLen + len(payload)
	if v6 {
		header.EncodeIPv6(b[header.EthernetLen:], header.IPv6Fields{PayloadLen: ul, NextHeader: header.ProtoUDP,
			HopLimit: ttl, Src: src.As16(), Dst: dst.As16()})
	} else {
		header.EncodeIPv4(b[header.EthernetLen:], header.IPv4Fields{TTL: ttl, Proto: header.ProtoUDP,
			Src: src.As4(), Dst: dst.As4(), PayloadLen: ul})
	}
	l4 := header.EthernetLen + l3
	u := header.UDP(b[l4:])
	header.EncodeUDP(u, sport, dport, len(payload))
	copy(u[header.UDPLen:], payload)
	if v6 {
		s, d := src.As16(), dst.As16()
		u.SetChecksumIPv6(&s, &d)
	} else {
		u.SetChecksumIPv4(src.As4(), dst.As4())
	}
	return packet.Packet{Frame: b, L3: header.EthernetLen, L4: l4, L4Len: ul, V6: v6,
		Proto: header.ProtoUDP, TTL: ttl, Src: src, Dst: dst, SrcPort: sport, DstPort: dport}
}

// wantUDPFrame builds, independently of the handler (header's own builders
// and reference checksum), the frame the guest must get for a datagram from
// src:sport to dst:dport.
func wantUDPFrame(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, payload []byte) []byte {
	v6 := src.Is6()
	l3 := header.IPv4MinLen
	et := header.EtherTypeIPv4
	if v6 {
		l3, et = header.IPv6Len, header.EtherTypeIPv6
	}
	b := make([]byte, header.EthernetLen+l3+header.UDPLen+len(payload))
	header.EncodeEthernet(b, guestMAC, config.DefaultMAC, et)
	ul := header.UDPLen + len(payload)
	if v6 {
		header.EncodeIPv6(b[header.EthernetLen:], header.IPv6Fields{PayloadLen: ul, NextHeader: header.ProtoUDP,
			HopLimit: 255, Src: src.As16(), Dst: dst.As16()})
	} else {
		header.EncodeIPv4(b[header.EthernetLen:], header.IPv4Fields{DF: true, TTL: 255, Proto: header.ProtoUDP,
			Src: src.As4(), Dst: dst.As4(), PayloadLen: ul})
	}
	u := header.UDP(b[header.EthernetLen+l3:])
	header.EncodeUDP(u, sport, dport, len(payload))
	copy(u[header.UDPLen:], payload)
	if v6 {
		s, d := src.As16(), dst.As16()
		u.SetChecksumIPv6(&s, &d)
	} else {
		u.SetChecksumIPv4(src.As4(), dst.As4())
	}
	return b
}

// checkFrameChecksums validates every checksum of a UDP frame to the guest
// with header's validators.
func checkFrameChecksums(t *testing.T, f []byte) {
	t.Helper()
	eth, err := header.ParseEthernet(f)
	if err != nil {
		t.Fatal(err)
	}
	switch eth.Type() {
	case header.EtherTypeIPv4:
		ip, err := header.ParseIPv4(eth.Payload())
		if err != nil {
			t.Fatal(err)
		}
		if !ip.IsChecksumValid() {
			t.Error("bad IPv4 header checksum")
		}
		u, err := header.ParseUDP(ip.Payload())
		if err != nil {
			t.Fatal(err)
		}
		if !u.IsChecksumValidIPv4(ip.Src(), ip.Dst()) || u.Checksum() == 0 {
			t.Error("bad UDP checksum")
		}
	case header.EtherTypeIPv6:
		ip, proto, off, err := header.ParseIPv6(eth.Payload())
		if err != nil || proto != header.ProtoUDP {
			t.Fatal(err, proto)
		}
		u, err := header.ParseUDP(ip[off:])
		if err != nil {
			t.Fatal(err)
		}
		s, d := ip.Src(), ip.Dst()
		if !u.IsChecksumValidIPv6(&s, &d) {
			t.Error("bad UDP checksum")
		}
	default:
		t.Fatalf("EtherType %#x", eth.Type())
	}
}

// server is a UDP socket on the host side of the test namespace.
type server struct {
	fd   int
	port uint16
}

// listenUDP binds a UDP socket to addr:port (0: any port), closed at
// cleanup.
func listenUDP(t *testing.T, addr netip.Addr, port uint16) *server {
	t.Helper()
	s := bindUDP(t, addr, port)
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// bindUDP binds a UDP socket to addr:port (0: any port).
func bindUDP(t *testing.T, addr netip.Addr, port uint16) *server {
	t.Helper()
	af, sa := unix.AF_INET, sockaddrOf(netip.AddrPortFrom(addr, port))
	if addr.Is6() {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{fd: fd}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		s.port = uint16(a.Port)
	case *unix.SockaddrInet6:
		s.port = uint16(a.Port)
	}
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return s
}

// recv reads one datagram (waiting at most two seconds).
func (s *server) recv(t *testing.T) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 65536)
	n, from, err := unix.Recvfrom(s.fd, buf, 0)
	if err != nil {
		t.Fatalf("server recv: %v", err)
	}
	return buf[:n], addrPort(from)
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// sendTo sends payload from s to ap.
func (s *server) sendTo(t *testing.T, ap netip.AddrPort, payload []byte) {
	t.Helper()
	if err := unix.Sendto(s.fd, payload, 0, sockaddrOf(ap)); err != nil {
		t.Fatalf("server send: %v", err)
	}
}

// freePort returns a UDP port nothing is bound to on addr right now.
func freePort(t *testing.T, addr netip.Addr) uint16 {
	t.Helper()
	s := bindUDP(t, addr, 0)
	unix.Close(s.fd)
	return s.port
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
