// The command line: every option of the C original (compat.md), with its
// names, short forms, argument syntax, defaults and mode restrictions,
// parsed into a config.Config. Host discovery (hostinfo.Complete) fills
// in what the command line leaves open.

package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"gopasst/datapath/config"
	"gopasst/datapath/fwd"
	"gopasst/datapath/hostinfo"
	"gopasst/datapath/logging"
)

// notImplemented lists the options that parse (their values are checked)
// but whose feature does not exist yet: using one is an error, never a
// silent no-op. Keyed by the option's canonical long name (or its letter
// for short-only options). Trim this as features land.
var notImplemented = map[string]bool{
	"stats":     true, // event statistics
	"conf-path": true, // -c: run-time configuration socket (pesto)
}

// Limits on option values, as the C original's buffers impose them.
const (
	pathMax     = 4096 // PATH_MAX, including the terminating NUL
	unixPathMax = 108  // sizeof(sun_path), including the terminating NUL
	ifNameSize  = 16   // IFNAMSIZ, including the terminating NUL
	maxDNameLen = 254  // PASST_MAXDNAME, including the terminating NUL
)

// modeOnly restricts an option to one mode.
type modeOnly uint8

const (
	bothModes modeOnly = iota
	passtOnly
	pastaOnly
)

// option is one entry of the option table.
type option struct {
	optDef
	only modeOnly
	// set applies the option with its value ("" for options without one).
	set func(st *parseState, val string) error
}

// parseState is what parsing keeps besides the Config being filled.
type parseState struct {
	cfg  *config.Config
	prog string // "passt" or "pasta", prefix of every error
	name string // the option being applied, as named in messages

	v4Only, v6Only bool
	aIsPrefix      bool // -a had "/len"
	nGiven         bool // -n given
	fwdSpecs       []fwdSpec
	noCopyOpt      []string // deprecated --no-copy-* given
	migrateOpt     string   // a migration option given (--repair-path PATH, --migrate-exit, --migrate-no-linger)
}

// fwdSpec is one -t/-u/-T/-U option, kept until every other option is
// known (the families in use decide what a spec means).
type fwdSpec struct {
	name  string // as given, for messages
	short byte   // t, u, T or U
	spec  string
}

// exitRequest is returned by parseArgs for --help and --version: print
// text on stdout and exit with status 0.
type exitRequest struct{ text string }

func (e *exitRequest) Error() string { return "exit requested" }

// invalid returns the one-line error for a bad value of the current
// option, with an optional reason.
func (st *parseState) invalid(val string, reason ...any) error {
	msg := fmt.Sprintf("%s: %s: invalid value %q", st.prog, st.name, val)
	if len(reason) > 0 {
		msg += ": " + fmt.Sprint(reason...)
	}
	return errors.New(msg)
}

// errorf returns a one-line error about the current option.
func (st *parseState) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", st.prog, st.name, fmt.Sprintf(format, args...))
}

// ephemeralRange reads the host's ephemeral port range; tests replace it.
var ephemeralRange = hostinfo.EphemeralRange

// lookupUser and lookupGroup resolve --runas names; tests replace them.
var (
	lookupUser  = user.Lookup
	lookupGroup = user.LookupGroup
)

// parseOptions parses the command line args (without argv[0]) for mode.
//
// --help and --version print on stdout and exit with status 0 from here,
// as in the C original. Any other problem is returned as an error of one
// line, prefixed with the program name ("passt: --mtu: invalid value
// \"abc\""), which the caller prints on stderr before exiting with status
// 1. The Config returned is complete as far as the command line goes;
// hostinfo.Complete fills in the rest.
func parseOptions(mode config.Mode, args []string) (*config.Config, error) {
	cfg, err := parseArgs(mode, args)
	var req *exitRequest
	if errors.As(err, &req) {
		os.Stdout.WriteString(req.text)
		os.Exit(0)
	}
	return cfg, err
}

