// Tests of host discovery: the selection rules on synthetic netlink data,
// resolv.conf handling, and Complete inside network namespaces created for
// the test (root only).

package hostinfo

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
)

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func TestTemplateIndex(t *testing.T) {
	for _, tt := range []struct {
		name   string
		routes []netlink.Route
		want   int
	}{
		{"none", nil, 0},
		{"default wins over earlier route", []netlink.Route{
			{LinkIndex: 3, Dst: cidr("10.0.0.0/8")},
			{LinkIndex: 2, Gw: net.ParseIP("192.0.2.1")},
		}, 2},
		{"zero-length prefix is default", []netlink.Route{
			{LinkIndex: 4, Dst: cidr("10.0.0.0/8")},
			{LinkIndex: 5, Dst: cidr("0.0.0.0/0")},
		}, 5},
		{"first default", []netlink.Route{{LinkIndex: 7}, {LinkIndex: 8}}, 7},
		{"first other route without default", []netlink.Route{
			{LinkIndex: 3, Dst: cidr("10.0.0.0/8")}, {LinkIndex: 4, Dst: cidr("10.1.0.0/16")},
		}, 3},
		{"lo and no interface ignored", []netlink.Route{
			{LinkIndex: 1}, {LinkIndex: 0}, {LinkIndex: 6, Dst: cidr("10.0.0.0/8")},
		}, 6},
		{"link-local destinations ignored", []netlink.Route{
			{LinkIndex: 3, Dst: cidr("fe80::/64")}, {LinkIndex: 4, Dst: cidr("2001:db8::/64")},
		}, 4},
		{"multipath first nexthop", []netlink.Route{
			{MultiPath: []*netlink.NexthopInfo{{LinkIndex: 9}, {LinkIndex: 10}}},
		}, 9},
	} {
		if got := templateIndex(tt.routes); got != tt.want {
			t.Errorf("%s: templateIndex = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestDefaultGateway(t *testing.T) {
	routes := []netlink.Route{
		{LinkIndex: 2, Dst: cidr("198.18.0.0/24")},
		{LinkIndex: 3, Gw: net.ParseIP("192.0.2.1")},
		{LinkIndex: 2, Gw: net.ParseIP("198.18.0.1")},
		{MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: 4, Gw: net.ParseIP("203.0.113.1"), Hops: 1},
			{LinkIndex: 5, Gw: net.ParseIP("203.0.113.2"), Hops: 3},
			{LinkIndex: 4, Gw: net.ParseIP("203.0.113.3"), Hops: 3},
		}},
	}
	for _, tt := range []struct {
		ix   int
		want string
	}{
		{2, "198.18.0.1"},
		{3, "192.0.2.1"},
		{4, "203.0.113.3"}, // highest weight, the last of equals
		{6, ""},
	} {
		got := defaultGateway(routes, tt.ix)
		if (tt.want == "" && got.IsValid()) || (tt.want != "" && got != netip.MustParseAddr(tt.want)) {
			t.Errorf("defaultGateway(%d) = %v, want %q", tt.ix, got, tt.want)
		}
	}
}

func TestPickAddr(t *testing.T) {
	v4 := []netlink.Addr{
		{IPNet: cidr("198.18.0.2/24")},
		{IPNet: cidr("198.18.1.2/28"), Flags: unix.IFA_F_DEPRECATED},
		{IPNet: cidr("198.18.2.2/26")},
		{IPNet: cidr("198.18.3.2/26")},
	}
	a, plen, _ := pickAddr(v4, netlink.FAMILY_V4)
	if a != netip.MustParseAddr("198.18.2.2") || plen != 26 {
		t.Errorf("IPv4: %v/%d, want 198.18.2.2/26", a, plen)
	}
	v6 := []netlink.Addr{
		{IPNet: cidr("fe80::1/64"), Scope: unix.RT_SCOPE_LINK},
		{IPNet: cidr("2001:db8::2/64"), Scope: unix.RT_SCOPE_UNIVERSE},
		{IPNet: cidr("2001:db8::99/80"), Scope: unix.RT_SCOPE_UNIVERSE, Flags: unix.IFA_F_DEPRECATED},
		{IPNet: cidr("fe80::2/80"), Scope: unix.RT_SCOPE_LINK},
		{IPNet: cidr("::1/128"), Scope: unix.RT_SCOPE_HOST},
	}
	a, _, ll := pickAddr(v6, netlink.FAMILY_V6)
	if a != netip.MustParseAddr("2001:db8::2") || ll != netip.MustParseAddr("fe80::2") {
		t.Errorf("IPv6: %v, link-local %v", a, ll)
	}
}

func TestResolvConf(t *testing.T) {
	a := netip.MustParseAddr
	const file = "# comment\n" +
		"search example.com test.example\n" +
		"nameserver 127.0.0.53\n" +
		"nameserver 198.18.0.53\n" +
		"nameserver fe80::53%eth0\n" +
		"nameserver ::1\n" +
		"search other.example\n" +
		"nameserver 198.18.0.54\nnameserver 198.18.0.55\nnameserver 198.18.0.56\n"
	base := func() *config.Config {
		c := &config.Config{}
		c.V4 = config.IP{Enabled: true, Gateway: a("198.18.0.1"), MapHostLoopback: a("198.18.0.1")}
		c.V6 = config.IP{Enabled: true, Gateway: a("fe80::1"), MapHostLoopback: a("fe80::1")}
		return c
	}
	for _, tt := range []struct {
		name  string
		setup func(c *config.Config)
		check func(t *testing.T, c *config.Config)
	}{
		{"defaults", func(c *config.Config) {}, func(t *testing.T, c *config.Config) {
			if s := addrs(c.V4.DNS); s != "198.18.0.1 198.18.0.53 198.18.0.54" {
				t.Errorf("v4 DNS %s", s)
			}
			if c.V4.DNSMatch != a("198.18.0.1") || c.V4.DNSHost != a("127.0.0.53") {
				t.Errorf("v4 match %v host %v", c.V4.DNSMatch, c.V4.DNSHost)
			}
			if s := addrs(c.V6.DNS); s != "fe80::53 fe80::1" || c.V6.DNSMatch != a("fe80::1") || c.V6.DNSHost != a("fe80::53") {
				t.Errorf("v6 DNS %s match %v host %v", s, c.V6.DNSMatch, c.V6.DNSHost)
			}
			if strings.Join(c.Search, " ") != "example.com test.example" {
				t.Errorf("search %v", c.Search)
			}
		}},
		{"dns-forward with no-map-gw", func(c *config.Config) {
			c.NoMapGW, c.V4.MapHostLoopback, c.V6.MapHostLoopback = true, netip.Addr{}, netip.Addr{}
			c.V4.DNSMatch = a("169.254.1.1")
		}, func(t *testing.T, c *config.Config) {
			if s := addrs(c.V4.DNS); s != "169.254.1.1 198.18.0.53 198.18.0.54" || c.V4.DNSMatch != a("169.254.1.1") {
				t.Errorf("v4 DNS %s match %v", s, c.V4.DNSMatch)
			}
			// IPv6 ::1 has nothing to be replaced by: dropped.
			if s := addrs(c.V6.DNS); s != "fe80::53" || c.V6.DNSMatch.IsValid() {
				t.Errorf("v6 DNS %s match %v", s, c.V6.DNSMatch)
			}
		}},
		{"dns-host kept", func(c *config.Config) { c.V4.DNSHost = a("192.0.2.53") }, func(t *testing.T, c *config.Config) {
			if c.V4.DNSHost != a("192.0.2.53") {
				t.Errorf("dns host %v", c.V4.DNSHost)
			}
		}},
		{"-D of one family", func(c *config.Config) { c.V6.DNS = []netip.Addr{a("2001:db8::53")} }, func(t *testing.T, c *config.Config) {
			if s := addrs(c.V6.DNS); s != "2001:db8::53" || len(c.V4.DNS) != 3 || c.V6.DNSHost.IsValid() {
				t.Errorf("v6 DNS %s host %v, v4 %d", s, c.V6.DNSHost, len(c.V4.DNS))
			}
		}},
		{"-D none and -S none", func(c *config.Config) { c.NoDNS, c.NoSearch = true, true }, func(t *testing.T, c *config.Config) {
			if len(c.V4.DNS)+len(c.V6.DNS)+len(c.Search) != 0 || c.V4.DNSHost.IsValid() {
				t.Errorf("read anyway: %v %v %v", c.V4.DNS, c.V6.DNS, c.Search)
			}
		}},
		{"-S given", func(c *config.Config) { c.Search = []string{"mine.example"} }, func(t *testing.T, c *config.Config) {
			if strings.Join(c.Search, " ") != "mine.example" {
				t.Errorf("search %v", c.Search)
			}
		}},
		{"IPv6 off", func(c *config.Config) { c.V6.Enabled = false }, func(t *testing.T, c *config.Config) {
			if len(c.V6.DNS) != 0 {
				t.Errorf("v6 DNS %v", c.V6.DNS)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.setup(c)
			if needResolvConf(c) {
				applyResolvConf(c, file)
			}
			tt.check(t, c)
		})
	}

	c := base()
	c.Search = nil
	applyResolvConf(c, "search a b c d e f g\n")
	if len(c.Search) != config.MaxSearch {
		t.Errorf("search list of %d names", len(c.Search))
	}
}

func TestParsePortRange(t *testing.T) {
	if f, l, err := ParsePortRange("32768\t60999\n"); err != nil || f != 32768 || l != 60999 {
		t.Errorf("got %d %d %v", f, l, err)
	}
	for _, bad := range []string{"", "1", "2 1", "1 70000", "a b", "1 2 3"} {
		if _, _, err := ParsePortRange(bad); err == nil {
			t.Errorf("ParsePortRange(%q) accepted", bad)
		}
	}
	if f, l, err := EphemeralRange(); err != nil || f > l || f == 0 {
		t.Errorf("EphemeralRange() = %d, %d, %v", f, l, err)
	}
}

func addrs(l []netip.Addr) string {
	s := make([]string, len(l))
	for i, a := range l {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}

// netns is a network namespace created for a test.
type netns struct {
	t    *testing.T
	name string
}

// newNetns creates a network namespace with ip-netns(8), removed when the
// test ends; it skips the test where that is impossible.
func newNetns(t *testing.T, suffix string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) from iproute2")
	}
	n := &netns{t: t, name: "gopasst-hostinfo-" + suffix + "-" + strings.TrimPrefix(filepath.Base(os.Args[0]), ".")}
	n.name = n.name[:min(len(n.name), 60)]
	exec.Command("ip", "netns", "del", n.name).Run() // left over from a killed run
	n.run("ip", "netns", "add", n.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	return n
}

// run runs a command, failing the test if it fails.
func (n *netns) run(args ...string) {
	n.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ip runs ip(8) inside the namespace.
func (n *netns) ip(args ...string) { n.run(append([]string{"ip", "-n", n.name}, args...)...) }

// complete runs complete() with a thread inside the namespace. The thread
// is never unlocked, so it ends with its goroutine instead of going back
// to the scheduler in the wrong namespace.
func (n *netns) complete(cfg *config.Config, resolv string) error {
	n.t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			done <- err
			return
		}
		defer h.Close()
		h.SetSocketTimeout(nlTimeout)
		done <- complete(cfg, source{h}, resolv)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		n.t.Fatal("complete() did not return in 30 s")
		return nil
	}
}

// baseConfig is what parsing gives without options.
func baseConfig(mode config.Mode) *config.Config {
	c := &config.Config{Mode: mode, MTU: config.DefaultMTU, EphemeralFirst: 49152, EphemeralLast: 65535}
	c.V4.Enabled, c.V6.Enabled = true, true
	c.AdvertiseDNS = mode == config.ModePasst
	return c
}

func TestCompleteInNamespace(t *testing.T) {
	n := newNetns(t, "veth")
	n.run("ip", "netns", "exec", n.name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	n.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	n.ip("addr", "add", "198.18.0.2/24", "dev", "veth0")
	n.ip("addr", "add", "2001:db8:9a55::2/64", "dev", "veth0", "nodad")
	// A longer prefix, but deprecated: never the template's address.
	n.ip("addr", "add", "2001:db8:9a55::99/80", "dev", "veth0", "nodad", "preferred_lft", "0")
	n.ip("link", "set", "veth0", "up")
	n.ip("link", "set", "veth1", "up")
	n.ip("route", "add", "default", "via", "198.18.0.1")
	n.ip("-6", "route", "add", "default", "via", "2001:db8:9a55::1")
	// The kernel adds veth0's link-local address once the link has a
	// carrier: wait for it, bounded.
	for i := 0; ; i++ {
		out, _ := exec.Command("ip", "-n", n.name, "-6", "addr", "show", "dev", "veth0", "scope", "link").Output()
		if strings.Contains(string(out), "fe80::") {
			break
		}
		if i == 50 {
			t.Fatal("no link-local address on veth0 after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.53\nnameserver 2001:db8:9a55::53\nsearch example.com\n"), 0o644)

	a := netip.MustParseAddr
	cfg := baseConfig(config.ModePasta)
	if err := n.complete(cfg, resolv); err != nil {
		t.Fatal(err)
	}
	v4, v6 := &cfg.V4, &cfg.V6
	if v4.Template != "veth0" || v4.TemplateIx == 0 || v4.Addr != a("198.18.0.2") || v4.PrefixLen != 24 ||
		v4.Gateway != a("198.18.0.1") || v4.LocalMode || v4.MapHostLoopback != a("198.18.0.1") {
		t.Errorf("IPv4: %+v", *v4)
	}
	if v6.Template != "veth0" || v6.Addr != a("2001:db8:9a55::2") || v6.PrefixLen != 64 ||
		v6.Gateway != a("2001:db8:9a55::1") || !v6.OurLL.IsLinkLocalUnicast() || v6.LocalMode ||
		v6.MapHostLoopback != a("2001:db8:9a55::1") {
		t.Errorf("IPv6: %+v", *v6)
	}
	if cfg.NSIfName != "veth0" {
		t.Errorf("namespace interface %q", cfg.NSIfName)
	}
	if addrs(v4.DNS) != "198.18.0.1" || v4.DNSMatch != a("198.18.0.1") || v4.DNSHost != a("127.0.0.53") {
		t.Errorf("IPv4 DNS %v match %v host %v", v4.DNS, v4.DNSMatch, v4.DNSHost)
	}
	if addrs(v6.DNS) != "2001:db8:9a55::53" || strings.Join(cfg.Search, ",") != "example.com" {
		t.Errorf("IPv6 DNS %v, search %v", v6.DNS, cfg.Search)
	}
	if cfg.NoDHCP || cfg.NoDHCPv6 {
		t.Errorf("DHCP off: %v %v", cfg.NoDHCP, cfg.NoDHCPv6)
	}

	// Given addresses and gateways win; -i names the template.
	cfg = baseConfig(config.ModePasst)
	cfg.Interface = "veth0"
	cfg.V4.Addr, cfg.V4.PrefixLen, cfg.V4.AddrFixed = a("198.18.0.77"), 0, true
	cfg.V6.Gateway = a("fe80::abcd")
	cfg.NoMapGW = true
	if err := n.complete(cfg, resolv); err != nil {
		t.Fatal(err)
	}
	if cfg.V4.Addr != a("198.18.0.77") || cfg.V4.PrefixLen != 24 || cfg.V6.OurLL != a("fe80::abcd") ||
		cfg.V4.MapHostLoopback.IsValid() || cfg.NSIfName != "" {
		t.Errorf("given values: %+v %+v %q", cfg.V4, cfg.V6, cfg.NSIfName)
	}
	// With no map-host-loopback address, the loopback resolver is dropped.
	if len(cfg.V4.DNS) != 0 {
		t.Errorf("IPv4 DNS %v", cfg.V4.DNS)
	}

	// Unknown or unusable interfaces named on the command line are fatal.
	cfg = baseConfig(config.ModePasst)
	cfg.Interface = "nosuch0"
	if err := n.complete(cfg, resolv); err == nil || !strings.Contains(err.Error(), `-i: invalid value "nosuch0"`) {
		t.Errorf("-i nosuch0: %v", err)
	}
	cfg = baseConfig(config.ModePasst)
	cfg.V6.OutboundIf = "lo"
	if err := n.complete(cfg, resolv); err == nil || !strings.Contains(err.Error(), "--outbound-if6") {
		t.Errorf("--outbound-if6 lo: %v", err)
	}
}

func TestCompleteLocalMode(t *testing.T) {
	n := newNetns(t, "local")
	n.ip("link", "set", "lo", "up")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644)

	cfg := baseConfig(config.ModePasta)
	cfg.V4.Addr, cfg.V4.AddrFixed = netip.MustParseAddr("192.0.2.9"), true
	if err := n.complete(cfg, resolv); err != nil {
		t.Fatal(err)
	}
	v4, v6 := &cfg.V4, &cfg.V6
	if !v4.LocalMode || v4.Addr != LocalAddr4 || v4.PrefixLen != 16 || v4.Gateway != LocalGateway4 ||
		!v4.NoCopyAddrs || !v4.NoCopyRoutes || v4.TemplateIx != 0 {
		t.Errorf("IPv4 local mode: %+v", *v4)
	}
	if !v6.LocalMode || v6.Addr.IsValid() || v6.Gateway != LocalGateway6 || v6.OurLL != LocalGateway6 {
		t.Errorf("IPv6 local mode: %+v", *v6)
	}
	if cfg.NSIfName != DefaultNSIfName || !cfg.NoDHCPv6 || cfg.NoDHCP {
		t.Errorf("ns interface %q, no DHCPv6 %v, no DHCP %v", cfg.NSIfName, cfg.NoDHCPv6, cfg.NoDHCP)
	}
	// The loopback resolver is reached through the local gateway.
	if addrs(v4.DNS) != "169.254.2.2" || v4.DNSMatch != LocalGateway4 {
		t.Errorf("local DNS %v match %v", v4.DNS, v4.DNSMatch)
	}
}

// FuzzResolvConf feeds arbitrary resolv.conf contents: never a panic, and
// never more than the limits.
func FuzzResolvConf(f *testing.F) {
	f.Add("nameserver 127.0.0.53\nsearch a b\n")
	f.Add("nameserver fe80::1%eth0\nnameserver ::1\nnameserver 1.2.3.4 \n")
	f.Add("nameserver \nsearch\nsearch \n")
	f.Fuzz(func(t *testing.T, data string) {
		c := &config.Config{}
		c.V4 = config.IP{Enabled: true, MapHostLoopback: netip.MustParseAddr("198.18.0.1")}
		c.V6 = config.IP{Enabled: true}
		applyResolvConf(c, data)
		if len(c.V4.DNS) > config.MaxDNS || len(c.V6.DNS) > config.MaxDNS || len(c.Search) > config.MaxSearch {
			t.Fatalf("limits exceeded: %v %v %v", c.V4.DNS, c.V6.DNS, c.Search)
		}
		for _, a := range append(append([]netip.Addr{}, c.V4.DNS...), c.V6.DNS...) {
			if a.IsLoopback() || a.Zone() != "" {
				t.Fatalf("resolver %v advertised", a)
			}
		}
	})
}

// FuzzParsePortRange feeds arbitrary ip_local_port_range contents.
func FuzzParsePortRange(f *testing.F) {
	f.Add("32768\t60999\n")
	f.Add("1 2 3")
	f.Fuzz(func(t *testing.T, s string) {
		if first, last, err := ParsePortRange(s); err == nil && first > last {
			t.Fatalf("%q: %d > %d", s, first, last)
		}
	})
}
