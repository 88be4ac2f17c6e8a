// End-to-end test of ICMP echo through pasta: ping from the namespace to
// the gateway addresses, which pasta answers from the host's loopback, and
// to addresses of the host's own.

package test

import (
	"testing"

	"gopasst/test/nstest"
)

// reasonICMPGateway is why Debian's pasta fails pings to the gateway: it
// sends the echo to the gateway address itself, out of the host's uplink
// (an ARP request for 198.18.0.1 stays INCOMPLETE in the host namespace).
const reasonICMPGateway = "ICMP echo to the gateway is not mapped to the host's loopback: it leaves by the host's uplink, where nothing answers"

// TestPastaPing runs `ping -c 3 198.18.0.1` and `ping -6 -c 3
// 2001:db8:9a55::1` in pasta's namespace (--config-net), in every way
// pasta can be started, and checks that every request was answered and
// that the tap's counters (/proc/net/dev in the namespace) moved by at
// least the three requests and three replies: the echoes crossed pasta,
// which sent them to the host's loopback through ping sockets. It pings
// addresses the host holds on its lo (hostLocal4, hostLocal6) the same
// way: echo without address mapping.
func TestPastaPing(t *testing.T) {
	forEachPeerMode(t, mainModes, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		p := startPasta(t, h, peer, mode, append([]string{"--config-net"}, quietArgs...)...)
		checkPing(t, peer, p)
	})
}

// checkPing pings the gateways and the host's own addresses from p's
// namespace (see TestPastaPing), each in a subtest.
func checkPing(t *testing.T, peer nstest.Peer, p *nstest.Pasta) {
	for _, c := range []struct {
		dst     string
		gateway bool
	}{
		{nstest.HostGW4.String(), true},
		{nstest.HostGW6.String(), true},
		{hostLocal4.String(), false},
		{hostLocal6.String(), false},
	} {
		t.Run(c.dst, func(t *testing.T) {
			before := tapCounters(t, p)
			err := ping(p, c.dst, 3)
			if c.gateway {
				knownLimit(t, peer, reasonICMPGateway, err)
			} else if err != nil {
				t.Fatal(err)
			}
			// 3 echoes of 56 bytes of data each way, plus headers.
			checkTapMoved(t, before, tapCounters(t, p), 3*84, 3)
		})
	}
}
