// Package hostinfo discovers, at start-up, what the command line left
// open: the template interface of each address family, its gateway and
// address, our IPv6 link-local address, local mode where there is no
// template, the resolvers and search list, the DNS and loopback mapping
// defaults, and the namespace interface name (addressing.md §1).
//
// # Theory of operation
//
// Complete runs once, after the command line is parsed and before any
// thread enters another namespace, in the host's network namespace. For
// each enabled family it picks a template interface (-i, else
// --outbound-if4/6, else the output interface of the first default route
// of the main table, else of the first other route), then reads that
// interface's default gateway and longest-prefix non-deprecated address
// over netlink, as the C original's conf_ip4()/conf_ip6() do. A family
// without a usable template runs in local mode with fixed link-local
// addressing. Then the defaults that depend on the gateway are filled in
// (the address that maps to the host's loopback), and the resolvers and
// search list are read from /etc/resolv.conf with the C original's
// replacement of loopback resolvers.
//
// Netlink is used for set-up only; nothing here runs on the datapath.
package hostinfo

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/logging"
)

// ResolvConfPath is where resolvers and the search list are read from.
const ResolvConfPath = "/etc/resolv.conf"

// DefaultNSIfName is pasta's tap name when there is no template interface.
const DefaultNSIfName = "tap0"

// Local mode addressing (no template interface), as in the C original:
// IPv4 169.254.2.1/16 with gateway 169.254.2.2 (libslirp uses 10.0.2.x);
// IPv6 no address, gateway and our link-local fe80::1.
var (
	LocalAddr4    = netip.AddrFrom4([4]byte{169, 254, 2, 1})
	LocalGateway4 = netip.AddrFrom4([4]byte{169, 254, 2, 2})
	LocalGateway6 = netip.MustParseAddr("fe80::1")
)

// LocalPrefixLen4 is the IPv4 prefix length in local mode.
const LocalPrefixLen4 = 16

// nlTimeout bounds each netlink request: the kernel answers at once.
const nlTimeout = 5 * time.Second

// source is where routes and addresses come from: a netlink handle in the
// namespace of the calling thread.
type source struct{ h *netlink.Handle }

// Complete fills in everything cfg does not have from the command line,
// from the network namespace of the calling thread (the host's) and
// /etc/resolv.conf. It returns an error (one line, naming the option
// concerned) only for what the C original treats as fatal: an -i or
// --outbound-if4/6 interface that does not exist or cannot serve as
// template, or a netlink failure. Warnings go to the log, so the caller
// sets the log level first.
func Complete(cfg *config.Config) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("%s: netlink: %w", cfg.Mode, err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(nlTimeout); err != nil {
		return fmt.Errorf("%s: netlink: %w", cfg.Mode, err)
	}
	return complete(cfg, source{h}, ResolvConfPath)
}

