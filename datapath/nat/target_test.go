package nat

import (
	"net/netip"
	"testing"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
)

// TestTargetFromTap: a guest flow goes to a host socket at FromGuest's
// destination, from -o and bound to --outbound-if, except towards
// loopback, with the template's scope for link-local destinations.
func TestTargetFromTap(t *testing.T) {
	cfg := testConfig()
	a := netip.MustParseAddr
	cfg.V4.Outbound, cfg.V4.OutboundIf = a("203.0.113.7"), "eth9"
	cfg.V6.TemplateIx = 4
	for _, c := range []struct {
		proto          uint8
		dst            string
		port           uint16
		want, src, dev string // want "": refused
		scope          uint32
	}{
		{6, "203.0.113.5", 443, "203.0.113.5", "203.0.113.7", "eth9", 0},
		{6, "198.18.0.1", 80, "127.0.0.1", "0.0.0.0", "", 0}, // host loopback: no -o, no device
		{17, "169.254.1.1", 53, "127.0.0.53", "0.0.0.0", "", 0},
		{6, "fe80::7", 22, "fe80::7", "::", "", 4},
		{58, "2001:db8::99", 0, "2001:db8::99", "::", "", 0},
		{6, "127.0.0.1", 80, "", "", "", 0},
	} {
		ini := Side{Pif: PifTap, Src: a("198.18.0.2"), Dst: a(c.dst), SrcPort: 40000, DstPort: c.port}
		if a(c.dst).Is6() {
			ini.Src = a("2001:db8::2")
		}
		got := Target(cfg, &guest.State{}, c.proto, &ini, nil)
		if c.want == "" {
			if got.Pif != PifNone {
				t.Errorf("%s: %+v, want refused", c.dst, got)
			}
			continue
		}
		if got.Pif != PifHost || got.Dst != a(c.want) || got.Src != a(c.src) || got.Dev != c.dev ||
			got.Scope != c.scope || got.SrcPort != 40000 || got.DstPort != c.port {
			t.Errorf("%s: %+v, want host %s from %s dev %q scope %d", c.dst, got, c.want, c.src, c.dev, c.scope)
		}
	}
}

// TestTargetFromHost: an inbound flow goes to the guest, from ToGuest's
// address of the peer, to the rule's fixed address, the group it was sent
// to, or the guest's address, at the rule's port.
func TestTargetFromHost(t *testing.T) {
	cfg := testConfig()
	a := netip.MustParseAddr
	g := &guest.State{SeenV4: a("198.18.0.22")}
	for _, c := range []struct {
		name     string
		peer     string
		pport    uint16
		local    string // "" unknown (TCP)
		taddr    string
		src, dst string // "" refused
	}{
		{"loopback peer", "127.0.0.1", 5000, "", "", "198.18.0.1", "198.18.0.22"},
		{"remote peer", "203.0.113.5", 5000, "198.18.0.50", "", "203.0.113.5", "198.18.0.22"},
		{"fixed target", "203.0.113.5", 5000, "", "198.18.0.77", "203.0.113.5", "198.18.0.77"},
		{"group", "203.0.113.5", 5000, "239.1.2.3", "", "203.0.113.5", "239.1.2.3"},
		{"mapped local", "203.0.113.5", 5000, "::ffff:198.18.0.50", "", "203.0.113.5", "198.18.0.22"},
		{"family mismatch", "203.0.113.5", 5000, "2001:db8::1", "", "", ""},
		{"port 0", "203.0.113.5", 0, "", "", "", ""},
		{"multicast peer", "224.0.0.1", 5000, "", "", "", ""},
		{"v6 loopback peer", "::1", 5000, "", "", "fe80::1", "2001:db8::2"},
	} {
		ini := Side{Pif: PifHost, Src: a(c.peer), SrcPort: c.pport, DstPort: 8080}
		if c.local != "" {
			ini.Dst = a(c.local)
		}
		r := &Rule{To: 80}
		if c.taddr != "" {
			r.TAddr = a(c.taddr)
		}
		got := Target(cfg, g, 17, &ini, r)
		if c.src == "" {
			if got.Pif != PifNone {
				t.Errorf("%s: %+v, want refused", c.name, got)
			}
			continue
		}
		if got.Pif != PifTap || got.Src != a(c.src) || got.Dst != a(c.dst) || got.SrcPort != c.pport || got.DstPort != 80 {
			t.Errorf("%s: %+v, want tap %s -> %s:80", c.name, got, c.src, c.dst)
		}
	}
	// Without a rule nothing from the host is accepted.
	ini := Side{Pif: PifHost, Src: a("203.0.113.5"), SrcPort: 5000, DstPort: 8080}
	if got := Target(cfg, g, 6, &ini, nil); got.Pif != PifNone {
		t.Errorf("no rule: %+v", got)
	}
}

