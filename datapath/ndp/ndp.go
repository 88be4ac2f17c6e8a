// Package ndp is gopasst's IPv6 Neighbor Discovery responder (RFC 4861):
// Neighbor Advertisements for every address, Router Advertisements with a
// SLAAC prefix, and the probes sent unprompted.
//
// # Theory of operation
//
// The dispatcher hands us ICMPv6 types 133-136 from the guest (when
// Enabled: IPv6 on, no --no-ndp, no --no-icmp), and we consume all four
// (addressing.md §5):
//   - Neighbor Solicitation from a specified source: a Neighbor
//     Advertisement for the target, whatever it is, with R, S and O set and
//     our MAC as target link-layer address, to the solicitation's source.
//     We are the router for the whole link, so every neighbour is us (the
//     host's neighbour table is not mirrored here). Solicitations from the
//     unspecified address are duplicate address detection: ignored, so the
//     guest's DAD succeeds.
//   - Router Solicitation: a Router Advertisement to its source (to
//     ff02::1 if the source is unspecified, RFC 4861 §6.2.6), unless
//     --no-ra or --config-net.
//   - Router and Neighbor Advertisements from the guest: dropped.
//
// Every message is checked as RFC 4861 §6.1.1/§7.1.1 asks (hop limit 255,
// code 0, valid checksum, minimum length, options with non-zero lengths
// that fit) and rejected with an error otherwise.
//
// The Router Advertisement comes from our link-local address: Cur Hop
// Limit 255, M=1 (addresses also from DHCPv6), O=0, router lifetime
// 65535 s, reachable time and retrans timer unspecified; options: prefix
// information for the assigned address's /64 with L and A and infinite
// lifetimes, MTU (unless -m 0), RDNSS (up to 3 servers, infinite
// lifetime) when DNS is advertised, DNSSL (infinite lifetime) when RDNSS
// is sent and the search list is advertised, and our MAC as source
// link-layer address.
//
// Sent unprompted: at "tap ready", Announce sends one Neighbor
// Solicitation for the assigned address, addressed to it, so that the
// guest answers and we learn its MAC; then the event loop calls RA every
// NextRA() (random, 200-600 s; none at start) for an unsolicited Router
// Advertisement to ff02::1.
//
// Everything runs on the event loop's thread and writes frames in place
// in tap.Out's buffers: no allocation.
package ndp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
)

// NDP option types (RFC 4861 §4.6, RFC 8106).
const (
	optSLLA   = 1
	optTLLA   = 2
	optPrefix = 3
	optMTU    = 5
	optRDNSS  = 25
	optDNSSL  = 31
)

// Message lengths without options.
const (
	rsLen = 8
	raLen = 16
	nsLen = 24
	naLen = 24
)

// Errors for messages RFC 4861 says to discard.
var (
	ErrDisabled = errors.New("ndp: disabled by configuration")
	ErrNotNDP   = errors.New("ndp: not an ICMPv6 Neighbor Discovery message")
	ErrHopLimit = errors.New("ndp: hop limit is not 255")
	ErrCode     = errors.New("ndp: non-zero ICMPv6 code")
	ErrChecksum = errors.New("ndp: bad ICMPv6 checksum")
	ErrLength   = errors.New("ndp: message too short")
	ErrOption   = errors.New("ndp: malformed option")
	ErrTarget   = errors.New("ndp: multicast target")
	ErrBuffer   = errors.New("ndp: frame buffer too small")
)

var (
	allNodes    = netip.MustParseAddr("ff02::1").As16()
	allNodesMAC = [6]byte{0x33, 0x33, 0, 0, 0, 1}
)

// Enabled reports whether the dispatcher should hand ICMPv6 types 133-136
// to Handle: IPv6 enabled, no --no-ndp, no --no-icmp.
func Enabled(cfg *config.Config) bool {
	return cfg.V6.Enabled && !cfg.NoNDP && !cfg.NoICMP
}

// raEnabled reports whether Router Advertisements are sent at all.
func raEnabled(cfg *config.Config) bool {
	return Enabled(cfg) && !cfg.NoRA && !cfg.ConfigNet
}

