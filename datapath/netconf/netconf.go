// netconf.go: reading the template interface in the host's namespace and
// configuring lo and the tap in pasta's namespace. See doc.go.

package netconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/logging"
)

// TxQueueLen is the transmit queue length set on the tap, in frames, with
// or without --config-net.
//
// The tap's transmit queue is the tun driver's per-queue ring (it is
// resized whenever tx_queue_len changes, also after the descriptor is
// attached): frames the namespace sends wait there until gopasst reads
// them, and a full ring drops them silently (tx_dropped). The kernel
// default of 1000 frames is less than one TCP window at MTU 1500: with the
// default tcp_wmem/tcp_rmem maxima (4 and 6 MiB) a single bulk sender may
// have 2900 to 4300 segments of 1448 bytes in flight, and any scheduling
// hiccup of the reader then drops a burst, the sender backs off and
// throughput collapses. 10000 frames hold about 14 MiB at MTU 1500: two
// such windows at once, with room for the ACKs of inbound flows.
//
// The cost is bounded by what senders may keep in flight, not by this
// number: TCP never sends beyond its window, and the ring only holds what
// gopasst has not read yet. (The tun driver orphans queued frames from
// their sockets, so an unresponsive reader can pin up to 10000 frames: that
// is the namespace's own traffic, which it could queue elsewhere too.)
const TxQueueLen = 10000

// nlTimeout bounds every netlink request: the kernel answers at once, so a
// request that takes longer means something is badly wrong.
const nlTimeout = 5 * time.Second

// familyState is what ReadHost kept of one family's template interface.
type familyState struct {
	addrs  []netlink.Addr  // to copy, already stripped (see hostAddr)
	routes []netlink.Route // to copy, still with the template's ifindex
}

// HostState is the template interface's addressing, per family, as read in
// the host's namespace by ReadHost and written to the namespace by Apply.
// It is empty for what is not going to be copied.
type HostState struct {
	v4, v6 familyState
}

// Result is what Apply learned inside the namespace.
type Result struct {
	// MAC is the tap's MAC address: --ns-mac-addr if given, else the one
	// the kernel chose (the guest's MAC until its first frame says
	// otherwise).
	MAC [6]byte
	// LinkLocal is the tap's own IPv6 link-local address, the first seen
	// guest link-local (addressing.md §1); invalid unless --config-net set
	// up IPv6.
	LinkLocal netip.Addr
	// V4Off, V6Off: in local mode the namespace refused the family
	// (EOPNOTSUPP, e.g. IPv6 disabled there), which switches it off.
	V4Off, V6Off bool
}

// copyAddrs reports whether --config-net copies the template's addresses
// for the family ip, rather than setting its single address.
func copyAddrs(ip *config.IP) bool {
	return !(ip.NoCopyAddrs || ip.AddrFixed || ip.LocalMode || ip.TemplateIx == 0)
}

// copyRoutes reports whether --config-net copies the template's routes for
// the family ip, rather than setting one default route via its gateway.
func copyRoutes(ip *config.IP) bool {
	return !(ip.NoCopyRoutes || ip.LocalMode || ip.TemplateIx == 0)
}

// ReadHost reads, in the namespace of the calling thread (the host's: call
// it before any thread enters another namespace, from any thread of the
// daemon), the addresses and routes --config-net will copy from the
// template interface of each enabled family.
//
// cfg is the configuration with host discovery done (Template, TemplateIx,
// NoCopy*, LocalMode). It returns an empty state when --config-net is off or
// nothing is to be copied, and an error only if a netlink dump fails.
func ReadHost(cfg *config.Config) (*HostState, error) {
	hs := &HostState{}
	if !cfg.ConfigNet {
		return hs, nil
	}
	wantV4 := cfg.V4.Enabled && (copyAddrs(&cfg.V4) || copyRoutes(&cfg.V4))
	wantV6 := cfg.V6.Enabled && (copyAddrs(&cfg.V6) || copyRoutes(&cfg.V6))
	if !wantV4 && !wantV6 {
		return hs, nil
	}

	h, err := openHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink in the host namespace: %w", err)
	}
	defer h.Close()

	if wantV4 {
		if err := readFamily(h, &cfg.V4, netlink.FAMILY_V4, &hs.v4); err != nil {
			return nil, err
		}
	}
	if wantV6 {
		if err := readFamily(h, &cfg.V6, netlink.FAMILY_V6, &hs.v6); err != nil {
			return nil, err
		}
	}
	return hs, nil
}

