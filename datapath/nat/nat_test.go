package nat

import (
	"net/netip"
	"testing"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
)

func testConfig() *config.Config {
	a := netip.MustParseAddr
	cfg := &config.Config{}
	cfg.V4 = config.IP{Enabled: true, Addr: a("198.18.0.2"), Gateway: a("198.18.0.1"),
		MapHostLoopback: a("198.18.0.1"), MapGuestAddr: a("198.18.0.9"),
		DNSMatch: a("169.254.1.1"), DNSHost: a("127.0.0.53"), Template: "veth0"}
	cfg.V6 = config.IP{Enabled: true, Addr: a("2001:db8::2"), Gateway: a("fe80::1"),
		OurLL: a("fe80::1"), MapHostLoopback: a("fe80::1"), Template: "veth0"}
	return cfg
}

// TestFromGuest checks the guest-to-host table of addressing.md §2, row by
// row, with the first match winning.
func TestFromGuest(t *testing.T) {
	cfg := testConfig()
	a := netip.MustParseAddr
	for _, c := range []struct {
		proto uint8
		dst   string
		port  uint16
		want  string // "" = refused
	}{
		{17, "169.254.1.1", 53, "127.0.0.53"},  // DNS match, UDP
		{6, "169.254.1.1", 853, "127.0.0.53"},  // DNS over TLS
		{17, "169.254.1.1", 54, "169.254.1.1"}, // not DNS: unchanged
		{6, "198.18.0.1", 80, "127.0.0.1"},     // gateway → host loopback
		{1, "198.18.0.1", 0, "127.0.0.1"},      // ping too
		{6, "198.18.0.9", 22, "198.18.0.2"},    // map-guest-addr → the guest's address
		{6, "fe80::1", 22, "::1"},              // IPv6 map-host-loopback
		{6, "fe80::7", 22, "fe80::7%veth0"},    // link-local gets the template's scope
		{6, "203.0.113.5", 443, "203.0.113.5"}, // anything else unchanged
		{6, "127.0.0.1", 80, ""},               // loopback from the guest: never
		{6, "0.0.0.0", 80, ""},
	} {
		got, ok := FromGuest(cfg, c.proto, a(c.dst), c.port)
		if c.want == "" {
			if ok {
				t.Errorf("%s:%d: got %v, want refused", c.dst, c.port, got)
			}
			continue
		}
		if !ok || got != a(c.want) {
			t.Errorf("%s:%d proto %d: got %v,%v want %s", c.dst, c.port, c.proto, got, ok, c.want)
		}
	}
}

// TestToGuest checks the host-to-guest source table of addressing.md §2.
func TestToGuest(t *testing.T) {
	cfg := testConfig()
	a := netip.MustParseAddr
	g := &guest.State{SeenV4: a("198.18.0.2")}
	for _, c := range []struct{ peer, want string }{
		{"127.0.0.1", "198.18.0.1"},    // loopback → map-host-loopback
		{"::1", "fe80::1"},             // IPv6 loopback
		{"198.18.0.2", "198.18.0.9"},   // the guest's own address → map-guest-addr
		{"127.0.0.5", "198.18.0.1"},    // other 127/8 → gateway
		{"203.0.113.5", "203.0.113.5"}, // remote peers unchanged
		{"::ffff:203.0.113.5", "203.0.113.5"},
	} {
		got, ok := ToGuest(cfg, g, a(c.peer))
		if !ok || got != a(c.want) {
			t.Errorf("%s: got %v,%v want %s", c.peer, got, ok, c.want)
		}
	}
	cfg.V4.Gateway = netip.Addr{}
	cfg.V4.MapHostLoopback = netip.Addr{}
	if got, ok := ToGuest(cfg, g, a("127.0.0.1")); ok {
		t.Errorf("no gateway: got %v, want none", got)
	}
}

func TestGuestDst(t *testing.T) {
	cfg := testConfig()
	a := netip.MustParseAddr
	g := &guest.State{}
	if got := GuestDst(cfg, g, a("203.0.113.5")); got != a("198.18.0.2") {
		t.Errorf("v4 default: %v", got)
	}
	g.SeenV4 = a("198.18.0.77")
	g.SeenV6LL = a("fe80::99")
	if got := GuestDst(cfg, g, a("203.0.113.5")); got != g.SeenV4 {
		t.Errorf("v4 seen: %v", got)
	}
	if got := GuestDst(cfg, g, a("fe80::1")); got != g.SeenV6LL {
		t.Errorf("v6 link-local: %v", got)
	}
	if got := GuestDst(cfg, g, a("2001:db8::5")); got != cfg.V6.Addr {
		t.Errorf("v6 global: %v", got)
	}
}
