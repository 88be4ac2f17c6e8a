// Package dhcp is gopasst's DHCPv4 server (RFC 2131, RFC 2132): one lease,
// the guest's assigned address, handed out forever.
//
// # Theory of operation
//
// When Enabled (IPv4 on with an address and a gateway, no --no-dhcp), the
// dispatcher hands us every guest UDP datagram to port 67, whatever its
// destination address, and we consume all of them (addressing.md §5):
//   - DISCOVER → OFFER, or ACK with Rapid Commit (RFC 4039) if the client
//     sent option 80;
//   - REQUEST, and BOOTP requests (no option 53) → ACK;
//   - anything else (DECLINE, RELEASE, INFORM) → ignored; we never NAK.
//
// yiaddr is always the assigned address, whatever the client asked for.
// The lease is infinite (option 51 = 0xffffffff; no renewal times 58/59).
// Options: 53 message type; 54 server identifier = gateway; 51 lease
// time; 1 subnet mask; 3 router = gateway; 121 classless static routes
// (RFC 3442: the gateway /32 on-link, then the default route via the
// gateway) only when the gateway is outside the guest's subnet; 26
// interface MTU (unless -m 0); 6 DNS servers (≤ 3, when advertised);
// 12 host name (-H); 81 client FQDN (--fqdn, RFC 4702: E flag, both RCODEs
// 255); 119 domain search (RFC 3397, RFC 1035 name compression, split
// per RFC 3396 if longer than 255 bytes, when advertised).
//
// Option order follows the client: 53 first unless it appears in the
// parameter request list (55), then the options in the client's order,
// then the rest by increasing code. An option that no longer fits in the
// 308-byte options field of a minimum-size (576-byte) message is skipped,
// later smaller ones may still fit. The options field is padded to at
// least 60 bytes so that the BOOTP message has the 300 bytes RFC 1542
// asks for.
//
// The reply goes from gateway:67 to 255.255.255.255:68 (Ethernet
// broadcast) if the client set the broadcast flag, else to the assigned
// address at the request's Ethernet source.
//
// Handle runs on the event loop's thread and builds the reply in place in
// tap.Out's buffer, with scratch space on the stack: no allocation.
package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
)

// Ports (RFC 2131 §4.1).
const (
	ServerPort = 67
	ClientPort = 68
)

// BOOTP layout (RFC 951, RFC 2131 §2).
const (
	bootpLen   = 236 // op .. file, before the magic cookie
	optOff     = 240 // options start after the magic cookie
	magic      = 0x63825363
	flagsBcast = 0x8000
	optMax     = 308 // options field of a 576-byte message
	optMin     = 60  // options field padded so the message is ≥ 300 bytes
)

// Message types (option 53, RFC 2132 §9.6).
const (
	typeDiscover = 1
	typeOffer    = 2
	typeRequest  = 3
	typeAck      = 5
)

// Option codes.
const (
	optPad         = 0
	optMask        = 1
	optRouter      = 3
	optDNS         = 6
	optHostname    = 12
	optMTU         = 26
	optLease       = 51
	optType        = 53
	optServerID    = 54
	optPRL         = 55
	optRapidCommit = 80
	optFQDN        = 81
	optSearch      = 119
	optRoutes      = 121
	optEnd         = 255
)

// ours lists the options we can send, by increasing code: the order of
// "the rest" after the client's list.
var ours = [...]uint8{optMask, optRouter, optDNS, optHostname, optMTU, optLease, optType,
	optServerID, optRapidCommit, optFQDN, optSearch, optRoutes}

// Errors for datagrams that are not DHCP requests we can parse.
var (
	ErrDisabled = errors.New("dhcp: disabled by configuration")
	ErrNotDHCP  = errors.New("dhcp: not a UDP datagram to port 67")
	ErrLength   = errors.New("dhcp: message shorter than the BOOTP header")
	ErrOp       = errors.New("dhcp: not a BOOTREQUEST")
	ErrOption   = errors.New("dhcp: malformed option")
	ErrBuffer   = errors.New("dhcp: frame buffer too small")
)

// Enabled reports whether the dispatcher should hand UDP port 67 to Handle:
// IPv4 on with an assigned address and a gateway, no --no-dhcp.
func Enabled(cfg *config.Config) bool {
	return cfg.V4.Enabled && !cfg.NoDHCP && cfg.V4.Addr.Is4() && cfg.V4.Gateway.Is4()
}

// Options is what the server reads from a request's options.
type Options struct {
	Type        int    // option 53, -1 if absent (BOOTP)
	PRL         []byte // option 55, the parameter request list (points into the request)
	RapidCommit bool   // option 80 present
}

