// Package config holds the run-time configuration of gopasst: what the
// command line asked for, completed with what was discovered on the host
// (addresses, routes, resolvers). It is filled once at start-up by the
// command line parser (cmd/passt) and host discovery, and only read after.
package config

import (
	"fmt"
	"net/netip"
	"strings"
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
	LogQuiet LogLevel = iota - 1 // -q: warnings and errors only (as the C original's -q)
	LogInfo                      // default: also notable events
	LogDebug                     // -d/--debug
	LogTrace                     // --trace
)

// DefaultMAC is the MAC address the C original uses for itself.
var DefaultMAC = [6]byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}

// DefaultMTU is 65535 minus the Ethernet header, rounded down to a multiple
// of 4: the largest frame the tap path can carry.
const DefaultMTU = 65520

// MaxMTU is the largest -m/--mtu accepted: 65535 minus the Ethernet header.
const MaxMTU = 65521

// Log file sizes (--log-size): the C original's default, and its minimum
// (5 × max(BUFSIZ, page size)).
const (
	DefaultLogSize = 1 << 20
	MinLogSize     = 5 * 8192
)

// MaxBusyPoll is the longest spin --busy-poll takes, in microseconds.
const MaxBusyPoll = 10000

// Limits on what is advertised to the guest, as in the C original.
const (
	MaxDNS    = 3 // servers per family
	MaxSearch = 5 // search domains
)

// IP holds the per-family addressing, as given or as discovered.
type IP struct {
	Enabled bool // family in use (not switched off by -4/-6 or lack of addresses)

	Addr      netip.Addr // address assigned to the guest (-a, or the host's)
	PrefixLen int        // IPv4: from -a/len, -n or the host; IPv6: always 64
	AddrFixed bool       // -a given: no learning, single-address --config-net
	Gateway   netip.Addr // -g, or the host's default gateway
	OurLL     netip.Addr // IPv6 only: our link-local source (NDP, DHCPv6)

	// LocalMode: no template interface was usable, so the family runs with
	// link-local addressing (IPv4 169.254.2.1/16 via 169.254.2.2; IPv6 no
	// address, gateway and our link-local fe80::1). Set by host discovery.
	LocalMode bool
	// NoCopyAddrs/NoCopyRoutes: --config-net sets one address (one default
	// route via Gateway) instead of copying the template's. Set by -a (-g),
	// local mode, and the deprecated --no-copy-addrs (--no-copy-routes).
	NoCopyAddrs  bool
	NoCopyRoutes bool

	// MapHostLoopback is the guest-side address that reaches the host's
	// loopback (default: the gateway; invalid for none/--no-map-gw).
	MapHostLoopback netip.Addr
	// MapGuestAddr is the guest-side address that reaches the host's own
	// address as the guest's (invalid: none).
	MapGuestAddr netip.Addr

	// DNS lists the servers advertised to the guest (≤ MaxDNS): the -D
	// addresses of this family if any were given, else those of
	// /etc/resolv.conf, loopback ones replaced (see addressing.md §1).
	DNS      []netip.Addr
	DNSMatch netip.Addr // guest destination redirected to DNSHost (--dns-forward, or automatic)
	DNSHost  netip.Addr // host resolver DNS-match traffic goes to (--dns-host, else first nameserver)

	Outbound   netip.Addr // -o: source for host-side sockets
	OutboundIf string     // --outbound-if4/6: device-bind host-side sockets
	Template   string     // interface the addressing was copied from
	TemplateIx int        // its ifindex, 0 if none (local mode)
}

