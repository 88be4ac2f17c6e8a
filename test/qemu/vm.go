// vm.go: qemu-system-x86_64 started on passt's socket as a background
// process of the test, and its serial console watched until the guest is
// done.

package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopasst/test/nstest"
)

// Binary is the qemu the tests run (Debian's qemu-system-x86).
const Binary = "qemu-system-x86_64"

// VM says how to start the guest.
type VM struct {
	Kernel string // kernel image (Kernel.Image)
	Initrd string // initramfs (Initramfs.Build)
	// Socket is passt's UNIX domain socket, which qemu connects to.
	Socket string
	// Console is the file qemu writes the guest's serial console to.
	Console string
	// Append are words added to the kernel command line (gopasst.port=...).
	Append []string
	// MemoryMB is the guest's memory (default 512: room for the blob in
	// the initramfs's tmpfs).
	MemoryMB int
	// Prefix, if set, runs qemu through it (setpriv ... for an
	// unprivileged qemu).
	Prefix []string
	// VhostUser connects the card to Socket as a vhost-user front end
	// (passt --vhost-user) instead of qemu's stream netdev: see Args.
	VhostUser bool
}

// Cmdline returns the kernel command line: the console on the first serial
// port, panic=-1 so that a dying /init ends qemu at once (with
// -no-reboot), quiet so that the console carries little but the guest's
// own lines, then v.Append.
func (v VM) Cmdline() string {
	return strings.Join(append([]string{"console=ttyS0", "panic=-1", "quiet"}, v.Append...), " ")
}

// Args returns the whole command line (v.Prefix, qemu, its options).
// -accel tcg because guest kernels hang under nested KVM on these
// machines; one vCPU, so the other core is passt's; -nodefaults and
// -no-user-config so that the machine has no device but the card (no
// VGA, floppy, CD-ROM, default serial or monitor: less to boot through
// under TCG); the serial console to v.Console and no monitor,
// leaving qemu's own standard output for its messages. The netdev is qemu
// 7.2's stream client (addr.type=unix), passt's documented way, or with
// VhostUser the vhost-user client on a shared-memory guest.
func (v VM) Args() []string {
	mem := v.MemoryMB
	if mem == 0 {
		mem = 512
	}
	args := append([]string{}, v.Prefix...)
	args = append(args, Binary,
		"-accel", "tcg",
		"-m", strconv.Itoa(mem),
		"-smp", "1",
		"-nodefaults", "-no-user-config",
		"-nographic", "-no-reboot",
		"-monitor", "none",
		"-serial", "file:"+v.Console,
		"-kernel", v.Kernel,
		"-initrd", v.Initrd,
		"-append", v.Cmdline(),
	)
	if !v.VhostUser {
		return append(args,
			"-netdev", "stream,id=n,server=off,addr.type=unix,addr.path="+v.Socket,
			"-device", "virtio-net-pci,netdev=n",
		)
	}
	// vhost-user: the back end maps the guest's memory, so it must be a
	// shared memfd backing the whole of it (one NUMA node on it). qemu 7.2
	// under TCG segfaults in vhost_net_start (msix_set_vector_notifiers)
	// when the guest starts a card with MSI-X vectors: vectors=0 (the
	// card then interrupts through INTx). romfile= leaves out the
	// card's boot ROM, which -kernel does not need.
	return append(args,
		"-object", "memory-backend-memfd,id=mem,size="+strconv.Itoa(mem)+"M,share=on",
		"-numa", "node,memdev=mem",
		"-chardev", "socket,id=c,path="+v.Socket,
		"-netdev", "vhost-user,id=n,chardev=c",
		"-device", "virtio-net-pci,netdev=n,vectors=0,romfile=",
	)
}

// Running is a started qemu.
type Running struct {
	Proc    *nstest.Proc
	Console string    // the console file
	Started time.Time // when qemu was started
}

// Start starts qemu as v says, as a background process of test t bounded
// by ctx: when ctx ends, qemu is killed (by PID); at t's cleanup it is
// stopped and reaped in any case (nstest.StartCmd). It fails t if qemu
// cannot start.
func (v VM) Start(ctx context.Context, t testing.TB) *Running {
	t.Helper()
	argv := v.Args()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = os.TempDir()
	r := &Running{Console: v.Console, Started: time.Now()}
	r.Proc = nstest.StartCmd(t, cmd)
	return r
}

