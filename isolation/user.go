// Stage 2, user: final IDs, the user namespace, and the sandboxed process
// created together with the namespaces stage 3 uses.

package isolation

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
	"gopasst/isolation/nsenter"
)

// readyByte is what the sandboxed process writes on the status pipe once
// stage 3 is done (see Prefork).
const readyByte = 'R'

// carried are the openers registered with Carry, in order.
var carried []struct {
	name string
	open func() (*os.File, error)
}

// Carry hands a descriptor to the sandboxed process, which could not open
// it itself: something that needs the invoking user's privileges (a raw
// ICMP socket or a file in a root-only directory, when started as root),
// or that must be opened from the initial user namespace (the target
// network namespace of pasta --netns). Register before calling User.
//
// In the invoked process, open is called by User (after joining a user
// namespace, if one is to be joined) and Carry returns nil, nil: that
// process only supervises after User. In the sandboxed process open is not
// called: Carry returns the descriptor the invoked process opened, or nil if
// its open returned nil. name must be unique and contain none of ",:;".
func Carry(name string, open func() (*os.File, error)) (*os.File, error) {
	if !inherited.sandbox {
		carried = append(carried, struct {
			name string
			open func() (*os.File, error)
		}{name, open})
		return nil, nil
	}
	if inherited.used[name] {
		return nil, fmt.Errorf("isolation: %q carried twice", name)
	}
	inherited.used[name] = true
	fd, ok := inherited.files[name]
	if !ok {
		return nil, nil
	}
	return os.NewFile(uintptr(fd), name), nil
}

// inInitUserNS reports whether we are in the initial user namespace, as the
// C original tells: its uid_map maps every ID to itself.
func inInitUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return true
	}
	return strings.Join(strings.Fields(string(b)), " ") == "0 0 4294967295"
}

