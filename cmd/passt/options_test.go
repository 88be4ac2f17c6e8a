// Tests of the command line: getopt_long semantics, every option of
// compat.md in its mode, values and their errors, pasta's operands, the
// forwarding defaults, --help and --version.

package main

import (
	"errors"
	"net/netip"
	"os/user"
	"strings"
	"testing"

	"gopasst/datapath/config"
	"gopasst/datapath/fwd"
)

func init() {
	// Deterministic host facts for every test.
	ephemeralRange = func() (uint16, uint16, error) { return 49152, 65535, nil }
	lookupUser = func(name string) (*user.User, error) {
		switch name {
		case "alice":
			return &user.User{Uid: "1000", Gid: "1001"}, nil
		case "root":
			return &user.User{Uid: "0", Gid: "0"}, nil
		}
		return nil, user.UnknownUserError(name)
	}
	lookupGroup = func(name string) (*user.Group, error) {
		if name == "staff" {
			return &user.Group{Gid: "50"}, nil
		}
		return nil, user.UnknownGroupError(name)
	}
}

func TestParseOK(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name  string
		mode  config.Mode
		args  []string
		check func(t *testing.T, c *config.Config)
	}{
		{"passt defaults", config.ModePasst, nil, func(t *testing.T, c *config.Config) {
			if c.MTU != 65520 || c.OurMAC != config.DefaultMAC || c.Log != config.LogInfo || c.FD != -1 ||
				c.RunAsUID != -1 || !c.V4.Enabled || !c.V6.Enabled || !c.NoSplice || !c.AdvertiseDNS ||
				!c.AdvertiseSearch || c.LogSize != 1<<20 || c.Foreground {
				t.Errorf("defaults: %+v", c)
			}
			if len(c.TCPIn.Rules)+len(c.UDPIn.Rules)+len(c.TCPOut.Rules)+len(c.UDPOut.Rules) != 0 {
				t.Error("passt forwards by default")
			}
		}},
		{"pasta defaults", config.ModePasta, nil, func(t *testing.T, c *config.Config) {
			for _, s := range []*fwd.Spec{&c.TCPIn, &c.UDPIn, &c.TCPOut, &c.UDPOut} {
				if len(s.Rules) != 1 || s.Rules[0].Flags != fwd.Weak|fwd.Scan || s.Rules[0].Last != 49151 {
					t.Errorf("%v default: %v", s.Proto, s)
				}
			}
			if !c.UDPIn.ScanFollowsTCP || !c.UDPOut.ScanFollowsTCP {
				t.Error("UDP auto does not follow TCP")
			}
			if c.TCPOut.Rules[0].IfName != "lo" {
				t.Errorf("-T default not on lo: %v", c.TCPOut.Rules[0].String())
			}
			if c.AdvertiseDNS || c.AdvertiseSearch || c.NoSplice {
				t.Errorf("pasta defaults: %+v", c)
			}
			// Spawning a shell: foreground and quiet.
			if !c.Foreground || c.Log != config.LogQuiet || !c.Spawning() {
				t.Errorf("spawning: foreground %v log %v", c.Foreground, c.Log)
			}
		}},
		{"cluster", config.ModePasst, []string{"-46fd"}, func(t *testing.T, c *config.Config) {
			if c.V4.Enabled || !c.V6.Enabled || !c.Foreground || c.Log != config.LogDebug {
				t.Errorf("-46fd: v4 %v v6 %v fg %v log %v", c.V4.Enabled, c.V6.Enabled, c.Foreground, c.Log)
			}
		}},
		{"argument in cluster", config.ModePasst, []string{"-fm1500", "-t80"}, func(t *testing.T, c *config.Config) {
			if c.MTU != 1500 || len(c.TCPIn.Rules) != 1 || c.TCPIn.Rules[0].First != 80 {
				t.Errorf("mtu %d rules %v", c.MTU, c.TCPIn.String())
			}
		}},
		{"argument forms", config.ModePasst, []string{"--mtu=1400", "-t", "22", "--udp-ports", "53", "--tcp-ports=443"},
			func(t *testing.T, c *config.Config) {
				if c.MTU != 1400 || len(c.TCPIn.Rules) != 2 || len(c.UDPIn.Rules) != 1 {
					t.Errorf("mtu %d tcp %v udp %v", c.MTU, c.TCPIn.String(), c.UDPIn.String())
				}
			}},
		{"argument may start with a dash", config.ModePasst, []string{"-l", "-weird", "--pcap", "--odd"},
			func(t *testing.T, c *config.Config) {
				if c.LogFile != "-weird" || c.PcapFile != "--odd" {
					t.Errorf("log %q pcap %q", c.LogFile, c.PcapFile)
				}
			}},
		{"abbreviations", config.ModePasst, []string{"--fore", "--sock", "/tmp/x.sock", "--no-dhcpv"},
			func(t *testing.T, c *config.Config) {
				if !c.Foreground || c.Socket != "/tmp/x.sock" || !c.NoDHCPv6 {
					t.Errorf("fg %v socket %q nodhcpv6 %v", c.Foreground, c.Socket, c.NoDHCPv6)
				}
			}},
		{"socket-path alias", config.ModePasst, []string{"--socket-path", "/tmp/y"}, func(t *testing.T, c *config.Config) {
			if c.Socket != "/tmp/y" {
				t.Errorf("socket %q", c.Socket)
			}
		}},
		{"last log option wins", config.ModePasst, []string{"-d", "--trace", "-q"}, func(t *testing.T, c *config.Config) {
			if c.Log != config.LogQuiet {
				t.Errorf("log %v", c.Log)
			}
		}},
		{"trace", config.ModePasst, []string{"-q", "--trace"}, func(t *testing.T, c *config.Config) {
			if c.Log != config.LogTrace {
				t.Errorf("log %v", c.Log)
			}
		}},
		{"log file", config.ModePasst, []string{"-l", "/tmp/passt.log", "--log-size", "0x100000"}, func(t *testing.T, c *config.Config) {
			if c.LogFile != "/tmp/passt.log" || c.LogSize != 1<<20 {
				t.Errorf("log %q size %d", c.LogFile, c.LogSize)
			}
		}},
		{"mtu zero and octal", config.ModePasst, []string{"-m", "0"}, func(t *testing.T, c *config.Config) {
			if c.MTU != 0 {
				t.Errorf("mtu %d", c.MTU)
			}
		}},
		{"address with length", config.ModePasst, []string{"-a", "192.0.2.5/20", "-a", "2001:db8::5/56"},
			func(t *testing.T, c *config.Config) {
				if c.V4.Addr != a("192.0.2.5") || c.V4.PrefixLen != 20 || !c.V4.AddrFixed || !c.V4.NoCopyAddrs ||
					c.V6.Addr != a("2001:db8::5") || !c.V6.AddrFixed {
					t.Errorf("v4 %+v v6 %+v", c.V4, c.V6)
				}
			}},
		{"classful address", config.ModePasst, []string{"-a", "10.1.2.3"}, func(t *testing.T, c *config.Config) {
			if c.V4.PrefixLen != 8 {
				t.Errorf("prefix %d", c.V4.PrefixLen)
			}
		}},
		{"netmask after address", config.ModePasst, []string{"-a", "172.16.1.2", "-n", "255.255.255.0"}, func(t *testing.T, c *config.Config) {
			if c.V4.PrefixLen != 24 {
				t.Errorf("prefix %d", c.V4.PrefixLen)
			}
		}},
		{"netmask before address", config.ModePasst, []string{"-n", "20", "-a", "172.16.1.2"}, func(t *testing.T, c *config.Config) {
			if c.V4.PrefixLen != 20 {
				t.Errorf("prefix %d", c.V4.PrefixLen)
			}
		}},
		{"mac, gateway, outbound", config.ModePasta,
			[]string{"-M", "02:00:00:AB:cd:01", "-g", "192.0.2.1", "-g", "fe80::1", "-o", "192.0.2.9", "--outbound-if6", "eth1", "--ns-mac-addr", "02:00:00:00:00:02"},
			func(t *testing.T, c *config.Config) {
				if c.OurMAC != [6]byte{2, 0, 0, 0xab, 0xcd, 1} || c.GuestMAC != [6]byte{2, 0, 0, 0, 0, 2} ||
					c.V4.Gateway != a("192.0.2.1") || c.V6.Gateway != a("fe80::1") || !c.V4.NoCopyRoutes ||
					c.V4.Outbound != a("192.0.2.9") || c.V6.OutboundIf != "eth1" {
					t.Errorf("%+v", c)
				}
			}},
		{"dns servers capped", config.ModePasst, []string{"-D", "192.0.2.1", "-D", "192.0.2.2", "-D", "2001:db8::53", "-D", "192.0.2.3", "-D", "192.0.2.4"},
			func(t *testing.T, c *config.Config) {
				if len(c.V4.DNS) != 3 || len(c.V6.DNS) != 1 || c.NoDNS {
					t.Errorf("v4 %v v6 %v", c.V4.DNS, c.V6.DNS)
				}
			}},
		{"dns none clears", config.ModePasst, []string{"--dns-forward", "192.0.2.53", "-D", "192.0.2.1", "-D", "none"},
			func(t *testing.T, c *config.Config) {
				if !c.NoDNS || len(c.V4.DNS) != 0 || c.V4.DNSMatch.IsValid() {
					t.Errorf("nodns %v dns %v match %v", c.NoDNS, c.V4.DNS, c.V4.DNSMatch)
				}
			}},
		{"dns forward and host", config.ModePasta, []string{"--dns-forward", "169.254.1.1", "--dns-host", "127.0.0.53", "--dhcp-dns", "--dhcp-search"},
			func(t *testing.T, c *config.Config) {
				if c.V4.DNSMatch != a("169.254.1.1") || c.V4.DNSHost != a("127.0.0.53") || !c.AdvertiseDNS || !c.AdvertiseSearch {
					t.Errorf("%+v", c.V4)
				}
			}},
		{"search", config.ModePasst, []string{"-S", "a.example", "-S", "b.example", "--no-dhcp-dns", "--no-dhcp-search"},
			func(t *testing.T, c *config.Config) {
				if strings.Join(c.Search, " ") != "a.example b.example" || c.AdvertiseDNS || c.AdvertiseSearch {
					t.Errorf("search %v", c.Search)
				}
			}},
		{"search none", config.ModePasst, []string{"-S", "a.example", "-S", "none"}, func(t *testing.T, c *config.Config) {
			if !c.NoSearch || c.Search != nil {
				t.Errorf("search %v", c.Search)
			}
		}},
		{"mapping", config.ModePasst, []string{"--map-host-loopback", "192.0.2.2", "--map-guest-addr", "2001:db8::7"},
			func(t *testing.T, c *config.Config) {
				if c.V4.MapHostLoopback != a("192.0.2.2") || c.V6.MapGuestAddr != a("2001:db8::7") || c.NoMapGW {
					t.Errorf("%+v %+v", c.V4, c.V6)
				}
			}},
		{"mapping none", config.ModePasst, []string{"--map-host-loopback", "none", "--map-guest-addr", "none"},
			func(t *testing.T, c *config.Config) {
				if !c.NoMapGW || c.V4.MapHostLoopback.IsValid() {
					t.Errorf("nomapgw %v", c.NoMapGW)
				}
			}},
		{"runas numeric", config.ModePasst, []string{"--runas", "1000"}, func(t *testing.T, c *config.Config) {
			if c.RunAsUID != 1000 || c.RunAsGID != 1000 {
				t.Errorf("%d:%d", c.RunAsUID, c.RunAsGID)
			}
		}},
		{"runas names", config.ModePasst, []string{"--runas", "alice:staff"}, func(t *testing.T, c *config.Config) {
			if c.RunAsUID != 1000 || c.RunAsGID != 50 {
				t.Errorf("%d:%d", c.RunAsUID, c.RunAsGID)
			}
		}},
		{"runas name and number", config.ModePasst, []string{"--runas", "alice:0x20"}, func(t *testing.T, c *config.Config) {
			if c.RunAsUID != 1000 || c.RunAsGID != 32 {
				t.Errorf("%d:%d", c.RunAsUID, c.RunAsGID)
			}
		}},
		{"fd implies one-off", config.ModePasst, []string{"-s", "/tmp/s", "-F", "5"}, func(t *testing.T, c *config.Config) {
			if c.FD != 5 || !c.OneOff || c.Socket != "" {
				t.Errorf("fd %d oneoff %v socket %q", c.FD, c.OneOff, c.Socket)
			}
		}},
		{"fd 0", config.ModePasta, []string{"-F", "0", "--netns", "x"}, func(t *testing.T, c *config.Config) {
			if c.FD != 0 {
				t.Errorf("fd %d", c.FD)
			}
		}},
		{"repair-path none", config.ModePasst, []string{"--repair-path", "none"}, func(t *testing.T, c *config.Config) {}},
		{"vhost-user", config.ModePasst, []string{"--vhost-user", "-s", "/tmp/vu.sock", "-1", "--repair-path", "none"}, func(t *testing.T, c *config.Config) {
			if !c.VhostUser || c.Socket != "/tmp/vu.sock" || !c.OneOff {
				t.Errorf("vhost-user %v socket %q one-off %v", c.VhostUser, c.Socket, c.OneOff)
			}
		}},
		{"print-capabilities", config.ModePasst, []string{"--print-capabilities"}, func(t *testing.T, c *config.Config) {
			if !c.PrintCapabilities {
				t.Error("not set")
			}
		}},
		{"protocol flags", config.ModePasst, []string{"--no-icmp", "--no-dhcp", "--no-ra", "--freebind", "--no-map-gw", "-1"},
			func(t *testing.T, c *config.Config) {
				if !c.NoICMP || !c.NoNDP || !c.NoDHCP || !c.NoRA || !c.Freebind || !c.NoMapGW || !c.OneOff {
					t.Errorf("%+v", c)
				}
			}},
		{"ipv4 only", config.ModePasst, []string{"-4", "-t", "80"}, func(t *testing.T, c *config.Config) {
			if !c.NoNDP || !c.NoDHCPv6 || c.V6.Enabled || c.TCPIn.Rules[0].Addr != a("0.0.0.0") {
				t.Errorf("v6 %v rules %v", c.V6.Enabled, c.TCPIn.String())
			}
		}},
		{"pasta netns name", config.ModePasta, []string{"--netns", "ctr", "--config-net", "--no-copy-routes", "-I", "eth0"},
			func(t *testing.T, c *config.Config) {
				if c.NetNS != "/run/netns/ctr" || !c.NetNSOnly || c.Spawning() || c.Foreground || !c.ConfigNet ||
					!c.NoRA || !c.V6.NoCopyRoutes || c.NSIfName != "eth0" || c.Log != config.LogInfo {
					t.Errorf("%+v", c)
				}
			}},
		{"pasta netns path and userns", config.ModePasta, []string{"--userns", "/proc/7/ns/user", "--netns", "/proc/7/ns/net"},
			func(t *testing.T, c *config.Config) {
				if c.NetNS != "/proc/7/ns/net" || c.UserNS != "/proc/7/ns/user" || c.NetNSOnly {
					t.Errorf("%+v", c)
				}
			}},
		{"pasta PID", config.ModePasta, []string{"-f", "1234"}, func(t *testing.T, c *config.Config) {
			if c.TargetPID != 1234 || c.NetNS != "/proc/1234/ns/net" || c.UserNS != "/proc/1234/ns/user" ||
				c.NetNSOnly || len(c.Command) != 0 || c.Spawning() {
				t.Errorf("%+v", c)
			}
		}},
		{"pasta PID netns only", config.ModePasta, []string{"--netns-only", "1234"}, func(t *testing.T, c *config.Config) {
			if c.UserNS != "" || !c.NetNSOnly {
				t.Errorf("%+v", c)
			}
		}},
		{"pasta command", config.ModePasta, []string{"-t", "8080", "ip", "-d", "link"}, func(t *testing.T, c *config.Config) {
			if strings.Join(c.Command, " ") != "ip -d link" || !c.Foreground || c.Log != config.LogQuiet {
				t.Errorf("command %q log %v", c.Command, c.Log)
			}
			if len(c.TCPIn.Rules) != 1 || c.TCPIn.Rules[0].Flags != 0 || len(c.TCPOut.Rules) != 1 {
				t.Errorf("rules in %v out %v", c.TCPIn.String(), c.TCPOut.String())
			}
			// Explicit -t: UDP keeps its own default, auto.
			if !c.UDPIn.Scanning() || !c.UDPIn.ScanFollowsTCP {
				t.Errorf("udp %v", c.UDPIn.String())
			}
		}},
		{"pasta numeric command", config.ModePasta, []string{"12", "34"}, func(t *testing.T, c *config.Config) {
			if c.TargetPID != 0 || strings.Join(c.Command, " ") != "12 34" {
				t.Errorf("pid %d command %q", c.TargetPID, c.Command)
			}
		}},
		{"pasta double dash", config.ModePasta, []string{"-d", "--", "-weird"}, func(t *testing.T, c *config.Config) {
			if strings.Join(c.Command, " ") != "-weird" || c.Log != config.LogDebug {
				t.Errorf("command %q log %v", c.Command, c.Log)
			}
		}},
		{"pasta none and disabled", config.ModePasta, []string{"-t", "none", "-T", "none", "--no-udp"},
			func(t *testing.T, c *config.Config) {
				for _, s := range []*fwd.Spec{&c.TCPIn, &c.UDPIn, &c.TCPOut, &c.UDPOut} {
					if len(s.Rules) != 0 {
						t.Errorf("%v: %v", s.Proto, s)
					}
				}
			}},
		{"podman", config.ModePasta, []string{"--config-net", "--dns-forward", "169.254.1.1", "-t", "none", "-u", "none",
			"-T", "none", "-U", "none", "--no-map-gw", "--quiet", "--netns", "/run/user/1000/netns/x", "-t", "8080-8081:80-81"},
			func(t *testing.T, c *config.Config) {
				if c.TCPIn.String() != "TCP [*]:8080-8081 => 80-81" || !c.NoMapGW || c.Log != config.LogQuiet {
					t.Errorf("%v", c.TCPIn.String())
				}
			}},
		{"rootlesskit", config.ModePasta, []string{"--config-net", "--mtu", "65520", "--tcp-ports=auto", "--udp-ports=auto", "4242"},
			func(t *testing.T, c *config.Config) {
				if c.TargetPID != 4242 || !c.TCPIn.Scanning() {
					t.Errorf("%+v", c)
				}
				if len(c.NotYet) != 0 || !c.UDPIn.Scanning() || !c.TCPOut.Scanning() {
					t.Errorf("auto given: refused %q, or not scanning", c.NotYet)
				}
			}},
		{"libvirt", config.ModePasst, []string{"--one-off", "--socket", "/run/libvirt/qemu/passt/1.socket", "--pid", "/run/x.pid",
			"--address", "192.168.1.50", "--netmask", "24", "--gateway", "192.168.1.1", "--interface", "eth0", "-t", "2222:22"},
			func(t *testing.T, c *config.Config) {
				if !c.OneOff || c.PidFile != "/run/x.pid" || c.V4.PrefixLen != 24 || c.Interface != "eth0" ||
					c.TCPIn.String() != "TCP [*]:2222 => 22" {
					t.Errorf("%+v", c)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseArgs(tt.mode, tt.args)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tt.args, err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		mode config.Mode
		args []string
		want string // the whole error line
	}{
		{config.ModePasst, []string{"--bogus"}, "passt: unrecognized option '--bogus'"},
		{config.ModePasst, []string{"-x"}, "passt: invalid option -- 'x'"},
		{config.ModePasst, []string{"-dx"}, "passt: invalid option -- 'x'"},
		{config.ModePasst, []string{"-t"}, "passt: option requires an argument -- 't'"},
		{config.ModePasst, []string{"--mtu"}, "passt: option '--mtu' requires an argument"},
		{config.ModePasst, []string{"--debug=1"}, "passt: option '--debug' doesn't allow an argument"},
		{config.ModePasst, []string{"--fore=1"}, "passt: option '--foreground' doesn't allow an argument"},
		{config.ModePasst, []string{"--no-dhcp-"}, "passt: option '--no-dhcp-' is ambiguous; possibilities: '--no-dhcp-dns' '--no-dhcp-search'"},
		{config.ModePasst, []string{"extra"}, "passt: extra non-option argument: 'extra'"},
		{config.ModePasst, []string{"-t", "80-"}, `passt: -t: invalid value "80-": invalid port specifier: bad port range "80-"`},
		{config.ModePasst, []string{"--tcp-ports=auto"}, `passt: --tcp-ports: invalid value "auto": 'auto' port forwarding is only allowed for pasta`},
		{config.ModePasst, []string{"-t", "80", "-t", "none"}, `passt: -t: invalid value "none": none conflicts with previous options`},
		{config.ModePasst, []string{"--no-tcp", "-t", "80"}, `passt: -t: invalid value "80": TCP forwarding rule, but TCP is disabled`},
		{config.ModePasst, []string{"-u", "53:192.0.2.1"}, `passt: -u: invalid value "53:192.0.2.1": dual-stack forward to a fixed target address 192.0.2.1 unsupported (did you mean 0.0.0.0/...?)`},
		{config.ModePasst, []string{"-T", "80"}, "passt: -T is for pasta mode only"},
		{config.ModePasst, []string{"--udp-ns", "80"}, "passt: --udp-ns is for pasta mode only"},
		{config.ModePasst, []string{"--netns", "x"}, "passt: --netns is for pasta mode only"},
		{config.ModePasst, []string{"--config-net"}, "passt: --config-net is for pasta mode only"},
		{config.ModePasst, []string{"--dhcp-dns"}, "passt: --dhcp-dns is for pasta mode only"},
		{config.ModePasta, []string{"--no-dhcp-dns"}, "pasta: --no-dhcp-dns is for passt mode only"},
		{config.ModePasta, []string{"-s", "/tmp/x"}, "pasta: -s is for passt mode only"},
		{config.ModePasta, []string{"-1"}, "pasta: -1 is for passt mode only"},
		{config.ModePasta, []string{"--vhost-user"}, "pasta: --vhost-user is for passt mode only"},
		{config.ModePasst, []string{"--vhost-user", "--migrate-exit"}, "passt: --migrate-exit: not implemented yet"},
		{config.ModePasst, []string{"--repair-path", "/tmp/r", "--vhost-user"}, "passt: --repair-path: not implemented yet"},
		{config.ModePasst, []string{"--vhost-user", "--migrate-no-linger"}, "passt: --migrate-no-linger: not implemented yet"},
		{config.ModePasst, []string{"--stats", "1"}, "passt: --stats: not implemented yet"},
		{config.ModePasst, []string{"--stats", "x"}, `passt: --stats: invalid value "x": want a number of seconds`},
		{config.ModePasst, []string{"--migrate-exit"}, "passt: --migrate-exit: is for vhost-user mode only"},
		{config.ModePasst, []string{"--repair-path", "/tmp/r"}, "passt: --repair-path: is for vhost-user mode only"},
		{config.ModePasst, []string{"--mtu", "abc"}, `passt: --mtu: invalid value "abc"`},
		{config.ModePasst, []string{"-m", "65522"}, `passt: -m: invalid value "65522": too large (maximum 65521)`},
		{config.ModePasst, []string{"-m", "-1"}, `passt: -m: invalid value "-1"`},
		{config.ModePasst, []string{"-a", "127.0.0.1"}, `passt: -a: invalid value "127.0.0.1"`},
		{config.ModePasst, []string{"-a", "::1"}, `passt: -a: invalid value "::1"`},
		{config.ModePasst, []string{"-a", "192.0.2.1/33"}, `passt: -a: invalid value "192.0.2.1/33": bad prefix length`},
		{config.ModePasst, []string{"-a", "fe80::1%eth0"}, `passt: -a: invalid value "fe80::1%eth0"`},
		{config.ModePasst, []string{"-n", "24", "-a", "192.0.2.1/24"}, "passt: -a: redundant prefix length specification (-n given)"},
		{config.ModePasst, []string{"-a", "192.0.2.1/24", "-n", "24"}, "passt: -n: redundant prefix length specification (-a has one)"},
		{config.ModePasst, []string{"-n", "255.0.255.0"}, `passt: -n: invalid value "255.0.255.0": want a netmask or a prefix length`},
		{config.ModePasst, []string{"-n", "33"}, `passt: -n: invalid value "33": want a netmask or a prefix length`},
		{config.ModePasst, []string{"-M", "9a:55:9a:55:9a"}, `passt: -M: invalid value "9a:55:9a:55:9a"`},
		{config.ModePasst, []string{"-M", "9a-55-9a-55-9a-55"}, `passt: -M: invalid value "9a-55-9a-55-9a-55"`},
		{config.ModePasst, []string{"-g", "0.0.0.0"}, `passt: -g: invalid value "0.0.0.0"`},
		{config.ModePasst, []string{"-o", "::ffff:192.0.2.1"}, `passt: -o: invalid value "::ffff:192.0.2.1"`},
		{config.ModePasst, []string{"-D", "resolver"}, `passt: -D: invalid value "resolver"`},
		{config.ModePasst, []string{"--dns-forward", "127.0.0.1"}, `passt: --dns-forward: invalid value "127.0.0.1"`},
		{config.ModePasst, []string{"--map-host-loopback", "224.0.0.1"}, `passt: --map-host-loopback: invalid value "224.0.0.1"`},
		{config.ModePasst, []string{"-S", "a", "-S", "b", "-S", "c", "-S", "d", "-S", "e", "-S", "f"}, `passt: -S: invalid value "f": more than 5 search domains`},
		{config.ModePasst, []string{"-i", "a/b"}, `passt: -i: invalid value "a/b": not an interface name`},
		{config.ModePasst, []string{"--outbound-if4", "averyveryverylongname"}, `passt: --outbound-if4: invalid value "averyveryverylongname": longer than 15 bytes`},
		{config.ModePasst, []string{"-s", ""}, `passt: -s: invalid value "": empty`},
		{config.ModePasst, []string{"--log-size", "4096"}, `passt: --log-size: invalid value "4096": want a size of at least 40960 bytes`},
		{config.ModePasst, []string{"-F", "2"}, `passt: -F: invalid value "2": want a descriptor number, 0 or above 2`},
		{config.ModePasst, []string{"--runas", "nosuchuser"}, `passt: --runas: invalid value "nosuchuser": no such user`},
		{config.ModePasst, []string{"--runas", "root"}, `passt: --runas: invalid value "root": no such user`},
		{config.ModePasst, []string{"--runas", "alice:nogroup"}, `passt: --runas: invalid value "alice:nogroup": no such group`},
		{config.ModePasta, []string{"--netns", "x", "sh"}, "pasta: both --netns and PID or command given"},
		{config.ModePasta, []string{"--netns", "x", "1234"}, "pasta: both --netns and PID or command given"},
		{config.ModePasta, []string{"99999999999"}, "pasta: invalid PID 99999999999"},
		{config.ModePasta, []string{"--no-copy-addrs"}, "pasta: --no-copy-addrs needs --config-net"},
		{config.ModePasta, []string{"-T", "127.0.0.1/80"}, `pasta: -T: invalid value "127.0.0.1/80": listening address not allowed here`},
	}
	for _, tt := range tests {
		c, err := parseArgs(tt.mode, tt.args)
		if err == nil {
			t.Errorf("%v %q: no error, config %+v", tt.mode, tt.args, c)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("%v %q:\n got %s\nwant %s", tt.mode, tt.args, err, tt.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %q: error of more than one line", tt.mode, tt.args)
		}
	}
}

// TestCompatOptions checks that every option of compat.md is accepted in
// its mode, with the value given, and that the other mode's are refused.
func TestCompatOptions(t *testing.T) {
	common := [][]string{
		{"-d"}, {"--debug"}, {"--trace"}, {"-q"}, {"--quiet"}, {"-f"}, {"--foreground"},
		{"-l", "/tmp/l"}, {"--log-file", "/tmp/l"}, {"--log-size", "1048576"}, {"--runas", "1000:1000"},
		{"-p", "/tmp/p"}, {"--pcap", "/tmp/p"}, {"-P", "/tmp/pid"}, {"--pid", "/tmp/pid"},
		{"-m", "1500"}, {"--mtu", "1500"}, {"-a", "192.0.2.2"}, {"--address", "2001:db8::2"}, {"-n", "24"},
		{"--netmask", "255.255.255.0"}, {"-M", "9a:55:9a:55:9a:56"}, {"--mac-addr", "9a:55:9a:55:9a:56"},
		{"-g", "192.0.2.1"}, {"--gateway", "fe80::1"}, {"-i", "eth0"}, {"--interface", "eth0"},
		{"-o", "192.0.2.3"}, {"--outbound", "2001:db8::3"}, {"--outbound-if4", "eth0"}, {"--outbound-if6", "eth0"},
		{"-H", "vm"}, {"--hostname", "vm"}, {"--fqdn", "vm.example"},
		{"-D", "192.0.2.53"}, {"--dns", "none"}, {"-S", "example"}, {"--search", "none"},
		{"--dns-forward", "192.0.2.54"}, {"--dns-host", "127.0.0.53"},
		{"--no-tcp"}, {"--no-udp"}, {"--no-icmp"}, {"--no-dhcp"}, {"--no-ndp"}, {"--no-dhcpv6"}, {"--no-ra"},
		{"-4"}, {"--ipv4-only"}, {"-6"}, {"--ipv6-only"},
		{"--map-host-loopback", "192.0.2.100"}, {"--map-guest-addr", "none"}, {"--no-map-gw"}, {"--freebind"},
		{"-t", "22"}, {"--tcp-ports", "22"}, {"-u", "53"}, {"--udp-ports", "53"},
		// pasta-only in compat.md, but the C original accepts it in passt too
		// (where splicing is always off).
		{"--no-splice"},
	}
	passtOnly := [][]string{
		{"--no-dhcp-dns"}, {"--no-dhcp-search"}, {"-s", "/tmp/s"}, {"--socket", "/tmp/s"}, {"-1"}, {"--one-off"},
	}
	pastaOnly := [][]string{
		{"--dhcp-dns"}, {"--dhcp-search"}, {"-T", "22"}, {"--tcp-ns", "22"}, {"-U", "53"}, {"--udp-ns", "53"},
		{"-I", "eth0"}, {"--ns-ifname", "eth0"}, {"--userns", "/proc/1/ns/user"}, {"--netns", "x"}, {"--netns-only"},
		{"--no-netns-quit"}, {"--config-net"}, {"--ns-mac-addr", "02:00:00:00:00:01"},
		{"--host-lo-to-ns-lo"},
	}
	try := func(mode config.Mode, args []string, ok bool) {
		_, err := parseArgs(mode, args)
		if ok && err != nil {
			t.Errorf("%v %q: %v", mode, args, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "mode only")) {
			t.Errorf("%v %q: got %v, want a mode error", mode, args, err)
		}
	}
	// -F/--fd: passt's connected socket; pasta's tap device, which lives
	// in the namespace pasta attaches to: refused without one.
	for _, a := range [][]string{{"-F", "3"}, {"--fd", "3"}} {
		try(config.ModePasst, a, true)
		try(config.ModePasta, append(a, "--netns", "x"), true)
		if _, err := parseArgs(config.ModePasta, a); err == nil || !strings.Contains(err.Error(), "give PID or --netns") {
			t.Errorf("pasta %q without a namespace: %v, want refused", a, err)
		}
	}
	for _, a := range common {
		try(config.ModePasst, a, true)
		try(config.ModePasta, a, true)
	}
	for _, a := range passtOnly {
		try(config.ModePasst, a, true)
		try(config.ModePasta, a, false)
	}
	for _, a := range pastaOnly {
		try(config.ModePasta, a, true)
		try(config.ModePasst, a, false)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, tt := range []struct {
		mode          config.Mode
		args          []string
		want, notWant []string
	}{
		{config.ModePasst, []string{"--help"}, []string{"Usage: passt [OPTION]...", "--one-off", "--socket PATH", "Default: none"},
			[]string{"--tcp-ns", "--netns", "auto"}},
		{config.ModePasta, []string{"-h"}, []string{"Usage: pasta [OPTION]... [COMMAND", "--tcp-ns", "--netns", "Default: auto"},
			[]string{"--one-off", "--socket"}},
		{config.ModePasst, []string{"--version"}, []string{"passt " + version + "\n", "build"}, nil},
		{config.ModePasta, []string{"-d", "--version", "--bogus"}, []string{"pasta " + version + "\n"}, nil},
	} {
		_, err := parseArgs(tt.mode, tt.args)
		var req *exitRequest
		if !errors.As(err, &req) {
			t.Errorf("%v %q: %v, want an exit request", tt.mode, tt.args, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(req.text, w) {
				t.Errorf("%v %q: output lacks %q", tt.mode, tt.args, w)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(req.text, w) {
				t.Errorf("%v %q: output has %q", tt.mode, tt.args, w)
			}
		}
	}
}

// FuzzParseArgs feeds arbitrary command lines to the parser: it must never
// panic, and must either fail with one line or return a Config.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-46fd", "-t\x0080-", "--mtu=1500", "--tcp\x00x", "-a\x00192.0.2.1/24\x00-n\x0024", "--netns\x00x\x00sh",
		"--\x00-x", "-m", "--runas\x00alice:staff", "-D\x00none\x00-S\x00none", "1234", "-T\x00auto",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, line string, pasta bool) {
		mode := config.ModePasst
		if pasta {
			mode = config.ModePasta
		}
		var args []string
		if line != "" {
			args = strings.Split(line, "\x00")
		}
		c, err := parseArgs(mode, args)
		var req *exitRequest
		switch {
		case errors.As(err, &req):
		case err != nil:
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
		case c == nil:
			t.Fatal("no Config and no error")
		}
	})
}

// TestForwardingAccepted: every forwarding form, explicit auto and -T/-U
// with ports included, is served: nothing is listed for refusal.
func TestForwardingAccepted(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-t", "none", "-u", "none", "-T", "none", "-U", "none"},
		{"-t", "8080", "-u", "53"},
		{"-t", "auto"},
		{"-u", "auto,~53"},
		{"-T", "5432"},
		{"--udp-ns", "53"},
		{"-t", "127.0.0.1/8000-8010:9000-9010,auto", "-T", "auto"},
	} {
		cfg, err := parseArgs(config.ModePasta, args)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if len(cfg.NotYet) != 0 {
			t.Errorf("%q: refused %q", args, cfg.NotYet)
		}
	}
}
