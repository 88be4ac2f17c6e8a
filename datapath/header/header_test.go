// Tests of the views: builders against parsers, every field read back,
// malformed input rejected, checksums checked against a naive RFC 1071 sum,
// and no allocation in parse, accessors and builders.
package header

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 1}
	macB = [6]byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}
	v4A  = [4]byte{10, 0, 2, 15}
	v4B  = [4]byte{10, 0, 2, 2}
	v6A  = netip.MustParseAddr("2001:db8::1").As16()
	v6B  = netip.MustParseAddr("fe80::1").As16()
)

// naiveChecksum is the RFC 1071 reference: 16-bit words, carries folded at
// the end, complemented.
func naiveChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func TestSumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := finish(sum(b, 0)), naiveChecksum(b); got != want {
			t.Fatalf("len %d: sum %#04x, naive %#04x", n, got, want)
		}
	}
}

// buildUDP4 builds Ethernet+IPv4+UDP with payload p into b, returning the length.
func buildUDP4(b []byte, p []byte) int {
	n := EncodeEthernet(b, macB, macA, EtherTypeIPv4)
	n += EncodeIPv4(b[n:], IPv4Fields{TTL: 64, Proto: ProtoUDP, Src: v4A, Dst: v4B, DF: true, ID: 7, PayloadLen: UDPLen + len(p)})
	u := n
	n += EncodeUDP(b[n:], 68, 67, len(p))
	n += copy(b[n:], p)
	UDP(b[u:n]).SetChecksumIPv4(v4A, v4B)
	return n
}