// TestTargetSplice checks the pasta loopback rows of addressing.md §2:
// which inbound flows take the splice path, and their addresses.
func TestTargetSplice(t *testing.T) {
	a := netip.MustParseAddr
	cfg := testConfig()
	cfg.Mode = config.ModePasta
	g := &guest.State{SeenV4: a("198.18.0.2")}
	rule := &Rule{To: 8080}
	for _, c := range []struct {
		name      string
		tweak     func(*config.Config)
		pif       Pif
		proto     uint8
		src, dst  string
		rule      *Rule
		want      Pif
		wantDst   string
		wantSrc   string
		wantSPort uint16
	}{
		{name: "host loopback to -t: the namespace's address", pif: PifHost, proto: 6,
			src: "127.0.0.1", dst: "127.0.0.1", rule: rule, want: PifSplice, wantDst: "198.18.0.2", wantSrc: "0.0.0.0"},
		{name: "::1 to -t: the namespace's IPv6 address", pif: PifHost, proto: 6,
			src: "::1", dst: "::1", rule: rule, want: PifSplice, wantDst: "2001:db8::2", wantSrc: "::"},
		{name: "--host-lo-to-ns-lo: the loopback address used", pif: PifHost, proto: 6,
			tweak: func(c *config.Config) { c.HostLoToNSLo = true },
			src:   "127.0.0.1", dst: "127.0.0.9", rule: rule, want: PifSplice, wantDst: "127.0.0.9", wantSrc: "0.0.0.0"},
		{name: "--no-splice: the tap", pif: PifHost, proto: 6,
			tweak: func(c *config.Config) { c.NoSplice = true },
			src:   "127.0.0.1", dst: "127.0.0.1", rule: rule, want: PifTap, wantDst: "198.18.0.2", wantSrc: "198.18.0.1"},
		{name: "a target address: the tap", pif: PifHost, proto: 6,
			src: "127.0.0.1", dst: "127.0.0.1", rule: &Rule{To: 80, TAddr: a("198.18.0.7")}, want: PifTap, wantDst: "198.18.0.7", wantSrc: "198.18.0.1"},
		{name: "non-loopback peer: the tap", pif: PifHost, proto: 6,
			src: "203.0.113.5", dst: "198.18.0.2", rule: rule, want: PifTap, wantDst: "198.18.0.2", wantSrc: "203.0.113.5"},
		{name: "--splice-only: non-loopback peers refused", pif: PifHost, proto: 6,
			tweak: func(c *config.Config) { c.SpliceOnly = true },
			src:   "203.0.113.5", dst: "198.18.0.2", rule: rule, want: PifNone},
		{name: "-T: namespace loopback to host loopback", pif: PifSplice, proto: 6,
			src: "127.0.0.1", dst: "127.0.0.1", rule: rule, want: PifHost, wantDst: "127.0.0.1", wantSrc: "0.0.0.0"},
		{name: "-U: bound to the client's address and port", pif: PifSplice, proto: 17,
			src: "127.0.0.1", dst: "127.0.0.1", rule: rule, want: PifHost, wantDst: "127.0.0.1", wantSrc: "127.0.0.1", wantSPort: 40000},
		{name: "-T from the namespace's own address: refused", pif: PifSplice, proto: 6,
			src: "198.18.0.2", dst: "198.18.0.2", rule: rule, want: PifNone},
		{name: "passt never splices", pif: PifHost, proto: 6,
			tweak: func(c *config.Config) { c.Mode = config.ModePasst },
			src:   "127.0.0.1", dst: "127.0.0.1", rule: rule, want: PifTap, wantDst: "198.18.0.2", wantSrc: "198.18.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := *cfg
			if c.tweak != nil {
				c.tweak(&cfg)
			}
			ini := Side{Pif: c.pif, Src: a(c.src), Dst: a(c.dst), SrcPort: 40000, DstPort: 80}
			got := Target(&cfg, g, c.proto, &ini, c.rule)
			if got.Pif != c.want {
				t.Fatalf("Pif %v, want %v (%+v)", got.Pif, c.want, got)
			}
			if c.want == PifNone {
				return
			}
			if got.Dst != a(c.wantDst) || got.Src != a(c.wantSrc) || (c.want != PifTap && got.SrcPort != c.wantSPort) {
				t.Errorf("got %v:%d -> %v:%d, want %s:%d -> %s", got.Src, got.SrcPort, got.Dst, got.DstPort, c.wantSrc, c.wantSPort, c.wantDst)
			}
		})
	}
}
