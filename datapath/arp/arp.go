// Package arp is gopasst's ARP responder (RFC 826) for the guest's IPv4
// link.
//
// # Theory of operation
//
// The guest sees one Ethernet link on which every IPv4 address except its
// own is reachable through us, so we act as a proxy for all of them
// (addressing.md §5): every Ethernet/IPv4 ARP request from the guest is
// answered with our MAC, except
//   - announcements (sender address equal to target address, non-zero),
//     which need no answer, and
//   - requests for the guest's own assigned address: answering those would
//     make the guest's duplicate address detection fail.
//
// RFC 5227 probes (sender address 0.0.0.0) for any other address are
// answered like any request, which tells a probing guest that the address
// is in use.
//
// The reply swaps sender and target: its target is the requester's
// hardware and protocol address (0.0.0.0 for a probe), its sender our MAC
// and the address asked for; it goes to the Ethernet source of the request.
// The host's neighbour table is not mirrored here: every answer carries
// cfg.OurMAC.
//
// At "tap ready" the event loop calls Announce once: an ARP request for the
// guest's assigned address from the gateway address, which makes the guest
// answer (so that we learn its MAC) and learn our MAC for the gateway.
//
// Handle and Announce run on the event loop's thread, write at most one
// frame each through tap.Out and allocate nothing.
package arp

import (
	"errors"
	"fmt"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
)

// frameLen is the length of the frames we send: Ethernet header and an
// Ethernet/IPv4 ARP packet. No padding to the 60-byte Ethernet minimum:
// tap devices and the qemu socket do not need it.
const frameLen = header.EthernetLen + header.ARPLen

// ErrDisabled is returned by Handle when IPv4 is off (-6, or no IPv4
// addressing): there is nothing to resolve on the link.
var ErrDisabled = errors.New("arp: IPv4 disabled")

// Enabled reports whether the dispatcher should hand ARP frames to Handle:
// IPv4 enabled.
func Enabled(cfg *config.Config) bool { return cfg.V4.Enabled }

// Handle answers one ARP frame from the guest.
//
// cfg: configuration (V4.Addr, OurMAC); g: learned guest state (unused:
// replies go to the request's Ethernet source); out: where the reply is
// queued; p: the frame as packet.Parse made it, EtherType ARP.
// Returns nil when the frame was handled, whether or not it needed a reply
// (non-requests, announcements and requests for the guest's own address
// are silently consumed), ErrDisabled with IPv4 off, or an error for a
// malformed frame.
func Handle(cfg *config.Config, g *guest.State, out tap.Out, p *packet.Packet) error {
	if !Enabled(cfg) {
		return ErrDisabled
	}
	if p.EtherType != header.EtherTypeARP {
		return fmt.Errorf("arp: EtherType %#04x", p.EtherType)
	}
	eth := p.Eth()
	a, err := header.ParseARP(p.L3Bytes())
	if err != nil {
		return fmt.Errorf("arp: %w", err)
	}
	if a.Op() != header.ARPRequest {
		return nil
	}
	sip, tip := a.SenderIP(), a.TargetIP()
	if sip != ([4]byte{}) && sip == tip {
		return nil // announcement (gratuitous ARP)
	}
	if cfg.V4.Addr.Is4() && tip == cfg.V4.Addr.As4() {
		return nil // the guest's own address: let its DAD succeed
	}
	b := out.Frame()
	if len(b) < frameLen {
		return fmt.Errorf("arp: frame buffer of %d bytes", len(b))
	}
	n := header.EncodeEthernet(b, eth.Src(), cfg.OurMAC, header.EtherTypeARP)
	n += header.EncodeARP(b[n:], header.ARPReply, cfg.OurMAC, tip, a.SenderMAC(), sip)
	out.Commit(n)
	return nil
}

// Announce sends, at "tap ready", an ARP request for the guest's assigned
// address with the gateway as sender, to the Ethernet broadcast address
// (addressing.md §5). Nothing is sent unless IPv4 is enabled with both an
// address and a gateway.
//
// cfg: configuration (V4, OurMAC); out: where the request is queued.
// Returns an error only if the back end's frame buffer is too small.
func Announce(cfg *config.Config, out tap.Out) error {
	if !cfg.V4.Enabled || !cfg.V4.Addr.Is4() || !cfg.V4.Gateway.Is4() {
		return nil
	}
	b := out.Frame()
	if len(b) < frameLen {
		return fmt.Errorf("arp: frame buffer of %d bytes", len(b))
	}
	n := header.EncodeEthernet(b, guest.BroadcastMAC, cfg.OurMAC, header.EtherTypeARP)
	// Target hardware address: broadcast, as the C original sends it
	// (RFC 826 leaves it unspecified in requests).
	n += header.EncodeARP(b[n:], header.ARPRequest, cfg.OurMAC, cfg.V4.Gateway.As4(),
		guest.BroadcastMAC, cfg.V4.Addr.As4())
	out.Commit(n)
	return nil
}
