// Tests of the ARP responder: requests as the Linux kernel and RFC 5227
// probers send them, every field of the reply, the cases that get no
// reply, malformed frames, allocation, and a fuzz target.
package arp

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
)

// request builds an ARP request frame as the kernel sends it: broadcast,
// target hardware address zero, padded to 60 bytes.
func request(sip, tip string) []byte {
	b := make([]byte, 60)
	n := header.EncodeEthernet(b, guest.BroadcastMAC, configtest.GuestMAC, header.EtherTypeARP)
	header.EncodeARP(b[n:], header.ARPRequest, configtest.GuestMAC, netip.MustParseAddr(sip).As4(),
		[6]byte{}, netip.MustParseAddr(tip).As4())
	return b
}

func TestReply(t *testing.T) {
	cfg := configtest.DualStack()
	for _, c := range []struct{ sip, tip string }{
		{"192.0.2.10", "192.0.2.1"}, // the gateway
		{"192.0.2.10", "203.0.113.7"},
		{"0.0.0.0", "192.0.2.99"}, // RFC 5227 probe for another address
	} {
		out := taptest.New(1)
		if err := handle(cfg, &guest.State{}, out, request(c.sip, c.tip)); err != nil {
			t.Fatal(err)
		}
		if len(out.Frames()) != 1 {
			t.Fatalf("%v: %d frames", c, len(out.Frames()))
		}
		f := out.Frames()[0]
		want := []byte{
			0x52, 0x54, 0, 0x12, 0x34, 0x56, // to the requester
			0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, // from us
			0x08, 0x06,
			0, 1, 8, 0, 6, 4, 0, 2, // Ethernet/IPv4, reply
			0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}
		want = append(want, netip.MustParseAddr(c.tip).AsSlice()...)
		want = append(want, configtest.GuestMAC[:]...)
		want = append(want, netip.MustParseAddr(c.sip).AsSlice()...)
		if !bytes.Equal(f, want) {
			t.Errorf("%v:\n got % x\nwant % x", c, f, want)
		}
	}
}

func TestNoReply(t *testing.T) {
	cfg := configtest.DualStack()
	reply := request("192.0.2.10", "192.0.2.1")
	reply[header.EthernetLen+7] = 2
	for name, f := range map[string][]byte{
		"own address":      request("192.0.2.20", "192.0.2.10"),
		"probe for own":    request("0.0.0.0", "192.0.2.10"),
		"announcement":     request("192.0.2.10", "192.0.2.10"),
		"reply from guest": reply,
	} {
		out := taptest.NewCounter(1)
		if err := handle(cfg, &guest.State{}, out, f); err != nil || out.Count() != 0 {
			t.Errorf("%s: err %v, %d frames", name, err, out.Count())
		}
	}
}

func TestDisabled(t *testing.T) {
	cfg := configtest.DualStack()
	cfg.V4.Enabled = false
	out := taptest.NewCounter(1)
	if err := handle(cfg, &guest.State{}, out, request("192.0.2.10", "192.0.2.1")); !errors.Is(err, ErrDisabled) || out.Count() != 0 {
		t.Fatalf("IPv4 off: %v, %d frames", err, out.Count())
	}
}

func TestMalformed(t *testing.T) {
	cfg := configtest.DualStack()
	good := request("192.0.2.10", "192.0.2.1")
	ipv6arp := append([]byte{}, good...)
	ipv6arp[header.EthernetLen+3] = 0xdd
	for name, f := range map[string][]byte{
		"short ethernet": good[:10],
		"short arp":      good[:header.EthernetLen+27],
		"ptype":          ipv6arp,
	} {
		out := taptest.NewCounter(1)
		if err := handle(cfg, &guest.State{}, out, f); err == nil || out.Count() != 0 {
			t.Errorf("%s: err %v, %d frames", name, err, out.Count())
		}
	}
}

func TestAnnounce(t *testing.T) {
	out := taptest.New(1)
	if err := Announce(configtest.DualStack(), out); err != nil || len(out.Frames()) != 1 {
		t.Fatalf("%v %d", err, len(out.Frames()))
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x08, 0x06,
		0, 1, 8, 0, 6, 4, 0, 1,
		0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 192, 0, 2, 1,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 192, 0, 2, 10}
	if !bytes.Equal(out.Frames()[0], want) {
		t.Fatalf("\n got % x\nwant % x", out.Frames()[0], want)
	}
	cfg := configtest.DualStack()
	cfg.V4.Enabled = false
	out = taptest.NewCounter(1)
	if Announce(cfg, out); out.Count() != 0 {
		t.Fatal("announced with IPv4 off")
	}
}

func TestNoAllocs(t *testing.T) {
	cfg, g, out := configtest.DualStack(), &guest.State{}, taptest.NewCounter(1)
	f := request("192.0.2.10", "192.0.2.1")
	if a := testing.AllocsPerRun(100, func() {
		if err := handle(cfg, g, out, f); err != nil {
			t.Fatal(err)
		}
		_ = Announce(cfg, out)
	}); a != 0 {
		t.Fatalf("%v allocations per request", a)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(request("192.0.2.10", "192.0.2.1"))
	f.Add(request("0.0.0.0", "192.0.2.10"))
	f.Add(request("192.0.2.10", "192.0.2.1")[:30])
	cfg := configtest.DualStack()
	f.Fuzz(func(t *testing.T, b []byte) {
		out := taptest.NewCounter(1)
		_ = handle(cfg, &guest.State{}, out, b)
		if out.Count() > 1 {
			t.Fatal("more than one reply")
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
