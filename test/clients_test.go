// The command lines that podman and rootlesskit build for pasta
// (../shared/design/compat.md), each run against a namespace made for it,
// with the traffic they are for checked end to end: published ports,
// --map-guest-addr, --dns-forward, --quiet, --pid; rootlesskit's probe, its
// fixed addressing, and its implicit port driver's auto form, with servers
// started after pasta (more in forward_test.go). (libvirt's and
// qemu 10's passt command lines are in passt_peer_test.go.)

package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// udpEchoOn answers every datagram on address (in host h) with itself, for
// t's duration, and returns the port.
func udpEchoOn(t *testing.T, h *nstest.Host, address string) int {
	t.Helper()
	var c net.PacketConn
	if err := h.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp", address)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s: %v", address, err)
	}
	t.Cleanup(func() { c.Close() })
	go udpEchoServer(c, make(chan []byte, 1))
	return c.LocalAddr().(*net.UDPAddr).Port
}

// guestUDP sends a datagram from guest to dst and checks that it comes
// back unchanged.
func guestUDP(t *testing.T, guest *nstest.Netns, dst string) {
	t.Helper()
	var c net.Conn
	if err := guest.Do(func() error {
		var err error
		c, err = net.Dial("udp", dst)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("a query for " + dst)
	back, err := udpRoundTrip(c, msg, 6*time.Second)
	if err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("UDP to %s from the namespace: %q, %v", dst, back, err)
	}
}

// guestTCPTo connects from guest to dst, where server (in the host)
// accepts, and moves a request and an answer with the bytes checked.
func guestTCPTo(t *testing.T, guest *nstest.Netns, server net.Listener, dst string) {
	t.Helper()
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := guest.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", dst, 5*time.Second)
			return err
		})
		return c, err
	}
	if _, err := tcpExchange(server, dial, bytes.Repeat([]byte("to the host "), 500), []byte("ok")); err != nil {
		t.Fatalf("TCP from the namespace to %s: %v", dst, err)
	}
}

