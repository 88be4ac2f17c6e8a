// Behaviour tests on real sockets in a private network namespace: guest
// datagrams reach a host server through the gateway and DNS mappings, the
// replies come back as exact frames, closed ports come back as ICMP errors,
// forwarded ports deliver inbound datagrams, flows time out like conntrack.
package udp

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/flow"
	"gopasst/datapath/fwd"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
)

type family struct {
	name                     string
	guest, gw, dns, loopback netip.Addr
}

var families = []family{
	{"IPv4", configtest.Guest4, configtest.Gateway4, dns4, lo4},
	{"IPv6", configtest.Guest6, configtest.Gateway6, dns6, lo6},
}

// TestRoundTrip: a guest datagram to the gateway reaches a server on the
// host's loopback from the guest's own source port; the server's answer
// reaches the guest as a frame whose every byte is checked.
func TestRoundTrip(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, true)
			srv := listenUDP(t, fam.loopback, 0)
			const sport = 40000
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, sport, fam.gw, srv.port, 64, []byte("hello"))})
			got, from := srv.recv(t)
			if string(got) != "hello" {
				t.Fatalf("server got %q", got)
			}
			if from != netip.AddrPortFrom(fam.loopback, sport) {
				t.Fatalf("server got it from %v, want %v:%d", from, fam.loopback, sport)
			}
			reply := []byte("world, and an odd length")
			srv.sendTo(t, from, reply)
			r.waitFrames(t, 1)
			want := wantUDPFrame(fam.gw, srv.port, fam.guest, sport, reply)
			if !bytes.Equal(r.out.Frames()[0], want) {
				t.Fatalf("frame to guest:\n got %x\nwant %x", r.out.Frames()[0], want)
			}
			checkFrameChecksums(t, r.out.Frames()[0])
			if r.h.Flows() != 1 {
				t.Fatalf("%d flows, want 1", r.h.Flows())
			}
		})
	}
}

// TestDNSForward: --dns-forward traffic (port 53 to the DNS-match address)
// goes to the DNS host, and the answer comes from the address the guest
// asked.
func TestDNSForward(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, true)
			srv := listenUDP(t, fam.loopback, 53)
			query := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 33333, fam.dns, 53, 64, query)})
			got, from := srv.recv(t)
			if !bytes.Equal(got, query) {
				t.Fatalf("resolver got %x", got)
			}
			answer := append([]byte{0x12, 0x34, 0x81, 0x80}, query[4:]...)
			srv.sendTo(t, from, answer)
			r.waitFrames(t, 1)
			want := wantUDPFrame(fam.dns, 53, fam.guest, 33333, answer)
			if !bytes.Equal(r.out.Frames()[0], want) {
				t.Fatalf("frame to guest:\n got %x\nwant %x", r.out.Frames()[0], want)
			}
		})
	}
}

// TestBatchGrouping: datagrams of two flows interleaved in one batch arrive
// in order per flow, and the guest's TTL is copied to the socket.
func TestBatchGrouping(t *testing.T) {
	enterNetns(t)
	r := newRig(t, 64, true)
	a, b := listenUDP(t, lo4, 0), listenUDP(t, lo4, 0)
	var pkts []packet.Packet
	for i := 0; i < 10; i++ {
		pkts = append(pkts, guestUDP(configtest.Guest4, 41000, configtest.Gateway4, a.port, 64, []byte(fmt.Sprintf("a%d", i))))
		ttl := uint8(64)
		if i >= 5 {
			ttl = 7 // a TTL change in the middle of a run
		}
		pkts = append(pkts, guestUDP(configtest.Guest4, 41001, configtest.Gateway4, b.port, ttl, []byte(fmt.Sprintf("b%d", i))))
	}
	r.h.FromGuest(pkts)
	for i := 0; i < 10; i++ {
		if got, _ := a.recv(t); string(got) != fmt.Sprintf("a%d", i) {
			t.Fatalf("flow a, datagram %d: %q", i, got)
		}
		if got, _ := b.recv(t); string(got) != fmt.Sprintf("b%d", i) {
			t.Fatalf("flow b, datagram %d: %q", i, got)
		}
	}
	key := flow.MakeKey(header.ProtoUDP, configtest.Guest4, 41001, configtest.Gateway4, b.port)
	i, ok := r.ft.Lookup(&key)
	if !ok {
		t.Fatal("no flow b")
	}
	ttl, err := unix.GetsockoptInt(int(r.h.flows[i].fd), unix.IPPROTO_IP, unix.IP_TTL)
	if err != nil || ttl != 7 {
		t.Fatalf("socket TTL %d (%v), want the guest's 7", ttl, err)
	}
	if r.h.Stats.ToHost != 20 || r.h.Stats.ToHostDropped != 0 {
		t.Fatalf("stats %+v", r.h.Stats)
	}
}

