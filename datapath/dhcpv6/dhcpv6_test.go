// Tests of the DHCPv6 server: messages captured from ISC dhclient -6
// (testdata/*.hex), built REQUEST/RENEW/REBIND/CONFIRM/RELEASE, every
// option of the replies, NotOnLink, ignored and malformed messages,
// allocation, and fuzz targets.
package dhcpv6

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

var (
	assigned  = netip.MustParseAddr("2001:db8::15")
	allServer = netip.MustParseAddr("ff02::1:2")
	clientID  = []byte{0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56} // DUID-LL
)

func testConfig() *config.Config {
	return &config.Config{
		OurMAC: config.DefaultMAC,
		FQDN:   "guest.example.com",
		V6: config.IP{Enabled: true, Addr: assigned, PrefixLen: 64, Gateway: configtest.OurLL, OurLL: configtest.OurLL,
			DNS: []netip.Addr{netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("10.0.0.1")}},
		AdvertiseDNS:    true,
		AdvertiseSearch: true,
		Search:          []string{"example.com", "lab.example.com"},
	}
}

// opt builds one option.
func opt(code uint16, data ...[]byte) []byte {
	d := bytes.Join(data, nil)
	b := binary.BigEndian.AppendUint16(nil, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
	return append(b, d...)
}

// iana builds an IA_NA with IAID 0x0a0b0c0d and the given addresses.
func iana(addrs ...netip.Addr) []byte {
	d := [][]byte{{0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 0}}
	for _, a := range addrs {
		d = append(d, opt(optIAAddr, a.AsSlice(), make([]byte, 8)))
	}
	return opt(optIANA, d...)
}

// ourID returns our server identifier option.
func ourID() []byte {
	var d [14]byte
	serverDUID(d[:], config.DefaultMAC)
	return opt(optServerID, d[:])
}

// request builds Ethernet+IPv6+UDP from the client's link-local, port 546,
// to dst:547 with message type typ, transaction id 0x123456, options.
func request(typ byte, dst netip.Addr, opts ...[]byte) []byte {
	msg := append([]byte{typ, 0x12, 0x34, 0x56}, bytes.Join(opts, nil)...)
	return taptest.IP{MACDst: [6]byte{0x33, 0x33, 0, 1, 0, 2}, MACSrc: configtest.GuestMAC, Src: configtest.GuestLL,
		Dst: dst, Proto: header.ProtoUDP, TTL: 1}.Frame(taptest.UDP(546, 547, msg))
}

// reply checks the headers of a reply and returns its type, transaction
// id and top-level options by code (in order in the second result).
func reply(t *testing.T, f []byte) (byte, []byte, map[uint16][]byte, []uint16) {
	t.Helper()
	e, _ := header.ParseEthernet(f)
	if e.Dst() != configtest.GuestMAC || e.Src() != config.DefaultMAC || e.Type() != header.EtherTypeIPv6 {
		t.Fatalf("ethernet % x", f[:14])
	}
	ip, proto, off, err := header.ParseIPv6(e.Payload())
	if err != nil || proto != header.ProtoUDP || len(ip) != len(f)-14 || ip.SrcAddr() != configtest.OurLL ||
		ip.DstAddr() != configtest.GuestLL || ip.HopLimit() != 255 {
		t.Fatalf("ipv6: %v % x", err, f[14:54])
	}
	u, err := header.ParseUDP(ip[off:])
	s, d := ip.Src(), ip.Dst()
	if err != nil || u.SrcPort() != 547 || u.DstPort() != 546 || int(u.Length()) != len(ip)-40 ||
		!u.IsChecksumValidIPv6(&s, &d) {
		t.Fatalf("udp: %v % x", err, u[:8])
	}
	m := u.Payload()
	opts := map[uint16][]byte{}
	var order []uint16
	if err := walk(m[4:], func(code uint16, data []byte) error {
		opts[code] = data
		order = append(order, code)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m[0], m[1:4], opts, order
}

// fullReply checks every option of a successful reply.
func fullReply(t *testing.T, f []byte, wantType byte, cid []byte, iaid []byte) {
	t.Helper()
	typ, _, o, order := reply(t, f) // transaction id: checked by the callers
	if typ != wantType {
		t.Fatalf("type %d, want %d", typ, wantType)
	}
	var want []uint16
	want = append(want, optServerID, optClientID)
	if iaid != nil {
		want = append(want, optIANA)
	}
	want = append(want, optDNS, optDomains, optFQDN)
	if len(order) != len(want) {
		t.Fatalf("options %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("options %v, want %v", order, want)
		}
	}
	sid := o[optServerID]
	secs := uint32(time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) / time.Second)
	if len(sid) != 14 || !bytes.Equal(sid[:4], []byte{0, 1, 0, 1}) || !bytes.Equal(sid[8:], config.DefaultMAC[:]) ||
		binary.BigEndian.Uint32(sid[4:]) > secs || binary.BigEndian.Uint32(sid[4:]) < secs-600 {
		t.Errorf("server id % x", sid)
	}
	if !bytes.Equal(o[optClientID], cid) {
		t.Errorf("client id % x", o[optClientID])
	}
	if iaid != nil {
		a := assigned.As16()
		ia := append(append(append([]byte{}, iaid...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 5, 0, 24), a[:]...)
		ia = append(ia, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		if !bytes.Equal(o[optIANA], ia) {
			t.Errorf("IA_NA\n got % x\nwant % x", o[optIANA], ia)
		}
	}
	if d := netip.MustParseAddr("2001:db8::53").As16(); !bytes.Equal(o[optDNS], d[:]) {
		t.Errorf("DNS % x", o[optDNS])
	}
	if string(o[optDomains]) != "\x07example\x03com\x00\x03lab\x07example\x03com\x00" {
		t.Errorf("domains % x", o[optDomains])
	}
	if string(o[optFQDN][1:]) != "\x05guest\x07example\x03com\x00" {
		t.Errorf("FQDN % x", o[optFQDN])
	}
}

func TestDhclientSolicit(t *testing.T) {
	req := taptest.Captured(t, "dhclient6-solicit")
	out := taptest.New(1)
	g := &guest.State{SeenV6: netip.MustParseAddr("2001:db8::99")}
	if err := handle(testConfig(), g, out, req); err != nil {
		t.Fatal(err)
	}
	if len(out.Frames()) != 1 {
		t.Fatalf("%d frames", len(out.Frames()))
	}
	_, xid, o, _ := reply(t, out.Frames()[0])
	if !bytes.Equal(xid, req[63:66]) {
		t.Errorf("xid % x", xid)
	}
	opts, _ := ParseOptions(req[66:])
	fullReply(t, out.Frames()[0], typeAdvertise, opts.ClientID, opts.IANA[:4])
	if o[optFQDN][0] != 0 {
		t.Errorf("FQDN flags %#x without S from the client", o[optFQDN][0])
	}
	if g.SeenV6 != assigned {
		t.Errorf("seen address %v not reset", g.SeenV6)
	}
}

func TestDhclientInfoRequest(t *testing.T) {
	req := taptest.Captured(t, "dhclient6-inforeq")
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out, req); err != nil {
		t.Fatal(err)
	}
	opts, _ := ParseOptions(req[66:])
	fullReply(t, out.Frames()[0], typeReply, opts.ClientID, nil)
}

func TestStateful(t *testing.T) {
	fqdnS := opt(optFQDN, []byte{0x01, 0})
	for name, req := range map[string][]byte{
		"request":                 request(typeRequest, allServer, opt(optClientID, clientID), ourID(), iana(assigned), fqdnS),
		"renew":                   request(typeRenew, allServer, opt(optClientID, clientID), ourID(), iana(assigned), fqdnS),
		"rebind":                  request(typeRebind, allServer, opt(optClientID, clientID), iana(assigned), fqdnS),
		"confirm":                 request(typeConfirm, allServer, opt(optClientID, clientID), iana(assigned), fqdnS),
		"request without address": request(typeRequest, allServer, opt(optClientID, clientID), ourID(), iana(), fqdnS),
	} {
		out := taptest.New(1)
		if err := handle(testConfig(), &guest.State{}, out, req); err != nil || len(out.Frames()) != 1 {
			t.Fatalf("%s: %v %d", name, err, out.Count())
		}
		fullReply(t, out.Frames()[0], typeReply, clientID, []byte{0x0a, 0x0b, 0x0c, 0x0d})
		if _, xid, o, _ := reply(t, out.Frames()[0]); o[optFQDN][0] != 0x02 || !bytes.Equal(xid, []byte{0x12, 0x34, 0x56}) {
			t.Errorf("%s: FQDN flags %#x (client set S: want O), xid % x", name, o[optFQDN][0], xid)
		}
	}
}

func TestNotOnLink(t *testing.T) {
	other := netip.MustParseAddr("2001:db8:ffff::1")
	status := append([]byte{0, 4}, notOnLinkMsg...)
	for _, typ := range []byte{typeRequest, typeRenew} {
		out := taptest.New(1)
		req := request(typ, allServer, opt(optClientID, clientID), ourID(), iana(assigned, other))
		if err := handle(testConfig(), &guest.State{}, out, req); err != nil {
			t.Fatal(err)
		}
		_, _, o, order := reply(t, out.Frames()[0])
		if len(order) != 3 || order[2] != optIANA {
			t.Fatalf("options %v", order)
		}
		want := append([]byte{0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 0}, opt(optStatus, status)...)
		if !bytes.Equal(o[optIANA], want) {
			t.Errorf("type %d: IA_NA % x", typ, o[optIANA])
		}
	}
	out := taptest.New(1)
	if err := handle(testConfig(), &guest.State{}, out,
		request(typeConfirm, allServer, opt(optClientID, clientID), iana(other))); err != nil {
		t.Fatal(err)
	}
	if _, _, o, order := reply(t, out.Frames()[0]); len(order) != 3 || !bytes.Equal(o[optStatus], status) {
		t.Errorf("confirm: options %v, status % x", order, o[optStatus])
	}
}

func TestIgnored(t *testing.T) {
	otherID := opt(optServerID, []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6})
	cid := opt(optClientID, clientID)
	for name, req := range map[string][]byte{
		"unicast solicit":       request(typeSolicit, configtest.OurLL, cid, iana()),
		"solicit with serverid": request(typeSolicit, allServer, cid, ourID(), iana()),
		"request other server":  request(typeRequest, allServer, cid, otherID, iana(assigned)),
		"request no server":     request(typeRequest, allServer, cid, iana(assigned)),
		"renew other server":    request(typeRenew, allServer, cid, otherID, iana(assigned)),
		"rebind other server":   request(typeRebind, allServer, cid, otherID, iana(assigned)),
		"confirm with server":   request(typeConfirm, allServer, cid, ourID(), iana(assigned)),
		"info-request with IA":  request(typeInfoReq, allServer, cid, iana()),
		"release":               request(7, allServer, cid, ourID(), iana(assigned)),
		"decline":               request(9, allServer, cid, ourID(), iana(assigned)),
		"advertise":             request(typeAdvertise, allServer, cid, ourID()),
	} {
		out := taptest.NewCounter(1)
		if err := handle(testConfig(), &guest.State{}, out, req); err != nil || out.Count() != 0 {
			t.Errorf("%s: %v, %d frames", name, err, out.Count())
		}
	}
}

func TestMalformed(t *testing.T) {
	cid := opt(optClientID, clientID)
	for name, c := range map[string]struct {
		f    []byte
		want error
	}{
		"no client id":   {request(typeSolicit, allServer, iana()), ErrNoClientID},
		"short option":   {request(typeSolicit, allServer, cid, []byte{0, 3, 0}), ErrOption},
		"long option":    {request(typeSolicit, allServer, cid, []byte{0, 3, 0, 9, 1}), ErrOption},
		"short IA_NA":    {request(typeSolicit, allServer, cid, opt(optIANA, make([]byte, 11))), ErrOption},
		"short IAADDR":   {request(typeSolicit, allServer, cid, opt(optIANA, make([]byte, 12), opt(optIAAddr, make([]byte, 23)))), ErrOption},
		"long client id": {request(typeSolicit, allServer, opt(optClientID, make([]byte, 131))), ErrOption},
		"empty message":  {request(typeSolicit, allServer)[:65], header.ErrTotalLen},
	} {
		out := taptest.NewCounter(1)
		if err := handle(testConfig(), &guest.State{}, out, c.f); !errors.Is(err, c.want) || out.Count() != 0 {
			t.Errorf("%s: %v (want %v), %d frames", name, err, c.want, out.Count())
		}
	}
	cfg := testConfig()
	cfg.NoDHCPv6 = true
	if err := handle(cfg, &guest.State{}, taptest.NewCounter(1), taptest.Captured(t, "dhclient6-solicit")); !errors.Is(err, ErrDisabled) {
		t.Errorf("--no-dhcpv6: %v", err)
	}
}

func TestNoAllocs(t *testing.T) {
	cfg, g, out := testConfig(), &guest.State{}, taptest.NewCounter(1)
	sol := taptest.Captured(t, "dhclient6-solicit")
	req := request(typeRequest, allServer, opt(optClientID, clientID), ourID(), iana(assigned))
	if a := testing.AllocsPerRun(100, func() {
		if handle(cfg, g, out, sol) != nil || handle(cfg, g, out, req) != nil {
			t.Fatal("error")
		}
	}); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(taptest.Captured(f, "dhclient6-solicit"))
	f.Add(taptest.Captured(f, "dhclient6-inforeq"))
	f.Add(request(typeRequest, allServer, opt(optClientID, clientID), ourID(), iana(assigned, configtest.OurLL)))
	f.Add(request(typeConfirm, allServer, opt(optClientID, clientID), iana(configtest.OurLL)))
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, b []byte) {
		out := taptest.NewCounter(1)
		_ = handle(cfg, &guest.State{}, out, b)
		if out.Count() > 1 {
			t.Fatal("more than one reply")
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	f.Add(bytes.Join([][]byte{opt(optClientID, clientID), ourID(), iana(assigned), opt(optFQDN, []byte{1})}, nil))
	f.Add([]byte{0, 3, 0, 12, 1})
	f.Add([]byte{0, 1})
	addr := assigned.As16()
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOptions(b)
		if err != nil {
			return
		}
		if o.IANA != nil && len(o.IANA) < 12 {
			t.Fatal("short IA_NA accepted")
		}
		_ = otherAddress(b, &addr)
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