// ParseOptions walks the options field after the magic cookie (RFC 2132
// §2): pad and end are single bytes, every other option has a length byte
// and must fit. Option 53 must be one byte long.
//
// b: the options bytes. Returns what was found, or ErrOption.
func ParseOptions(b []byte) (Options, error) {
	o := Options{Type: -1}
	for len(b) > 0 {
		code := b[0]
		if code == optEnd {
			break
		}
		if code == optPad {
			b = b[1:]
			continue
		}
		if len(b) < 2 || int(b[1])+2 > len(b) {
			return o, ErrOption
		}
		data := b[2 : 2+int(b[1])]
		switch code {
		case optType:
			if len(data) != 1 {
				return o, ErrOption
			}
			o.Type = int(data[0])
		case optPRL:
			o.PRL = data
		case optRapidCommit:
			o.RapidCommit = true
		}
		b = b[2+len(data):]
	}
	return o, nil
}

// Handle answers one DHCP request from the guest.
//
// cfg: configuration (V4, OurMAC, MTU, Hostname, FQDN, Search, advertising
// flags); g: learned guest state (unused); out: where the reply is queued;
// p: the packet as packet.Parse made it, IPv4/UDP to port 67.
// Returns nil when the request was consumed (answered or ignored), or an
// error for a malformed one.
func Handle(cfg *config.Config, g *guest.State, out tap.Out, p *packet.Packet) error {
	if !Enabled(cfg) {
		return ErrDisabled
	}
	if p.V6 || p.EtherType != header.EtherTypeIPv4 || p.Proto != header.ProtoUDP || p.DstPort != ServerPort {
		return ErrNotDHCP
	}
	eth := p.Eth()
	u, err := header.ParseUDP(p.L4Bytes()) // valid: packet.Parse checked it
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	req := u.Payload()
	if len(req) < bootpLen {
		return ErrLength
	}
	if req[0] != 1 {
		return ErrOp
	}
	opts := Options{Type: -1}
	// Without the cookie this is a plain BOOTP request (RFC 951 vendor
	// area): answered like one with no options.
	if len(req) >= optOff && binary.BigEndian.Uint32(req[bootpLen:]) == magic {
		if opts, err = ParseOptions(req[optOff:]); err != nil {
			return err
		}
	}

	var reply int
	switch opts.Type {
	case typeDiscover:
		reply = typeOffer
		if opts.RapidCommit {
			reply = typeAck
		}
	case -1, typeRequest:
		reply = typeAck
	default:
		return nil // DECLINE, RELEASE, INFORM...: ignored, never NAK
	}
	return sendReply(cfg, out, eth, req, &opts, reply)
}

// sendReply builds and queues the reply.
//
// cfg: configuration; out: queue; eth: the request frame; req: the BOOTP
// request; opts: its options; typ: typeOffer or typeAck. Returns ErrBuffer
// if the frame does not fit.
func sendReply(cfg *config.Config, out tap.Out, eth header.Ethernet, req []byte, opts *Options, typ int) error {
	var o [optMax]byte
	on := putOptions(o[:], cfg, opts, typ)
	msgLen := optOff + max(on, optMin)

	b := out.Frame()
	const hdrs = header.EthernetLen + header.IPv4MinLen + header.UDPLen
	if len(b) < hdrs+optOff+optMax {
		return ErrBuffer
	}
	gw := cfg.V4.Gateway.As4()
	dst, macDst := cfg.V4.Addr.As4(), eth.Src()
	if binary.BigEndian.Uint16(req[10:])&flagsBcast != 0 {
		dst, macDst = [4]byte{255, 255, 255, 255}, guest.BroadcastMAC
	}
	n := header.EncodeEthernet(b, macDst, cfg.OurMAC, header.EtherTypeIPv4)
	n += header.EncodeIPv4(b[n:], header.IPv4Fields{TTL: 255, Proto: header.ProtoUDP,
		Src: gw, Dst: dst, PayloadLen: header.UDPLen + msgLen})
	un := n
	n += header.EncodeUDP(b[n:], ServerPort, ClientPort, msgLen)

	m := b[n : n+msgLen]
	clear(m)
	m[0] = 2                    // BOOTREPLY
	m[1], m[2] = req[1], req[2] // htype, hlen
	copy(m[4:8], req[4:8])      // xid
	copy(m[10:12], req[10:12])  // flags
	if typ == typeAck {
		copy(m[12:16], req[12:16]) // ciaddr (RFC 2131 table 3: 0 in an OFFER)
	}
	a := cfg.V4.Addr.As4()
	copy(m[16:20], a[:])       // yiaddr
	copy(m[24:28], req[24:28]) // giaddr
	copy(m[28:44], req[28:44]) // chaddr
	binary.BigEndian.PutUint32(m[bootpLen:], magic)
	copy(m[optOff:], o[:on])
	n += msgLen

	header.UDP(b[un:n]).SetChecksumIPv4(gw, dst)
	out.Commit(n)
	return nil
}

