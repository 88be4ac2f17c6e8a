// End-to-end test of passt mode with a real guest: qemu (TCG) boots a
// small Linux from test/qemu's initramfs on passt's UNIX domain socket; the
// guest takes passt's DHCP lease, pings, and downloads a random blob from
// an HTTP server on the host's loopback through the gateway address, and
// the test checks what it printed on its console. -peer selects Debian's
// passt, gopasst's (-bin DIR/passt) or both.

package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopasst/test/nstest"
	"gopasst/test/qemu"
)

// Bounds of TestQemuStream. The whole of one run (passt, boot, lease,
// pings, 64 MiB through TCG's emulated card, power-off) takes about a
// minute here; the bound is generous for a loaded machine, not a
// performance check.
const (
	qemuRunTimeout   = 240 * time.Second
	passtReadyWithin = 20 * time.Second
	qemuBlobSize     = 64 << 20
)

// DebianPasst is where Debian's package passt installs passt.
const DebianPasst = "/usr/bin/passt"

// reasonICMPGatewayPasst is why Debian's passt gets no echo replies from
// the gateway: as its pasta (reasonICMPGateway), it sends the echo to the
// gateway address itself, out of the host's uplink, where nothing answers.
const reasonICMPGatewayPasst = "ICMP echo to the gateway is not mapped to the host's loopback (as in its pasta)"

// passtPeer is one passt implementation to boot the guest on.
type passtPeer struct {
	Name  string // "debian" or "gopasst"
	Passt string // path of its passt binary
}

// passtPeers returns the passt implementations selected with -peer:
// Debian's /usr/bin/passt, and gopasst's passt beside the pasta nstest.Peers
// finds in the -bin directory. A missing binary leaves its peer out with a
// log line; none at all skips t.
func passtPeers(t *testing.T) []passtPeer {
	t.Helper()
	var out []passtPeer
	for _, p := range nstest.Peers(t) {
		bin := DebianPasst
		if p.Name != "debian" {
			bin = filepath.Join(filepath.Dir(p.Pasta), "passt")
		}
		if _, err := os.Stat(bin); err != nil {
			t.Logf("%s's passt left out: %v", p.Name, err)
			continue
		}
		out = append(out, passtPeer{Name: p.Name, Passt: bin})
	}
	if len(out) == 0 {
		t.Skip("no passt to test: run test/setup (Debian's passt), or give -bin DIR with -peer gopasst")
	}
	return out
}

// qemuGuest is what every run boots: the kernel and the initramfs built
// for this test run.
type qemuGuest struct {
	Kernel  qemu.Kernel
	Initrd  string
	Modules []string // module file names, in load order
}

// needQemuGuest skips t, with the reason, unless qemu, a kernel with its
// modules and busybox-static are installed; then it builds the initramfs
// into a directory of its own under /tmp, readable by every user (an
// unprivileged qemu reads it), removed at t's cleanup.
func needQemuGuest(t *testing.T) qemuGuest {
	t.Helper()
	if _, err := exec.LookPath(qemu.Binary); err != nil {
		t.Skipf("%s not found (%v): run test/setup (qemu-system-x86)", qemu.Binary, err)
	}
	k, err := qemu.FindKernel()
	if err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(qemu.Busybox); err != nil {
		t.Skipf("busybox not found (%v): run test/setup (busybox-static)", err)
	}
	mods, err := k.ModuleFiles(qemu.NetModules...)
	if err != nil {
		t.Fatalf("guest modules: %v", err)
	}
	dir := sharedTempDir(t, "gopasst-qemu-guest-")
	g := qemuGuest{Kernel: k, Initrd: filepath.Join(dir, "initramfs.gz")}
	for _, m := range mods {
		g.Modules = append(g.Modules, filepath.Base(m))
	}
	start := time.Now()
	size, err := qemu.Initramfs{Modules: mods}.Build(g.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest: kernel %s, initramfs %d KiB in %v, modules %s",
		k.Image, size>>10, time.Since(start).Round(time.Millisecond), strings.Join(g.Modules, " "))
	return g
}

