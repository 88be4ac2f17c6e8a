// Package fwd holds port-forwarding rules: the typed form of the -t/-u/-T/-U
// specs of the command line, and the look-ups the datapath makes on them.
//
// # Theory of operation
//
// Each -t/-u/-T/-U option is parsed (parse.go) into rules. A rule forwards a
// run of ports, First..Last, heard on one listening address (possibly bound
// to one device) to To..To+(Last-First) on the other side, optionally to a
// fixed target address. Rules of one protocol and direction form a Spec;
// the -t and -u Specs (host to guest), and the -T and -U Specs (namespace to
// host), are built by one Table each, which enforces the per-direction
// limits of the C original (255 rules, 5 × 65536 listening sockets).
//
// Exclusions ("~first-last") never appear in the rules: they cut the
// include ranges into maximal runs, one rule per run, so a port is
// forwarded if and only if some rule's range contains it. That keeps
// Lookup a plain scan over at most 255 small structs, without allocation.
//
// Flags carry the two behaviours of "all"/"auto" specs: Weak (best effort:
// a port that cannot be bound is a warning, not fatal) and Scan (listen on
// a port only while something is bound to it on the far side, pasta's
// "auto"). A UDP Spec with scan rules also sets ScanFollowsTCP: its scan
// set takes the ports in TCP LISTEN state as well, as the C original's
// code does (its man page says UDP follows TCP in every case; the code
// does so only under auto scanning, see addressing.md §3).
package fwd

import (
	"fmt"
	"gopasst/datapath/logging"
	"iter"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is the transport protocol of a rule, as its IP protocol number.
type Proto uint8

const (
	TCP Proto = 6  // IPPROTO_TCP
	UDP Proto = 17 // IPPROTO_UDP
)

// String returns "TCP" or "UDP".
func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return "proto " + strconv.Itoa(int(p))
}

// Flags modify how a rule's listening sockets are handled.
type Flags uint8

const (
	// Weak rules are best effort: a port that cannot be bound gives a
	// warning; only a non-scan weak rule with no port bound at all is
	// fatal. Set on rules made from "all", "auto" or exclusions alone.
	Weak Flags = 1 << iota
	// Scan rules listen on a port only while the port is bound on the far
	// side (pasta's "auto": /proc/net/{tcp,udp}{,6} rescanned each second).
	Scan
)

// Rule forwards the ports First..Last heard on Addr (and IfName) to
// To..To+(Last-First) on the other side.
type Rule struct {
	Proto Proto
	// Addr is the listening address. The zero Addr is the dual-stack
	// wildcard: one IPv6 socket with IPV6_V6ONLY off. 0.0.0.0 and :: are
	// the wildcard of their family only (IPV6_V6ONLY on for ::).
	Addr netip.Addr
	// IfName, if not empty, binds the listening sockets to that device
	// (SO_BINDTODEVICE). Rules of -T/-U always have "lo" here unless the
	// kernel lacks device binding.
	IfName      string
	First, Last uint16 // listening port range, 1 ≤ First ≤ Last
	To          uint16 // target port for First; port p goes to To+(p-First)
	// TAddr, if valid, is the fixed target address; the zero Addr means
	// the default target (the guest's address, or loopback for splicing).
	// A fixed target disables splicing.
	TAddr netip.Addr
	Flags Flags
}

// DualStack reports whether r listens on the dual-stack wildcard.
func (r *Rule) DualStack() bool { return !r.Addr.IsValid() }

// Contains reports whether port is in r's listening range.
func (r *Rule) Contains(port uint16) bool { return port >= r.First && port <= r.Last }

// Target returns the target port for a listening port in r's range.
//
// Preconditions: r.Contains(port).
func (r *Rule) Target(port uint16) uint16 { return r.To + (port - r.First) }

// Ports returns how many ports r forwards (and listening sockets it needs).
func (r *Rule) Ports() int { return int(r.Last) - int(r.First) + 1 }

// Covers reports whether a packet or connection whose local (destination)
// address is local may be taken by r's listening address: the dual-stack
// wildcard covers everything, 0.0.0.0 any IPv4 address, :: any IPv6
// address, any other address only itself. IPv4-mapped IPv6 addresses count
// as IPv4. An invalid local address (unknown) is covered by every rule.
func (r *Rule) Covers(local netip.Addr) bool {
	if !r.Addr.IsValid() || !local.IsValid() {
		return true
	}
	local = local.Unmap()
	if r.Addr.Is4() != local.Is4() {
		return false
	}
	return r.Addr.IsUnspecified() || r.Addr == local
}

