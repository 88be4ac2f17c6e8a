// The end-to-end smoke test: the quick profile's smallest case (loopback,
// TCP for 1 s) through the whole harness, namespace and all.

package harness

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"gopasst/bench/report"
)

// TestMain lets the test binary serve as the harness's inner process and
// as the rr tool, as the bench command does.
func TestMain(m *testing.M) {
	Dispatch()
	os.Exit(m.Run())
}

func TestSmokeLoopbackTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the harness creates network namespaces")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed (test/setup installs it)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	start := time.Now()
	err = Run(Options{Bin: root, Profile: "quick", Only: []string{"loopback"}, Tests: []string{"tcp4-out"},
		Reps: 1, TCPSecs: 1, OutDir: out, Command: "smoke test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run took %v", time.Since(start))
	md, err := os.ReadFile(filepath.Join(out, report.FileMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\| loopback \| [0-9]+(\.[0-9]+)? \|`).Match(md) {
		t.Errorf("no loopback figure in the table:\n%s", md)
	}
	for _, f := range []string{report.FileJSON, report.FileSamples, report.FileSummary, report.FileHTML} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	// The uplink pair lived in the run's namespace, which is gone.
	if _, err := net.InterfaceByName("up0"); err == nil {
		t.Error("up0 exists in the test's namespace: the run was not isolated")
	}
}