// sharedTempDir creates a directory under /tmp (short, for AF_UNIX paths;
// t.TempDir's are 0700 and deep), mode 0755, removed with its contents at
// t's cleanup.
func sharedTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// qemuBlob is the random payload the guest downloads, and its digest.
type qemuBlob struct {
	Data   []byte
	SHA256 string
}

// newQemuBlob returns size bytes from ChaCha8 under a random seed (fast,
// and different every run) with their SHA-256.
func newQemuBlob(t *testing.T, size int) qemuBlob {
	t.Helper()
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	if _, err := mrand.NewChaCha8(seed).Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return qemuBlob{Data: data, SHA256: hex.EncodeToString(sum[:])}
}

// qemuMode is one way of running passt (and qemu) for the guest.
type qemuMode struct {
	name string
	// unprivileged runs passt and qemu as nstest.TestUser, the socket in
	// a directory that user owns. Otherwise both run as root, and passt
	// drops to nobody by itself (no --runas): its socket directory then
	// belongs to nobody, since passt binds the socket and writes its PID
	// file after it has dropped.
	unprivileged bool
	// vhost runs passt with --vhost-user and qemu as its vhost-user
	// front end (qemu.VM.VhostUser).
	vhost bool
}

// TestQemuStream boots a guest on passt's socket (qemu's stream netdev)
// for each selected passt, as root and as nstest.TestUser, in a host made by
// nstest (so that the gateway is 198.18.0.1, and nothing leaves the
// machine): passt gets -f -s SOCK -P PIDFILE and nothing else, and qemu
// starts once the socket listens. The guest must get a lease of the
// host's address with the gateway as router, receive every echo reply from
// an address on the host's lo and from the gateway (Debian's passt: a
// known limitation, logged), and download a 64 MiB random blob from an
// HTTP server on the host's 127.0.0.1, through the gateway address, with
// the right size and SHA-256; then power off. How long each phase took is
// logged; nothing is asserted about it but the overall bound.
func TestQemuStream(t *testing.T) {
	nstest.RequireRoot(t)
	peers := passtPeers(t)
	guest := needQemuGuest(t)
	start := time.Now()
	blob := newQemuBlob(t, qemuBlobSize)
	t.Logf("blob: %d MiB, sha256 %s, made in %v", len(blob.Data)>>20, blob.SHA256, time.Since(start).Round(time.Millisecond))

	for _, peer := range peers {
		for _, mode := range []qemuMode{{name: "root"}, {name: "unprivileged", unprivileged: true}} {
			t.Run(peer.Name+"/"+mode.name, func(t *testing.T) {
				runQemuStream(t, guest, blob, peer, mode)
			})
		}
	}
}

// TestQemuVhostUser is TestQemuStream with passt as qemu's vhost-user
// back end (passt --vhost-user; qemu with a shared memfd for the guest's
// memory, -netdev vhost-user, virtio-net-pci with vectors=0): the same
// lease, pings and 64 MiB download with its SHA-256, as root and as
// nstest.TestUser. gopasst's passt only: Debian's (2023) has no
// vhost-user.
func TestQemuVhostUser(t *testing.T) {
	nstest.RequireRoot(t)
	peers := vhostPeers(t)
	guest := needQemuGuest(t)
	blob := newQemuBlob(t, qemuBlobSize)
	for _, peer := range peers {
		for _, mode := range []qemuMode{{name: "root", vhost: true}, {name: "unprivileged", unprivileged: true, vhost: true}} {
			t.Run(peer.Name+"/"+mode.name, func(t *testing.T) {
				runQemuStream(t, guest, blob, peer, mode)
			})
		}
	}
}