// String formats r for logs, in the style of the C original's rule dump:
// "TCP [*]%lo:1-1024 => 1-1024 (weak) (scan)".
func (r *Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Proto.String())
	b.WriteString(" [")
	if r.DualStack() {
		b.WriteString("*")
	} else {
		b.WriteString(r.Addr.String())
	}
	b.WriteString("]")
	if r.IfName != "" {
		b.WriteString("%")
		b.WriteString(r.IfName)
	}
	fmt.Fprintf(&b, ":%d", r.First)
	if r.Last != r.First {
		fmt.Fprintf(&b, "-%d", r.Last)
	}
	b.WriteString(" => ")
	if r.TAddr.IsValid() {
		if r.TAddr.Is6() {
			fmt.Fprintf(&b, "[%s]:", r.TAddr)
		} else {
			fmt.Fprintf(&b, "%s:", r.TAddr)
		}
	}
	fmt.Fprintf(&b, "%d", r.To)
	if r.Last != r.First {
		fmt.Fprintf(&b, "-%d", r.Target(r.Last))
	}
	if r.Flags&Weak != 0 {
		b.WriteString(" (weak)")
	}
	if r.Flags&Scan != 0 {
		b.WriteString(" (scan)")
	}
	return b.String()
}

// Spec is every rule of one protocol and direction, in command-line order.
type Spec struct {
	Proto Proto
	Rules []Rule
	// ScanFollowsTCP is set on a UDP Spec with scan rules: its scan set
	// also takes the ports in TCP LISTEN state on the far side (the C
	// original's auto mode forwards UDP for bound TCP ports, for protocols
	// such as iperf3 that use a TCP control port and the same UDP port).
	ScanFollowsTCP bool
}

// Lookup returns the first rule whose range contains port, whatever its
// listening address, and whether there is one. It does not allocate.
func (s *Spec) Lookup(port uint16) (Rule, bool) {
	for i := range s.Rules {
		if s.Rules[i].Contains(port) {
			return s.Rules[i], true
		}
	}
	return Rule{}, false
}

// Match returns the index of the first rule that takes port on the local
// address local (see Rule.Covers), and whether there is one. Several rules
// may share a port on different listening addresses; the datapath normally
// knows the rule from the listening socket, and uses Match only where it
// does not. It does not allocate.
func (s *Spec) Match(local netip.Addr, port uint16) (int, bool) {
	for i := range s.Rules {
		if s.Rules[i].Contains(port) && s.Rules[i].Covers(local) {
			return i, true
		}
	}
	return -1, false
}

// Scanning reports whether any rule of s is a scan ("auto") rule.
func (s *Spec) Scanning() bool {
	for i := range s.Rules {
		if s.Rules[i].Flags&Scan != 0 {
			return true
		}
	}
	return false
}

// Sockets returns how many listening sockets s needs at most: one per port
// per rule.
func (s *Spec) Sockets() int {
	n := 0
	for i := range s.Rules {
		n += s.Rules[i].Ports()
	}
	return n
}

// Listener is one listening socket a rule asks for.
type Listener struct {
	Rule   int   // index of the rule in Spec.Rules
	Proto  Proto // TCP or UDP
	Addr   netip.Addr
	IfName string // device to bind to, "" for none
	Port   uint16
	// DualStack: bind Addr (::) with IPV6_V6ONLY off, to take IPv4 too.
	DualStack bool
	Flags     Flags
}

// Listeners iterates over every listening socket the rules of s ask for,
// rule by rule and port by port. The dual-stack wildcard comes as ::
// with DualStack set; 0.0.0.0 and :: as themselves (:: with IPV6_V6ONLY
// on). Scan rules are included: the caller opens those only for ports that
// its scan finds bound on the far side.
func (s *Spec) Listeners() iter.Seq[Listener] {
	return func(yield func(Listener) bool) {
		for i := range s.Rules {
			r := &s.Rules[i]
			l := Listener{Rule: i, Proto: r.Proto, Addr: r.Addr, IfName: r.IfName, Flags: r.Flags}
			if r.DualStack() {
				l.Addr, l.DualStack = netip.IPv6Unspecified(), true
			}
			for p := int(r.First); p <= int(r.Last); p++ {
				l.Port = uint16(p)
				if !yield(l) {
					return
				}
			}
		}
	}
}

