// The -h/--help text, grouped as the C original's: process options,
// the guest side, addressing, DNS, mapping, protocols, forwarding, then
// what belongs to one mode only.

package main

import (
	"strings"

	"gopasst/datapath/config"
)

// usage returns the help text for mode.
func usage(mode config.Mode) string {
	pasta := mode == config.ModePasta
	guest, fwdDefault := "guest", "none"
	var b strings.Builder
	w := func(lines ...string) {
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	if pasta {
		guest, fwdDefault = "namespace", "auto"
		w("Usage: pasta [OPTION]... [COMMAND [ARGS]...]",
			"       pasta [OPTION]... PID",
			"       pasta [OPTION]... --netns PATH|NAME",
			"",
			"Connect a network namespace to the host's network through a tap",
			"device. Without PID or --netns, run COMMAND (default: your shell)",
			"in a new user and network namespace.")
	} else {
		w("Usage: passt [OPTION]...",
			"",
			"Connect a qemu virtual machine to the host's network through a",
			"UNIX domain stream socket, translating frames to host sockets.")
	}

	w("",
		"Process:",
		"  -d, --debug              Log debugging information",
		"      --trace              Log even more (implies --debug)",
		"  -q, --quiet              Log only warnings and errors",
		"  -f, --foreground         Do not daemonise",
		"  -l, --log-file PATH      Log to PATH instead of standard error",
		"      --log-size BYTES     Truncate the log file at BYTES (default 1 MiB)",
		"      --runas UID[:GID]    Run as this user and group, numeric or names",
		"                           (default: nobody when started as root)",
		"      --stats DELAY        Print event statistics every DELAY seconds",
		"                           (needs --foreground)",
		"      --busy-poll USEC     Spin up to USEC microseconds before waiting",
		"                           for events (default 0: off; costs CPU)",
		"  -c, --conf-path PATH     Listen for run-time configuration on PATH",
		"      --chroot-fallback    Use chroot() where pivot_root() fails",
		"  -h, --help               Print this help and exit",
		"      --version            Print the version and exit")

	w("", "Guest side:")
	if pasta {
		w("  -I, --ns-ifname NAME     Name of the tap device in the namespace",
			"                           (default: the host's template interface, or tap0)")
	} else {
		w("  -s, --socket PATH        UNIX domain socket to listen on (alias:",
			"                           --socket-path; default: the first free",
			"                           /tmp/passt_N.socket)",
			"      --vhost-user         Serve the socket as a vhost-user back end",
			"      --print-capabilities Print vhost-user capabilities (JSON) and exit",
			"      --repair-path PATH   passt-repair socket for migration (vhost-user)",
			"  -1, --one-off            Exit when the first client disconnects")
	}
	w("  -F, --fd FD              Use the already connected descriptor FD",
		"  -p, --pcap FILE          Capture the "+guest+"'s traffic to FILE",
		"  -P, --pid FILE           Write our PID to FILE")

	w("",
		"Addressing:",
		"  -m, --mtu MTU            MTU advertised to the "+guest+"; 0: none",
		"                           (default 65520, the largest a frame allows)",
		"  -a, --address ADDR[/LEN] "+capitalise(guest)+" address, once per family",
		"                           (default: the host's, on the template interface)",
		"  -n, --netmask MASK       IPv4 netmask, dotted or prefix length",
		"                           (default: the host's, or the address class)",
		"  -M, --mac-addr ADDR      Our MAC address (default 9a:55:9a:55:9a:55)",
		"  -g, --gateway ADDR       Gateway, once per family (default: the host's)",
		"  -i, --interface NAME     Template interface for addresses and routes",
		"                           (default: --outbound-if4/6, else the interface",
		"                           of the first default route)",
		"  -o, --outbound ADDR      Source address of host-side sockets, once per",
		"                           family (default: the kernel's choice)",
		"      --outbound-if4 NAME  Bind host-side IPv4 sockets to interface NAME",
		"      --outbound-if6 NAME  Bind host-side IPv6 sockets to interface NAME",
		"  -H, --hostname NAME      Host name for the "+guest,
		"      --fqdn NAME          Fully qualified domain name for the "+guest)

	w("", "DNS:",
		"  -D, --dns ADDR           Resolver for the "+guest+", repeatable; none: no",
		"                           DNS at all (default: from /etc/resolv.conf)",
		"  -S, --search NAME        Search domain, repeatable; none: no list",
		"                           (default: from /etc/resolv.conf)",
		"      --dns-forward ADDR   Send DNS queries for ADDR to the host's resolver",
		"      --dns-host ADDR      That resolver (default: first in /etc/resolv.conf)")
	if pasta {
		w("      --dhcp-dns           Advertise resolvers over DHCP/DHCPv6/NDP",
			"      --dhcp-search        Advertise the search list likewise")
	} else {
		w("      --no-dhcp-dns        Do not advertise resolvers over DHCP/DHCPv6/NDP",
			"      --no-dhcp-search     Do not advertise the search list")
	}

	w("", "Address mapping:",
		"      --map-host-loopback ADDR  "+capitalise(guest)+" address that reaches the",
		"                           host's loopback; none: no such address",
		"                           (default: the gateway)",
		"      --map-guest-addr ADDR  "+capitalise(guest)+" address that reaches the host's",
		"                           own address (default: none)",
		"      --no-map-gw          Same as --map-host-loopback none",
		"      --freebind           Listen on addresses the host does not have")

	w("", "Protocols:",
		"      --no-tcp             Disable TCP",
		"      --no-udp             Disable UDP",
		"      --no-icmp            Disable ICMP and ICMPv6 (and NDP)",
		"      --no-dhcp            Disable the DHCP server",
		"      --no-ndp             Disable NDP answers",
		"      --no-dhcpv6          Disable the DHCPv6 server",
		"      --no-ra              Disable router advertisements",
		"  -4, --ipv4-only          Use IPv4 only",
		"  -6, --ipv6-only          Use IPv6 only")

	w("", "Port forwarding:",
		"  -t, --tcp-ports SPEC     Forward TCP ports of the host to the "+guest,
		"  -u, --udp-ports SPEC     Forward UDP ports of the host to the "+guest)
	if pasta {
		w("  -T, --tcp-ns SPEC        Forward TCP ports of the namespace to the host",
			"  -U, --udp-ns SPEC        Forward UDP ports of the namespace to the host")
	}
	w("    Repeatable. SPEC is 'none', or a comma-separated list, optionally",
		"    after a listening address and interface: [ADDR][%IF]/LIST. Items:",
		"      PORT[-LAST][:[TADDR/]TO[-TOLAST]]  forward, possibly remapped",
		"      ~PORT[-LAST]                       exclude these ports",
		"      all[:TADDR]                        every non-ephemeral port")
	if pasta {
		w("      auto                               only ports bound on the other side")
	}
	w("    Examples:",
		"      -t 22                Port 22 to port 22 of the "+guest,
		"      -t 2222:22           Port 2222 to port 22",
		"      -t 80,443            Ports 80 and 443",
		"      -t 8000-8010:9000-9010  A range, shifted by 1000",
		"      -t 192.0.2.1/22      Port 22 on address 192.0.2.1 only",
		"      -t %eth0/22          Port 22 on interface eth0 only",
		"      -t 1000-2000,~1500   A range without port 1500",
		"      -t ~22               Every non-ephemeral port but 22")
	if pasta {
		w("      -t auto              Ports bound in the namespace, rescanned",
			"      -t 80-82,auto        Ports 80 to 82, while bound in the namespace",
			"    With auto for -u, UDP also follows the ports bound for TCP.",
			"    -T and -U take no address: they listen on the namespace's loopback.")
	}
	w("    Default: " + fwdDefault)

	if pasta {
		w("", "Namespace:",
			"      --userns PATH        User namespace to join",
			"      --netns PATH|NAME    Network namespace to join (NAME: /run/netns/NAME)",
			"      --netns-only         Do not join or create a user namespace",
			"                           (implied by --netns without --userns)",
			"      --no-netns-quit      Keep running when the joined namespace goes away",
			"      --config-net         Configure the tap device: addresses, routes, MTU",
			"      --no-copy-routes     Deprecated: one default route, not the host's",
			"      --no-copy-addrs      Deprecated: one address, not the host's",
			"      --ns-mac-addr ADDR   MAC address of the tap device",
			"      --no-splice          Never splice loopback connections",
			"      --splice-only        Only forward between loopback addresses",
			"      --host-lo-to-ns-lo   Host loopback forwards reach namespace loopback",
			"      --accel-sockmap      Spliced TCP moved by an eBPF sockmap (needs root)")
	}
	return b.String()
}

// capitalise returns s with its first letter in upper case.
func capitalise(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
