// Package configtest holds the configuration fixtures the protocols' tests
// share: the guest's MAC and addresses, and a dual-stack configuration whose
// gateways map to the host's loopback. Addresses come from the
// documentation ranges (RFC 5737, RFC 3849), so that nothing a test sends
// could reach a real network.
package configtest

import (
	"net/netip"

	"gopasst/datapath/config"
)

var (
	// GuestMAC is the guest's MAC address (qemu's 52:54:00 prefix).
	GuestMAC = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	// GuestLL is the guest's IPv6 link-local address, the modified EUI-64
	// of GuestMAC (RFC 4291 appendix A), as a Linux guest forms it.
	GuestLL = netip.MustParseAddr("fe80::5054:ff:fe12:3456")
	// OurLL is our link-local address, the source of NDP and DHCPv6.
	OurLL = netip.MustParseAddr("fe80::1")

	// Guest4 and Gateway4 are the guest's IPv4 address (a /24) and its
	// gateway in DualStack.
	Guest4   = netip.MustParseAddr("192.0.2.10")
	Gateway4 = netip.MustParseAddr("192.0.2.1")
	// Guest6 and Gateway6 are the guest's IPv6 address (a /64) and its
	// gateway in DualStack.
	Guest6   = netip.MustParseAddr("2001:db8::10")
	Gateway6 = netip.MustParseAddr("2001:db8::1")
)

// DualStack returns a new configuration with both families enabled: the
// guest at Guest4/24 and Guest6/64 behind Gateway4 and Gateway6, the
// gateways mapped to the host's loopback, OurLL as our link-local address
// and config.DefaultMAC as ours. Tests change their copy as they need.
func DualStack() *config.Config {
	return &config.Config{
		OurMAC: config.DefaultMAC,
		V4: config.IP{Enabled: true, Addr: Guest4, PrefixLen: 24, Gateway: Gateway4,
			MapHostLoopback: Gateway4},
		V6: config.IP{Enabled: true, Addr: Guest6, PrefixLen: 64, Gateway: Gateway6,
			MapHostLoopback: Gateway6, OurLL: OurLL},
	}
}
