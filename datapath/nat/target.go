// The decision point for new flows: where the other side of a flow goes.

package nat

import (
	"net/netip"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
)

// Pif is where one side of a flow lives: the C original's "passt
// interface".
type Pif uint8

const (
	// PifNone: nowhere; the flow is refused.
	PifNone Pif = iota
	// PifTap: the guest, through the guest back end (frames).
	PifTap
	// PifHost: a socket in the host's network namespace.
	PifHost
	// PifSplice: a socket in pasta's namespace on the loopback path,
	// spliced to a host socket: bytes moved by the kernel, no frames
	// (the listeners of -T/-U, and the namespace end of host loopback
	// connections to -t/-u ports).
	PifSplice
)

// String names p for logs.
func (p Pif) String() string {
	switch p {
	case PifTap:
		return "tap"
	case PifHost:
		return "host"
	case PifSplice:
		return "splice"
	}
	return "none"
}

// Side is one side of a flow as seen where it lives: for the side that
// started the flow, Src is the peer that started it and Dst where it went;
// for the target side, Src is our end (the address and port a host socket
// binds, unspecified for the kernel's choice; the address the guest sees
// the flow come from) and Dst the far end.
type Side struct {
	Pif              Pif
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	// Dev is the device a host socket binds to (--outbound-if), "" for
	// none. Host target sides only.
	Dev string
	// Scope is the IPv6 scope id of a link-local Dst on the host (the
	// template interface's index), 0 otherwise. Host target sides only.
	Scope uint32
}

// Rule is what Target needs of the forwarding rule whose listener accepted
// an inbound flow (fwd.Rule, reduced to the listened port).
type Rule struct {
	To    uint16     // the guest's port for the listened one
	TAddr netip.Addr // fixed guest address, invalid for the default
}

// Target decides where the other side of a new flow goes, and with which
// addresses, from the side that started it: the C original's flow target
// step (fwd_nat_from_tap, fwd_nat_from_host, fwd_nat_from_splice). TCP,
// UDP and ICMP call it once per new connection or flow, before they
// create anything, and build what the answer says; nothing else decides a
// flow's path.
//
//   - From the guest (ini.Pif PifTap): a host socket to the destination
//     as addressing.md §2 translates it (FromGuest), from the -o address
//     of the family unless the destination is loopback, bound to the
//     --outbound-if device unless loopback, the guest's source port kept
//     (UDP binds it when it can).
//   - From a host socket on a forwarding rule's listener (PifHost, rule
//     not nil): a peer on the host's loopback, with the rule naming no
//     target address and splicing on (pasta without --no-splice), goes
//     to the splice path (PifSplice): a socket in the namespace connects
//     to the namespace's own address (the one it uses, else the one
//     assigned), or with --host-lo-to-ns-lo to the loopback address the
//     peer used; the source is the kernel's choice (UDP: the same). Every
//     other peer goes to the guest, which sees it at ToGuest's address
//     and is reached at the rule's fixed address, the group address a UDP
//     datagram was sent to, or the address it uses (GuestDst); with
//     --splice-only such peers are refused.
//   - From a socket in the namespace on a -T/-U listener (PifSplice, rule
//     not nil): only loopback to loopback is forwarded, to the same
//     loopback address of the host (PifHost); TCP's source is the
//     kernel's choice, UDP's the client's own address and port, as the C
//     original binds it. A namespace client that reached the listener at
//     a non-loopback address is refused.
//
// ini.Dst must be the local address the flow reached for a PifSplice
// initiator and for a loopback PifHost peer (the listener's address, or
// getsockname/PKTINFO for a wildcard listener); elsewhere it may be
// unspecified.
//
// cfg, g: configuration and learned guest addresses; proto: the IP
// protocol (6, 17, 1 or 58: the DNS redirection applies to 6 and 17);
// ini: the initiating side; rule: the listener's rule for inbound flows,
// nil from the guest. Returns the target side, with Pif PifNone when the
// flow must be refused (unreachable, a family without an address to
// present, a destination the guest may not reach).
func Target(cfg *config.Config, g *guest.State, proto uint8, ini *Side, rule *Rule) Side {
	switch ini.Pif {
	case PifTap:
		return fromTap(cfg, proto, ini)
	case PifHost:
		if rule != nil {
			if Splices(cfg, ini.Src, rule) {
				return hostToSplice(cfg, g, proto, ini, rule)
			}
			if cfg.SpliceOnly {
				return Side{}
			}
			return fromHost(cfg, g, ini, rule)
		}
	case PifSplice:
		if rule != nil {
			return spliceToHost(proto, ini, rule)
		}
	}
	return Side{}
}