// ReadConsole returns what the guest printed so far on its console, with
// the serial line's carriage returns taken out.
func (r *Running) ReadConsole() string {
	b, err := os.ReadFile(r.Console)
	if err != nil {
		return ""
	}
	return strings.ReplaceAll(string(b), "\r", "")
}

// Mark is one GUEST- line and when Watch first saw it, since qemu's start.
type Mark struct {
	Kind string // the word after GUEST-
	Line string // the rest of the line
	At   time.Duration
}

// Watched is what Watch saw.
type Watched struct {
	// Console is when anything first appeared on the console.
	Console time.Duration
	// Marks are the guest's GUEST- lines in order, with when each first
	// appeared (to watchPoll's resolution).
	Marks []Mark
	// Text is the console's text at the end.
	Text string
	// Exited tells whether qemu exited, at Exit since its start, with
	// status ExitCode.
	Exited   bool
	Exit     time.Duration
	ExitCode int
}

// First returns the first mark of kind, and whether there is one.
func (w Watched) First(kind string) (Mark, bool) {
	for _, m := range w.Marks {
		if m.Kind == kind {
			return m, true
		}
	}
	return Mark{}, false
}

// Last returns the last mark of kind, and whether there is one.
func (w Watched) Last(kind string) (Mark, bool) {
	for i := len(w.Marks) - 1; i >= 0; i-- {
		if w.Marks[i].Kind == kind {
			return w.Marks[i], true
		}
	}
	return Mark{}, false
}

// watchPoll is how often Watch reads the console; afterGuestGrace how long
// it waits for qemu to exit once the guest has said it is done (or
// failed) before it returns anyway.
const (
	watchPoll       = 100 * time.Millisecond
	afterGuestGrace = 30 * time.Second
)

// Watch reads the console until qemu exits, ctx ends, check returns an
// error (it is called at every poll: the test's way to stop when passt
// dies), or afterGuestGrace after the guest printed GUEST-DONE or
// GUEST-FAIL, recording when each GUEST- line appeared. It returns what
// it saw, and an error if it stopped because of ctx or check.
func (r *Running) Watch(ctx context.Context, check func() error) (Watched, error) {
	var w Watched
	var guestEnd time.Time
	for {
		exited := r.Proc.Exited()
		text := r.ReadConsole()
		now := time.Since(r.Started)
		if w.Console == 0 && text != "" {
			w.Console = now
		}
		// The console only grows: lines past those seen are new. A line
		// still being written is taken when its newline arrives.
		complete := text[:strings.LastIndexByte(text, '\n')+1]
		lines := guestLines(complete)
		for _, l := range lines[len(w.Marks):] {
			w.Marks = append(w.Marks, Mark{Kind: l.kind, Line: l.rest, At: now})
		}
		w.Text = text
		if exited {
			w.Exited, w.Exit = true, now
			w.ExitCode, _ = r.Proc.Wait(0)
			// Whatever came with the exit, unfinished lines too.
			for _, l := range guestLines(text)[len(w.Marks):] {
				w.Marks = append(w.Marks, Mark{Kind: l.kind, Line: l.rest, At: now})
			}
			return w, nil
		}
		_, done := w.First("DONE")
		_, failed := w.First("FAIL")
		if (done || failed) && guestEnd.IsZero() {
			guestEnd = time.Now()
		}
		if !guestEnd.IsZero() && time.Since(guestEnd) > afterGuestGrace {
			return w, nil
		}
		if check != nil {
			if err := check(); err != nil {
				return w, err
			}
		}
		select {
		case <-ctx.Done():
			return w, fmt.Errorf("guest not done after %v: %w", time.Since(r.Started).Round(time.Second), ctx.Err())
		case <-time.After(watchPoll):
		}
	}
}

// SocketListening reports whether a UNIX domain socket bound to path
// listens in the network namespace of process pid, from
// /proc/PID/net/unix: no connection is made, which passt would take for
// its guest. An error means the table could not be read (the process is
// gone, for one).
func SocketListening(pid int, path string) (bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/unix")
	if err != nil {
		return false, err
	}
	return unixListening(string(b), path), nil
}

// unixListening reports whether the /proc/net/unix table text has a
// listening socket bound to path. Columns: Num RefCount Protocol Flags
// Type St Inode Path; Flags has __SO_ACCEPTCON (0x10000) once listen(2)
// was called.
func unixListening(text, path string) bool {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[7] != path {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err == nil && flags&0x10000 != 0 {
			return true
		}
	}
	return false
}
