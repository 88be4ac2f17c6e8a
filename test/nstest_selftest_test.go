// Self-tests of the integration harness (test/nstest): the host namespace
// is laid out as promised, everything is gone after cleanup, and pasta
// started through the harness carries a TCP connection from its namespace
// to the host's loopback. They drive Debian's pasta by default; -peer
// gopasst or -peer both runs them against gopasst's pasta (-bin DIR) too.

package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// TestNstestHost checks the host namespace's layout from inside it, and
// that its cleanup removes the namespace, /etc/netns/<name> and the
// processes started in it, grandchildren included.
func TestNstestHost(t *testing.T) {
	nstest.RequireRoot(t)
	var name string
	var pids []int
	resolver := netip.MustParseAddr("198.18.0.77")

	t.Run("layout", func(t *testing.T) {
		h := nstest.NewHostWith(t, nstest.HostOpts{Resolvers: []netip.Addr{resolver}, Search: []string{"example.test"}})
		name = h.Name
		// gopasst-<test>[-<role>]-<pid>[-<sequence>]: unique per process
		// and per namespace, so that a leftover names the run that left it.
		pid := "-" + strconv.Itoa(os.Getpid())
		if !strings.HasPrefix(name, "gopasst-TestNstestHost-layout-") || !(strings.HasSuffix(name, pid) || strings.Contains(name, pid+"-")) {
			t.Errorf("namespace name %q, want gopasst-<test>-<pid>[-<seq>]", name)
		}

		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		defer cancel()
		links, err := nstest.Links(ctx, h.Cmd)
		if err != nil {
			t.Fatal(err)
		}
		if lo := nstest.LinkByName(links, "lo"); lo == nil || !lo.Has("UP") {
			t.Errorf("lo not up: %+v", lo)
		}
		up := nstest.LinkByName(links, nstest.Uplink)
		if up == nil || !up.Has("UP") || !up.Has("LOWER_UP") {
			t.Fatalf("%s missing or without carrier: %+v", nstest.Uplink, up)
		}
		if up.Addr("198.18.0.2", 24) == nil {
			t.Errorf("%s lacks 198.18.0.2/24: %+v", nstest.Uplink, up.Addrs)
		}
		if a := up.Addr("2001:db8:9a55::2", 64); a == nil || !a.NoDAD || a.Tentative {
			t.Errorf("%s lacks 2001:db8:9a55::2/64 nodad, usable: %+v", nstest.Uplink, a)
		}
		for _, a := range up.Addrs {
			if a.Tentative {
				t.Errorf("tentative address %s: DAD should be off", a.Local)
			}
		}
		for fam, gw := range map[string]string{"-4": "198.18.0.1", "-6": "2001:db8:9a55::1"} {
			routes, err := nstest.Routes(ctx, h.Cmd, fam)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range routes {
				found = found || (r.Dst == "default" && r.Gateway == gw && r.Dev == nstest.Uplink)
			}
			if !found {
				t.Errorf("no default route via %s dev %s: %+v", gw, nstest.Uplink, routes)
			}
		}
		if got := strings.Fields(h.Output(t, "sysctl", "-n", "net.ipv4.ping_group_range")); strings.Join(got, " ") != "0 2147483647" {
			t.Errorf("ping_group_range = %q", got)
		}
		rc := h.Output(t, "cat", "/etc/resolv.conf")
		if !strings.Contains(rc, "nameserver "+resolver.String()+"\n") || !strings.Contains(rc, "search example.test\n") {
			t.Errorf("/etc/resolv.conf inside the host namespace:\n%s", rc)
		}

		// A process that ignores SIGTERM, with a grandchild that
		// inherits that: cleanup has to SIGKILL both.
		p := h.Start(t, "sh", "-c", `trap "" TERM; sleep 600 & echo started; wait`)
		nstest.WaitFor(t, 5*time.Second, func() bool { return strings.Contains(p.Output(), "started") })
		pids = append(pids, p.PID())
		nstest.WaitFor(t, 5*time.Second, func() bool {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.PID(), p.PID()))
			for _, f := range strings.Fields(string(kids)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
					return true
				}
			}
			return false
		})
		if n, err := nstest.CountFDs(p.PID()); err != nil || n < 3 {
			t.Errorf("CountFDs(%d) = %d, %v; want at least stdin, stdout, stderr", p.PID(), n, err)
		}
		port := h.FreePort(t, "tcp")
		ln := h.Listen(t, "tcp", net.JoinHostPort("198.18.0.2", strconv.Itoa(port)))
		if ln.Addr().(*net.TCPAddr).Port != port {
			t.Errorf("listener on %v, want port %d", ln.Addr(), port)
		}
	})

	if name == "" {
		t.Fatal("layout subtest did not create a namespace")
	}
	for _, p := range []string{filepath.Join("/run/netns", name), filepath.Join("/etc/netns", name)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after cleanup (%v)", p, err)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(st), ") Z ") {
				t.Errorf("pid %d still running after cleanup: %s", pid, st)
			}
		}
	}
}

