// Unit tests of the qemu harness's parts that need no virtual machine: the
// cpio writer and the initramfs, kernel and module discovery, the console
// parser, the listening-socket check, and the guest scripts' syntax.

package qemu

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back from a newc archive.
type cpioEntry struct {
	name                 string
	mode                 uint32
	rdevMajor, rdevMinor uint32
	data                 []byte
}

// readCpio parses a newc archive up to its trailer, checking the magic and
// the 4-byte alignment of names and data, and returns its entries.
func readCpio(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for i := 0; i < 10000; i++ {
		if len(b)-off < 110 {
			t.Fatalf("archive ends at %d without a trailer", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nsize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+nsize-1])
		if b[off+110+nsize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		dataOff := off + align(110+nsize)
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{name, mode, rmaj, rmin, b[dataOff : dataOff+size]})
		off = dataOff + align(size)
	}
	t.Fatal("too many entries")
	return nil
}

// TestCpioWriter writes one entry of each kind and reads them back, with
// the system's cpio listing the archive too when it is installed.
func TestCpioWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCpioWriter(&buf)
	c.dir("etc", 0o755)
	c.file("etc/a", 0o644, []byte("hello")) // 5 bytes: padded
	c.symlink("etc/b", "a")
	c.charDev("console", 0o600, 5, 1)
	c.file("empty", 0o600, nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", buf.Len())
	}
	got := readCpio(t, buf.Bytes())
	want := []cpioEntry{
		{"etc", modeDir | 0o755, 0, 0, []byte{}},
		{"etc/a", modeRegular | 0o644, 0, 0, []byte("hello")},
		{"etc/b", modeSymlink | 0o777, 0, 0, []byte("a")},
		{"console", modeChar | 0o600, 5, 1, []byte{}},
		{"empty", modeRegular | 0o600, 0, 0, []byte{}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.mode != w.mode || g.rdevMajor != w.rdevMajor || g.rdevMinor != w.rdevMinor || !bytes.Equal(g.data, w.data) {
			t.Errorf("entry %d: got %+v, want %+v", i, g, w)
		}
	}

	if _, err := exec.LookPath("cpio"); err != nil {
		t.Logf("no cpio(1) to cross-check with: %v", err)
		return
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, []string{"etc", "etc/a", "etc/b", "console", "empty"}) {
		t.Errorf("cpio -t lists %q", got)
	}
}

// TestCpioBadName checks that an absolute or empty name is refused.
func TestCpioBadName(t *testing.T) {
	for _, name := range []string{"/init", ""} {
		c := newCpioWriter(io.Discard)
		c.file(name, 0o644, nil)
		if err := c.Close(); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}

// writeFile writes data to path, creating its directory, failing t on
// error.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFindKernel checks that the greatest version with installed modules
// is chosen, by version and not by string order.
func TestFindKernel(t *testing.T) {
	root := t.TempDir()
	boot, mods := filepath.Join(root, "boot"), filepath.Join(root, "modules")
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "6.2.0-1-amd64"} {
		writeFile(t, filepath.Join(boot, "vmlinuz-"+v), "image")
	}
	// 6.2.0-1 has no modules: not bootable with our initramfs.
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64"} {
		writeFile(t, filepath.Join(mods, v, "modules.dep"), "")
	}
	k, err := findKernel(boot, mods)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != "6.1.0-10-amd64" || k.Image != filepath.Join(boot, "vmlinuz-6.1.0-10-amd64") || k.ModulesDir != filepath.Join(mods, "6.1.0-10-amd64") {
		t.Errorf("got %+v", k)
	}
	if _, err := findKernel(filepath.Join(root, "none"), mods); err == nil {
		t.Error("no images: no error")
	}
}

