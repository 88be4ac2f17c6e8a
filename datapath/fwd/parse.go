// Parsing of -t/-u/-T/-U port-forwarding specs into rules.
//
// The grammar (addressing.md §3; ports decimal, first ≤ last ≤ 65535):
//
//	spec    = "none" | [listen "/"] chunk *("," chunk)
//	listen  = addr ["%" ifname] | "*" ["%" ifname] | "%" ifname
//	chunk   = "all" [":" taddr] | "auto" | "~" range | range [":" target]
//	target  = taddr "/" range | taddr | range
//	range   = port ["-" port]
//
// Addresses are IPv4 or IPv6, the latter optionally in brackets.

package fwd

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Direction says which way a Table forwards.
type Direction uint8

const (
	// Inbound: host to guest, -t and -u (both modes).
	Inbound Direction = iota
	// Outbound: namespace to host, -T and -U (pasta only). These specs take
	// no listening address: they always listen on the namespace's loopback.
	Outbound
)

// Limits of the C original, per direction (TCP and UDP rules together).
const (
	MaxRules   = 255
	MaxSockets = 5 * 65536
)

// DefaultEphemeralFirst and DefaultEphemeralLast are the ephemeral port
// range of RFC 6335, used when the host's ip_local_port_range is unknown.
const (
	DefaultEphemeralFirst = 49152
	DefaultEphemeralLast  = 65535
)

// Caps is what the rest of the configuration allows rules to use.
type Caps struct {
	IPv4, IPv6   bool // address families in use (-4/-6)
	NoTCP, NoUDP bool // protocols switched off (--no-tcp/--no-udp)
	// Scan allows "auto" (pasta only).
	Scan bool
	// NoBindToDevice: the kernel lacks SO_BINDTODEVICE for listeners
	// (before 5.7). "%IF" is then an error, and -T/-U listen on 127.0.0.1
	// and ::1 instead of the wildcard bound to "lo".
	NoBindToDevice bool
	// EphemeralFirst..EphemeralLast is the host's ephemeral port range,
	// left out of "all", "auto" and exclusion-only specs. Zero values
	// mean DefaultEphemeralFirst..DefaultEphemeralLast.
	EphemeralFirst, EphemeralLast uint16
}

// Table builds the rules of one direction: the TCP and the UDP Spec.
type Table struct {
	Dir      Direction
	Caps     Caps
	TCP, UDP Spec
	given    [2]bool // a spec was parsed for TCP, UDP
}

// NewTable returns an empty table for dir under caps.
func NewTable(dir Direction, caps Caps) *Table {
	if caps.EphemeralFirst == 0 && caps.EphemeralLast == 0 {
		caps.EphemeralFirst, caps.EphemeralLast = DefaultEphemeralFirst, DefaultEphemeralLast
	}
	return &Table{Dir: dir, Caps: caps, TCP: Spec{Proto: TCP}, UDP: Spec{Proto: UDP}}
}

// Spec returns the Spec of t for proto.
func (t *Table) Spec(proto Proto) *Spec {
	if proto == UDP {
		return &t.UDP
	}
	return &t.TCP
}

// Given reports whether a spec (even "none") was parsed for proto.
func (t *Table) Given(proto Proto) bool { return t.given[protoIndex(proto)] }

func protoIndex(p Proto) int {
	if p == UDP {
		return 1
	}
	return 0
}

// rules returns the number of rules of both protocols.
func (t *Table) rules() int { return len(t.TCP.Rules) + len(t.UDP.Rules) }

// sockets returns the number of listening sockets of both protocols.
func (t *Table) sockets() int { return t.TCP.Sockets() + t.UDP.Sockets() }

// ephemeral reports whether port is in the ephemeral range.
func (t *Table) ephemeral(port int) bool {
	return port >= int(t.Caps.EphemeralFirst) && port <= int(t.Caps.EphemeralLast)
}

// ErrSyntax is wrapped by errors for a spec that does not follow the
// grammar.
var ErrSyntax = errors.New("invalid port specifier")

