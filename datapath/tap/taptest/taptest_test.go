// Tests of the fake: queue and flush behaviour, copies, counting without
// allocation, and frames whose headers and checksums header accepts.
package taptest

import (
	"bytes"
	"net/netip"
	"testing"

	"gopasst/datapath/header"
	"gopasst/datapath/tap"
)

func TestOut(t *testing.T) {
	o := New(2)
	b := o.Frame()
	if len(b) != tap.MaxFrame || cap(b) != tap.MaxFrame {
		t.Fatalf("buffer of %d/%d bytes", len(b), cap(b))
	}
	copy(b, "one")
	o.Commit(3)
	copy(o.Frame(), "two!")
	o.Commit(4)
	bufs := make([][]byte, 2)
	if n := o.Reserve(bufs); n != 2 || &bufs[0][0] != &b[0] {
		t.Fatalf("reserve on a full queue: %d buffers, flushed first: %v", n, &bufs[0][0] == &b[0])
	}
	copy(bufs[0], "three")
	o.Commit(5)
	if o.Count() != 3 || o.Bytes() != 12 || len(o.Frames()) != 3 || string(o.Last()) != "three" ||
		string(o.Frames()[0]) != "one" {
		t.Fatalf("count %d, bytes %d, frames %q", o.Count(), o.Bytes(), o.Frames())
	}
	if n := o.Reserve(make([][]byte, 3)); n != 2 {
		t.Fatalf("reserved %d of a queue of 2", n)
	}
	kept := o.Frames()
	o.Reset()
	if o.Count() != 0 || o.Bytes() != 0 || o.Frames() != nil || o.Last() != nil || string(kept[1]) != "two!" {
		t.Fatal("reset")
	}
}

func TestCounterNoAllocs(t *testing.T) {
	o := NewCounter(4)
	bufs := make([][]byte, 3)
	if a := testing.AllocsPerRun(100, func() {
		o.Frame()
		o.Commit(60)
		o.Commit(o.Reserve(bufs) * 10)
		o.Flush()
	}); a != 0 {
		t.Fatalf("%v allocations", a)
	}
	if o.Count() != 202 || o.Bytes() != 101*(60+30) || o.Frames() != nil {
		t.Fatalf("count %d, bytes %d", o.Count(), o.Bytes())
	}
}

func TestFrame(t *testing.T) {
	mac1, mac2 := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}
	echo := []byte{128, 0, 0xff, 0xff, 0, 7, 0, 1, 'x'}
	for _, h := range []IP{
		{MACDst: mac1, MACSrc: mac2, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
			Proto: header.ProtoUDP, TTL: 64, DF: true},
		{MACDst: mac1, MACSrc: mac2, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
			Proto: header.ProtoUDP, TTL: 1},
		{MACDst: mac1, MACSrc: mac2, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
			Proto: header.ProtoICMP, TTL: 64},
		{MACDst: mac1, MACSrc: mac2, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
			Proto: header.ProtoICMPv6, TTL: 255},
	} {
		l4 := UDP(4000, 53, []byte("query"))
		if h.Proto != header.ProtoUDP {
			l4 = echo
		}
		p := h.Packet(l4)
		f := p.Frame
		e, err := header.ParseEthernet(f)
		if err != nil || e.Dst() != mac1 || e.Src() != mac2 {
			t.Fatalf("%v: ethernet % x", h, f[:14])
		}
		if got := p.L4Bytes(); !bytes.Equal(got[4:6], l4[4:6]) || !bytes.Equal(got[8:], l4[8:]) || (h.Proto == header.ProtoUDP) != (p.DstPort == 53) || p.SrcPort == 0 {
			t.Fatalf("%v: transport % x, ports %d %d", h, p.L4Bytes(), p.SrcPort, p.DstPort)
		}
		if h.Src.Is4() {
			ip, err := header.ParseIPv4(e.Payload())
			if err != nil || !ip.IsChecksumValid() || ip.SrcAddr() != h.Src || ip.DstAddr() != h.Dst || ip.TTL() != h.TTL ||
				ip.Proto() != h.Proto {
				t.Fatalf("%v: IPv4 % x", h, ip)
			}
			if ok := h.Proto == header.ProtoICMP && header.ICMPv4(ip.Payload()).IsChecksumValid() ||
				h.Proto == header.ProtoUDP && header.UDP(ip.Payload()).IsChecksumValidIPv4(ip.Src(), ip.Dst()); !ok {
				t.Fatalf("%v: transport checksum", h)
			}
			continue
		}
		ip, proto, off, err := header.ParseIPv6(e.Payload())
		if err != nil || proto != h.Proto || ip.SrcAddr() != h.Src || ip.DstAddr() != h.Dst || ip.HopLimit() != h.TTL {
			t.Fatalf("%v: IPv6 % x", h, ip)
		}
		s, d := ip.Src(), ip.Dst()
		if ok := h.Proto == header.ProtoICMPv6 && header.ICMPv6(ip[off:]).IsChecksumValid(&s, &d) ||
			h.Proto == header.ProtoUDP && header.UDP(ip[off:]).IsChecksumValidIPv6(&s, &d); !ok {
			t.Fatalf("%v: transport checksum", h)
		}
	}
}

func TestCaptured(t *testing.T) {
	if f := Captured(t, "sample"); !bytes.Equal(f, []byte{0xff, 0xff, 0x52, 0x54, 0, 0x12}) {
		t.Fatalf("% x", f)
	}
}
