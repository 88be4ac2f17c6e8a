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

// Service answers one frame from the guest addressed to a local service;
// it returns an error for a malformed or unexpected request.
type Service func(frame []byte) error

// Demux dispatches guest frames. Fields left nil are not served (the frame
// is dropped and counted).
type Demux struct {
	cfg *config.Config
	g   *guest.State

	ARP, NDP, DHCP, DHCPv6 Service
	TCP, UDP, ICMP         packet.Handler

	tcp, udp, icmp []packet.Packet
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

func (d *Demux) service(s Service, f []byte) {
	if s == nil {
		d.Stats.Unhandled++
		return
	}
	if err := s(f); err != nil {
		d.Stats.ServiceErrors++
		if logging.Debugging() {
			logging.Debugf("local service: %v", err)
		}
	}
}

// frame validates one frame and dispatches it.
func (d *Demux) frame(f []byte) error {
	eth, err := header.ParseEthernet(f)
	if err != nil {
		return err
	}
	if src := eth.Src(); src[0]&1 == 0 {
		d.g.MAC = src
	}
	switch eth.Type() {
	case header.EtherTypeARP:
		if d.cfg.V4.Enabled {
			d.service(d.ARP, f)
		}
		return nil
	case header.EtherTypeIPv4:
		if !d.cfg.V4.Enabled {
			return nil
		}
		return d.ipv4(f)
	case header.EtherTypeIPv6:
		if !d.cfg.V6.Enabled {
			return nil
		}
		return d.ipv6(f)
	}
	d.Stats.Unhandled++
	return nil
}

func (d *Demux) ipv4(f []byte) error {
	ip, err := header.ParseIPv4(f[header.EthernetLen:])
	if err != nil {
		return err
	}
	p := packet.Packet{
		Frame: f,
		L3:    header.EthernetLen,
		L4:    header.EthernetLen + ip.HeaderLen(),
		L4Len: ip.PayloadLen(),
		Proto: ip.Proto(),
		TTL:   ip.TTL(),
		Src:   ip.SrcAddr(),
		Dst:   ip.DstAddr(),
	}
	if ip.FlagsOffset()&0x3fff != 0 {
		// Fragments: the host sockets reassemble nothing for us and the
		// guest's MTU is ours, so a fragment is a guest misconfiguration.
		d.Stats.Unhandled++
		return nil
	}
	if p.Proto == header.ProtoUDP && p.L4Len >= header.UDPLen &&
		ip.Payload()[2] == 0 && ip.Payload()[3] == 67 {
		// Every guest datagram to port 67 is DHCP's, whatever its
		// addresses (a client has none yet).
		if !d.cfg.NoDHCP {
			d.service(d.DHCP, f)
		}
		return nil
	}
	if p.Src.IsLoopback() || p.Dst.IsLoopback() {
		d.Stats.Unhandled++
		return nil
	}
	if !p.Src.IsUnspecified() && !d.cfg.V4.AddrFixed {
		d.g.SeenV4 = p.Src
	}
	return d.l4(&p)
}

func (d *Demux) ipv6(f []byte) error {
	ip, proto, off, err := header.ParseIPv6(f[header.EthernetLen:])
	if err != nil {
		return err
	}
	p := packet.Packet{
		Frame: f,
		V6:    true,
		L3:    header.EthernetLen,
		L4:    header.EthernetLen + off,
		L4Len: header.IPv6Len + ip.PayloadLen() - off,
		Proto: proto,
		TTL:   ip.HopLimit(),
		Src:   ip.SrcAddr(),
		Dst:   ip.DstAddr(),
	}
	if p.Src.IsLoopback() || p.Dst.IsLoopback() {
		d.Stats.Unhandled++
		return nil
	}
	d.learn6(p.Src)
	if proto == header.ProtoICMPv6 && p.L4Len >= 4 {
		t := f[p.L4]
		if t >= 133 && t <= 136 {
			if !d.cfg.NoNDP && !d.cfg.NoICMP {
				d.service(d.NDP, f)
			}
			return nil
		}
	}
	if proto == header.ProtoUDP && p.L4Len >= header.UDPLen &&
		f[p.L4+2] == 547>>8 && f[p.L4+3] == 547&0xff {
		if !d.cfg.NoDHCPv6 {
			d.service(d.DHCPv6, f)
		}
		return nil
	}
	return d.l4(&p)
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

// l4 checks the transport header and queues the packet for its protocol.
func (d *Demux) l4(p *packet.Packet) error {
	b := p.L4Bytes()
	switch p.Proto {
	case header.ProtoTCP:
		if d.cfg.NoTCP {
			return nil
		}
		t, err := header.ParseTCP(b)
		if err != nil {
			return err
		}
		p.SrcPort, p.DstPort = t.SrcPort(), t.DstPort()
		d.tcp = append(d.tcp, *p)
	case header.ProtoUDP:
		if d.cfg.NoUDP {
			return nil
		}
		u, err := header.ParseUDP(b)
		if err != nil {
			return err
		}
		p.SrcPort, p.DstPort = u.SrcPort(), u.DstPort()
		d.udp = append(d.udp, *p)
	case header.ProtoICMP, header.ProtoICMPv6:
		if d.cfg.NoICMP || (p.Proto == header.ProtoICMP) == p.V6 || len(b) < 8 {
			d.Stats.Unhandled++
			return nil
		}
		// Only echo requests are forwarded (addressing.md §7).
		if (!p.V6 && b[0] != 8) || (p.V6 && b[0] != 128) {
			d.Stats.Unhandled++
			return nil
		}
		p.SrcPort = uint16(b[4])<<8 | uint16(b[5])
		d.icmp = append(d.icmp, *p)
	default:
		d.Stats.Unhandled++
	}
	return nil
}
