package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/klauspost/cpuid/v2"
)

// optimisedSuffix names the build made with GOAMD64=v3 (AVX2, BMI2, FMA...),
// installed next to the plain one as the C original installs passt.avx2.
const optimisedSuffix = ".avx2"

// deferredOptimised is the optimised build the sandboxed process is to be
// started from (isolation.Config.Exe), "" for none: set by execOptimised
// when it leaves the switch to that start.
var deferredOptimised string

// execOptimised re-executes the program as its optimised build, as the C
// original's arch_avx2_exec() does: if the CPU can run x86-64-v3 code, the
// running executable is not already the optimised build, and
// "<executable>.avx2" exists beside it, exec that file with the same argv and
// environment. It returns only if there is nothing to do, the exec failed
// (then the current build simply continues), or the exec is deferred.
//
// Deferred: an invocation that runs the translator (anything but the
// queries below) only parses options and supervises in this process; the
// work happens in the sandboxed process it starts with a second exec
// (isolation.User). That one is started from the optimised build instead,
// which saves a whole Go start-up, a tenth of pasta's start-up time (9 ms
// of 70, "pasta --config-net -f -- true", bench/README.md). Queries
// (--version, --help...) have no second exec and switch here, so that
// --version names the build that would run.
//
// /proc/self/exe names the real file even when we were started through the
// pasta symlink, while argv[0] keeps the name that selects the mode, so the
// optimised build still knows whether it is passt or pasta.
func execOptimised(args []string) {
	target := optimisedBuild()
	if target == "" {
		return
	}
	if !isQuery(args) {
		deferredOptimised = target
		return
	}
	// An argv[0] naming the plain build keeps its name: the mode comes from
	// it. Only the file executed changes.
	_ = syscall.Exec(target, os.Args, os.Environ())
	// Exec failed: carry on with this build.
}

// optimisedBuild returns the path of the optimised build to switch to, ""
// if none applies (see execOptimised; GOPASST_NO_AVX2_EXEC set disables it).
func optimisedBuild() string {
	if buildLevel == "v3" || os.Getenv("GOPASST_NO_AVX2_EXEC") != "" {
		return ""
	}
	if !cpuid.CPU.Supports(cpuid.AVX2, cpuid.BMI1, cpuid.BMI2, cpuid.FMA3, cpuid.LZCNT, cpuid.MOVBE, cpuid.OSXSAVE, cpuid.F16C) {
		return ""
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil || strings.HasSuffix(exe, optimisedSuffix) {
		return ""
	}
	target := exe + optimisedSuffix
	if st, err := os.Stat(target); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return target
}

// isQuery reports whether args ask for information only (the options that
// print and exit), so that no sandboxed process will be started.
func isQuery(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-h", "--help", "--print-capabilities", "--print-seccomp":
			return true
		}
	}
	return false
}

// buildName describes the running build for --version and --debug.
func buildName() string {
	if buildLevel == "v3" {
		return "x86-64-v3 (avx2) build"
	}
	exe, _ := os.Readlink("/proc/self/exe")
	return "generic build (" + filepath.Base(exe) + ")"
}
