// Stage 1, initial: capabilities nothing later needs, and leaked descriptors.

package isolation

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// initialKeep is what the invoked process may still need after stage 1,
// each for one later step:
//   - NET_BIND_SERVICE: host-side listeners on ports below
//     ip_unprivileged_port_start, when started as root and staying in the
//     initial user namespace;
//   - NET_RAW: raw ICMP sockets opened as root before dropping privileges
//     (Carry), where ping sockets are not allowed by ping_group_range;
//   - NET_ADMIN, SYS_ADMIN: entering the target network namespace and
//     configuring it, creating the stage 3 namespaces, mounting;
//   - SYS_PTRACE: opening /proc/PID/ns/* of a process owned by another user;
//   - SETUID, SETGID: switching to the final IDs, writing the sandboxed
//     process's uid/gid maps for IDs other than our own;
//   - SETFCAP: mapping a parent's UID 0 into a new user namespace (Linux
//     5.12 and later ask for it, when started as root in a container);
//   - SETPCAP: handing the sandboxed process, through ambient capabilities,
//     what it needs to clear its own bounding set;
//   - KILL: relaying signals to the sandboxed process once it runs as
//     another user;
//   - DAC_OVERRIDE: opening the files named on the command line (pcap, log,
//     pid file) wherever root could, as the C original keeps it.
var initialKeep = caps(unix.CAP_NET_BIND_SERVICE, unix.CAP_NET_RAW,
	unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN, unix.CAP_SYS_PTRACE,
	unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SETFCAP, unix.CAP_SETPCAP,
	unix.CAP_KILL, unix.CAP_DAC_OVERRIDE)

// Initial is stage 1, called first thing in main, before the options are
// parsed (args are the command-line arguments after the program name).
//
// Should:
//   - drop every capability no later step needs (initialKeep; in the
//     sandboxed process, the set the supervisor computed for it, which the
//     nsenter constructor already applied before the runtime started);
//   - close every descriptor inherited by accident: all above 2 that lack
//     FD_CLOEXEC (descriptors our own runtime opened have it), except the
//     one given with -F/--fd and those our supervisor handed over.
//
// Mustn't:
//   - depend on the configuration (it is not parsed yet: --fd is looked up
//     in args directly);
//   - remove filesystem access or change IDs (set-up still needs both).
//
// It also raises the soft limit on open descriptors to the hard limit, as
// the C original does at start: forwarding many ports (-t all) takes a
// socket per port, every flow one more.
//
// It sits first because nothing done before it can be trusted to have
// happened with the right privileges, and a leaked descriptor (a socket to
// the parent's session bus, a terminal) is reachable until it is closed.
// It returns an error for a failed capset or a malformed hand-over.
func Initial(args []string) error {
	if inherited.parseErr != nil {
		return inherited.parseErr
	}
	keep := initialKeep
	if inherited.sandbox {
		keep = inherited.caps
	}
	if err := clearAmbient(); err != nil {
		return err
	}
	if err := narrowCaps(keep); err != nil {
		return fmt.Errorf("dropping capabilities: %w", err)
	}
	raiseNofile()
	fd := fdFromArgs(args)
	return closeLeaked(func(n int) bool {
		_, passed := inherited.keep[n]
		return n == fd || passed
	})
}

// raiseNofile sets the soft limit on open descriptors to the hard limit.
// The Go runtime raises it already, but to one below the hard limit (its
// way of noticing a later prlimit from outside, see syscall's rlimit.go);
// we want all of it, as the C original takes. Failure is not fatal.
func raiseNofile() {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil || l.Cur >= l.Max {
		return
	}
	l.Cur = l.Max
	unix.Setrlimit(unix.RLIMIT_NOFILE, &l)
}

// fdFromArgs returns the descriptor number given with -F/--fd in args, or
// -1. It understands "-F N", "-FN", "--fd N" and "--fd=N", and stops at
// "--" (what follows is pasta's command).
func fdFromArgs(args []string) int {
	for i := 0; i < len(args); i++ {
		a := args[i]
		var v string
		switch {
		case a == "--":
			return -1
		case a == "-F" || a == "--fd":
			if i+1 < len(args) {
				v = args[i+1]
			}
		case strings.HasPrefix(a, "--fd="):
			v = a[len("--fd="):]
		case strings.HasPrefix(a, "-F"):
			v = a[2:]
		default:
			continue
		}
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return n
		}
		return -1
	}
	return -1
}

// closeLeaked closes every descriptor above 2 without FD_CLOEXEC for which
// keep returns false. It returns an error if /proc/self/fd cannot be read.
func closeLeaked(keep func(int) bool) error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing open descriptors: %w", err)
	}
	names, err := d.Readdirnames(-1)
	self := int(d.Fd())
	d.Close()
	if err != nil {
		return fmt.Errorf("listing open descriptors: %w", err)
	}
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil || n <= 2 || n == self || keep(n) {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		unix.Close(n)
	}
	return nil
}
