// Package config holds the run-time configuration of gopasst: what the
// command line asked for, completed with what was discovered on the host
// (addresses, routes, resolvers). It is filled once at start-up by the
// command line parser (cmd/passt) and host discovery, and only read after.
package config

import (
	"net/netip"
	"time"

	"gopasst/datapath/fwd"
)

// Mode is the operating mode, chosen by the name the binary was invoked by.
type Mode int

const (
	// ModePasst serves a qemu VM over a UNIX stream socket (or --fd).
	ModePasst Mode = iota
	// ModePasta serves a network namespace through a tap device.
	ModePasta
)

// String returns "passt" or "pasta".
func (m Mode) String() string {
	if m == ModePasta {
		return "pasta"
	}
	return "passt"
}

// LogLevel orders how much is logged.
type LogLevel int

const (
	LogQuiet LogLevel = iota - 1 // -q: errors only
	LogInfo                      // default: warnings and notable events
	LogDebug                     // -d/--debug
	LogTrace                     // --trace
)

// DefaultMAC is the MAC address the C original uses for itself.
var DefaultMAC = [6]byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}

// DefaultMTU is 65535 minus the Ethernet header, rounded down to a multiple
// of 4: the largest frame the tap path can carry.
const DefaultMTU = 65520

// IP holds the per-family addressing, as given or as discovered.
type IP struct {
	Enabled bool // family in use (not switched off by -4/-6 or lack of addresses)

	Addr      netip.Addr // address assigned to the guest (-a, or the host's)
	PrefixLen int        // IPv4: from -a/len, -n or the host; IPv6: always 64
	AddrFixed bool       // -a given: no learning, single-address --config-net
	Gateway   netip.Addr // -g, or the host's default gateway
	OurLL     netip.Addr // IPv6 only: our link-local source (NDP, DHCPv6)

	// MapHostLoopback is the guest-side address that reaches the host's
	// loopback (default: the gateway; invalid for none/--no-map-gw).
	MapHostLoopback netip.Addr
	// MapGuestAddr is the guest-side address that reaches the host's own
	// address as the guest's (invalid: none).
	MapGuestAddr netip.Addr

	DNS        []netip.Addr // servers advertised to the guest (≤ 3)
	DNSMatch   netip.Addr   // guest destination redirected to DNSHost (--dns-forward)
	DNSHost    netip.Addr   // host resolver DNS-match traffic goes to (--dns-host)
	Outbound   netip.Addr   // -o: source for host-side sockets
	OutboundIf string       // --outbound-if4/6
	Template   string       // interface the addressing was copied from
	TemplateIx int          // its ifindex, 0 if none
}

// Config is everything gopasst needs to know to run.
type Config struct {
	Mode Mode

	// Process
	Log        LogLevel
	LogFile    string
	LogSize    int64
	Foreground bool
	RunAsUID   int // -1: default
	RunAsGID   int // -1: default
	PcapFile   string
	PidFile    string
	FD         int // -F/--fd, -1 if none
	Stats      time.Duration

	// Addressing
	MTU       int // 0: advertise none
	OurMAC    [6]byte
	GuestMAC  [6]byte // --ns-mac-addr (pasta), zero if unset
	Interface string  // -i
	Hostname  string  // -H
	FQDN      string  // --fqdn
	V4, V6    IP
	Search    []string // search domains (≤ 5), nil with -S none
	Freebind  bool

	// What is advertised over DHCP/DHCPv6/RA.
	AdvertiseDNS    bool
	AdvertiseSearch bool

	// Protocols
	NoTCP, NoUDP, NoICMP    bool
	NoDHCP, NoNDP, NoDHCPv6 bool
	NoRA                    bool
	NoMapGW                 bool

	// Forwarding: host to guest (-t/-u) and, pasta only, namespace to
	// host (-T/-U).
	TCPIn, UDPIn, TCPOut, UDPOut fwd.Spec

	// passt only
	Socket            string // -s
	OneOff            bool
	VhostUser         bool
	PrintCapabilities bool

	// pasta only
	NSIfName       string // -I
	UserNS         string // --userns
	NetNS          string // --netns (resolved path)
	NetNSOnly      bool
	NoNetNSQuit    bool
	ConfigNet      bool
	NoSplice       bool
	HostLoToNSLo   bool
	TargetPID      int      // pasta PID: attach to this process's namespaces; 0 if none
	Command        []string // pasta [COMMAND [ARGS...]]
	NoCopyRoutes   bool
	NoCopyAddrs    bool
	EphemeralFirst uint16 // ip_local_port_range of the host, read at start
	EphemeralLast  uint16
}
