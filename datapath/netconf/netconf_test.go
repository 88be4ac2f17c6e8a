// Unit tests of what netconf copies and how it rewrites it; no privileges
// needed. The namespace tests are in namespace_test.go.

package netconf

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
)

// mustNet returns the address and prefix of CIDR s as a *net.IPNet that
// keeps the address (not the network).
func mustNet(t *testing.T, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}

// TestHostAddr checks which template addresses are copied and what of them
// is kept.
func TestHostAddr(t *testing.T) {
	v6 := netlink.Addr{
		IPNet:       mustNet(t, "2001:db8::2/64"),
		Label:       "eth0",
		Scope:       unix.RT_SCOPE_UNIVERSE,
		Flags:       unix.IFA_F_PERMANENT | unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_SECONDARY,
		ValidLft:    3000,
		PreferedLft: 2000,
	}
	got, ok := hostAddr(v6, netlink.FAMILY_V6)
	if !ok {
		t.Fatal("global IPv6 address not copied")
	}
	if got.Label != "" || got.ValidLft != 0 || got.PreferedLft != 0 {
		t.Errorf("label or lifetimes kept: %+v", got)
	}
	if want := unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_NODAD; got.Flags != want {
		t.Errorf("flags %#x, want %#x (state flags dropped, NODAD added)", got.Flags, want)
	}
	if !got.IPNet.IP.Equal(v6.IPNet.IP) {
		t.Errorf("address %v, want %v", got.IPNet, v6.IPNet)
	}

	v4 := netlink.Addr{IPNet: mustNet(t, "192.0.2.2/24"), Broadcast: net.ParseIP("192.0.2.255"), Scope: unix.RT_SCOPE_UNIVERSE}
	if got, ok := hostAddr(v4, netlink.FAMILY_V4); !ok || got.Flags&unix.IFA_F_NODAD != 0 || !got.Broadcast.Equal(v4.Broadcast) {
		t.Errorf("IPv4 copy %+v, %v: want kept with its broadcast, no NODAD", got, ok)
	}

	for name, a := range map[string]netlink.Addr{
		"link scope": {IPNet: mustNet(t, "fe80::1/64"), Scope: unix.RT_SCOPE_LINK},
		"deprecated": {IPNet: mustNet(t, "2001:db8::3/64"), Flags: unix.IFA_F_DEPRECATED},
		"no address": {},
	} {
		if _, ok := hostAddr(a, netlink.FAMILY_V6); ok {
			t.Errorf("%s address copied", name)
		}
	}
}