// String formats every rule of s, one per line, or "none".
func (s *Spec) String() string {
	if len(s.Rules) == 0 {
		return "none"
	}
	lines := make([]string, len(s.Rules))
	for i := range s.Rules {
		lines[i] = s.Rules[i].String()
	}
	return strings.Join(lines, "\n")
}

// Bind returns where to bind l given the families in use: a dual-stack
// wildcard becomes 0.0.0.0 when IPv6 is off, and stays :: (IPv6 only)
// when IPv4 is off; a listener of a family that is off is skipped (ok
// false).
//
// v4, v6: whether each family is enabled. Returns the address, whether
// the socket takes both families (IPV6_V6ONLY off), and ok.
func (l *Listener) Bind(v4, v6 bool) (addr netip.Addr, dual, ok bool) {
	switch {
	case l.DualStack && v4 && v6:
		return netip.IPv6Unspecified(), true, true
	case l.DualStack && v6:
		return netip.IPv6Unspecified(), false, true
	case l.DualStack && v4:
		return netip.IPv4Unspecified(), false, true
	case l.DualStack:
		return netip.Addr{}, false, false
	case l.Addr.Is4() && !v4, l.Addr.Is6() && !v6:
		return netip.Addr{}, false, false
	}
	return l.Addr, false, true
}

// Budget is how many more descriptors listening sockets may take: the
// descriptor limit less what flows need. Listeners of every protocol draw
// from one Budget, so that "-t all" under a low limit leaves room for the
// connections to its ports; when it runs out, the rest of the ports are
// not forwarded, with one warning.
type Budget struct {
	Left   int  // descriptors listeners may still take
	Warned bool // the warning was given
}

// NewBudget returns the budget under a descriptor limit of limit: a
// quarter of it, and at least 64 descriptors, is kept for flows, pipes and
// the rest of the process.
func NewBudget(limit int) *Budget {
	keep := max(limit/4, 64)
	return &Budget{Left: max(limit-keep, 0)}
}

// Take reports whether one more listener may be opened, and counts it.
func (b *Budget) Take() bool {
	if b == nil {
		return true
	}
	if b.Left <= 0 {
		return false
	}
	b.Left--
	return true
}

// Give returns the descriptor of a listener that was closed, or that
// could not be opened after Take.
func (b *Budget) Give() {
	if b != nil {
		b.Left++
	}
}

// Ports is a set of ports, as the port scan finds them (procnet.Ports).
type Ports interface{ Has(port uint16) bool }

// ScanChanges walks the ports of s's scan ("auto") rules and calls change
// for each whose listener must change to follow want, the ports bound on
// the other side: open true for a port in want that has no listener
// (listening reports, for rule index and port, whether it has one), open
// false for one that has a listener and is no longer in want. The
// Listener passed is complete for opening. change returns false to stop
// the walk (descriptors ran out: the rest waits for the next scan).
func (s *Spec) ScanChanges(want Ports, listening func(rule int, port uint16) bool, change func(l Listener, open bool) bool) {
	for r := range s.Rules {
		rule := &s.Rules[r]
		if rule.Flags&Scan == 0 {
			continue
		}
		for p := int(rule.First); p <= int(rule.Last); p++ {
			port := uint16(p)
			wanted, open := want.Has(port), listening(r, port)
			if wanted == open {
				continue
			}
			l := Listener{Rule: r, Proto: rule.Proto, Addr: rule.Addr, IfName: rule.IfName,
				Port: port, DualStack: rule.DualStack(), Flags: rule.Flags}
			if !change(l, wanted) {
				return
			}
		}
	}
}

// Exhausted says once, at warning level, that descriptors ran out for
// listeners (err names the port), and that the ports open so far stay
// forwarded. A nil budget says it every time.
func (b *Budget) Exhausted(err error) {
	if b != nil {
		if b.Warned {
			return
		}
		b.Warned = true
	}
	logging.Warnf("%v: the ports opened so far stay forwarded, the others are not (raise the limit: ulimit -n)", err)
}

// SideName names where a listener is, for logs: pasta's namespace (ns)
// or the host.
func SideName(ns bool) string {
	if ns {
		return "namespace"
	}
	return "host"
}