// complete is Complete with its sources given.
func complete(cfg *config.Config, src source, resolvConf string) error {
	prog := cfg.Mode.String()
	if cfg.EphemeralFirst == 0 && cfg.EphemeralLast == 0 {
		first, last, err := EphemeralRange()
		if err != nil {
			logging.Warnf("%v", err)
		}
		cfg.EphemeralFirst, cfg.EphemeralLast = first, last
	}

	// Template interfaces asked for by name: -i for both families, else
	// --outbound-if4/6 for its own.
	ix4, ix6 := 0, 0
	if cfg.Interface != "" {
		l, err := src.h.LinkByName(cfg.Interface)
		if err != nil {
			return fmt.Errorf("%s: -i: invalid value %q: no such interface", prog, cfg.Interface)
		}
		ix4, ix6 = l.Attrs().Index, l.Attrs().Index
	}
	for _, f := range []struct {
		ix   *int
		name string
		opt  string
	}{{&ix4, cfg.V4.OutboundIf, "--outbound-if4"}, {&ix6, cfg.V6.OutboundIf, "--outbound-if6"}} {
		if *f.ix != 0 || f.name == "" {
			continue
		}
		l, err := src.h.LinkByName(f.name)
		if err != nil {
			return fmt.Errorf("%s: %s: invalid value %q: no such interface", prog, f.opt, f.name)
		}
		*f.ix = l.Attrs().Index
	}

	ok4, ok6 := false, false
	if cfg.V4.Enabled && !cfg.SpliceOnly {
		var err error
		if ok4, err = discover(src, &cfg.V4, netlink.FAMILY_V4, ix4); err != nil {
			return fmt.Errorf("%s: IPv4 host discovery: %w", prog, err)
		}
	}
	if cfg.V6.Enabled && !cfg.SpliceOnly {
		var err error
		if ok6, err = discover(src, &cfg.V6, netlink.FAMILY_V6, ix6); err != nil {
			return fmt.Errorf("%s: IPv6 host discovery: %w", prog, err)
		}
	}
	if cfg.V4.OutboundIf != "" && !ok4 {
		return fmt.Errorf("%s: --outbound-if4: interface %q not usable (no route, gateway or address)", prog, cfg.V4.OutboundIf)
	}
	if cfg.V6.OutboundIf != "" && !ok6 {
		return fmt.Errorf("%s: --outbound-if6: interface %q not usable (no route, gateway or address)", prog, cfg.V6.OutboundIf)
	}

	if cfg.V4.Enabled && !ok4 && !cfg.SpliceOnly {
		logging.Infof("IPv4: no external interface as template, use local mode")
		localMode4(&cfg.V4)
	}
	if cfg.V6.Enabled && !ok6 && !cfg.SpliceOnly {
		logging.Infof("IPv6: no external interface as template, use local mode")
		localMode6(&cfg.V6)
	}

	// The gateway reaches the host's loopback unless told otherwise.
	for _, ip := range []*config.IP{&cfg.V4, &cfg.V6} {
		if ip.Enabled && !cfg.NoMapGW && !ip.MapHostLoopback.IsValid() {
			ip.MapHostLoopback = ip.Gateway
		}
	}

	if cfg.Mode == config.ModePasta && cfg.NSIfName == "" {
		switch {
		case ok4:
			cfg.NSIfName = cfg.V4.Template
		case ok6:
			cfg.NSIfName = cfg.V6.Template
		default:
			cfg.NSIfName = DefaultNSIfName
		}
	}

	// Services without what they hand out.
	if !cfg.V4.Enabled || !cfg.V4.Gateway.IsValid() {
		cfg.NoDHCP = true
	}
	if !cfg.V6.Enabled {
		cfg.NoNDP, cfg.NoDHCPv6 = true, true
	} else if !cfg.V6.Addr.IsValid() {
		cfg.NoDHCPv6 = true
	}

	if err := readResolvConf(cfg, resolvConf); err != nil {
		logging.Warnf("%v", err)
	}
	warnDNS(cfg)

	if cfg.MTU != 0 && cfg.V4.Enabled && cfg.MTU < 68 {
		logging.Warnf("MTU %d is too small for IPv4 (minimum 68)", cfg.MTU)
	}
	if cfg.MTU != 0 && cfg.V6.Enabled && cfg.MTU < 1280 {
		logging.Warnf("MTU %d is too small for IPv6 (minimum 1280)", cfg.MTU)
	}
	return nil
}

// discover fills ip from the template interface of family fam: ix if
// non-zero, else the one chosen from the main routing table. Gateway and
// address are looked up unless given on the command line. It reports
// whether the family has a usable template: an interface, a gateway and
// an address (for IPv6 also our link-local address).
func discover(src source, ip *config.IP, fam int, ix int) (bool, error) {
	routes, err := src.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("route dump: %w", err)
	}
	if ix == 0 {
		if ix = templateIndex(routes); ix == 0 {
			logging.Debugf("no external interface for %s", famName(fam))
			return false, nil
		}
	}
	link, err := src.h.LinkByIndex(ix)
	if err != nil {
		return false, fmt.Errorf("interface %d: %w", ix, err)
	}
	if !ip.Gateway.IsValid() {
		if ip.Gateway = defaultGateway(routes, ix); !ip.Gateway.IsValid() {
			logging.Debugf("no %s gateway on %s", famName(fam), link.Attrs().Name)
			return false, nil
		}
	}
	addrs, err := src.h.AddrList(link, fam)
	if err != nil {
		return false, fmt.Errorf("address dump: %w", err)
	}
	addr, plen, ll := pickAddr(addrs, fam)
	if fam == netlink.FAMILY_V4 {
		if !ip.AddrFixed {
			ip.Addr, ip.PrefixLen = addr, plen
		}
		if !ip.Addr.IsValid() {
			return false, nil
		}
		if ip.PrefixLen == 0 {
			ip.PrefixLen = config.ClassfulPrefix(ip.Addr)
		}
	} else {
		if !ip.AddrFixed {
			ip.Addr = addr
		}
		// The gateway is our link-local source if it is link-local
		// itself: the guest then sees the same router as the host.
		ip.OurLL = ll
		if ip.Gateway.IsLinkLocalUnicast() {
			ip.OurLL = ip.Gateway
		}
		ip.PrefixLen = 64
		if !ip.Addr.IsValid() || !ip.OurLL.IsValid() {
			return false, nil
		}
	}
	ip.Template, ip.TemplateIx = link.Attrs().Name, ix
	return true, nil
}

