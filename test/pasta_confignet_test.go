// End-to-end test of pasta --config-net: the namespace gets the host's
// addresses, default routes and MTU 65520 on its tap, in every way pasta
// can be started.

package test

import (
	"context"
	"slices"
	"testing"

	"gopasst/test/nstest"
)

// TestPastaConfigNet starts pasta --config-net attached and spawning, as
// root (--runas 0) and as the unprivileged test user, and checks from
// inside the namespace (ip -j) that the tap has the host's 198.18.0.2/24
// and 2001:db8:9a55::2/64, MTU 65520, and default routes via 198.18.0.1
// and 2001:db8:9a55::1, and that lo is up.
func TestPastaConfigNet(t *testing.T) {
	forEachPeerMode(t, mainModes, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		p := startPasta(t, h, peer, mode, append([]string{"--config-net"}, quietArgs...)...)
		checkConfigNet(t, peer, p)
	})
}

// checkConfigNet checks the namespace of p as --config-net leaves it: the
// host's addresses on the tap (permanent, usable at once), MTU 65520, lo
// up, the default routes of both families via the host's gateways on the
// tap.
func checkConfigNet(t *testing.T, peer nstest.Peer, p *nstest.Pasta) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	// IPv6 addresses may still be on their way when the first global one
	// made StartPasta return: wait for both.
	var links []nstest.Link
	var tap *nstest.Link
	nstest.Poll(nstest.ReadyTimeout/2, func() bool {
		var err error
		if links, err = nstest.Links(ctx, p.NSCmd); err != nil {
			return false
		}
		tap = nstest.LinkByName(links, p.Tap)
		return tap != nil && tap.Addr("198.18.0.2", 24) != nil && tap.Addr("2001:db8:9a55::2", 64) != nil
	})
	if tap == nil {
		t.Fatalf("no tap %q in the namespace: %+v", p.Tap, links)
	}
	if p.Tap != nstest.Uplink {
		t.Errorf("tap named %q, want the host's template interface's name %q", p.Tap, nstest.Uplink)
	}
	if !tap.Has("UP") {
		t.Errorf("tap %s not up: %v", tap.Name, tap.Flags)
	}
	if tap.MTU != 65520 {
		t.Errorf("tap %s MTU %d, want 65520", tap.Name, tap.MTU)
	}
	for _, want := range []struct {
		local string
		plen  int
	}{{"198.18.0.2", 24}, {"2001:db8:9a55::2", 64}} {
		a := tap.Addr(want.local, want.plen)
		if a == nil {
			t.Errorf("tap %s lacks %s/%d: %+v", tap.Name, want.local, want.plen, tap.Addrs)
			continue
		}
		if a.Tentative {
			t.Errorf("%s/%d still tentative: DAD should not delay the namespace", want.local, want.plen)
		}
		if a.Scope != "global" {
			t.Errorf("%s/%d scope %q, want global", want.local, want.plen, a.Scope)
		}
	}
	if lo := nstest.LinkByName(links, "lo"); lo == nil || !lo.Has("UP") {
		t.Errorf("lo not up in the namespace: %+v", lo)
	}
	for fam, gw := range map[string]string{"-4": nstest.HostGW4.String(), "-6": nstest.HostGW6.String()} {
		routes, err := nstest.Routes(ctx, p.NSCmd, fam)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(routes, func(r nstest.Route) bool {
			return r.Dst == "default" && r.Gateway == gw && r.Dev == p.Tap
		}) {
			t.Errorf("no default route via %s dev %s in the namespace: %+v", gw, p.Tap, routes)
		}
	}
}