// checkOptions validates NDP options (RFC 4861 §4.6: every option is a
// multiple of 8 bytes, its length field non-zero, and it fits).
//
// b: the option bytes after the fixed part of the message. Returns whether
// a source link-layer address option was found, or ErrOption.
func checkOptions(b []byte) (slla bool, err error) {
	for len(b) > 0 {
		if len(b) < 2 {
			return slla, ErrOption
		}
		l := int(b[1]) * 8
		if l == 0 || l > len(b) {
			return slla, ErrOption
		}
		if b[0] == optSLLA {
			slla = true
		}
		b = b[l:]
	}
	return slla, nil
}

// Handle processes one Neighbor Discovery message (ICMPv6 133-136) from the
// guest and queues the answer, if any.
//
// cfg: configuration (V6, OurMAC, MTU, NoRA, ConfigNet, DNS and search
// advertising); g: learned guest state (unused: answers go to the
// message's source); out: where the answer is queued; p: the packet as
// packet.Parse made it.
// Returns nil when the message was consumed (answered or not), or an error
// for a malformed message or one RFC 4861 says to discard.
func Handle(cfg *config.Config, g *guest.State, out tap.Out, p *packet.Packet) error {
	if !Enabled(cfg) {
		return ErrDisabled
	}
	if !p.V6 || p.Proto != header.ProtoICMPv6 {
		return ErrNotNDP
	}
	eth := p.Eth()
	m, err := header.ParseICMPv6(p.L4Bytes())
	if err != nil {
		return fmt.Errorf("ndp: %w", err)
	}
	t := m.Type()
	if t < header.ICMPv6RouterSolicit || t > header.ICMPv6NeighborAdvert {
		return ErrNotNDP
	}
	if p.TTL != 255 {
		return ErrHopLimit
	}
	if m.Code() != 0 {
		return ErrCode
	}
	src, dst := p.Src.As16(), p.Dst.As16()
	if !m.IsChecksumValid(&src, &dst) {
		return ErrChecksum
	}
	unspecified := src == [16]byte{}

	switch t {
	case header.ICMPv6RouterSolicit:
		if len(m) < rsLen {
			return ErrLength
		}
		slla, err := checkOptions(m[rsLen:])
		if err != nil {
			return err
		}
		if unspecified && slla {
			return ErrOption // RFC 4861 §6.1.1
		}
		if !raEnabled(cfg) {
			return nil
		}
		if unspecified {
			return sendRA(cfg, out, allNodesMAC, &allNodes)
		}
		return sendRA(cfg, out, eth.Src(), &src)

	case header.ICMPv6NeighborSolicit:
		if len(m) < nsLen {
			return ErrLength
		}
		target := [16]byte(m[8:24])
		if target[0] == 0xff {
			return ErrTarget
		}
		slla, err := checkOptions(m[nsLen:])
		if err != nil {
			return err
		}
		if unspecified {
			if slla {
				return ErrOption // RFC 4861 §7.1.1
			}
			return nil // duplicate address detection: stay silent
		}
		return sendNA(cfg, out, eth.Src(), &src, &target)

	case header.ICMPv6RouterAdvert:
		if len(m) < raLen {
			return ErrLength
		}
	case header.ICMPv6NeighborAdvert:
		if len(m) < naLen {
			return ErrLength
		}
	}
	return nil // advertisements from the guest: consumed, nothing to do
}

// encodeHeaders writes the Ethernet and IPv6 headers of a message from our
// link-local address, hop limit 255 (RFC 4861 requires it).
//
// b: frame buffer; cfg: configuration; macDst, dst: destination; msgLen:
// ICMPv6 message length. Returns the offset of the ICMPv6 message.
func encodeHeaders(b []byte, cfg *config.Config, macDst [6]byte, dst *[16]byte, msgLen int) int {
	n := header.EncodeEthernet(b, macDst, cfg.OurMAC, header.EtherTypeIPv6)
	n += header.EncodeIPv6(b[n:], header.IPv6Fields{
		PayloadLen: msgLen, NextHeader: header.ProtoICMPv6, HopLimit: 255,
		Src: cfg.V6.OurLL.As16(), Dst: *dst,
	})
	return n
}