// Config is everything gopasst needs to know to run.
type Config struct {
	Mode Mode

	// Process
	Log        LogLevel
	LogFile    string // -l: log to this file (opened by the caller)
	LogSize    int64  // --log-size: cap of the log file, DefaultLogSize if not given
	Foreground bool   // -f, or pasta running a command
	RunAsUID   int    // --runas, -1: default (ours, nobody if root in the init namespace)
	RunAsGID   int    // --runas, -1: default
	PcapFile   string
	PidFile    string
	FD         int           // -F/--fd, -1 if none (implies OneOff)
	Stats      time.Duration // --stats: minimum interval of event statistics
	// BusyPoll (--busy-poll, ours): the event loop spins for up to this
	// long, adaptively, before a wait that would block; 0: off.
	BusyPoll time.Duration
	ConfPath string // -c/--conf-path: configuration socket (pesto)
	// ChrootFallback: --chroot-fallback, use chroot() where pivot_root()
	// fails.
	ChrootFallback bool

	// Addressing
	MTU       int // 0: advertise none
	OurMAC    [6]byte
	GuestMAC  [6]byte // --ns-mac-addr (pasta), zero if unset
	Interface string  // -i
	Hostname  string  // -H
	FQDN      string  // --fqdn
	V4, V6    IP
	Search    []string // search domains (≤ MaxSearch), -S or /etc/resolv.conf
	NoDNS     bool     // -D none: no servers, no DNS mapping, resolv.conf not read
	NoSearch  bool     // -S none: no search list, resolv.conf not read for one
	Freebind  bool

	// What is advertised over DHCP/DHCPv6/RA: passt by default (off with
	// --no-dhcp-dns/--no-dhcp-search), pasta only with --dhcp-dns/
	// --dhcp-search.
	AdvertiseDNS    bool
	AdvertiseSearch bool

	// Protocols
	NoTCP, NoUDP, NoICMP    bool
	NoDHCP, NoNDP, NoDHCPv6 bool
	NoRA                    bool
	// NoMapGW: --no-map-gw or --map-host-loopback none: no guest address
	// reaches the host's loopback.
	NoMapGW bool

	// Forwarding: host to guest (-t/-u) and, pasta only, namespace to
	// host (-T/-U). Fully parsed and validated by the command line parser
	// (fwd.Table), defaults applied: passt none, pasta auto.
	TCPIn, UDPIn, TCPOut, UDPOut fwd.Spec

	// passt only
	Socket            string // -s, "" to probe /tmp/passt_N.socket
	OneOff            bool   // -1, or -F
	VhostUser         bool
	PrintCapabilities bool
	RepairPath        string // --repair-path (vhost-user)

	// pasta only
	NSIfName     string // -I
	UserNS       string // --userns
	NetNS        string // --netns (resolved: NAME is /run/netns/NAME), or /proc/PID/ns/net
	NetNSOnly    bool   // do not join or create a user namespace
	NoNetNSQuit  bool
	ConfigNet    bool
	NoSplice     bool // always set in passt mode
	SpliceOnly   bool // --splice-only: no tap, loopback forwarding only
	HostLoToNSLo bool
	// Sockmap (--accel-sockmap, ours): spliced TCP connections are paired in
	// an in-kernel eBPF sockmap where privileges allow (datapath/sockmap).
	Sockmap        bool
	TargetPID      int      // pasta PID: attach to this process's namespaces; 0 if none
	Command        []string // pasta [COMMAND [ARGS...]]; empty: the user's shell when spawning
	NoCopyRoutes   bool     // --no-copy-routes given (effective per family: IP.NoCopyRoutes)
	NoCopyAddrs    bool     // --no-copy-addrs given (effective per family: IP.NoCopyAddrs)
	EphemeralFirst uint16   // ip_local_port_range of the host, read at start
	EphemeralLast  uint16

	// NotYet lists what the command line asks for that parses but has no
	// implementation yet ("-T 22: ... not implemented yet"): the program
	// refuses to start with the first, rather than accept and ignore it.
	NotYet []string
}

// Spawning reports whether pasta creates its own namespace to run Command
// (or a shell) in, rather than joining one (PID or --netns).
func (c *Config) Spawning() bool {
	return c.Mode == ModePasta && c.NetNS == "" && c.TargetPID == 0
}

// IsForeground reports whether gopasst stays in the foreground: -f, or
// pasta running a command.
func (c *Config) IsForeground() bool { return c.Foreground || c.Spawning() }

// TargetNS returns the namespace files pasta attaches to: the network
// namespace, and the user namespace to join first ("" for none), from
// pasta PID, --netns and --userns as the C original reads them. Both are
// empty in passt mode and when pasta spawns its own namespace.
func (c *Config) TargetNS() (netns, userns string) {
	if c.Mode != ModePasta {
		return "", ""
	}
	if c.TargetPID != 0 {
		netns = fmt.Sprintf("/proc/%d/ns/net", c.TargetPID)
		if !c.NetNSOnly && c.UserNS == "" {
			userns = fmt.Sprintf("/proc/%d/ns/user", c.TargetPID)
		}
	}
	if c.NetNS != "" {
		netns = c.NetNS
		if !strings.Contains(netns, "/") {
			netns = "/run/netns/" + netns
		}
	}
	if c.UserNS != "" && !c.NetNSOnly {
		userns = c.UserNS
	}
	return netns, userns
}

// ClassfulPrefix returns the prefix length of a's IPv4 address class (A
// /8, B /16, C /24, else /32): the C original's default for -a without a
// length, and for a host address without one.
func ClassfulPrefix(a netip.Addr) int {
	b := a.As4()[0]
	switch {
	case b < 128:
		return 8
	case b < 192:
		return 16
	case b < 224:
		return 24
	}
	return 32
}
