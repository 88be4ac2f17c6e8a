// Package packet defines the parsed form of a frame from the guest that the
// demultiplexer hands to the protocols: offsets into the frame and the few
// fields every protocol needs, filled once by the demultiplexer after
// validation, so that no protocol parses the same headers again.
package packet

import "net/netip"

// Packet is one validated IPv4 or IPv6 packet from the guest. Everything
// points into Frame, which stays valid until the handler returns.
type Packet struct {
	Frame []byte // the whole Ethernet frame
	L3    int    // offset of the IP header
	L4    int    // offset of the transport header
	L4Len int    // transport header + payload length, from the IP header

	V6       bool
	Proto    uint8 // transport protocol (after IPv6 extension headers)
	TTL      uint8 // IPv4 TTL or IPv6 hop limit
	Src, Dst netip.Addr
	// SrcPort and DstPort are the UDP/TCP ports, or for ICMP echo the
	// identifier in SrcPort and 0 in DstPort.
	SrcPort, DstPort uint16
}

// L4Bytes returns the transport header and payload.
func (p *Packet) L4Bytes() []byte { return p.Frame[p.L4 : p.L4+p.L4Len] }

// L3Bytes returns the IP packet (header and payload, without Ethernet
// padding).
func (p *Packet) L3Bytes() []byte { return p.Frame[p.L3 : p.L4+p.L4Len] }

// Handler receives the guest's packets of one protocol in arrival order,
// one batch per call. Packets of one flow are not necessarily adjacent;
// a protocol that benefits from runs (TCP) groups them itself.
type Handler interface {
	FromGuest(pkts []Packet)
}