// parseArgs is parseOptions without exiting: --help and --version come
// back as an *exitRequest error.
func parseArgs(mode config.Mode, args []string) (*config.Config, error) {
	st := &parseState{prog: mode.String(), cfg: defaults(mode)}
	cfg := st.cfg

	defs := make([]*optDef, len(optionTable))
	for i := range optionTable {
		defs[i] = &optionTable[i].optDef
	}
	g := &getopt{defs: defs, args: args, prog: st.prog}
	for {
		opt, ok, err := g.scan()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		o := optionFor(opt.def)
		st.name = opt.name
		switch {
		case o.only == pastaOnly && mode != config.ModePasta:
			return nil, fmt.Errorf("%s: %s is for pasta mode only", st.prog, opt.name)
		case o.only == passtOnly && mode != config.ModePasst:
			return nil, fmt.Errorf("%s: %s is for passt mode only", st.prog, opt.name)
		}
		if err := o.set(st, opt.value); err != nil {
			return nil, err
		}
		key := string(o.short)
		if len(o.long) > 0 {
			key = o.long[0]
		}
		if notImplemented[key] {
			return nil, fmt.Errorf("%s: %s: not implemented yet", st.prog, opt.name)
		}
	}
	if err := st.finish(g.rest()); err != nil {
		return nil, err
	}
	return cfg, nil
}

// defaults returns the Config before any option: the C original's
// defaults for mode.
func defaults(mode config.Mode) *config.Config {
	cfg := &config.Config{
		Mode:     mode,
		Log:      config.LogInfo,
		LogSize:  config.DefaultLogSize,
		RunAsUID: -1,
		RunAsGID: -1,
		FD:       -1,
		MTU:      config.DefaultMTU,
		OurMAC:   config.DefaultMAC,
	}
	// passt advertises the host's resolvers and search list by default;
	// pasta's namespace usually shares /etc/resolv.conf, so it does not.
	cfg.AdvertiseDNS = mode == config.ModePasst
	cfg.AdvertiseSearch = mode == config.ModePasst
	return cfg
}

// optionFor returns the table entry of a scanned definition.
func optionFor(d *optDef) *option {
	for i := range optionTable {
		if &optionTable[i].optDef == d {
			return &optionTable[i]
		}
	}
	panic("option definition not in table")
}

// finish applies what depends on all options together: the operands, the
// families, the forwarding specs, and the checks across options.
func (st *parseState) finish(operands []string) error {
	cfg := st.cfg
	st.name = ""
	cfg.V4.Enabled, cfg.V6.Enabled = !st.v6Only, !st.v4Only

	if cfg.Mode == config.ModePasst {
		if len(operands) > 0 {
			return fmt.Errorf("%s: extra non-option argument: '%s'", st.prog, esc(operands[0]))
		}
		cfg.NoSplice = true
	} else {
		if err := st.pastaNamespace(operands); err != nil {
			return err
		}
		if len(st.noCopyOpt) > 0 && !cfg.ConfigNet {
			return fmt.Errorf("%s: %s needs --config-net", st.prog, st.noCopyOpt[0])
		}
		if cfg.SpliceOnly {
			if cfg.NoSplice {
				return fmt.Errorf("%s: --splice-only is incompatible with --no-splice", st.prog)
			}
			cfg.HostLoToNSLo, cfg.NoICMP, cfg.NoDNS, cfg.NoSearch = true, true, true, true
		}
	}
	if st.migrateOpt != "" {
		// Migration of a vhost-user guest (device state, passt-repair)
		// does not exist yet.
		if cfg.VhostUser {
			return fmt.Errorf("%s: %s: not implemented yet", st.prog, st.migrateOpt)
		}
		return fmt.Errorf("%s: %s: is for vhost-user mode only", st.prog, st.migrateOpt)
	}
	if cfg.Stats > 0 && !cfg.Foreground {
		return fmt.Errorf("%s: --stats: can't display statistics if not running in foreground", st.prog)
	}

	// Implications the C original applies after parsing.
	if cfg.NoICMP {
		cfg.NoNDP = true
	}
	if cfg.ConfigNet {
		cfg.NoRA = true // addresses are configured directly
	}
	if !cfg.V4.Enabled {
		cfg.NoDHCP = true
	}
	if !cfg.V6.Enabled {
		cfg.NoNDP, cfg.NoDHCPv6 = true, true
	}

	return st.forwarding()
}

// warnOption prints a warning about the command line: logging.Warnf, unless
// this process repeats a parse that an earlier process of ours printed its
// warnings for already (see run).
var warnOption = logging.Warnf

