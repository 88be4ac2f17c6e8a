// Test scaffolding: a private network namespace per test, the test
// configuration, a rig around taptest.Backend and guest packet builders.
package udp

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/loop"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap/taptest"
	"gopasst/test/nstest"
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
	nstest.EnterPrivate(t, "")
}

var (
	dns4 = netip.MustParseAddr("192.0.2.53")
	dns6 = netip.MustParseAddr("2001:db8::53")
	lo4  = netip.MustParseAddr("127.0.0.1")
	lo6  = netip.IPv6Loopback()
)

// testConfig is configtest's dual-stack configuration (gateways mapped to
// the host's loopback) with the default MTU and DNS-match addresses that
// forward to the host's loopback resolver.
func testConfig() *config.Config {
	cfg := configtest.DualStack()
	cfg.MTU = config.DefaultMTU
	cfg.V4.DNSMatch, cfg.V4.DNSHost = dns4, lo4
	cfg.V6.DNSMatch, cfg.V6.DNSHost = dns6, lo6
	return cfg
}

// rig is one handler with its loop, table and recording Out.
type rig struct {
	cfg *config.Config
	g   *guest.State
	out *taptest.Backend
	l   *loop.Loop
	ft  *flow.Table
	h   *Handler
}

// newRig returns a rig whose Out has slots frame slots (keep: it keeps
// every frame committed) and whose flow table has 1024 slots.
func newRig(t *testing.T, slots int, keep bool) *rig {
	t.Helper()
	return newRigFlows(t, slots, keep, 1024)
}

// newRigFlows is newRig with a flow table of flows slots.
func newRigFlows(t *testing.T, slots int, keep bool, flows int) *rig {
	t.Helper()
	r := &rig{cfg: testConfig(), g: &guest.State{MAC: configtest.GuestMAC}, out: taptest.New(slots)}
	r.out.Keep = keep
	var err error
	if r.l, err = loop.New(1024); err != nil {
		t.Fatal(err)
	}
	r.ft = flow.New(flows)
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
	for r.out.Count() < n && time.Now().Before(deadline) {
		if err := r.l.Turn(50 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if r.out.Count() < n {
		t.Fatalf("%d frames towards the guest, want %d", r.out.Count(), n)
	}
}

// guestUDP builds a UDP datagram from the guest as the demultiplexer hands
// it over: a whole Ethernet frame and the parsed fields.
func guestUDP(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ttl uint8, payload []byte) packet.Packet {
	return taptest.IP{MACDst: config.DefaultMAC, MACSrc: configtest.GuestMAC, Src: src, Dst: dst,
		Proto: header.ProtoUDP, TTL: ttl}.Packet(taptest.UDP(sport, dport, payload))
}

// wantUDPFrame builds, independently of the handler (taptest on header's
// own builders and reference checksum), the frame the guest must get for
// a datagram from src:sport to dst:dport.
func wantUDPFrame(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, payload []byte) []byte {
	return taptest.IP{MACDst: configtest.GuestMAC, MACSrc: config.DefaultMAC, Src: src, Dst: dst,
		Proto: header.ProtoUDP, TTL: 255, DF: true}.Frame(taptest.UDP(sport, dport, payload))
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