// runQemuStream is one run of TestQemuStream (or TestQemuVhostUser):
// peer's passt in mode.
func runQemuStream(t *testing.T, guest qemuGuest, blob qemuBlob, peer passtPeer, mode qemuMode) {
	ctx, cancel := context.WithTimeout(context.Background(), qemuRunTimeout)
	defer cancel()
	t0 := time.Now()

	var prefix []string
	owner := "nobody"
	if mode.unprivileged {
		owner = nstest.TestUser
		prefix = []string{"setpriv", "--reuid=" + nstest.TestUser, "--regid=" + nstest.TestUser, "--clear-groups"}
	}
	u, err := user.Lookup(owner)
	if err != nil {
		t.Skipf("user %s missing (%v): run test/setup", owner, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	h := nstest.NewHost(t)
	addHostLocal(t, h)
	srv := serveBlob(t, h, blob)

	// The run's directory: passt's socket and PID file, qemu's console.
	// It belongs to the user passt runs as (nobody once Debian's passt
	// has dropped root), who creates the files there; an unprivileged
	// qemu runs as that user too.
	dir := sharedTempDir(t, "gopasst-qemu-")
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "passt.sock")
	pidFile := filepath.Join(dir, "passt.pid")
	console := filepath.Join(dir, "console.log")

	tSetup := time.Since(t0)
	args := append(append([]string{}, prefix...), peer.Passt, "-f", "-s", sock, "-P", pidFile)
	if mode.vhost {
		args = append(args, "--vhost-user")
	}
	passt := h.Start(t, args[0], args[1:]...)
	pid := waitPasstListening(t, passt, pidFile, sock)
	tReady := time.Since(t0) - tSetup
	if pid != passt.PID() {
		t.Logf("passt's PID file says %d, started as %d", pid, passt.PID())
	}

	vm := qemu.VM{
		Kernel:  guest.Kernel.Image,
		Initrd:  guest.Initrd,
		Socket:  sock,
		Console: console,
		Append: []string{
			"gopasst.port=" + strconv.Itoa(srv.port),
			"gopasst.size=" + strconv.Itoa(len(blob.Data)),
			"gopasst.ping=" + hostLocal4.String(),
		},
		Prefix:    prefix,
		VhostUser: mode.vhost,
	}
	t.Logf("qemu: %s", strings.Join(vm.Args(), " "))
	run := vm.Start(ctx, t)
	w, werr := run.Watch(ctx, func() error {
		if passt.Exited() {
			code, _ := passt.Wait(0)
			return fmt.Errorf("%s's passt exited with status %d while the guest ran:\n%s", peer.Name, code, passt.Output())
		}
		return nil
	})
	rep := qemu.ParseConsole(w.Text)
	logQemuPhases(t, tSetup, tReady, w)
	t.Logf("HTTP server: %d request(s), %d bytes sent", srv.requests.Load(), srv.sent.Load())
	if werr != nil || t.Failed() || !rep.Done {
		defer func() { t.Logf("guest console:\n%s", w.Text) }()
	}
	if werr != nil {
		t.Fatal(werr)
	}
	if !w.Exited {
		t.Errorf("qemu did not exit after the guest's last line")
	} else if w.ExitCode != 0 {
		t.Errorf("qemu exited with status %d:\n%s", w.ExitCode, run.Proc.Output())
	}
	checkQemuReport(t, peer, rep, blob)
}

// checkQemuReport checks the guest's report rep (see TestQemuStream).
func checkQemuReport(t *testing.T, peer passtPeer, rep qemu.Report, blob qemuBlob) {
	t.Helper()
	if rep.Fail != "" {
		t.Errorf("guest failed: %s", rep.Fail)
	}
	if rep.Lease == nil {
		t.Fatalf("guest printed no DHCP lease")
	}
	t.Logf("lease: %+v", *rep.Lease)
	if want := nstest.HostAddr4; rep.Lease.IP != want.Addr().String() || rep.Lease.Mask != strconv.Itoa(want.Bits()) {
		t.Errorf("lease: address %s/%s, want %s (the host's)", rep.Lease.IP, rep.Lease.Mask, want)
	}
	if rep.Lease.Router != nstest.HostGW4.String() {
		t.Errorf("lease: router %s, want %s (the host's gateway)", rep.Lease.Router, nstest.HostGW4)
	}
	for _, dst := range []string{hostLocal4.String(), nstest.HostGW4.String()} {
		p, ok := rep.Ping(dst)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("guest did not ping %s", dst)
		case p.Received != p.Sent || p.Sent == 0:
			err = fmt.Errorf("ping %s: %d of %d replies", dst, p.Received, p.Sent)
		}
		if err != nil && dst == nstest.HostGW4.String() && peer.Name == "debian" {
			t.Logf("known limitation of Debian's passt 0.0~git20230309: %s (seen: %v)", reasonICMPGatewayPasst, err)
			continue
		}
		if err != nil {
			t.Error(err)
		}
	}
	if rep.Size != int64(len(blob.Data)) {
		t.Errorf("guest downloaded %d bytes, want %d", rep.Size, len(blob.Data))
	}
	if rep.SHA256 != blob.SHA256 {
		t.Errorf("guest's SHA-256 %q, want %s", rep.SHA256, blob.SHA256)
	}
	if !rep.Done {
		t.Errorf("guest did not finish (no GUEST-DONE)")
	}
}