// TestPortUnreachable: a guest datagram to a closed host port comes back as
// an ICMP/ICMPv6 port unreachable from the address the guest sent to,
// quoting the guest's datagram as the guest sent it.
func TestPortUnreachable(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, true)
			closed := freePort(t, fam.loopback)
			payload := []byte("0123456789abcdef")
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40002, fam.gw, closed, 61, payload)})
			r.waitFrames(t, 1)
			f := r.out.Frames()[0]
			if fam.guest.Is4() {
				checkICMPv4Unreach(t, f, fam, closed, payload)
			} else {
				checkICMPv6Unreach(t, f, fam, closed, payload)
			}
			// The pending socket error was consumed with the error
			// queue: the next datagram goes out (and fails again).
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40002, fam.gw, closed, 61, payload)})
			r.waitFrames(t, 2)
			if r.h.Stats.ToHost != 2 || r.h.Stats.ICMPErrors != 2 {
				t.Fatalf("stats %+v", r.h.Stats)
			}
		})
	}
}

func checkICMPv4Unreach(t *testing.T, f []byte, fam family, closed uint16, payload []byte) {
	t.Helper()
	want := make([]byte, 14+20+8+20+8+8)
	header.EncodeEthernet(want, configtest.GuestMAC, [6]byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}, header.EtherTypeIPv4)
	header.EncodeIPv4(want[14:], header.IPv4Fields{TTL: 255, Proto: header.ProtoICMP,
		Src: fam.gw.As4(), Dst: fam.guest.As4(), PayloadLen: 8 + 20 + 8 + 8})
	ic := header.ICMPv4(want[34:])
	ic.SetType(header.ICMPv4DestUnreach)
	ic.SetCode(3) // port unreachable
	header.EncodeIPv4(ic[8:], header.IPv4Fields{TTL: 61, Proto: header.ProtoUDP,
		Src: fam.guest.As4(), Dst: fam.gw.As4(), PayloadLen: 8 + 8})
	u := header.UDP(ic[28:])
	header.EncodeUDP(u, 40002, closed, 8)
	copy(u[8:], payload[:8])
	u.SetChecksumIPv4(fam.guest.As4(), fam.gw.As4())
	ic.SetChecksum()
	if !bytes.Equal(f, want) {
		t.Fatalf("ICMP frame:\n got %x\nwant %x", f, want)
	}
	if !header.ICMPv4(f[34:]).IsChecksumValid() {
		t.Fatal("bad ICMP checksum")
	}
}

func checkICMPv6Unreach(t *testing.T, f []byte, fam family, closed uint16, payload []byte) {
	t.Helper()
	il := 8 + 40 + 8 + len(payload)
	want := make([]byte, 14+40+il)
	header.EncodeEthernet(want, configtest.GuestMAC, [6]byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}, header.EtherTypeIPv6)
	src, dst := fam.gw.As16(), fam.guest.As16()
	header.EncodeIPv6(want[14:], header.IPv6Fields{PayloadLen: il, NextHeader: header.ProtoICMPv6,
		HopLimit: 255, Src: src, Dst: dst})
	ic := header.ICMPv6(want[54:])
	ic.SetType(header.ICMPv6DestUnreach)
	ic.SetCode(4) // port unreachable
	header.EncodeIPv6(ic[8:], header.IPv6Fields{PayloadLen: 8 + len(payload), NextHeader: header.ProtoUDP,
		HopLimit: 61, Src: dst, Dst: src})
	u := header.UDP(ic[48:])
	header.EncodeUDP(u, 40002, closed, len(payload))
	copy(u[8:], payload)
	u.SetChecksumIPv6(&dst, &src)
	ic.SetChecksum(&src, &dst)
	if !bytes.Equal(f, want) {
		t.Fatalf("ICMPv6 frame:\n got %x\nwant %x", f, want)
	}
	if !header.ICMPv6(f[54:]).IsChecksumValid(&src, &dst) {
		t.Fatal("bad ICMPv6 checksum")
	}
}

