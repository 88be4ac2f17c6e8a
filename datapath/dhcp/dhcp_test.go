// Tests of the DHCP server: requests captured from busybox udhcpc and ISC
// dhclient (testdata/*.hex), every field and option of the reply, option
// order and size rules, ignored and malformed requests, allocation, and
// fuzz targets.
package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
)

func testConfig() *config.Config {
	return &config.Config{
		OurMAC:   config.DefaultMAC,
		MTU:      65520,
		Hostname: "guest",
		FQDN:     "guest.example.com",
		V4: config.IP{Enabled: true, Addr: netip.MustParseAddr("10.0.2.15"), PrefixLen: 24,
			Gateway: netip.MustParseAddr("10.0.2.2"),
			DNS:     []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.53")}},
		AdvertiseDNS:    true,
		AdvertiseSearch: true,
		Search:          []string{"example.com", "lab.example.com."},
	}
}

// replySrc is the expected source of replies: the gateway.
var replySrc = netip.MustParseAddr("10.0.2.2")

// option is one option of a reply, in order.
type option struct {
	code byte
	data []byte
}

// checkReply checks the headers of a reply frame and returns the BOOTP
// message and its options in order.
func checkReply(t *testing.T, f []byte, macDst [6]byte, dst string) ([]byte, []option) {
	t.Helper()
	e, _ := header.ParseEthernet(f)
	if e.Dst() != macDst || e.Src() != config.DefaultMAC || e.Type() != header.EtherTypeIPv4 {
		t.Fatalf("ethernet % x", f[:14])
	}
	ip, err := header.ParseIPv4(e.Payload())
	if err != nil || len(ip) != len(f)-14 {
		t.Fatalf("ipv4: %v", err)
	}
	if ip.SrcAddr() != replySrc || ip.DstAddr() != netip.MustParseAddr(dst) ||
		ip.Proto() != header.ProtoUDP || ip.TTL() != 255 || !ip.IsChecksumValid() {
		t.Fatalf("ipv4 header % x", ip[:20])
	}
	u, err := header.ParseUDP(ip.Payload())
	if err != nil || u.SrcPort() != 67 || u.DstPort() != 68 || !u.IsChecksumValidIPv4(ip.Src(), ip.Dst()) ||
		u.Checksum() == 0 || int(u.Length()) != len(ip)-20 {
		t.Fatalf("udp: %v % x", err, u[:8])
	}
	m := u.Payload()
	if len(m) < 300 || len(m) > 576-28 {
		t.Fatalf("BOOTP message of %d bytes", len(m))
	}
	if binary.BigEndian.Uint32(m[236:]) != magic {
		t.Fatal("no magic cookie")
	}
	var opts []option
	b := m[240:]
	for len(b) > 0 && b[0] != 255 {
		if b[0] == 0 {
			t.Fatal("pad before end")
		}
		l := 2 + int(b[1])
		opts = append(opts, option{b[0], b[2:l]})
		b = b[l:]
	}
	if len(b) == 0 {
		t.Fatal("no end option")
	}
	for _, x := range b[1:] {
		if x != 0 {
			t.Fatal("non-zero padding after end")
		}
	}
	if len(m)-240 > 308 {
		t.Fatalf("options field of %d bytes", len(m)-240)
	}
	return m, opts
}

// codes returns the option codes in order.
func codes(opts []option) []byte {
	var c []byte
	for _, o := range opts {
		c = append(c, o.code)
	}
	return c
}

// find returns the data of option code.
func find(opts []option, code byte) []byte {
	for _, o := range opts {
		if o.code == code {
			return o.data
		}
	}
	return nil
}

func TestUdhcpcRequest(t *testing.T) {
	req := taptest.Captured(t, "udhcpc-request")
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, req); err != nil {
		t.Fatal(err)
	}
	if len(out.Frames()) != 1 {
		t.Fatalf("%d frames", len(out.Frames()))
	}
	m, opts := checkReply(t, out.Frames()[0], configtest.GuestMAC, "10.0.2.15")
	rq := req[42:]
	// Fixed part.
	if m[0] != 2 || m[1] != 1 || m[2] != 6 || m[3] != 0 || !bytes.Equal(m[4:8], rq[4:8]) ||
		!bytes.Equal(m[8:10], []byte{0, 0}) || !bytes.Equal(m[10:12], rq[10:12]) ||
		!bytes.Equal(m[12:16], rq[12:16]) || !bytes.Equal(m[16:20], []byte{10, 0, 2, 15}) ||
		!bytes.Equal(m[20:28], make([]byte, 8)) || !bytes.Equal(m[28:44], rq[28:44]) ||
		!bytes.Equal(m[44:236], make([]byte, 192)) {
		t.Fatalf("fixed part % x", m[:44])
	}
	// PRL 1 3 6 12 15 28 42 119 121: 53 first (not asked for), the PRL
	// order for what we have (121 not needed: gateway on-link), then the
	// rest by code.
	if want := []byte{53, 1, 3, 6, 12, 119, 26, 51, 54, 81}; !bytes.Equal(codes(opts), want) {
		t.Fatalf("option order %v, want %v", codes(opts), want)
	}
	for code, want := range map[byte][]byte{
		53:  {5},
		1:   {255, 255, 255, 0},
		3:   {10, 0, 2, 2},
		6:   {10, 0, 2, 3, 192, 0, 2, 53},
		12:  []byte("guest"),
		119: []byte("\x07example\x03com\x00\x03lab\xc0\x00"),
		26:  {0xff, 0xf0},
		51:  {0xff, 0xff, 0xff, 0xff},
		54:  {10, 0, 2, 2},
		81:  []byte("\x04\xff\xff\x05guest\x07example\x03com\x00"),
	} {
		if got := find(opts, code); !bytes.Equal(got, want) {
			t.Errorf("option %d: % x, want % x", code, got, want)
		}
	}
}

