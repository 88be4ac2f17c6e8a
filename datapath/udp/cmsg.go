// Parsers for what the kernel hands back beside datagrams: control messages
// (IP_PKTINFO/IPV6_PKTINFO on listeners, IP_RECVERR/IPV6_RECVERR on the
// error queue). They are written against bytes, not x/sys helpers
// (unix.ParseSocketControlMessage allocates), and check every length, since
// a malformed control buffer must never crash us.
package udp

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

var (
	errCmsgTrunc    = errors.New("udp: truncated control message")
	errNoRecvErr    = errors.New("udp: no IP_RECVERR control message")
	errBadOffender  = errors.New("udp: malformed offender address")
	errNoPktinfo    = errors.New("udp: no packet information control message")
	errBadSockaddr  = errors.New("udp: malformed socket address")
	errSockaddrFam  = errors.New("udp: unexpected address family")
	errRecvErrShort = errors.New("udp: short extended error")
)

// cmsgAlign rounds n up to the alignment of control message headers and
// data (the size of a long on Linux).
func cmsgAlign(n int) int {
	const a = unix.SizeofPtr
	return (n + a - 1) &^ (a - 1)
}

// nextCmsg splits the first control message off b.
//
// b: the control buffer (msg_control up to msg_controllen). Returns the
// message's level and type, its data, the bytes after it, and an error if
// the header or its length field do not fit in b. An empty b returns
// errCmsgTrunc.
func nextCmsg(b []byte) (level, typ int32, data, rest []byte, err error) {
	if len(b) < unix.SizeofCmsghdr {
		return 0, 0, nil, nil, errCmsgTrunc
	}
	// struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }
	var l uint64
	if unix.SizeofPtr == 8 {
		l = binary.NativeEndian.Uint64(b[0:])
	} else {
		l = uint64(binary.NativeEndian.Uint32(b[0:]))
	}
	if l < unix.SizeofCmsghdr || l > uint64(len(b)) {
		return 0, 0, nil, nil, errCmsgTrunc
	}
	off := unix.SizeofPtr
	level = int32(binary.NativeEndian.Uint32(b[off:]))
	typ = int32(binary.NativeEndian.Uint32(b[off+4:]))
	data = b[cmsgAlign(unix.SizeofCmsghdr):l]
	next := cmsgAlign(int(l))
	if next > len(b) {
		next = len(b)
	}
	return level, typ, data, b[next:], nil
}

// sizeofExtendedErr is sizeof(struct sock_extended_err).
const sizeofExtendedErr = 16

// recvErr is an extended socket error from the error queue (struct
// sock_extended_err and the offender address after it).
type recvErr struct {
	Errno    uint32
	Origin   uint8 // SO_EE_ORIGIN_*
	Type     uint8 // ICMP/ICMPv6 type, for the ICMP origins
	Code     uint8
	Info     uint32     // MTU for fragmentation needed / packet too big
	Offender netip.Addr // the node that sent the error; invalid if none
}

// parseRecvErr finds the IP_RECVERR or IPV6_RECVERR control message in a
// control buffer read with MSG_ERRQUEUE.
//
// ctrl: the control bytes. Returns the error it describes, or an error if
// there is none or it is malformed.
func parseRecvErr(ctrl []byte) (recvErr, error) {
	for len(ctrl) > 0 {
		level, typ, data, rest, err := nextCmsg(ctrl)
		if err != nil {
			return recvErr{}, err
		}
		ctrl = rest
		if !(level == unix.SOL_IP && typ == unix.IP_RECVERR) &&
			!(level == unix.SOL_IPV6 && typ == unix.IPV6_RECVERR) {
			continue
		}
		// struct sock_extended_err: u32 errno; u8 origin, type, code,
		// pad; u32 info; u32 data; then (SO_EE_OFFENDER) a sockaddr.
		if len(data) < sizeofExtendedErr {
			return recvErr{}, errRecvErrShort
		}
		e := recvErr{
			Errno:  binary.NativeEndian.Uint32(data[0:]),
			Origin: data[4],
			Type:   data[5],
			Code:   data[6],
			Info:   binary.NativeEndian.Uint32(data[8:]),
		}
		off := data[sizeofExtendedErr:]
		if len(off) < 2 {
			return e, nil
		}
		switch binary.NativeEndian.Uint16(off) {
		case unix.AF_UNSPEC:
		case unix.AF_INET, unix.AF_INET6:
			a, _, err := parseSockaddr(off)
			if err != nil {
				return recvErr{}, errBadOffender
			}
			e.Offender = a
		default:
			return recvErr{}, errBadOffender
		}
		return e, nil
	}
	return recvErr{}, errNoRecvErr
}

// parsePktinfo finds the destination address of a received datagram in its
// control messages: IP_PKTINFO's ipi_addr (the header destination, which for
// a broadcast or multicast datagram is the group, not a local address) or
// IPV6_PKTINFO's ipi6_addr.
//
// ctrl: the control bytes of one datagram. Returns the address (IPv4-mapped
// addresses unmapped), or an error if there is no such message or it is
// malformed.
func parsePktinfo(ctrl []byte) (netip.Addr, error) {
	for len(ctrl) > 0 {
		level, typ, data, rest, err := nextCmsg(ctrl)
		if err != nil {
			return netip.Addr{}, err
		}
		ctrl = rest
		switch {
		case level == unix.SOL_IP && typ == unix.IP_PKTINFO:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			if len(data) < unix.SizeofInet4Pktinfo {
				return netip.Addr{}, errCmsgTrunc
			}
			return netip.AddrFrom4([4]byte(data[8:12])), nil
		case level == unix.SOL_IPV6 && typ == unix.IPV6_PKTINFO:
			// struct in6_pktinfo { in6_addr addr; int ifindex; }
			if len(data) < unix.SizeofInet6Pktinfo {
				return netip.Addr{}, errCmsgTrunc
			}
			return netip.AddrFrom16([16]byte(data[0:16])).Unmap(), nil
		}
	}
	return netip.Addr{}, errNoPktinfo
}

// parseSockaddr reads a struct sockaddr_in or sockaddr_in6 from b, as the
// kernel writes it (family in host order, port in network order).
//
// b: the bytes. Returns the address (IPv4-mapped IPv6 unmapped, no zone) and
// port, or an error if b is too short or of another family.
func parseSockaddr(b []byte) (netip.Addr, uint16, error) {
	if len(b) < 2 {
		return netip.Addr{}, 0, errBadSockaddr
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) < 8 {
			return netip.Addr{}, 0, errBadSockaddr
		}
		return netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:]), nil
	case unix.AF_INET6:
		if len(b) < 24 {
			return netip.Addr{}, 0, errBadSockaddr
		}
		return netip.AddrFrom16([16]byte(b[8:24])).Unmap(), binary.BigEndian.Uint16(b[2:]), nil
	}
	return netip.Addr{}, 0, errSockaddrFam
}

// sockaddrScope returns the scope id of a struct sockaddr_in6 in b, 0 for
// anything else or a short buffer.
func sockaddrScope(b []byte) uint32 {
	if len(b) < unix.SizeofSockaddrInet6 || binary.NativeEndian.Uint16(b) != unix.AF_INET6 {
		return 0
	}
	return binary.NativeEndian.Uint32(b[24:])
}
