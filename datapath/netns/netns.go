// Package netns is pasta's network namespace: it spawns a new one for a
// command or attaches to an existing one, and keeps a namespace worker, a
// goroutine locked to an OS thread that entered the namespace, for
// everything that must be created inside it (the tap device, netlink
// sockets for --config-net, sockets for the splice path).
//
// The daemon itself stays in the host's network namespace: only the
// worker's thread moves, and it never moves back (an unprivileged process
// could not setns() back to the host anyway). The goroutine never unlocks
// its thread, so if it ever returned the runtime would end the thread
// rather than reuse it elsewhere.
//
// Order of calls (see isolation's package doc for the whole start-up; this
// package does not import it: the caller passes isolation.Carry and
// registers the worker with isolation.RegisterThread):
//
//	netns.Prepare(cfg, isolation.Carry) // before isolation.User, in both processes
//	isolation.User(...)                 // the sandboxed process continues
//	ns, err := netns.Open(cfg)          // spawn the command's namespaces or attach
//	isolation.RegisterThread(ns.Do)     // stage 3 narrows the worker's capabilities too
//	ns.Do(func() error { ... })         // tap device, netconf, splice sockets
//	isolation.Prefork / Postfork
//	ns.Release()                        // the command may start now
//	loop: epoll on ns.FD(); when readable, ns.Check()
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/isolation/allow"
)

// Names of the descriptors carried from the invoked process.
const (
	carryNetNS = "netns"       // the target network namespace
	carryPidFD = "netns-pidfd" // pidfd of pasta PID's process, for the exit watch
	carryDir   = "netns-dir"   // O_PATH directory of the namespace file (procfs poll)
	carryWatch = "netns-watch" // inotify descriptor watching that directory
)

// prepared holds what Prepare received in the sandboxed process.
var prepared struct {
	netns, pidfd, dir, watch *os.File
	base                     string // name of the namespace file in dir
}

// Carrier hands a descriptor that only the invoked process can open to the
// sandboxed process: isolation.Carry.
type Carrier func(name string, open func() (*os.File, error)) (*os.File, error)

// Prepare registers with carry what attaching needs and only the invoked
// process can open: the target namespace file (whose /proc/PID/ns/net may
// belong to another user, or to root), a pidfd of pasta PID's process, and
// the watch on the namespace file's directory. Call it before
// isolation.User in both processes, with isolation.Carry; in the sandboxed
// process it picks the descriptors up. It returns the first error.
func Prepare(cfg *config.Config, carry0 Carrier) error {
	path, _ := cfg.TargetNS()
	if path == "" {
		return nil
	}
	var err error
	carry := func(name string, open func() (*os.File, error)) *os.File {
		if err != nil {
			return nil
		}
		var f *os.File
		f, err = carry0(name, open)
		return f
	}
	prepared.netns = carry(carryNetNS, func() (*os.File, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("network namespace: %w", err)
		}
		return f, nil
	})
	prepared.base = filepath.Base(path)
	if cfg.NoNetNSQuit {
		return err
	}
	if cfg.TargetPID != 0 {
		// The namespace goes away, for the C original, when its
		// /proc/PID entry does: when the process exits. A pidfd tells
		// exactly that, without polling.
		prepared.pidfd = carry(carryPidFD, func() (*os.File, error) {
			fd, err := unix.PidfdOpen(cfg.TargetPID, 0)
			if err != nil {
				return nil, fmt.Errorf("watching process %d: %w", cfg.TargetPID, err)
			}
			return os.NewFile(uintptr(fd), "pidfd"), nil
		})
		return err
	}
	dir := filepath.Dir(path)
	var sfs unix.Statfs_t
	if e := unix.Statfs(dir, &sfs); e != nil {
		return fmt.Errorf("network namespace directory %s: %w", dir, e)
	}
	switch sfs.Type {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.DEVPTS_SUPER_MAGIC:
		// No inotify events there: poll the entry once a second.
		prepared.dir = carry(carryDir, func() (*os.File, error) {
			fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("network namespace directory: %w", err)
			}
			return os.NewFile(uintptr(fd), dir), nil
		})
	default:
		prepared.watch = carry(carryWatch, func() (*os.File, error) {
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
			if err != nil {
				return nil, fmt.Errorf("watching %s: %w", dir, err)
			}
			if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_DELETE); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("watching %s: %w", dir, err)
			}
			return os.NewFile(uintptr(fd), "inotify"), nil
		})
	}
	return err
}

// NS is pasta's namespace as seen from the sandboxed process.
type NS struct {
	req chan job

	// Spawned command (Spawned is true).
	child   *os.Process
	pidfd   int
	release *os.File

	// Attached namespace: what tells us it went away, -1 if nothing.
	watchFD int
	timerFD int
	dirFD   int
	base    string
	done    bool
}

// job is a function to run on the worker's thread, and where its result
// goes.
type job struct {
	fn   func() error
	done chan error
}

