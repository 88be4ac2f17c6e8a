// End-to-end test of pasta against malformed guest frames: thousands of
// random, truncated and corrupted frames written into its tap from a packet
// socket in the namespace; pasta must survive them and keep serving.

package test

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/test/nstest"
)

var (
	badFrames = flag.Int("badinput.frames", 4000, "how many malformed frames TestPastaBadInput writes into the tap")
	badSeed   = flag.Uint64("badinput.seed", 0, "seed of TestPastaBadInput's frames (0: from the clock; the seed used is logged)")
)

// TestPastaBadInput writes -badinput.frames malformed frames (random bytes,
// valid frames of every protocol pasta answers truncated at a random
// length, with random bytes flipped, with random length fields, with
// garbage after a valid header) into pasta's tap through an AF_PACKET
// socket bound to it in the namespace, at a bounded rate. Then pasta must
// still run, answer ping over both families and a DHCP request. The seed
// is logged; -badinput.seed replays a run.
func TestPastaBadInput(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		p := startPasta(t, h, peer, modeAttachRoot, append([]string{"--config-net"}, quietArgs...)...)

		seed := *badSeed
		if seed == 0 {
			seed = uint64(time.Now().UnixNano())
		}
		t.Logf("seed %d (replay with -args -badinput.seed %d)", seed, seed)
		rng := rand.New(rand.NewPCG(seed, seed^0x9a559a55))

		var fd int
		var mac net.HardwareAddr
		if err := p.Do(func() error {
			ifi, err := net.InterfaceByName(p.Tap)
			if err != nil {
				return err
			}
			mac = ifi.HardwareAddr
			// Protocol 0: the socket only sends, it receives nothing.
			fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("packet socket: %w", err)
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
		}); err != nil {
			t.Fatalf("packet socket on %s: %v", p.Tap, err)
		}
		defer unix.Close(fd)

		templates := frameTemplates(mac)
		before := tapCounters(t, p)
		sent, refused := 0, 0
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < *badFrames && time.Now().Before(deadline); i++ {
			f := badFrame(rng, templates)
			if _, err := unix.Write(fd, f); err != nil {
				// Shorter than an Ethernet header, or longer than the
				// MTU: the kernel refuses to send it at all.
				refused++
			} else {
				sent++
			}
			if i%64 == 63 {
				// The tap's queue holds 1000 frames: let pasta drain it.
				time.Sleep(2 * time.Millisecond)
				if p.Proc.Exited() {
					t.Fatalf("pasta exited after %d frames (seed %d):\n%s", i+1, seed, p.Proc.Output())
				}
			}
		}
		after := tapCounters(t, p)
		t.Logf("%d frames sent, %d refused by the kernel; tap tx %d packets", sent, refused, after.TxPackets-before.TxPackets)

		// What must still work; with Debian's pasta, a known failure.
		var errs []error
		if after.TxPackets-before.TxPackets < uint64(sent)/2 {
			errs = append(errs, fmt.Errorf("only %d of %d frames left the tap towards pasta", after.TxPackets-before.TxPackets, sent))
		}
		time.Sleep(200 * time.Millisecond)
		if p.Proc.Exited() {
			code, _ := p.Proc.Wait(0)
			t.Fatalf("pasta exited with %d after the bad frames (seed %d):\n%s", code, seed, p.Proc.Output())
		}
		for _, dst := range []string{hostLocal4.String(), hostLocal6.String(), nstest.HostGW4.String()} {
			err := ping(p, dst, 2)
			if dst == nstest.HostGW4.String() && len(errs) == 0 {
				knownLimit(t, peer, reasonICMPGateway, err)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
		stdout, stderr, err := nsRun(p, 30*time.Second, "busybox", "udhcpc", "-i", p.Tap, "-f", "-q", "-n", "-t", "5", "-T", "2", "-s", "/bin/true")
		if err != nil || !strings.Contains(stdout+stderr, "lease of 198.18.0.2 obtained") {
			errs = append(errs, fmt.Errorf("DHCP: %v\n%s%s", err, stdout, stderr))
		}
		if p.Proc.Exited() {
			t.Fatalf("pasta exited:\n%s", p.Proc.Output())
		}
		if err := errors.Join(errs...); err != nil {
			knownLimit(t, peer, reasonBadInput, fmt.Errorf("after the bad frames (seed %d): %w", seed, err))
		}
	})
}