// sendNA queues a Neighbor Advertisement (RFC 4861 §4.4) with R, S and O
// set and our MAC as target link-layer address.
//
// cfg: configuration; out: queue; macDst, dst: the solicitation's source;
// target: the address solicited. Returns ErrBuffer if the frame does not
// fit.
func sendNA(cfg *config.Config, out tap.Out, macDst [6]byte, dst, target *[16]byte) error {
	const msgLen = naLen + 8
	b := out.Frame()
	if len(b) < header.EthernetLen+header.IPv6Len+msgLen {
		return ErrBuffer
	}
	o := encodeHeaders(b, cfg, macDst, dst, msgLen)
	m := header.ICMPv6(b[o : o+msgLen])
	m[0], m[1] = header.ICMPv6NeighborAdvert, 0
	m[4], m[5], m[6], m[7] = 0xe0, 0, 0, 0 // Router, Solicited, Override
	copy(m[8:24], target[:])
	m[24], m[25] = optTLLA, 1
	copy(m[26:32], cfg.OurMAC[:])
	src := cfg.V6.OurLL.As16()
	m.SetChecksum(&src, dst)
	out.Commit(o + msgLen)
	return nil
}

// putRA writes the Router Advertisement message with its options.
//
// m: buffer for the ICMPv6 message; cfg: configuration. Returns the
// message length, or ErrBuffer.
func putRA(m []byte, cfg *config.Config) (int, error) {
	// Largest possible: 16 + PIO 32 + MTU 8 + RDNSS 56 + DNSSL 8 + 5 × 255
	// (+ padding) + SLLA 8.
	if len(m) < 16+32+8+56+8+5*255+8+8 {
		return 0, ErrBuffer
	}
	m[0], m[1], m[2], m[3] = header.ICMPv6RouterAdvert, 0, 0, 0
	m[4] = 255                               // Cur Hop Limit
	m[5] = 0x80                              // M: addresses from DHCPv6 too; O clear
	binary.BigEndian.PutUint16(m[6:], 65535) // router lifetime, RFC 8319 maximum
	clear(m[8:16])                           // reachable time, retrans timer: unspecified
	n := raLen

	if cfg.V6.Addr.Is6() && !cfg.V6.Addr.Is4In6() {
		p := m[n : n+32]
		p[0], p[1], p[2], p[3] = optPrefix, 4, 64, 0xc0 // /64, L and A
		binary.BigEndian.PutUint32(p[4:], 0xffffffff)   // valid lifetime
		binary.BigEndian.PutUint32(p[8:], 0xffffffff)   // preferred lifetime
		clear(p[12:16])
		a := cfg.V6.Addr.As16()
		copy(p[16:24], a[:8])
		clear(p[24:32]) // bits past the prefix length are zero (§4.6.2)
		n += 32
	}

	if cfg.MTU != 0 {
		p := m[n : n+8]
		p[0], p[1], p[2], p[3] = optMTU, 1, 0, 0
		binary.BigEndian.PutUint32(p[4:], uint32(cfg.MTU))
		n += 8
	}

	rdnss := false
	if cfg.AdvertiseDNS {
		start := n
		k := 0
		for _, d := range cfg.V6.DNS {
			if k == config.MaxDNS {
				break
			}
			if !d.Is6() || d.Is4In6() {
				continue
			}
			a := d.As16()
			copy(m[start+8+16*k:], a[:])
			k++
		}
		if k > 0 {
			m[start], m[start+1], m[start+2], m[start+3] = optRDNSS, byte(1+2*k), 0, 0
			binary.BigEndian.PutUint32(m[start+4:], 0xffffffff)
			n += 8 + 16*k
			rdnss = true
		}
	}

	// DNSSL only together with RDNSS, as the C original does: a search
	// list without servers is of little use.
	if rdnss && cfg.AdvertiseSearch && len(cfg.Search) > 0 {
		start := n
		w := start + 8
		for i, s := range cfg.Search {
			if i == config.MaxSearch {
				break
			}
			l, err := header.PutDNSName(m[w:w+255], s)
			if err != nil {
				continue // skip names that cannot be encoded
			}
			w += l
		}
		if w > start+8 {
			for (w-start)%8 != 0 {
				m[w] = 0
				w++
			}
			m[start], m[start+1], m[start+2], m[start+3] = optDNSSL, byte((w-start)/8), 0, 0
			binary.BigEndian.PutUint32(m[start+4:], 0xffffffff)
			n = w
		}
	}

	m[n], m[n+1] = optSLLA, 1
	copy(m[n+2:n+8], cfg.OurMAC[:])
	n += 8
	return n, nil
}

