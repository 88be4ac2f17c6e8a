// Fuzz targets for everything parsed from host sockets (control messages,
// addresses, error queue contents), and for the ICMP error builder that
// turns them into frames.
package udp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/tap/taptest"
)

// cmsg encodes one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, cmsgAlign(unix.SizeofCmsghdr+len(data)))
	binary.NativeEndian.PutUint64(b, uint64(unix.SizeofCmsghdr+len(data)))
	binary.NativeEndian.PutUint32(b[8:], uint32(level))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	copy(b[unix.SizeofCmsghdr:], data)
	return b
}

// rawSockaddr encodes addr:port as struct sockaddr_in or sockaddr_in6.
func rawSockaddr(ap netip.AddrPort) []byte {
	if ap.Addr().Is4() {
		b := make([]byte, unix.SizeofSockaddrInet4)
		binary.NativeEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a := ap.Addr().As4()
		copy(b[4:], a[:])
		return b
	}
	b := make([]byte, unix.SizeofSockaddrInet6)
	binary.NativeEndian.PutUint16(b, unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], ap.Port())
	a := ap.Addr().As16()
	copy(b[8:], a[:])
	binary.NativeEndian.PutUint32(b[24:], 3)
	return b
}

// extErr encodes struct sock_extended_err followed by an offender.
func extErr(origin, typ, code uint8, info uint32, offender []byte) []byte {
	b := make([]byte, sizeofExtendedErr)
	binary.NativeEndian.PutUint32(b, uint32(unix.ECONNREFUSED))
	b[4], b[5], b[6] = origin, typ, code
	binary.NativeEndian.PutUint32(b[8:], info)
	return append(b, offender...)
}

func TestParsers(t *testing.T) {
	off := rawSockaddr(netip.MustParseAddrPort("127.0.0.1:0"))
	ctrl := append(cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMP, make([]byte, 16)),
		cmsg(unix.SOL_IP, unix.IP_RECVERR, extErr(unix.SO_EE_ORIGIN_ICMP, 3, 3, 0, off))...)
	e, err := parseRecvErr(ctrl)
	if err != nil || e.Origin != unix.SO_EE_ORIGIN_ICMP || e.Type != 3 || e.Code != 3 || e.Offender != lo4 {
		t.Fatalf("%+v %v", e, err)
	}
	if _, err := parseRecvErr(ctrl[:len(ctrl)-1]); err == nil {
		t.Fatal("truncated control accepted")
	}
	pk := make([]byte, unix.SizeofInet6Pktinfo)
	copy(pk, netip.MustParseAddr("::ffff:192.0.2.7").AsSlice())
	a, err := parsePktinfo(cmsg(unix.SOL_IPV6, unix.IPV6_PKTINFO, pk))
	if err != nil || a != netip.MustParseAddr("192.0.2.7") {
		t.Fatalf("%v %v", a, err)
	}
	sa := rawSockaddr(netip.MustParseAddrPort("[fe80::1]:53"))
	if a, p, err := parseSockaddr(sa); err != nil || a != netip.MustParseAddr("fe80::1") || p != 53 || sockaddrScope(sa) != 3 {
		t.Fatalf("%v %v %v", a, p, err)
	}
}

func FuzzParseRecvErr(f *testing.F) {
	for _, off := range [][]byte{
		rawSockaddr(netip.MustParseAddrPort("192.0.2.1:0")),
		rawSockaddr(netip.MustParseAddrPort("[2001:db8::1]:0")),
		{0, 0}, nil,
	} {
		f.Add(cmsg(unix.SOL_IP, unix.IP_RECVERR, extErr(unix.SO_EE_ORIGIN_ICMP, 3, 4, 1400, off)))
		f.Add(cmsg(unix.SOL_IPV6, unix.IPV6_RECVERR, extErr(unix.SO_EE_ORIGIN_ICMP6, 2, 0, 1280, off)))
	}
	f.Add(append(cmsg(unix.SOL_SOCKET, 1, []byte{1, 2, 3}), cmsg(unix.SOL_IP, unix.IP_RECVERR, extErr(2, 3, 3, 0, nil))...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseRecvErr(b)
		if err == nil && e.Offender.IsValid() && e.Offender.Zone() != "" {
			t.Fatal("zone in offender")
		}
	})
}