// reasonBadInput is what becomes of Debian's pasta in TestPastaBadInput
// in about one run in two: after some hundred frames (frame 902 of seed
// 1), it spins at 100% CPU (utime +1 s per second, state R) and no longer
// reads its tap: the tap's transmit queue fills and nothing gets through.
// The same frames replayed one by one did not trigger it.
const reasonBadInput = "after some hundred malformed frames it can spin at 100% CPU and stop reading its tap"

// Addresses of the template frames, as bytes.
var (
	gw4    = nstest.HostGW4.As4()
	guest4 = nstest.HostAddr4.Addr().As4()
	gw6    = nstest.HostGW6.As16()
	guest6 = nstest.HostAddr6.Addr().As16()
	bcast  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ourMAC = net.HardwareAddr{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}
	// All_DHCP_Relay_Agents_and_Servers, ff02::1:2 (RFC 8415 7.1).
	allDHCP = [16]byte{0: 0xff, 1: 0x02, 13: 0x01, 15: 0x02}
)

// frameTemplates returns valid frames from the namespace's MAC src of
// every kind pasta handles: ARP request, ICMP echo, UDP, TCP SYN, DHCP
// DISCOVER over IPv4; NS, RS, echo, UDP, TCP SYN, DHCPv6 SOLICIT over
// IPv6.
func frameTemplates(src net.HardwareAddr) [][]byte {
	ll := [16]byte{0xfe, 0x80, 15: 0x22}
	var out [][]byte

	arp := make([]byte, 28)
	binary.BigEndian.PutUint16(arp[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(arp[2:], 0x0800) // IPv4
	arp[4], arp[5] = 6, 4
	binary.BigEndian.PutUint16(arp[6:], 1) // request
	copy(arp[8:], src)
	copy(arp[14:], guest4[:])
	copy(arp[24:], gw4[:])
	out = append(out, ether(bcast, src, 0x0806, arp))

	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'g', 'o', 'p', 'a', 's', 's', 't', '!'}
	binary.BigEndian.PutUint16(echo[2:], ^csum(echo, 0))
	out = append(out, ether(ourMAC, src, 0x0800, ipv4(guest4, gw4, 1, echo)))

	out = append(out, ether(ourMAC, src, 0x0800, ipv4(guest4, gw4, 17, udp(40000, 53, []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x01\x00\x01")))))
	out = append(out, ether(ourMAC, src, 0x0800, ipv4(guest4, gw4, 6, tcpSYN(40001, 9))))

	bootp := make([]byte, 240, 300)
	bootp[0], bootp[1], bootp[2] = 1, 1, 6
	copy(bootp[28:], src)
	copy(bootp[236:], []byte{99, 130, 83, 99})
	bootp = append(bootp, 53, 1, 1, 55, 4, 1, 3, 6, 15, 61, 7, 1, src[0], src[1], src[2], src[3], src[4], src[5], 255)
	out = append(out, ether(bcast, src, 0x0800, ipv4([4]byte{}, [4]byte{255, 255, 255, 255}, 17, udp(68, 67, bootp))))

	ns := append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, gw6[:]...)
	ns = append(ns, 1, 1, src[0], src[1], src[2], src[3], src[4], src[5])
	out = append(out, ether(ourMAC, src, 0x86dd, ipv6(guest6, gw6, 58, 255, ns)))
	rs := append([]byte{133, 0, 0, 0, 0, 0, 0, 0}, 1, 1, src[0], src[1], src[2], src[3], src[4], src[5])
	out = append(out, ether(ourMAC, src, 0x86dd, ipv6(ll, [16]byte{0xff, 0x02, 15: 2}, 58, 255, rs)))
	out = append(out, ether(ourMAC, src, 0x86dd, ipv6(guest6, gw6, 58, 64, []byte{128, 0, 0, 0, 0x12, 0x34, 0, 1, 'x', 'y'})))
	out = append(out, ether(ourMAC, src, 0x86dd, ipv6(guest6, gw6, 17, 64, udp(40002, 53, []byte("\x00\x01\x01\x00\x00\x01")))))
	out = append(out, ether(ourMAC, src, 0x86dd, ipv6(guest6, gw6, 6, 64, tcpSYN(40003, 9))))
	sol := []byte{1, 0xab, 0xcd, 0xef, 0, 1, 0, 10, 0, 3, 0, 1, src[0], src[1], src[2], src[3], src[4], src[5],
		0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 2, 0, 23}
	out = append(out, ether(ourMAC, src, 0x86dd, ipv6(ll, allDHCP, 17, 1, udp(546, 547, sol))))
	return out
}

// badFrame returns one malformed frame built from templates with rng:
// random bytes, a truncated template, a template with bytes flipped or
// with a length field set at random, or a template's headers followed by
// random bytes (sometimes many, up to 9000).
func badFrame(rng *rand.Rand, templates [][]byte) []byte {
	tpl := templates[rng.IntN(len(templates))]
	f := append([]byte(nil), tpl...)
	switch rng.IntN(6) {
	case 0: // noise
		f = make([]byte, rng.IntN(1600))
		for i := range f {
			f[i] = byte(rng.Uint32())
		}
		if len(f) >= 12 && rng.IntN(2) == 0 {
			copy(f[6:], tpl[6:12]) // from the namespace's MAC
			copy(f[12:], tpl[12:min(14, len(f))])
		}
	case 1: // truncated
		f = f[:rng.IntN(len(f)+1)]
	case 2: // flipped bytes
		for n := 1 + rng.IntN(6); n > 0; n-- {
			i := rng.IntN(len(f))
			f[i] ^= byte(1 + rng.IntN(255))
		}
	case 3: // length fields at random
		for _, off := range lengthFields(f) {
			binary.BigEndian.PutUint16(f[off:], uint16(rng.Uint32()))
		}
	case 4: // garbage after valid headers
		n := rng.IntN(600)
		if rng.IntN(20) == 0 {
			n = 1500 + rng.IntN(7500)
		}
		for ; n > 0; n-- {
			f = append(f, byte(rng.Uint32()))
		}
	case 5: // truncated and flipped
		f = f[:rng.IntN(len(f)+1)]
		if len(f) > 0 {
			f[rng.IntN(len(f))] ^= 0xff
		}
	}
	return f
}

// lengthFields returns the offsets of the 16-bit length fields of frame f
// (IPv4 total length, IPv6 payload length, UDP length), as far as f is
// long enough to have them.
func lengthFields(f []byte) []int {
	var offs []int
	if len(f) < 14 {
		return nil
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		offs = append(offs, 14+2)
		if len(f) >= 14+20+8 && f[14+9] == 17 {
			offs = append(offs, 14+20+4)
		}
	case 0x86dd:
		offs = append(offs, 14+4)
		if len(f) >= 14+40+8 && f[14+6] == 17 {
			offs = append(offs, 14+40+4)
		}
	}
	var ok []int
	for _, o := range offs {
		if o+2 <= len(f) {
			ok = append(ok, o)
		}
	}
	return ok
}

// ether returns an Ethernet frame from src to dst of type typ around
// payload.
func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], typ)
	return append(f, payload...)
}

// ipv4 returns an IPv4 packet (TTL 64, header checksum set) around
// payload.
func ipv4(src, dst [4]byte, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8], h[9] = 64, proto
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	binary.BigEndian.PutUint16(h[10:], ^csum(h, 0))
	return append(h, payload...)
}

// ipv6 returns an IPv6 packet with hop limit hops around payload.
func ipv6(src, dst [16]byte, next, hops byte, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, hops
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	return append(h, payload...)
}

// udp returns a UDP datagram (checksum 0: none, which IPv4 allows and
// which a translator must not trip over in IPv6 either).
func udp(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...)
}

// tcpSYN returns a TCP SYN with an MSS option (checksum left 0).
func tcpSYN(sport, dport uint16) []byte {
	h := make([]byte, 24)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 0x01020304)
	h[12], h[13] = 6<<4, 0x02
	binary.BigEndian.PutUint16(h[14:], 65535)
	copy(h[20:], []byte{2, 4, 0x05, 0xb4})
	return h
}

// csum returns the 16-bit ones' complement sum of b added to initial (RFC
// 1071), not yet complemented.
func csum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