// openHandle opens a route netlink socket in the calling thread's
// namespace, with a receive timeout so that no request waits forever.
func openHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := h.SetSocketTimeout(nlTimeout); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// readFamily fills st with what is to be copied of family fam (FAMILY_V4 or
// FAMILY_V6) from the template interface of ip. h is a handle in the host's
// namespace. It returns an error if a dump fails.
func readFamily(h *netlink.Handle, ip *config.IP, fam int, st *familyState) error {
	name := famName(fam)
	tmpl := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ip.TemplateIx, Name: ip.Template}}

	if copyAddrs(ip) {
		addrs, err := h.AddrList(tmpl, fam)
		if err != nil {
			return fmt.Errorf("dump %s addresses of %s: %w", name, ip.Template, err)
		}
		for _, a := range addrs {
			if na, ok := hostAddr(a, fam); ok {
				st.addrs = append(st.addrs, na)
			}
		}
		logging.Debugf("netconf: %d %s address(es) to copy from %s", len(st.addrs), name, ip.Template)
	}

	if copyRoutes(ip) {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("dump %s routes: %w", name, err)
		}
		for _, r := range routes {
			if copyableRoute(&r, ip.TemplateIx) {
				st.routes = append(st.routes, r)
			}
		}
		logging.Debugf("netconf: %d %s route(s) to copy from %s", len(st.routes), name, ip.Template)
	}
	return nil
}

// addrUserFlags are the IFA_F_* flags that describe how an address was
// configured rather than its current state (tentative, deprecated,
// permanent, secondary...): the only ones a copy keeps.
const addrUserFlags = unix.IFA_F_HOMEADDRESS | unix.IFA_F_NOPREFIXROUTE |
	unix.IFA_F_MCAUTOJOIN | unix.IFA_F_MANAGETEMPADDR | unix.IFA_F_NODAD

// hostAddr returns the copy of template address a to be added in the
// namespace, and false if a is not copied (link scope, deprecated). The
// copy has no label (it names the host's interface) and no lifetimes (it is
// permanent: nothing in the namespace would renew it); IPv6 copies get
// IFA_F_NODAD, being duplicates by design. fam is the family dumped.
func hostAddr(a netlink.Addr, fam int) (netlink.Addr, bool) {
	if a.IPNet == nil || a.Scope == unix.RT_SCOPE_LINK || a.Flags&unix.IFA_F_DEPRECATED != 0 {
		return netlink.Addr{}, false
	}
	na := netlink.Addr{
		IPNet:     a.IPNet,
		Peer:      a.Peer,
		Broadcast: a.Broadcast,
		Scope:     a.Scope,
		Flags:     a.Flags & addrUserFlags,
	}
	if fam == netlink.FAMILY_V6 {
		na.Flags |= unix.IFA_F_NODAD
	}
	return na, true
}

// copyableRoute reports whether main-table route r goes out of the template
// interface tmplIx only: its output interface, or every one of its
// multipath nexthops. Routes that also use other interfaces would not work
// in the namespace, which has only the tap.
func copyableRoute(r *netlink.Route, tmplIx int) bool {
	if r.Table != unix.RT_TABLE_MAIN {
		return false
	}
	if len(r.MultiPath) == 0 {
		return r.LinkIndex == tmplIx
	}
	for _, nh := range r.MultiPath {
		if nh == nil || nh.LinkIndex != tmplIx {
			return false
		}
	}
	return true
}

// nsRoute returns the copy of template route r for the namespace: output
// interface (and every nexthop's) rewritten to tapIx; the preferred source
// dropped (the namespace may not have that address, e.g. with -a); nexthop
// flags dropped (the kernel rejects state flags such as linkdown or dead);
// always in the main table.
func nsRoute(r netlink.Route, tapIx int) netlink.Route {
	out := r
	out.Src = nil
	out.Flags = 0
	out.ILinkIndex = 0
	out.Table = unix.RT_TABLE_MAIN
	if len(r.MultiPath) == 0 {
		out.LinkIndex = tapIx
		return out
	}
	out.LinkIndex = 0
	out.MultiPath = make([]*netlink.NexthopInfo, len(r.MultiPath))
	for i, nh := range r.MultiPath {
		n := *nh
		n.LinkIndex = tapIx
		n.Flags = 0
		out.MultiPath[i] = &n
	}
	return out
}

// Apply configures the namespace of the calling thread. Preconditions: the
// calling goroutine is locked (runtime.LockOSThread) to a thread inside the
// target network namespace, such as the namespace worker; the netlink
// socket is opened there and closed before Apply returns.
//
// cfg is the complete configuration, host what ReadHost returned (nil when
// --config-net is off), tapName the tap interface in the namespace. It
// returns what was learned there, or an error naming the step that failed.
func Apply(cfg *config.Config, host *HostState, tapName string) (*Result, error) {
	h, err := openHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink in the target namespace: %w", err)
	}
	defer h.Close()
	return ApplyHandle(h, cfg, host, tapName)
}

