// Package dhcpv6 is gopasst's stateful DHCPv6 server (RFC 8415): one
// IA_NA address, the guest's assigned IPv6 address, with infinite
// lifetimes.
//
// # Theory of operation
//
// When Enabled (IPv6 on with an assigned address and our link-local
// address, no --no-dhcpv6), the dispatcher hands us every guest UDP
// datagram to port 547 and we consume all of them (addressing.md §5), but
// answer only those sent to a multicast address (ff02::1:2): we are the
// only server on the link and never the target of unicast.
//
//   - SOLICIT without a Server Identifier → ADVERTISE (Rapid Commit is
//     not honoured: the client always goes through REQUEST);
//   - REQUEST and RENEW carrying our Server Identifier → REPLY;
//   - REBIND without a Server Identifier, or with ours → REPLY (RFC 8415
//     §16.7: clients send REBIND without one);
//   - CONFIRM without a Server Identifier → REPLY;
//   - INFORMATION-REQUEST without any IA (and without another server's
//     identifier) → REPLY with configuration options only;
//   - REQUEST, RENEW or CONFIRM listing any address other than the
//     assigned one → REPLY with status NotOnLink: inside each IA for
//     REQUEST and RENEW (§18.3.2), at the top level for CONFIRM (§18.3.3);
//   - RELEASE, DECLINE and everything else → ignored.
//
// A reply carries our Server Identifier (a DUID-LLT: hardware type 1, the
// seconds from 2000-01-01 UTC to start-up, our MAC), the client's Client
// Identifier echoed, an IA_NA with the client's IAID (from its first
// IA_NA, and only if it sent one), T1 = T2 = ∞ and one IA Address, the
// assigned address with infinite lifetimes; then DNS servers (23) and the
// domain search list (24, uncompressed) when advertised, and the client
// FQDN (39, with the O flag if the client set S) when --fqdn is given. It
// goes from our link-local address, port 547, to the client's address,
// port 546, and resets the guest's seen global address to the assigned one.
//
// Handle runs on the event loop's thread and builds the reply in place in
// tap.Out's buffer: no allocation.
package dhcpv6

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
)

// Ports (RFC 8415 §7.2).
const (
	ClientPort = 546
	ServerPort = 547
)

// Message types (RFC 8415 §7.3).
const (
	typeSolicit   = 1
	typeAdvertise = 2
	typeRequest   = 3
	typeConfirm   = 4
	typeRenew     = 5
	typeRebind    = 6
	typeReply     = 7
	typeInfoReq   = 11
)

// Option codes (RFC 8415 §21, RFC 3646, RFC 4704, RFC 8415 IA_PD).
const (
	optClientID = 1
	optServerID = 2
	optIANA     = 3
	optIATA     = 4
	optIAAddr   = 5
	optStatus   = 13
	optDNS      = 23
	optDomains  = 24
	optIAPD     = 25
	optFQDN     = 39
)

// statusNotOnLink is the NotOnLink status code (RFC 8415 §21.13).
const statusNotOnLink = 4

// notOnLinkMsg is the status message sent with NotOnLink.
const notOnLinkMsg = "Prefix not appropriate for link."

// maxDUID is the largest DUID (RFC 8415 §11.1: 128 bytes plus the
// 2-byte type).
const maxDUID = 130

// Errors for datagrams that are not requests we can parse.
var (
	ErrDisabled   = errors.New("dhcpv6: disabled by configuration")
	ErrNotDHCPv6  = errors.New("dhcpv6: not a UDP datagram to port 547")
	ErrLength     = errors.New("dhcpv6: message too short")
	ErrOption     = errors.New("dhcpv6: malformed option")
	ErrNoClientID = errors.New("dhcpv6: no client identifier")
	ErrBuffer     = errors.New("dhcpv6: frame buffer too small")
)

// duidTime is the DUID-LLT time: seconds from 2000-01-01 00:00 UTC to
// start-up (RFC 8415 §11.2), taken when the package is initialised.
var duidTime = uint32(time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) / time.Second)

