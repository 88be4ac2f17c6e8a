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
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
)

// fakeOut records committed frames (tap.Out for tests).
type fakeOut struct {
	buf    [2048]byte
	frames [][]byte
	keep   bool // copy committed frames into frames
	n      int  // frames committed
}

// Frame returns the one buffer.
func (f *fakeOut) Frame() []byte { return f.buf[:] }

// Commit counts the frame and keeps a copy if asked to.
func (f *fakeOut) Commit(n int) {
	f.n++
	if f.keep {
		f.frames = append(f.frames, append([]byte(nil), f.buf[:n]...))
	}
}

// Reserve is not used by the services.
func (f *fakeOut) Reserve(bufs [][]byte) int { return 0 }

// Flush does nothing.
func (f *fakeOut) Flush() {}

var guestMAC = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}

func testConfig() *config.Config {
	return &config.Config{
		OurMAC: config.DefaultMAC,
		V4: config.IP{Enabled: true, Addr: netip.MustParseAddr("192.0.2.10"), PrefixLen: 24,
			Gateway: netip.MustParseAddr("192.0.2.1")},
	}
}

// request builds an ARP request frame as the kernel sends it: broadcast,
// target hardware address zero, padded to 60 bytes.
func request(sip, tip string) []byte {
	b := make([]byte, 60)
	n := header.EncodeEthernet(b, guest.BroadcastMAC, guestMAC, header.EtherTypeARP)
	header.EncodeARP(b[n:], header.ARPRequest, guestMAC, netip.MustParseAddr(sip).As4(),
		[6]byte{}, netip.MustParseAddr(tip).As4())
	return b
}

func TestReply(t *testing.T) {
	cfg := testConfig()
	for _, c := range []struct{ sip, tip string }{
		{"192.0.2.10", "192.0.2.1"}, // the gateway
		{"192.0.2.10", "203.0.113.7"},
		{"0.0.0.0", "192.0.2.99"}, // RFC 5227 probe for another address
	} {
		out := &fakeOut{keep: true}
		if err := Handle(cfg, &guest.State{}, out, request(c.sip, c.tip)); err != nil {
			t.Fatal(err)
		}
		if len(out.frames) != 1 {
			t.Fatalf("%v: %d frames", c, len(out.frames))
		}
		f := out.frames[0]
		want := []byte{
			0x52, 0x54, 0, 0x12, 0x34, 0x56, // to the requester
			0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, // from us
			0x08, 0x06,
			0, 1, 8, 0, 6, 4, 0, 2, // Ethernet/IPv4, reply
			0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}
		want = append(want, netip.MustParseAddr(c.tip).AsSlice()...)
		want = append(want, guestMAC[:]...)
		want = append(want, netip.MustParseAddr(c.sip).AsSlice()...)
		if !bytes.Equal(f, want) {
			t.Errorf("%v:\n got % x\nwant % x", c, f, want)
		}
	}
}

func TestNoReply(t *testing.T) {
	cfg := testConfig()
	reply := request("192.0.2.10", "192.0.2.1")
	reply[header.EthernetLen+7] = 2
	for name, f := range map[string][]byte{
		"own address":      request("192.0.2.20", "192.0.2.10"),
		"probe for own":    request("0.0.0.0", "192.0.2.10"),
		"announcement":     request("192.0.2.10", "192.0.2.10"),
		"reply from guest": reply,
	} {
		out := &fakeOut{}
		if err := Handle(cfg, &guest.State{}, out, f); err != nil || out.n != 0 {
			t.Errorf("%s: err %v, %d frames", name, err, out.n)
		}
	}
}

func TestDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.V4.Enabled = false
	out := &fakeOut{}
	if err := Handle(cfg, &guest.State{}, out, request("192.0.2.10", "192.0.2.1")); !errors.Is(err, ErrDisabled) || out.n != 0 {
		t.Fatalf("IPv4 off: %v, %d frames", err, out.n)
	}
}

func TestMalformed(t *testing.T) {
	cfg := testConfig()
	good := request("192.0.2.10", "192.0.2.1")
	ipv6arp := append([]byte{}, good...)
	ipv6arp[header.EthernetLen+3] = 0xdd
	for name, f := range map[string][]byte{
		"short ethernet": good[:10],
		"short arp":      good[:header.EthernetLen+27],
		"ptype":          ipv6arp,
	} {
		out := &fakeOut{}
		if err := Handle(cfg, &guest.State{}, out, f); err == nil || out.n != 0 {
			t.Errorf("%s: err %v, %d frames", name, err, out.n)
		}
	}
}

func TestAnnounce(t *testing.T) {
	out := &fakeOut{keep: true}
	if err := Announce(testConfig(), out); err != nil || len(out.frames) != 1 {
		t.Fatalf("%v %d", err, len(out.frames))
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x08, 0x06,
		0, 1, 8, 0, 6, 4, 0, 1,
		0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 192, 0, 2, 1,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 192, 0, 2, 10}
	if !bytes.Equal(out.frames[0], want) {
		t.Fatalf("\n got % x\nwant % x", out.frames[0], want)
	}
	cfg := testConfig()
	cfg.V4.Enabled = false
	out = &fakeOut{}
	if Announce(cfg, out); out.n != 0 {
		t.Fatal("announced with IPv4 off")
	}
}

func TestNoAllocs(t *testing.T) {
	cfg, g, out := testConfig(), &guest.State{}, &fakeOut{}
	f := request("192.0.2.10", "192.0.2.1")
	if a := testing.AllocsPerRun(100, func() {
		if err := Handle(cfg, g, out, f); err != nil {
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
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, b []byte) {
		out := &fakeOut{}
		_ = Handle(cfg, &guest.State{}, out, b)
		if out.n > 1 {
			t.Fatal("more than one reply")
		}
	})
}
