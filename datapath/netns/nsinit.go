// The namespace init role: the first process of the command's namespaces,
// before it becomes the command.

package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunInitRole runs the namespace init role if this process is one, and
// then never returns; otherwise it returns false at once. main calls it
// first thing, before anything else touches descriptors or capabilities:
//
//	if netns.RunInitRole() { return }
//
// The role, as the C original's child: makes its mounts private, mounts a
// fresh /proc for its PID namespace, sets the hostname, lets every group
// use ping sockets in the new network namespace ("0 0" in
// ping_group_range, so the command can ping), waits for pasta's release,
// clears its parent-death signal and executes the command, or the user's
// $SHELL (else /bin/sh) as a login shell.
func RunInitRole() bool {
	if os.Getenv(envInit) == "" {
		return false
	}
	hostname := os.Getenv(envHostname)
	os.Unsetenv(envInit)
	os.Unsetenv(envHostname)

	warn := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "pasta: "+format+"\n", args...)
	}
	// Private first, or the new /proc would propagate to pasta's own mount
	// namespace, which shares peer groups with ours.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		warn("making mounts private: %v", err)
	} else if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		warn("mounting /proc: %v", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		warn("setting hostname: %v", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
		warn("ping_group_range: %v", err)
	}

	// Wait for the release. End of file without it: pasta failed, and
	// its parent-death signal is on its way.
	var b [1]byte
	release := os.NewFile(3, "release")
	if n, _ := release.Read(b[:]); n != 1 || b[0] != releaseByte {
		os.Exit(1)
	}
	release.Close()
	unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0)

	argv := os.Args[1:]
	if len(argv) == 0 {
		shell := os.Getenv("SHELL")
		if shell == "" {
			shell = "/bin/sh"
		}
		// A login shell: argv[0] starts with '-'.
		err := syscall.Exec(shell, []string{"-" + filepath.Base(shell)}, os.Environ())
		warn("Failed to start command or shell: %s: %v", shell, err)
		os.Exit(1)
	}
	path, err := exec.LookPath(argv[0])
	if err == nil {
		err = syscall.Exec(path, argv, os.Environ())
	}
	warn("Failed to start command or shell: %s: %v", argv[0], err)
	os.Exit(1)
	return true
}
