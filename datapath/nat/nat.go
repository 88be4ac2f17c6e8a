// Package nat chooses the addresses a flow uses on each side, once per flow,
// as addressing.md §2 describes: the guest's destination becomes a host-side
// destination (the DNS-forward target, the host's loopback for the gateway
// address, the guest's own address for --map-guest-addr), and a host peer's
// address becomes the source the guest sees (loopback and the host's own
// addresses become the gateway or our link-local).
package nat

import (
	"net/netip"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
)

var (
	loop4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	loop6 = netip.IPv6Loopback()
)

func family(cfg *config.Config, a netip.Addr) *config.IP {
	if a.Is4() {
		return &cfg.V4
	}
	return &cfg.V6
}

// FromGuest returns the host-side destination for a guest flow to dst:port
// with transport protocol proto (6 or 17 for the DNS rule; 1 or 58 for
// ping, which has no port). The second result is false if the destination
// must not be reached at all (loopback, unspecified, multicast for TCP).
func FromGuest(cfg *config.Config, proto uint8, dst netip.Addr, port uint16) (netip.Addr, bool) {
	if !dst.IsValid() || dst.IsLoopback() || dst.IsUnspecified() {
		return netip.Addr{}, false
	}
	ip := family(cfg, dst)
	if (proto == 6 || proto == 17) && (port == 53 || port == 853) &&
		ip.DNSMatch.IsValid() && dst == ip.DNSMatch && ip.DNSHost.IsValid() {
		return ip.DNSHost, true
	}
	if ip.MapHostLoopback.IsValid() && dst == ip.MapHostLoopback {
		if dst.Is4() {
			return loop4, true
		}
		return loop6, true
	}
	if ip.MapGuestAddr.IsValid() && dst == ip.MapGuestAddr && ip.Addr.IsValid() {
		return ip.Addr, true
	}
	if dst.Is6() && dst.IsLinkLocalUnicast() && ip.Template != "" {
		return dst.WithZone(ip.Template), true
	}
	return dst, true
}

// ToGuest returns the source address the guest sees for a host peer at
// peer (second table of addressing.md §2). The second result is false when
// there is no address to present (IPv4 without a gateway).
func ToGuest(cfg *config.Config, g *guest.State, peer netip.Addr) (netip.Addr, bool) {
	peer = peer.Unmap().WithZone("")
	ip := family(cfg, peer)
	switch {
	case peer == loop4 || peer == loop6:
		if ip.MapHostLoopback.IsValid() {
			return ip.MapHostLoopback, true
		}
	case ip.Addr.IsValid() && peer == ip.Addr:
		if ip.MapGuestAddr.IsValid() {
			return ip.MapGuestAddr, true
		}
	default:
		if !peer.IsLoopback() && !peer.IsUnspecified() && !isGuest(ip, g, peer) {
			return peer, true
		}
	}
	// A row above with no mapping, other loopback, unspecified or the
	// guest's own address: the gateway, or for IPv6 our link-local.
	if peer.Is4() {
		if ip.Gateway.IsValid() {
			return ip.Gateway, true
		}
		return netip.Addr{}, false
	}
	if ip.OurLL.IsValid() {
		return ip.OurLL, true
	}
	return netip.Addr{}, false
}

func isGuest(ip *config.IP, g *guest.State, a netip.Addr) bool {
	if a == ip.Addr {
		return true
	}
	if a.Is4() {
		return g.SeenV4.IsValid() && a == g.SeenV4
	}
	return (g.SeenV6.IsValid() && a == g.SeenV6) || (g.SeenV6LL.IsValid() && a == g.SeenV6LL)
}

// GuestDst returns the guest-side destination for inbound traffic of the
// family of src (the source the guest will see): the last address the guest
// used, else the assigned one; for IPv6, the link-local one when src is
// link-local.
func GuestDst(cfg *config.Config, g *guest.State, src netip.Addr) netip.Addr {
	if src.Is4() {
		if g.SeenV4.IsValid() {
			return g.SeenV4
		}
		return cfg.V4.Addr
	}
	if src.IsLinkLocalUnicast() && g.SeenV6LL.IsValid() {
		return g.SeenV6LL
	}
	if g.SeenV6.IsValid() {
		return g.SeenV6
	}
	if cfg.V6.Addr.IsValid() {
		return cfg.V6.Addr
	}
	return g.SeenV6LL
}
