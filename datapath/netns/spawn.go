// Spawning the command's namespaces: the "namespace init" child, its
// release, and its exit status.

package netns

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
)

// Environment of the namespace init role (see RunInitRole).
const (
	envInit     = "GOPASST_NSINIT"          // set: this process is the namespace init
	envHostname = "GOPASST_NSINIT_HOSTNAME" // hostname to set in the new UTS namespace
)

// releaseByte is written on the release pipe when the command may start.
const releaseByte = 'G'

// spawn starts the namespace init: a re-exec of ourselves, cloned into new
// network, PID, mount, UTS and IPC namespaces owned by our user namespace
// (so that we can enter its network namespace), which prepares them and
// waits for Release before executing the command.
func (ns *NS) spawn(cfg *config.Config) error {
	hostname := cfg.Hostname
	if hostname == "" {
		h, _ := os.Hostname()
		hostname = "pasta-" + h
	}
	if len(hostname) > 64 {
		hostname = hostname[:64]
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("netns: release pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", cfg.Command...)
	cmd.Args = append([]string{"pasta-nsinit"}, cfg.Command...)
	cmd.Env = append(os.Environ(), envInit+"=1", envHostname+"="+hostname)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{r} // fd 3
	pidfd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNET | unix.CLONE_NEWPID | unix.CLONE_NEWNS |
			unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
		// Until released, the command's namespaces die with us.
		Pdeathsig: unix.SIGKILL,
		PidFD:     &pidfd,
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("netns: starting the namespace for the command: %w", err)
	}
	if pidfd < 0 {
		cmd.Process.Kill()
		w.Close()
		return fmt.Errorf("netns: no pidfd for the command (Linux 5.3 or later needed)")
	}
	ns.child, ns.pidfd, ns.release = cmd.Process, pidfd, w
	return nil
}

// Release lets the spawned command start: called once set-up and the
// isolation stages are complete, as the C original sends SIGUSR1. It does
// nothing for an attached namespace. It returns an error if the command's
// process is already gone.
func (ns *NS) Release() error {
	if ns.release == nil {
		return nil
	}
	_, err := ns.release.Write([]byte{releaseByte})
	ns.release.Close()
	ns.release = nil
	if err != nil {
		return fmt.Errorf("netns: releasing the command: %w", err)
	}
	return nil
}

// ChildPID returns the spawned command's PID as we see it, 0 if none.
func (ns *NS) ChildPID() int {
	if ns.child == nil {
		return 0
	}
	return ns.child.Pid
}

// reap collects the spawned command's status if it has exited.
func (ns *NS) reap() (bool, int) {
	// siginfo_t: si_signo, si_errno, si_code, padding, then si_pid,
	// si_uid, si_status for SIGCHLD.
	var info [128]byte
	_, _, errno := unix.Syscall6(unix.SYS_WAITID, unix.P_PIDFD, uintptr(ns.pidfd),
		uintptr(unsafePointer(&info[0])), unix.WEXITED|unix.WNOHANG, 0, 0)
	if errno == unix.EINTR || errno == unix.EAGAIN {
		return false, 0
	}
	if errno != 0 {
		return true, 1
	}
	pid := int32(le32(info[16:]))
	if pid == 0 {
		return false, 0 // not exited yet
	}
	code := int32(le32(info[8:]))
	status := int(int32(le32(info[24:])))
	if code == cldExited {
		return true, status
	}
	return true, 128 + status
}

// cldExited is si_code for a child that called exit (CLD_EXITED).
const cldExited = 1

// le32 reads a little-endian (native on every architecture we build for)
// 32-bit value.
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
