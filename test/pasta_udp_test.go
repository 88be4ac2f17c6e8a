// End-to-end tests of UDP through pasta: request/response from the
// namespace to a server on the host's loopback, the ICMP port unreachable
// of a closed port seen as ECONNREFUSED, and DNS forwarding to a real
// resolver (dnsmasq).

package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// udpCases are the destinations of TestPastaUDP: the gateway addresses,
// which pasta maps to the server on the host's loopback, and addresses the
// host holds on its lo (see addHostLocal), reached without mapping.
var udpCases = []struct {
	name    string
	server  string // the server's address in the host
	dst     string // where the namespace sends to
	gateway bool   // dst is the gateway, mapped to the host's loopback
}{
	{"ipv4-gateway", "127.0.0.1", nstest.HostGW4.String(), true},
	{"ipv6-gateway", "::1", nstest.HostGW6.String(), true},
	{"ipv4-host", hostLocal4.String(), hostLocal4.String(), false},
	{"ipv6-host", hostLocal6.String(), hostLocal6.String(), false},
}

// reasonUDP6Gateway is why Debian's pasta fails UDP over IPv6 to the
// gateway: the server on ::1 receives the datagram, pasta reads the
// answer from its socket, but nothing reaches the namespace.
const reasonUDP6Gateway = "the answer of a server on ::1 to a datagram sent to the IPv6 gateway never reaches the namespace"

// TestPastaUDP sends a datagram from pasta's namespace (--config-net) to
// the gateway address, in every way pasta can be started, for both
// families: the echo server on the host's loopback must receive exactly
// the bytes sent, and the client exactly the echo; the tap's counters must
// have moved by both datagrams. The same to an address the host holds on
// its lo, without mapping.
func TestPastaUDP(t *testing.T) {
	forEachPeerMode(t, mainModes, func(t *testing.T, peer nstest.Peer, mode pastaMode) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		p := startPasta(t, h, peer, mode, append([]string{"--config-net"}, quietArgs...)...)
		checkUDP(t, peer, h, p)
	})
}

// checkUDP sends a datagram from p's namespace to each of udpCases and
// checks the echo (see TestPastaUDP), each in a subtest. The host h must
// have its local addresses (addHostLocal).
func checkUDP(t *testing.T, peer nstest.Peer, h *nstest.Host, p *nstest.Pasta) {
	for _, c := range udpCases {
		t.Run(c.name, func(t *testing.T) {
			srv := listenUDP(t, h, c.server)
			got := make(chan []byte, 8)
			go udpEchoServer(srv, got)
			port := srv.LocalAddr().(*net.UDPAddr).Port

			request := randomBytes(t, 1200)
			before := tapCounters(t, p)
			conn, err := dialUDP(p, c.dst, port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			back, err := udpRoundTrip(conn, request, 6*time.Second)
			if err != nil {
				err = fmt.Errorf("no answer from %s through pasta: %w", net.JoinHostPort(c.dst, strconv.Itoa(port)), err)
				if c.name == "ipv6-gateway" {
					knownLimit(t, peer, reasonUDP6Gateway, err)
				}
				t.Fatal(err)
			}
			if !bytes.Equal(back, request) {
				t.Errorf("client got %d bytes back, not the %d sent", len(back), len(request))
			}
			select {
			case first := <-got:
				if !bytes.Equal(first, request) {
					t.Errorf("server received %d bytes, not the %d sent", len(first), len(request))
				}
			default:
				t.Errorf("server reports no datagram")
			}
			checkTapMoved(t, before, tapCounters(t, p), uint64(len(request)), 1)
			t.Logf("%d bytes each way, %v -> %v", len(request), conn.LocalAddr(), conn.RemoteAddr())
		})
	}
}

// TestPastaUDPRefused sends from a connected UDP socket in pasta's
// namespace to a port of the gateway that nothing listens on (on the
// host's loopback): pasta must relay the host's ICMP port unreachable, so
// that the next read fails with ECONNREFUSED, for both families.
func TestPastaUDPRefused(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		p := startPasta(t, h, peer, modeAttachRoot, append([]string{"--config-net"}, quietArgs...)...)
		for _, c := range udpCases[:2] {
			t.Run(c.name, func(t *testing.T) {
				port := h.FreePort(t, "udp")
				conn, err := dialUDP(p, c.dst, port)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_, err = udpRoundTrip(conn, []byte("anyone there?"), 6*time.Second)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					knownLimit(t, peer, "no ICMP errors relayed to the namespace for UDP (added to passt in 2024)",
						fmt.Errorf("read after a datagram to %s (closed on the host): got %s, want ECONNREFUSED",
							net.JoinHostPort(c.dst, strconv.Itoa(port)), errString(err)))
				}
			})
		}
	})
}