// Enabled reports whether the dispatcher should hand UDP port 547 to
// Handle: IPv6 on with an assigned address and our link-local address, no
// --no-dhcpv6.
func Enabled(cfg *config.Config) bool {
	return cfg.V6.Enabled && !cfg.NoDHCPv6 && cfg.V6.Addr.Is6() && !cfg.V6.Addr.Is4In6() && cfg.V6.OurLL.Is6()
}

// serverDUID writes our DUID-LLT (14 bytes) into b.
//
// b: at least 14 bytes; mac: our MAC. Returns 14.
func serverDUID(b []byte, mac [6]byte) int {
	binary.BigEndian.PutUint16(b[0:], 1) // DUID-LLT
	binary.BigEndian.PutUint16(b[2:], 1) // hardware type: Ethernet
	binary.BigEndian.PutUint32(b[4:], duidTime)
	copy(b[8:14], mac[:])
	return 14
}

// Options is what the server reads from a request's top-level options.
// Slices point into the request.
type Options struct {
	ClientID  []byte // option 1 data, nil if absent
	ServerID  []byte // option 2 data, nil if absent
	IANA      []byte // data of the first IA_NA (IAID, T1, T2, options), nil if none
	AnyIA     bool   // an IA_NA, IA_TA or IA_PD is present
	FQDNFlags int    // flags of option 39, -1 if absent
}

// walk calls fn for each option in b (RFC 8415 §21.1: 2-byte code, 2-byte
// length, data), stopping at the first error.
//
// b: option bytes; fn: called with code and data. Returns ErrOption if an
// option header or its data does not fit, or fn's error.
func walk(b []byte, fn func(code uint16, data []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return ErrOption
		}
		l := int(binary.BigEndian.Uint16(b[2:]))
		if 4+l > len(b) {
			return ErrOption
		}
		if err := fn(binary.BigEndian.Uint16(b), b[4:4+l]); err != nil {
			return err
		}
		b = b[4+l:]
	}
	return nil
}

// ParseOptions walks and validates a message's options: every option must
// fit; client and server identifiers must hold 2 to 130 bytes; IA_NA at
// least IAID, T1 and T2, with well-formed sub-options whose IA Address
// options hold at least an address and two lifetimes; option 39 at least
// its flags.
//
// b: the options after the 4-byte message header. Returns what was found,
// or ErrOption.
func ParseOptions(b []byte) (Options, error) {
	o := Options{FQDNFlags: -1}
	err := walk(b, func(code uint16, data []byte) error {
		switch code {
		case optClientID, optServerID:
			if len(data) < 2 || len(data) > maxDUID {
				return ErrOption
			}
			if code == optClientID {
				o.ClientID = data
			} else {
				o.ServerID = data
			}
		case optIANA:
			if len(data) < 12 {
				return ErrOption
			}
			if err := walk(data[12:], func(code uint16, d []byte) error {
				if code == optIAAddr && len(d) < 24 {
					return ErrOption
				}
				return nil
			}); err != nil {
				return err
			}
			if o.IANA == nil {
				o.IANA = data
			}
			o.AnyIA = true
		case optIATA, optIAPD:
			o.AnyIA = true
		case optFQDN:
			if len(data) < 1 {
				return ErrOption
			}
			o.FQDNFlags = int(data[0])
		}
		return nil
	})
	return o, err
}

// otherAddress reports whether any IA Address in any IA_NA of the
// (validated) options is not addr.
func otherAddress(b []byte, addr *[16]byte) bool {
	found := false
	_ = walk(b, func(code uint16, data []byte) error {
		if code != optIANA {
			return nil
		}
		return walk(data[12:], func(code uint16, d []byte) error {
			if code == optIAAddr && !bytes.Equal(d[:16], addr[:]) {
				found = true
			}
			return nil
		})
	})
	return found
}