// pastaNamespace handles pasta's operands: a single numeric operand is the
// PID whose namespaces to join, anything else is the command to run. A
// target given both ways is an error.
func (st *parseState) pastaNamespace(operands []string) error {
	cfg := st.cfg
	if cfg.NetNS != "" && len(operands) > 0 {
		return fmt.Errorf("%s: both --netns and PID or command given", st.prog)
	}
	if len(operands) == 1 && isDecimal(operands[0]) {
		pid, err := strconv.ParseUint(operands[0], 10, 31)
		if err != nil || pid == 0 {
			return fmt.Errorf("%s: invalid PID %s", st.prog, esc(operands[0]))
		}
		cfg.TargetPID = int(pid)
		cfg.NetNS = fmt.Sprintf("/proc/%d/ns/net", pid)
		if cfg.UserNS == "" && !cfg.NetNSOnly {
			cfg.UserNS = fmt.Sprintf("/proc/%d/ns/user", pid)
		}
	} else if len(operands) > 0 {
		cfg.Command = append([]string(nil), operands...)
	}
	if cfg.FD >= 0 && cfg.Spawning() {
		// pasta -F takes a tap device someone opened for us: in the
		// namespace we are to attach to, which must be named.
		return fmt.Errorf("%s: -F/--fd: a tap device needs its namespace: give PID or --netns", st.prog)
	}
	// Joining a network namespace without a user namespace to join: only
	// the network namespace.
	if cfg.NetNS != "" && cfg.UserNS == "" {
		cfg.NetNSOnly = true
	}
	if cfg.Spawning() {
		// pasta stays with the command it runs, quiet unless debugging.
		cfg.Foreground = true
		if cfg.Log < config.LogDebug {
			cfg.Log = config.LogQuiet
		}
	}
	return nil
}

// forwarding parses the -t/-u/-T/-U specs, in command-line order, now that
// the families and protocols in use are known, and applies the defaults:
// none for passt, auto for each of pasta's four not given.
func (st *parseState) forwarding() error {
	cfg := st.cfg
	first, last, err := ephemeralRange()
	if err != nil {
		warnOption("%v", err)
	}
	cfg.EphemeralFirst, cfg.EphemeralLast = first, last
	caps := fwd.Caps{
		IPv4: cfg.V4.Enabled, IPv6: cfg.V6.Enabled,
		NoTCP: cfg.NoTCP, NoUDP: cfg.NoUDP,
		Scan:           cfg.Mode == config.ModePasta,
		EphemeralFirst: first, EphemeralLast: last,
	}
	in, out := fwd.NewTable(fwd.Inbound, caps), fwd.NewTable(fwd.Outbound, caps)
	table := func(short byte) (*fwd.Table, fwd.Proto) {
		switch short {
		case 't':
			return in, fwd.TCP
		case 'u':
			return in, fwd.UDP
		case 'T':
			return out, fwd.TCP
		}
		return out, fwd.UDP
	}
	for _, f := range st.fwdSpecs {
		t, proto := table(f.short)
		if err := t.Parse(proto, f.spec); err != nil {
			return fmt.Errorf("%s: %s: invalid value %q: %v", st.prog, f.name, f.spec, err)
		}
	}
	if cfg.Mode == config.ModePasta {
		for _, short := range []byte("tuTU") {
			t, proto := table(short)
			if t.Given(proto) || (proto == fwd.TCP && cfg.NoTCP) || (proto == fwd.UDP && cfg.NoUDP) {
				continue
			}
			if err := t.Parse(proto, "auto"); err != nil {
				return fmt.Errorf("%s: default -%c auto: %v", st.prog, short, err)
			}
		}
	}
	cfg.TCPIn, cfg.UDPIn, cfg.TCPOut, cfg.UDPOut = in.TCP, in.UDP, out.TCP, out.UDP
	return nil
}

// isDecimal reports whether s is a non-empty string of decimal digits.
func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseUnsigned parses an unsigned number as strtoul() with base 0 does,
// without its leniencies: decimal, 0x hexadecimal, or 0 octal, nothing
// else around it.
func parseUnsigned(s string) (uint64, bool) {
	base, digits := 10, s
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		base, digits = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	if digits == "" || strings.ContainsAny(digits, "+-_ ") {
		return 0, false
	}
	v, err := strconv.ParseUint(digits, base, 64)
	return v, err == nil
}

