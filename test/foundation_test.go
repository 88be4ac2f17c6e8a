package test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/cpuid/v2"

	"gopasst/test/nstest"
)

// runBin runs a built binary and returns its stdout, stderr and exit code.
func runBin(t *testing.T, path string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out.String(), errb.String(), code
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

// TestFoundationCommandLine checks the first done-when items on the
// built binaries: help per mode, version, one-line errors with status 1.
func TestFoundationCommandLine(t *testing.T) {
	passt := nstest.Binary(t, "passt")
	dir := filepath.Dir(passt)
	out, _, code := runBin(t, filepath.Join(dir, "pasta"), "--help")
	if code != 0 || !strings.Contains(out, "Usage: pasta") {
		t.Errorf("pasta --help: status %d, output %q", code, firstLine(out))
	}
	if _, err := os.Stat(filepath.Join(dir, "pasta.avx2")); err == nil {
		out, _, code = runBin(t, filepath.Join(dir, "pasta.avx2"), "--help")
		if code != 0 || !strings.Contains(out, "Usage: pasta") {
			t.Errorf("pasta.avx2 --help: status %d, output %q", code, firstLine(out))
		}
	}
	out, _, code = runBin(t, passt, "--help")
	if code != 0 || !strings.Contains(out, "Usage: passt") {
		t.Errorf("passt --help: status %d, output %q", code, firstLine(out))
	}
	for _, args := range [][]string{{"--bogus"}, {"-t", "80-"}, {"--mtu", "abc"}, {"-T", "80"}} {
		_, errOut, code := runBin(t, passt, args...)
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		if code != 1 || len(lines) != 1 || lines[0] == "" {
			t.Errorf("passt %v: status %d, stderr %q: want one line and status 1", args, code, errOut)
		}
		if args[0] == "-t" && !strings.Contains(errOut, "80-") {
			t.Errorf("passt -t 80-: error does not name the spec: %q", errOut)
		}
	}
}

// TestFoundationOptimisedExec checks the re-exec into passt.avx2: with the
// optimised build beside the plain one (and a CPU that runs it), --version
// names the v3 build; without it, the plain one.
func TestFoundationOptimisedExec(t *testing.T) {
	passt := nstest.Binary(t, "passt")
	avx2 := passt + ".avx2"
	if _, err := os.Stat(avx2); err != nil {
		t.Skip("no passt.avx2 built (not amd64)")
	}
	tmp := t.TempDir()
	copyFile(t, passt, filepath.Join(tmp, "passt"))
	out, _, code := runBin(t, filepath.Join(tmp, "passt"), "--version")
	if code != 0 || !strings.Contains(out, "generic build") {
		t.Errorf("without passt.avx2: status %d, --version %q", code, out)
	}
	copyFile(t, avx2, filepath.Join(tmp, "passt.avx2"))
	out, _, code = runBin(t, filepath.Join(tmp, "passt"), "--version")
	want := "generic build"
	if cpuid.CPU.Supports(cpuid.AVX2, cpuid.BMI1, cpuid.BMI2, cpuid.FMA3) {
		want = "x86-64-v3 (avx2) build"
	}
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("with passt.avx2: status %d, --version %q, want %q", code, out, want)
	}
	// Invoked through a pasta symlink, the optimised build keeps pasta mode.
	if err := os.Symlink("passt", filepath.Join(tmp, "pasta")); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runBin(t, filepath.Join(tmp, "pasta"), "--help")
	if !strings.Contains(out, "Usage: pasta") {
		t.Errorf("pasta via the re-exec: %q", firstLine(out))
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
