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
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// vhostBuild is the vhostpeer binary, built once per test binary run.
var vhostBuild struct {
	sync.Mutex
	dir, bin string
	err      error
}

// vhostpeerBinary returns the path of test/vhostpeer, built the first time
// it is asked for (into a directory under /tmp that TestMain removes); it
// fails t if the build fails.
func vhostpeerBinary(t *testing.T) string {
	t.Helper()
	vhostBuild.Lock()
	defer vhostBuild.Unlock()
	if vhostBuild.bin == "" && vhostBuild.err == nil {
		dir, err := os.MkdirTemp("", "gopasst-vhostpeer-")
		if err != nil {
			t.Fatal(err)
		}
		vhostBuild.dir = dir
		bin := filepath.Join(dir, "vhostpeer")
		if out, err := exec.Command("go", "build", "-o", bin, "gopasst/test/vhostpeer").CombinedOutput(); err != nil {
			vhostBuild.err = fmt.Errorf("building test/vhostpeer: %v\n%s", err, out)
		} else {
			vhostBuild.bin = bin
		}
	}
	if vhostBuild.err != nil {
		t.Fatal(vhostBuild.err)
	}
	return vhostBuild.bin
}

// forEachVhost runs fn with a new passtWorld in vhost-user mode (passt not
// started yet) for gopasst's passt; it skips t when -peer selects none.
func forEachVhost(t *testing.T, fn func(t *testing.T, w *passtWorld)) {
	t.Helper()
	nstest.RequireRoot(t)
	ran := false
	for _, peer := range passtPeers(t) {
		if peer.Name == "debian" {
			continue // Debian's passt (2023) has no --vhost-user
		}
		ran = true
		t.Run(peer.Name, func(t *testing.T) {
			w := newPasstWorld(t, peer, passtResolvers)
			w.vhost = true
			fn(t, w)
		})
	}
	if !ran {
		t.Skip("no passt with vhost-user selected: give -bin DIR with -peer gopasst")
	}
}

// TestVhostPeerUdhcpc: the guest behind the rings gets its DHCP lease
// (the host's address, the gateway as router) and reaches the gateway.
func TestVhostPeerUdhcpc(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		w.startPasst(t)
		w.connectPeer(t)
		env, err := w.udhcpc(t)
		if err != nil {
			t.Fatal(err)
		}
		checkLease4(t, env)
		checkTapState(t, w.g, nstest.HostAddr4.Addr().String(), 24, "-4", nstest.HostGW4.String())
		w.pingLink(t)
	})
}

// TestVhostPeerSLAAC: the guest's kernel configures IPv6 from passt's
// router advertisement over the rings, and the address carries traffic.
func TestVhostPeerSLAAC(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		w.startPasst(t)
		w.guest.Output(t, "sysctl", "-qw", "net.ipv6.conf.default.accept_ra=2")
		w.connectPeer(t)
		checkSLAAC(t, w.g.NSCmd, guestTap, netip.PrefixFrom(nstest.HostAddr6.Addr(), 64).Masked())
		if err := ping(w.g, hostLocal6.String(), 3); err != nil {
			t.Fatal(err)
		}
	})
}

// TestVhostPeerPing: echo requests to the host's lo addresses and to the
// gateways, both families, are all answered through the rings.
func TestVhostPeerPing(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		w.startPasst(t)
		w.connectPeer(t)
		w.configureStatic(t)
		w.pingBoth(t)
	})
}

// TestVhostPeerUDP: datagrams of 32 and 8000 bytes from the guest to the
// gateways and the host's lo addresses, both families, come back byte for
// byte from echo servers on the host (passtUDPEcho).
func TestVhostPeerUDP(t *testing.T) { forEachVhost(t, passtUDPEcho) }

// TestVhostPeerTCPIntegrity moves 256 MiB each way at once over one
// connection on each path, guest to host and host to guest, both
// families, every byte and the SHA-256 checked by the receivers (see
// tcpIntegrity), through guest memory both ways.
func TestVhostPeerTCPIntegrity(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		tcpIntegrity(t, passtTCPWorld(t, w), 256<<20)
	})
}

// TestVhostPeerTCPConcurrent opens 1000 connections at once, outbound and
// inbound over IPv4, 4 KiB each way on each checked byte for byte, and
// passt's descriptors come back to where they were (tcpWorld.concurrent).
func TestVhostPeerTCPConcurrent(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		tw := passtTCPWorld(t, w)
		for _, path := range []tcpPath{tcpPaths[0], tcpPaths[2]} {
			t.Run(path.name, func(t *testing.T) { tw.concurrent(t, path, 1000) })
		}
	})
}

// TestVhostPeerReconnect: a front end that goes away (qemu stopping the
// rings with GET_VRING_BASE and closing) is followed by another, with
// another MAC address, which gets its lease and traffic: passt unmapped
// the first one's memory and accepted the next.
func TestVhostPeerReconnect(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		w.startPasst(t)
		for i, mac := range []string{"02:00:00:00:0b:01", "02:00:00:00:0b:02"} {
			peer := w.connectPeer(t, "-mac", mac)
			env, err := w.udhcpc(t)
			if err != nil {
				t.Fatalf("front end %d: %v", i+1, err)
			}
			checkLease4(t, env)
			w.pingLink(t)
			w.stopPeer(t, peer)
			w.alive(t)
		}
	})
}

// TestVhostPeerHostile runs every hostile front end vhostpeer knows
// (descriptors outside the regions, chain loops, lengths past the buffer,
// ring sizes that are not a power of two, bad memory tables, ...), one
// after the other against one passt; after each, passt must be alive, and
// after all of them a well-behaved front end gets its lease and moves
// traffic.
func TestVhostPeerHostile(t *testing.T) {
	forEachVhost(t, func(t *testing.T, w *passtWorld) {
		w.startPasst(t)
		bin := vhostpeerBinary(t)
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
