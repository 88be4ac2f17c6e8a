// The outer network namespace that plays the host, and the namespaces the
// configurations attach to.

package harness

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Addressing of the outer namespace (the "host"): an uplink veth pair with
// both ends inside it (this kernel has no dummy interfaces) and default
// routes to gateway addresses nothing answers. 198.18.0.0/15 is the
// benchmarking range (RFC 2544), 2001:db8::/32 the documentation prefix.
const (
	hostAddr4 = "198.18.0.2"
	hostGW4   = "198.18.0.1"
	hostAddr6 = "2001:db8:9a55::2"
	hostGW6   = "2001:db8:9a55::1"
	// The veth reference: a second pair, one end in its own namespace.
	vethHost4 = "198.18.1.1"
	vethNS4   = "198.18.1.2"
	vethHost6 = "2001:db8:9a56::1"
	vethNS6   = "2001:db8:9a56::2"
)

// Ports: servers on the host side listen on hostPort*, servers in the
// namespace on nsPort*; translators forward the nsPort* from the host and,
// on the splice path, the hostPort* from the namespace.
const (
	hostPortIperf = 5201
	hostPortRR    = 5211
	hostPortCtl   = 5221 // neper's control connection
	nsPortIperf   = 5202
	nsPortRR      = 5212
	nsPortCtl     = 5222
)

// nsHolderLifetime bounds every namespace holder (sleep): a configuration
// takes well under a minute, and a holder we failed to end dies by itself.
const nsHolderLifetime = "600"

// sysctls applied in the outer namespace and in every namespace we create:
// the C original's perf tests raise TCP buffer limits in the namespace;
// the rest keeps tcp_crr (a connection per transaction) from running out
// of ephemeral ports.
var sysctls = map[string]string{
	"net/ipv4/tcp_rmem":            "131072 524288 134217728",
	"net/ipv4/tcp_wmem":            "131072 524288 134217728",
	"net/ipv4/ip_local_port_range": "10000 65000",
	"net/ipv4/tcp_tw_reuse":        "1",
}

// setupOuter configures the namespace the harness runs in: loopback up,
// the uplink pair with its addresses and default routes, and the sysctls.
func setupOuter(ctx context.Context) error {
	cmds := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"ip", "link", "set", "up1", "up"},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "addr", "add", hostAddr4 + "/24", "dev", "up0"},
		{"ip", "-6", "addr", "add", hostAddr6 + "/64", "dev", "up0", "nodad"},
		{"ip", "route", "add", "default", "via", hostGW4, "dev", "up0"},
		{"ip", "-6", "route", "add", "default", "via", hostGW6, "dev", "up0"},
	}
	for _, c := range cmds {
		if _, _, err := run(ctx, 5*time.Second, c); err != nil {
			return fmt.Errorf("outer namespace: %w", err)
		}
	}
	for k, v := range sysctls {
		_ = os.WriteFile("/proc/sys/"+k, []byte(v), 0o644)
	}
	return nil
}

// netns is a network namespace held by a sleeping process.
type netns struct {
	holder *proc
	prefix []string // runs a command inside: nsenter ...
}

// pid returns the holder's PID.
func (n *netns) pid() int { return n.holder.pid() }

// run runs args inside the namespace within timeout.
func (n *netns) run(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	out, _, err := run(ctx, timeout, append(append([]string{}, n.prefix...), args...))
	return out, err
}

// newNetns creates a network namespace: with user true, in a new user
// namespace too (as pasta and slirp4netns are used without privileges),
// otherwise a plain one (the veth reference). It brings loopback up and
// applies the sysctls.
func (e *env) newNetns(ctx context.Context, user bool) (*netns, error) {
	args := []string{"unshare", "--net", "--", "sleep", nsHolderLifetime}
	if user {
		args = []string{"unshare", "--user", "--map-root-user", "--net", "--", "sleep", nsHolderLifetime}
	}
	h, err := e.procs.start("namespace holder", args)
	if err != nil {
		return nil, err
	}
	mine, _ := os.Readlink("/proc/self/ns/net")
	// unshare creates the namespaces, writes the user namespace's ID maps,
	// then executes sleep: before that, nsenter could join a user
	// namespace without a mapping, and so without capabilities. Wait until
	// the holder is sleep, in a namespace other than ours.
	ok := waitFor(3*time.Second, func() bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.pid()))
		if err != nil || strings.TrimSpace(string(comm)) != "sleep" || h.exited() {
			return false
		}
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", h.pid()))
		return err == nil && l != mine
	})
	if !ok {
		e.procs.stop(h, time.Second)
		return nil, fmt.Errorf("namespace holder did not start: %s", h.output())
	}
	pid := strconv.Itoa(h.pid())
	n := &netns{holder: h, prefix: []string{"nsenter", "-t", pid, "-n"}}
	if user {
		n.prefix = []string{"nsenter", "-t", pid, "-U", "-n", "--preserve-credentials"}
	}
	if _, err := n.run(ctx, 5*time.Second, "ip", "link", "set", "lo", "up"); err != nil {
		e.procs.stop(h, time.Second)
		return nil, fmt.Errorf("namespace loopback: %w", err)
	}
	var sc []string
	for k, v := range sysctls {
		sc = append(sc, fmt.Sprintf("echo %s > /proc/sys/%s", v, k))
	}
	_, _ = n.run(ctx, 5*time.Second, "sh", "-c", strings.Join(sc, "; ")+"; true")
	return n, nil
}

// waitAddr waits until interface ifname in n has a global address of the
// family (4 or 6) that is no longer tentative, and reports whether it did;
// it stops early, reporting false, once giveUp (if not nil) returns true.
func (n *netns) waitAddr(ctx context.Context, ifname string, family int, timeout time.Duration, giveUp func() bool) bool {
	fam := "-4"
	if family == 6 {
		fam = "-6"
	}
	return waitFor(timeout, func() bool {
		if giveUp != nil && giveUp() {
			return true
		}
		out, err := n.run(ctx, 2*time.Second, "ip", fam, "-o", "addr", "show", "dev", ifname, "scope", "global")
		return err == nil && strings.Contains(out, "inet") && !strings.Contains(out, "tentative")
	}) && (giveUp == nil || !giveUp())
}

// tapBytes returns the receive plus transmit byte counters of ifname in n,
// from the namespace's /proc/net/dev: they show which path carried a test.
func (n *netns) tapBytes(ifname string) int64 { return devBytes(n.pid(), ifname) }

// devBytes returns the receive plus transmit byte counters of ifname in
// the network namespace of process pid, or -1 when it has no such
// interface (or cannot be read).
func devBytes(pid int, ifname string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(name) != ifname {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			return -1
		}
		rx, _ := strconv.ParseInt(f[0], 10, 64)
		tx, _ := strconv.ParseInt(f[8], 10, 64)
		return rx + tx
	}
	return -1
}
