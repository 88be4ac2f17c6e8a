// End-to-end tests of pasta's address services without --config-net: real
// DHCP clients (busybox udhcpc and udhcpc6, ISC dhclient -4 and -6) and the
// kernel's SLAAC configure the namespace from what pasta answers.

package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// What the host's resolv.conf says in these tests, and so what pasta
// advertises with --dhcp-dns and --dhcp-search.
var (
	dhcpDNS4   = nstest.DefaultResolver
	dhcpDNS6   = netip.MustParseAddr("2001:db8:9a55::53")
	dhcpSearch = "example.test"
)

// startBare starts peer's pasta attached as root, without --config-net
// (the tap stays down and bare), advertising DNS servers and search list,
// in a host whose resolv.conf names dhcpDNS4, dhcpDNS6 and dhcpSearch.
func startBare(t *testing.T, peer nstest.Peer) *nstest.Pasta {
	t.Helper()
	h := nstest.NewHostWith(t, nstest.HostOpts{Resolvers: []netip.Addr{dhcpDNS4, dhcpDNS6}, Search: []string{dhcpSearch}})
	return startPasta(t, h, peer, modeAttachRoot, append([]string{"--dhcp-dns", "--dhcp-search"}, quietArgs...)...)
}

// hookScript writes an executable shell script into dir that saves its
// environment to LOG.<event> (LOG = dir/env, event = $1 for udhcpc,
// $reason for dhclient) and then runs body, and returns its path and the
// LOG prefix.
func hookScript(t *testing.T, dir, event, body string) (script, log string) {
	t.Helper()
	log = filepath.Join(dir, "env")
	script = filepath.Join(dir, "hook.sh")
	// The environment file appears under its final name only once the
	// lease is applied, so that a test that sees it can check the
	// interface at once.
	tmp := "\"" + log + ".tmp.$" + event + "\""
	text := "#!/bin/sh\n# DHCP client hook written by gopasst's tests: keep the environment, apply the lease.\n" +
		"env > " + tmp + "\n" + body + "\nmv -f " + tmp + " \"" + log + ".$" + event + "\"\nexit 0\n"
	if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, log
}

// readEnv reads a file of NAME=VALUE lines written by env(1).
func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// checkEnv fails t for every name of want whose value in env does not
// contain the wanted text.
func checkEnv(t *testing.T, env map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if !strings.Contains(env[k], v) {
			t.Errorf("lease: %s=%q, want it to contain %q", k, env[k], v)
		}
	}
}

// checkTapState checks that p's tap has address local/plen and a default
// route of family (-4, -6) via gw ("" for any gateway).
func checkTapState(t *testing.T, p *nstest.Pasta, local string, plen int, family, gw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	links, err := nstest.Links(ctx, p.NSCmd)
	if err != nil {
		t.Fatal(err)
	}
	tap := nstest.LinkByName(links, p.Tap)
	if tap == nil || tap.Addr(local, plen) == nil {
		t.Errorf("tap %s lacks %s/%d: %+v", p.Tap, local, plen, tap)
	}
	routes, err := nstest.Routes(ctx, p.NSCmd, family)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r nstest.Route) bool {
		return r.Dst == "default" && r.Dev == p.Tap && (gw == "" || r.Gateway == gw)
	}) {
		t.Errorf("no %s default route via %q dev %s: %+v", family, gw, p.Tap, routes)
	}
}

// TestPastaUdhcpc runs busybox udhcpc on the bare tap: it must get
// 198.18.0.2/24 with router 198.18.0.1, MTU 65520, the DNS server and the
// search domain, and its hook script applies them with ip.
func TestPastaUdhcpc(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		p := startBare(t, peer)
		script, log := hookScript(t, t.TempDir(), "1", `case "$1" in
deconfig) ip link set "$interface" up; ip -4 addr flush dev "$interface" ;;
bound|renew)
	ip addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	for r in $router; do ip route add default via "$r" dev "$interface"; break; done ;;
esac`)
		out, _, err := nsRun(p, 30*time.Second, "busybox", "udhcpc", "-i", p.Tap, "-f", "-q", "-n", "-t", "5", "-T", "2", "-O", "search", "-s", script)
		if err != nil {
			t.Fatal(err)
		}
		env, err := readEnv(log + ".bound")
		if err != nil {
			t.Fatalf("no lease applied (%v); udhcpc said:\n%s", err, out)
		}
		checkEnv(t, env, map[string]string{"ip": "198.18.0.2", "mask": "24", "router": "198.18.0.1",
			"mtu": "65520", "dns": dhcpDNS4.String(), "search": dhcpSearch, "serverid": "198.18.0.1"})
		checkTapState(t, p, "198.18.0.2", 24, "-4", "198.18.0.1")
	})
}

