// The configurations: kernel references, peers and gopasst, each set up
// into an instance the tests run against, probed, and torn down.

package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopasst/bench/report"
)

// config is one column family of the tables: an implementation, a path
// and an MTU.
type config struct {
	label  string // as the tables show it
	role   string // report.Role*
	mode   string // "pasta", "passt"; "" for kernel references
	path   string // "tap", "splice", "stream" (passt's socket)
	mtu    int    // 0: none (loopback, splice)
	kind   string // "loopback", "veth", "pasta", "slirp4netns", "passt", "ceiling"
	bin    string // the translator's binary
	family string // configurations that share a probe verdict
	tags   []string
	args   []string // more options for the translator (the accelerated splice path's)
}

// name returns a short description for notes and logs.
func (c config) name() string {
	if c.mtu == 0 {
		return fmt.Sprintf("%s (%s path)", c.label, c.path)
	}
	return fmt.Sprintf("%s (%s path, MTU %d)", c.label, c.path, c.mtu)
}

// selected reports whether c matches one of the -only tokens (none: all).
func (c config) selected(only []string) bool {
	if len(only) == 0 {
		return true
	}
	for _, o := range only {
		for _, t := range c.tags {
			if strings.EqualFold(o, t) {
				return true
			}
		}
	}
	return false
}

// avail is what a run has to measure with: the path of each translator
// ("" when absent) and whether the stream peer could be built.
type avail struct {
	pastaPeer, passtPeer, slirp string   // Debian's pasta and passt, slirp4netns
	oursPasta, oursPasst        string   // the run's copies of gopasst's binaries
	extraPasta, extraPasst      []string // -pasta and -passt builds
	accel                       []string // gopasst pasta's options for its accelerated splice path (-accel)
}