// ApplyHandle does what Apply does through h, a route netlink handle opened
// inside the target namespace (it may be used from any thread).
//
// Always: lo up (and only that with tapName "": --splice-only), the tap's transmit queue set to TxQueueLen, its MAC set to
// --ns-mac-addr or read. With --config-net: MTU (if non-zero), link up
// (with IFF_NOARP while IPv6 link-local addresses are made NODAD, see
// doc.go), then per enabled family the addresses (copied or the single
// one) and the routes (copied or one default route via the gateway).
func ApplyHandle(h *netlink.Handle, cfg *config.Config, host *HostState, tapName string) (*Result, error) {
	res := &Result{}
	if host == nil {
		host = &HostState{}
	}

	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("set lo up: %w", err)
	}

	if tapName == "" {
		// --splice-only: no tap, only the loopback the spliced
		// connections reach.
		return res, nil
	}
	tap, err := h.LinkByName(tapName)
	if err != nil {
		return nil, fmt.Errorf("find tap %s: %w", tapName, err)
	}
	if err := h.LinkSetTxQLen(tap, TxQueueLen); err != nil {
		return nil, fmt.Errorf("set %s txqueuelen %d: %w", tapName, TxQueueLen, err)
	}
	if cfg.GuestMAC != ([6]byte{}) {
		if err := h.LinkSetHardwareAddr(tap, net.HardwareAddr(cfg.GuestMAC[:])); err != nil {
			return nil, fmt.Errorf("set %s MAC: %w", tapName, err)
		}
		res.MAC = cfg.GuestMAC
	} else if hw := tap.Attrs().HardwareAddr; len(hw) == 6 {
		copy(res.MAC[:], hw)
	} else {
		return nil, fmt.Errorf("tap %s has no Ethernet MAC address", tapName)
	}

	if !cfg.ConfigNet {
		// The tap stays down and bare: the guest configures itself
		// (DHCP, SLAAC).
		return res, nil
	}

	if cfg.MTU != 0 {
		if err := h.LinkSetMTU(tap, cfg.MTU); err != nil {
			return nil, fmt.Errorf("set %s MTU %d: %w", tapName, cfg.MTU, err)
		}
	}
	if cfg.V6.Enabled {
		if err := h.LinkSetARPOff(tap); err != nil {
			return nil, fmt.Errorf("set %s NOARP: %w", tapName, err)
		}
	}
	if err := h.LinkSetUp(tap); err != nil {
		return nil, fmt.Errorf("set %s up: %w", tapName, err)
	}
	tapIx := tap.Attrs().Index

	if cfg.V4.Enabled {
		off, err := applyFamily(h, &cfg.V4, netlink.FAMILY_V4, &host.v4, tapIx)
		if err != nil {
			return nil, err
		}
		res.V4Off = off
	}
	if cfg.V6.Enabled {
		ll, err := nodadLinkLocal(h, tap)
		if err != nil {
			// Not fatal, as in the C original: the guest's link-local
			// is then learned from its first frame.
			logging.Warnf("netconf: link-local address of %s: %v", tapName, err)
		}
		res.LinkLocal = ll
		// DAD is dodged: let neighbour solicitation (and ARP) work.
		if err := h.LinkSetARPOn(tap); err != nil {
			return nil, fmt.Errorf("clear %s NOARP: %w", tapName, err)
		}
		off, err := applyFamily(h, &cfg.V6, netlink.FAMILY_V6, &host.v6, tapIx)
		if err != nil {
			return nil, err
		}
		res.V6Off = off
	}
	return res, nil
}

// nodadLinkLocal re-adds every IPv6 link-scope address of tap with
// IFA_F_NODAD, so that clearing IFF_NOARP does not start DAD on it, and
// returns the first one (the kernel's own link-local). h is the
// namespace's handle. It returns an error if there is none or a request
// fails.
func nodadLinkLocal(h *netlink.Handle, tap netlink.Link) (netip.Addr, error) {
	addrs, err := h.AddrList(tap, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dump addresses: %w", err)
	}
	var first netip.Addr
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_LINK || a.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !first.IsValid() {
			first = ip.Unmap()
		}
		na := netlink.Addr{IPNet: a.IPNet, Scope: a.Scope, Flags: a.Flags&addrUserFlags | unix.IFA_F_NODAD}
		if err := h.AddrReplace(tap, &na); err != nil {
			return first, fmt.Errorf("set nodad on %s: %w", a.IPNet, err)
		}
	}
	if !first.IsValid() {
		return first, errors.New("none found")
	}
	return first, nil
}

