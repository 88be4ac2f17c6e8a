// What the external tests of this package (package tcp_test: the worlds
// built through engine.New, which imports this package) may see of the
// handler's internals, for their logs and checks.

package tcp

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// DumpConns returns one line per connection in use, with its whole state,
// for the logs of a failed test.
func (h *Handler) DumpConns() []string {
	var out []string
	for _, i := range h.active {
		out = append(out, fmt.Sprintf("flow %d: %+v", i, h.conns[i]))
	}
	return out
}

// Offloading reports whether frames towards the guest use offloads.
func (h *Handler) Offloading() bool { return h.csumOff }

// Addresses of the unit tests and of the worlds (perf.md's benchmarking
// range): the gateway and the guest, IPv4 and IPv6.
var (
	gw4    = netip.MustParseAddr("198.18.0.1")
	guest4 = netip.MustParseAddr("198.18.0.2")
	gw6    = netip.MustParseAddr("2001:db8:9a55::1")
	guest6 = netip.MustParseAddr("2001:db8:9a55::2")
)

// WorldAddrs returns gw4, guest4, gw6, guest6.
func WorldAddrs() (netip.Addr, netip.Addr, netip.Addr, netip.Addr) { return gw4, guest4, gw6, guest6 }

// HostPort returns a free TCP port on the host's loopback.
func HostPort(t testing.TB) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// hostPort is HostPort, for this package's own tests.
var hostPort = HostPort