// catalog returns every configuration p and av allow, unfiltered, in the
// order they run: references first, then peers, other builds, gopasst.
// It is the pure part of configs (the tests call it).
func catalog(p profile, av avail) []config {
	var out []config
	add := func(c config) { out = append(out, c) }
	add(config{label: "loopback", role: report.RoleKernel, path: "splice", kind: "loopback",
		family: "loopback", tags: []string{"loopback", "kernel", "splice"}})
	for _, m := range p.vethMTUs {
		add(config{label: "veth", role: report.RoleKernel, path: "tap", mtu: m, kind: "veth",
			family: "veth", tags: []string{"veth", "kernel", "tap"}})
	}
	// The stream path's ceiling: two stream peers joined by streampeer's
	// relay, a link that carries passt's framing with nothing translated.
	for _, m := range p.ceilingMTUs {
		add(config{label: labelCeiling, role: report.RoleKernel, mode: "passt", path: "stream", mtu: m, kind: "ceiling",
			family: "ceiling", tags: []string{"ceiling", "stream-ceiling", "kernel", "stream"}})
	}
	if av.pastaPeer != "" {
		for _, m := range p.tapMTUs {
			add(config{label: "Debian pasta", role: report.RolePeer, mode: "pasta", path: "tap", mtu: m, kind: "pasta",
				bin: av.pastaPeer, family: "debian-pasta-tap", tags: []string{"debian", "debian-pasta", "peer", "tap"}})
		}
		add(config{label: "Debian pasta", role: report.RolePeer, mode: "pasta", path: "splice", kind: "pasta",
			bin: av.pastaPeer, family: "debian-pasta-splice", tags: []string{"debian", "debian-pasta", "peer", "splice"}})
	}
	if av.passtPeer != "" {
		for _, m := range p.tapMTUs {
			add(config{label: "Debian passt", role: report.RolePeer, mode: "passt", path: "stream", mtu: m, kind: "passt",
				bin: av.passtPeer, family: "debian-passt", tags: []string{"debian", "debian-passt", "peer", "passt", "stream"}})
		}
	}
	if av.slirp != "" {
		for _, m := range p.slirpMTUs {
			add(config{label: "slirp4netns", role: report.RolePeer, mode: "pasta", path: "tap", mtu: m, kind: "slirp4netns",
				bin: av.slirp, family: "slirp4netns", tags: []string{"slirp4netns", "slirp", "peer", "tap"}})
		}
	}
	for i, b := range av.extraPasta {
		label := fmt.Sprintf("pasta %s", b)
		fam := "extra-" + strconv.Itoa(i)
		for _, m := range p.tapMTUs {
			add(config{label: label, role: report.RoleExtra, mode: "pasta", path: "tap", mtu: m, kind: "pasta",
				bin: b, family: fam + "-tap", tags: []string{"extra", "tap"}})
		}
		add(config{label: label, role: report.RoleExtra, mode: "pasta", path: "splice", kind: "pasta",
			bin: b, family: fam + "-splice", tags: []string{"extra", "splice"}})
	}
	for i, b := range av.extraPasst {
		for _, m := range p.tapMTUs {
			add(config{label: fmt.Sprintf("passt %s", b), role: report.RoleExtra, mode: "passt", path: "stream", mtu: m, kind: "passt",
				bin: b, family: "extra-passt-" + strconv.Itoa(i), tags: []string{"extra", "passt", "stream"}})
			// The same build as a vhost-user back end through
			// test/vhostpeer: a build without --vhost-user shows as
			// not working (its refusal in the notes).
			add(config{label: fmt.Sprintf("passt %s, vhost-user", b), role: report.RoleExtra, mode: "passt", path: "vhost-user", mtu: m, kind: "passt",
				bin: b, family: "extra-passt-" + strconv.Itoa(i) + "-vhost-user", tags: []string{"extra", "passt", "vhost-user"}})
		}
	}
	if av.oursPasta != "" {
		for _, m := range p.tapMTUs {
			add(config{label: "gopasst pasta", role: report.RoleOurs, mode: "pasta", path: "tap", mtu: m, kind: "pasta",
				bin: av.oursPasta, family: "gopasst-tap", tags: []string{"gopasst", "gopasst-tap", "ours", "tap"}})
		}
		add(config{label: "gopasst pasta", role: report.RoleOurs, mode: "pasta", path: "splice", kind: "pasta",
			bin: av.oursPasta, family: "gopasst-splice", tags: []string{"gopasst", "gopasst-splice", "ours", "splice"}})
		// The in-kernel accelerator of the splice path (issue 12's
		// sockmap), a column of its own beside plain splice when -accel
		// names the options that turn it on.
		if len(av.accel) > 0 {
			add(config{label: labelAccel, role: report.RoleOurs, mode: "pasta", path: "splice", kind: "pasta",
				bin: av.oursPasta, family: "gopasst-accel", args: av.accel,
				tags: []string{"gopasst", "gopasst-accel", "accel", "ours", "splice"}})
		}
	}
	if av.oursPasst != "" {
		for _, m := range p.tapMTUs {
			add(config{label: "gopasst passt", role: report.RoleOurs, mode: "passt", path: "stream", mtu: m, kind: "passt",
				bin: av.oursPasst, family: "gopasst-passt", tags: []string{"gopasst", "gopasst-passt", "ours", "passt", "stream"}})
		}
		// passt --vhost-user, its guest played by test/vhostpeer (the
		// rings in a memfd, bridged to the guest namespace's tap).
		for _, m := range p.tapMTUs {
			add(config{label: labelVhost, role: report.RoleOurs, mode: "passt", path: "vhost-user", mtu: m, kind: "passt",
				bin: av.oursPasst, family: "gopasst-vhost-user", tags: []string{"gopasst", "gopasst-vhost-user", "ours", "passt", "vhost-user"}})
		}
	}
	return out
}

// labelCeiling is the stream ceiling's label in the tables.
const labelCeiling = "stream ceiling"

// labelVhost is the label of gopasst's passt in vhost-user mode.
const labelVhost = "gopasst passt, vhost-user"

// labelAccel is the label of gopasst's accelerated splice path.
const labelAccel = "gopasst pasta, accelerated"

// needsPeer reports whether configuration c runs test/streampeer (passt's
// guest, or both ends of the ceiling's link).
func (c config) needsPeer() bool { return c.kind == "passt" || c.kind == "ceiling" }

