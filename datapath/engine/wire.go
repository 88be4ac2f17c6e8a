package engine

import (
	"time"

	"gopasst/datapath/arp"
	"gopasst/datapath/dhcp"
	"gopasst/datapath/dhcpv6"
	"gopasst/datapath/logging"
	"gopasst/datapath/ndp"
	"gopasst/datapath/packet"
)

// wire connects the local services and the protocols to the demultiplexer
// and the loop. Service closures are made once here, so dispatching a frame
// to a service allocates nothing.
func (e *Engine) wire(o Options) error {
	cfg, g, out := e.Cfg, &e.Guest, e.Tap
	if arp.Enabled(cfg) {
		e.Demux.ARP = func(p *packet.Packet) error { return arp.Handle(cfg, g, out, p) }
	}
	if ndp.Enabled(cfg) {
		e.Demux.NDP = func(p *packet.Packet) error { return ndp.Handle(cfg, g, out, p) }
	}
	if dhcp.Enabled(cfg) {
		e.Demux.DHCP = func(p *packet.Packet) error { return dhcp.Handle(cfg, g, out, p) }
	}
	if dhcpv6.Enabled(cfg) {
		e.Demux.DHCPv6 = func(p *packet.Packet) error { return dhcpv6.Handle(cfg, g, out, p) }
	}
	// Unsolicited Router Advertisements every 200-600 s (ndp.RA sends
	// nothing with --no-ra or --config-net), the first one interval after
	// the start.
	nextRA := e.Loop.Now() + int64(ndp.NextRA())
	e.Loop.Every(time.Second, func(now int64) {
		if now >= nextRA {
			nextRA = now + int64(ndp.NextRA())
			if err := ndp.RA(cfg, g, out); err != nil {
				logging.Debugf("unsolicited RA: %v", err)
			}
		}
	})
	return e.wireProtocols(o)
}

// Announce sends what the C original sends at "tap ready": an ARP request
// and a Neighbour Solicitation for the guest's assigned addresses, from
// which the guest's MAC is learned before it speaks.
func (e *Engine) Announce() {
	if err := arp.Announce(e.Cfg, e.Tap); err != nil {
		logging.Debugf("ARP announce: %v", err)
	}
	if err := ndp.Announce(e.Cfg, &e.Guest, e.Tap); err != nil {
		logging.Debugf("NDP announce: %v", err)
	}
	e.Tap.Flush()
}