// Parse parses one spec for proto and adds its rules to t. On error t is
// left as it was. The error says what is wrong, without naming the option
// (the caller does).
func (t *Table) Parse(proto Proto, spec string) error {
	if proto != TCP && proto != UDP {
		return fmt.Errorf("unsupported protocol %d", proto)
	}
	s := t.Spec(proto)
	if spec == "none" {
		if len(s.Rules) > 0 {
			return errors.New("none conflicts with previous options")
		}
		t.given[protoIndex(proto)] = true
		return nil
	}

	p := parser{s: spec}
	lst, hasListen, err := p.listen()
	if err != nil {
		return err
	}
	if t.Dir == Outbound && hasListen {
		return errors.New("listening address not allowed here")
	}
	chunks, err := p.chunks()
	if err != nil {
		return err
	}

	var listens []listenSpec
	switch {
	case t.Dir == Outbound && t.Caps.NoBindToDevice:
		// No device binding: forward only what the loopback addresses
		// see (the C original warns about this at start-up).
		if t.Caps.IPv4 {
			listens = append(listens, listenSpec{addr: netip.AddrFrom4([4]byte{127, 0, 0, 1})})
		}
		if t.Caps.IPv6 {
			listens = append(listens, listenSpec{addr: netip.IPv6Loopback()})
		}
	case t.Dir == Outbound:
		listens = []listenSpec{{ifname: "lo"}}
	default:
		if lst.ifname != "" && t.Caps.NoBindToDevice {
			return fmt.Errorf("device binding to %q unsupported (requires kernel 5.7+)", lst.ifname)
		}
		listens = []listenSpec{lst}
	}

	// A spec is added whole or not at all.
	saved := len(s.Rules)
	for _, l := range listens {
		// No need for dual stack with only one family in use.
		addr := l.addr
		if !addr.IsValid() && !t.Caps.IPv4 {
			addr = netip.IPv6Unspecified()
		} else if !addr.IsValid() && !t.Caps.IPv6 {
			addr = netip.IPv4Unspecified()
		}
		if err := t.expand(s, proto, addr, l.ifname, chunks); err != nil {
			s.Rules = s.Rules[:saved]
			return err
		}
	}
	if proto == UDP && s.Scanning() {
		s.ScanFollowsTCP = true
	}
	t.given[protoIndex(proto)] = true
	return nil
}

// expand turns the parsed chunks of one spec into rules on one listening
// address: exclusions and "auto" first, then each include range cut around
// the exclusions, or, with no include range at all, 1-65535 minus the
// exclusions and the ephemeral range, weak.
func (t *Table) expand(s *Spec, proto Proto, addr netip.Addr, ifname string, chunks []chunk) error {
	var exclude portSet
	var flags Flags
	allTarget := netip.Addr{}
	for _, c := range chunks {
		switch c.kind {
		case chunkAuto:
			if !t.Caps.Scan {
				return errors.New("'auto' port forwarding is only allowed for pasta")
			}
			flags |= Scan
		case chunkExclude:
			for p := c.first; p <= c.last; p++ {
				exclude.set(p)
			}
		}
	}
	tmpl := Rule{Proto: proto, Addr: addr, IfName: ifname}
	excludeOnly := true
	for _, c := range chunks {
		switch c.kind {
		case chunkAll:
			// "all" beside include ranges is ignored, as coded in the C
			// original; its target address applies to the weak rules.
			allTarget = c.taddr
		case chunkInclude:
			excludeOnly = false
			if c.tlast-c.tfirst != c.last-c.first {
				return fmt.Errorf("port range %d-%d and target range %d-%d differ in length",
					c.first, c.last, c.tfirst, c.tlast)
			}
			r := tmpl
			r.TAddr, r.Flags = c.taddr, flags
			if err := t.addRange(s, r, c.first, c.last, c.tfirst, &exclude); err != nil {
				return err
			}
		}
	}
	if excludeOnly {
		for p := int(t.Caps.EphemeralFirst); p <= int(t.Caps.EphemeralLast) && p > 0; p++ {
			exclude.set(p)
		}
		r := tmpl
		r.TAddr, r.Flags = allTarget, flags|Weak
		return t.addRange(s, r, 1, 65535, 1, &exclude)
	}
	return nil
}

// addRange adds one rule per maximal run of first..last outside exclude,
// each run mapped to the same offset as first → to.
func (t *Table) addRange(s *Spec, tmpl Rule, first, last, to int, exclude *portSet) error {
	delta := to - first
	for base := first; base <= last; base++ {
		if exclude.has(base) {
			continue
		}
		end := base
		for end < last && !exclude.has(end+1) {
			end++
		}
		r := tmpl
		r.First, r.Last = uint16(base), uint16(end)
		if base == 0 {
			return errors.New("forwarding from port 0")
		}
		if base+delta <= 0 || end+delta > 65535 {
			return errors.New("forwarding to port 0")
		}
		r.To = uint16(base + delta)
		if err := t.check(s, &r); err != nil {
			return err
		}
		s.Rules = append(s.Rules, r)
		base = end
	}
	return nil
}

