package main

import (
	"errors"
	"fmt"
	"os"

	"gopasst/datapath/config"
	"gopasst/datapath/engine"
	"gopasst/datapath/hostinfo"
	"gopasst/datapath/icmp"
	"gopasst/datapath/logging"
	"gopasst/datapath/netconf"
	"gopasst/datapath/netns"
	"gopasst/datapath/pcap"
	"gopasst/datapath/tap"
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
	if err := isolation.Initial(args); err != nil {
		return fail(mode, err)
	}
	for _, a := range args {
		if a == "--print-seccomp" {
			isolation.PrintSeccomp(os.Stdout, allowMode(mode))
			return 0
		}
	}
	cfg, err := parseOptions(mode, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	setLogLevel(cfg)
	if err := hostinfo.Complete(cfg); err != nil {
		return fail(mode, err)
	}
	if cfg.Mode == config.ModePasst {
		return fail(mode, errors.New("passt mode (qemu socket): not implemented yet"))
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

	icfg := isolationConfig(cfg)
	cont, status, err := isolation.User(&icfg)
	if err != nil {
		return fail(mode, err)
	}
	if !cont {
		return status
	}

	// The sandboxed process: set-up.
	if logFile != nil {
		logging.SetFile(logFile, cfg.LogSize, true)
	} else if !cfg.IsForeground() {
		logging.OpenSyslog()
	}
	logging.Debugf("%s %s, %s", mode, version, buildName())
	e, ns, err := setup(cfg, icmp4, icmp6, pcapFile)
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
	if err := ns.Release(); err != nil {
		return fail(mode, err)
	}
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
	}
}

// setup opens everything the engine will use: pasta's namespace and its
// tap device, configured, and the engine with its listeners.
func setup(cfg *config.Config, icmp4, icmp6, pcapFile *os.File) (*engine.Engine, *netns.NS, error) {
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
		fd, name, err := tap.CreateDevice(cfg.NSIfName)
		if err != nil {
			return err
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
	pre, err := icmp.SocketsFromFiles(icmp4, icmp6)
	if err != nil {
		return nil, nil, err
	}
	var capture tap.Pcap
	if pcapFile != nil {
		w, err := pcap.FromFile(pcapFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--pcap: %w", err)
		}
		capture = w
	}
	o := engine.Options{ICMP: pre, Signals: true, Namespace: ns, Announce: cfg.ConfigNet}
	e, err := engine.New(cfg, tap.NewDevice(tapFD, engine.QueueLen, capture), o)
	if err != nil {
		return nil, nil, err
	}
	if res.LinkLocal.IsValid() {
		e.Guest.SeenV6LL = res.LinkLocal
	}
	return e, ns, nil
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