// parseIP parses an IPv4 or IPv6 address as inet_pton() does: no zone,
// no brackets, no prefix.
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// limitedBroadcast is 255.255.255.255.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// isV4Compat reports whether a is an IPv4-compatible IPv6 address
// (::a.b.c.d, deprecated by RFC 4291), other than :: and ::1.
func isV4Compat(a netip.Addr) bool {
	b := a.As16()
	for _, x := range b[:12] {
		if x != 0 {
			return false
		}
	}
	return !a.IsUnspecified() && !a.IsLoopback()
}

// parseMAC parses a MAC address written as six colon-separated pairs of
// hexadecimal digits, exactly.
func parseMAC(s string) ([6]byte, bool) {
	var mac [6]byte
	if len(s) != 17 {
		return mac, false
	}
	for i := range 6 {
		if i < 5 && s[3*i+2] != ':' {
			return mac, false
		}
		v, err := strconv.ParseUint(s[3*i:3*i+2], 16, 8)
		if err != nil || strings.ContainsAny(s[3*i:3*i+2], "+-") {
			return mac, false
		}
		mac[i] = byte(v)
	}
	return mac, true
}

// checkString checks a string value against a C buffer of size bytes
// (including the NUL): not empty, and short enough.
func (st *parseState) checkString(val string, size int) error {
	if val == "" {
		return st.invalid(val, "empty")
	}
	if len(val) >= size {
		return st.invalid(val, fmt.Sprintf("longer than %d bytes", size-1))
	}
	return nil
}

// checkIfName checks an interface name.
func (st *parseState) checkIfName(val string) error {
	if err := st.checkString(val, ifNameSize); err != nil {
		return err
	}
	if val == "." || val == ".." || strings.ContainsFunc(val, func(r rune) bool { return r <= ' ' || r == '/' || r == ':' || r >= 0x7f }) {
		return st.invalid(val, "not an interface name")
	}
	return nil
}

// flag returns a set function that sets *field(cfg) to true.
func flag(field func(*config.Config) *bool) func(*parseState, string) error {
	return func(st *parseState, _ string) error {
		*field(st.cfg) = true
		return nil
	}
}

// family returns the per-family part of cfg for a.
func family(cfg *config.Config, a netip.Addr) *config.IP {
	if a.Is4() {
		return &cfg.V4
	}
	return &cfg.V6
}

// optionTable is every option of both modes, grouped as in the usage.
var optionTable []option

