// Namespace tests of netconf: ReadHost on a thread in a host namespace made
// by the harness (test/nstest), Apply on a thread in a second namespace
// holding a tap, results checked with ip(8). Root only.

package netconf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/test/nstest"
)

// openTap creates tap interface name in namespace ns, attached to a
// descriptor (so it has carrier, as pasta's tap has: IPv6 configures no
// link-local address on a link without one), and closes it at cleanup,
// which removes the interface.
func openTap(t *testing.T, ns *nstest.Netns, name string) {
	t.Helper()
	fd := -1
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	})
	if fd >= 0 {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil {
		t.Fatalf("tap %s in %s: %v", name, ns.Name, err)
	}
}

// hostConfig returns the configuration host discovery would make of
// nstest's host: both families, template Uplink (index read in h), MTU
// 65520, --config-net.
func hostConfig(t *testing.T, h *nstest.Host) *config.Config {
	t.Helper()
	ix := 0
	if err := h.Do(func() error {
		ifi, err := net.InterfaceByName(nstest.Uplink)
		if err == nil {
			ix = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return &config.Config{
		Mode:      config.ModePasta,
		MTU:       config.DefaultMTU,
		ConfigNet: true,
		V4: config.IP{Enabled: true, Addr: nstest.HostAddr4.Addr(), PrefixLen: nstest.HostAddr4.Bits(),
			Gateway: nstest.HostGW4, Template: nstest.Uplink, TemplateIx: ix},
		V6: config.IP{Enabled: true, Addr: nstest.HostAddr6.Addr(), PrefixLen: 64,
			Gateway: nstest.HostGW6, Template: nstest.Uplink, TemplateIx: ix},
	}
}

// nsState is the namespace as ip(8) shows it after Apply.
type nsState struct {
	lo, tap         *nstest.Link
	routes4, route6 []nstest.Route
}

// configure runs ReadHost in h and Apply in a new namespace with a tap
// "tap0", and returns Apply's result and what ip(8) then shows there.
func configure(t *testing.T, h *nstest.Host, cfg *config.Config) (*Result, nsState) {
	t.Helper()
	var hs *HostState
	if err := h.Do(func() error {
		var err error
		hs, err = ReadHost(cfg)
		return err
	}); err != nil {
		t.Fatalf("ReadHost: %v", err)
	}

	inner := nstest.NewNetns(t, "inner")
	openTap(t, inner, "tap0")
	var res *Result
	if err := inner.Do(func() error {
		var err error
		res, err = Apply(cfg, hs, "tap0")
		return err
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	// Clearing NOARP restarts address configuration, and the kernel
	// completes it (for NODAD addresses: at once, without probes) in a
	// work item: the link-local address shows "tentative" for a few
	// milliseconds after Apply returns.
	if !nstest.Poll(2*time.Second, func() bool {
		out, err := inner.Cmd(ctx, "ip", "addr", "show").Output()
		return err == nil && !strings.Contains(string(out), "tentative")
	}) {
		t.Errorf("an address stays tentative: DAD was not dodged")
	}
	links, err := nstest.Links(ctx, inner.Cmd)
	if err != nil {
		t.Fatal(err)
	}
	var st nsState
	st.lo, st.tap = nstest.LinkByName(links, "lo"), nstest.LinkByName(links, "tap0")
	if st.lo == nil || st.tap == nil {
		t.Fatalf("lo or tap0 missing: %+v", links)
	}
	if st.routes4, err = nstest.Routes(ctx, inner.Cmd, "-4"); err != nil {
		t.Fatal(err)
	}
	if st.route6, err = nstest.Routes(ctx, inner.Cmd, "-6"); err != nil {
		t.Fatal(err)
	}
	t.Logf("ip addr in the namespace:\n%s", inner.Output(t, "ip", "addr", "show"))
	t.Logf("ip route in the namespace:\n%s%s", inner.Output(t, "ip", "route", "show"), inner.Output(t, "ip", "-6", "route", "show"))
	return res, st
}

// findRoute returns the route to dst ("default" or a prefix) from routes,
// or nil.
func findRoute(routes []nstest.Route, dst string) *nstest.Route {
	for i := range routes {
		if routes[i].Dst == dst {
			return &routes[i]
		}
	}
	return nil
}

// checkLink checks what Apply always does (lo up, txqueuelen, MAC) and, if
// up, the tap's state with --config-net (up, MTU, NOARP cleared).
func checkLink(t *testing.T, res *Result, st nsState, up bool, mtu int) {
	t.Helper()
	if !st.lo.Has("UP") {
		t.Errorf("lo not up: %v", st.lo.Flags)
	}
	if st.tap.TxQLen != TxQueueLen {
		t.Errorf("tap txqueuelen %d, want %d", st.tap.TxQLen, TxQueueLen)
	}
	if mac := net.HardwareAddr(res.MAC[:]).String(); mac != st.tap.MAC {
		t.Errorf("Result.MAC %s, tap has %s", mac, st.tap.MAC)
	}
	if st.tap.Has("UP") != up {
		t.Errorf("tap flags %v, want up = %v", st.tap.Flags, up)
	}
	if !up {
		return
	}
	if st.tap.Has("NOARP") {
		t.Errorf("tap left with NOARP: %v", st.tap.Flags)
	}
	if st.tap.MTU != mtu {
		t.Errorf("tap MTU %d, want %d", st.tap.MTU, mtu)
	}
	ll := ""
	for _, a := range st.tap.Addrs {
		if a.Family == "inet6" && a.Scope == "link" {
			ll = a.Local
			if !a.NoDAD || a.Tentative {
				t.Errorf("link-local %s: nodad %v, tentative %v; want nodad, usable", a.Local, a.NoDAD, a.Tentative)
			}
		}
	}
	if ll == "" || res.LinkLocal.String() != ll {
		t.Errorf("Result.LinkLocal %v, tap's link-local %q", res.LinkLocal, ll)
	}
}

// checkAddrs checks that the tap's addresses wider than link scope are
// exactly want ("addr/len"), each permanent, IPv6 ones nodad.
func checkAddrs(t *testing.T, tap *nstest.Link, want ...string) {
	t.Helper()
	var got []string
	for _, a := range tap.Addrs {
		if a.Scope == "link" {
			continue
		}
		got = append(got, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		if a.ValidLft != nstest.Forever || a.PrefLft != nstest.Forever {
			t.Errorf("%s: lifetimes %d/%d, want forever", a.Local, a.ValidLft, a.PrefLft)
		}
		if a.Family == "inet6" && !a.NoDAD {
			t.Errorf("%s: not nodad", a.Local)
		}
		if a.Label != "" && a.Label != "tap0" {
			t.Errorf("%s: label %q copied", a.Local, a.Label)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("tap addresses %v, want %v", got, want)
	}
}

// TestNstestApply configures namespaces from a host namespace with extra
// addresses and routes: a full copy, single address and route (-a/-g),
// local mode, and no --config-net.
func TestNstestApply(t *testing.T) {
	nstest.RequireRoot(t)
	h := nstest.NewHost(t)
	for _, s := range [][]string{
		// Copied: a secondary IPv4 address, an IPv6 address with
		// lifetimes (copied permanent).
		{"ip", "addr", "add", "198.18.0.22/24", "dev", nstest.Uplink},
		{"ip", "addr", "add", "2001:db8:9a55::7/64", "dev", nstest.Uplink, "nodad", "valid_lft", "3000", "preferred_lft", "2000"},
		// Not copied: deprecated.
		{"ip", "addr", "add", "2001:db8:9a55::99/64", "dev", nstest.Uplink, "nodad", "preferred_lft", "0"},
		// Copied, prefsrc dropped.
		{"ip", "route", "add", "203.0.113.0/24", "via", "198.18.0.3", "dev", nstest.Uplink, "src", "198.18.0.2"},
		{"ip", "-6", "route", "add", "2001:db8:beef::/48", "via", "2001:db8:9a55::3", "dev", nstest.Uplink},
		// Copied in a second pass: the dump lists 10.8/16 first, its
		// gateway is reachable only once 10.9.9/24 is in.
		{"ip", "route", "add", "10.9.9.0/24", "dev", nstest.Uplink, "scope", "link"},
		{"ip", "route", "add", "10.8.0.0/16", "via", "10.9.9.1", "dev", nstest.Uplink},
		// Copied: multipath, both nexthops on the template.
		{"ip", "route", "add", "198.51.100.0/24", "nexthop", "via", "198.18.0.3", "dev", nstest.Uplink, "nexthop", "via", "198.18.0.4", "dev", nstest.Uplink},
		// Not copied: another interface, a multipath route using it too.
		{"ip", "route", "add", "192.0.2.0/25", "dev", nstest.UplinkPeer},
		{"ip", "route", "add", "192.0.2.128/25", "nexthop", "via", "198.18.0.5", "dev", nstest.Uplink, "nexthop", "dev", nstest.UplinkPeer},
	} {
		h.Output(t, s[0], s[1:]...)
	}

	t.Run("copy", func(t *testing.T) {
		cfg := hostConfig(t, h)
		res, st := configure(t, h, cfg)
		checkLink(t, res, st, true, config.DefaultMTU)
		checkAddrs(t, st.tap, "198.18.0.2/24", "198.18.0.22/24", "2001:db8:9a55::7/64", "2001:db8:9a55::2/64")

		for dst, gw := range map[string]string{"default": "198.18.0.1", "203.0.113.0/24": "198.18.0.3", "10.8.0.0/16": "10.9.9.1", "10.9.9.0/24": ""} {
			r := findRoute(st.routes4, dst)
			if r == nil || r.Gateway != gw || r.Dev != "tap0" {
				t.Errorf("IPv4 route %s: %+v, want via %q dev tap0", dst, r, gw)
			}
		}
		if r := findRoute(st.routes4, "203.0.113.0/24"); r != nil && r.PrefSrc != "" {
			t.Errorf("prefsrc copied: %+v", r)
		}
		if findRoute(st.routes4, "198.51.100.0/24") == nil {
			t.Errorf("multipath route on the template not copied")
		}
		for _, dst := range []string{"192.0.2.0/25", "192.0.2.128/25"} {
			if r := findRoute(st.routes4, dst); r != nil {
				t.Errorf("route %s using another interface copied: %+v", dst, r)
			}
		}
		for dst, gw := range map[string]string{"default": "2001:db8:9a55::1", "2001:db8:beef::/48": "2001:db8:9a55::3"} {
			r := findRoute(st.route6, dst)
			if r == nil || r.Gateway != gw || r.Dev != "tap0" {
				t.Errorf("IPv6 route %s: %+v, want via %s dev tap0", dst, r, gw)
			}
		}
	})

	t.Run("single", func(t *testing.T) {
		cfg := hostConfig(t, h)
		cfg.MTU = 1500
		cfg.GuestMAC = [6]byte{0x02, 0, 0, 0, 0, 0x2a}
		cfg.V4.Addr, cfg.V4.PrefixLen, cfg.V4.Gateway = netip.MustParseAddr("10.0.2.15"), 24, netip.MustParseAddr("10.0.2.2")
		cfg.V4.AddrFixed, cfg.V4.NoCopyAddrs, cfg.V4.NoCopyRoutes = true, true, true
		cfg.V6.Addr, cfg.V6.Gateway = netip.MustParseAddr("2001:db8:1::15"), netip.MustParseAddr("2001:db8:1::2")
		cfg.V6.AddrFixed, cfg.V6.NoCopyAddrs, cfg.V6.NoCopyRoutes = true, true, true
		res, st := configure(t, h, cfg)
		checkLink(t, res, st, true, 1500)
		if st.tap.MAC != "02:00:00:00:00:2a" {
			t.Errorf("tap MAC %s, want --ns-mac-addr's", st.tap.MAC)
		}
		checkAddrs(t, st.tap, "10.0.2.15/24", "2001:db8:1::15/64")
		if r := findRoute(st.routes4, "default"); r == nil || r.Gateway != "10.0.2.2" || r.Dev != "tap0" {
			t.Errorf("IPv4 default route %+v, want via 10.0.2.2 dev tap0", r)
		}
		if r := findRoute(st.route6, "default"); r == nil || r.Gateway != "2001:db8:1::2" || r.Dev != "tap0" {
			t.Errorf("IPv6 default route %+v, want via 2001:db8:1::2 dev tap0", r)
		}
		for _, r := range append(st.routes4, st.route6...) {
			if r.Dst != "default" && r.Protocol != "kernel" {
				t.Errorf("route %+v besides the default and the kernel's", r)
			}
		}
	})

	t.Run("local", func(t *testing.T) {
		cfg := hostConfig(t, h)
		cfg.V4 = config.IP{Enabled: true, LocalMode: true, Addr: netip.MustParseAddr("169.254.2.1"), PrefixLen: 16,
			Gateway: netip.MustParseAddr("169.254.2.2")}
		cfg.V6 = config.IP{Enabled: true, LocalMode: true, Gateway: netip.MustParseAddr("fe80::1")}
		res, st := configure(t, h, cfg)
		checkLink(t, res, st, true, config.DefaultMTU)
		checkAddrs(t, st.tap, "169.254.2.1/16")
		if r := findRoute(st.routes4, "default"); r == nil || r.Gateway != "169.254.2.2" {
			t.Errorf("IPv4 default route %+v, want via 169.254.2.2", r)
		}
		if r := findRoute(st.route6, "default"); r == nil || r.Gateway != "fe80::1" || r.Dev != "tap0" {
			t.Errorf("IPv6 default route %+v, want via fe80::1 dev tap0", r)
		}
		if res.V4Off || res.V6Off {
			t.Errorf("family switched off: %+v", res)
		}
	})

	t.Run("no-config-net", func(t *testing.T) {
		cfg := hostConfig(t, h)
		cfg.ConfigNet = false
		res, st := configure(t, h, cfg)
		checkLink(t, res, st, false, 0)
		if len(st.tap.Addrs) != 0 || len(st.routes4) != 0 || len(st.route6) != 0 {
			t.Errorf("tap not bare: addresses %+v, routes %+v %+v", st.tap.Addrs, st.routes4, st.route6)
		}
	})
}