// check validates a new rule against the capabilities, the rules already
// in the table and the limits.
func (t *Table) check(s *Spec, r *Rule) error {
	if r.Proto == TCP && t.Caps.NoTCP {
		return errors.New("TCP forwarding rule, but TCP is disabled")
	}
	if r.Proto == UDP && t.Caps.NoUDP {
		return errors.New("UDP forwarding rule, but UDP is disabled")
	}
	if r.Addr.IsValid() {
		if r.Addr.Is4() && !t.Caps.IPv4 {
			return fmt.Errorf("IPv4 listening address %s, but IPv4 is disabled", r.Addr)
		}
		if r.Addr.Is6() && !t.Caps.IPv6 {
			return fmt.Errorf("IPv6 listening address %s, but IPv6 is disabled", r.Addr)
		}
	}
	if r.TAddr.IsValid() {
		switch {
		case r.TAddr.IsMulticast() || r.TAddr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("target address %s is not unicast", r.TAddr)
		case r.DualStack():
			wild := "0.0.0.0"
			if r.TAddr.Is6() {
				wild = "[::]"
			}
			return fmt.Errorf("dual-stack forward to a fixed target address %s unsupported (did you mean %s/...?)",
				r.TAddr, wild)
		case r.Addr.Is4() != r.TAddr.Is4():
			return fmt.Errorf("forward from %s to %s: address families differ", r.Addr, r.TAddr)
		}
	}
	for i := range s.Rules {
		o := &s.Rules[i]
		if o.Proto == r.Proto && r.Last >= o.First && o.Last >= r.First && addrsOverlap(r.Addr, o.Addr) {
			return fmt.Errorf("%s conflicts with %s", r.String(), o.String())
		}
	}
	if t.rules() >= MaxRules {
		return fmt.Errorf("too many forwarding rules (maximum %d)", MaxRules)
	}
	if t.sockets()+r.Ports() > MaxSockets {
		return fmt.Errorf("rules need too many listening sockets (maximum %d)", MaxSockets)
	}
	return nil
}

// addrsOverlap reports whether two listening addresses can take the same
// packets: the dual-stack wildcard overlaps everything, 0.0.0.0 any IPv4
// and :: any IPv6 address. Interfaces are not considered.
func addrsOverlap(a, b netip.Addr) bool {
	if !a.IsValid() || !b.IsValid() {
		return true
	}
	if a.Is4() != b.Is4() {
		return false
	}
	return a.IsUnspecified() || b.IsUnspecified() || a == b
}

// portSet is a bitmap of the 65536 ports.
type portSet [65536 / 64]uint64

func (s *portSet) set(p int)      { s[p>>6] |= 1 << (p & 63) }
func (s *portSet) has(p int) bool { return s[p>>6]&(1<<(p&63)) != 0 }

// listenSpec is the optional "ADDR%IF/" part of a spec.
type listenSpec struct {
	addr   netip.Addr // zero: dual-stack wildcard
	ifname string
}

type chunkKind uint8

const (
	chunkAll chunkKind = iota
	chunkAuto
	chunkExclude
	chunkInclude
)

// chunk is one comma-separated element of a spec.
type chunk struct {
	kind          chunkKind
	first, last   int        // exclude, include
	taddr         netip.Addr // include, all
	tfirst, tlast int        // include
}

// parser is a cursor over one spec string.
type parser struct {
	s string
	i int
}

func (p *parser) syntax(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSyntax, fmt.Sprintf(format, args...))
}

// literal consumes lit if the input continues with it.
func (p *parser) literal(lit string) bool {
	if strings.HasPrefix(p.s[p.i:], lit) {
		p.i += len(lit)
		return true
	}
	return false
}

// port consumes a decimal port number (0-65535).
func (p *parser) port() (int, bool) {
	j, v := p.i, 0
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		v = v*10 + int(p.s[j]-'0')
		if v > 65535 {
			return 0, false
		}
		j++
	}
	if j == p.i {
		return 0, false
	}
	p.i = j
	return v, true
}