// TestNstestPasta starts pasta through the harness, attached (as root and
// as the unprivileged user) and spawning, and checks from outside that the
// namespace got the host's address and that TCP from the namespace to the
// gateway reaches a server on the host's loopback, both ways, byte for
// byte.
func TestNstestPasta(t *testing.T) {
	nstest.RequireRoot(t)
	peers := nstest.Peers(t)
	if len(peers) == 0 {
		t.Skip("no pasta to test the harness with: run test/setup (Debian's passt), or give -bin with -peer gopasst")
	}
	for _, peer := range peers {
		for _, mode := range []struct {
			name         string
			unprivileged bool
			spawn        bool
		}{
			{"attach-root", false, false},
			{"attach-unprivileged", true, false},
			{"spawn-root", false, true},
		} {
			t.Run(peer.Name+"/"+mode.name, func(t *testing.T) {
				h := nstest.NewHost(t)
				args := []string{"--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none"}
				if !mode.unprivileged {
					// As root pasta would switch to nobody, who cannot
					// open the namespace (perf.md).
					args = append(args, "--runas", "0")
				}
				opts := nstest.PastaOpts{Binary: peer.Pasta, Args: args, Unprivileged: mode.unprivileged}
				if mode.spawn {
					opts.Command = []string{"sleep", "600"}
				}
				p := h.StartPasta(t, opts)
				checkPasta(t, h, p)
				if code := p.Stop(); code != 0 && code != 128+int(syscall.SIGTERM) {
					t.Errorf("pasta exited with %d after SIGTERM, output:\n%s", code, p.Proc.Output())
				}
			})
		}
	}
}