// templateIndex picks the template interface from a family's main-table
// routes as the C original's nl_get_ext_if() does: routes without output
// interface, via lo (ifindex 1) or to link-local destinations are
// ignored; the output interface of the first default route wins (first
// nexthop if multipath), else that of the first other route. It returns 0
// if there is none.
func templateIndex(routes []netlink.Route) int {
	anyIx := 0
	for i := range routes {
		r := &routes[i]
		ix := r.LinkIndex
		if len(r.MultiPath) > 0 {
			ix = r.MultiPath[0].LinkIndex
		}
		if ix == 0 || ix == 1 {
			continue
		}
		if isDefault(r) {
			return ix
		}
		if r.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		if anyIx == 0 {
			anyIx = ix
		}
	}
	return anyIx
}

// isDefault reports whether r is a default route (no destination, or a
// zero-length prefix).
func isDefault(r *netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// defaultGateway returns the gateway of the first default route through
// interface ix. For a multipath route through ix, the nexthop with the
// highest weight wins; on ties the last one, as the C original's code
// does (its man page says the first).
func defaultGateway(routes []netlink.Route, ix int) netip.Addr {
	for i := range routes {
		r := &routes[i]
		if !isDefault(r) {
			continue
		}
		if len(r.MultiPath) > 0 {
			var best netip.Addr
			bestHops := -1
			through := false
			for _, nh := range r.MultiPath {
				through = through || nh.LinkIndex == ix
				if a, ok := ipAddr(nh.Gw); ok && nh.Hops >= bestHops {
					best, bestHops = a, nh.Hops
				}
			}
			if through && best.IsValid() {
				return best
			}
			continue
		}
		if r.LinkIndex != ix {
			continue
		}
		if a, ok := ipAddr(r.Gw); ok {
			return a
		}
	}
	return netip.Addr{}
}

// pickAddr chooses among an interface's addresses of family fam, leaving
// out deprecated ones: the longest prefix (the first on ties) and its
// length; for IPv6 only addresses wider than link scope, and also the
// longest-prefix link-local address.
func pickAddr(addrs []netlink.Addr, fam int) (addr netip.Addr, plen int, ll netip.Addr) {
	best, bestLL := -1, -1
	for i := range addrs {
		a := &addrs[i]
		if a.IPNet == nil || a.Flags&unix.IFA_F_DEPRECATED != 0 {
			continue
		}
		ip, ok := ipAddr(a.IP)
		if !ok || (fam == netlink.FAMILY_V4) != ip.Is4() {
			continue
		}
		ones, _ := a.Mask.Size()
		switch {
		case fam == netlink.FAMILY_V6 && a.Scope == unix.RT_SCOPE_LINK:
			if ones > bestLL {
				ll, bestLL = ip, ones
			}
		case fam == netlink.FAMILY_V6 && a.Scope > unix.RT_SCOPE_LINK:
			// host or nowhere scope: not an address to copy
		case ones > best:
			addr, best = ip, ones
		}
	}
	return addr, max(best, 0), ll
}

// ipAddr converts a net.IP, unmapping IPv4.
func ipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || !a.IsValid() || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// localMode4 switches IPv4 to local mode. As read in the C original, this
// overrides -a and -g.
func localMode4(ip *config.IP) {
	ip.LocalMode = true
	ip.Addr, ip.PrefixLen, ip.Gateway = LocalAddr4, LocalPrefixLen4, LocalGateway4
	ip.Template, ip.TemplateIx = "", 0
	ip.NoCopyAddrs, ip.NoCopyRoutes = true, true
}

// localMode6 switches IPv6 to local mode: the guest's first link-local
// source becomes its address, unless -a gave one.
func localMode6(ip *config.IP) {
	ip.LocalMode = true
	if !ip.AddrFixed {
		ip.Addr = netip.Addr{}
	}
	ip.Gateway, ip.OurLL, ip.PrefixLen = LocalGateway6, LocalGateway6, 64
	ip.Template, ip.TemplateIx = "", 0
	ip.NoCopyAddrs, ip.NoCopyRoutes = true, true
}

// famName names a netlink family for messages.
func famName(fam int) string {
	if fam == netlink.FAMILY_V4 {
		return "IPv4"
	}
	return "IPv6"
}

// readResolvConf opens path and applies it to cfg (see applyResolvConf).
func readResolvConf(cfg *config.Config, path string) error {
	if !needResolvConf(cfg) {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	applyResolvConf(cfg, string(data))
	return nil
}