// fromTap is Target for a flow the guest started.
func fromTap(cfg *config.Config, proto uint8, ini *Side) Side {
	dst, ok := FromGuest(cfg, proto, ini.Dst, ini.DstPort)
	if !ok {
		return Side{}
	}
	ip := family(cfg, dst)
	t := Side{Pif: PifHost, Dst: dst.WithZone(""), DstPort: ini.DstPort, SrcPort: ini.SrcPort}
	t.Src = netip.IPv4Unspecified()
	if dst.Is6() {
		t.Src = netip.IPv6Unspecified()
	}
	if !dst.IsLoopback() {
		if ip.Outbound.IsValid() && ip.Outbound.Is4() == dst.Is4() {
			t.Src = ip.Outbound
		}
		t.Dev = ip.OutboundIf
	}
	if dst.Is6() && (dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast()) {
		t.Scope = uint32(ip.TemplateIx)
	}
	return t
}

// fromHost is Target for a flow a host peer started on a forwarding
// rule's listener.
func fromHost(cfg *config.Config, g *guest.State, ini *Side, rule *Rule) Side {
	peer, local := ini.Src.Unmap(), ini.Dst.Unmap()
	if ini.SrcPort == 0 || !peer.IsValid() || peer.IsUnspecified() || peer.IsMulticast() ||
		(local.IsValid() && local.Is4() != peer.Is4()) {
		return Side{}
	}
	src, ok := ToGuest(cfg, g, peer)
	if !ok || src.Is4() != peer.Is4() {
		return Side{}
	}
	var dst netip.Addr
	switch {
	case rule.TAddr.IsValid():
		dst = rule.TAddr
	case local.IsMulticast() || local == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		// A datagram to a group keeps its destination: the guest
		// hears it as the group's member it is.
		dst = local
	default:
		dst = GuestDst(cfg, g, src)
	}
	if !dst.IsValid() || dst.Is4() != src.Is4() {
		return Side{}
	}
	return Side{Pif: PifTap, Src: src, Dst: dst, SrcPort: ini.SrcPort, DstPort: rule.To}
}

// Splices reports whether a flow from peer on a host listener of rule
// takes the splice path: pasta with splicing on, a loopback peer (127/8,
// ::1, or IPv4-mapped loopback) and no fixed target address in the rule.
// Listeners call it before they learn their local address, which only the
// splice path needs.
func Splices(cfg *config.Config, peer netip.Addr, rule *Rule) bool {
	return cfg.Mode == config.ModePasta && !cfg.NoSplice && !rule.TAddr.IsValid() && peer.Unmap().IsLoopback()
}

// hostToSplice is Target for a loopback host peer on a -t/-u listener
// (addressing.md §2, pasta loopback cases, first row).
func hostToSplice(cfg *config.Config, g *guest.State, proto uint8, ini *Side, rule *Rule) Side {
	peer, local := ini.Src.Unmap(), ini.Dst.Unmap()
	if ini.SrcPort == 0 || (local.IsValid() && local.Is4() != peer.Is4()) {
		return Side{}
	}
	var dst netip.Addr
	switch {
	case cfg.HostLoToNSLo && local.IsLoopback():
		dst = local
	case cfg.HostLoToNSLo:
		dst = loopbackOf(peer)
	default:
		// The namespace's address, as the C original: the one the
		// namespace was seen using, else the one it was given. None
		// (an address-less family): its loopback still reaches a
		// server bound to the wildcard.
		dst = GuestDst(cfg, g, peer)
		if !dst.IsValid() || dst.Is4() != peer.Is4() || dst.IsLinkLocalUnicast() {
			dst = loopbackOf(peer)
		}
	}
	t := Side{Pif: PifSplice, Src: unspecifiedOf(peer), Dst: dst, DstPort: rule.To}
	return t
}

// spliceToHost is Target for a namespace client on a -T/-U listener
// (addressing.md §2, pasta loopback cases, second and third rows).
func spliceToHost(proto uint8, ini *Side, rule *Rule) Side {
	peer, local := ini.Src.Unmap(), ini.Dst.Unmap()
	if ini.SrcPort == 0 || !peer.IsLoopback() || !local.IsLoopback() || local.Is4() != peer.Is4() {
		return Side{}
	}
	t := Side{Pif: PifHost, Src: unspecifiedOf(peer), Dst: local, DstPort: rule.To}
	if proto == 17 {
		// UDP: bound to the client's loopback address and port, so that
		// a host server sees the client it would see without us.
		t.Src, t.SrcPort = peer, ini.SrcPort
	}
	return t
}

// loopbackOf returns the loopback address of a's family.
func loopbackOf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return loop4
	}
	return loop6
}

// unspecifiedOf returns the unspecified address of a's family.
func unspecifiedOf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
