package test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// TestStartupSandboxedProcess checks the two start-up savings of the
// sandboxed process (bench/README.md, "start-up"): with passt.avx2 beside
// the plain build (and a CPU that runs it), the sandboxed process is
// started from passt.avx2 directly, the invoked plain build never
// switching to it itself (one Go start-up fewer); and its descriptor table
// was sized at start, before its runtime had threads (FDSize in
// /proc/PID/status: 1024, or the descriptor limit if lower), so that the
// ~300 descriptors of set-up cost no RCU grace period. Then the command
// exits and pasta with it.
func TestStartupSandboxedProcess(t *testing.T) {
	nstest.RequireRoot(t)
	pasta := nstest.Binary(t, "pasta")
	avx2 := filepath.Join(filepath.Dir(pasta), "passt.avx2")
	want := "passt"
	if _, err := os.Stat(avx2); err == nil && cpuid.CPU.Supports(cpuid.AVX2, cpuid.BMI1, cpuid.BMI2, cpuid.FMA3, cpuid.LZCNT, cpuid.MOVBE, cpuid.F16C) {
		want = "passt.avx2"
	}
	h := nstest.NewHost(t)
	proc := h.Start(t, pasta, "-f", "--config-net", "--runas", "0", "-q", "--", "sleep", "600")
	var sandboxed int
	nstest.WaitForErr(t, nstest.ReadyTimeout, func() error {
		if proc.Exited() {
			t.Fatalf("pasta exited early:\n%s", proc.Output())
		}
		sleep, err := spawnedChild(proc.PID(), "sleep", h.Path())
		if err != nil {
			return err
		}
		// sleep's parent is the sandboxed process (its namespace init,
		// pasta-nsinit, exec'd into it).
		f := statFieldsOf(t, sleep)
		sandboxed, err = strconv.Atoi(f[1])
		return err
	})
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", sandboxed))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(exe) != want {
		t.Errorf("sandboxed process %d runs %s, want %s", sandboxed, exe, want)
	}
	if inv, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", proc.PID())); filepath.Base(inv) != "passt" {
		t.Errorf("the invoked process runs %s: it switched builds itself", inv)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", sandboxed))
	if err != nil {
		t.Fatal(err)
	}
	var fdsize int
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "FDSize:"); ok {
			fdsize, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if wantFD := int(min(lim.Cur, 1024)); fdsize < wantFD {
		t.Errorf("sandboxed process: FDSize %d, want at least %d (sized at start)", fdsize, wantFD)
	}
	t.Logf("sandboxed process %d: %s, FDSize %d", sandboxed, exe, fdsize)
}

// statFieldsOf returns the fields of /proc/PID/stat after the command
// name: state, parent, ...
func statFieldsOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return f
}