// TestVersionCompare checks sort -V's order on kernel-like versions.
func TestVersionCompare(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"6.1.0-9", "6.1.0-10", -1},
		{"6.1.0-10", "6.1.0-9", 1},
		{"6.1.0-10", "6.1.0-10", 0},
		{"6.1", "6.1.0", -1},
		{"6.01", "6.1", 0},
		{"5.10.0-28-amd64", "6.1.0-1-amd64", -1},
		{"6.1.0-9-amd64", "6.1.0-9-cloud", -1},
	} {
		if got := versionCompare(c.a, c.b); got != c.want {
			t.Errorf("versionCompare(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// TestModuleFiles checks the load order from a modules.dep (dependencies
// first, each once), built-in modules left out, and the errors.
func TestModuleFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "modules.dep"), `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/a/zipped.ko.xz:
kernel/a/loop_a.ko: kernel/a/loop_b.ko
kernel/a/loop_b.ko: kernel/a/loop_a.ko
`)
	writeFile(t, filepath.Join(dir, "modules.builtin"), "kernel/drivers/block/virtio_blk.ko\n")
	k := Kernel{Version: "test", ModulesDir: dir}
	got, err := k.ModuleFiles("virtio-pci", "virtio_net", "virtio_blk")
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, g := range got {
		r, _ := filepath.Rel(dir, g)
		rel = append(rel, filepath.Base(r))
	}
	// Each module after what it needs (net_failover after failover),
	// in the order the names were asked for otherwise.
	want := []string{"virtio_ring.ko", "virtio.ko", "virtio_pci.ko", "failover.ko", "net_failover.ko", "virtio_net.ko"}
	if !slices.Equal(rel, want) {
		t.Errorf("load order %q, want %q", rel, want)
	}
	for _, bad := range []string{"nosuch", "zipped", "loop_a"} {
		if _, err := k.ModuleFiles(bad); err == nil {
			t.Errorf("module %s: no error", bad)
		}
	}
	writeFile(t, filepath.Join(dir, "modules.dep"), "no colon here\n")
	if _, err := k.ModuleFiles("x"); err == nil {
		t.Error("malformed modules.dep: no error")
	}
}

// TestInitramfsBuild builds an initramfs from a stand-in busybox and two
// modules and checks its contents.
func TestInitramfsBuild(t *testing.T) {
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	writeFile(t, bb, "static busybox")
	m1, m2 := filepath.Join(dir, "k", "a.ko"), filepath.Join(dir, "k", "b.ko")
	writeFile(t, m1, "module a")
	writeFile(t, m2, "module b")
	out := filepath.Join(dir, "initramfs.gz")
	if _, err := (Initramfs{Busybox: bb, Modules: []string{m1, m2}}).Build(out); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("initramfs mode %v, want 0644", fi.Mode().Perm())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]cpioEntry{}
	for _, e := range readCpio(t, raw) {
		entries[e.name] = e
	}
	check := func(name string, mode uint32, data string) {
		t.Helper()
		e, ok := entries[name]
		if !ok {
			t.Errorf("no %s", name)
			return
		}
		if e.mode != mode || string(e.data) != data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, e.mode, e.data, mode, data)
		}
	}
	check("init", modeRegular|0o755, string(initScript))
	check("etc/udhcpc.script", modeRegular|0o755, string(udhcpcScript))
	check("bin/busybox", modeRegular|0o755, "static busybox")
	check("bin/sh", modeSymlink|0o777, "busybox")
	check("etc/modules.load", modeRegular|0o644, "a.ko\nb.ko\n")
	check("lib/modules/b.ko", modeRegular|0o644, "module b")
	check("dev/console", modeChar|0o600, "")
	if e := entries["dev/console"]; e.rdevMajor != 5 || e.rdevMinor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", e.rdevMajor, e.rdevMinor)
	}

	writeFile(t, bb, "ELF ... /lib64/ld-linux-x86-64.so.2 ...")
	if _, err := (Initramfs{Busybox: bb}).Build(out); err == nil {
		t.Error("dynamically linked busybox accepted")
	}
}

