// kernel.go: the guest's kernel (an image under /boot whose modules are
// installed) and the modules it needs for a virtio network card, with their
// dependencies, from modules.dep.

package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// NetModules are the modules the guest loads for its network card: the
// PCI transport of virtio and the virtio network driver (which needs
// virtio, virtio_ring, net_failover and failover on Debian's kernel).
// Those the kernel has built in are left out.
var NetModules = []string{"virtio_pci", "virtio_net"}

// Kernel is a kernel image and the directory of its modules.
type Kernel struct {
	Version    string // e.g. 6.1.0-57-amd64
	Image      string // /boot/vmlinuz-VERSION
	ModulesDir string // /lib/modules/VERSION
}

// FindKernel returns the kernel to boot: of the images /boot/vmlinuz-*
// (Debian's linux-image-*) whose modules.dep is installed, the one with the
// greatest version (compared as in sort -V). It returns an error naming
// what is missing if there is none, or the image is not readable.
func FindKernel() (Kernel, error) {
	return findKernel("/boot", "/lib/modules")
}

// findKernel is FindKernel with the image and modules directories as
// parameters, for tests.
func findKernel(boot, modules string) (Kernel, error) {
	images, err := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	if err != nil {
		return Kernel{}, err
	}
	var found []Kernel
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		k := Kernel{Version: v, Image: img, ModulesDir: filepath.Join(modules, v)}
		if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err == nil {
			found = append(found, k)
		}
	}
	if len(found) == 0 {
		return Kernel{}, fmt.Errorf("no kernel image %s/vmlinuz-* with its modules in %s (install linux-image-amd64: test/setup)", boot, modules)
	}
	slices.SortFunc(found, func(a, b Kernel) int { return versionCompare(a.Version, b.Version) })
	k := found[len(found)-1]
	f, err := os.Open(k.Image)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel image: %w", err)
	}
	f.Close()
	return k, nil
}

// versionCompare compares version strings a and b as sort -V does, in
// short: runs of digits by value, everything else byte by byte. It returns
// -1, 0 or 1.
func versionCompare(a, b string) int {
	for a != "" && b != "" {
		da, ra := leadingDigits(a)
		db, rb := leadingDigits(b)
		if da != "" && db != "" {
			da, db = strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
			if c := len(da) - len(db); c != 0 {
				return sign(c)
			}
			if c := strings.Compare(da, db); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return sign(int(a[0]) - int(b[0]))
		}
		a, b = a[1:], b[1:]
	}
	return sign(len(a) - len(b))
}

// leadingDigits splits s into its leading run of ASCII digits and the rest.
func leadingDigits(s string) (string, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// sign returns -1, 0 or 1 as n is negative, zero or positive.
func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// ModuleFiles returns the files (absolute paths) of the modules names and
// of everything they depend on, in an order in which insmod can load them
// (every dependency before its users, each once), from the kernel's
// modules.dep. A name the kernel has built in (modules.builtin) adds
// nothing; a name it knows neither way is an error, as is a compressed
// module (busybox's insmod loads plain .ko files only).
func (k Kernel) ModuleFiles(names ...string) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(k.ModulesDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, err := readModulesBuiltin(filepath.Join(k.ModulesDir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for rel := range deps {
		byName[moduleName(rel)] = rel
	}
	var order []string
	seen := map[string]bool{}
	// visit adds rel after its dependencies. modules.dep is a flat,
	// complete list per module already, but recursing makes the order
	// right whatever order depmod wrote it in; the depth bound guards
	// against a malformed file with a cycle.
	var visit func(rel string, depth int) error
	visit = func(rel string, depth int) error {
		if seen[rel] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("modules.dep: dependencies of %s nest too deep (a cycle?)", rel)
		}
		for _, d := range deps[rel] {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		seen[rel] = true
		order = append(order, rel)
		return nil
	}
	for _, n := range names {
		n = normModName(n)
		rel, ok := byName[n]
		if !ok {
			if builtin[n] {
				continue
			}
			return nil, fmt.Errorf("kernel %s has no module %s, built in or not", k.Version, n)
		}
		if err := visit(rel, 0); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(order))
	for _, rel := range order {
		if !strings.HasSuffix(rel, ".ko") {
			return nil, fmt.Errorf("module %s is compressed: the guest's busybox insmod loads plain .ko files only", rel)
		}
		out = append(out, filepath.Join(k.ModulesDir, rel))
	}
	return out, nil
}

// readModulesDep parses modules.dep: lines "kernel/a.ko: kernel/b.ko
// kernel/c.ko", a module and the modules it needs, paths relative to the
// modules directory. It returns them as a map, or an error for a
// malformed line.
func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("%s:%d: no \"module:\" in %q", path, n, line)
		}
		deps[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return deps, nil
}

// readModulesBuiltin returns the names of the modules listed in
// modules.builtin (one path a line); a missing file is an empty list.
func readModulesBuiltin(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, line := range strings.Fields(string(b)) {
		out[moduleName(line)] = true
	}
	return out, nil
}

// moduleName returns the name of the module in file rel
// (kernel/drivers/net/virtio_net.ko.xz: virtio_net).
func moduleName(rel string) string {
	base := filepath.Base(rel)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return normModName(base)
}

// normModName returns module name n with dashes as underscores: the kernel
// treats the two as the same in module names.
func normModName(n string) string { return strings.ReplaceAll(n, "-", "_") }
