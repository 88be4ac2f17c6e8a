// Stage 3, prefork: the empty root, the bounding set, readiness.

package isolation

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
	"gopasst/isolation/threadcaps"
)

// runtimeCaps is what each mode keeps after stage 3: nothing for passt;
// NET_BIND_SERVICE for pasta, whose auto port forwarding opens listeners on
// low ports at run time and whose splice path connects from them. pasta
// needs no CAP_SYS_ADMIN, unlike the C original: its namespace worker
// thread stays in the target namespace for good, so nothing ever calls
// setns() after set-up.
func runtimeCaps(mode allow.Mode) CapSet {
	if mode == allow.Pasta {
		return caps(unix.CAP_NET_BIND_SERVICE)
	}
	return 0
}

// threads are the runners of the locked threads other than main's that must
// drop their capabilities too (the namespace worker).
var threads struct {
	sync.Mutex
	run []func(func() error) error
}

// announcement is what the supervisor prints once we are ready (Announce).
var announcement []byte

// Announce sets a message the supervisor prints on its standard error once
// this process is ready (Prefork), after it wrote the PID file: passt's
// "You can now start qemu" with the socket's path, which programs that
// start us read only once the PID file exists. Call it in the sandboxed
// process before Prefork; msg should end with a newline.
func Announce(msg string) {
	if inherited.sandbox {
		announcement = []byte(msg)
	}
}

// RegisterThread adds a locked thread that Prefork must also narrow the
// capabilities of: run must execute its argument on that thread and return
// its error. datapath/netns registers its namespace worker.
func RegisterThread(run func(func() error) error) {
	threads.Lock()
	threads.run = append(threads.run, run)
	threads.Unlock()
}

// Prefork is stage 3, called in the sandboxed process once set-up is
// complete: every descriptor the event loop will use is open.
//
// Should:
//   - finish the IPC, UTS and mount namespaces User created this process
//     in: make every mount unbindable (which also keeps what follows from
//     propagating anywhere), mount an empty read-only tmpfs on /tmp,
//     pivot_root into it and detach the old root, so that no path leads
//     anywhere; this is valid with threads, as the mount namespace belongs
//     to the whole process and pivot_root moves the root of all of them;
//   - clear the bounding set and narrow the effective and permitted sets to
//     what the mode needs at run time (runtimeCaps), on the main thread,
//     on each RegisterThread thread, and then on every other thread of the
//     process (isolation/threadcaps; see doc.go, "Capabilities and
//     threads");
//   - in the background, point standard streams at /dev/null;
//   - tell the supervisor we are ready: it writes the PID file and, in the
//     background, exits, which completes daemonisation.
//
// Mustn't:
//   - install seccomp yet: that is Postfork, after which not even
//     mount() or prctl() would be allowed.
//
// It returns an error naming the step that failed.
func Prefork(cfg *Config) error {
	if !inherited.sandbox {
		return fmt.Errorf("prefork: not the sandboxed process (isolation.User was not called?)")
	}
	var devnull *os.File
	if !cfg.Foreground {
		var err error
		if devnull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("prefork: %w", err)
		}
		defer devnull.Close()
	}
	// Threads are listed in /proc after the root is gone: keep the
	// directory open across pivot_root.
	taskDir, err := unix.Open("/proc/self/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("prefork: listing threads: %w", err)
	}
	defer unix.Close(taskDir)
	if err := emptyRoot(cfg.ChrootFallback); err != nil {
		return err
	}
	keep := runtimeCaps(cfg.Mode)
	drop := func() error {
		if err := clampBounding(keep); err != nil {
			return err
		}
		if err := clearAmbient(); err != nil {
			return err
		}
		return narrowCaps(keep)
	}
	if err := drop(); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	threads.Lock()
	run := threads.run
	threads.Unlock()
	for _, r := range run {
		if err := r(drop); err != nil {
			return fmt.Errorf("prefork, worker thread: %w", err)
		}
	}
	// And every other thread: the runtime's own kept the stage 2 set.
	if err := threadcaps.NarrowAll(taskDir, uint64(keep)); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	if slog.Default().Enabled(context.Background(), slog.LevelDebug) {
		slog.Debug("prefork: capabilities kept: " + keep.String())
	}
	if devnull != nil {
		for fd := 0; fd <= 2; fd++ {
			if err := unix.Dup2(int(devnull.Fd()), fd); err != nil {
				return fmt.Errorf("prefork: standard streams: %w", err)
			}
		}
	}
	// Set-up is over: nothing more to ask of the supervisor.
	closeBroker()
	if inherited.statusFD >= 0 {
		_, err := unix.Write(inherited.statusFD, append([]byte{readyByte}, announcement...))
		unix.Close(inherited.statusFD)
		inherited.statusFD = -1
		if err != nil {
			return fmt.Errorf("prefork: telling the supervisor we are ready: %w", err)
		}
	}
	return nil
}

// emptyRoot makes an empty read-only tmpfs our root and detaches the old
// one, as the C original's isolate_prefork(). pivot_root is impossible
// where the current root is on rootfs (an initramfs system) or is not a
// mount point (we were started in a chroot); with fallback, the process
// then chroots into the empty tmpfs instead (the old root stays mounted
// in our mount namespace, out of reach through paths), or, if even that
// fails, stays in the root it has, each time with one warning; without
// fallback that is an error.
func emptyRoot(fallback bool) error {
	if err := unix.Mount("", "/", "", unix.MS_UNBINDABLE|unix.MS_REC, ""); err != nil {
		// EINVAL: the root is no mount point (we run in a chroot), where
		// pivot_root is impossible too.
		if !fallback {
			return fmt.Errorf("prefork: making / unbindable: %w (a root that is no mount point: pivot_root is impossible there, --chroot-fallback chroots instead)", err)
		}
		slog.Debug(fmt.Sprintf("prefork: making / unbindable: %v", err))
	}
	if err := unix.Mount("", "/tmp", "tmpfs", unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_NOSUID|unix.MS_RDONLY,
		"nr_inodes=2,nr_blocks=0"); err != nil {
		return fmt.Errorf("prefork: mounting an empty tmpfs: %w", err)
	}
	if err := unix.Chdir("/tmp"); err != nil {
		return fmt.Errorf("prefork: entering the empty tmpfs: %w", err)
	}
	// pivot_root(".", "."): the old root ends up stacked on the new one,
	// at ".", where a lazy unmount detaches it.
	if err := unix.PivotRoot(".", "."); err != nil {
		if !fallback {
			return fmt.Errorf("prefork: pivot_root into the empty tmpfs: %w (--chroot-fallback: chroot instead)", err)
		}
		if cerr := unix.Chroot("."); cerr != nil {
			slog.Warn(fmt.Sprintf("pivot_root into an empty filesystem: %v, chroot: %v: staying in the current root (--chroot-fallback)", err, cerr))
		} else {
			slog.Warn(fmt.Sprintf("pivot_root into an empty filesystem: %v: chroot into it instead (--chroot-fallback)", err))
		}
		return unix.Chdir("/")
	}
	if err := unix.Unmount(".", unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("prefork: detaching the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	return nil
}
