// Package layers checks, over `go list` of the whole module, that the
// package layering of doc/HACKING.md holds: which package may import which.
// `make check` runs it (target layers) before the unit tests, so that an
// arrow running the wrong way fails the build where it is added.
package layers

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// module is the module path; every project package starts with it.
const module = "gopasst"

// pkg is what `go list -json` says of one package that the rules read.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// list returns every package of the module.
func list(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// rel returns path relative to the module ("datapath/tcp"), and whether it
// is a project package at all.
func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// under reports whether project package r is dir or below it.
func under(r, dir string) bool { return r == dir || strings.HasPrefix(r, dir+"/") }

// leaves are the packages that import no project package at all: the
// checksum kernels, the batch structures, the allow-list registry (the one
// package of isolation the datapath may use), and the namespace helper of
// the tests.
var leaves = []string{"checksum", "batch", "isolation/allow", "test/nstest"}

// check returns why importing imp from package from breaks the rules, or
// "" if it may. test tells whether the import is made by the package's
// tests only (TestImports, XTestImports).
func check(from, imp string, test bool) string {
	for _, l := range leaves {
		if from == l {
			return from + " is a leaf: it imports no package of the project"
		}
	}
	switch {
	case under(imp, "cmd"):
		return "a command is imported by nobody"
	case under(imp, "test") && !under(from, "test"):
		if test && imp == "test/nstest" {
			return "" // a leaf helper any test may use
		}
		return "test/ holds tests and their helpers, imported by tests under test/ only"
	case under(imp, "bench") && !under(from, "bench"):
		return "bench/ is imported by bench/ only"
	case strings.HasSuffix(imp, "test") && imp != "test" && !test && !under(from, "test"):
		// taptest, configtest: fakes for tests, never for the program.
		return "a test helper package is imported by tests only"
	}
	switch {
	case under(from, "isolation"):
		if under(imp, "datapath") {
			return "isolation imports no datapath package"
		}
	case under(from, "datapath"):
		if !under(imp, "datapath") && imp != "batch" && imp != "checksum" && imp != "isolation/allow" {
			return "datapath imports nothing outside datapath but batch, checksum and isolation/allow"
		}
		if imp == "datapath/engine" && !test {
			return "the engine assembles the datapath: only cmd/ and test/ import it"
		}
	}
	return ""
}

// TestLayers checks every import of every package, its tests' included,
// against check.
func TestLayers(t *testing.T) {
	for _, p := range list(t) {
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		for _, set := range []struct {
			imports []string
			test    bool
		}{{p.Imports, false}, {p.TestImports, true}, {p.XTestImports, true}} {
			for _, i := range set.imports {
				imp, ok := rel(i)
				if !ok || imp == from {
					continue
				}
				if why := check(from, imp, set.test); why != "" {
					kind := "imports"
					if set.test {
						kind = "tests import"
					}
					t.Errorf("%s %s %s: %s", from, kind, imp, why)
				}
			}
		}
	}
}

// TestCheck makes sure the rules catch the arrows they are for: the ones
// the tree had before the rules (isolation importing the configuration,
// the datapath importing isolation, a stage harness importing pasta's
// namespace code) and a few more.
func TestCheck(t *testing.T) {
	for _, c := range []struct {
		from, imp string
		test, bad bool
	}{
		{"isolation", "datapath/config", false, true},
		{"isolation/internal/stagetest", "datapath/netns", false, true},
		{"datapath/udp", "isolation", false, true},
		{"datapath/udp", "isolation/allow", false, false},
		{"datapath/tcp", "datapath/engine", false, true},
		{"datapath/tcp", "datapath/engine", true, false},
		{"datapath/engine", "datapath/tap/taptest", false, true},
		{"datapath/engine", "datapath/tap/taptest", true, false},
		{"checksum", "datapath/header", false, true},
		{"batch", "datapath/sys", false, true},
		{"isolation/allow", "isolation", false, true},
		{"cmd/passt", "datapath/engine", false, false},
		{"datapath/udp", "test/nstest", true, false},
		{"datapath/udp", "test/nstest", false, true},
		{"test/stagetest", "datapath/engine", false, false},
		{"datapath/loop", "cmd/passt", false, true},
		{"datapath/sys", "bench/rr", false, true},
	} {
		if got := check(c.from, c.imp, c.test) != ""; got != c.bad {
			t.Errorf("%s -> %s (test %v): refused %v, want %v", c.from, c.imp, c.test, got, c.bad)
		}
	}
}