func TestIPv4UDPRoundTrip(t *testing.T) {
	b := make([]byte, 200)
	n := buildUDP4(b, []byte("hello"))
	// Ethernet padding after the datagram must be trimmed away.
	frame := b[:n+10]
	e, err := ParseEthernet(frame)
	if err != nil || e.Type() != EtherTypeIPv4 || e.Src() != macA || e.Dst() != macB {
		t.Fatalf("ethernet: %v %x", err, e)
	}
	ip, err := ParseIPv4(e.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if ip.HeaderLen() != 20 || ip.TotalLen() != 33 || ip.TTL() != 64 || ip.Proto() != ProtoUDP ||
		ip.Src() != v4A || ip.Dst() != v4B || ip.ID() != 7 || ip.FlagsOffset() != IPv4FlagDF ||
		!ip.IsChecksumValid() || ip.PayloadLen() != 13 || len(ip) != 33 {
		t.Fatalf("ipv4 fields wrong: % x", ip)
	}
	if naiveChecksum(ip[:20]) != 0 {
		t.Fatal("ipv4 header checksum wrong by the reference")
	}
	if ip.SrcAddr() != netip.AddrFrom4(v4A) || ip.DstAddr() != netip.AddrFrom4(v4B) {
		t.Fatal("netip addresses")
	}
	u, err := ParseUDP(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if u.SrcPort() != 68 || u.DstPort() != 67 || u.Length() != 13 || string(u.Payload()) != "hello" ||
		!u.IsChecksumValidIPv4(v4A, v4B) || u.PayloadLen() != 5 {
		t.Fatalf("udp fields wrong: % x", u)
	}
	// Reference: pseudo-header + datagram.
	ph := append(append(append([]byte{}, v4A[:]...), v4B[:]...), 0, ProtoUDP, 0, 13)
	if naiveChecksum(append(ph, u...)) != 0 {
		t.Fatal("udp checksum wrong by the reference")
	}
	ip.SetTTL(1)
	ip.SetChecksum()
	if !ip.IsChecksumValid() || ip.TTL() != 1 {
		t.Fatal("SetChecksum after SetTTL")
	}
}

func TestParseIPv4Errors(t *testing.T) {
	good := make([]byte, 40)
	EncodeIPv4(good, IPv4Fields{Proto: ProtoTCP, PayloadLen: 20})
	cases := []struct {
		name string
		mod  func(b []byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:19] }, ErrTruncated},
		{"version", func(b []byte) []byte { b[0] = 0x65; return b }, ErrVersion},
		{"ihl4", func(b []byte) []byte { b[0] = 0x44; return b }, ErrHeaderLen},
		{"ihl beyond", func(b []byte) []byte { b[0] = 0x4f; return b[:30] }, ErrHeaderLen},
		{"total short", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }, ErrTotalLen},
		{"total long", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 41); return b }, ErrTotalLen},
		{"MF", func(b []byte) []byte { b[6] = 0x20; return b }, ErrFragment},
		{"offset", func(b []byte) []byte { b[7] = 1; return b }, ErrFragment},
	}
	for _, c := range cases {
		b := append([]byte{}, good...)
		if _, err := ParseIPv4(c.mod(b)); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v want %v", c.name, err, c.want)
		}
	}
	b := append([]byte{}, good...)
	b[6] = 0x40 // DF alone is fine
	if _, err := ParseIPv4(b); err != nil {
		t.Errorf("DF: %v", err)
	}
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	b := make([]byte, 200)
	n := EncodeIPv6(b, IPv6Fields{NextHeader: ProtoHopByHop, HopLimit: 255, Src: v6A, Dst: v6B, TrafficClass: 0xb8, FlowLabel: 0x12345})
	// hop-by-hop (8) → destination options (16) → atomic fragment (8) → routing (8) → UDP
	b[n], b[n+1] = ProtoDestOpts, 0
	n += 8
	b[n], b[n+1] = ProtoFragment, 1
	n += 16
	b[n] = ProtoRouting
	binary.BigEndian.PutUint16(b[n+2:], 0) // offset 0, M clear: atomic
	n += 8
	b[n], b[n+1] = ProtoUDP, 0
	n += 8
	up := n
	n += EncodeUDP(b[n:], 546, 547, 3)
	n += 3
	binary.BigEndian.PutUint16(b[4:], uint16(n-IPv6Len))
	ip, proto, off, err := ParseIPv6(b[:n+6])
	if err != nil || proto != ProtoUDP || off != up || len(ip) != n {
		t.Fatalf("walk: %v proto %d off %d len %d", err, proto, off, len(ip))
	}
	if ip.TrafficClass() != 0xb8 || ip.FlowLabel() != 0x12345 || ip.HopLimit() != 255 ||
		ip.Src() != v6A || ip.Dst() != v6B || ip.NextHeader() != ProtoHopByHop || ip.PayloadLen() != n-40 {
		t.Fatalf("fields: % x", ip[:40])
	}
	// A real fragment is refused.
	c := append([]byte{}, b[:n]...)
	binary.BigEndian.PutUint16(c[up-16+2:], 1) // M set
	if _, _, _, err := ParseIPv6(c); !errors.Is(err, ErrFragment) {
		t.Fatalf("fragment: %v", err)
	}
	// Hop-by-hop anywhere but first is refused.
	c = append([]byte{}, b[:n]...)
	c[40] = ProtoHopByHop
	if _, _, _, err := ParseIPv6(c); !errors.Is(err, ErrExtHeader) {
		t.Fatalf("late hop-by-hop: %v", err)
	}
	// Extension header running past the payload.
	c = append([]byte{}, b[:n]...)
	c[41] = 200
	if _, _, _, err := ParseIPv6(c); !errors.Is(err, ErrExtHeader) {
		t.Fatalf("long ext: %v", err)
	}
	// Payload length beyond the buffer.
	if _, _, _, err := ParseIPv6(b[:n-1]); !errors.Is(err, ErrTotalLen) {
		t.Fatalf("payload len: %v", err)
	}
	c[0] = 0x45
	if _, _, _, err := ParseIPv6(c); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
}