// portRange consumes "first[-last]" with first ≤ last.
func (p *parser) portRange() (int, int, bool) {
	save := p.i
	first, ok := p.port()
	if !ok {
		return 0, 0, false
	}
	last := first
	if p.literal("-") {
		if last, ok = p.port(); !ok || last < first {
			p.i = save
			return 0, 0, false
		}
	}
	return first, last, true
}

// addr consumes an IPv4 or IPv6 address, the latter optionally in
// brackets. IPv4-mapped IPv6 addresses are taken as IPv4.
func (p *parser) addr() (netip.Addr, bool) {
	rest := p.s[p.i:]
	var text string
	n := 0
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		text, n = rest[1:end], end+1
		a, err := netip.ParseAddr(text)
		if err != nil || !a.Is6() {
			return netip.Addr{}, false
		}
		p.i += n
		return a.Unmap(), true
	}
	for n < len(rest) && strings.IndexByte("0123456789abcdefABCDEF:.", rest[n]) >= 0 {
		n++
	}
	text = rest[:n]
	a, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}, false
	}
	p.i += n
	return a.Unmap(), true
}

// ifspec consumes an optional "%ifname", the name running up to the next
// "/". It returns "" if there is none.
func (p *parser) ifspec() (string, bool, error) {
	if !p.literal("%") {
		return "", true, nil
	}
	end := strings.IndexByte(p.s[p.i:], '/')
	if end < 0 {
		return "", false, nil
	}
	name := p.s[p.i : p.i+end]
	if err := checkIfName(name); err != nil {
		return "", false, err
	}
	p.i += end
	return name, true, nil
}

// checkIfName validates a network interface name as the kernel would
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no "/", ":" or white
// space; control characters and non-ASCII bytes are refused as well.
func checkIfName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == '/' || r == ':' || r >= 0x7f }) {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// listen consumes the optional "listen/" part. It returns whether there
// was one.
func (p *parser) listen() (listenSpec, bool, error) {
	save := p.i
	if a, ok := p.addr(); ok {
		name, ok, err := p.ifspec()
		if err != nil {
			return listenSpec{}, false, err
		}
		if ok && p.literal("/") {
			return listenSpec{addr: a, ifname: name}, true, nil
		}
	}
	p.i = save
	p.literal("*")
	name, ok, err := p.ifspec()
	if err != nil {
		return listenSpec{}, false, err
	}
	if ok && p.literal("/") {
		return listenSpec{ifname: name}, true, nil
	}
	p.i = save
	return listenSpec{}, false, nil
}

// chunks consumes the comma-separated chunks up to the end of the input.
func (p *parser) chunks() ([]chunk, error) {
	var out []chunk
	for {
		c, err := p.chunk()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		if p.i == len(p.s) {
			return out, nil
		}
		if !p.literal(",") {
			return nil, p.syntax("unexpected %q", p.s[p.i:])
		}
	}
}

// chunk consumes one chunk.
func (p *parser) chunk() (chunk, error) {
	start := p.i
	switch {
	case p.literal("all"):
		c := chunk{kind: chunkAll}
		save := p.i
		if p.literal(":") {
			if a, ok := p.addr(); ok {
				c.taddr = a
				return c, nil
			}
		}
		p.i = save
		return c, nil
	case p.literal("auto"):
		return chunk{kind: chunkAuto}, nil
	case p.literal("~"):
		first, last, ok := p.portRange()
		if !ok {
			return chunk{}, p.syntax("bad excluded range %q", p.s[start:])
		}
		return chunk{kind: chunkExclude, first: first, last: last}, nil
	}
	first, last, ok := p.portRange()
	if !ok {
		return chunk{}, p.syntax("bad port range %q", p.s[start:])
	}
	c := chunk{kind: chunkInclude, first: first, last: last, tfirst: first, tlast: last}
	after := p.i
	if !p.literal(":") {
		return c, nil
	}
	// Target: address and range, address alone, or range alone.
	if a, ok := p.addr(); ok {
		save := p.i
		if p.literal("/") {
			if tf, tl, ok := p.portRange(); ok {
				c.taddr, c.tfirst, c.tlast = a, tf, tl
				return c, nil
			}
		}
		p.i = save
		c.taddr = a
		return c, nil
	}
	if tf, tl, ok := p.portRange(); ok {
		c.tfirst, c.tlast = tf, tl
		return c, nil
	}
	p.i = after
	return chunk{}, p.syntax("bad target %q", p.s[after:])
}