// sendRA queues a Router Advertisement.
//
// cfg: configuration; out: queue; macDst, dst: destination. Returns
// ErrBuffer if the frame does not fit.
func sendRA(cfg *config.Config, out tap.Out, macDst [6]byte, dst *[16]byte) error {
	b := out.Frame()
	o := header.EthernetLen + header.IPv6Len
	if len(b) < o {
		return ErrBuffer
	}
	l, err := putRA(b[o:], cfg)
	if err != nil {
		return err
	}
	encodeHeaders(b, cfg, macDst, dst, l)
	src := cfg.V6.OurLL.As16()
	header.ICMPv6(b[o:o+l]).SetChecksum(&src, dst)
	out.Commit(o + l)
	return nil
}

// RA queues an unsolicited Router Advertisement to ff02::1, for the event
// loop's timer (re-armed with NextRA). Nothing is sent when NDP is off, or
// with --no-ra or --config-net.
//
// cfg: configuration; g: learned guest state (unused); out: queue.
// Returns ErrBuffer if the frame does not fit.
func RA(cfg *config.Config, g *guest.State, out tap.Out) error {
	if !raEnabled(cfg) {
		return nil
	}
	return sendRA(cfg, out, allNodesMAC, &allNodes)
}

// NextRA returns the interval before the next unsolicited Router
// Advertisement: uniformly random in [200 s, 600 s). The first one is due
// one interval after "tap ready".
func NextRA() time.Duration {
	return 200*time.Second + rand.N(400*time.Second)
}

// Announce queues, at "tap ready", one Neighbor Solicitation for the
// guest's assigned address, addressed to it, from our link-local address
// and with our MAC as source link-layer address. The guest answers with an
// advertisement, from which the loop learns its MAC. The Ethernet
// destination is the guest's MAC if known, else the solicited-node
// multicast MAC of the address (RFC 2464 §7), which the guest listens to.
//
// cfg: configuration; g: learned guest state (MAC); out: queue.
// Returns ErrBuffer if the frame does not fit; nothing is sent without
// NDP or an assigned IPv6 address.
func Announce(cfg *config.Config, g *guest.State, out tap.Out) error {
	if !Enabled(cfg) || !cfg.V6.Addr.Is6() || cfg.V6.Addr.Is4In6() {
		return nil
	}
	const msgLen = nsLen + 8
	b := out.Frame()
	if len(b) < header.EthernetLen+header.IPv6Len+msgLen {
		return ErrBuffer
	}
	dst := cfg.V6.Addr.As16()
	mac := g.MAC
	if mac == ([6]byte{}) || mac == guest.BroadcastMAC {
		mac = [6]byte{0x33, 0x33, 0xff, dst[13], dst[14], dst[15]}
	}
	o := encodeHeaders(b, cfg, mac, &dst, msgLen)
	m := header.ICMPv6(b[o : o+msgLen])
	m[0], m[1] = header.ICMPv6NeighborSolicit, 0
	clear(m[4:8])
	copy(m[8:24], dst[:])
	m[24], m[25] = optSLLA, 1
	copy(m[26:32], cfg.OurMAC[:])
	src := cfg.V6.OurLL.As16()
	m.SetChecksum(&src, &dst)
	out.Commit(o + msgLen)
	return nil
}