// FinalIDs returns the user and group gopasst runs as: --runas, else the
// invoking user, else, for root in the initial user namespace, nobody (as
// the C original: root has no business parsing guest traffic).
func FinalIDs(cfg *Config) (uid, gid int, err error) {
	if cfg.RunAsUID >= 0 {
		uid, gid = cfg.RunAsUID, cfg.RunAsGID
		if gid < 0 {
			gid = uid
			if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
				if g, err := strconv.Atoi(u.Gid); err == nil {
					gid = g
				}
			}
		}
		return uid, gid, nil
	}
	uid, gid = os.Geteuid(), os.Getegid()
	if uid != 0 || !inInitUserNS() {
		return uid, gid, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return 0, 0, fmt.Errorf("started as root: no user nobody to change to (use --runas): %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	slog.Info("Started as root, will change to nobody")
	return uid, gid, nil
}

// sandboxCaps is what the sandboxed process keeps from its start until
// stage 3: SYS_ADMIN to mount its empty root and, in pasta, to enter the
// target network namespace and create the command's namespaces; SETPCAP to
// clear its bounding set; NET_BIND_SERVICE for listeners on low ports;
// NET_ADMIN (pasta) to create and configure the tap device; SYS_PTRACE
// (pasta) to enter the command's namespace through its pidfd: the command
// holds every capability in our user namespace, more than we keep, and
// the kernel's ptrace access check asks for SYS_PTRACE then; SYS_CHROOT
// with --chroot-fallback.
func sandboxCaps(cfg *Config) CapSet {
	s := caps(unix.CAP_SYS_ADMIN, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE)
	if cfg.Mode == allow.Pasta {
		s |= caps(unix.CAP_NET_ADMIN, unix.CAP_SYS_PTRACE)
	}
	if cfg.ChrootFallback {
		s |= caps(unix.CAP_SYS_CHROOT) // Prefork's chroot, where pivot_root fails
	}
	return s
}

// plan is how the sandboxed process is created.
type plan struct {
	uid, gid   int  // final IDs, as seen from the invoked process
	newUserNS  bool // create a user namespace mapping 0 to uid/gid
	foreground bool
	cloneflags uintptr
}

// makePlan decides the plan for cfg from where we stand (see doc.go,
// "Processes", for the cases).
func makePlan(cfg *Config, uid, gid int) plan {
	p := plan{uid: uid, gid: gid, foreground: cfg.Foreground}
	p.cloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS
	if !(cfg.Mode == allow.Pasta && p.foreground) {
		p.cloneflags |= unix.CLONE_NEWPID
	}
	rootInit := os.Geteuid() == 0 && inInitUserNS()
	switch {
	case cfg.NetNS != "":
		// Attaching: the target network namespace belongs to a user
		// namespace we must have capabilities in, so stay in ours if we
		// can create the stage 3 namespaces here.
		st, err := getCaps()
		p.newUserNS = err != nil || !st.effective().Has(unix.CAP_SYS_ADMIN)
	default:
		// passt, or pasta spawning: a new user namespace, unless root
		// stays root (--runas 0), who already has every capability in any
		// namespace it creates.
		p.newUserNS = !(rootInit && uid == 0)
	}
	if p.newUserNS {
		p.cloneflags |= unix.CLONE_NEWUSER
	}
	return p
}

// User is stage 2, called once the options are parsed and the host
// discovered, after Carry registrations.
//
// Should:
//   - join the user namespace pasta is asked to attach to (--userns, or
//     that of pasta PID), unless we are root in the initial namespace, who
//     would lose host privileges: by re-executing ourselves through the
//     isolation/nsenter constructor, which joins before the runtime starts;
//   - settle the final UID/GID (FinalIDs), clear supplementary groups;
//   - start the sandboxed process with those IDs, in a new user namespace
//     where one is needed (mapping its UID 0 to the final IDs), and in the
//     IPC, UTS, mount and, unless pasta stays in the foreground, PID
//     namespaces that stage 3 completes: Go can only create namespaces for
//     a new process (see doc.go). The descriptors from Carry and --fd (at
//     its own number) are passed on; in the background it is a new session.
//     Until it is ready, the supervisor opens /dev/net/tun for it on
//     request (OpenTun), with the privileges the sandboxed process lacks.
//   - in the invoked process, supervise: relay SIGTERM, SIGINT, SIGHUP and
//     SIGQUIT, write the --pid file with the sandboxed process's PID once
//     it is ready, and either exit with its status (foreground) or exit 0
//     as soon as it is ready (daemon).
//
// Mustn't:
//   - remove filesystem access (set-up, in the sandboxed process, still
//     opens /dev/net/tun, /proc files, resolv.conf).
//
// It returns cont true in the sandboxed process, which goes on with set-up.
// In the invoked process it returns cont false and the status main exits
// with, or an error (exit 1) if the sandboxed process could not start.
func User(cfg *Config) (cont bool, status int, err error) {
	if inherited.sandbox {
		if _, err := nsenter.CapsNarrowed(); err != nil {
			return false, 1, err
		}
		if fd, ok := inherited.files[carryBroker]; ok {
			broker = fd
		}
		return true, 0, nil
	}
	joined, err := nsenter.Joined()
	if err != nil {
		return false, 1, err
	}
	if userns := cfg.UserNS; userns != "" && !joined {
		if os.Geteuid() == 0 && inInitUserNS() {
			slog.Info(fmt.Sprintf("Root in the initial user namespace: not joining %s", userns))
		} else if same, err := sameNS(userns, "/proc/self/ns/user"); err != nil {
			return false, 1, fmt.Errorf("user namespace %s: %w", userns, err)
		} else if !same {
			return false, 1, execJoin(userns)
		}
	}
	uid, gid, err := FinalIDs(cfg)
	if err != nil {
		return false, 1, err
	}
	return supervise(cfg, makePlan(cfg, uid, gid))
}

// sameNS reports whether two namespace files name the same namespace.
func sameNS(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// execJoin re-executes the program, asking the nsenter constructor to join
// the user namespace at path first. It returns only on failure.
func execJoin(path string) error {
	if !nsenter.Available {
		_, err := nsenter.Joined()
		if err == nil {
			err = errors.New("joining an existing user namespace needs a build with cgo")
		}
		return err
	}
	env := append(os.Environ(), nsenter.EnvUserNS+"="+path)
	err := syscall.Exec("/proc/self/exe", os.Args, env)
	return fmt.Errorf("re-executing to join user namespace %s: %w", path, err)
}

// supervise starts the sandboxed process as p says and watches it (see
// User for what it returns).
func supervise(cfg *Config, p plan) (bool, int, error) {
	var pidFile *os.File
	if cfg.PidFile != "" {
		f, err := os.OpenFile(cfg.PidFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return false, 1, fmt.Errorf("PID file: %w", err)
		}
		pidFile = f
		defer f.Close()
	}

	// Descriptors for the sandboxed process. ExtraFiles[i] becomes fd 3+i:
	// the --fd descriptor keeps its number, the others fill free slots.
	var extra []*os.File
	place := func(f *os.File, at int) int {
		if at < 3 {
			for at = 3; at-3 < len(extra) && extra[at-3] != nil; at++ {
			}
		}
		for len(extra) <= at-3 {
			extra = append(extra, nil)
		}
		extra[at-3] = f
		return at
	}
	if cfg.FD >= 0 {
		place(os.NewFile(uintptr(cfg.FD), "--fd"), cfg.FD)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return false, 1, fmt.Errorf("status pipe: %w", err)
	}
	statusFD := place(statusW, -1)
	files := map[string]int{}
	for _, c := range carried {
		f, err := c.open()
		if err != nil {
			return false, 1, err
		}
		if f == nil {
			continue
		}
		defer f.Close()
		files[c.name] = place(f, -1)
	}
	// Empty slots (nil) below --fd are simply closed in the child.
	brokerSup, brokerChild, err := newBroker()
	if err != nil {
		return false, 1, err
	}
	files[carryBroker] = place(brokerChild, -1)

	keep := sandboxCaps(cfg)
	exe := "/proc/self/exe"
	if cfg.Exe != "" {
		exe = cfg.Exe
	}
	cmd := exec.Command(exe)
	cmd.Args = os.Args
	cmd.Env = append(os.Environ(),
		envSandbox+"="+formatState(statusFD, keep, p.uid, p.gid, files),
		nsenter.EnvCaps+"="+strconv.FormatUint(uint64(keep), 16),
		nsenter.EnvFDTable+"="+strconv.Itoa(fdTableSize()))
	cmd.ExtraFiles = extra
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	attr := &syscall.SysProcAttr{Cloneflags: p.cloneflags, Setsid: !p.foreground}
	if p.foreground {
		// If we are killed, the sandboxed process ends too (cleanly:
		// SIGTERM). This thread, main's, lives as long as we do.
		attr.Pdeathsig = unix.SIGTERM
	}
	if p.newUserNS {
		// Written by us, the parent, as Go does: a process that has
		// already dropped to nobody could not write them (the C original
		// fails there when started as root).
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: p.uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: p.gid, Size: 1}}
		// Become the mapped 0 explicitly: a child of root would otherwise
		// keep its kernel UID 0, unmapped in there. setgroups is denied
		// in the new namespace.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
		if os.Geteuid() == 0 {
			// setgroups is denied inside the new namespace: clear ours
			// now so that it inherits none (root's group 0 above all).
			// Where our own namespace denies setgroups already (root of
			// an `unshare -r` namespace), nobody can change them, the
			// C original does not try, and only the groups mapped there
			// could be used anyway.
			if setgroupsDenied() {
				slog.Debug("supplementary groups kept: setgroups is denied in this user namespace")
			} else if err := syscall.Setgroups(nil); err != nil {
				return false, 1, fmt.Errorf("clearing supplementary groups: %w", err)
			}
		}
	} else {
		attr.Credential = &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.gid), Groups: []uint32{},
			// In a namespace with setgroups denied (one we joined,
			// made by unshare -r for instance) nobody can clear them.
			NoSetGroups: setgroupsDenied()}
		if p.uid != 0 {
			// Not root where it runs: execve would drop every
			// capability, so carry the stage 2 set as ambient ones.
			for c := 0; c < 64; c++ {
				if keep.Has(c) {
					attr.AmbientCaps = append(attr.AmbientCaps, uintptr(c))
				}
			}
		}
	}
	cmd.SysProcAttr = attr
	if !p.foreground {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return false, 1, err
		}
		defer devnull.Close()
		cmd.Stdin, cmd.Stdout = devnull, devnull
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT)
	if err := cmd.Start(); err != nil {
		statusR.Close()
		statusW.Close()
		brokerSup.Close()
		brokerChild.Close()
		return false, 1, fmt.Errorf("starting sandboxed process: %w", err)
	}
	statusW.Close()
	// Our copy of the child's end goes, so that the end of the child's
	// (Prefork, or its exit) ends the broker.
	brokerChild.Close()
	go serveBroker(brokerSup)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	slog.Debug(fmt.Sprintf("sandboxed process %d: uid %d gid %d, new user namespace %v, clone flags %#x",
		cmd.Process.Pid, p.uid, p.gid, p.newUserNS, p.cloneflags))

	// The ready byte, then the announcement if there is one, then the
	// end of the pipe (the sandboxed process closes it).
	ready, _ := io.ReadAll(io.LimitReader(statusR, 64<<10))
	statusR.Close()
	if len(ready) >= 1 && ready[0] == readyByte {
		if pidFile != nil {
			fmt.Fprintf(pidFile, "%d\n", cmd.Process.Pid)
			pidFile.Close()
		}
		// What the sandboxed process asked to say once it is ready
		// (passt's socket): after the PID file, as programs that start
		// us wait for both; on our stderr, which may be a pipe nobody
		// reads any more (libvirt's): a write error is ignored.
		if msg := ready[1:]; len(msg) > 0 {
			os.Stderr.Write(msg)
		}
		if !p.foreground {
			return false, 0, nil
		}
		dropSupervisor(p)
	}
	return false, waitStatus(cmd), nil
}