func init() {
	optionTable = []option{
		// Process, logging, files.
		{optDef{'d', []string{"debug"}, noArg}, bothModes, func(st *parseState, _ string) error {
			st.cfg.Log = config.LogDebug
			return nil
		}},
		{optDef{0, []string{"trace"}, noArg}, bothModes, func(st *parseState, _ string) error {
			st.cfg.Log = config.LogTrace
			return nil
		}},
		{optDef{'q', []string{"quiet"}, noArg}, bothModes, func(st *parseState, _ string) error {
			st.cfg.Log = config.LogQuiet
			return nil
		}},
		{optDef{'f', []string{"foreground"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.Foreground })},
		{optDef{'e', []string{"stderr"}, noArg}, bothModes, func(st *parseState, _ string) error {
			warnOption("%s: --stderr will be dropped soon", st.prog)
			return nil
		}},
		{optDef{'l', []string{"log-file"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.LogFile = v
			return st.checkString(v, pathMax)
		}},
		{optDef{0, []string{"log-size"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			n, ok := parseUnsigned(v)
			if !ok || n < config.MinLogSize || n > 1<<62 {
				return st.invalid(v, fmt.Sprintf("want a size of at least %d bytes", config.MinLogSize))
			}
			st.cfg.LogSize = int64(n)
			return nil
		}},
		{optDef{0, []string{"runas"}, requiredArg}, bothModes, (*parseState).runAs},
		{optDef{'h', []string{"help"}, noArg}, bothModes, func(st *parseState, _ string) error {
			return &exitRequest{usage(st.cfg.Mode)}
		}},
		{optDef{0, []string{"version"}, noArg}, bothModes, func(st *parseState, _ string) error {
			return &exitRequest{fmt.Sprintf("%s %s\n%s\n", st.prog, version, buildName())}
		}},
		{optDef{0, []string{"stats"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			n, ok := parseUnsigned(v)
			if !ok || n == 0 || n > 1<<31 {
				return st.invalid(v, "want a number of seconds")
			}
			st.cfg.Stats = time.Duration(n) * time.Second
			return nil
		}},
		{optDef{0, []string{"busy-poll"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			n, ok := parseUnsigned(v)
			if !ok || n > config.MaxBusyPoll {
				return st.invalid(v, fmt.Sprintf("want microseconds, at most %d", config.MaxBusyPoll))
			}
			st.cfg.BusyPoll = time.Duration(n) * time.Microsecond
			return nil
		}},
		{optDef{'c', []string{"conf-path"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.ConfPath = v
			return st.checkString(v, unixPathMax)
		}},
		{optDef{0, []string{"chroot-fallback"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.ChrootFallback })},

		// The guest side: socket, descriptor, tap name, capture, PID file.
		{optDef{'s', []string{"socket", "socket-path"}, requiredArg}, passtOnly, func(st *parseState, v string) error {
			st.cfg.Socket, st.cfg.FD = v, -1
			return st.checkString(v, unixPathMax)
		}},
		{optDef{0, []string{"vhost-user"}, noArg}, passtOnly, flag(func(c *config.Config) *bool { return &c.VhostUser })},
		{optDef{0, []string{"print-capabilities"}, noArg}, passtOnly, flag(func(c *config.Config) *bool { return &c.PrintCapabilities })},
		{optDef{0, []string{"repair-path"}, requiredArg}, passtOnly, func(st *parseState, v string) error {
			// Only vhost-user has a repair helper; "none" is accepted
			// anywhere, as the C original accepts it. Anything else is
			// migration, refused in finish (it depends on
			// --vhost-user, which may come later).
			if v != "none" {
				st.migrateOpt = st.name
			}
			st.cfg.RepairPath = v
			return nil
		}},
		{optDef{0, []string{"migrate-exit"}, noArg}, passtOnly, func(st *parseState, _ string) error {
			st.migrateOpt = st.name
			return nil
		}},
		{optDef{0, []string{"migrate-no-linger"}, noArg}, passtOnly, func(st *parseState, _ string) error {
			st.migrateOpt = st.name
			return nil
		}},
		{optDef{'1', []string{"one-off"}, noArg}, passtOnly, flag(func(c *config.Config) *bool { return &c.OneOff })},
		{optDef{'I', []string{"ns-ifname"}, requiredArg}, pastaOnly, func(st *parseState, v string) error {
			st.cfg.NSIfName = v
			return st.checkIfName(v)
		}},
		{optDef{'F', []string{"fd"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			n, ok := parseUnsigned(v)
			// 1 and 2 are our stdout and stderr; 0 is fine (inetd style).
			if !ok || n > 1<<31-1 || n == 1 || n == 2 {
				return st.invalid(v, "want a descriptor number, 0 or above 2")
			}
			st.cfg.FD, st.cfg.OneOff, st.cfg.Socket = int(n), true, ""
			return nil
		}},
		{optDef{'p', []string{"pcap"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.PcapFile = v
			return st.checkString(v, pathMax)
		}},
		{optDef{'P', []string{"pid"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.PidFile = v
			return st.checkString(v, pathMax)
		}},

		// Addressing.
		{optDef{'m', []string{"mtu"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			n, ok := parseUnsigned(v)
			if !ok {
				return st.invalid(v)
			}
			if n > config.MaxMTU {
				return st.invalid(v, fmt.Sprintf("too large (maximum %d)", config.MaxMTU))
			}
			st.cfg.MTU = int(n)
			return nil
		}},
		{optDef{'a', []string{"address"}, requiredArg}, bothModes, (*parseState).address},
		{optDef{'n', []string{"netmask"}, requiredArg}, bothModes, (*parseState).netmask},
		{optDef{'M', []string{"mac-addr"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			mac, ok := parseMAC(v)
			if !ok {
				return st.invalid(v)
			}
			st.cfg.OurMAC = mac
			return nil
		}},
		{optDef{'g', []string{"gateway"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			a, ok := parseIP(v)
			if !ok || a.IsUnspecified() || a.IsLoopback() || a == limitedBroadcast {
				return st.invalid(v)
			}
			ip := family(st.cfg, a)
			ip.Gateway = a
			// A given gateway means one default route via it.
			if st.cfg.Mode == config.ModePasta {
				ip.NoCopyRoutes = true
			}
			return nil
		}},
		{optDef{'i', []string{"interface"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.Interface = v
			return st.checkIfName(v)
		}},
		{optDef{'o', []string{"outbound"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			a, ok := parseIP(v)
			if !ok || a.IsUnspecified() || a.IsMulticast() || a == limitedBroadcast ||
				(a.Is6() && (a.IsLoopback() || a.Is4In6() || isV4Compat(a))) {
				return st.invalid(v)
			}
			family(st.cfg, a).Outbound = a
			return nil
		}},
		{optDef{0, []string{"outbound-if4"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.V4.OutboundIf = v
			return st.checkIfName(v)
		}},
		{optDef{0, []string{"outbound-if6"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.V6.OutboundIf = v
			return st.checkIfName(v)
		}},
		{optDef{'H', []string{"hostname"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.Hostname = v
			return st.checkString(v, maxDNameLen)
		}},
		{optDef{0, []string{"fqdn"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			st.cfg.FQDN = v
			return st.checkString(v, maxDNameLen)
		}},

		// DNS.
		{optDef{'D', []string{"dns"}, requiredArg}, bothModes, (*parseState).dns},
		{optDef{'S', []string{"search"}, requiredArg}, bothModes, (*parseState).search},
		{optDef{0, []string{"dns-forward"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			a, ok := parseIP(v)
			if !ok || a.IsUnspecified() || a.IsLoopback() || a == limitedBroadcast {
				return st.invalid(v)
			}
			family(st.cfg, a).DNSMatch = a
			return nil
		}},
		{optDef{0, []string{"dns-host"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			a, ok := parseIP(v)
			if !ok || a.IsUnspecified() || a == limitedBroadcast {
				return st.invalid(v)
			}
			family(st.cfg, a).DNSHost = a
			return nil
		}},
		{optDef{0, []string{"no-dhcp-dns"}, noArg}, passtOnly, func(st *parseState, _ string) error {
			st.cfg.AdvertiseDNS = false
			return nil
		}},
		{optDef{0, []string{"no-dhcp-search"}, noArg}, passtOnly, func(st *parseState, _ string) error {
			st.cfg.AdvertiseSearch = false
			return nil
		}},
		{optDef{0, []string{"dhcp-dns"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.AdvertiseDNS })},
		{optDef{0, []string{"dhcp-search"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.AdvertiseSearch })},

		// Address mapping.
		{optDef{0, []string{"map-host-loopback"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			return st.mapAddr(v, true)
		}},
		{optDef{0, []string{"map-guest-addr"}, requiredArg}, bothModes, func(st *parseState, v string) error {
			return st.mapAddr(v, false)
		}},
		{optDef{0, []string{"no-map-gw"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoMapGW })},
		{optDef{0, []string{"freebind"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.Freebind })},

		// Protocols and families.
		{optDef{0, []string{"no-tcp"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoTCP })},
		{optDef{0, []string{"no-udp"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoUDP })},
		{optDef{0, []string{"no-icmp"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoICMP })},
		{optDef{0, []string{"no-dhcp"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoDHCP })},
		{optDef{0, []string{"no-dhcpv6"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoDHCPv6 })},
		{optDef{0, []string{"no-ndp"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoNDP })},
		{optDef{0, []string{"no-ra"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoRA })},
		{optDef{'4', []string{"ipv4-only"}, noArg}, bothModes, func(st *parseState, _ string) error {
			st.v4Only, st.v6Only = true, false
			return nil
		}},
		{optDef{'6', []string{"ipv6-only"}, noArg}, bothModes, func(st *parseState, _ string) error {
			st.v6Only, st.v4Only = true, false
			return nil
		}},

		// Port forwarding: kept for after the loop.
		{optDef{'t', []string{"tcp-ports"}, requiredArg}, bothModes, (*parseState).forward},
		{optDef{'u', []string{"udp-ports"}, requiredArg}, bothModes, (*parseState).forward},
		{optDef{'T', []string{"tcp-ns"}, requiredArg}, pastaOnly, (*parseState).forward},
		{optDef{'U', []string{"udp-ns"}, requiredArg}, pastaOnly, (*parseState).forward},

		// pasta's namespace.
		{optDef{0, []string{"userns"}, requiredArg}, pastaOnly, func(st *parseState, v string) error {
			st.cfg.UserNS, st.cfg.NetNSOnly = v, false
			return st.checkString(v, pathMax)
		}},
		{optDef{0, []string{"netns"}, requiredArg}, pastaOnly, func(st *parseState, v string) error {
			// A name is looked up where ip-netns(8) keeps them; anything
			// with a slash is a path.
			path := v
			if !strings.Contains(v, "/") {
				path = "/run/netns/" + v
			}
			st.cfg.NetNS = path
			if v == "" || len(path) >= pathMax {
				return st.invalid(v)
			}
			return nil
		}},
		{optDef{0, []string{"netns-only"}, noArg}, pastaOnly, func(st *parseState, _ string) error {
			st.cfg.NetNSOnly, st.cfg.UserNS = true, ""
			return nil
		}},
		{optDef{0, []string{"no-netns-quit"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.NoNetNSQuit })},
		{optDef{0, []string{"config-net"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.ConfigNet })},
		{optDef{0, []string{"no-copy-routes"}, noArg}, pastaOnly, func(st *parseState, _ string) error {
			warnOption("%s: --no-copy-routes will be dropped soon", st.prog)
			st.cfg.NoCopyRoutes, st.cfg.V4.NoCopyRoutes, st.cfg.V6.NoCopyRoutes = true, true, true
			st.noCopyOpt = append(st.noCopyOpt, st.name)
			return nil
		}},
		{optDef{0, []string{"no-copy-addrs"}, noArg}, pastaOnly, func(st *parseState, _ string) error {
			warnOption("%s: --no-copy-addrs will be dropped soon", st.prog)
			st.cfg.NoCopyAddrs, st.cfg.V4.NoCopyAddrs, st.cfg.V6.NoCopyAddrs = true, true, true
			st.noCopyOpt = append(st.noCopyOpt, st.name)
			return nil
		}},
		{optDef{0, []string{"ns-mac-addr"}, requiredArg}, pastaOnly, func(st *parseState, v string) error {
			mac, ok := parseMAC(v)
			if !ok {
				return st.invalid(v)
			}
			st.cfg.GuestMAC = mac
			return nil
		}},
		{optDef{0, []string{"no-splice"}, noArg}, bothModes, flag(func(c *config.Config) *bool { return &c.NoSplice })},
		{optDef{0, []string{"splice-only"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.SpliceOnly })},
		{optDef{0, []string{"host-lo-to-ns-lo"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.HostLoToNSLo })},
		{optDef{0, []string{"accel-sockmap"}, noArg}, pastaOnly, flag(func(c *config.Config) *bool { return &c.Sockmap })},
	}
}

// forward keeps a -t/-u/-T/-U spec for forwarding().
func (st *parseState) forward(v string) error {
	short := st.name[1]
	switch st.name {
	case "--tcp-ports":
		short = 't'
	case "--udp-ports":
		short = 'u'
	case "--tcp-ns":
		short = 'T'
	case "--udp-ns":
		short = 'U'
	}
	st.fwdSpecs = append(st.fwdSpecs, fwdSpec{name: st.name, short: short, spec: v})
	return nil
}

// address applies -a ADDR[/LEN]: the guest's address of one family, fixed
// (no learning; --config-net sets just this one). IPv4 takes its prefix
// length from /LEN, else -n, else the address class; IPv6 always uses /64.
func (st *parseState) address(v string) error {
	text, plen, hasLen := strings.Cut(v, "/")
	a, ok := parseIP(text)
	if !ok || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == limitedBroadcast {
		return st.invalid(v)
	}
	a = a.Unmap()
	max := 128
	if a.Is4() {
		max = 32
	}
	n := 0
	if hasLen {
		if !isDecimal(plen) {
			return st.invalid(v)
		}
		var err error
		if n, err = strconv.Atoi(plen); err != nil || n > max {
			return st.invalid(v, "bad prefix length")
		}
		if st.nGiven {
			return st.errorf("redundant prefix length specification (-n given)")
		}
	}
	ip := family(st.cfg, a)
	ip.Addr, ip.AddrFixed, ip.NoCopyAddrs = a, true, true
	if a.Is4() {
		switch {
		case hasLen:
			ip.PrefixLen = n
		case !st.nGiven:
			ip.PrefixLen = config.ClassfulPrefix(a)
		}
		st.aIsPrefix = hasLen
	}
	return nil
}

// netmask applies -n: an IPv4 netmask in dotted decimal (contiguous) or a
// prefix length.
func (st *parseState) netmask(v string) error {
	if st.aIsPrefix {
		return st.errorf("redundant prefix length specification (-a has one)")
	}
	n := -1
	if a, ok := parseIP(v); ok && a.Is4() {
		b := a.As4()
		m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		ones := 0
		for m&(1<<31) != 0 {
			m <<= 1
			ones++
		}
		if m == 0 {
			n = ones
		}
	} else if u, ok := parseUnsigned(v); ok && u <= 32 {
		n = int(u)
	}
	if n < 0 {
		return st.invalid(v, "want a netmask or a prefix length")
	}
	st.cfg.V4.PrefixLen, st.nGiven = n, true
	return nil
}

// dns applies -D: "none", or one more server of its family (beyond three
// per family, ignored as in the C original).
func (st *parseState) dns(v string) error {
	cfg := st.cfg
	if v == "none" {
		cfg.NoDNS = true
		for _, ip := range []*config.IP{&cfg.V4, &cfg.V6} {
			ip.DNS, ip.DNSMatch, ip.DNSHost = nil, netip.Addr{}, netip.Addr{}
		}
		return nil
	}
	a, ok := parseIP(v)
	if !ok {
		return st.invalid(v)
	}
	cfg.NoDNS = false
	if ip := family(cfg, a); len(ip.DNS) < config.MaxDNS {
		ip.DNS = append(ip.DNS, a)
	}
	return nil
}

// search applies -S: "none", or one more search domain (each option is one
// name, whatever the man page says about lists).
func (st *parseState) search(v string) error {
	cfg := st.cfg
	if v == "none" {
		cfg.NoSearch, cfg.Search = true, nil
		return nil
	}
	cfg.NoSearch = false
	if len(cfg.Search) >= config.MaxSearch {
		return st.invalid(v, fmt.Sprintf("more than %d search domains", config.MaxSearch))
	}
	if err := st.checkString(v, maxDNameLen); err != nil {
		return err
	}
	cfg.Search = append(cfg.Search, v)
	return nil
}

// mapAddr applies --map-host-loopback (host) or --map-guest-addr: "none"
// for both families, or a unicast, non-loopback address of one.
func (st *parseState) mapAddr(v string, host bool) error {
	cfg := st.cfg
	if v == "none" {
		if host {
			cfg.V4.MapHostLoopback, cfg.V6.MapHostLoopback = netip.Addr{}, netip.Addr{}
			cfg.NoMapGW = true
		} else {
			cfg.V4.MapGuestAddr, cfg.V6.MapGuestAddr = netip.Addr{}, netip.Addr{}
		}
		return nil
	}
	a, ok := parseIP(v)
	if !ok || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		return st.invalid(v)
	}
	if host {
		family(cfg, a).MapHostLoopback = a
	} else {
		family(cfg, a).MapGuestAddr = a
	}
	return nil
}

// runAs applies --runas UID[:GID] or LOGIN[:GROUP]. Numbers may be
// decimal, hexadecimal or octal, as strtol() reads them. As in the C
// original, a login name that resolves to UID 0 is refused (a numeric 0
// is not).
func (st *parseState) runAs(v string) error {
	u, g, hasGroup := strings.Cut(v, ":")
	cfg := st.cfg
	if n, ok := parseUnsigned(u); ok && n <= 1<<32-1 {
		cfg.RunAsUID, cfg.RunAsGID = int(n), int(n)
	} else {
		pw, err := lookupUser(u)
		if err != nil || pw.Uid == "0" {
			return st.invalid(v, "no such user")
		}
		uid, err1 := strconv.Atoi(pw.Uid)
		gid, err2 := strconv.Atoi(pw.Gid)
		if err1 != nil || err2 != nil {
			return st.invalid(v, "no such user")
		}
		cfg.RunAsUID, cfg.RunAsGID = uid, gid
	}
	if !hasGroup {
		return nil
	}
	if n, ok := parseUnsigned(g); ok && n <= 1<<32-1 {
		cfg.RunAsGID = int(n)
		return nil
	}
	gr, err := lookupGroup(g)
	if err != nil {
		return st.invalid(v, "no such group")
	}
	gid, err := strconv.Atoi(gr.Gid)
	if err != nil {
		return st.invalid(v, "no such group")
	}
	cfg.RunAsGID = gid
	return nil
}