// TestInbound: a datagram to a forwarded port (dual-stack listener) reaches
// the guest at the rule's target port from the translated peer; the
// guest's answer reaches the peer from the address and port it talked to.
func TestInbound(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, true)
			port := freePort(t, lo6)
			spec := &fwd.Spec{Proto: fwd.UDP, Rules: []fwd.Rule{{Proto: fwd.UDP, First: port, Last: port, To: 5353}}}
			if err := r.h.Listen(spec, false); err != nil {
				t.Fatal(err)
			}
			client := listenUDP(t, fam.loopback, 0)
			client.sendTo(t, netip.AddrPortFrom(fam.loopback, port), []byte("ping?"))
			r.waitFrames(t, 1)
			want := wantUDPFrame(fam.gw, client.port, fam.guest, 5353, []byte("ping?"))
			if !bytes.Equal(r.out.Frames()[0], want) {
				t.Fatalf("frame to guest:\n got %x\nwant %x", r.out.Frames()[0], want)
			}
			// The guest answers from its target port.
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 5353, fam.gw, client.port, 64, []byte("pong!"))})
			got, from := client.recv(t)
			if string(got) != "pong!" || from != netip.AddrPortFrom(fam.loopback, port) {
				t.Fatalf("client got %q from %v, want from %v:%d", got, from, fam.loopback, port)
			}
			// Later datagrams of the peer use the flow's socket.
			client.sendTo(t, netip.AddrPortFrom(fam.loopback, port), []byte("again"))
			r.waitFrames(t, 2)
			want = wantUDPFrame(fam.gw, client.port, fam.guest, 5353, []byte("again"))
			if !bytes.Equal(r.out.Frames()[1], want) {
				t.Fatalf("second frame:\n got %x\nwant %x", r.out.Frames()[1], want)
			}
			if r.h.Flows() != 1 {
				t.Fatalf("%d flows, want 1", r.h.Flows())
			}
		})
	}
}

// TestListenBusy: a port that cannot be bound is fatal for a normal rule,
// and for a weak rule only if none of its ports could be bound.
func TestListenBusy(t *testing.T) {
	enterNetns(t)
	r := newRig(t, 8, false)
	// A socket without SO_REUSEADDR holds the port.
	busy := listenUDP(t, lo4, 0)
	spec := &fwd.Spec{Proto: fwd.UDP, Rules: []fwd.Rule{{Proto: fwd.UDP,
		Addr: netip.IPv4Unspecified(), First: busy.port, Last: busy.port, To: busy.port}}}
	if err := r.h.Listen(spec, false); err == nil {
		t.Fatal("binding a busy port succeeded")
	}
	spec.Rules[0].Flags = fwd.Weak
	if err := r.h.Listen(spec, false); err == nil {
		t.Fatal("a weak rule with no port bound succeeded")
	}
	free := freePort(t, lo4)
	spec.Rules = append(spec.Rules, fwd.Rule{Proto: fwd.UDP, Addr: netip.IPv4Unspecified(),
		First: free, Last: free, To: free, Flags: fwd.Weak})
	spec.Rules[0].Last = spec.Rules[0].First
	weak := &fwd.Spec{Proto: fwd.UDP, Rules: []fwd.Rule{{Proto: fwd.UDP, Addr: netip.IPv4Unspecified(),
		First: min(busy.port, free), Last: max(busy.port, free), To: min(busy.port, free), Flags: fwd.Weak}}}
	if err := r.h.Listen(weak, false); err != nil {
		t.Fatalf("weak rule with some ports bound: %v", err)
	}
}

