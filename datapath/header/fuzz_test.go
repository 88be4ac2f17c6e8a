// Fuzz targets for every Parse function: none may panic, and every
// accessor of a view they return must be safe to call.
package header

import "testing"

// seedFrames returns valid frames and their truncations for the corpora.
func seedFrames() [][]byte {
	b := make([]byte, 200)
	n := buildUDP4(b, []byte("seed"))
	v4 := append([]byte{}, b[EthernetLen:n]...)
	v6 := make([]byte, 120)
	o := EncodeIPv6(v6, IPv6Fields{NextHeader: ProtoHopByHop, HopLimit: 1, Src: v6A, Dst: v6B, PayloadLen: 8 + 8 + 24})
	v6[o] = ProtoFragment
	o += 8
	v6[o] = ProtoTCP
	o += 8
	o += EncodeTCP(v6[o:], TCPFields{Flags: TCPFlagSYN, OptLen: 4})
	PutTCPOptMSS(v6[o-4:], 1460)
	v6 = v6[:o]
	arp := make([]byte, ARPLen)
	EncodeARP(arp, ARPRequest, macA, v4A, macB, v4B)
	out := [][]byte{v4, v6, arp}
	for _, f := range [][]byte{v4, v6, arp} {
		out = append(out, f[:len(f)/2], f[:len(f)-1], nil)
	}
	return out
}

// touchIPv4 calls every IPv4 accessor.
func touchIPv4(ip IPv4) int {
	s := ip.SrcAddr().As4()
	return ip.HeaderLen() + int(ip.TOS()) + int(ip.ID()) + int(ip.FlagsOffset()) + int(ip.TTL()) +
		int(ip.Proto()) + int(ip.Checksum()) + len(ip.Options()) + len(ip.Payload()) + ip.PayloadLen() +
		int(s[0]) + int(ip.DstAddr().As4()[0])
}

func FuzzParseIPv4(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, err := ParseIPv4(b)
		if err != nil {
			return
		}
		touchIPv4(ip)
		_ = ip.IsChecksumValid()
		if u, err := ParseUDP(ip.Payload()); err == nil {
			_ = len(u.Payload()) + u.PayloadLen() + int(u.SrcPort()+u.DstPort()+u.Checksum())
			_ = u.IsChecksumValidIPv4(ip.Src(), ip.Dst())
		}
		if seg, err := ParseTCP(ip.Payload()); err == nil {
			_, _ = ParseTCPOptions(seg.Options())
			_ = len(seg.Payload()) + seg.PayloadLen()
			_ = seg.IsChecksumValidIPv4(ip.Src(), ip.Dst())
		}
		if m, err := ParseICMPv4(ip.Payload()); err == nil {
			_ = len(m.Payload()) + int(m.Ident()+m.Seq()+m.MTU())
		}
	})
}

func FuzzParseIPv6(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, proto, off, err := ParseIPv6(b)
		if err != nil {
			return
		}
		if off < IPv6Len || off > len(ip) {
			t.Fatalf("offset %d outside %d", off, len(ip))
		}
		_ = ip.TrafficClass() + uint8(ip.FlowLabel()) + ip.HopLimit() + ip.NextHeader() + proto
		_ = len(ip.Payload()) + ip.PayloadLen()
		_ = ip.SrcAddr().Is6() && ip.DstAddr().Is6()
		up := ip[off:]
		if u, err := ParseUDP(up); err == nil {
			_ = len(u.Payload())
		}
		if seg, err := ParseTCP(up); err == nil {
			_, _ = ParseTCPOptions(seg.Options())
			_ = len(seg.Payload())
		}
		if m, err := ParseICMPv6(up); err == nil {
			src, dst := ip.Src(), ip.Dst()
			_ = m.IsChecksumValid(&src, &dst)
			_ = len(m.Payload()) + int(m.MTU())
		}
	})
}

func FuzzParseUDP(f *testing.F) {
	f.Add([]byte{0, 68, 0, 67, 0, 8, 0, 0})
	f.Add([]byte{0, 68, 0, 67, 0, 9, 0, 0})
	f.Add([]byte{0, 68, 0, 67, 0, 7, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUDP(b)
		if err != nil {
			return
		}
		if int(u.Length()) != len(u) {
			t.Fatalf("length %d view %d", u.Length(), len(u))
		}
		_ = len(u.Payload()) + u.PayloadLen()
		_ = u.IsChecksumValidIPv6(&v6A, &v6B)
	})
}

func FuzzParseTCP(f *testing.F) {
	b := make([]byte, 40)
	EncodeTCP(b, TCPFields{Flags: TCPFlagSYN, OptLen: 8})
	PutTCPOptMSS(b[20:], 1460)
	PutTCPOptWS(b[24:], 7)
	f.Add(b[:28])
	f.Add(b[:27])
	f.Add(b[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		seg, err := ParseTCP(b)
		if err != nil {
			return
		}
		o, _ := ParseTCPOptions(seg.Options())
		if o.WS > TCPMaxWS {
			t.Fatalf("window shift %d", o.WS)
		}
		_ = seg.Seq() + seg.Ack() + uint32(seg.Window()+seg.Urgent()+seg.Checksum()) + uint32(seg.Flags())
		_ = len(seg.Payload()) + seg.PayloadLen()
	})
}

func FuzzParseTCPOptions(f *testing.F) {
	f.Add([]byte{2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{1, 1, 0})
	f.Add([]byte{2})
	f.Add([]byte{9, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseTCPOptions(b)
	})
}

func FuzzParseARP(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseARP(b)
		if err != nil {
			return
		}
		_ = a.Op()
		_ = a.SenderAddr().IsValid() && a.TargetAddr().IsValid()
		_, _ = a.SenderMAC(), a.TargetMAC()
	})
}

func FuzzParseEthernet(f *testing.F) {
	b := make([]byte, 100)
	n := buildUDP4(b, nil)
	f.Add(b[:n])
	f.Add(b[:13])
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEthernet(b)
		if err != nil {
			return
		}
		_, _, _ = e.Src(), e.Dst(), e.Type()
		_ = len(e.Payload())
	})
}