// applyFamily sets the addresses and routes of family fam on the tap
// (index tapIx) through h: the copies in st, or the single address and
// default route of ip. It returns true if the family must be switched off
// (local mode, and the namespace does not support it), and an error if a
// request fails otherwise.
func applyFamily(h *netlink.Handle, ip *config.IP, fam int, st *familyState, tapIx int) (off bool, err error) {
	name := famName(fam)
	tap := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: tapIx}}
	// refused reports whether err switches the family off rather than
	// failing: only in local mode, where the family was a guess anyway.
	refused := func(err error) bool {
		if ip.LocalMode && errors.Is(err, unix.EOPNOTSUPP) {
			logging.Warnf("netconf: %s not supported in the namespace, disabled: %v", name, err)
			return true
		}
		return false
	}

	addrs := st.addrs
	if !copyAddrs(ip) {
		addrs = nil
		if a, ok := singleAddr(ip, fam); ok {
			addrs = []netlink.Addr{a}
		}
	}
	for i := range addrs {
		// EEXIST: already there (Apply run twice, or the kernel's).
		if err := h.AddrAdd(tap, &addrs[i]); err != nil && !errors.Is(err, unix.EEXIST) {
			if refused(err) {
				return true, nil
			}
			return false, fmt.Errorf("set %s address %s in the namespace: %w", name, addrs[i].IPNet, err)
		}
	}

	var routes []netlink.Route
	if copyRoutes(ip) {
		routes = make([]netlink.Route, 0, len(st.routes))
		for _, r := range st.routes {
			routes = append(routes, nsRoute(r, tapIx))
		}
	} else if r, ok := defaultRoute(ip, fam, tapIx); ok {
		routes = []netlink.Route{r}
	}
	if err := addRoutes(h, routes, name); err != nil {
		if refused(err) {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// singleAddr returns the one address --config-net sets for family fam when
// not copying: IPv4 with its prefix length, IPv6 as a /64 without DAD. It
// returns false if ip has no address (IPv6 local mode).
func singleAddr(ip *config.IP, fam int) (netlink.Addr, bool) {
	if !ip.Addr.IsValid() || ip.Addr.IsUnspecified() {
		return netlink.Addr{}, false
	}
	a := netlink.Addr{}
	if fam == netlink.FAMILY_V4 {
		a.IPNet = &net.IPNet{IP: net.IP(ip.Addr.AsSlice()), Mask: net.CIDRMask(ip.PrefixLen, 32)}
	} else {
		a.IPNet = &net.IPNet{IP: net.IP(ip.Addr.AsSlice()), Mask: net.CIDRMask(64, 128)}
		a.Flags = unix.IFA_F_NODAD
	}
	return a, true
}

// defaultRoute returns the one route --config-net sets for family fam when
// not copying: default via ip's gateway out of tap tapIx, proto boot as
// the C original (and `ip route add`) marks it. It returns false without a
// gateway.
func defaultRoute(ip *config.IP, fam int, tapIx int) (netlink.Route, bool) {
	if !ip.Gateway.IsValid() || ip.Gateway.IsUnspecified() {
		return netlink.Route{}, false
	}
	bits := 32
	if fam == netlink.FAMILY_V6 {
		bits = 128
	}
	zero := net.IPv4zero.To4()
	if fam == netlink.FAMILY_V6 {
		zero = net.IPv6zero
	}
	return netlink.Route{
		Family:    fam,
		LinkIndex: tapIx,
		Dst:       &net.IPNet{IP: zero, Mask: net.CIDRMask(0, bits)},
		Gw:        net.IP(ip.Gateway.AsSlice()),
		Protocol:  unix.RTPROT_BOOT,
		Table:     unix.RT_TABLE_MAIN,
	}, true
}

// addRoutes inserts routes through h, in as many passes as there are
// routes at most, so that a route whose gateway only becomes reachable
// through a later one still gets in (see doc.go). EEXIST counts as done,
// ENETUNREACH/EHOSTUNREACH as "next pass"; routes left unreachable are
// skipped with a warning. fam names the family in messages. It returns the
// first other error.
func addRoutes(h *netlink.Handle, routes []netlink.Route, fam string) error {
	pending := routes
	for pass := 0; pass < len(routes) && len(pending) > 0; pass++ {
		var retry []netlink.Route
		for i := range pending {
			err := h.RouteAdd(&pending[i])
			switch {
			case err == nil, errors.Is(err, unix.EEXIST):
			case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
				retry = append(retry, pending[i])
			default:
				return fmt.Errorf("set %s route %s in the namespace: %w", fam, pending[i], err)
			}
		}
		if len(retry) == len(pending) {
			// No progress: the namespace did not change, later
			// passes would fail alike.
			break
		}
		pending = retry
	}
	for _, r := range pending {
		logging.Warnf("netconf: %s route %s not copied: gateway unreachable in the namespace", fam, r)
	}
	return nil
}

// famName returns "IPv4" or "IPv6" for a netlink family, for messages.
func famName(fam int) string {
	if fam == netlink.FAMILY_V6 {
		return "IPv6"
	}
	return "IPv4"
}
