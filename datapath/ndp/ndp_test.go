// Tests of the NDP responder: solicitations as the Linux kernel sends them,
// every field of the advertisements, the messages that get no answer,
// malformed ones, allocation, and fuzz targets.
package ndp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
)

var assigned = netip.MustParseAddr("2001:db8:1:2:aaaa:bbbb:cccc:dddd")

func testConfig() *config.Config {
	return &config.Config{
		OurMAC: config.DefaultMAC,
		MTU:    65520,
		V6: config.IP{Enabled: true, Addr: assigned, PrefixLen: 64, Gateway: configtest.OurLL, OurLL: configtest.OurLL,
			DNS: []netip.Addr{netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("192.0.2.53"),
				netip.MustParseAddr("2001:db8::54")}},
		AdvertiseDNS:    true,
		AdvertiseSearch: true,
		Search:          []string{"example.com", "lab.example.org"},
	}
}

// icmpFrame builds Ethernet+IPv6+ICMPv6 from the guest with hop limit 255
// and a correct checksum, as the kernel sends NDP.
func icmpFrame(macDst [6]byte, src, dst netip.Addr, msg []byte) []byte {
	return taptest.IP{MACDst: macDst, MACSrc: configtest.GuestMAC, Src: src, Dst: dst,
		Proto: header.ProtoICMPv6, TTL: 255}.Frame(msg)
}

// rs is a Router Solicitation with a source link-layer address option.
func rs(src netip.Addr) []byte {
	msg := []byte{133, 0, 0, 0, 0, 0, 0, 0, optSLLA, 1}
	msg = append(msg, configtest.GuestMAC[:]...)
	if !src.IsUnspecified() {
		return icmpFrame([6]byte{0x33, 0x33, 0, 0, 0, 2}, src, netip.MustParseAddr("ff02::2"), msg)
	}
	return icmpFrame([6]byte{0x33, 0x33, 0, 0, 0, 2}, src, netip.MustParseAddr("ff02::2"), msg[:8])
}