func TestTCPAndOptions(t *testing.T) {
	b := make([]byte, 100)
	// MSS(4) NOP+WS(4) SACK-permitted+NOP+NOP(4) NOP+NOP+timestamps(12)
	hl := EncodeTCP(b, TCPFields{SrcPort: 1234, DstPort: 80, Seq: 0x01020304, Ack: 0xa0b0c0d0,
		Flags: TCPFlagSYN | TCPFlagACK, Window: 65535, OptLen: 24})
	o := TCPMinLen
	o += PutTCPOptMSS(b[o:], 1460)
	o += PutTCPOptWS(b[o:], 15) // capped to 14 when read
	b[o], b[o+1] = TCPOptSACKPerm, 2
	b[o+2], b[o+3] = TCPOptNOP, TCPOptNOP
	o += 4
	b[o], b[o+1] = TCPOptNOP, TCPOptNOP
	b[o+2], b[o+3] = TCPOptTimestamp, 10
	binary.BigEndian.PutUint32(b[o+4:], 111)
	binary.BigEndian.PutUint32(b[o+8:], 222)
	n := hl + copy(b[hl:], "data")
	seg, err := ParseTCP(b[:n])
	if err != nil {
		t.Fatal(err)
	}
	seg.SetChecksumIPv6(&v6A, &v6B)
	if seg.SrcPort() != 1234 || seg.DstPort() != 80 || seg.Seq() != 0x01020304 || seg.Ack() != 0xa0b0c0d0 ||
		seg.Flags() != TCPFlagSYN|TCPFlagACK || seg.Window() != 65535 || seg.DataOffset() != 44 ||
		string(seg.Payload()) != "data" || seg.PayloadLen() != 4 || !seg.IsChecksumValidIPv6(&v6A, &v6B) {
		t.Fatalf("fields: % x", seg)
	}
	opts, err := ParseTCPOptions(seg.Options())
	if err != nil {
		t.Fatal(err)
	}
	want := TCPOptions{MSS: 1460, WS: 14, SACKPermitted: true, Timestamps: true, TSVal: 111, TSEcr: 222}
	if opts != want {
		t.Fatalf("options %+v want %+v", opts, want)
	}
	if o, err := ParseTCPOptions([]byte{TCPOptMSS}); err == nil || o.WS != -1 {
		t.Fatal("truncated option accepted")
	}
	if _, err := ParseTCPOptions([]byte{TCPOptMSS, 1, 0, 0}); err == nil {
		t.Fatal("length 1 accepted")
	}
	if o, err := ParseTCPOptions([]byte{TCPOptMSS, 3, 5, TCPOptEOL}); err != nil || o.MSS != 0 {
		t.Fatal("wrong-length MSS must be ignored")
	}
	seg.SetChecksumIPv4(v4A, v4B)
	if !seg.IsChecksumValidIPv4(v4A, v4B) {
		t.Fatal("tcp v4 checksum")
	}
	if _, err := ParseTCP(b[:19]); !errors.Is(err, ErrTruncated) {
		t.Fatal("short tcp")
	}
	b[12] = 0x40
	if _, err := ParseTCP(b[:n]); !errors.Is(err, ErrHeaderLen) {
		t.Fatal("offset 4")
	}
	b[12] = 0xf0
	if _, err := ParseTCP(b[:50]); !errors.Is(err, ErrHeaderLen) {
		t.Fatal("offset beyond")
	}
}

func TestICMPAndARP(t *testing.T) {
	b := make([]byte, 64)
	m, _ := ParseICMPv6(b[:16])
	m.SetType(ICMPv6EchoRequest)
	m.SetIdent(0x1234)
	m.SetSeq(7)
	m.SetChecksum(&v6A, &v6B)
	if !m.IsChecksumValid(&v6A, &v6B) || m.Type() != 128 || m.Ident() != 0x1234 || m.Seq() != 7 {
		t.Fatal("icmpv6")
	}
	ph := append(append(append([]byte{}, v6A[:]...), v6B[:]...), 0, 0, 0, 16, 0, 0, 0, ProtoICMPv6)
	if naiveChecksum(append(ph, m...)) != 0 {
		t.Fatal("icmpv6 checksum wrong by the reference")
	}
	m4, _ := ParseICMPv4(b[20:40])
	m4.SetType(ICMPv4DestUnreach)
	m4.SetCode(ICMPv4CodeFragNeeded)
	m4.SetMTU(1400)
	m4.SetChecksum()
	if !m4.IsChecksumValid() || naiveChecksum(m4) != 0 || m4.MTU() != 1400 || m4.Code() != 4 {
		t.Fatal("icmpv4")
	}
	if _, err := ParseICMPv4(b[:7]); err == nil {
		t.Fatal("short icmp")
	}
	n := EncodeARP(b, ARPRequest, macA, v4A, [6]byte{}, v4B)
	a, err := ParseARP(b[:n+18])
	if err != nil || len(a) != ARPLen || a.Op() != ARPRequest || a.SenderMAC() != macA || a.SenderIP() != v4A ||
		a.TargetMAC() != ([6]byte{}) || a.TargetIP() != v4B || a.TargetAddr() != netip.AddrFrom4(v4B) {
		t.Fatalf("arp: %v % x", err, a)
	}
	b[5] = 16
	if _, err := ParseARP(b[:n]); !errors.Is(err, ErrARPFormat) {
		t.Fatal("arp plen 16 accepted")
	}
}