// Handle answers one DHCPv6 message from the guest.
//
// cfg: configuration (V6, OurMAC, FQDN, Search, advertising flags); g:
// learned guest state (SeenV6 is reset to the assigned address on every
// reply); out: where the reply is queued; frame: the whole Ethernet frame,
// IPv6/UDP to port 547.
// Returns nil when the message was consumed (answered or ignored), or an
// error for a malformed one.
func Handle(cfg *config.Config, g *guest.State, out tap.Out, p *packet.Packet) error {
	if !Enabled(cfg) {
		return ErrDisabled
	}
	if !p.V6 || p.Proto != header.ProtoUDP || p.DstPort != ServerPort {
		return ErrNotDHCPv6
	}
	eth := p.Eth()
	ip := header.IPv6(p.Frame[p.L3:])
	u, err := header.ParseUDP(p.L4Bytes()) // valid: packet.Parse checked it
	if err != nil {
		return fmt.Errorf("dhcpv6: %w", err)
	}
	msg := u.Payload()
	if len(msg) < 4 {
		return ErrLength
	}
	opts, err := ParseOptions(msg[4:])
	if err != nil {
		return err
	}
	if ip.Dst()[0] != 0xff {
		return nil // only multicast requests are ours to answer
	}

	var duid [14]byte
	serverDUID(duid[:], cfg.OurMAC)
	ours := opts.ServerID != nil && bytes.Equal(opts.ServerID, duid[:])
	addr := cfg.V6.Addr.As16()

	typ, notOnLink := typeReply, false
	switch msg[0] {
	case typeSolicit:
		if opts.ServerID != nil {
			return nil
		}
		typ = typeAdvertise
	case typeRequest, typeRenew:
		if !ours {
			return nil
		}
		notOnLink = otherAddress(msg[4:], &addr)
	case typeRebind:
		if opts.ServerID != nil && !ours {
			return nil
		}
	case typeConfirm:
		if opts.ServerID != nil {
			return nil
		}
		notOnLink = otherAddress(msg[4:], &addr)
	case typeInfoReq:
		if opts.AnyIA || (opts.ServerID != nil && !ours) {
			return nil
		}
	default:
		return nil // RELEASE, DECLINE, server and relay messages
	}
	if opts.ClientID == nil && msg[0] != typeInfoReq {
		return ErrNoClientID
	}
	if err := sendReply(cfg, out, eth, ip, msg, &opts, typ, notOnLink, &duid); err != nil {
		return err
	}
	g.SeenV6 = cfg.V6.Addr
	return nil
}

// putOpt writes an option header at b.
//
// b: destination; code: option code; l: data length. Returns 4.
func putOpt(b []byte, code uint16, l int) int {
	binary.BigEndian.PutUint16(b, code)
	binary.BigEndian.PutUint16(b[2:], uint16(l))
	return 4
}

// putStatus writes a Status Code option with NotOnLink.
//
// b: destination. Returns the bytes written.
func putStatus(b []byte) int {
	n := putOpt(b, optStatus, 2+len(notOnLinkMsg))
	binary.BigEndian.PutUint16(b[n:], statusNotOnLink)
	n += 2
	return n + copy(b[n:], notOnLinkMsg)
}

