// Frame builders for protocol tests: Ethernet frames carrying one IPv4 or
// IPv6 packet, made with header's own encoders and checksums (not the
// protocol's), and frames captured from real guests kept in testdata.
package taptest

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"

	"gopasst/datapath/header"
	"gopasst/datapath/packet"
)

// IP describes the Ethernet and IP headers of a frame built by Frame or
// Packet.
type IP struct {
	MACDst, MACSrc [6]byte
	Src, Dst       netip.Addr // both IPv4 or both IPv6: Src's family is the frame's
	Proto          uint8      // the transport protocol (IPv6: next header)
	TTL            uint8      // IPv4 TTL or IPv6 hop limit
	DF             bool       // IPv4 don't-fragment flag
}

// Frame builds the Ethernet frame: the headers h describes (no IPv4
// options, no IPv6 extension headers), then l4. For UDP, ICMP and ICMPv6
// it computes the transport checksum, l4's checksum field being ignored.
//
// l4: the transport header and payload, copied. Returns the new frame.
func (h IP) Frame(l4 []byte) []byte {
	v6 := h.Src.Is6()
	l3, et := header.IPv4MinLen, header.EtherTypeIPv4
	if v6 {
		l3, et = header.IPv6Len, header.EtherTypeIPv6
	}
	b := make([]byte, header.EthernetLen+l3+len(l4))
	n := header.EncodeEthernet(b, h.MACDst, h.MACSrc, et)
	var s4, d4 [4]byte
	s6, d6 := h.Src.As16(), h.Dst.As16()
	if v6 {
		n += header.EncodeIPv6(b[n:], header.IPv6Fields{PayloadLen: len(l4), NextHeader: h.Proto,
			HopLimit: h.TTL, Src: s6, Dst: d6})
	} else {
		s4, d4 = h.Src.As4(), h.Dst.As4()
		n += header.EncodeIPv4(b[n:], header.IPv4Fields{DF: h.DF, TTL: h.TTL, Proto: h.Proto,
			Src: s4, Dst: d4, PayloadLen: len(l4)})
	}
	m := b[n:]
	copy(m, l4)
	switch {
	case h.Proto == header.ProtoUDP && v6:
		header.UDP(m).SetChecksumIPv6(&s6, &d6)
	case h.Proto == header.ProtoUDP:
		header.UDP(m).SetChecksumIPv4(s4, d4)
	case h.Proto == header.ProtoICMPv6:
		header.ICMPv6(m).SetChecksum(&s6, &d6)
	case h.Proto == header.ProtoICMP:
		header.ICMPv4(m).SetChecksum()
	}
	return b
}

// Packet builds the frame as Frame does and returns it as the
// demultiplexer hands it to a protocol: offsets, addresses, and for UDP
// the ports or for ICMP and ICMPv6 the echo identifier (in SrcPort).
//
// l4: the transport header and payload (at least 8 bytes for UDP and
// ICMP). Returns the packet.
func (h IP) Packet(l4 []byte) packet.Packet {
	l3 := header.IPv4MinLen
	if h.Src.Is6() {
		l3 = header.IPv6Len
	}
	p := packet.Packet{Frame: h.Frame(l4), L3: header.EthernetLen, L4: header.EthernetLen + l3,
		L4Len: len(l4), V6: h.Src.Is6(), Proto: h.Proto, TTL: h.TTL, Src: h.Src, Dst: h.Dst}
	switch h.Proto {
	case header.ProtoUDP:
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	case header.ProtoICMP, header.ProtoICMPv6:
		p.SrcPort = binary.BigEndian.Uint16(l4[4:])
	}
	return p
}

// UDP returns a UDP header and payload with a zero checksum, for Frame to
// fill in.
//
// sport, dport: the ports; payload: copied after the header. Returns the
// datagram.
func UDP(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, header.UDPLen+len(payload))
	header.EncodeUDP(b, sport, dport, len(payload))
	copy(b[header.UDPLen:], payload)
	return b
}

// Captured reads a frame captured from a real guest, kept as hex (spaces
// and line breaks ignored, lines starting with '#' comments) in
// testdata/name.hex of the package under test. It fails the test if the
// file cannot be read or decoded.
//
// t: the test, benchmark or fuzz target; name: the file's name without
// directory and extension. Returns the frame.
func Captured(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".hex")
	if err != nil {
		t.Fatal(err)
	}
	var s strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "#") {
			s.WriteString(strings.ReplaceAll(l, " ", ""))
		}
	}
	f, err := hex.DecodeString(s.String())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Parsed returns frame as packet.Parse makes it for the services and the
// protocols, or Parse's error: what the demultiplexer drops before anything
// sees it. For tests that build or capture whole frames.
func Parsed(frame []byte) (*packet.Packet, error) {
	p, err := packet.Parse(frame)
	if err != nil {
		return nil, err
	}
	return &p, nil
}
