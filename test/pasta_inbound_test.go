// End-to-end test of inbound port forwarding through pasta's tap path: -t
// and -u from the host's own address to a server in the namespace.

package test

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// reasonInbound6 is why Debian's pasta fails inbound IPv6 from the host's
// own address: pasta accepts the connection (or reads the datagram) on the
// host side, but nothing reaches the server in the namespace.
const reasonInbound6 = "inbound IPv6 from the host's own address (the namespace's address too) never reaches the namespace"

// TestPastaInbound forwards one TCP and one UDP port (-t PORT -u PORT) and
// connects from the host namespace to its own address (198.18.0.2 and
// 2001:db8:9a55::2), which pasta carries over the tap (a non-loopback
// source is never spliced) to servers listening on the wildcard address in
// the namespace. TCP: 256 KiB each way, byte for byte; UDP: a datagram and
// its echo; the tap's counters must have moved by at least those bytes.
func TestPastaInbound(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		port := h.FreePort(t, "tcp")
		ps := strconv.Itoa(port)
		p := startPasta(t, h, peer, modeAttachRoot, "--config-net", "-t", ps, "-u", ps, "-T", "none", "-U", "none")

		var ln net.Listener
		var uc net.PacketConn
		if err := p.Do(func() error {
			var err error
			if ln, err = net.Listen("tcp", ":"+ps); err != nil {
				return err
			}
			uc, err = net.ListenPacket("udp", ":"+ps)
			return err
		}); err != nil {
			t.Fatalf("servers in the namespace: %v", err)
		}
		t.Cleanup(func() { ln.Close(); uc.Close() })
		got := make(chan []byte, 16)
		go udpEchoServer(uc, got)

		for _, dst := range []string{nstest.HostAddr4.Addr().String(), nstest.HostAddr6.Addr().String()} {
			addr := net.JoinHostPort(dst, ps)
			t.Run("tcp-"+dst, func(t *testing.T) {
				before := tapCounters(t, p)
				request, answer := randomBytes(t, 256<<10), randomBytes(t, 256<<10)
				// pasta's listener may be a moment behind its readiness:
				// retry a refused connection for a little while.
				var dial = func() (net.Conn, error) {
					var c net.Conn
					var err error
					nstest.Poll(5*time.Second, func() bool {
						err = h.Do(func() error {
							var derr error
							c, derr = net.DialTimeout("tcp", addr, 5*time.Second)
							return derr
						})
						return err == nil
					})
					return c, err
				}
				peerAddr, err := tcpExchange(ln, dial, request, answer)
				if err != nil && dst == nstest.HostAddr6.Addr().String() {
					knownLimit(t, peer, reasonInbound6, err)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%d bytes in, %d out; the server saw %v", len(request), len(answer), peerAddr)
				checkTapMoved(t, before, tapCounters(t, p), 256<<10, 8)
			})
			t.Run("udp-"+dst, func(t *testing.T) {
				before := tapCounters(t, p)
				var c net.Conn
				if err := h.Do(func() error {
					var err error
					c, err = net.Dial("udp", addr)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for len(got) > 0 {
					<-got
				}
				request := randomBytes(t, 1000)
				back, err := udpRoundTrip(c, request, 6*time.Second)
				if err != nil {
					err = fmt.Errorf("no echo from the namespace's server through %s: %w", addr, err)
					if dst == nstest.HostAddr6.Addr().String() {
						knownLimit(t, peer, reasonInbound6, err)
					}
					t.Fatal(err)
				}
				if !bytes.Equal(back, request) {
					t.Errorf("client got %d bytes back, not the %d sent", len(back), len(request))
				}
				select {
				case first := <-got:
					if !bytes.Equal(first, request) {
						t.Errorf("server in the namespace received %d bytes, not the %d sent", len(first), len(request))
					}
				default:
					t.Errorf("server in the namespace reports no datagram")
				}
				checkTapMoved(t, before, tapCounters(t, p), uint64(len(request)), 1)
			})
		}
	})
}