// TestCopyableRoute checks that only main-table routes going out of the
// template alone are copied.
func TestCopyableRoute(t *testing.T) {
	const tmpl = 7
	for _, c := range []struct {
		name string
		r    netlink.Route
		want bool
	}{
		{"via template", netlink.Route{LinkIndex: tmpl, Table: unix.RT_TABLE_MAIN}, true},
		{"other interface", netlink.Route{LinkIndex: 3, Table: unix.RT_TABLE_MAIN}, false},
		{"other table", netlink.Route{LinkIndex: tmpl, Table: 100}, false},
		{"multipath on template", netlink.Route{Table: unix.RT_TABLE_MAIN,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: tmpl}, {LinkIndex: tmpl}}}, true},
		{"multipath mixed", netlink.Route{Table: unix.RT_TABLE_MAIN,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: tmpl}, {LinkIndex: 3}}}, false},
	} {
		if got := copyableRoute(&c.r, tmpl); got != c.want {
			t.Errorf("%s: copyable = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNSRoute checks the rewriting of a copied route: interface, prefsrc,
// flags, without touching the template's route.
func TestNSRoute(t *testing.T) {
	r := netlink.Route{
		LinkIndex: 7, Dst: mustNet(t, "203.0.113.0/24"), Gw: net.ParseIP("192.0.2.1"),
		Src: net.ParseIP("192.0.2.2"), Flags: unix.RTNH_F_ONLINK | unix.RTNH_F_LINKDOWN,
		Table: unix.RT_TABLE_MAIN, Priority: 100, Protocol: unix.RTPROT_DHCP,
	}
	got := nsRoute(r, 2)
	if got.LinkIndex != 2 || got.Src != nil || got.Flags != 0 || got.Priority != 100 || got.Protocol != unix.RTPROT_DHCP || !got.Gw.Equal(r.Gw) {
		t.Errorf("rewritten %+v", got)
	}

	mp := netlink.Route{Dst: mustNet(t, "198.51.100.0/24"), Table: unix.RT_TABLE_MAIN,
		MultiPath: []*netlink.NexthopInfo{{LinkIndex: 7, Gw: net.ParseIP("192.0.2.3"), Flags: unix.RTNH_F_DEAD, Hops: 2}}}
	got = nsRoute(mp, 2)
	if got.LinkIndex != 0 || len(got.MultiPath) != 1 || got.MultiPath[0].LinkIndex != 2 || got.MultiPath[0].Flags != 0 || got.MultiPath[0].Hops != 2 {
		t.Errorf("multipath rewritten %+v, nexthop %+v", got, got.MultiPath[0])
	}
	if mp.MultiPath[0].LinkIndex != 7 || mp.MultiPath[0].Flags != unix.RTNH_F_DEAD {
		t.Errorf("template route modified: %+v", mp.MultiPath[0])
	}
}

// TestSingle checks the decisions between copying and the single address
// and route, and what the single ones are.
func TestSingle(t *testing.T) {
	base := config.IP{Enabled: true, Template: "eth0", TemplateIx: 2}
	for _, c := range []struct {
		name          string
		mod           func(*config.IP)
		addrs, routes bool
	}{
		{"default", func(*config.IP) {}, true, true},
		{"-a", func(ip *config.IP) { ip.AddrFixed, ip.NoCopyAddrs = true, true }, false, true},
		{"-g", func(ip *config.IP) { ip.NoCopyRoutes = true }, true, false},
		{"local", func(ip *config.IP) { ip.LocalMode, ip.TemplateIx = true, 0 }, false, false},
	} {
		ip := base
		c.mod(&ip)
		if copyAddrs(&ip) != c.addrs || copyRoutes(&ip) != c.routes {
			t.Errorf("%s: copy addresses %v, routes %v; want %v, %v", c.name, copyAddrs(&ip), copyRoutes(&ip), c.addrs, c.routes)
		}
	}

	v4 := config.IP{Addr: netip.MustParseAddr("10.0.2.15"), PrefixLen: 24, Gateway: netip.MustParseAddr("10.0.2.2")}
	if a, ok := singleAddr(&v4, netlink.FAMILY_V4); !ok || a.IPNet.String() != "10.0.2.15/24" || a.Flags != 0 {
		t.Errorf("IPv4 single address %v %v", a.IPNet, ok)
	}
	v6 := config.IP{Addr: netip.MustParseAddr("2001:db8::15"), PrefixLen: 128, Gateway: netip.MustParseAddr("fe80::1")}
	if a, ok := singleAddr(&v6, netlink.FAMILY_V6); !ok || a.IPNet.String() != "2001:db8::15/64" || a.Flags != unix.IFA_F_NODAD {
		t.Errorf("IPv6 single address %v %v: want /64 whatever -a said, NODAD", a.IPNet, ok)
	}
	if _, ok := singleAddr(&config.IP{}, netlink.FAMILY_V6); ok {
		t.Error("single address without an address (IPv6 local mode)")
	}
	r, ok := defaultRoute(&v6, netlink.FAMILY_V6, 3)
	if !ok || r.Dst.String() != "::/0" || r.Gw.String() != "fe80::1" || r.LinkIndex != 3 || r.Protocol != unix.RTPROT_BOOT {
		t.Errorf("IPv6 default route %+v", r)
	}
	if _, ok := defaultRoute(&config.IP{}, netlink.FAMILY_V4, 3); ok {
		t.Error("default route without a gateway")
	}
}
