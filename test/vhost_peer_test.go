// End-to-end tests of passt's vhost-user back end (passt --vhost-user) at
// kernel speed: test/vhostpeer plays qemu and the guest's virtio-net
// driver (guest memory in a memfd, the split rings laid out in it, the
// start-up sequence qemu 7.2 sends) and bridges the rings to a tap device
// in a guest namespace, whose kernel is the guest. The tests reuse passt
// mode's world (passt_peer_test.go) with passtWorld.vhost set: the same
// DHCP, SLAAC, ping, UDP and TCP checks as through the stream socket, and
// beside them what only vhost-user has: front ends that break the ring
// contract on purpose (vhostpeer -hostile), after which passt must still
// be alive and serve a fresh front end. Only gopasst's passt is tested:
// Debian's (2023) has no vhost-user.

package test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// vhostPeers returns the passts selected with -peer that have vhost-user:
// gopasst's (Debian's, from 2023, has none). It skips t when there is none.
func vhostPeers(t *testing.T) []passtPeer {
	t.Helper()
	var out []passtPeer
	for _, p := range passtPeers(t) {
		if p.Name != "debian" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Skip("no passt with vhost-user selected: give -bin DIR with -peer gopasst")
	}
	return out
}

// forEachVhost runs fn with a new passtWorld in vhost-user mode (passt not
// started yet) for each of vhostPeers.
func forEachVhost(t *testing.T, fn func(t *testing.T, w *passtWorld)) {
	t.Helper()
	nstest.RequireRoot(t)
	forEachPasstIn(t, vhostPeers(t), true, fn)
}

// TestVhostPeerUdhcpc: the guest behind the rings gets its DHCP lease
// (the host's address, the gateway as router) and reaches the gateway.
func TestVhostPeerUdhcpc(t *testing.T) { forEachVhost(t, passtUdhcpc) }

// TestVhostPeerSLAAC: the guest's kernel configures IPv6 from passt's
// router advertisement over the rings, and the address carries traffic.
func TestVhostPeerSLAAC(t *testing.T) { forEachVhost(t, passtSLAAC) }

// TestVhostPeerPing: echo requests to the host's lo addresses and to the
// gateways, both families, are all answered through the rings.
func TestVhostPeerPing(t *testing.T) { forEachVhost(t, passtPing) }

// TestVhostPeerUDP: datagrams of 32 and 8000 bytes from the guest to the
// gateways and the host's lo addresses, both families, come back byte for
// byte from echo servers on the host (passtUDPEcho).
func TestVhostPeerUDP(t *testing.T) { forEachVhost(t, passtUDPEcho) }

// TestVhostPeerTCPIntegrity moves 256 MiB each way at once over one
// connection on each path, guest to host and host to guest, both
// families, every byte and the SHA-256 checked by the receivers (see
// tcpIntegrity), through guest memory both ways.
func TestVhostPeerTCPIntegrity(t *testing.T) { forEachVhost(t, passtTCPIntegrity) }

// TestVhostPeerTCPConcurrent opens 1000 connections at once, outbound and
// inbound over IPv4, 4 KiB each way on each checked byte for byte, and
// passt's descriptors come back to where they were (tcpWorld.concurrent).
func TestVhostPeerTCPConcurrent(t *testing.T) { forEachVhost(t, passtTCPConcurrent) }

// TestVhostPeerReconnect: a front end that goes away (qemu stopping the
// rings with GET_VRING_BASE and closing) is followed by another, with
// another MAC address, which gets its lease and traffic: passt unmapped
// the first one's memory and accepted the next.
func TestVhostPeerReconnect(t *testing.T) { forEachVhost(t, passtReconnect) }

// TestVhostPeerHostile runs every hostile front end vhostpeer knows
// (descriptors outside the regions, chain loops, lengths past the buffer,
// ring sizes that are not a power of two, bad memory tables, ...), one
// after the other against one passt; after each, passt must be alive, and
// after all of them a well-behaved front end gets its lease and moves
// traffic.
func TestVhostPeerHostile(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		w.startPasst(t)
		bin := vhostpeerProg.binary(t)
		out, err := exec.Command(bin, "-hostile", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("vhostpeer -hostile list: %v: %s", err, out)
		}
		var kinds []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				kinds = append(kinds, f[0])
			}
		}
		if len(kinds) < 10 {
			t.Fatalf("vhostpeer knows only %d hostile kinds: %q", len(kinds), out)
		}
		for _, k := range kinds {
			cmd := exec.Command(bin, "-socket", w.sock, "-hostile", k, "-wait", "5s")
			p := nstest.StartCmd(t, cmd)
			code, err := p.Wait(30 * time.Second)
			if err != nil || code != 0 {
				t.Fatalf("hostile %s: status %d, %v: %s", k, code, err, p.Output())
			}
			t.Logf("%s", strings.TrimSpace(p.Output()))
			w.alive(t)
		}
		w.connectPeer(t)
		env, err := w.udhcpc(t)
		if err != nil {
			t.Fatalf("the front end after the hostile ones: %v", err)
		}
		checkLease4(t, env)
		w.pingLink(t)
		w.alive(t)
	})
}
