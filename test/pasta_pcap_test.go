// End-to-end test of pasta's packet capture (-p FILE): tshark reads it
// without complaint and finds the pings that crossed the tap.

package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// TestPastaPcap starts pasta with -p FILE, pings an IPv4 and an IPv6
// address of the host twice each, stops pasta, and reads FILE with tshark:
// it must exit 0 with nothing on standard error but its warning about
// running as root, and list the echo requests from the namespace's
// addresses and the replies to them (ICMP 8/0, ICMPv6 128/129).
func TestPastaPcap(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skipf("tshark not installed (%v): run test/setup", err)
	}
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		file := filepath.Join(t.TempDir(), "capture.pcap")
		p := startPasta(t, h, peer, modeAttachRoot, append([]string{"--config-net", "-p", file}, quietArgs...)...)
		for _, dst := range []string{hostLocal4.String(), hostLocal6.String()} {
			if err := ping(p, dst, 2); err != nil {
				t.Fatal(err)
			}
		}
		p.Stop()
		if fi, err := os.Stat(file); err != nil || fi.Size() <= 24 {
			t.Fatalf("capture %s: %v, %v (want more than the 24-byte pcap header)", file, fi, err)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		stdout, stderr, err := runOut(exec.CommandContext(ctx, "tshark", "-r", file, "-n", "-T", "fields", "-E", "separator=,",
			"-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "icmpv6.type"))
		if err != nil {
			t.Fatalf("tshark -r %s: %v", file, err)
		}
		for _, line := range nonEmptyLines(stderr) {
			if !strings.Contains(line, "Running as user") && !strings.Contains(line, "could be dangerous") {
				t.Errorf("tshark complains: %s", line)
			}
		}
		lines := nonEmptyLines(stdout)
		guest4, guest6 := nstest.HostAddr4.Addr().String(), nstest.HostAddr6.Addr().String()
		for _, want := range []string{
			guest4 + "," + hostLocal4.String() + ",8,,,",
			hostLocal4.String() + "," + guest4 + ",0,,,",
			",,," + guest6 + "," + hostLocal6.String() + ",128",
			",,," + hostLocal6.String() + "," + guest6 + ",129",
		} {
			n := 0
			for _, l := range lines {
				if l == want {
					n++
				}
			}
			if n < 2 {
				t.Errorf("capture has %d frames %q (src/dst/icmp type), want 2; tshark read %d frames:\n%s",
					n, want, len(lines), strings.Join(lines, "\n"))
			}
		}
	})
}
