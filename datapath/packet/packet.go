// Package packet defines the parsed form of a frame from the guest that the
// demultiplexer hands to the services and the protocols: offsets into the
// frame and the few fields every one of them needs, filled once by Parse
// after validation, so that nothing downstream parses the same headers
// again.
package packet

import (
	"encoding/binary"
	"net/netip"

	"gopasst/datapath/header"
)

// Packet is one validated frame from the guest: an ARP message, or an IPv4
// or IPv6 packet. Everything points into Frame, which stays valid until the
// handler it was given to returns.
type Packet struct {
	Frame     []byte // the whole Ethernet frame
	EtherType uint16 // header.EtherTypeARP, EtherTypeIPv4 or EtherTypeIPv6
	L3        int    // offset of the ARP message or the IP header
	L4        int    // offset of the transport header (IP only)
	L4Len     int    // transport header + payload length, from the IP header

	V6       bool
	Proto    uint8 // transport protocol (after IPv6 extension headers)
	TTL      uint8 // IPv4 TTL or IPv6 hop limit
	Src, Dst netip.Addr
	// SrcPort and DstPort are the UDP/TCP ports, or for ICMP and ICMPv6
	// the identifier field of an echo message in SrcPort and 0 in DstPort.
	SrcPort, DstPort uint16
}

// L4Bytes returns the transport header and payload.
func (p *Packet) L4Bytes() []byte { return p.Frame[p.L4 : p.L4+p.L4Len] }

// L3Bytes returns the IP packet (header and payload, without Ethernet
// padding), or the ARP message.
func (p *Packet) L3Bytes() []byte {
	if p.EtherType == header.EtherTypeARP {
		return p.Frame[p.L3:]
	}
	return p.Frame[p.L3 : p.L4+p.L4Len]
}

// Eth returns the Ethernet header view.
func (p *Packet) Eth() header.Ethernet { return header.Ethernet(p.Frame) }

// Parse validates frame once, as deep as the guest's traffic is ever read:
// Ethernet; an ARP message is only located (the ARP service reads it);
// IPv4 (fragments refused, see header.ParseIPv4) or IPv6 (extension
// headers walked); TCP and UDP headers, whose ports it records; ICMP and
// ICMPv6 messages of at least 8 bytes, whose echo identifier it records.
// Other EtherTypes and transport protocols are returned with what is
// known: Proto tells the caller what it has.
//
// frame: the guest's frame, kept by reference. Returns the packet, or the
// header package's error for the first malformed header (EtherType and
// L3 are set from the Ethernet header even then, when it was whole).
func Parse(frame []byte) (Packet, error) {
	p := Packet{Frame: frame, L3: header.EthernetLen}
	eth, err := header.ParseEthernet(frame)
	if err != nil {
		return p, err
	}
	p.EtherType = eth.Type()
	switch p.EtherType {
	case header.EtherTypeIPv4:
		ip, err := header.ParseIPv4(eth.Payload())
		if err != nil {
			return p, err
		}
		p.L4 = header.EthernetLen + ip.HeaderLen()
		p.L4Len = ip.PayloadLen()
		p.Proto, p.TTL = ip.Proto(), ip.TTL()
		p.Src, p.Dst = ip.SrcAddr(), ip.DstAddr()
	case header.EtherTypeIPv6:
		ip, proto, off, err := header.ParseIPv6(eth.Payload())
		if err != nil {
			return p, err
		}
		p.V6 = true
		p.L4 = header.EthernetLen + off
		p.L4Len = header.IPv6Len + ip.PayloadLen() - off
		p.Proto, p.TTL = proto, ip.HopLimit()
		p.Src, p.Dst = ip.SrcAddr(), ip.DstAddr()
	default:
		return p, nil
	}
	b := p.L4Bytes()
	switch p.Proto {
	case header.ProtoTCP:
		t, err := header.ParseTCP(b)
		if err != nil {
			return p, err
		}
		p.SrcPort, p.DstPort = t.SrcPort(), t.DstPort()
	case header.ProtoUDP:
		u, err := header.ParseUDP(b)
		if err != nil {
			return p, err
		}
		p.SrcPort, p.DstPort = u.SrcPort(), u.DstPort()
	case header.ProtoICMP, header.ProtoICMPv6:
		if len(b) >= 8 {
			p.SrcPort = binary.BigEndian.Uint16(b[4:])
		}
	}
	return p, nil
}

// Handler receives the guest's packets of one protocol in arrival order,
// one batch per call. Packets of one flow are not necessarily adjacent;
// a protocol that benefits from runs (TCP) groups them itself.
type Handler interface {
	FromGuest(pkts []Packet)
}