func TestDiscover(t *testing.T) {
	for _, name := range []string{"udhcpc-discover", "dhclient-discover"} {
		req := taptest.Captured(t, name)
		out := taptest.New(1)
		if err := handle(testConfig(), &guest.State{}, out, req); err != nil {
			t.Fatal(err)
		}
		m, opts := checkReply(t, out.Frames()[0], configtest.GuestMAC, "10.0.2.15")
		if find(opts, 53)[0] != typeOffer || !bytes.Equal(m[12:16], []byte{0, 0, 0, 0}) {
			t.Errorf("%s: not an OFFER: %v", name, opts)
		}
		if find(opts, 80) != nil {
			t.Errorf("%s: rapid commit without asking", name)
		}
		if name == "dhclient-discover" {
			// PRL 1 28 2 3 15 6 119 12 44 47 26 121 42.
			if want := []byte{53, 1, 3, 6, 119, 12, 26, 51, 54, 81}; !bytes.Equal(codes(opts), want) {
				t.Errorf("option order %v, want %v", codes(opts), want)
			}
		}
	}
}

// request builds a DHCP request frame with the given options (End added).
func request(flags uint16, opts ...byte) []byte {
	msg := make([]byte, 240)
	msg[0], msg[1], msg[2] = 1, 1, 6
	copy(msg[4:], []byte{1, 2, 3, 4})
	binary.BigEndian.PutUint16(msg[10:], flags)
	copy(msg[12:], []byte{10, 0, 2, 15}) // ciaddr
	copy(msg[28:], configtest.GuestMAC[:])
	binary.BigEndian.PutUint32(msg[236:], magic)
	msg = append(append(msg, opts...), 255)
	return taptest.IP{MACDst: guest.BroadcastMAC, MACSrc: configtest.GuestMAC, Src: netip.IPv4Unspecified(),
		Dst: netip.AddrFrom4([4]byte{255, 255, 255, 255}), Proto: header.ProtoUDP, TTL: 64}.Frame(taptest.UDP(68, 67, msg))
}

