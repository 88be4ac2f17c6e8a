// pasta's log file (-l, --log-size) once the sandbox is in: lines written
// after the seccomp filter, and the file emptied in place at its limit.

package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// TestPastaLogFile starts pasta with -d, -l FILE and the smallest
// --log-size, moves UDP datagrams from the namespace to a host server
// through it (each new flow is a debug line, logged after the seccomp
// filter), then opens many more flows than the log can hold: pasta must
// still be running and forwarding, the file must hold lines and never grow
// past the limit, and for gopasst the flow lines must be there.
func TestPastaLogFile(t *testing.T) {
	forEachPeer(t, func(t *testing.T, peer nstest.Peer) {
		h := nstest.NewHost(t)
		addHostLocal(t, h)
		const limit = 40960 // 5 × max(BUFSIZ, page size): the minimum --log-size
		file := filepath.Join(t.TempDir(), "pasta.log")
		p := startPasta(t, h, peer, modeAttachRoot, append([]string{"--config-net", "-d", "-l", file,
			"--log-size", fmt.Sprint(limit)}, quietArgs...)...)
		srv := listenUDP(t, h, hostLocal4.String())
		got := make(chan []byte, 1)
		go udpEchoServer(srv, got)
		port := srv.LocalAddr().(*net.UDPAddr).Port

		// exchange sends one datagram from a new socket (a new flow)
		// and checks that the server's echo comes back intact.
		exchange := func(i int) error {
			c, err := dialUDP(p, hostLocal4.String(), port)
			if err != nil {
				return err
			}
			defer c.Close()
			msg := []byte(fmt.Sprintf("log test datagram %d", i))
			back, err := udpRoundTrip(c, msg, 3*time.Second)
			if err != nil {
				return fmt.Errorf("datagram %d: %w", i, err)
			}
			if string(back) != string(msg) {
				return fmt.Errorf("datagram %d came back as %q", i, back)
			}
			return nil
		}
		for i := 0; i < 5; i++ {
			if err := exchange(i); err != nil {
				t.Fatal(err)
			}
		}
		if p.Proc.Exited() {
			t.Fatalf("pasta exited after logging with the filter in:\n%s", p.Proc.Output())
		}
		// Enough new flows to fill the log several times over (about
		// 100 bytes a line).
		for i := 5; i < 5+3*limit/100; i++ {
			if err := exchange(i); err != nil {
				t.Fatal(err)
			}
		}
		if p.Proc.Exited() {
			t.Fatalf("pasta exited while the log file was emptied at its limit:\n%s", p.Proc.Output())
		}
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(file)
		if st.Size() == 0 || st.Size() > limit {
			t.Fatalf("log file of %d bytes, want 1 to %d", st.Size(), limit)
		}
		if peer.Name == "gopasst" && !strings.Contains(string(b), "UDP flow") {
			t.Fatalf("no flow lines in the log file:\n%s", b)
		}
		t.Logf("%s: log file %d bytes after %d flows", peer.Name, st.Size(), 5+3*limit/100)
	})
}
