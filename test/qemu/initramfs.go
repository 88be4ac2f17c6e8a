// initramfs.go: the guest's initramfs, built from busybox-static, the
// guest scripts embedded from guest/, and the kernel's network modules.

package qemu

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Busybox is where Debian's busybox-static installs its static busybox: the
// only program in the guest (its applets are its links).
const Busybox = "/bin/busybox"

// The guest's scripts, embedded so that the initramfs needs no file of the
// source tree at run time.
var (
	//go:embed guest/init
	initScript []byte
	//go:embed guest/udhcpc.script
	udhcpcScript []byte
)

// Initramfs says what goes into the guest's initramfs.
type Initramfs struct {
	// Busybox is a statically linked busybox (default Busybox).
	Busybox string
	// Modules are the module files to load, in load order (see
	// Kernel.ModuleFiles).
	Modules []string
}

// Build writes the initramfs to path (a gzip-compressed newc cpio, mode
// 0644 so that an unprivileged qemu can read it) and returns its size. The
// archive holds /init, /etc/udhcpc.script, /bin/busybox with /bin/sh
// linked to it (the other applets are linked by /init), the modules under
// /lib/modules/ with /etc/modules.load listing their file names in load
// order, the mount points, and /dev/console: the kernel opens it for
// init's standard streams before anything could mount devtmpfs.
func (o Initramfs) Build(path string) (int64, error) {
	bb := o.Busybox
	if bb == "" {
		bb = Busybox
	}
	bbData, err := os.ReadFile(bb)
	if err != nil {
		return 0, fmt.Errorf("busybox (install busybox-static: test/setup): %w", err)
	}
	// A dynamically linked busybox would find no C library in the guest.
	if bytes.Contains(bbData, []byte("/lib64/ld-linux")) {
		return 0, fmt.Errorf("%s is dynamically linked: the guest needs busybox-static's", bb)
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return 0, err
	}
	c := newCpioWriter(zw)
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"} {
		c.dir(d, 0o755)
	}
	c.charDev("dev/console", 0o600, 5, 1)
	c.charDev("dev/null", 0o666, 1, 3)
	c.file("bin/busybox", 0o755, bbData)
	c.symlink("bin/sh", "busybox")
	c.file("init", 0o755, initScript)
	c.file("etc/udhcpc.script", 0o755, udhcpcScript)
	var load strings.Builder
	seen := map[string]bool{}
	for _, m := range o.Modules {
		base := filepath.Base(m)
		if seen[base] {
			return 0, fmt.Errorf("two modules named %s", base)
		}
		seen[base] = true
		data, err := os.ReadFile(m)
		if err != nil {
			return 0, fmt.Errorf("module: %w", err)
		}
		c.file("lib/modules/"+base, 0o644, data)
		load.WriteString(base + "\n")
	}
	c.file("etc/modules.load", 0o644, []byte(load.String()))
	if err := c.Close(); err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	// WriteFile's mode is filtered by the umask: make it 0644 whatever it is.
	if err := os.Chmod(path, 0o644); err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	return int64(buf.Len()), nil
}
