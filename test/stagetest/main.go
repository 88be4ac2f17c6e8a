//go:debug updatemaxprocs=0

// Command stagetest runs gopasst's start-up sequence (the four isolation
// stages, pasta's namespace) around a small echo service instead of the
// data path, so that the stages can be checked from outside (/proc of the
// daemon, traffic after seccomp) before the event loop exists. It is built
// by test/stages only; its calls, in order, are what cmd/passt does. It
// links the datapath (engine, unused) so that its allow-lists are gopasst's.
//
// Usage: stagetest [-mode passt|pasta] [-f] [-runas UID[:GID]] [-pid FILE]
// [-netns PATH] [-userns PATH] [-target PID] [-netns-only] [-no-netns-quit]
// [-H NAME] [-port N] [-d] [COMMAND...]
//
// Requests on the TCP port (127.0.0.1, one line each, one per connection):
// "udp PORT" and "tcp PORT" open a new socket after seccomp and relay
// "ping" to that port on 127.0.0.1, answering with the reply; "ns" creates
// a socket inside pasta's namespace through the worker; "threads" makes the
// runtime start threads and collect garbage; "forbidden" makes a
// syscall outside the allow-list (only built with -tags seccomptest).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	_ "gopasst/datapath/engine" // the datapath's allow-list registrations
	"gopasst/datapath/logging"
	"gopasst/datapath/netns"
	"gopasst/datapath/term"
	"gopasst/isolation"
	"gopasst/isolation/allow"
)

func init() { runtime.LockOSThread() }

// forbidden makes a syscall the filter kills for; nil unless built with
// -tags seccomptest.
var forbidden func()

func main() {
	if netns.RunInitRole() {
		return
	}
	os.Exit(run())
}

// parse builds the configuration from the command line; the sandboxed
// process parses the same arguments to the same result.
func parse() (*config.Config, *isolation.Config, int, error) {
	cfg := &config.Config{RunAsUID: -1, RunAsGID: -1, FD: -1}
	fs := flag.NewFlagSet("stagetest", flag.ContinueOnError)
	mode := fs.String("mode", "pasta", "passt or pasta")
	fs.BoolVar(&cfg.Foreground, "f", false, "foreground")
	runas := fs.String("runas", "", "UID[:GID]")
	fs.StringVar(&cfg.PidFile, "pid", "", "PID file")
	fs.StringVar(&cfg.NetNS, "netns", "", "network namespace")
	fs.StringVar(&cfg.UserNS, "userns", "", "user namespace")
	fs.IntVar(&cfg.TargetPID, "target", 0, "attach to PID's namespaces")
	fs.BoolVar(&cfg.NetNSOnly, "netns-only", false, "do not join a user namespace")
	fs.BoolVar(&cfg.NoNetNSQuit, "no-netns-quit", false, "stay when the namespace goes")
	fs.StringVar(&cfg.Hostname, "H", "", "hostname")
	port := fs.Int("port", 0, "TCP port of the echo service on 127.0.0.1")
	debug := fs.Bool("d", false, "debug")
	printSeccomp := fs.Bool("print-seccomp", false, "print the allow-list and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return nil, nil, 0, err
	}
	if *mode == "passt" {
		cfg.Mode = config.ModePasst
	} else {
		cfg.Mode = config.ModePasta
	}
	if *runas != "" {
		u, g, _ := strings.Cut(*runas, ":")
		cfg.RunAsUID, _ = strconv.Atoi(u)
		if g != "" {
			cfg.RunAsGID, _ = strconv.Atoi(g)
		}
	}
	if *debug {
		logging.SetLevel(logging.Debug)
	}
	cfg.Command = fs.Args()
	netns, userns := cfg.TargetNS()
	icfg := &isolation.Config{Mode: allow.Passt, Foreground: cfg.IsForeground(), RunAsUID: cfg.RunAsUID,
		RunAsGID: cfg.RunAsGID, PidFile: cfg.PidFile, FD: cfg.FD, NetNS: netns, UserNS: userns}
	if cfg.Mode == config.ModePasta {
		icfg.Mode = allow.Pasta
	}
	if *printSeccomp {
		isolation.PrintSeccomp(os.Stdout, icfg.Mode)
		os.Exit(0)
	}
	return cfg, icfg, *port, nil
}

