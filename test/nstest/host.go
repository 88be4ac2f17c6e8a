// host.go: the outer namespace that plays "the host" (perf.md "Method").

package nstest

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The host's addressing: 198.18.0.0/15 is the benchmarking range (RFC 2544),
// 2001:db8::/32 the documentation prefix (RFC 3849). The gateways exist only
// as route targets: nothing answers them, so nothing leaves the machine;
// pasta maps them to the host namespace's loopback.
var (
	HostAddr4 = netip.MustParsePrefix("198.18.0.2/24")
	HostGW4   = netip.MustParseAddr("198.18.0.1")
	HostAddr6 = netip.MustParsePrefix("2001:db8:9a55::2/64")
	HostGW6   = netip.MustParseAddr("2001:db8:9a55::1")
	// DefaultResolver is the nameserver of the host's resolv.conf unless
	// HostOpts says otherwise: on the uplink subnet, never answered.
	DefaultResolver = netip.MustParseAddr("198.18.0.53")
)

// Interface names inside the host namespace: Uplink carries the addresses
// and the default routes (pasta's template interface), UplinkPeer is the
// other end of the veth pair, up and bare.
const (
	Uplink     = "veth0"
	UplinkPeer = "veth1"
)

// HostOpts are the choices a test can make about its host.
type HostOpts struct {
	// Resolvers are the nameserver lines of the host's resolv.conf
	// (default: DefaultResolver).
	Resolvers []netip.Addr
	// Search is its search line (default: none).
	Search []string
}

// Host is a network namespace laid out as a host with one uplink. See
// NewHost.
type Host struct {
	*Netns
	// ResolvConf is the file `ip netns exec` shows as /etc/resolv.conf in
	// the host namespace.
	ResolvConf string
}

// NewHost creates the outer namespace of test t with the default HostOpts.
// See NewHostWith.
func NewHost(t testing.TB) *Host {
	t.Helper()
	return NewHostWith(t, HostOpts{})
}

// NewHostWith creates the outer namespace that plays the host for test t,
// named gopasst-<test>-<pid>: lo up; a veth pair Uplink/UplinkPeer, both
// ends inside and up; HostAddr4 and HostAddr6 (nodad) on Uplink; default
// routes via HostGW4 and HostGW6; net.ipv4.ping_group_range = 0 2147483647
// (ping sockets for any group); DAD off for new interfaces (link-local
// addresses usable at once); /etc/netns/<name>/resolv.conf from opts. All
// of it is removed at t's cleanup, also on failure; it fails t if a step
// fails.
func NewHostWith(t testing.TB, opts HostOpts) *Host {
	t.Helper()
	n := NewNetns(t, "")
	h := &Host{Netns: n}

	// resolv.conf first, so that every command run in the namespace
	// through `ip netns exec` already sees it.
	dir := filepath.Join(etcNetns, n.Name)
	etcNetnsUse(t)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	h.ResolvConf = filepath.Join(dir, "resolv.conf")
	resolvers := opts.Resolvers
	if len(resolvers) == 0 {
		resolvers = []netip.Addr{DefaultResolver}
	}
	var rc strings.Builder
	rc.WriteString("# written by gopasst's test harness (nstest)\n")
	for _, r := range resolvers {
		rc.WriteString("nameserver " + r.String() + "\n")
	}
	if len(opts.Search) > 0 {
		rc.WriteString("search " + strings.Join(opts.Search, " ") + "\n")
	}
	if err := os.WriteFile(h.ResolvConf, []byte(rc.String()), 0o644); err != nil {
		t.Fatalf("write %s: %v", h.ResolvConf, err)
	}

	steps := [][]string{
		{"ip", "link", "set", "lo", "up"},
		// Before the veth pair exists, so its link-local addresses are
		// never tentative: pasta needs one to talk to the guest.
		{"sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"},
		{"sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"},
		{"sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"},
		{"ip", "link", "add", Uplink, "type", "veth", "peer", "name", UplinkPeer},
		{"ip", "link", "set", UplinkPeer, "up"},
		{"ip", "link", "set", Uplink, "up"},
		{"ip", "addr", "add", HostAddr4.String(), "dev", Uplink},
		{"ip", "addr", "add", HostAddr6.String(), "dev", Uplink, "nodad"},
		{"ip", "route", "add", "default", "via", HostGW4.String(), "dev", Uplink},
		{"ip", "-6", "route", "add", "default", "via", HostGW6.String(), "dev", Uplink},
	}
	for _, s := range steps {
		n.Output(t, s[0], s[1:]...)
	}
	return h
}

// etcNetns is where `ip netns exec` looks for per-namespace files.
const etcNetns = "/etc/netns"

// etcNetnsState counts the hosts using /etc/netns, and remembers whether
// the harness created it, so that the last cleanup removes it again.
var etcNetnsState struct {
	sync.Mutex
	users   int
	created bool
}

// etcNetnsUse makes sure /etc/netns exists for test t, and registers the
// cleanup that removes it when t is its last user and the harness created
// it (an /etc/netns that was there before stays). It fails t on error.
func etcNetnsUse(t testing.TB) {
	t.Helper()
	st := &etcNetnsState
	st.Lock()
	defer st.Unlock()
	if _, err := os.Stat(etcNetns); os.IsNotExist(err) {
		if err := os.Mkdir(etcNetns, 0o755); err != nil {
			t.Fatalf("create %s: %v", etcNetns, err)
		}
		st.created = true
	}
	st.users++
	t.Cleanup(func() {
		st.Lock()
		defer st.Unlock()
		st.users--
		if st.users == 0 && st.created {
			// Fails, harmlessly, if someone else put files there.
			if os.Remove(etcNetns) == nil {
				st.created = false
			}
		}
	})
}
