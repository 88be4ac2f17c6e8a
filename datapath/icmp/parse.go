// Parsers for what the host sockets return: echo replies with or without
// the IPv4 header, and source addresses. Every length is checked: a raw
// socket hands us whatever arrived.
package icmp

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"

	"gopasst/datapath/header"
)

var (
	errNotReply    = errors.New("icmp: not an echo reply")
	errShort       = errors.New("icmp: message too short")
	errNotICMP     = errors.New("icmp: IPv4 packet is not ICMP")
	errBadSockaddr = errors.New("icmp: malformed source address")
)

// echoReply is a parsed echo reply.
type echoReply struct {
	id, seq uint16
	data    []byte // the bytes after the 8-byte header
}

// parseEcho parses an ICMP or ICMPv6 echo reply as a ping socket or a raw
// ICMPv6 socket returns it (starting at the ICMP header).
//
// b: the message; v6: ICMPv6. Returns the reply or an error.
func parseEcho(b []byte, v6 bool) (echoReply, error) {
	if len(b) < header.ICMPv4MinLen {
		return echoReply{}, errShort
	}
	want := header.ICMPv4EchoReply
	if v6 {
		want = header.ICMPv6EchoReply
	}
	if b[0] != want || b[1] != 0 {
		return echoReply{}, errNotReply
	}
	return echoReply{
		id:   binary.BigEndian.Uint16(b[4:]),
		seq:  binary.BigEndian.Uint16(b[6:]),
		data: b[header.ICMPv4MinLen:],
	}, nil
}

// parseRaw4 parses what a raw IPv4 ICMP socket returns: the IPv4 header,
// then the ICMP message.
//
// b: the packet. Returns the source address, the reply, or an error.
func parseRaw4(b []byte) (netip.Addr, echoReply, error) {
	ip, err := header.ParseIPv4(b)
	if err != nil {
		return netip.Addr{}, echoReply{}, err
	}
	if ip.Proto() != header.ProtoICMP {
		return netip.Addr{}, echoReply{}, errNotICMP
	}
	r, err := parseEcho(ip.Payload(), false)
	return ip.SrcAddr(), r, err
}

// parseSource reads the address of a struct sockaddr_in or sockaddr_in6.
//
// b: the address bytes as recvfrom wrote them. Returns the address
// (IPv4-mapped unmapped, no zone) or an error.
func parseSource(b []byte) (netip.Addr, error) {
	if len(b) < 2 {
		return netip.Addr{}, errBadSockaddr
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) < 8 {
			return netip.Addr{}, errBadSockaddr
		}
		return netip.AddrFrom4([4]byte(b[4:8])), nil
	case unix.AF_INET6:
		if len(b) < 24 {
			return netip.Addr{}, errBadSockaddr
		}
		return netip.AddrFrom16([16]byte(b[8:24])).Unmap(), nil
	}
	return netip.Addr{}, errBadSockaddr
}