func run() int {
	logging.Install()
	if err := isolation.Initial(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, icfg, port, err := parse()
	if err != nil {
		return 1
	}
	if err := netns.Prepare(cfg, isolation.Carry); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cont, status, err := isolation.User(icfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if !cont {
		return status
	}

	// Set-up, in the sandboxed process.
	var ns *netns.NS
	if cfg.Mode == config.ModePasta {
		if ns, err = netns.Open(cfg); err != nil {
			logging.Fatalf("%v", err)
		}
		isolation.RegisterThread(ns.Do)
		if err := ns.Do(createTap); err != nil {
			logging.Fatalf("tap: %v", err)
		}
	}
	lfd := -1
	if port != 0 {
		if lfd, err = listenTCP(port); err != nil {
			logging.Fatalf("listen: %v", err)
		}
	}
	termFD, err := term.FD()
	if err != nil {
		logging.Fatalf("%v", err)
	}
	// The event loop's epoll descriptor, like every descriptor, is
	// created before the stages: epoll_create1 is not allowed after.
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		logging.Fatalf("epoll: %v", err)
	}
	if err := isolation.Prefork(icfg); err != nil {
		logging.Fatalf("%v", err)
	}
	if err := isolation.Postfork(icfg); err != nil {
		logging.Fatalf("%v", err)
	}
	if ns != nil {
		if err := ns.Release(); err != nil {
			logging.Fatalf("%v", err)
		}
	}
	return loop(ep, termFD, lfd, ns)
}

// createTap creates tap device "tap0" on the worker's thread, as
// cmd/passt does (asking the supervisor for /dev/net/tun where we may not
// open it), and leaves its descriptor open.
func createTap() error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err == unix.EACCES || err == unix.EPERM {
		// As cmd/passt: the supervisor may open it (started as root,
		// the device 0600), in this thread's namespace.
		ns, nerr := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if nerr == nil {
			fd, err = isolation.OpenTun(ns)
			unix.Close(ns)
		}
	}
	if err != nil {
		return err
	}
	ifr, err := unix.NewIfreq("tap0")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
}

// listenTCP opens the echo service's listener on 127.0.0.1:port.
func listenTCP(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, err
	}
	return fd, unix.Listen(fd, 16)
}

// loop is the stand-in for the event loop: epoll on the termination
// eventfd, the namespace's exit descriptor and the listener.
func loop(ep, termFD, lfd int, ns *netns.NS) int {
	add := func(fd int) {
		if fd >= 0 {
			unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
		}
	}
	add(termFD)
	add(lfd)
	nsFD := -1
	if ns != nil {
		nsFD = ns.FD()
		add(nsFD)
	}
	events := make([]unix.EpollEvent, 8)
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 1
		}
		for _, ev := range events[:n] {
			switch int(ev.Fd) {
			case termFD:
				return 0
			case nsFD:
				if done, status := ns.Check(); done {
					return status
				}
			case lfd:
				serve(lfd, ns)
			}
		}
	}
}

// serve answers one request on a new connection from lfd.
func serve(lfd int, ns *netns.NS) {
	c, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		return
	}
	defer unix.Close(c)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 256)
	n, err := unix.Read(c, buf)
	if err != nil || n <= 0 {
		return
	}
	req := strings.Fields(string(buf[:n]))
	reply := "error"
	if len(req) > 0 {
		switch req[0] {
		case "udp", "tcp":
			if len(req) == 2 {
				p, _ := strconv.Atoi(req[1])
				reply = relay(req[0], p)
			}
		case "ns":
			reply = "no namespace"
			if ns != nil {
				reply = nsSocket(ns)
			}
		case "threads":
			// Blocking calls on many goroutines make the runtime start
			// threads, and a GC runs its workers: all after seccomp.
			var wg sync.WaitGroup
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ts := unix.NsecToTimespec(int64(50 * time.Millisecond))
					unix.Nanosleep(&ts, nil)
					_ = make([]byte, 1<<20)
				}()
			}
			wg.Wait()
			runtime.GC()
			reply = fmt.Sprintf("threads ok %d", runtime.NumGoroutine())
		case "forbidden":
			reply = "unsupported"
			if forbidden != nil {
				forbidden()
			}
		}
	}
	unix.Write(c, []byte(reply+"\n"))
}

// relay opens a new socket of kind ("udp" or "tcp") to 127.0.0.1:port,
// sends "ping" and returns the answer or the error.
func relay(kind string, port int) string {
	typ := unix.SOCK_DGRAM
	if kind == "tcp" {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "socket: " + err.Error()
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return "connect: " + err.Error()
	}
	if _, err := unix.Write(fd, []byte("ping")); err != nil {
		return "write: " + err.Error()
	}
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return "read: " + err.Error()
	}
	return kind + " " + string(buf[:n])
}

// nsSocket binds a new UDP socket to 127.0.0.1 inside the namespace through
// the worker (the namespace's loopback: pasta's splice path will need such
// sockets after seccomp) and reports success. (getsockname, to tell the
// port the kernel chose, is not on the allow-lists: the datapath never
// needs it.)
func nsSocket(ns *netns.NS) string {
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	})
	if err != nil {
		return "ns: " + err.Error()
	}
	return "ns ok bound"
}