func TestRapidCommitBroadcastRoutes(t *testing.T) {
	cfg := testConfig()
	cfg.V4.Gateway = netip.MustParseAddr("192.0.2.1") // off the /24
	replySrc = cfg.V4.Gateway
	defer func() { replySrc = netip.MustParseAddr("10.0.2.2") }()
	out := taptest.New(1)
	// DISCOVER with rapid commit, broadcast flag, PRL listing 53 last.
	if err := handle(cfg, &guest.State{}, out, request(0x8000, 53, 1, 1, 80, 0, 55, 3, 121, 3, 53)); err != nil {
		t.Fatal(err)
	}
	m, opts := checkReply(t, out.Frames()[0], guest.BroadcastMAC, "255.255.255.255")
	if !bytes.Equal(m[10:12], []byte{0x80, 0}) {
		t.Error("broadcast flag not echoed")
	}
	if want := []byte{121, 3, 53, 1, 6, 12, 26, 51, 54, 80, 81, 119}; !bytes.Equal(codes(opts), want) {
		t.Fatalf("option order %v, want %v", codes(opts), want)
	}
	if find(opts, 53)[0] != typeAck || find(opts, 80) == nil || len(find(opts, 80)) != 0 {
		t.Error("rapid commit must give an ACK with option 80")
	}
	if want := []byte{32, 192, 0, 2, 1, 0, 0, 0, 0, 0, 192, 0, 2, 1}; !bytes.Equal(find(opts, 121), want) {
		t.Errorf("121: % x", find(opts, 121))
	}
	if !bytes.Equal(m[12:16], []byte{10, 0, 2, 15}) {
		t.Error("ACK must echo ciaddr")
	}
}

func TestBOOTPAndIgnored(t *testing.T) {
	// BOOTP: no option 53 → ACK.
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, request(0)); err != nil {
		t.Fatal(err)
	}
	if _, opts := checkReply(t, out.Frames()[0], configtest.GuestMAC, "10.0.2.15"); find(opts, 53)[0] != typeAck {
		t.Error("BOOTP not ACKed")
	}
	// No cookie at all: plain BOOTP, still ACKed.
	plain := request(0)
	binary.BigEndian.PutUint32(plain[42+236:], 0)
	out = taptest.NewCounter(1)
	if err := handle(testConfig(), &guest.State{}, out, plain); err != nil || out.Count() != 1 {
		t.Errorf("plain BOOTP: %v %d", err, out.Count())
	}
	for _, typ := range []byte{4, 7, 8} { // DECLINE, RELEASE, INFORM
		out := taptest.NewCounter(1)
		if err := handle(testConfig(), &guest.State{}, out, request(0, 53, 1, typ)); err != nil || out.Count() != 0 {
			t.Errorf("type %d: %v, %d frames", typ, err, out.Count())
		}
	}
	// Without DNS/search advertising and with -m 0.
	cfg := testConfig()
	cfg.AdvertiseDNS, cfg.AdvertiseSearch, cfg.MTU, cfg.Hostname, cfg.FQDN = false, false, 0, "", ""
	out = taptest.New(1)
	_ = handle(cfg, &guest.State{}, out, request(0, 53, 1, 1))
	m, opts := checkReply(t, out.Frames()[0], configtest.GuestMAC, "10.0.2.15")
	if !bytes.Equal(codes(opts), []byte{53, 1, 3, 51, 54}) {
		t.Errorf("minimal options %v", codes(opts))
	}
	if len(m) != 300 { // 28 bytes of options padded to 60: RFC 1542's 300-byte minimum
		t.Errorf("padded message of %d bytes, want 300", len(m))
	}
}

func TestSizeLimit(t *testing.T) {
	cfg := testConfig()
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63)
	cfg.Search = []string{"x." + long, "y." + long[:100], "z." + long[:150]}
	out := taptest.New(1)
	// PRL asks for 119 first: it does not fit in 308 bytes and is skipped,
	// everything after it still goes in.
	if err := handle(cfg, &guest.State{}, out, request(0, 53, 1, 1, 55, 2, 119, 1)); err != nil {
		t.Fatal(err)
	}
	m, opts := checkReply(t, out.Frames()[0], configtest.GuestMAC, "10.0.2.15")
	if find(opts, 119) != nil || !bytes.Equal(codes(opts), []byte{53, 1, 3, 6, 12, 26, 51, 54, 81}) {
		t.Errorf("options %v", codes(opts))
	}
	if len(m) != 240+73 { // 3+6+6+10+7+4+6+6+24 bytes of options, End
		t.Errorf("message of %d bytes, want 313", len(m))
	}
	// A 119 longer than 255 bytes that does fit is split (RFC 3396).
	cfg.Search = []string{"x." + long, "y." + long[:60]}
	cfg.Hostname, cfg.FQDN, cfg.AdvertiseDNS = "", "", false
	out = taptest.New(1)
	_ = handle(cfg, &guest.State{}, out, request(0, 53, 1, 1))
	_, opts = checkReply(t, out.Frames()[0], configtest.GuestMAC, "10.0.2.15")
	var s []byte
	n := 0
	for _, o := range opts {
		if o.code == 119 {
			s = append(s, o.data...)
			n++
		}
	}
	if n != 2 || len(s) != 195+64 {
		t.Errorf("split 119: %d parts, %d bytes", n, len(s))
	}
}