func TestNoAllocs(t *testing.T) {
	b := make([]byte, 200)
	n := buildUDP4(b, []byte("payload"))
	frame := b[:n]
	var sink uint32
	if a := testing.AllocsPerRun(200, func() {
		e, _ := ParseEthernet(frame)
		ip, err := ParseIPv4(e.Payload())
		if err != nil {
			t.Fatal(err)
		}
		u, _ := ParseUDP(ip.Payload())
		s := ip.SrcAddr()
		sink += uint32(u.SrcPort()) + uint32(len(u.Payload())) + uint32(s.As4()[0])
		_, _ = ParseIPv4(frame[:5]) // error path
	}); a != 0 {
		t.Fatalf("parse IPv4/UDP: %v allocs", a)
	}
	v6 := make([]byte, 200)
	if a := testing.AllocsPerRun(200, func() {
		o := EncodeEthernet(v6, macA, macB, EtherTypeIPv6)
		o += EncodeIPv6(v6[o:], IPv6Fields{NextHeader: ProtoTCP, HopLimit: 64, Src: v6A, Dst: v6B, PayloadLen: 24})
		h := EncodeTCP(v6[o:], TCPFields{Flags: TCPFlagSYN, OptLen: 4})
		PutTCPOptMSS(v6[o+20:], 1440)
		TCP(v6[o:o+h]).SetChecksumIPv6(&v6A, &v6B)
		ip, _, off, err := ParseIPv6(v6[EthernetLen : EthernetLen+IPv6Len+24])
		if err != nil {
			t.Fatal(err)
		}
		seg, _ := ParseTCP(ip[off:])
		opt, _ := ParseTCPOptions(seg.Options())
		sink += uint32(opt.MSS) + uint32(ip.DstAddr().As16()[0])
		EncodeIPv4(b[EthernetLen:], IPv4Fields{Proto: ProtoICMP, PayloadLen: 8})
		EncodeARP(b, ARPReply, macA, v4A, macB, v4B)
	}); a != 0 {
		t.Fatalf("build/parse IPv6/TCP: %v allocs", a)
	}
	_ = sink
}

func TestPutDNSName(t *testing.T) {
	b := make([]byte, 300)
	for _, c := range []struct {
		name string
		want string
		err  error
	}{
		{"example.com", "\x07example\x03com\x00", nil},
		{"example.com.", "\x07example\x03com\x00", nil},
		{"", "\x00", nil},
		{".", "\x00", nil},
		{"a..b", "", ErrDNSName},
		{"a..", "", ErrDNSName},
		{".a", "", ErrDNSName},
		{string(make([]byte, 64)), "", ErrDNSName},
	} {
		n, err := PutDNSName(b, c.name)
		if !errors.Is(err, c.err) || (err == nil && string(b[:n]) != c.want) {
			t.Errorf("%q: % x %v", c.name, b[:n], err)
		}
	}
	if _, err := PutDNSName(b[:5], "example.com"); !errors.Is(err, ErrTruncated) {
		t.Errorf("short buffer: %v", err)
	}
}