// errString returns err's text, "no error" for nil.
func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// listenUDP opens a UDP socket on address:0 in host h, closed at t's
// cleanup.
func listenUDP(t *testing.T, h *nstest.Host, address string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp", net.JoinHostPort(address, "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in the host: %v", address, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialUDP returns a UDP socket in pasta's namespace connected to
// addr:port.
func dialUDP(p *nstest.Pasta, addr string, port int) (net.Conn, error) {
	return p.Dial("udp", net.JoinHostPort(addr, strconv.Itoa(port)), 5*time.Second)
}

// DNS forwarding: the addresses the namespace sends its queries to, the
// name dnsmasq answers for and its answers.
var (
	dnsForward4 = netip.MustParseAddr("169.254.1.1")
	dnsForward6 = netip.MustParseAddr("fd00:dead::53")
	dnsName     = "test.example"
	dnsAnswer4  = netip.MustParseAddr("198.51.100.7")
	dnsAnswer6  = netip.MustParseAddr("2001:db8:7::7")
)

// TestPastaDNS runs dnsmasq on the host's loopback (127.0.0.1 and ::1,
// port 53), names both in the host's resolv.conf, and starts pasta with
// --dns-forward for an IPv4 and an IPv6 address. Queries from the
// namespace to the forward addresses (busybox nslookup, and Go's resolver
// for A and AAAA over each family) must be answered by dnsmasq.
func TestPastaDNS(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skipf("dnsmasq not installed (%v): run test/setup", err)
	}
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHostWith(t, nstest.HostOpts{Resolvers: []netip.Addr{
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}})
		startDnsmasq(t, h)
		p := startPasta(t, h, peer, modeAttachRoot, append([]string{"--config-net",
			"--dns-forward", dnsForward4.String(), "--dns-forward", dnsForward6.String()}, quietArgs...)...)

		for _, fwd := range []netip.Addr{dnsForward4, dnsForward6} {
			t.Run("nslookup-"+fwd.String(), func(t *testing.T) {
				out, _, err := nsRun(p, 20*time.Second, "busybox", "nslookup", dnsName, fwd.String())
				if err != nil {
					t.Fatal(err)
				}
				for _, want := range []netip.Addr{dnsAnswer4, dnsAnswer6} {
					if !strings.Contains(out, want.String()) {
						t.Errorf("nslookup %s %s: no %s in:\n%s", dnsName, fwd, want, out)
					}
				}
			})
			t.Run("go-"+fwd.String(), func(t *testing.T) {
				r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return p.Dial(network, net.JoinHostPort(fwd.String(), "53"), 5*time.Second)
				}}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				addrs, err := r.LookupNetIP(ctx, "ip", dnsName)
				if err != nil {
					t.Fatalf("lookup %s through %s: %v", dnsName, fwd, err)
				}
				for _, want := range []netip.Addr{dnsAnswer4, dnsAnswer6} {
					if !slices.Contains(addrs, want) {
						t.Errorf("lookup %s through %s: %v, want %s among them", dnsName, fwd, addrs, want)
					}
				}
			})
		}
	})
}

// startDnsmasq runs dnsmasq in host h, answering dnsName on 127.0.0.1:53
// and [::1]:53 from its own configuration only, and waits until it
// answers there.
func startDnsmasq(t *testing.T, h *nstest.Host) {
	t.Helper()
	dir := t.TempDir()
	d := h.Start(t, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--port=53", "--listen-address=127.0.0.1", "--listen-address=::1", "--bind-interfaces",
		"--address=/"+dnsName+"/"+dnsAnswer4.String(), "--address=/"+dnsName+"/"+dnsAnswer6.String(),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--user=root", "--log-queries")
	for _, server := range []string{"127.0.0.1:53", "[::1]:53"} {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var c net.Conn
			err := h.Do(func() error {
				var err error
				c, err = net.DialTimeout(network, server, time.Second)
				return err
			})
			return c, err
		}}
		nstest.WaitForErr(t, 10*time.Second, func() error {
			if d.Exited() {
				t.Fatalf("dnsmasq exited:\n%s", d.Output())
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := r.LookupNetIP(ctx, "ip4", dnsName)
			return err
		})
	}
}