func TestMalformed(t *testing.T) {
	good := request(0, 53, 1, 1)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, c := range map[string]struct {
		f    []byte
		want error
	}{
		"bootreply":    {mod(func(b []byte) []byte { b[42] = 2; return b }), ErrOp},
		"short":        {mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[38:], 8+200); return b }), ErrLength},
		"option long":  {mod(func(b []byte) []byte { b[len(b)-3] = 9; return b }), ErrOption},
		"option 53 2":  {mod(func(b []byte) []byte { b[len(b)-3] = 2; return b }), ErrOption},
		"port 68":      {mod(func(b []byte) []byte { b[37] = 68; return b }), ErrNotDHCP},
		"udp len":      {mod(func(b []byte) []byte { b[38] = 0xff; return b }), header.ErrTotalLen},
		"truncated ip": {good[:30], header.ErrTruncated},
	} {
		out := taptest.NewCounter(1)
		if err := handle(testConfig(), &guest.State{}, out, c.f); !errors.Is(err, c.want) || out.Count() != 0 {
			t.Errorf("%s: %v (want %v), %d frames", name, err, c.want, out.Count())
		}
	}
	cfg := testConfig()
	cfg.NoDHCP = true
	if err := handle(cfg, &guest.State{}, taptest.NewCounter(1), good); !errors.Is(err, ErrDisabled) {
		t.Errorf("--no-dhcp: %v", err)
	}
}

func TestSearchCompression(t *testing.T) {
	b := make([]byte, 1400)
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"eng.apple.com", "marketing.apple.com"}, // RFC 3397 §3
			"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04"},
		{[]string{"a.b", "A.B", "c"}, "\x01a\x01b\x00\xc0\x00\x01c\x00"},
		{[]string{"bad..name", "ok"}, "\x02ok\x00"},
	} {
		n := putSearch(b, c.names)
		if string(b[:n]) != c.want {
			t.Errorf("%v: % x", c.names, b[:n])
		}
	}
}

func TestNoAllocs(t *testing.T) {
	cfg, g, out := testConfig(), &guest.State{}, taptest.NewCounter(1)
	req, disc := taptest.Captured(t, "udhcpc-request"), taptest.Captured(t, "dhclient-discover")
	if a := testing.AllocsPerRun(100, func() {
		if handle(cfg, g, out, req) != nil || handle(cfg, g, out, disc) != nil {
			t.Fatal("error")
		}
	}); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

func FuzzHandle(f *testing.F) {
	for _, n := range []string{"udhcpc-discover", "udhcpc-request", "dhclient-discover"} {
		b := taptest.Captured(f, n)
		f.Add(b)
		f.Add(b[:len(b)-20])
	}
	f.Add(request(0x8000, 53, 1, 1, 80, 0, 55, 3, 121, 3, 53))
	cfg := testConfig()
	cfg.V4.Gateway = netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		out := taptest.NewCounter(1)
		_ = handle(cfg, &guest.State{}, out, b)
		if out.Count() > 1 {
			t.Fatal("more than one reply")
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	f.Add([]byte{53, 1, 1, 55, 3, 1, 3, 6, 80, 0, 255})
	f.Add([]byte{0, 0, 53, 2, 1})
	f.Add([]byte{55})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOptions(b)
		if err == nil && o.Type > 255 {
			t.Fatal("type out of range")
		}
	})
}

func FuzzSearch(f *testing.F) {
	f.Add("example.com", "lab.example.com", "x")
	f.Add("a..b", ".", "")
	b := make([]byte, 1400)
	f.Fuzz(func(t *testing.T, a, c, d string) {
		n := putSearch(b, []string{a, c, d})
		if n > 3*255 {
			t.Fatalf("%d bytes", n)
		}
	})
}

// handle parses frame as the demultiplexer does, then answers it.
func handle(cfg *config.Config, g *guest.State, out tap.Out, frame []byte) error {
	p, err := taptest.Parsed(frame)
	if err != nil {
		return err
	}
	return Handle(cfg, g, out, p)
}