// waitPasstListening waits until passt has written its PID file and its
// socket listens (qemu 7.2 connects once and would stay unconnected
// otherwise), failing t with passt's output if it exits first or is not
// ready within passtReadyWithin. It returns the PID from the file.
func waitPasstListening(t *testing.T, passt *nstest.Proc, pidFile, sock string) int {
	t.Helper()
	pid := 0
	var last error
	ok := nstest.Poll(passtReadyWithin, func() bool {
		if passt.Exited() {
			return true
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			last = err
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			last = fmt.Errorf("PID file %s: %q", pidFile, b)
			return false
		}
		listening, err := qemu.SocketListening(pid, sock)
		if err == nil && !listening {
			err = fmt.Errorf("%s not listening", sock)
		}
		last = err
		return err == nil
	})
	if passt.Exited() {
		// The last line is the reason (passt's one-line errors); the
		// whole output follows from the Proc's cleanup.
		code, _ := passt.Wait(0)
		out := strings.TrimSpace(passt.Output())
		t.Fatalf("%s exited with status %d before listening on %s: %q", passt.Name(), code, sock, out[strings.LastIndexByte(out, '\n')+1:])
	}
	if !ok {
		t.Fatalf("%s not listening within %v: %v\noutput:\n%s", passt.Name(), passtReadyWithin, last, passt.Output())
	}
	return pid
}

// logQemuPhases logs how long each phase of a run took: the host's set-up
// (namespace, HTTP server, directory), passt's start until its socket
// listens, then from qemu's start the first console output, /init, the
// card, the lease, the pings, the download, its checksum, and power-off,
// each from the end of the one before (to Watch's 100 ms resolution).
func logQemuPhases(t *testing.T, setup, ready time.Duration, w qemu.Watched) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "phases: host set-up %v, passt listening %v", setup.Round(time.Millisecond), ready.Round(time.Millisecond))
	prev := time.Duration(0)
	step := func(name string, at time.Duration, ok bool) {
		if !ok {
			fmt.Fprintf(&b, ", %s -", name)
			return
		}
		fmt.Fprintf(&b, ", %s %v", name, (at - prev).Round(100*time.Millisecond))
		prev = at
	}
	mark := func(name string, m qemu.Mark, ok bool) { step(name, m.At, ok) }
	step("console", w.Console, w.Console != 0)
	m, ok := w.First("INIT")
	mark("boot to /init", m, ok)
	m, ok = w.First("NIC")
	mark("modules+eth0", m, ok)
	m, ok = w.First("LEASE")
	mark("DHCP", m, ok)
	m, ok = w.Last("PING")
	mark("pings", m, ok)
	m, ok = w.First("SIZE")
	mark("download", m, ok)
	m, ok = w.First("SHA256")
	mark("sha256", m, ok)
	step("power-off", w.Exit, w.Exited)
	fmt.Fprintf(&b, "; qemu's run %v", w.Exit.Round(100*time.Millisecond))
	t.Log(b.String())
}

// blobServer is the HTTP server the guest downloads the blob from.
type blobServer struct {
	port     int
	requests atomic.Int64
	sent     atomic.Int64
}

// serveBlob serves blob at /blob over HTTP on 127.0.0.1 in host h (passt
// maps the gateway address to it), until t's cleanup.
func serveBlob(t *testing.T, h *nstest.Host, blob qemuBlob) *blobServer {
	t.Helper()
	ln := h.Listen(t, "tcp4", "127.0.0.1:0")
	s := &blobServer{port: ln.Addr().(*net.TCPAddr).Port}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(blob.Data)))
		n, _ := io.Copy(w, bytes.NewReader(blob.Data))
		s.sent.Add(n)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("HTTP server: %v", err)
		}
	})
	return s
}