// fdTableSize returns how many descriptors the sandboxed process's table
// is sized for before its runtime starts (nsenter.EnvFDTable): 1024, or the
// descriptor limit if lower. The splice path's pools alone hold ~260 at the
// defaults; growing the table from Go costs an RCU grace period each time
// (see the constructor), which was a third of pasta's start-up.
func fdTableSize() int {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return int(min(lim.Cur, 1024))
}

// dropSupervisor gives the invoked process, which now only waits and relays
// signals, the final IDs too (all threads: the C library applies setuid to
// each). Failure is not fatal: this process parses nothing.
func dropSupervisor(p plan) {
	if os.Geteuid() != 0 || p.uid == 0 {
		return
	}
	if err := syscall.Setgid(p.gid); err != nil {
		slog.Debug(fmt.Sprintf("supervisor setgid: %v", err))
		return
	}
	if err := syscall.Setuid(p.uid); err != nil {
		slog.Debug(fmt.Sprintf("supervisor setuid: %v", err))
	}
}

// waitStatus waits for cmd and returns its exit status, 128 + the signal
// number if a signal ended it.
func waitStatus(cmd *exec.Cmd) int {
	err := cmd.Wait()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	slog.Error(fmt.Sprintf("waiting for sandboxed process: %v", err))
	return 1
}

// setgroupsDenied reports whether setgroups(2) is denied in our user
// namespace (/proc/self/setgroups says "deny").
func setgroupsDenied() bool {
	b, err := os.ReadFile("/proc/self/setgroups")
	return err == nil && strings.TrimSpace(string(b)) == "deny"
}