// TestTimeouts: a flow lives for the single timeout without an answer, and
// for the stream timeout once both sides spoke and one spoke twice.
func TestTimeouts(t *testing.T) {
	enterNetns(t)
	r := newRig(t, 64, true)
	single, stream := r.h.Timeouts()
	if single <= 0 || stream < single {
		t.Fatalf("timeouts %v %v", single, stream)
	}
	srv := listenUDP(t, lo4, 0)
	r.h.FromGuest([]packet.Packet{guestUDP(configtest.Guest4, 42000, configtest.Gateway4, srv.port, 64, []byte("x"))})
	now := r.l.Now()
	r.h.tick(now + int64(single) - 1)
	if r.h.Flows() != 1 {
		t.Fatal("flow closed before its timeout")
	}
	r.h.tick(now + int64(single))
	if r.h.Flows() != 0 {
		t.Fatal("flow not closed at its timeout")
	}
	// A stream: guest, answer, guest again.
	r.h.FromGuest([]packet.Packet{guestUDP(configtest.Guest4, 42000, configtest.Gateway4, srv.port, 64, []byte("x"))})
	_, from := srv.recv(t)
	srv.sendTo(t, from, []byte("y"))
	r.waitFrames(t, 1)
	r.h.FromGuest([]packet.Packet{guestUDP(configtest.Guest4, 42000, configtest.Gateway4, srv.port, 64, []byte("z"))})
	now = r.l.Refresh()
	r.h.tick(now + int64(single))
	if r.h.Flows() != 1 {
		t.Fatal("stream closed at the single timeout")
	}
	r.h.tick(now + int64(stream))
	if r.h.Flows() != 0 || r.ft.Count() != 0 {
		t.Fatal("stream not closed at the stream timeout")
	}
}

// TestBurst: an unpaced 1 MiB burst from the host is delivered whole (the C
// original, with default socket buffers, delivers about a tenth of it).
func TestBurst(t *testing.T) {
	enterNetns(t)
	r := newRig(t, 256, false)
	srv := listenUDP(t, lo4, 0)
	r.h.FromGuest([]packet.Packet{guestUDP(configtest.Guest4, 43000, configtest.Gateway4, srv.port, 64, []byte("go"))})
	_, from := srv.recv(t)
	sa := &unix.SockaddrInet4{Addr: from.Addr().As4(), Port: int(from.Port())}
	if err := unix.Connect(srv.fd, sa); err != nil {
		t.Fatal(err)
	}
	const size, total = 1400, 1 << 20
	buf := make([]byte, size)
	sent := 0
	for sent < total {
		if _, err := unix.Write(srv.fd, buf); err != nil {
			t.Fatalf("after %d bytes: %v", sent, err)
		}
		sent += size
	}
	want := (sent / size) * (hdr4 + size)
	deadline := time.Now().Add(3 * time.Second)
	for r.out.Bytes() < want && time.Now().Before(deadline) {
		r.l.Turn(50 * time.Millisecond)
	}
	if r.out.Bytes() != want {
		t.Fatalf("guest got %d of %d bytes (%d datagrams dropped)", r.out.Bytes(), want, r.h.Stats.ToGuestDropped)
	}
}