// sendReply builds and queues an ADVERTISE or REPLY.
//
// cfg: configuration; out: queue; eth, ip: the request's headers; msg: the
// request message; opts: its options; typ: reply type; notOnLink: answer
// with NotOnLink; duid: our DUID. Returns ErrBuffer if the frame does not
// fit.
func sendReply(cfg *config.Config, out tap.Out, eth header.Ethernet, ip header.IPv6, msg []byte,
	opts *Options, typ int, notOnLink bool, duid *[14]byte) error {
	b := out.Frame()
	const hdrs = header.EthernetLen + header.IPv6Len + header.UDPLen
	// Largest reply: header, server id, client id, IA_NA with an address
	// or a status, 3 DNS servers, 5 names, FQDN.
	if len(b) < hdrs+4+18+4+maxDUID+4+12+28+4+16*config.MaxDNS+4+5*255+4+1+255 {
		return ErrBuffer
	}
	m := b[hdrs:]
	m[0] = byte(typ)
	copy(m[1:4], msg[1:4]) // transaction id
	n := 4
	n += putOpt(m[n:], optServerID, len(duid))
	n += copy(m[n:], duid[:])
	if opts.ClientID != nil {
		n += putOpt(m[n:], optClientID, len(opts.ClientID))
		n += copy(m[n:], opts.ClientID)
	}

	switch {
	case notOnLink && msg[0] == typeConfirm:
		n += putStatus(m[n:])
	case notOnLink:
		start := n
		n += 4
		n += copy(m[n:n+4], opts.IANA[:4]) // IAID
		clear(m[n : n+8])                  // T1, T2: 0
		n += 8
		n += putStatus(m[n:])
		putOpt(m[start:], optIANA, n-start-4)
	case opts.IANA != nil && msg[0] != typeInfoReq:
		n += putOpt(m[n:], optIANA, 12+28)
		n += copy(m[n:n+4], opts.IANA[:4])              // IAID
		binary.BigEndian.PutUint32(m[n:], 0xffffffff)   // T1
		binary.BigEndian.PutUint32(m[n+4:], 0xffffffff) // T2
		n += 8
		n += putOpt(m[n:], optIAAddr, 24)
		a := cfg.V6.Addr.As16()
		n += copy(m[n:], a[:])
		binary.BigEndian.PutUint32(m[n:], 0xffffffff)   // preferred lifetime
		binary.BigEndian.PutUint32(m[n+4:], 0xffffffff) // valid lifetime
		n += 8
	}

	if !notOnLink {
		n = putConfig(m, n, cfg, opts)
	}

	dst := ip.Src()
	ll := cfg.V6.OurLL.As16()
	o := header.EncodeEthernet(b, eth.Src(), cfg.OurMAC, header.EtherTypeIPv6)
	o += header.EncodeIPv6(b[o:], header.IPv6Fields{PayloadLen: header.UDPLen + n,
		NextHeader: header.ProtoUDP, HopLimit: 255, Src: ll, Dst: dst})
	header.EncodeUDP(b[o:], ServerPort, ClientPort, n)
	header.UDP(b[o:o+header.UDPLen+n]).SetChecksumIPv6(&ll, &dst)
	out.Commit(hdrs + n)
	return nil
}

// putConfig appends the configuration options: DNS servers (23), domain
// search list (24) and client FQDN (39).
//
// m: the message; n: its length so far; cfg: configuration; opts: the
// request's options. Returns the new length.
func putConfig(m []byte, n int, cfg *config.Config, opts *Options) int {
	if cfg.AdvertiseDNS {
		start := n
		n += 4
		k := 0
		for _, d := range cfg.V6.DNS {
			if k == config.MaxDNS {
				break
			}
			if d.Is6() && !d.Is4In6() {
				a := d.As16()
				n += copy(m[n:], a[:])
				k++
			}
		}
		if k == 0 {
			n = start
		} else {
			putOpt(m[start:], optDNS, n-start-4)
		}
	}
	if cfg.AdvertiseSearch && len(cfg.Search) > 0 {
		start := n
		n += 4
		for i, s := range cfg.Search {
			if i == config.MaxSearch {
				break
			}
			if s == "" || s == "." {
				continue
			}
			if l, err := header.PutDNSName(m[n:n+255], s); err == nil {
				n += l
			}
		}
		if n == start+4 {
			n = start
		} else {
			putOpt(m[start:], optDomains, n-start-4)
		}
	}
	if cfg.FQDN != "" {
		var flags byte
		if opts.FQDNFlags >= 0 && opts.FQDNFlags&0x01 != 0 {
			flags = 0x02 // O: we override the client's S (we update no DNS)
		}
		m[n+4] = flags
		if l, err := header.PutDNSName(m[n+5:n+5+255], cfg.FQDN); err == nil {
			putOpt(m[n:], optFQDN, 1+l)
			n += 5 + l
		}
	}
	return n
}