// TestClientPodman runs podman's pasta command line (containers/common's
// createPastaArgs) with a published TCP and UDP port, --dns-forward,
// --no-map-gw, --map-guest-addr and --quiet, and the rootless-netns
// variant's --pid: the published ports reach servers in the container's
// namespace from the host's loopback, the container reaches the host's own
// address at the --map-guest-addr address and the host's resolver at the
// --dns-forward address, the PID file names pasta, and nothing is printed.
func TestClientPodman(t *testing.T) {
	nstest.RequireRoot(t)
	h := nstest.NewHostWith(t, nstest.HostOpts{Resolvers: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	guest := nstest.NewNetns(t, "podman")
	pub := h.FreePort(t, "tcp")
	pubU := h.FreePort(t, "udp")
	pidFile := filepath.Join(t.TempDir(), "pasta.pid")
	args := []string{"--config-net",
		"-t", fmt.Sprintf("%d-%d:80-80", pub, pub), "-u", fmt.Sprintf("127.0.0.1/%d-%d:53-53", pubU, pubU),
		"--dns-forward", "169.254.1.1", "-T", "none", "-U", "none", "--no-map-gw", "--quiet",
		"--netns", guest.Path(), "--map-guest-addr", "169.254.1.2", "--pid", pidFile}
	// As podman runs it: in the background (the supervisor exits once
	// the daemon is ready), --pid naming the daemon.
	bin := nstest.Binary(t, "pasta")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.Cmd(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pasta (podman's command line): %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(pidFile)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil || pid <= 0 {
		t.Fatalf("PID file %s: %q, %v", pidFile, b, err)
	}
	t.Cleanup(func() { stopPID(pid) })
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("PID file names %d, not running: %v", pid, err)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Fatalf("--quiet, but pasta printed:\n%s", s)
	}

	// Published ports: host loopback to the container's :80 and :53.
	web := guest.Listen(t, "tcp", ":80")
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pub)), 5*time.Second)
			return err
		})
		return c, err
	}
	if _, err := tcpExchange(web, dial, []byte("GET / HTTP/1.0\r\n\r\n"), bytes.Repeat([]byte("published "), 300)); err != nil {
		t.Fatalf("published TCP port %d -> container :80: %v", pub, err)
	}
	var ns53 net.PacketConn
	if err := guest.Do(func() error {
		var err error
		ns53, err = net.ListenPacket("udp", ":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ns53.Close()
	go udpEchoServer(ns53, make(chan []byte, 1))
	var hc net.Conn
	if err := h.Do(func() error {
		var err error
		hc, err = net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pubU)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if back, err := udpRoundTrip(hc, []byte("published udp"), 6*time.Second); err != nil || string(back) != "published udp" {
		t.Fatalf("published UDP port %d -> container :53: %q, %v", pubU, back, err)
	}

	// --map-guest-addr: the host's own address, as the container's.
	own := h.Listen(t, "tcp", net.JoinHostPort(nstest.HostAddr4.Addr().String(), "0"))
	guestTCPTo(t, guest, own, net.JoinHostPort("169.254.1.2", strconv.Itoa(own.Addr().(*net.TCPAddr).Port)))

	// --dns-forward: the host's resolver (127.0.0.1:53 in its resolv.conf).
	udpEchoOn(t, h, "127.0.0.1:53")
	guestUDP(t, guest, "169.254.1.1:53")

}

// stopPID ends the daemon pid we started: SIGTERM, then SIGKILL after 5 s.
func stopPID(pid int) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	p.Signal(syscall.SIGTERM)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
	}
	p.Kill()
}

// TestClientRootlesskit runs rootlesskit's probe and its two pasta command
// lines (pkg/network/pasta): `--host-lo-to-ns-lo --version` exits 0; the
// fixed-addressing form attaches to a user and network namespace's PID and
// gives tap0 the address and gateway it names, through which the namespace
// reaches the host's loopback and its resolver (--dns-forward); the
// implicit port driver's form (auto ports, --userns and --netns) forwards
// namespace servers started after pasta to the host's loopback.
func TestClientRootlesskit(t *testing.T) {
	nstest.RequireRoot(t)
	bin := nstest.Binary(t, "pasta")
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "--host-lo-to-ns-lo", "--version").CombinedOutput(); err != nil {
		t.Fatalf("probe pasta --host-lo-to-ns-lo --version: %v\n%s", err, out)
	}

	t.Run("fixed", func(t *testing.T) {
		h := nstest.NewHostWith(t, nstest.HostOpts{Resolvers: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		opts := nstest.PastaOpts{Binary: bin, Args: []string{"--stderr", "--ns-ifname=tap0", "--mtu=65520", "--config-net",
			"--address=10.0.2.100", "--netmask=24", "--gateway=10.0.2.2", "--dns-forward=10.0.2.3",
			"--tcp-ports=none", "--udp-ports=none", "--host-lo-to-ns-lo"},
			Ready: func(p *nstest.Pasta) error {
				ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
				defer cancel()
				o, err := p.NSCmd(ctx, "ip", "-o", "-4", "addr", "show", "dev", "tap0").CombinedOutput()
				if err != nil || !strings.Contains(string(o), "10.0.2.100/24") {
					return fmt.Errorf("tap0 without 10.0.2.100/24: %s %v", o, err)
				}
				return nil
			}}
		p := h.StartPasta(t, opts)
		routes := p.NSOutput(t, "ip", "-4", "route", "show", "default")
		if !strings.Contains(routes, "via 10.0.2.2 dev tap0") {
			t.Fatalf("default route: %q, want via 10.0.2.2 dev tap0", routes)
		}
		srv := h.Listen(t, "tcp", "127.0.0.1:0")
		port := srv.Addr().(*net.TCPAddr).Port
		dial := func() (net.Conn, error) {
			return p.Dial("tcp", net.JoinHostPort("10.0.2.2", strconv.Itoa(port)), 5*time.Second)
		}
		if _, err := tcpExchange(srv, dial, bytes.Repeat([]byte("rootlesskit "), 500), []byte("ok")); err != nil {
			t.Fatalf("TCP to the gateway 10.0.2.2 (the host's loopback): %v", err)
		}
		udpEchoOn(t, h, "127.0.0.1:53")
		c, err := p.Dial("udp", "10.0.2.3:53", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if back, err := udpRoundTrip(c, []byte("dns via 10.0.2.3"), 6*time.Second); err != nil || string(back) != "dns via 10.0.2.3" {
			t.Fatalf("--dns-forward 10.0.2.3: %q, %v", back, err)
		}
	})

	t.Run("implicit-port-driver", func(t *testing.T) {
		// As rootlesskit runs it: joining the child's user and network
		// namespaces by path, -t/-u auto; servers in the namespace
		// start after pasta, and are reached from the host's loopback
		// within 2 s (one scan), at the namespace's loopback
		// (--host-lo-to-ns-lo): a server bound to 127.0.0.1 only too.
		h := nstest.NewHost(t)
		holder := h.Start(t, "unshare", "--user", "--map-root-user", "--net", "--", "sleep", "600")
		ns := waitHolder(t, h, holder)
		p := startJoined(t, h, bin, nil, ns, "10.0.2.100", []string{"--stderr", "--ns-ifname=tap0", "--mtu=65520", "--config-net",
			"--address=10.0.2.100", "--netmask=24", "--gateway=10.0.2.2", "--dns-forward=10.0.2.3",
			"--tcp-ports=auto", "--udp-ports=auto", "--host-lo-to-ns-lo",
			fmt.Sprintf("--userns=/proc/%d/ns/user", holder.PID()), "--netns=" + string(ns)})
		hns := hostNS(h)
		const pWild, pLo, pUDP = 30080, 30081, 30053
		t0 := time.Now()
		wild, lo := ns.listen(t, hp("", pWild)), ns.listen(t, hp(lo4, pLo))
		udpSrv := ns.udpListen(t, hp("", pUDP))
		left := func() time.Duration { return max(time.Until(t0.Add(autoAppear)), 0) }
		for _, c := range []struct {
			port int
			srv  net.Listener
		}{{pWild, wild}, {pLo, lo}} {
			seen, err := tcpThrough(hns, hp(lo4, c.port), netip.Addr{}, c.srv, left())
			if err != nil {
				t.Fatalf("namespace server on %d started after pasta, from the host's 127.0.0.1: %v", c.port, err)
			}
			if seen.peer.Addr() != netip.MustParseAddr(lo4) || seen.local.Addr() != netip.MustParseAddr(lo4) {
				t.Errorf("--host-lo-to-ns-lo: the server saw %v -> %v, want 127.0.0.1 at 127.0.0.1", seen.peer, seen.local)
			}
		}
		if _, _, err := udpThrough(hns, hp(lo4, pUDP), netip.Addr{}, udpSrv, left()); err != nil {
			t.Fatalf("namespace UDP server started after pasta, from the host's 127.0.0.1: %v", err)
		}
		t.Logf("servers reached %v after they bound", time.Since(t0).Round(time.Millisecond))
		wild.Close()
		var last error
		if !nstest.Poll(autoVanish, func() bool { last = tcpRefusal(hns, hp(lo4, pWild)); return last == nil }) {
			t.Errorf("host listener stays %v after the namespace server closed: %v", autoVanish, last)
		}
		if p.Exited() {
			t.Fatalf("pasta exited:\n%s", p.Output())
		}
	})
}
