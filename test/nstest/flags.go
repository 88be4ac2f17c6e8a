// flags.go: the command line flags every integration test binary accepts
// (-bin, -peer), and what they select.

package nstest

import (
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// DebianPasta is where Debian's package passt installs pasta, the reference
// implementation the harness self-test runs against.
const DebianPasta = "/usr/bin/pasta"

var (
	binFlag = flag.String("bin", "",
		"directory holding the built passt and pasta binaries (make integration passes the top of the tree)")
	peerFlag = flag.String("peer", "debian",
		"which pasta the harness self-tests drive: debian ("+DebianPasta+"), gopasst (-bin DIR/pasta) or both")
)

func init() {
	// Keep the main goroutine on the main thread: Do runs code on a
	// thread that enters another network namespace and is then thrown away
	// (never unlocked). Were that thread the main one, the runtime could
	// not end it and it would keep the namespace alive after the test.
	runtime.LockOSThread()
}

// BinDir returns the absolute directory given with -bin, or "" if the flag
// was not given.
func BinDir() string {
	if *binFlag == "" {
		return ""
	}
	if abs, err := filepath.Abs(*binFlag); err == nil {
		return abs
	}
	return *binFlag
}

// Binary returns the path of gopasst's binary name ("passt", "pasta") in
// the -bin directory. It skips the test, with the reason, if -bin was not
// given or the file is not there.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir := BinDir()
	if dir == "" {
		t.Skipf("no -bin DIR given: cannot find gopasst's %s (run `make integration`, or go test ./test/... -args -bin DIR)", name)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("gopasst's %s not found (%v): build it with make", name, err)
	}
	return p
}

// Peer is one pasta implementation a test can run against.
type Peer struct {
	Name  string // "debian" or "gopasst"
	Pasta string // path of its pasta binary
}

// Peers returns the pasta implementations selected with -peer, in the
// order debian, gopasst. A selected implementation whose binary is missing
// is left out with a log line (gopasst's when -bin is not given).
func Peers(t testing.TB) []Peer {
	t.Helper()
	var out []Peer
	sel := *peerFlag
	if sel == "debian" || sel == "both" {
		if _, err := os.Stat(DebianPasta); err == nil {
			out = append(out, Peer{Name: "debian", Pasta: DebianPasta})
		} else {
			t.Logf("Debian's pasta not installed (%v): run test/setup", err)
		}
	}
	if sel == "gopasst" || sel == "both" {
		if dir := BinDir(); dir == "" {
			t.Logf("-peer %s: no -bin DIR given, gopasst's pasta left out", sel)
		} else if p := filepath.Join(dir, "pasta"); fileExists(p) {
			out = append(out, Peer{Name: "gopasst", Pasta: p})
		} else {
			t.Logf("-peer %s: %s not found, gopasst's pasta left out", sel, p)
		}
	}
	if sel != "debian" && sel != "gopasst" && sel != "both" {
		t.Fatalf("-peer %q: want debian, gopasst or both", sel)
	}
	return out
}

// fileExists reports whether path names an existing file.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
