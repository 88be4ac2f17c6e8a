// What the isolation stages need to know of gopasst's configuration.

package isolation

import "gopasst/isolation/allow"

// Config is what the stages need of the configuration, filled by the caller
// from its own (cmd/passt from the command line; the stages never parse
// options themselves, so that isolation depends on no datapath package).
// The invoked and the sandboxed process must fill it alike: both parse the
// same arguments.
type Config struct {
	// Mode is allow.Passt or allow.Pasta: it selects the allow-list, the
	// capabilities kept at run time, and whether a PID namespace is made.
	Mode allow.Mode
	// Foreground: gopasst stays in the foreground (-f, or pasta running a
	// command): no new session, standard streams kept, and the supervisor
	// waits for the sandboxed process and exits with its status.
	Foreground bool
	// RunAsUID, RunAsGID: --runas, -1 for the default (ours; nobody when
	// started as root in the initial user namespace). A negative GID with
	// a UID means the user's primary group.
	RunAsUID, RunAsGID int
	// PidFile: --pid, written by the supervisor once the sandboxed process
	// is ready; "" for none.
	PidFile string
	// FD: -F/--fd, handed to the sandboxed process at the same number; -1
	// for none.
	FD int
	// NetNS: the network namespace file pasta attaches to ("" when it
	// spawns its own, and in passt mode).
	NetNS string
	// UserNS: the user namespace file to join first, "" for none.
	UserNS string
	// ChrootFallback: --chroot-fallback: where pivot_root is impossible
	// (a root on rootfs or initramfs, a root that is no mount point),
	// chroot into the empty filesystem instead, or stay where we are,
	// with one warning, rather than fail.
	ChrootFallback bool
	// Exe is the executable the sandboxed process runs, "" for this one
	// (/proc/self/exe): the optimised build, when the invoked process
	// left its own re-exec into it to this one (cmd/passt, arch.go).
	Exe string
}