// ns is a Neighbor Solicitation for target, to its solicited-node group.
func ns(src, target netip.Addr) []byte {
	t := target.As16()
	msg := append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, t[:]...)
	if !src.IsUnspecified() {
		msg = append(msg, optSLLA, 1)
		msg = append(msg, configtest.GuestMAC[:]...)
	}
	snm := netip.AddrFrom16([16]byte{0xff, 2, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
	return icmpFrame([6]byte{0x33, 0x33, 0xff, t[13], t[14], t[15]}, src, snm, msg)
}

// checkIPv6 checks the Ethernet and IPv6 headers of an answer and its
// checksum, and returns the ICMPv6 message.
func checkIPv6(t *testing.T, f []byte, macDst [6]byte, dst netip.Addr) header.ICMPv6 {
	t.Helper()
	e, _ := header.ParseEthernet(f)
	if e.Dst() != macDst || e.Src() != config.DefaultMAC || e.Type() != header.EtherTypeIPv6 {
		t.Fatalf("ethernet % x", f[:14])
	}
	ip, proto, off, err := header.ParseIPv6(e.Payload())
	if err != nil || proto != header.ProtoICMPv6 || off != 40 || len(ip) != len(f)-14 {
		t.Fatalf("ipv6: %v", err)
	}
	if ip.HopLimit() != 255 || ip.SrcAddr() != configtest.OurLL || ip.DstAddr() != dst || ip.TrafficClass() != 0 || ip.FlowLabel() != 0 {
		t.Fatalf("ipv6 header % x", ip[:40])
	}
	m := header.ICMPv6(ip[off:])
	s, d := ip.Src(), ip.Dst()
	if !m.IsChecksumValid(&s, &d) {
		t.Fatal("bad ICMPv6 checksum")
	}
	return m
}

func TestNA(t *testing.T) {
	for _, target := range []string{"fe80::1", "2001:db8::99", "2001:db8:1:2::1"} {
		out := taptest.New(1)
		if err := handle(testConfig(), &guest.State{}, out, ns(configtest.GuestLL, netip.MustParseAddr(target))); err != nil {
			t.Fatal(err)
		}
		if len(out.Frames()) != 1 {
			t.Fatalf("%d frames", len(out.Frames()))
		}
		m := checkIPv6(t, out.Frames()[0], configtest.GuestMAC, configtest.GuestLL)
		tg := netip.MustParseAddr(target).As16()
		want := append([]byte{136, 0, m[2], m[3], 0xe0, 0, 0, 0}, tg[:]...)
		want = append(want, 2, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55)
		if !bytes.Equal(m, want) {
			t.Fatalf("NA\n got % x\nwant % x", []byte(m), want)
		}
	}
}

// raOptions splits the options of an RA into a map by type.
func raOptions(t *testing.T, m []byte) map[byte][]byte {
	t.Helper()
	opts := map[byte][]byte{}
	for b := m[16:]; len(b) > 0; {
		l := int(b[1]) * 8
		if l == 0 || l > len(b) {
			t.Fatalf("bad option layout % x", b)
		}
		opts[b[0]] = b[:l]
		b = b[l:]
	}
	return opts
}

func TestRA(t *testing.T) {
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, rs(configtest.GuestLL)); err != nil {
		t.Fatal(err)
	}
	if len(out.Frames()) != 1 {
		t.Fatalf("%d frames", len(out.Frames()))
	}
	m := checkIPv6(t, out.Frames()[0], configtest.GuestMAC, configtest.GuestLL)
	if !bytes.Equal(m[:16], []byte{134, 0, m[2], m[3], 255, 0x80, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("RA fixed part % x", []byte(m[:16]))
	}
	o := raOptions(t, m)
	if len(o) != 5 {
		t.Fatalf("%d options", len(o))
	}
	pio := []byte{3, 4, 64, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(o[optPrefix], pio) {
		t.Errorf("PIO % x", o[optPrefix])
	}
	if !bytes.Equal(o[optMTU], []byte{5, 1, 0, 0, 0, 0, 0xff, 0xf0}) {
		t.Errorf("MTU % x", o[optMTU])
	}
	d1, d2 := netip.MustParseAddr("2001:db8::53").As16(), netip.MustParseAddr("2001:db8::54").As16()
	rdnss := append(append([]byte{25, 5, 0, 0, 0xff, 0xff, 0xff, 0xff}, d1[:]...), d2[:]...)
	if !bytes.Equal(o[optRDNSS], rdnss) {
		t.Errorf("RDNSS % x", o[optRDNSS])
	}
	dnssl := []byte("\x1f\x05\x00\x00\xff\xff\xff\xff\x07example\x03com\x00\x03lab\x07example\x03org\x00\x00\x00")
	if !bytes.Equal(o[optDNSSL], dnssl) {
		t.Errorf("DNSSL\n got % x\nwant % x", o[optDNSSL], dnssl)
	}
	if !bytes.Equal(o[optSLLA], []byte{1, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}) {
		t.Errorf("SLLA % x", o[optSLLA])
	}

	// -m 0, no DNS advertising: only PIO and SLLA.
	cfg := testConfig()
	cfg.MTU = 0
	cfg.AdvertiseDNS = false
	out = taptest.New(1)
	if err := handle(cfg, &guest.State{}, out, rs(configtest.GuestLL)); err != nil {
		t.Fatal(err)
	}
	o = raOptions(t, checkIPv6(t, out.Frames()[0], configtest.GuestMAC, configtest.GuestLL))
	if len(o) != 2 || o[optPrefix] == nil || o[optSLLA] == nil {
		t.Errorf("options without MTU/DNS: %v", o)
	}
	// RDNSS without search advertising: no DNSSL.
	cfg = testConfig()
	cfg.AdvertiseSearch = false
	out = taptest.New(1)
	_ = handle(cfg, &guest.State{}, out, rs(configtest.GuestLL))
	if o = raOptions(t, checkIPv6(t, out.Frames()[0], configtest.GuestMAC, configtest.GuestLL)); o[optDNSSL] != nil || o[optRDNSS] == nil {
		t.Errorf("DNSSL without search advertising")
	}
}

func TestRAMulticast(t *testing.T) {
	// RS from :: gets its answer on ff02::1.
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, rs(netip.IPv6Unspecified())); err != nil {
		t.Fatal(err)
	}
	checkIPv6(t, out.Frames()[0], [6]byte{0x33, 0x33, 0, 0, 0, 1}, netip.MustParseAddr("ff02::1"))
	// Unsolicited.
	out = taptest.New(1)
	if err := RA(testConfig(), &guest.State{}, out); err != nil || len(out.Frames()) != 1 {
		t.Fatal(err)
	}
	m := checkIPv6(t, out.Frames()[0], [6]byte{0x33, 0x33, 0, 0, 0, 1}, netip.MustParseAddr("ff02::1"))
	if m[0] != 134 {
		t.Fatal("not an RA")
	}
	for i := 0; i < 1000; i++ {
		if d := NextRA(); d < 200*time.Second || d >= 600*time.Second {
			t.Fatalf("interval %v", d)
		}
	}
}

func TestNoAnswer(t *testing.T) {
	norA := testConfig()
	norA.NoRA = true
	confNet := testConfig()
	confNet.ConfigNet = true
	na := ns(configtest.GuestLL, configtest.OurLL)
	na[54] = 136 // an NA from the guest: checksum must be redone
	s, d := configtest.GuestLL.As16(), netip.MustParseAddr("ff02::1:ff00:1").As16()
	header.ICMPv6(na[54:]).SetChecksum(&s, &d)
	for name, c := range map[string]struct {
		cfg   *config.Config
		frame []byte
	}{
		"DAD":             {testConfig(), ns(netip.IPv6Unspecified(), assigned)},
		"RS with --no-ra": {norA, rs(configtest.GuestLL)},
		"RS --config-net": {confNet, rs(configtest.GuestLL)},
		"NA from guest":   {testConfig(), na},
	} {
		out := taptest.NewCounter(1)
		if err := handle(c.cfg, &guest.State{}, out, c.frame); err != nil || out.Count() != 0 {
			t.Errorf("%s: %v, %d frames", name, err, out.Count())
		}
		if name != "DAD" && name != "NA from guest" {
			if err := RA(c.cfg, &guest.State{}, out); err != nil || out.Count() != 0 {
				t.Errorf("%s: unsolicited RA sent", name)
			}
		}
	}
	cfg := testConfig()
	cfg.NoNDP = true
	if err := handle(cfg, &guest.State{}, taptest.NewCounter(1), rs(configtest.GuestLL)); !errors.Is(err, ErrDisabled) {
		t.Errorf("--no-ndp: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	good := ns(configtest.GuestLL, configtest.OurLL)
	mod := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	refresh := func(b []byte) {
		s, d := [16]byte(b[22:38]), [16]byte(b[38:54])
		header.ICMPv6(b[54:]).SetChecksum(&s, &d)
	}
	for name, c := range map[string]struct {
		frame []byte
		want  error
	}{
		"hop limit": {mod(func(b []byte) { b[21] = 64 }), ErrHopLimit},
		"checksum":  {mod(func(b []byte) { b[60] ^= 1 }), ErrChecksum},
		"code":      {mod(func(b []byte) { b[55] = 1; refresh(b) }), ErrCode},
		"option 0":  {mod(func(b []byte) { b[79] = 0; refresh(b) }), ErrOption},
		"option 2":  {mod(func(b []byte) { b[79] = 2; refresh(b) }), ErrOption},
		"mcast tgt": {mod(func(b []byte) { b[62] = 0xff; refresh(b) }), ErrTarget},
		"echo":      {mod(func(b []byte) { b[54] = 128; refresh(b) }), ErrNotNDP},
		"short ns": {func() []byte {
			b := icmpFrame(configtest.GuestMAC, configtest.GuestLL, configtest.OurLL, []byte{135, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
			return b
		}(), ErrLength},
		"DAD with SLLA": {func() []byte {
			t := assigned.As16()
			msg := append(append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, t[:]...), 1, 1, 1, 2, 3, 4, 5, 6)
			return icmpFrame(configtest.GuestMAC, netip.IPv6Unspecified(), configtest.OurLL, msg)
		}(), ErrOption},
	} {
		out := taptest.NewCounter(1)
		if err := handle(testConfig(), &guest.State{}, out, c.frame); !errors.Is(err, c.want) || out.Count() != 0 {
			t.Errorf("%s: %v (want %v), %d frames", name, err, c.want, out.Count())
		}
	}
	for _, n := range []int{0, 13, 20, 54, 60} {
		if err := handle(testConfig(), &guest.State{}, taptest.NewCounter(1), good[:n]); err == nil {
			t.Errorf("truncated to %d accepted", n)
		}
	}
}

func TestAnnounce(t *testing.T) {
	for _, c := range []struct {
		g   [6]byte
		mac [6]byte
	}{
		{configtest.GuestMAC, configtest.GuestMAC},
		{guest.BroadcastMAC, [6]byte{0x33, 0x33, 0xff, 0xcc, 0xdd, 0xdd}},
	} {
		out := taptest.New(1)
		if err := Announce(testConfig(), &guest.State{MAC: c.g}, out); err != nil || len(out.Frames()) != 1 {
			t.Fatal(err)
		}
		m := checkIPv6(t, out.Frames()[0], c.mac, assigned)
		a := assigned.As16()
		want := append(append([]byte{135, 0, m[2], m[3], 0, 0, 0, 0}, a[:]...), 1, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55)
		if !bytes.Equal(m, want) {
			t.Fatalf("NS\n got % x\nwant % x", []byte(m), want)
		}
	}
	cfg := testConfig()
	cfg.V6.Addr = netip.Addr{}
	out := taptest.NewCounter(1)
	if Announce(cfg, &guest.State{}, out); out.Count() != 0 {
		t.Fatal("NS without an address")
	}
}

func TestNoAllocs(t *testing.T) {
	cfg, g, out := testConfig(), &guest.State{MAC: configtest.GuestMAC}, taptest.NewCounter(1)
	r, s := rs(configtest.GuestLL), ns(configtest.GuestLL, configtest.OurLL)
	if a := testing.AllocsPerRun(100, func() {
		if handle(cfg, g, out, r) != nil || handle(cfg, g, out, s) != nil ||
			RA(cfg, g, out) != nil || Announce(cfg, g, out) != nil {
			t.Fatal("error")
		}
		_ = NextRA()
	}); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(taptest.Captured(f, "kernel-rs"))
	f.Add(taptest.Captured(f, "kernel-ns"))
	f.Add(rs(configtest.GuestLL))
	f.Add(rs(netip.IPv6Unspecified()))
	f.Add(ns(configtest.GuestLL, configtest.OurLL))
	f.Add(ns(netip.IPv6Unspecified(), assigned))
	f.Add(ns(configtest.GuestLL, configtest.OurLL)[:70])
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, b []byte) {
		// Fix up the checksum so that the fuzzer reaches the option parser.
		if len(b) >= 62 && binary.BigEndian.Uint16(b[12:]) == header.EtherTypeIPv6 && b[20] == 58 {
			if ip, _, off, err := header.ParseIPv6(b[14:]); err == nil && off == 40 && len(ip) >= 48 {
				s, d := ip.Src(), ip.Dst()
				header.ICMPv6(ip[40:]).SetChecksum(&s, &d)
			}
		}
		out := taptest.NewCounter(1)
		_ = handle(cfg, &guest.State{}, out, b)
		if out.Count() > 1 {
			t.Fatal("more than one answer")
		}
	})
}

func FuzzOptions(f *testing.F) {
	f.Add([]byte{1, 1, 1, 2, 3, 4, 5, 6})
	f.Add([]byte{1, 0})
	f.Add([]byte{3, 4, 64})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = checkOptions(b)
	})
}

// TestKernel feeds the RS and NS a Linux 6.x guest sent on a veth
// (testdata/kernel-*.hex, MAC 52:54:00:12:34:56).
func TestKernel(t *testing.T) {
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, taptest.Captured(t, "kernel-rs")); err != nil {
		t.Fatal(err)
	}
	if m := checkIPv6(t, out.Frames()[0], configtest.GuestMAC, configtest.GuestLL); m[0] != 134 {
		t.Fatal("no RA")
	}
	out = taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, taptest.Captured(t, "kernel-ns")); err != nil {
		t.Fatal(err)
	}
	m := checkIPv6(t, out.Frames()[0], configtest.GuestMAC, configtest.GuestLL)
	if m[0] != 136 || netip.AddrFrom16([16]byte(m[8:24])) != configtest.OurLL {
		t.Fatalf("NA % x", []byte(m))
	}
}

// handle parses frame as the demultiplexer does, then answers it.
func handle(cfg *config.Config, g *guest.State, out tap.Out, frame []byte) error {
	p, err := taptest.Parsed(frame)
	if err != nil {
		return err
	}
	return Handle(cfg, g, out, p)
}