// filter returns the configurations of cs that -only and -mtu select.
func (o Options) filter(cs []config) []config {
	var out []config
	for _, c := range cs {
		if !c.selected(o.Only) {
			continue
		}
		if c.mtu != 0 && len(o.MTUs) > 0 {
			keep := false
			for _, m := range o.MTUs {
				keep = keep || m == c.mtu
			}
			if !keep {
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// configs returns the configurations of the run, in the order they run
// (see catalog); those whose program is absent are left out with a note,
// and so are passt mode's when test/streampeer cannot be built.
func (e *env) configs() []config {
	var av avail
	var ok bool
	if av.pastaPeer, ok = lookPath("pasta"); !ok {
		e.note("Debian pasta: not installed (package passt; test/setup installs it): column left out")
	}
	if av.passtPeer, ok = lookPath("passt"); !ok {
		e.note("Debian passt: not installed (package passt; test/setup installs it): column left out")
	}
	if av.slirp, ok = lookPath("slirp4netns"); !ok {
		e.note("slirp4netns: not installed (test/setup installs it): column left out")
	}
	av.extraPasta, av.extraPasst = e.opts.ExtraPasta, e.opts.ExtraPasst
	av.accel = e.opts.AccelArgs
	if ours, err := e.snapshotOurs(); err != nil {
		e.note(fmt.Sprintf("gopasst pasta and passt: %v: columns left out", err))
	} else {
		av.oursPasta, av.oursPasst = ours, filepath.Join(filepath.Dir(ours), "passt")
	}
	cs := e.opts.filter(catalog(e.prof, av))
	need := false
	for _, c := range cs {
		need = need || c.needsPeer()
	}
	if !need {
		return cs
	}
	if err := e.buildPeer(); err != nil {
		e.note(fmt.Sprintf("passt mode and the stream ceiling: %v: left out", err))
		var keep []config
		for _, c := range cs {
			if !c.needsPeer() {
				keep = append(keep, c)
			}
		}
		return keep
	}
	return cs
}

// buildPeer builds test/streampeer from the gopasst tree into the run's
// private directory (e.peerBin): passt's guest and the ceiling's link;
// and test/vhostpeer beside it (e.vhostPeerBin), passt's vhost-user guest.
// The harness runs them as programs, by their documented command lines,
// and never imports them (only test/ imports test/).
func (e *env) buildPeer() error {
	if e.peerBin != "" {
		return nil
	}
	bin, err := e.buildTestProgram("streampeer")
	if err != nil {
		return err
	}
	e.peerBin = bin
	// test/vhostpeer, for passt's vhost-user mode: left out (with a note
	// when that mode is selected) if this tree has none.
	if e.vhostPeerBin, err = e.buildTestProgram("vhostpeer"); err != nil {
		e.note(fmt.Sprintf("%v: vhost-user left out", err))
	}
	return nil
}

// buildTestProgram builds test/NAME of the gopasst tree into the run's
// private directory, without the module proxy (the run's namespace has no
// network: the tree's own dependencies are in the module cache once
// gopasst is built). Returns the program's path.
func (e *env) buildTestProgram(name string) (string, error) {
	out := filepath.Join(e.sockDir, name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./test/"+name)
	cmd.Dir = e.opts.Bin
	cmd.Env = append(os.Environ(), "GOPROXY=off")
	cmd.SysProcAttr = sysAttr()
	cmd.WaitDelay = 2 * time.Second
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building test/%s (go build in %s): %v: %s", name, e.opts.Bin, err, lastLine(string(b)))
	}
	return out, nil
}

// lookPath returns the path of program name and whether it was found.
func lookPath(name string) (string, bool) {
	p, err := exec.LookPath(name)
	return p, err == nil
}

// instance is a configuration set up and ready for tests.
type instance struct {
	cfg        config
	ns         *netns    // the namespace side; nil: the outer namespace itself
	hostTarget [2]string // where namespace clients reach host servers, IPv4 and IPv6 ("": none)
	nsTarget   [2]string // where host clients reach namespace servers
	translator *proc
	ifname     string
	nsRR       *proc
	helpers    []*proc // not measured: passt's guest peer, the ceiling's relay and peers
	undo       []func()
	peakRSS    int64 // KiB, sampled after each test
}

// nsPrefix returns the command prefix that runs in the namespace side.
func (in *instance) nsPrefix() []string {
	if in.ns == nil {
		return nil
	}
	return in.ns.prefix
}

// errNotWorking marks a configuration whose probe failed.
type errNotWorking struct{ reason string }

// Error returns the reason.
func (e errNotWorking) Error() string { return "not working: " + e.reason }

// setup brings configuration c up and probes it; on failure everything it
// started is ended again.
func (e *env) setup(ctx context.Context, c config) (*instance, error) {
	in := &instance{cfg: c}
	var err error
	switch c.kind {
	case "loopback":
		in.hostTarget = [2]string{"127.0.0.1", "::1"}
		in.nsTarget = in.hostTarget
	case "veth":
		err = e.setupVeth(ctx, in)
	case "pasta":
		err = e.setupPasta(ctx, in)
	case "slirp4netns":
		err = e.setupSlirp(ctx, in)
	case "passt":
		err = e.setupPasst(ctx, in)
	case "ceiling":
		err = e.setupCeiling(ctx, in)
	default:
		err = fmt.Errorf("unknown configuration kind %q", c.kind)
	}
	if err == nil {
		err = e.startNSServers(in)
	}
	if err == nil && c.role != report.RoleKernel {
		err = e.probe(ctx, in)
	}
	if err != nil {
		e.teardown(in)
		return nil, err
	}
	return in, nil
}

// teardown ends everything the instance started, newest first.
func (e *env) teardown(in *instance) {
	if in.translator != nil && !in.translator.exited() {
		if kb, err := treePeakRSSKiB(in.translator.pid()); err == nil && kb > in.peakRSS {
			in.peakRSS = kb
		}
	}
	e.procs.stop(in.nsRR, time.Second)
	for i := len(in.helpers) - 1; i >= 0; i-- {
		e.procs.stop(in.helpers[i], time.Second)
	}
	e.procs.stop(in.translator, 2*time.Second)
	for i := len(in.undo) - 1; i >= 0; i-- {
		in.undo[i]()
	}
	if in.ns != nil {
		e.procs.stop(in.ns.holder, time.Second)
	}
}

// setupVeth makes the kernel reference: a veth pair at the configuration's
// MTU between the outer namespace and a new one.
func (e *env) setupVeth(ctx context.Context, in *instance) error {
	ns, err := e.newNetns(ctx, false)
	if err != nil {
		return err
	}
	in.ns = ns
	mtu := strconv.Itoa(in.cfg.mtu)
	pid := strconv.Itoa(ns.pid())
	host := [][]string{
		{"ip", "link", "add", "vb0", "mtu", mtu, "type", "veth", "peer", "name", "vb1", "mtu", mtu},
		{"ip", "link", "set", "vb1", "netns", pid},
		{"ip", "addr", "add", vethHost4 + "/24", "dev", "vb0"},
		{"ip", "-6", "addr", "add", vethHost6 + "/64", "dev", "vb0", "nodad"},
		{"ip", "link", "set", "vb0", "up"},
	}
	for i, c := range host {
		if _, _, err := run(ctx, 5*time.Second, c); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		if i == 0 {
			in.undo = append(in.undo, func() { _, _, _ = run(context.Background(), 5*time.Second, []string{"ip", "link", "del", "vb0"}) })
		}
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", vethNS4 + "/24", "dev", "vb1"},
		{"ip", "-6", "addr", "add", vethNS6 + "/64", "dev", "vb1", "nodad"},
		{"ip", "link", "set", "vb1", "up"},
	} {
		if _, err := ns.run(ctx, 5*time.Second, c...); err != nil {
			return fmt.Errorf("veth namespace side: %w", err)
		}
	}
	in.ifname = "vb1"
	in.hostTarget = [2]string{vethHost4, vethHost6}
	in.nsTarget = [2]string{vethNS4, vethNS6}
	if !ns.waitAddr(ctx, "vb1", 4, 3*time.Second, nil) {
		return errors.New("veth: no IPv4 address")
	}
	return nil
}

// portList returns ports as pasta's comma-separated list.
func portList(ports ...int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// setupPasta starts a pasta (Debian's, ours, or another build) attached
// to a new namespace, with the command line of the C original's tests:
// the namespace's servers forwarded from the host (-t/-u); on the splice
// path also the host's servers forwarded from the namespace (-T/-U).
func (e *env) setupPasta(ctx context.Context, in *instance) error {
	ns, err := e.newNetns(ctx, true)
	if err != nil {
		return err
	}
	in.ns = ns
	in.ifname = "tap0"
	mtu := in.cfg.mtu
	if mtu == 0 {
		mtu = 65520
	}
	toNS := portList(nsPortIperf, nsPortRR, nsPortCtl)
	toHost := "none"
	if in.cfg.path == "splice" {
		toHost = portList(hostPortIperf, hostPortRR, hostPortCtl)
	}
	args := []string{in.cfg.bin, "--config-net", "-f", "-I", "tap0", "--mtu", strconv.Itoa(mtu),
		"-t", toNS, "-u", toNS, "-T", toHost, "-U", toHost, "--runas", "0"}
	args = append(append(args, in.cfg.args...), strconv.Itoa(ns.pid()))
	tr, err := e.procs.start(in.cfg.label, e.pin(e.cpuTranslator, args))
	if err != nil {
		return errNotWorking{err.Error()}
	}
	in.translator = tr
	if !ns.waitAddr(ctx, "tap0", 4, 5*time.Second, tr.exited) {
		why := "tap0 got no IPv4 address within 5 s"
		if tr.exited() {
			why = fmt.Sprintf("exited (%v)", tr.err)
		}
		return errNotWorking{fmt.Sprintf("%s: %s", why, lastLine(tr.output()))}
	}
	if in.cfg.path == "splice" {
		in.hostTarget = [2]string{"127.0.0.1", "::1"}
		in.nsTarget = [2]string{"127.0.0.1", "::1"}
	} else {
		in.hostTarget = [2]string{hostGW4, hostGW6}
		in.nsTarget = [2]string{hostAddr4, hostAddr6}
	}
	if !ns.waitAddr(ctx, "tap0", 6, 3*time.Second, tr.exited) {
		e.logf("%s: no usable IPv6 address on tap0: IPv6 tests will fail", in.cfg.name())
	}
	// pasta binds its forwarded ports after configuring the tap: wait for
	// the host-side listener (in pasta's own namespace) and, on the splice
	// path, the namespace-side one, or the probe races with them.
	if !waitFor(3*time.Second, func() bool { return tr.exited() || listening(tr.pid(), nsPortRR) }) || tr.exited() {
		return errNotWorking{fmt.Sprintf("no listener on forwarded port %d within 3 s: %s", nsPortRR, lastLine(tr.output()))}
	}
	if in.cfg.path == "splice" && !waitFor(3*time.Second, func() bool { return listening(ns.pid(), hostPortRR) }) {
		return errNotWorking{fmt.Sprintf("no listener on port %d in the namespace (-T) within 3 s", hostPortRR)}
	}
	return nil
}

// Addressing of the stream ceiling's link: peer B's tap in the outer
// namespace (it plays the host there, as the veth reference's vb0 does),
// peer A's in the configuration's namespace.
const (
	ceilHost4 = "198.18.2.1"
	ceilNS4   = "198.18.2.2"
	ceilHost6 = "2001:db8:9a57::1"
	ceilNS6   = "2001:db8:9a57::2"
	ceilTap   = "st0"
	guestTap  = "eth0"
)

// peerReady bounds a streampeer's start (tap, connection, "ready"), and
// its -wait for passt's socket.
const peerReady = 6 * time.Second

// startPeer starts test/streampeer (peer or relay mode, args after the
// binary) as a helper of in, pinned with the client (it stands for the
// guest's card and its host thread), and waits for its "ready" line. It
// gives up early when giveUp (if not nil) reports true.
func (e *env) startPeer(in *instance, name string, args []string, giveUp func() bool) error {
	return e.startPeerBin(in, name, e.peerBin, args, giveUp)
}

// startPeerBin is startPeer with the peer's binary bin (test/streampeer's
// or test/vhostpeer's: the same command line and "ready" line).
func (e *env) startPeerBin(in *instance, name, bin string, args []string, giveUp func() bool) error {
	pr, err := e.procs.start(name, e.pin(e.cpuClient, append([]string{bin}, args...)))
	if err != nil {
		return errNotWorking{err.Error()}
	}
	in.helpers = append(in.helpers, pr)
	ready := waitFor(peerReady, func() bool {
		return pr.exited() || (giveUp != nil && giveUp()) || strings.Contains(pr.output(), "ready")
	})
	switch {
	case pr.exited():
		return errNotWorking{fmt.Sprintf("%s exited (%v): %s", name, pr.err, lastLine(pr.output()))}
	case !ready:
		return errNotWorking{fmt.Sprintf("%s not ready within %v: %s", name, peerReady, lastLine(pr.output()))}
	}
	return nil
}

// nsPath returns the path of n's network namespace, as streampeer's
// -netns takes it.
func (n *netns) nsPath() string { return fmt.Sprintf("/proc/%d/ns/net", n.pid()) }

// setupPasst starts a passt (Debian's, ours, or another build) in the
// outer namespace, which plays the host, as the pasta configurations'
// translators run there: -f -s SOCKET, the MTU of the column, the
// namespace-side ports forwarded from the host (-t/-u), --runas 0 (as root
// it would otherwise become nobody, who cannot use the run's private
// socket directory). The guest is a new namespace whose tap eth0
// test/streampeer makes and bridges to passt's socket at kernel speed. The
// guest configures itself statically with what passt advertises (the
// host's addresses, the gateways, which passt maps to the host's
// loopback): what DHCP would give, without a client's timing in the
// start-up, as pasta's --config-net does for the tap configurations.
func (e *env) setupPasst(ctx context.Context, in *instance) error {
	ns, err := e.newNetns(ctx, false)
	if err != nil {
		return err
	}
	in.ns = ns
	in.ifname = guestTap
	mtu := strconv.Itoa(in.cfg.mtu)
	sock := filepath.Join(e.sockDir, fmt.Sprintf("passt-%d.sock", ns.pid()))
	in.undo = append(in.undo, func() { os.Remove(sock) })
	ports := portList(nsPortIperf, nsPortRR, nsPortCtl)
	args := []string{in.cfg.bin, "-f", "-s", sock, "--mtu", mtu, "-t", ports, "-u", ports, "--runas", "0"}
	peerBin, peerName := e.peerBin, "streampeer"
	if in.cfg.path == "vhost-user" {
		if e.vhostPeerBin == "" {
			return errNotWorking{"no test/vhostpeer in this tree"}
		}
		args = append(args, "--vhost-user")
		peerBin, peerName = e.vhostPeerBin, "vhostpeer"
	}
	tr, err := e.procs.start(in.cfg.label, e.pin(e.cpuTranslator, args))
	if err != nil {
		return errNotWorking{err.Error()}
	}
	in.translator = tr
	peer := []string{"-socket", sock, "-netns", ns.nsPath(), "-tap", guestTap, "-mtu", mtu, "-wait", peerReady.String()}
	if err := e.startPeerBin(in, peerName, peerBin, peer, tr.exited); err != nil {
		if tr.exited() {
			return errNotWorking{fmt.Sprintf("exited (%v): %s", tr.err, lastLine(tr.output()))}
		}
		return err
	}
	for _, c := range [][]string{
		{"sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/" + guestTap + "/accept_ra"},
		{"ip", "addr", "add", hostAddr4 + "/24", "dev", guestTap},
		{"ip", "route", "replace", "default", "via", hostGW4, "dev", guestTap},
		{"ip", "-6", "addr", "add", hostAddr6 + "/64", "dev", guestTap, "nodad"},
		{"ip", "-6", "route", "replace", "default", "via", hostGW6, "dev", guestTap},
	} {
		if _, err := ns.run(ctx, 5*time.Second, c...); err != nil {
			return fmt.Errorf("guest addressing: %w", err)
		}
	}
	if !ns.waitAddr(ctx, guestTap, 4, 3*time.Second, tr.exited) {
		return errNotWorking{"guest's " + guestTap + ": no IPv4 address: " + lastLine(tr.output())}
	}
	in.hostTarget = [2]string{hostGW4, hostGW6}
	in.nsTarget = [2]string{"127.0.0.1", "::1"}
	// The forwarded ports listen in our namespace (the host's).
	if !waitFor(3*time.Second, func() bool { return tr.exited() || listening(os.Getpid(), nsPortRR) }) || tr.exited() {
		return errNotWorking{fmt.Sprintf("no listener on forwarded port %d within 3 s: %s", nsPortRR, lastLine(tr.output()))}
	}
	return nil
}

// setupCeiling makes the stream path's ceiling: streampeer's relay, and a
// peer on each of its sockets, peer A with its tap in a new namespace,
// peer B with its tap (st0) in the outer namespace, which plays the host
// as for the veth reference. Frames cross the same tap devices and the
// same framing on UNIX stream sockets as through passt, copied verbatim:
// no translation, no host sockets.
func (e *env) setupCeiling(ctx context.Context, in *instance) error {
	ns, err := e.newNetns(ctx, false)
	if err != nil {
		return err
	}
	in.ns = ns
	in.ifname = guestTap
	mtu := strconv.Itoa(in.cfg.mtu)
	a := filepath.Join(e.sockDir, fmt.Sprintf("ceiling-%d-a.sock", ns.pid()))
	b := filepath.Join(e.sockDir, fmt.Sprintf("ceiling-%d-b.sock", ns.pid()))
	in.undo = append(in.undo, func() { os.Remove(a); os.Remove(b) })
	// The relay is the ceiling's "translator" on the CPUs, but not one
	// of the tables: its CPU and memory are not measured.
	relay, err := e.procs.start("streampeer relay", e.pin(e.cpuTranslator, []string{e.peerBin, "relay", "-a", a, "-b", b}))
	if err != nil {
		return errNotWorking{err.Error()}
	}
	in.helpers = append(in.helpers, relay)
	if !waitFor(peerReady, func() bool { return relay.exited() || strings.Contains(relay.output(), "ready") }) || relay.exited() {
		return errNotWorking{"streampeer relay not ready: " + lastLine(relay.output())}
	}
	// Its tap goes with peer B: wait for that, so that the next ceiling
	// can make st0 again.
	in.undo = append(in.undo, func() {
		waitFor(3*time.Second, func() bool { return devBytes(os.Getpid(), ceilTap) < 0 })
	})
	if err := e.startPeer(in, "streampeer A", []string{"-socket", a, "-netns", ns.nsPath(), "-tap", guestTap, "-mtu", mtu,
		"-mac", "02:00:00:00:57:02", "-wait", peerReady.String()}, relay.exited); err != nil {
		return err
	}
	if err := e.startPeer(in, "streampeer B", []string{"-socket", b, "-netns", fmt.Sprintf("/proc/%d/ns/net", os.Getpid()),
		"-tap", ceilTap, "-mtu", mtu, "-mac", "02:00:00:00:57:01", "-wait", peerReady.String()}, relay.exited); err != nil {
		return err
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", ceilHost4 + "/24", "dev", ceilTap},
		{"ip", "-6", "addr", "add", ceilHost6 + "/64", "dev", ceilTap, "nodad"},
	} {
		if _, _, err := run(ctx, 5*time.Second, c); err != nil {
			return fmt.Errorf("ceiling, host side: %w", err)
		}
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", ceilNS4 + "/24", "dev", guestTap},
		{"ip", "-6", "addr", "add", ceilNS6 + "/64", "dev", guestTap, "nodad"},
	} {
		if _, err := ns.run(ctx, 5*time.Second, c...); err != nil {
			return fmt.Errorf("ceiling, namespace side: %w", err)
		}
	}
	if !ns.waitAddr(ctx, guestTap, 4, 3*time.Second, nil) {
		return errors.New("ceiling: no IPv4 address")
	}
	in.hostTarget = [2]string{ceilHost4, ceilHost6}
	in.nsTarget = [2]string{ceilNS4, ceilNS6}
	return nil
}

// lastLine returns the last non-empty line of s, shortened.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 200 {
		l = l[:200] + "..."
	}
	if l == "" {
		return "no output"
	}
	return l
}

// setupSlirp starts slirp4netns on a new namespace: the namespace reaches
// the host's loopback at 10.0.2.2 and host ports are forwarded through its
// API socket. It has no IPv6 path to the host's loopback here.
func (e *env) setupSlirp(ctx context.Context, in *instance) error {
	ns, err := e.newNetns(ctx, true)
	if err != nil {
		return err
	}
	in.ns = ns
	in.ifname = "tap0"
	sock := filepath.Join(e.sockDir, fmt.Sprintf("slirp-%d.sock", ns.pid()))
	args := []string{in.cfg.bin, "--configure", "--mtu=" + strconv.Itoa(in.cfg.mtu), "--api-socket", sock,
		strconv.Itoa(ns.pid()), "tap0"}
	tr, err := e.procs.start("slirp4netns", e.pin(e.cpuTranslator, args))
	if err != nil {
		return errNotWorking{err.Error()}
	}
	in.translator = tr
	in.undo = append(in.undo, func() { os.Remove(sock) })
	if !ns.waitAddr(ctx, "tap0", 4, 5*time.Second, tr.exited) {
		return errNotWorking{"tap0 got no IPv4 address within 5 s: " + lastLine(tr.output())}
	}
	for _, proto := range []string{"tcp", "udp"} {
		for _, port := range []int{nsPortIperf, nsPortRR, nsPortCtl} {
			if err := slirpHostfwd(sock, proto, port); err != nil {
				return errNotWorking{err.Error()}
			}
		}
	}
	in.hostTarget = [2]string{"10.0.2.2", ""}
	in.nsTarget = [2]string{hostAddr4, ""}
	return nil
}

// slirpHostfwd asks slirp4netns, through its API socket, to forward host
// port to the same port of the namespace's address (10.0.2.100).
func slirpHostfwd(sock, proto string, port int) error {
	var conn net.Conn
	var err error
	waitFor(3*time.Second, func() bool {
		conn, err = net.DialTimeout("unix", sock, time.Second)
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	req := map[string]any{"execute": "add_hostfwd", "arguments": map[string]any{
		"proto": proto, "host_addr": "0.0.0.0", "host_port": port, "guest_port": port}}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	var resp map[string]any
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return fmt.Errorf("slirp4netns API reply: %w", err)
	}
	if e, ok := resp["error"]; ok {
		return fmt.Errorf("slirp4netns add_hostfwd %s %d: %v", proto, port, e)
	}
	return nil
}

// startNSServers starts the namespace side's rr server (iperf3 servers are
// started per test) and waits until it listens.
func (e *env) startNSServers(in *instance) error {
	var err error
	if e.neper == "" {
		in.nsRR, err = e.startServer("namespace rr", in.nsPrefix(), append(append([]string{}, e.rrCmd...), "-P", strconv.Itoa(nsPortRR)), nsPortRR)
	}
	return err
}

// startServer starts a server (inside prefix, pinned to the server CPU)
// and waits up to 3 s until its namespace has port listening.
func (e *env) startServer(name string, prefix, args []string, port int) (*proc, error) {
	full := e.pin(e.cpuServer, append(append([]string{}, prefix...), args...))
	pr, err := e.procs.start(name, full)
	if err != nil {
		return nil, err
	}
	if !waitFor(3*time.Second, func() bool { return !pr.exited() && listening(pr.pid(), port) }) {
		e.procs.stop(pr, time.Second)
		return nil, fmt.Errorf("%s did not listen on port %d: %s", name, port, lastLine(pr.output()))
	}
	return pr, nil
}

// probe checks, bounded in time, that a namespace client reaches the host
// side through the translator: one tcp_rr transaction to the host's rr
// server with a 2 s timeout, an answer from the far end and not only a
// connection the translator accepted. With neper, whose servers are per
// test, a bench/rr server answers the probe on the same port and goes
// again. On the splice path it also checks that the tap did not carry the
// probe.
func (e *env) probe(ctx context.Context, in *instance) error {
	if e.neper != "" {
		srv, err := e.startServer("probe rr", nil, append(append([]string{}, e.rrCmd...), "-P", strconv.Itoa(hostPortRR)), hostPortRR)
		if err != nil {
			return err
		}
		defer e.procs.stop(srv, time.Second)
	}
	before := in.ns.tapBytes(in.ifname)
	args := append(append(append([]string{}, in.nsPrefix()...), e.rrCmd...),
		"-c", "-H", in.hostTarget[0], "-P", strconv.Itoa(hostPortRR), "-n", "1", "-l", "0", "-timeout", "2s")
	var err error
	for try := 0; try < 3; try++ { // a refused first connection may be a late listener
		if _, _, err = run(ctx, 4*time.Second, args); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		why := fmt.Sprintf("no TCP connection from the namespace to %s:%d: %v", in.hostTarget[0], hostPortRR, err)
		if in.translator != nil && in.translator.exited() {
			why += "; translator exited: " + lastLine(in.translator.output())
		}
		return errNotWorking{why}
	}
	if in.cfg.path == "splice" {
		if d := in.ns.tapBytes(in.ifname) - before; d >= 200 {
			return errNotWorking{fmt.Sprintf("the probe to 127.0.0.1 crossed the tap (%d bytes): no splice path", d)}
		}
	}
	return nil
}

// snapshotOurs copies gopasst's binaries (passt and passt.avx2, which pasta
// and passt re-execute into on capable CPUs) from the tree into the run's
// private directory and returns the path of the copy's pasta link (the
// copy of passt is beside it, e.oursPasst): other engineers
// rebuild the tree's binaries while a run goes on, and every repetition
// must measure the same build.
func (e *env) snapshotOurs() (string, error) {
	if e.oursPasta != "" {
		return e.oursPasta, nil
	}
	dir := filepath.Join(e.sockDir, "gopasst")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{"passt", "passt.avx2"} {
		b, err := os.ReadFile(filepath.Join(e.opts.Bin, f))
		if err != nil {
			if f == "passt" {
				return "", fmt.Errorf("%s not built (run make)", filepath.Join(e.opts.Bin, f))
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			return "", err
		}
		link := "pasta" + strings.TrimPrefix(f, "passt")
		if err := os.Symlink(f, filepath.Join(dir, link)); err != nil {
			return "", err
		}
	}
	e.oursPasta = filepath.Join(dir, "pasta")
	e.oursPasst = filepath.Join(dir, "passt")
	return e.oursPasta, nil
}