// checkPasta checks pasta p in host h: a tap with the host's addresses,
// TCP over IPv4 and IPv6 from the namespace's side to the gateways reaching
// listeners on the host's loopback, the namespace's counters readable.
func checkPasta(t *testing.T, h *nstest.Host, p *nstest.Pasta) {
	ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer cancel()
	if p.TargetPID == 0 || p.Tap == "" {
		t.Fatalf("no namespace process (%d) or tap (%q)", p.TargetPID, p.Tap)
	}
	links, err := nstest.Links(ctx, p.NSCmd)
	if err != nil {
		t.Fatal(err)
	}
	tap := nstest.LinkByName(links, p.Tap)
	if tap == nil || !tap.Has("UP") {
		t.Fatalf("tap %s missing or down: %+v", p.Tap, links)
	}
	if tap.Addr("198.18.0.2", 24) == nil {
		t.Errorf("tap %s lacks the host's 198.18.0.2/24: %+v", p.Tap, tap.Addrs)
	}
	if lo := nstest.LinkByName(links, "lo"); lo == nil || !lo.Has("UP") {
		t.Errorf("lo not up in the namespace: %+v", lo)
	}
	if n, err := nstest.CountFDs(p.PID); err != nil || n == 0 {
		t.Errorf("CountFDs(pasta) = %d, %v", n, err)
	}

	for _, c := range []struct{ loopback, gateway string }{
		{"127.0.0.1", nstest.HostGW4.String()},
		{"::1", nstest.HostGW6.String()},
	} {
		if c.loopback == "::1" && tap.Addr("2001:db8:9a55::2", 64) == nil {
			t.Logf("no IPv6 address on the tap: IPv6 transfer skipped")
			continue
		}
		ln := h.Listen(t, "tcp", net.JoinHostPort(c.loopback, "0"))
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		transfer(t, ln, func() (net.Conn, error) {
			return p.Dial("tcp", net.JoinHostPort(c.gateway, port), 10*time.Second)
		})
	}

	nctx, ncancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
	defer ncancel()
	st, err := nstest.ReadNstat(nctx, p.NSCmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.All["TcpRetransSegs"]; !ok {
		t.Errorf("nstat in the namespace lacks TcpRetransSegs: %d counters", len(st.All))
	}
	if _, ok := st.All["TcpExtTCPTimeouts"]; !ok {
		t.Errorf("nstat in the namespace lacks TcpExtTCPTimeouts")
	}
}

// transfer sends 1 MiB of random bytes from a connection made by dial to
// the server accepting on ln; once it has them all, the server answers with
// 1 MiB of its own and closes, and both ends check what they received (and
// the client that EOF follows). Every step has a deadline.
//
// The client does not half-close: with Debian's pasta (2023-03-09), after
// the namespace side's FIN the host side's FIN never arrives, and answers of
// 64 KiB arrived two or three times over (196508 bytes for 65536), so a
// request delimited by shutdown(SHUT_WR) cannot test the harness.
func transfer(t *testing.T, ln net.Listener, dial func() (net.Conn, error)) {
	t.Helper()
	request := randomBytes(t, 1<<20)
	answer := randomBytes(t, 1<<20)
	deadline := time.Now().Add(20 * time.Second)

	type result struct {
		got  []byte
		peer net.Addr
		err  error
	}
	srv := make(chan result, 1)
	go func() {
		ln.(*net.TCPListener).SetDeadline(deadline)
		c, err := ln.Accept()
		if err != nil {
			srv <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		got := make([]byte, len(request))
		_, err = io.ReadFull(c, got)
		if err == nil {
			_, err = c.Write(answer)
		}
		srv <- result{got: got, peer: c.RemoteAddr(), err: err}
	}()

	c, err := dial()
	if err != nil {
		t.Fatalf("dial from the namespace: %v", err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write(request); err != nil {
		t.Fatalf("client write: %v", err)
	}
	back := make([]byte, len(answer))
	n, rerr := io.ReadFull(c, back)
	back = back[:n]
	if rerr == nil {
		// The server closes after its answer: nothing more may come.
		var extra [1]byte
		if n, err := c.Read(extra[:]); err != io.EOF {
			t.Errorf("after the answer: read %d more bytes, %v; want EOF", n, err)
		}
	}
	r := <-srv
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if ip, ok := r.peer.(*net.TCPAddr); !ok || !ip.IP.IsLoopback() {
		t.Errorf("server saw the connection from %v, want a loopback address", r.peer)
	}
	if !bytes.Equal(r.got, request) {
		t.Errorf("server received %d bytes, not the %d sent", len(r.got), len(request))
	}
	if rerr != nil || !bytes.Equal(back, answer) {
		t.Errorf("client received %d bytes (%v), not the %d the server sent", len(back), rerr, len(answer))
	}
	t.Logf("%d bytes in, %d out, %v -> %v (server saw %v)", len(request), len(answer), c.LocalAddr(), c.RemoteAddr(), r.peer)
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