func FuzzParsePktinfo(f *testing.F) {
	pk4 := make([]byte, unix.SizeofInet4Pktinfo)
	copy(pk4[8:], []byte{127, 0, 0, 1})
	pk6 := make([]byte, unix.SizeofInet6Pktinfo)
	copy(pk6, lo6.AsSlice())
	f.Add(cmsg(unix.SOL_IP, unix.IP_PKTINFO, pk4))
	f.Add(cmsg(unix.SOL_IPV6, unix.IPV6_PKTINFO, pk6))
	f.Add(append(cmsg(unix.SOL_IP, 99, nil), cmsg(unix.SOL_IP, unix.IP_PKTINFO, pk4[:4])...))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parsePktinfo(b)
		if err == nil && !a.IsValid() {
			t.Fatal("invalid address without error")
		}
	})
}

func FuzzParseSockaddr(f *testing.F) {
	f.Add(rawSockaddr(netip.MustParseAddrPort("192.0.2.1:53")))
	f.Add(rawSockaddr(netip.MustParseAddrPort("[::ffff:192.0.2.1]:53")))
	f.Add(rawSockaddr(netip.MustParseAddrPort("[2001:db8::1]:53")))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, _, err := parseSockaddr(b)
		sockaddrScope(b)
		if err == nil && (!a.IsValid() || a.Is4In6()) {
			t.Fatalf("address %v", a)
		}
	})
}

// FuzzRelayError: whatever the error queue says, the frame built for the
// guest is well formed: valid IP header, ICMP checksum, and a quote that
// fits the limits.
func FuzzRelayError(f *testing.F) {
	f.Add(false, uint8(unix.SO_EE_ORIGIN_ICMP), uint8(3), uint8(3), uint32(0), []byte{127, 0, 0, 1}, []byte("0123456789"))
	f.Add(false, uint8(unix.SO_EE_ORIGIN_ICMP), uint8(3), uint8(4), uint32(1200), []byte{192, 0, 2, 99}, []byte("x"))
	f.Add(true, uint8(unix.SO_EE_ORIGIN_ICMP6), uint8(2), uint8(0), uint32(1280), lo6.AsSlice(), make([]byte, 1280))
	f.Add(true, uint8(unix.SO_EE_ORIGIN_ICMP6), uint8(1), uint8(4), uint32(0), []byte{}, []byte{})
	cfg := testConfig()
	g := &guest.State{MAC: configtest.GuestMAC}
	out := taptest.New(4)
	h := &Handler{cfg: cfg, g: g, out: out}
	f.Fuzz(func(t *testing.T, v6 bool, origin, typ, code uint8, info uint32, offender, payload []byte) {
		out.Reset()
		fl := udpFlow{ep: endpoints{v6: v6, guest: configtest.Guest4.As16(), peer: configtest.Gateway4.As16(), guestPort: 1000, peerPort: 53},
			host: lo4.As16(), hostPort: 53, ttl: 64}
		if v6 {
			fl.ep.guest, fl.ep.peer, fl.host = configtest.Guest6.As16(), configtest.Gateway6.As16(), lo6.As16()
		}
		e := recvErr{Origin: origin, Type: typ, Code: code, Info: info}
		if a, ok := netip.AddrFromSlice(offender); ok {
			e.Offender = a.Unmap()
		}
		h.relayError(&fl, &e, payload)
		for _, fr := range out.Frames() {
			checkICMPFrame(t, fr)
		}
	})
}

// checkICMPFrame validates an ICMP error frame to the guest.
func checkICMPFrame(t *testing.T, f []byte) {
	eth, err := header.ParseEthernet(f)
	if err != nil {
		t.Fatal(err)
	}
	if eth.Dst() != configtest.GuestMAC || eth.Src() != config.DefaultMAC {
		t.Fatal("MAC addresses")
	}
	switch eth.Type() {
	case header.EtherTypeIPv4:
		ip, err := header.ParseIPv4(eth.Payload())
		if err != nil || !ip.IsChecksumValid() || ip.Proto() != header.ProtoICMP || len(ip) != len(eth.Payload()) {
			t.Fatalf("IPv4 header %x: %v", f, err)
		}
		m, err := header.ParseICMPv4(ip.Payload())
		if err != nil || !m.IsChecksumValid() || len(m) > 8+20+8+8 {
			t.Fatalf("ICMP %x: %v", f, err)
		}
	case header.EtherTypeIPv6:
		ip, proto, off, err := header.ParseIPv6(eth.Payload())
		if err != nil || proto != header.ProtoICMPv6 || len(ip) > 1280 || len(ip) != len(eth.Payload()) {
			t.Fatalf("IPv6 %x: %v", f, err)
		}
		s, d := ip.Src(), ip.Dst()
		m, err := header.ParseICMPv6(ip[off:])
		if err != nil || !m.IsChecksumValid(&s, &d) {
			t.Fatalf("ICMPv6 %x: %v", f, err)
		}
	default:
		t.Fatal("EtherType")
	}
}