// TestParseConsole parses a console as the serial line delivers it
// (carriage returns, kernel lines between the guest's, a marker after
// other output on its line).
func TestParseConsole(t *testing.T) {
	text := strings.Join([]string{
		"[    0.000000] Linux version 6.1.0",
		"GUEST-INIT uptime=1.90",
		"GUEST-NIC eth0 mac=52:54:00:12:34:56 uptime=2.5",
		"udhcpc: lease of 198.18.0.2 obtained",
		"GUEST-LEASE ip=198.18.0.2 mask=24 router=198.18.0.1 mtu=65520 dns=198.18.0.53 uptime=3.1",
		"GUEST-PING dst=198.18.0.1 sent=3 received=0",
		"[   5.1] random: crng init doneGUEST-PING dst=198.18.0.9 sent=3 received=3",
		"GUEST-SIZE 67108864 want=67108864 uptime=9",
		"GUEST-SHA256 0123abcd",
		"GUEST-DONE uptime=11",
	}, "\r\n")
	w := ParseConsole(text)
	if w.NIC != "52:54:00:12:34:56" || w.Lease == nil || *w.Lease != (Lease{"198.18.0.2", "24", "198.18.0.1", "65520", "198.18.0.53"}) {
		t.Errorf("NIC %q lease %+v", w.NIC, w.Lease)
	}
	if p, ok := w.Ping("198.18.0.9"); !ok || p.Sent != 3 || p.Received != 3 {
		t.Errorf("ping 198.18.0.9: %+v %v", p, ok)
	}
	if p, ok := w.Ping("198.18.0.1"); !ok || p.Received != 0 {
		t.Errorf("ping 198.18.0.1: %+v %v", p, ok)
	}
	if w.Size != 67108864 || w.SHA256 != "0123abcd" || !w.Done || w.Fail != "" {
		t.Errorf("report %+v", w)
	}

	w = ParseConsole("GUEST-INIT\nGUEST-FAIL udhcpc: no lease\nGUEST-FAIL later\nGUEST-SIZE x\n")
	if w.Fail != "udhcpc: no lease" || w.Lease != nil || w.Size != -1 || w.Done {
		t.Errorf("failed report %+v", w)
	}
}

// TestUnixListening checks the /proc/net/unix check on a table with the
// same path listening, connected, and not listening.
func TestUnixListening(t *testing.T) {
	table := `Num       RefCount Protocol Flags    Type St Inode Path
0000000072cf6437: 00000002 00000000 00010000 0001 01 25169731 /tmp/d/passt.sock
0000000072cf6438: 00000003 00000000 00000000 0001 03 25169732 /tmp/d/other.sock
0000000072cf6439: 00000002 00000000 00000000 0001 01 25169733 /tmp/d/bound.sock
0000000072cf6440: 00000002 00000000 00000000 0002 01 25169734
`
	for path, want := range map[string]bool{"/tmp/d/passt.sock": true, "/tmp/d/other.sock": false, "/tmp/d/bound.sock": false, "/tmp/d/none": false} {
		if got := unixListening(table, path); got != want {
			t.Errorf("%s: listening %v, want %v", path, got, want)
		}
	}
	if _, err := SocketListening(-1, "/x"); err == nil {
		t.Error("no process: no error")
	}
}

// TestGuestScriptsSyntax runs busybox sh -n on the guest's scripts, the
// shell that runs them, if busybox is installed.
func TestGuestScriptsSyntax(t *testing.T) {
	if _, err := os.Stat(Busybox); err != nil {
		t.Skipf("no %s: %v", Busybox, err)
	}
	for name, script := range map[string][]byte{"init": initScript, "udhcpc.script": udhcpcScript} {
		cmd := exec.Command(Busybox, "sh", "-n")
		cmd.Stdin = bytes.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	if !bytes.HasPrefix(initScript, []byte("#!/bin/sh\n")) {
		t.Error("init does not start with #!/bin/sh")
	}
}
