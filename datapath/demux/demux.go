// Package demux takes the frames read from the guest in one batch, validates
// them once, learns the guest's MAC and addresses from them, answers the
// local services (ARP, NDP, DHCP, DHCPv6) and hands the remaining packets to
// the protocols, one call per protocol per batch.
//
// Theory of operation: frames are parsed in arrival order into a
// preallocated array of packet.Packet per protocol; nothing is copied and
// nothing is allocated. Handing a protocol all its packets of the batch in
// one call lets TCP find runs of one flow and write them with a single
// sendmsg. Services are answered immediately, in order, so that a DHCP reply
// is queued before any data the same batch causes. Malformed frames are
// counted and dropped: a guest can send anything, and nothing it sends may
// crash us.
package demux

import (
	"net/netip"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/packet"
)

// Service answers one packet from the guest addressed to a local service,
// parsed by the demultiplexer (the service reads its own message from it);
// it returns an error for a malformed or unexpected request.
type Service func(p *packet.Packet) error

// Demux dispatches guest frames. Fields left nil are not served (the frame
// is dropped and counted).
type Demux struct {
	cfg *config.Config
	g   *guest.State

	ARP, NDP, DHCP, DHCPv6 Service
	TCP, UDP, ICMP         packet.Handler

	tcp, udp, icmp []packet.Packet
	cur            packet.Packet // the frame being dispatched
	Stats          Stats
}

// Stats counts frames by outcome.
type Stats struct {
	Frames, Malformed, Unhandled, ServiceErrors uint64
}

// New returns a demultiplexer for batches of up to batch frames.
func New(cfg *config.Config, g *guest.State, batch int) *Demux {
	return &Demux{
		cfg:  cfg,
		g:    g,
		tcp:  make([]packet.Packet, 0, batch),
		udp:  make([]packet.Packet, 0, batch),
		icmp: make([]packet.Packet, 0, batch),
	}
}

// Batch handles a batch of frames from the guest. The frames must stay
// valid until Batch returns.
func (d *Demux) Batch(frames [][]byte) {
	for _, f := range frames {
		d.Stats.Frames++
		if err := d.frame(f); err != nil {
			d.Stats.Malformed++
			if logging.Tracing() {
				logging.Tracef("guest frame dropped: %v", err)
			}
		}
	}
	d.cur = packet.Packet{} // drop the reference to the last frame
	if len(d.tcp) > 0 {
		if d.TCP != nil {
			d.TCP.FromGuest(d.tcp)
		}
		clear(d.tcp) // drop references to the frames
		d.tcp = d.tcp[:0]
	}
	if len(d.udp) > 0 {
		if d.UDP != nil {
			d.UDP.FromGuest(d.udp)
		}
		clear(d.udp)
		d.udp = d.udp[:0]
	}
	if len(d.icmp) > 0 {
		if d.ICMP != nil {
			d.ICMP.FromGuest(d.icmp)
		}
		clear(d.icmp)
		d.icmp = d.icmp[:0]
	}
}

func (d *Demux) service(s Service, p *packet.Packet) {
	if s == nil {
		d.Stats.Unhandled++
		return
	}
	if err := s(p); err != nil {
		d.Stats.ServiceErrors++
		if logging.Debugging() {
			logging.Debugf("local service: %v", err)
		}
	}
}

// frame validates one frame (packet.Parse: every header the datapath
// reads) and dispatches it.
func (d *Demux) frame(f []byte) error {
	// Parsed into the Demux's own packet: a pointer to a local one would
	// escape through the service closures, an allocation per frame.
	var err error
	d.cur, err = packet.Parse(f)
	p := &d.cur
	if len(f) >= header.EthernetLen {
		// The source MAC counts even when what follows is malformed.
		if src := header.Ethernet(f).Src(); src[0]&1 == 0 {
			d.g.MAC = src
		}
	}
	if err != nil {
		return err
	}
	switch p.EtherType {
	case header.EtherTypeARP:
		if d.cfg.V4.Enabled {
			d.service(d.ARP, p)
		}
		return nil
	case header.EtherTypeIPv4:
		if d.cfg.V4.Enabled {
			d.ipv4(p)
		}
		return nil
	case header.EtherTypeIPv6:
		if d.cfg.V6.Enabled {
			d.ipv6(p)
		}
		return nil
	}
	d.Stats.Unhandled++
	return nil
}

// ipv4 dispatches a valid IPv4 packet. (Fragments never get here:
// packet.Parse refuses them, as the host sockets reassemble nothing for us
// and the guest's MTU is ours, so a fragment is a guest misconfiguration.)
func (d *Demux) ipv4(p *packet.Packet) {
	if p.Proto == header.ProtoUDP && p.DstPort == 67 {
		// Every guest datagram to port 67 is DHCP's, whatever its
		// addresses (a client has none yet).
		if !d.cfg.NoDHCP {
			d.service(d.DHCP, p)
		}
		return
	}
	if p.Src.IsLoopback() || p.Dst.IsLoopback() {
		d.Stats.Unhandled++
		return
	}
	if !p.Src.IsUnspecified() && !d.cfg.V4.AddrFixed {
		d.g.SeenV4 = p.Src
	}
	d.l4(p)
}

// ipv6 dispatches a valid IPv6 packet.
func (d *Demux) ipv6(p *packet.Packet) {
	if p.Src.IsLoopback() || p.Dst.IsLoopback() {
		d.Stats.Unhandled++
		return
	}
	d.learn6(p.Src)
	if p.Proto == header.ProtoICMPv6 && p.L4Len >= 4 {
		t := p.Frame[p.L4]
		if t >= header.ICMPv6RouterSolicit && t <= header.ICMPv6NeighborAdvert {
			if !d.cfg.NoNDP && !d.cfg.NoICMP {
				d.service(d.NDP, p)
			}
			return
		}
	}
	if p.Proto == header.ProtoUDP && p.DstPort == 547 {
		if !d.cfg.NoDHCPv6 {
			d.service(d.DHCPv6, p)
		}
		return
	}
	d.l4(p)
}

// learn6 records the guest's IPv6 source addresses (addressing.md §5).
func (d *Demux) learn6(src netip.Addr) {
	switch {
	case src.IsUnspecified() || src.IsMulticast():
	case src.IsLinkLocalUnicast():
		d.g.SeenV6LL = src
		if !d.g.SeenV6.IsValid() {
			d.g.SeenV6 = src
		}
	case !d.cfg.V6.AddrFixed:
		d.g.SeenV6 = src
	}
}

// l4 queues a packet for its protocol.
func (d *Demux) l4(p *packet.Packet) {
	switch p.Proto {
	case header.ProtoTCP:
		if !d.cfg.NoTCP {
			d.tcp = append(d.tcp, *p)
		}
	case header.ProtoUDP:
		if !d.cfg.NoUDP {
			d.udp = append(d.udp, *p)
		}
	case header.ProtoICMP, header.ProtoICMPv6:
		b := p.L4Bytes()
		if d.cfg.NoICMP || (p.Proto == header.ProtoICMP) == p.V6 || len(b) < 8 {
			d.Stats.Unhandled++
			return
		}
		// Only echo requests are forwarded (addressing.md §7).
		if (!p.V6 && b[0] != header.ICMPv4EchoRequest) || (p.V6 && b[0] != header.ICMPv6EchoRequest) {
			d.Stats.Unhandled++
			return
		}
		d.icmp = append(d.icmp, *p)
	default:
		d.Stats.Unhandled++
	}
}