// Open creates the namespace for the command (pasta without PID or --netns)
// or attaches to the one Prepare opened, and starts the namespace worker in
// it. Call it in the sandboxed process, from the main goroutine (the
// command's parent-death signal belongs to the thread that starts it, and
// main's thread lives as long as the process).
func Open(cfg *config.Config) (*NS, error) {
	if cfg.Mode != config.ModePasta {
		return nil, errors.New("netns: not pasta")
	}
	ns := &NS{pidfd: -1, watchFD: -1, timerFD: -1, dirFD: -1}
	if cfg.Spawning() {
		if err := ns.spawn(cfg); err != nil {
			return nil, err
		}
		if err := ns.startWorker(ns.pidfd); err != nil {
			return nil, err
		}
		return ns, nil
	}
	if prepared.netns == nil {
		return nil, errors.New("netns: no target namespace (netns.Prepare not called before isolation.User?)")
	}
	if err := ns.startWorker(int(prepared.netns.Fd())); err != nil {
		return nil, err
	}
	prepared.netns.Close()
	switch {
	case prepared.pidfd != nil:
		ns.watchFD = int(prepared.pidfd.Fd())
	case prepared.watch != nil:
		ns.watchFD = int(prepared.watch.Fd())
	case prepared.dir != nil:
		ns.dirFD = int(prepared.dir.Fd())
		fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
		if err != nil {
			return nil, fmt.Errorf("netns: quit timer: %w", err)
		}
		second := unix.ItimerSpec{Interval: unix.Timespec{Sec: 1}, Value: unix.Timespec{Sec: 1}}
		if err := unix.TimerfdSettime(fd, 0, &second, nil); err != nil {
			return nil, fmt.Errorf("netns: quit timer: %w", err)
		}
		ns.timerFD = fd
	}
	ns.base = prepared.base
	return ns, nil
}

// startWorker starts the namespace worker: a goroutine locked to its thread,
// moved into the network namespace fd (a namespace file or a pidfd), serving
// Do requests for as long as the process lives. The caller registers the
// thread with isolation.RegisterThread, so that stage 3 narrows its
// capabilities too.
func (ns *NS) startWorker(fd int) error {
	ns.req = make(chan job)
	started := make(chan error)
	go func() {
		// Never unlocked: this thread belongs to the namespace now.
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			started <- fmt.Errorf("netns: entering the namespace: %w", err)
			return // the thread exits with the goroutine
		}
		started <- nil
		for j := range ns.req {
			j.done <- j.fn()
		}
	}()
	return <-started
}

// Do runs fn on the namespace worker's thread, inside the namespace, and
// returns its error. Calls are served one at a time, in order; fn must not
// call Do. Descriptors fn creates (sockets, the tap) stay bound to the
// namespace wherever they are used later.
func (ns *NS) Do(fn func() error) error {
	j := job{fn: fn, done: make(chan error, 1)}
	ns.req <- j
	return <-j.done
}

// Spawned reports whether pasta created this namespace for a command.
func (ns *NS) Spawned() bool { return ns.child != nil }

// FD returns the descriptor the event loop watches (EPOLLIN) to learn that
// pasta should exit: the spawned command's pidfd, or for an attached
// namespace the pidfd, inotify descriptor or 1 s timer that tells it went
// away. It returns -1 if nothing is watched (--no-netns-quit).
func (ns *NS) FD() int {
	switch {
	case ns.pidfd >= 0:
		return ns.pidfd
	case ns.watchFD >= 0:
		return ns.watchFD
	}
	return ns.timerFD
}

// Reaping the command and polling a procfs namespace file happen in the
// event loop, after the filter is in.
var (
	_ = allow.Syscall(allow.Pasta, "waitid", "netns: reaping the spawned command to exit with its status (NS.Check)")
	_ = allow.Syscall(allow.Pasta, "newfstatat", "netns: polling a namespace file on procfs, where inotify cannot work (NS.Check)")
)

// Check is called when FD is readable. It returns done true when pasta must
// exit, with the status to exit with: the command's (128 + signal number if
// a signal killed it), or 0 when an attached namespace went away.
func (ns *NS) Check() (done bool, status int) {
	switch {
	case ns.child != nil:
		return ns.reap()
	case ns.timerFD >= 0:
		var buf [8]byte
		unix.Read(ns.timerFD, buf[:])
		var st unix.Stat_t
		err := unix.Fstatat(ns.dirFD, ns.base, &st, unix.AT_SYMLINK_NOFOLLOW)
		// EACCES means it is still there, as for the C original.
		return err == unix.ENOENT || err == unix.ESRCH, 0
	case ns.watchFD >= 0 && prepared.watch != nil:
		return ns.readInotify(), 0
	case ns.watchFD >= 0:
		return true, 0 // the pidfd of pasta PID's process: it exited
	}
	return false, 0
}

// readInotify drains the inotify descriptor and reports whether the
// namespace file was among the deleted names.
func (ns *NS) readInotify() bool {
	var buf [4096]byte
	gone := false
	for {
		n, err := unix.Read(ns.watchFD, buf[:])
		if n <= 0 || err != nil {
			return gone
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if i := indexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if ev.Mask&unix.IN_DELETE != 0 && string(name) == ns.base {
				gone = true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// indexByte returns the index of the first c in b, or -1.
func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
