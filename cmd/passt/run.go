package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/engine"
	"gopasst/datapath/hostinfo"
	"gopasst/datapath/icmp"
	"gopasst/datapath/logging"
	"gopasst/datapath/netconf"
	"gopasst/datapath/netns"
	"gopasst/datapath/pcap"
	"gopasst/datapath/splice"
	"gopasst/datapath/sys"
	"gopasst/datapath/tap"
	"gopasst/datapath/vhostuser"
	"gopasst/isolation"
	"gopasst/isolation/allow"
)

// run is everything after the optimised re-exec: the isolation stages
// around set-up, then the engine. It returns the exit status.
//
// It runs twice: in the invoked process, which stops at isolation.User and
// from then on only supervises (relays signals, writes the PID file, exits
// with the daemon's status), and in the sandboxed process that User
// starts in its namespaces, which parses the same arguments to the same
// configuration and carries on with set-up.
func run(mode config.Mode, args []string) int {
	logging.Install()
	// A write to a closed stderr (libvirt closes its end of our stderr
	// pipe early) must be an error, not the SIGPIPE that would end us.
	signal.Ignore(unix.SIGPIPE)
	if err := isolation.Initial(args); err != nil {
		return fail(mode, err)
	}
	for _, a := range args {
		if a == "--print-seccomp" {
			isolation.PrintSeccomp(os.Stdout, allowMode(mode))
			return 0
		}
	}
	if isolation.Reexecuted() {
		warnOption = func(string, ...any) {} // the first process warned
	}
	cfg, err := parseOptions(mode, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	setLogLevel(cfg)
	if len(cfg.NotYet) > 0 {
		return fail(mode, errors.New(cfg.NotYet[0]))
	}
	if cfg.PrintCapabilities {
		// What libvirt asks a vhost-user back end (the spec's back-end
		// conventions): the device type, as JSON on stdout.
		fmt.Print(vhostuser.Capabilities)
		return 0
	}
	// Host discovery logs what it finds (the template interface, local
	// mode, missing resolvers). A re-executed process finds the same, and
	// the first one has said it on the same stderr: errors only, as for
	// the option warnings, or every line comes twice.
	if isolation.Reexecuted() {
		logging.SetLevel(logging.Error)
	}
	err = hostinfo.Complete(cfg)
	setLogLevel(cfg)
	if err != nil {
		return fail(mode, err)
	}

	// What only the invoked process can open (it may have privileges the
	// sandboxed process will not): the target namespace, raw ICMP sockets,
	// the capture and log files.
	if err := netns.Prepare(cfg, isolation.Carry); err != nil {
		return fail(mode, err)
	}
	icmp4, err := isolation.Carry("icmp4", func() (*os.File, error) { return icmp.OpenRaw(cfg, false) })
	if err != nil {
		return fail(mode, err)
	}
	icmp6, err := isolation.Carry("icmp6", func() (*os.File, error) { return icmp.OpenRaw(cfg, true) })
	if err != nil {
		return fail(mode, err)
	}
	logFile, err := isolation.Carry("log", func() (*os.File, error) {
		if cfg.LogFile == "" {
			return nil, nil
		}
		return os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_TRUNC|os.O_APPEND|os.O_WRONLY, 0o660)
	})
	if err != nil {
		return fail(mode, fmt.Errorf("--log-file %s: %w", cfg.LogFile, err))
	}
	pcapFile, err := isolation.Carry("pcap", func() (*os.File, error) {
		if cfg.PcapFile == "" {
			return nil, nil
		}
		return os.OpenFile(cfg.PcapFile, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	})
	if err != nil {
		return fail(mode, fmt.Errorf("--pcap %s: %w", cfg.PcapFile, err))
	}

	accel, err := carrySockmap(cfg)
	if err != nil {
		return fail(mode, err)
	}

	icfg := isolationConfig(cfg)
	cont, status, err := isolation.User(&icfg)
	if err != nil {
		return fail(mode, err)
	}
	if !cont {
		return status
	}
	// Listeners of fixed ports below 1024 are bound by the supervisor,
	// which kept the privileges we were started with (isolation.Bind).
	sys.PrivilegedBind = isolation.Bind

	// The sandboxed process: set-up.
	if logFile != nil {
		logging.SetFile(logFile, cfg.LogSize, true)
	} else if !cfg.IsForeground() {
		logging.OpenSyslog()
	}
	logging.Debugf("%s %s, %s", mode, version, buildName())
	pre, err := icmp.SocketsFromFiles(icmp4, icmp6)
	if err != nil {
		return fail(mode, err)
	}
	var capture tap.Pcap
	if pcapFile != nil {
		w, err := pcap.FromFile(pcapFile)
		if err != nil {
			return fail(mode, fmt.Errorf("--pcap: %w", err))
		}
		capture = w
	}
	var e *engine.Engine
	var ns *netns.NS
	if cfg.Mode == config.ModePasst {
		e, err = setupPasst(cfg, pre, capture)
	} else {
		e, ns, err = setupPasta(cfg, pre, capture, accel)
	}
	if err != nil {
		return fail(mode, err)
	}
	if err := isolation.Prefork(&icfg); err != nil {
		return fail(mode, err)
	}
	if !cfg.IsForeground() {
		logging.Detach()
	}
	if err := isolation.Postfork(&icfg); err != nil {
		return fail(mode, err)
	}
	if ns != nil {
		if err := ns.Release(); err != nil {
			return fail(mode, err)
		}
	}
	// The event loop runs unlocked from the main thread (init locked it,
	// for set-up): a locked goroutine can only run on its own thread, so
	// each time its P leaves that thread while the loop sleeps in
	// epoll_pwait, its return waits for the P to be handed back through
	// another thread (the runtime's startlockedm/stoplockedm: futex
	// wake-ups). Measured in one bench run (neper, tap path, 3 repetitions
	// interleaved), unlocked against locked: TCP_RR 101 -> 55 µs, UDP_RR
	// 87-153 -> 56 µs, TCP_CRR 173-226 -> 136-166 µs, the same CPU per
	// transaction (bench/README.md, "Where a TCP_RR transaction goes").
	// Nothing here needs the main thread any longer: the goroutines that
	// entered other namespaces keep their own threads locked for good (a
	// locked M runs nothing else), every thread's capabilities were
	// narrowed (isolation/threadcaps) and seccomp was installed with TSYNC,
	// the children whose parent-death signal is bound to the main thread
	// were started from it, and the main thread never exits before the
	// process does.
	runtime.UnlockOSThread()
	status, err = e.Run()
	if err != nil {
		return fail(mode, err)
	}
	return status
}

// allowMode returns the allow-lists of mode.
func allowMode(mode config.Mode) allow.Mode {
	if mode == config.ModePasta {
		return allow.Pasta
	}
	return allow.Passt
}

// isolationConfig returns what the isolation stages need of cfg.
func isolationConfig(cfg *config.Config) isolation.Config {
	netns, userns := cfg.TargetNS()
	return isolation.Config{
		Mode:       allowMode(cfg.Mode),
		Foreground: cfg.IsForeground(),
		RunAsUID:   cfg.RunAsUID,
		RunAsGID:   cfg.RunAsGID,
		PidFile:    cfg.PidFile,
		FD:         cfg.FD,
		NetNS:      netns,
		UserNS:     userns,

		ChrootFallback: cfg.ChrootFallback,
		Exe:            deferredOptimised,
	}
}

// setupPasst opens what passt mode's engine will use: the socket qemu
// connects to (listening at -s PATH or the first free /tmp/passt_N.socket,
// announced once we are ready), or the connected socket given with -F;
// and the engine with its listeners.
func setupPasst(cfg *config.Config, pre *icmp.Sockets, capture tap.Pcap) (*engine.Engine, error) {
	lfd, cfd := -1, -1
	if cfg.FD >= 0 {
		// -F: a connected socket (qemu 10's -netdev passt hands it as
		// fd 3); one-off by definition.
		cfd = cfg.FD
		if err := unix.SetNonblock(cfd, true); err != nil {
			return nil, fmt.Errorf("-F %d: %w", cfd, err)
		}
	} else {
		fd, path, err := tap.ListenStream(cfg.Socket)
		if err != nil {
			return nil, err
		}
		lfd = fd
		logging.Infof("UNIX domain socket bound at %s", path)
		if cfg.Log > config.LogQuiet {
			if cfg.VhostUser {
				isolation.Announce(vhostHint(path))
			} else {
				isolation.Announce(qemuHint(path))
			}
		}
	}
	var be tap.Backend
	if cfg.VhostUser {
		be = vhostuser.New(lfd, cfd, cfg.OneOff, engine.QueueLen, capture)
	} else {
		be = tap.NewStream(lfd, cfd, cfg.OneOff, engine.QueueLen, capture)
	}
	return engine.New(cfg, be, engine.Options{ICMP: pre, Signals: true})
}

// vhostHint is what passt --vhost-user says once it listens: how to start
// qemu on the socket at path. Guest RAM must be shared memory; vectors=0
// keeps qemu 7.2 under TCG from crashing when the guest starts the NIC
// (msix_set_vector_notifiers, see README).
func vhostHint(path string) string {
	return "\nYou can now start qemu (>= 7.2), with memory shared:\n" +
		"    kvm ... -m 1G -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\\n" +
		"      -chardev socket,id=c,path=" + path + " -netdev vhost-user,id=n,chardev=c \\\n" +
		"      -device virtio-net-pci,netdev=n\n" +
		"or, with libvirt: <interface type='vhostuser'><backend type='passt'/>...\n"
}

// qemuHint is what passt says once it listens, as the C original: how to
// start qemu on the socket at path.
func qemuHint(path string) string {
	return "\nYou can now start qemu (>= 7.2):\n" +
		"    kvm ... -device virtio-net-pci,netdev=s -netdev stream,id=s,server=off,addr.type=unix,addr.path=" + path + "\n" +
		"or, with libvirt: <interface type='user'><backend type='passt'/>...\n"
}

// setupPasta opens what pasta's engine will use: pasta's namespace and its
// tap device, configured, and the engine with its listeners.
func setupPasta(cfg *config.Config, pre *icmp.Sockets, capture tap.Pcap, accel splice.Accelerator) (*engine.Engine, *netns.NS, error) {
	host, err := netconf.ReadHost(cfg)
	if err != nil {
		return nil, nil, err
	}
	ns, err := netns.Open(cfg)
	if err != nil {
		return nil, nil, err
	}
	isolation.RegisterThread(ns.Do)
	var tapFD int
	var res *netconf.Result
	err = ns.Do(func() error {
		var fd int
		var name string
		var err error
		if cfg.SpliceOnly {
			// No tap: loopback forwarding only.
			res, err = netconf.Apply(cfg, host, "")
			return err
		}
		if cfg.FD >= 0 {
			// -F: a tap device opened for us, in the namespace we
			// attached to. The loop needs it non-blocking.
			fd = cfg.FD
			if name, err = tap.DeviceName(fd); err == nil {
				err = unix.SetNonblock(fd, true)
			}
		} else {
			fd, name, err = tap.CreateDeviceWith(cfg.NSIfName, openTunBrokered)
		}
		if err != nil {
			return tunHint(err)
		}
		tapFD = fd
		res, err = netconf.Apply(cfg, host, name)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if res.V4Off {
		cfg.V4.Enabled = false
	}
	if res.V6Off {
		cfg.V6.Enabled = false
	}
	cfg.GuestMAC = res.MAC
	o := engine.Options{ICMP: pre, Signals: true, Namespace: ns, NSDo: ns.Do, Announce: cfg.ConfigNet && !cfg.SpliceOnly, SpliceAccel: accel}
	var be tap.Backend
	if cfg.SpliceOnly {
		be = tap.NewNull()
	} else {
		be = tap.NewDevice(tapFD, engine.QueueLen, capture)
	}
	e, err := engine.New(cfg, be, o)
	if err != nil {
		return nil, nil, err
	}
	if res.LinkLocal.IsValid() {
		e.Guest.SeenV6LL = res.LinkLocal
	}
	return e, ns, nil
}

// openTunBrokered asks the supervisor, which may have the privileges we
// lack (started as root, the device mode 0600), to open /dev/net/tun in
// the network namespace of the calling thread: pasta's namespace worker.
// Returns the descriptor or an error.
func openTunBrokered() (int, error) {
	ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(ns)
	return isolation.OpenTun(ns)
}

// tunHint adds to a refusal of /dev/net/tun what to change: an
// unprivileged user may open it only if it is usable by everyone, as
// Debian ships it (some images make it 0600).
func tunHint(err error) error {
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: this user may not use it: make it usable by everyone, as Debian ships it "+
			"(chmod 0666 /dev/net/tun, or the udev rule KERNEL==\"tun\", MODE=\"0666\")", err)
	}
	return err
}

// setLogLevel applies -q, -d and --trace, as the C original: quiet shows
// warnings and errors.
func setLogLevel(cfg *config.Config) {
	logging.SetPrefix(cfg.Mode.String())
	switch cfg.Log {
	case config.LogQuiet:
		logging.SetLevel(logging.Warn)
	case config.LogInfo:
		logging.SetLevel(logging.Info)
	case config.LogDebug:
		logging.SetLevel(logging.Debug)
	case config.LogTrace:
		logging.SetLevel(logging.Trace)
	}
}

// fail prints one error line and returns exit status 1.
func fail(mode config.Mode, err error) int {
	fmt.Fprintf(os.Stderr, "%s: %v\n", mode, err)
	return 1
}
