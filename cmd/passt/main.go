// Command passt is gopasst: user-mode networking for qemu VMs (passt mode)
// and network namespaces (pasta mode, when invoked as "pasta").
//
// Start-up order, as in the C original:
//
//  1. execOptimised: re-exec into passt.avx2 where the CPU allows it (or,
//     where a sandboxed process follows, start that one from passt.avx2).
//  2. isolation.Initial: drop capabilities nothing later needs.
//  3. parseOptions, host discovery: build the configuration.
//  4. isolation.User: final UID/GID and user namespace.
//  5. set-up: the guest back end (tap, qemu socket), listening sockets, pcap,
//     pid and log files: everything the event loop will use.
//  6. isolation.Prefork: empty root, IPC/UTS/mount(/PID) namespaces,
//     daemonise.
//  7. isolation.Postfork: not dumpable, seccomp.
//  8. the event loop.
package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
)

// version is set at build time from git describe (see the Makefile).
var version = "unknown"

func init() {
	// Keep the main goroutine on the main thread through set-up (start-up
	// roles, namespaces, the sandbox, children whose parent-death signal
	// follows the thread that started them); run unlocks it just before the
	// event loop, which runs faster unlocked (run.go says why).
	runtime.LockOSThread()
}

// modeFromName returns the operating mode for the name the program was
// invoked by: "pasta" and "pasta.avx2" (any path) run pasta mode, anything
// else passt mode, as the C original decides.
func modeFromName(argv0 string) config.Mode {
	if strings.HasPrefix(filepath.Base(argv0), "pasta") {
		return config.ModePasta
	}
	return config.ModePasst
}

func main() {
	setProcName()
	if runRole() {
		return
	}
	execOptimised(os.Args[1:])
	os.Exit(run(modeFromName(os.Args[0]), os.Args[1:]))
}

// setProcName names this process as it was invoked ("pasta", "passt",
// "pasta.avx2"...), for ps, top, pidof and systemd: our re-executions run
// /proc/self/exe, whose name, the kernel's default for the process, is
// "exe". argv[0], which every re-execution keeps, says what we are.
func setProcName() {
	name := filepath.Base(os.Args[0])
	if name == "" || name == "." || name == "/" {
		return
	}
	b := make([]byte, min(len(name), 15)+1) // TASK_COMM_LEN: 15 bytes and the NUL
	copy(b, name)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
}