// TestPastaUdhcpc6 runs busybox udhcpc6 on the tap: it must get
// 2001:db8:9a55::2, the DNS server and the search domain. Debian's busybox
// is built without udhcpc6: the test is skipped where no udhcpc6 exists.
func TestPastaUdhcpc6(t *testing.T) {
	argv := []string{"busybox", "udhcpc6"}
	if out, err := exec.Command("busybox", "--list").Output(); err != nil || !slices.Contains(strings.Fields(string(out)), "udhcpc6") {
		path, err := exec.LookPath("udhcpc6")
		if err != nil {
			t.Skip("no udhcpc6: this busybox has no udhcpc6 applet (Debian builds it without), and no udhcpc6 in PATH")
		}
		argv = []string{path}
	}
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		p := startBare(t, peer)
		upWithLinkLocal(t, p)
		script, log := hookScript(t, t.TempDir(), "1", `case "$1" in
bound|renew) ip -6 addr add "$ipv6/128" dev "$interface" nodad ;;
esac`)
		out, _, err := nsRun(p, 30*time.Second, argv[0], append(argv[1:], "-i", p.Tap, "-f", "-q", "-n", "-t", "5", "-T", "2",
			"-O", "dns", "-O", "search", "-s", script)...)
		if err != nil {
			t.Fatal(err)
		}
		env, err := readEnv(log + ".bound")
		if err != nil {
			t.Fatalf("no lease applied (%v); udhcpc6 said:\n%s", err, out)
		}
		checkEnv(t, env, map[string]string{"ipv6": "2001:db8:9a55::2", "dns": dhcpDNS6.String(), "search": dhcpSearch})
	})
}

// upWithLinkLocal brings p's tap up with DAD off and waits until it has a
// usable link-local address (DHCPv6 clients bind to it).
func upWithLinkLocal(t *testing.T, p *nstest.Pasta) {
	t.Helper()
	p.NSOutput(t, "sysctl", "-qw", "net.ipv6.conf."+p.Tap+".accept_dad=0")
	p.NSOutput(t, "ip", "link", "set", p.Tap, "up")
	nstest.WaitForErr(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		defer cancel()
		links, err := nstest.Links(ctx, p.NSCmd)
		if err != nil {
			return err
		}
		if tap := nstest.LinkByName(links, p.Tap); tap != nil {
			for _, a := range tap.Addrs {
				if a.Scope == "link" && !a.Tentative {
					return nil
				}
			}
		}
		return fmt.Errorf("%s has no usable link-local address yet", p.Tap)
	})
}

// dhclientScriptBody applies dhclient's leases with ip (dhclient-script's
// variables; the Debian script itself would rewrite the machine's
// /etc/resolv.conf, as the mount namespace is the host's).
const dhclientScriptBody = `case "$reason" in
PREINIT|PREINIT6) ip link set "$interface" up ;;
BOUND|RENEW|REBIND|REBOOT)
	ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
	[ -n "$new_interface_mtu" ] && ip link set "$interface" mtu "$new_interface_mtu"
	for r in $new_routers; do ip route add default via "$r" dev "$interface"; break; done ;;
BOUND6|RENEW6|REBIND6) ip -6 addr add "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad ;;
esac`

// runDhclient runs ISC dhclient with family ("-4" or "-6") on p's tap in
// the foreground, with its lease and PID files and hook script in a
// temporary directory, until the hook has seen event (BOUND, BOUND6) or
// 30 s have passed, and returns the hook's environment for that event.
// dhclient is stopped at t's cleanup.
func runDhclient(t *testing.T, p *nstest.Pasta, family, event string) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("dhclient"); err != nil {
		t.Skipf("ISC dhclient not installed (%v): run test/setup", err)
	}
	dir := t.TempDir()
	script, log := hookScript(t, dir, "reason", dhclientScriptBody)
	cf := filepath.Join(dir, "dhclient.conf")
	// Our own configuration: the system's may ask for anything; ask for
	// what the test checks, retry quickly.
	conf := "timeout 30;\nretry 2;\ninitial-interval 1;\n" +
		"request subnet-mask, routers, domain-name-servers, domain-search, interface-mtu,\n" +
		"\tdhcp6.name-servers, dhcp6.domain-search;\n"
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := p.NSCmd(context.Background(), "dhclient", family, "-d", "-1", "-v", "-cf", cf,
		"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid"), "-sf", script, p.Tap)
	cmd.WaitDelay = 0
	d := nstest.StartCmd(t, cmd)
	var env map[string]string
	nstest.WaitForErr(t, 30*time.Second, func() error {
		if d.Exited() {
			t.Fatalf("dhclient %s exited:\n%s", family, d.Output())
		}
		var err error
		env, err = readEnv(log + "." + event)
		return err
	})
	return env
}