// putOptions writes the reply's options in the order described in the
// package comment, ending with the End option.
//
// b: the options field (optMax bytes); cfg: configuration; opts: the
// request's options; typ: reply message type. Returns the length written.
func putOptions(b []byte, cfg *config.Config, opts *Options, typ int) int {
	var done [256]bool
	var scratch [1400]byte // the largest option: 119, ≤ 5 × 255 bytes
	n := 0
	emit := func(code uint8) {
		if done[code] {
			return
		}
		done[code] = true
		l, ok := optionData(scratch[:], code, cfg, opts, typ)
		if !ok {
			return
		}
		n += putSplit(b[n:len(b)-1], code, scratch[:l]) // keep one byte for End
	}
	inPRL := false
	for _, c := range opts.PRL {
		if c == optType {
			inPRL = true
		}
	}
	if !inPRL {
		emit(optType)
	}
	for _, c := range opts.PRL {
		emit(c)
	}
	for _, c := range ours {
		emit(c)
	}
	b[n] = optEnd
	return n + 1
}

// putSplit writes one option as one or more instances of at most 255
// bytes of data each (RFC 3396), if all of them fit.
//
// b: remaining space; code: option code; data: option data. Returns the
// bytes written, 0 if it did not fit.
func putSplit(b []byte, code uint8, data []byte) int {
	need := len(data) + 2*((len(data)+254)/255)
	if len(data) == 0 {
		need = 2
	}
	if need > len(b) {
		return 0
	}
	n := 0
	for {
		l := min(len(data), 255)
		b[n], b[n+1] = code, uint8(l)
		copy(b[n+2:], data[:l])
		n += 2 + l
		data = data[l:]
		if len(data) == 0 {
			return n
		}
	}
}

// optionData writes the data of one option we send.
//
// b: scratch space; code: the option; cfg: configuration; opts: the
// request's options; typ: reply type. Returns the data length and whether
// we send this option at all.
func optionData(b []byte, code uint8, cfg *config.Config, opts *Options, typ int) (int, bool) {
	gw := cfg.V4.Gateway.As4()
	switch code {
	case optType:
		b[0] = uint8(typ)
		return 1, true
	case optServerID, optRouter:
		return copy(b, gw[:]), true
	case optLease:
		binary.BigEndian.PutUint32(b, 0xffffffff)
		return 4, true
	case optMask:
		// A shift by 32 gives 0: the mask of a /0.
		binary.BigEndian.PutUint32(b, ^uint32(0)<<(32-min(max(cfg.V4.PrefixLen, 0), 32)))
		return 4, true
	case optRoutes:
		p := netip.PrefixFrom(cfg.V4.Addr, cfg.V4.PrefixLen)
		if p.Contains(cfg.V4.Gateway) {
			return 0, false
		}
		// RFC 3442: gateway/32 via 0.0.0.0 (on-link), then 0/0 via gateway.
		b[0] = 32
		copy(b[1:5], gw[:])
		clear(b[5:9])
		b[9] = 0
		copy(b[10:14], gw[:])
		return 14, true
	case optMTU:
		if cfg.MTU == 0 {
			return 0, false
		}
		binary.BigEndian.PutUint16(b, uint16(min(cfg.MTU, 65535)))
		return 2, true
	case optDNS:
		if !cfg.AdvertiseDNS {
			return 0, false
		}
		n := 0
		for _, d := range cfg.V4.DNS {
			if n == 4*config.MaxDNS {
				break
			}
			if d.Is4() {
				a := d.As4()
				n += copy(b[n:], a[:])
			}
		}
		return n, n > 0
	case optHostname:
		if cfg.Hostname == "" || len(cfg.Hostname) > 255 {
			return 0, false
		}
		return copy(b, cfg.Hostname), true
	case optFQDN:
		if cfg.FQDN == "" {
			return 0, false
		}
		b[0], b[1], b[2] = 0x04, 255, 255 // E: canonical wire format; RCODE1, RCODE2
		l, err := header.PutDNSName(b[3:3+255], cfg.FQDN)
		if err != nil || 3+l > 255 {
			return 0, false
		}
		return 3 + l, true
	case optSearch:
		if !cfg.AdvertiseSearch || len(cfg.Search) == 0 {
			return 0, false
		}
		n := putSearch(b, cfg.Search)
		return n, n > 0
	case optRapidCommit:
		return 0, typ == typeAck && opts.Type == typeDiscover && opts.RapidCommit
	}
	return 0, false
}