// TestChecksumLengths: the UDP checksum is right for every payload length
// around word and buffer boundaries (odd lengths included).
func TestChecksumLengths(t *testing.T) {
	r := &Handler{cfg: testConfig(), g: nil}
	r.g = newRig(t, 1, false).g
	b := make([]byte, 2048)
	for _, v6 := range []bool{false, true} {
		ep := endpoints{v6: v6, guest: configtest.Guest4.As16(), peer: configtest.Gateway4.As16(), guestPort: 1, peerPort: 65535}
		hdr := hdr4
		if v6 {
			ep.guest, ep.peer, hdr = configtest.Guest6.As16(), configtest.Gateway6.As16(), hdr6
		}
		for n := 0; n < 300; n++ {
			for k := 0; k < n; k++ {
				b[hdr+k] = byte(k*7 + n)
			}
			l := r.fill(&ep, b, n, false)
			checkFrameChecksums(t, b[:l])
			// And against the checksum package's reference view.
			u := b[hdr-8 : hdr+n]
			var ph uint16
			if v6 {
				ph = checksum.PseudoHeaderIPv6(&ep.peer, &ep.guest, header.ProtoUDP, uint32(len(u)))
			} else {
				ph = checksum.PseudoHeaderIPv4([4]byte(ep.peer[12:]), [4]byte(ep.guest[12:]), header.ProtoUDP, uint16(len(u)))
			}
			if s := checksum.Sum(u, ph); s != 0xffff && !(s == 0 && be16(u[6:]) == 0xffff) {
				t.Fatalf("v6=%v n=%d: sum %#x", v6, n, s)
			}
		}
	}
}

// TestInboundSpecific: a listener on one IPv4 address (IPv4 socket, no
// header shuffling) serves two peers with two flows, each answered from the
// listener's address.
func TestInboundSpecific(t *testing.T) {
	enterNetns(t)
	r := newRig(t, 64, true)
	port := freePort(t, lo4)
	spec := &fwd.Spec{Proto: fwd.UDP, Rules: []fwd.Rule{{Proto: fwd.UDP, Addr: lo4, First: port, Last: port, To: port}}}
	if err := r.h.Listen(spec, false); err != nil {
		t.Fatal(err)
	}
	// Different ports: both peers look like the gateway to the guest, so
	// equal ports would be one flow for it (as in the C original).
	c1 := listenUDP(t, lo4, 0)
	c2 := listenUDP(t, netip.MustParseAddr("127.0.0.2"), c1.port^1)
	c1.sendTo(t, netip.AddrPortFrom(lo4, port), []byte("one"))
	r.waitFrames(t, 1)
	c2.sendTo(t, netip.AddrPortFrom(lo4, port), []byte("two"))
	r.waitFrames(t, 2)
	if want := wantUDPFrame(configtest.Gateway4, c1.port, configtest.Guest4, port, []byte("one")); !bytes.Equal(r.out.Frames()[0], want) {
		t.Fatalf("first frame:\n got %x\nwant %x", r.out.Frames()[0], want)
	}
	// 127.0.0.2 is loopback too: the guest sees it as the gateway.
	if want := wantUDPFrame(configtest.Gateway4, c2.port, configtest.Guest4, port, []byte("two")); !bytes.Equal(r.out.Frames()[1], want) {
		t.Fatalf("second frame:\n got %x\nwant %x", r.out.Frames()[1], want)
	}
	if r.h.Flows() != 2 {
		t.Fatalf("%d flows, want 2", r.h.Flows())
	}
	r.h.FromGuest([]packet.Packet{
		guestUDP(configtest.Guest4, port, configtest.Gateway4, c1.port, 64, []byte("to one")),
		guestUDP(configtest.Guest4, port, configtest.Gateway4, c2.port, 64, []byte("to two")),
	})
	for _, c := range []*server{c1, c2} {
		got, from := c.recv(t)
		if from != netip.AddrPortFrom(lo4, port) || len(got) != 6 {
			t.Fatalf("client got %q from %v", got, from)
		}
	}
}

// TestBadPackets: packets whose offsets do not fit their frame, or that are
// not UDP, are dropped without a socket being made.
func TestBadPackets(t *testing.T) {
	r := newRig(t, 4, false)
	p := guestUDP(configtest.Guest4, 1, configtest.Gateway4, 2, 64, []byte("x"))
	bad := []packet.Packet{p, p, p, p}
	bad[0].L4Len = 1000
	bad[1].L4 = -1
	bad[2].Proto = header.ProtoTCP
	bad[3].L4Len = 4
	r.h.FromGuest(bad)
	if r.h.Flows() != 0 || r.h.Stats.ToHostDropped != 4 {
		t.Fatalf("flows %d, stats %+v", r.h.Flows(), r.h.Stats)
	}
}