// TestPastaDhclient4 runs ISC dhclient -4 on the bare tap: the lease must
// be 198.18.0.2/24 with router 198.18.0.1, MTU 65520, DNS server and
// search domain, applied with ip by the hook.
func TestPastaDhclient4(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		p := startBare(t, peer)
		env := runDhclient(t, p, "-4", "BOUND")
		checkEnv(t, env, map[string]string{"new_ip_address": "198.18.0.2", "new_subnet_mask": "255.255.255.0",
			"new_routers": "198.18.0.1", "new_interface_mtu": "65520", "new_domain_name_servers": dhcpDNS4.String(),
			"new_domain_search": dhcpSearch, "new_dhcp_server_identifier": "198.18.0.1"})
		checkTapState(t, p, "198.18.0.2", 24, "-4", "198.18.0.1")
	})
}

// TestPastaDhclient6 runs ISC dhclient -6 on the tap (up, link-local
// usable): the IA_NA must carry 2001:db8:9a55::2, with the DNS server and
// the search domain, applied with ip by the hook.
func TestPastaDhclient6(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		p := startBare(t, peer)
		upWithLinkLocal(t, p)
		env := runDhclient(t, p, "-6", "BOUND6")
		checkEnv(t, env, map[string]string{"new_ip6_address": "2001:db8:9a55::2",
			"new_dhcp6_name_servers": dhcpDNS6.String(), "new_dhcp6_domain_search": dhcpSearch})
		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		defer cancel()
		links, err := nstest.Links(ctx, p.NSCmd)
		if err != nil {
			t.Fatal(err)
		}
		if tap := nstest.LinkByName(links, p.Tap); tap == nil || !slices.ContainsFunc(tap.Addrs, func(a nstest.Addr) bool {
			return a.Local == "2001:db8:9a55::2"
		}) {
			t.Errorf("tap %s lacks 2001:db8:9a55::2 after the lease: %+v", p.Tap, tap)
		}
	})
}

// TestPastaSLAAC lets the kernel configure IPv6 from pasta's router
// advertisement (accept_ra=2, tap brought up): the tap must get a global
// address in 2001:db8:9a55::/64 and a default route via a link-local
// router.
func TestPastaSLAAC(t *testing.T) {
	prefix := netip.MustParsePrefix("2001:db8:9a55::/64")
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		p := startBare(t, peer)
		p.NSOutput(t, "sysctl", "-qw", "net.ipv6.conf."+p.Tap+".accept_ra=2")
		p.NSOutput(t, "sysctl", "-qw", "net.ipv6.conf."+p.Tap+".accept_dad=0")
		p.NSOutput(t, "ip", "link", "set", p.Tap, "up")
		checkSLAAC(t, p.NSCmd, p.Tap, prefix)
	})
}

// checkSLAAC waits up to 20 s for dev, in the namespace run reaches, to
// get a global /64 address in prefix from a router advertisement, then
// checks for a default route via a link-local router there; it returns
// the address.
func checkSLAAC(t *testing.T, run nstest.CmdFunc, dev string, prefix netip.Prefix) netip.Addr {
	t.Helper()
	var got netip.Addr
	var links []nstest.Link
	ok := nstest.Poll(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		defer cancel()
		var err error
		if links, err = nstest.Links(ctx, run); err != nil {
			return false
		}
		if tap := nstest.LinkByName(links, dev); tap != nil {
			for _, a := range tap.Addrs {
				if ip, err := netip.ParseAddr(a.Local); err == nil && a.Scope == "global" && prefix.Contains(ip) && a.PrefixLen == 64 {
					got = ip
					return true
				}
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no SLAAC address in %s within 20 s: %+v", prefix, links)
	}
	t.Logf("SLAAC address %s", got)
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	routes, err := nstest.Routes(ctx, run, "-6")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r nstest.Route) bool {
		gw, err := netip.ParseAddr(r.Gateway)
		return r.Dst == "default" && r.Dev == dev && err == nil && gw.IsLinkLocalUnicast()
	}) {
		t.Errorf("no default route via a link-local router on %s: %+v", dev, routes)
	}
	return got
}
