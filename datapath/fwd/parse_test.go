// Tests of port-forwarding spec parsing: every example of addressing.md §3,
// the error cases, the limits, and a fuzz target.

package fwd

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// dual is the capability set of a dual-stack pasta.
var dual = Caps{IPv4: true, IPv6: true, Scan: true}

// passtCaps is dual-stack passt: no "auto".
var passtCaps = Caps{IPv4: true, IPv6: true}

// rulesOf formats the rules of a Spec for comparison.
func rulesOf(s *Spec) []string {
	out := []string{}
	for i := range s.Rules {
		out = append(out, s.Rules[i].String())
	}
	return out
}

func TestParse(t *testing.T) {
	v4only := Caps{IPv4: true, Scan: true}
	v6only := Caps{IPv6: true, Scan: true}
	noBind := Caps{IPv4: true, IPv6: true, Scan: true, NoBindToDevice: true}
	tests := []struct {
		name  string
		dir   Direction
		caps  Caps
		proto Proto
		specs []string
		want  []string
	}{
		// The examples of addressing.md §3, in order.
		{"single", Inbound, dual, TCP, []string{"22"}, []string{"TCP [*]:22 => 22"}},
		{"mapped", Inbound, dual, TCP, []string{"22:23"}, []string{"TCP [*]:22 => 23"}},
		{"list", Inbound, dual, TCP, []string{"22,25"}, []string{"TCP [*]:22 => 22", "TCP [*]:25 => 25"}},
		{"range mapped", Inbound, dual, TCP, []string{"22-80:32-90"}, []string{"TCP [*]:22-80 => 32-90"}},
		{"address", Inbound, dual, TCP, []string{"192.0.2.1/22"}, []string{"TCP [192.0.2.1]:22 => 22"}},
		{"address and device", Inbound, dual, TCP, []string{"192.0.2.1%eth0/22"}, []string{"TCP [192.0.2.1]%eth0:22 => 22"}},
		{"device only", Inbound, dual, TCP, []string{"%eth0/22"}, []string{"TCP [*]%eth0:22 => 22"}},
		{"wildcard v4 to address", Inbound, dual, TCP, []string{"0.0.0.0/5000:192.0.2.5/6000"},
			[]string{"TCP [0.0.0.0]:5000 => 192.0.2.5:6000"}},
		{"all to address", Inbound, dual, TCP, []string{"127.0.0.6/all:192.0.2.6"},
			[]string{"TCP [127.0.0.6]:1-49151 => 192.0.2.6:1-49151 (weak)"}},
		{"range minus exclusion", Inbound, dual, TCP, []string{"2000-5000,~3000-3010"},
			[]string{"TCP [*]:2000-2999 => 2000-2999", "TCP [*]:3011-5000 => 3011-5000"}},
		{"exclusion only", Inbound, dual, TCP, []string{"~20000-20010"},
			[]string{"TCP [*]:1-19999 => 1-19999 (weak)", "TCP [*]:20011-49151 => 20011-49151 (weak)"}},
		{"auto", Inbound, dual, TCP, []string{"auto"}, []string{"TCP [*]:1-49151 => 1-49151 (weak) (scan)"}},
		{"auto on address", Inbound, dual, TCP, []string{"::1/auto"}, []string{"TCP [::1]:1-49151 => 1-49151 (weak) (scan)"}},
		{"range and auto", Inbound, dual, TCP, []string{"8000-8010,auto"}, []string{"TCP [*]:8000-8010 => 8000-8010 (scan)"}},

		// More of the grammar.
		{"all", Inbound, passtCaps, TCP, []string{"all"}, []string{"TCP [*]:1-49151 => 1-49151 (weak)"}},
		{"all ignored beside ranges", Inbound, passtCaps, UDP, []string{"all,80"}, []string{"UDP [*]:80 => 80"}},
		{"man page exclusion", Inbound, dual, TCP, []string{"5-25,~10-20"},
			[]string{"TCP [*]:5-9 => 5-9", "TCP [*]:21-25 => 21-25"}},
		{"exclusion cuts mapping", Inbound, dual, TCP, []string{"2000-2010:3000-3010,~2005"},
			[]string{"TCP [*]:2000-2004 => 3000-3004", "TCP [*]:2006-2010 => 3006-3010"}},
		{"exclusion before range", Inbound, dual, TCP, []string{"~81,80-82"},
			[]string{"TCP [*]:80 => 80", "TCP [*]:82 => 82"}},
		{"all excluded", Inbound, dual, TCP, []string{"80-90,~80-90"}, []string{}},
		{"port 0 excluded", Inbound, dual, TCP, []string{"0-10,~0"}, []string{"TCP [*]:1-10 => 1-10"}},
		{"star", Inbound, dual, TCP, []string{"*/80"}, []string{"TCP [*]:80 => 80"}},
		{"star device", Inbound, dual, TCP, []string{"*%lo/80"}, []string{"TCP [*]%lo:80 => 80"}},
		{"bracketed listen", Inbound, dual, TCP, []string{"[2001:db8::1]/80"}, []string{"TCP [2001:db8::1]:80 => 80"}},
		{"v6 wildcard to v6 target", Inbound, dual, TCP, []string{"[::]/80:[2001:db8::2]/8080"},
			[]string{"TCP [::]:80 => [2001:db8::2]:8080"}},
		{"v6 target unbracketed", Inbound, dual, TCP, []string{"::/80-81:2001:db8::2"},
			[]string{"TCP [::]:80-81 => [2001:db8::2]:80-81"}},
		{"v4-mapped is v4", Inbound, dual, TCP, []string{"[::ffff:192.0.2.1]/80"}, []string{"TCP [192.0.2.1]:80 => 80"}},
		{"target address keeps ports", Inbound, dual, TCP, []string{"192.0.2.1/80-81:192.0.2.9"},
			[]string{"TCP [192.0.2.1]:80-81 => 192.0.2.9:80-81"}},
		{"none", Inbound, dual, TCP, []string{"none"}, []string{}},
		{"none then rules", Inbound, dual, TCP, []string{"none", "none", "80"}, []string{"TCP [*]:80 => 80"}},
		{"repeated options add", Inbound, dual, UDP, []string{"53", "67-68"}, []string{"UDP [*]:53 => 53", "UDP [*]:67-68 => 67-68"}},
		{"v4 and v6 wildcards coexist", Inbound, dual, TCP, []string{"0.0.0.0/80", "::/80"},
			[]string{"TCP [0.0.0.0]:80 => 80", "TCP [::]:80 => 80"}},
		{"distinct addresses coexist", Inbound, dual, TCP, []string{"192.0.2.1/80", "192.0.2.2/80:81"},
			[]string{"TCP [192.0.2.1]:80 => 80", "TCP [192.0.2.2]:80 => 81"}},
		{"leading zeros", Inbound, dual, TCP, []string{"0080"}, []string{"TCP [*]:80 => 80"}},
		{"full range", Inbound, dual, TCP, []string{"1-65535"}, []string{"TCP [*]:1-65535 => 1-65535"}},

		// Families.
		{"v4 only wildcard", Inbound, v4only, TCP, []string{"80"}, []string{"TCP [0.0.0.0]:80 => 80"}},
		{"v6 only wildcard", Inbound, v6only, TCP, []string{"80"}, []string{"TCP [::]:80 => 80"}},
		{"v4 only target", Inbound, v4only, TCP, []string{"80:192.0.2.1/8080"}, []string{"TCP [0.0.0.0]:80 => 192.0.2.1:8080"}},

		// Outbound (-T/-U): always the namespace's loopback.
		{"outbound", Outbound, dual, TCP, []string{"80"}, []string{"TCP [*]%lo:80 => 80"}},
		{"outbound auto", Outbound, dual, UDP, []string{"auto"}, []string{"UDP [*]%lo:1-49151 => 1-49151 (weak) (scan)"}},
		{"outbound v4 only", Outbound, v4only, TCP, []string{"80"}, []string{"TCP [0.0.0.0]%lo:80 => 80"}},
		{"outbound without device binding", Outbound, noBind, TCP, []string{"80:81"},
			[]string{"TCP [127.0.0.1]:80 => 81", "TCP [::1]:80 => 81"}},

		// Ephemeral range from the host.
		{"host ephemeral range", Inbound, Caps{IPv4: true, IPv6: true, EphemeralFirst: 32768, EphemeralLast: 60999}, TCP,
			[]string{"all"}, []string{"TCP [*]:1-32767 => 1-32767 (weak)", "TCP [*]:61000-65535 => 61000-65535 (weak)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(tt.dir, tt.caps)
			for _, s := range tt.specs {
				if err := tab.Parse(tt.proto, s); err != nil {
					t.Fatalf("Parse(%q): %v", s, err)
				}
			}
			got := rulesOf(tab.Spec(tt.proto))
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if !tab.Given(tt.proto) {
				t.Errorf("Given(%v) = false after parsing", tt.proto)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		dir   Direction
		caps  Caps
		proto Proto
		specs []string // all but the last must parse
		want  string   // substring of the error
	}{
		{"open range", Inbound, dual, TCP, []string{"80-"}, "bad port range"},
		{"reversed range", Inbound, dual, TCP, []string{"80-70"}, "bad port range"},
		{"too large", Inbound, dual, TCP, []string{"65536"}, "bad port range"},
		{"empty", Inbound, dual, TCP, []string{""}, "bad port range"},
		{"word", Inbound, dual, TCP, []string{"http"}, "bad port range"},
		{"trailing comma", Inbound, dual, TCP, []string{"80,"}, "bad port range"},
		{"leading comma", Inbound, dual, TCP, []string{",80"}, "bad port range"},
		{"empty target", Inbound, dual, TCP, []string{"80:"}, "bad target"},
		{"open target", Inbound, dual, TCP, []string{"80:8080-"}, "bad target"},
		{"garbage", Inbound, dual, TCP, []string{"80x"}, "unexpected"},
		{"bare tilde", Inbound, dual, TCP, []string{"~"}, "bad excluded range"},
		{"all colon", Inbound, dual, TCP, []string{"all:"}, "unexpected"},
		{"none with more", Inbound, dual, TCP, []string{"none,80"}, "bad port range"},
		{"length mismatch", Inbound, dual, TCP, []string{"22-80:32-91"}, "differ in length"},
		{"from port 0", Inbound, dual, TCP, []string{"0"}, "from port 0"},
		{"from port 0 in range", Inbound, dual, TCP, []string{"0-10"}, "from port 0"},
		{"to port 0", Inbound, dual, TCP, []string{"80:0"}, "to port 0"},
		{"dual-stack to address", Inbound, dual, TCP, []string{"80:192.0.2.1"}, "did you mean 0.0.0.0/"},
		{"dual-stack to v6 address", Inbound, dual, TCP, []string{"80:[2001:db8::1]/80"}, "did you mean [::]/"},
		{"family mismatch", Inbound, dual, TCP, []string{"0.0.0.0/80:2001:db8::1"}, "families differ"},
		{"multicast target", Inbound, dual, TCP, []string{"192.0.2.1/80:224.0.0.1"}, "not unicast"},
		{"broadcast target", Inbound, dual, UDP, []string{"0.0.0.0/80:255.255.255.255"}, "not unicast"},
		{"overlap in one spec", Inbound, dual, TCP, []string{"80,70-90"}, "conflicts with"},
		{"overlap across options", Inbound, dual, TCP, []string{"80", "192.0.2.1/80"}, "conflicts with"},
		{"v4 wildcard overlaps address", Inbound, dual, TCP, []string{"192.0.2.1/80", "0.0.0.0/79-81"}, "conflicts with"},
		{"interface ignored", Inbound, dual, TCP, []string{"%eth0/80", "%eth1/80"}, "conflicts with"},
		{"none after rules", Inbound, dual, TCP, []string{"80", "none"}, "none conflicts"},
		{"auto in passt", Inbound, passtCaps, TCP, []string{"auto"}, "only allowed for pasta"},
		{"auto with range in passt", Inbound, passtCaps, TCP, []string{"80,auto"}, "only allowed for pasta"},
		{"listen on -T", Outbound, dual, TCP, []string{"127.0.0.1/80"}, "not allowed"},
		{"device on -U", Outbound, dual, UDP, []string{"%lo/80"}, "not allowed"},
		{"dot device", Inbound, dual, TCP, []string{"%./80"}, "invalid interface name"},
		{"dotdot device", Inbound, dual, TCP, []string{"%../80"}, "invalid interface name"},
		{"long device", Inbound, dual, TCP, []string{"%abcdefghijklmnop/80"}, "invalid interface name"},
		{"empty device", Inbound, dual, TCP, []string{"%/80"}, "invalid interface name"},
		{"no device binding", Inbound, Caps{IPv4: true, IPv6: true, NoBindToDevice: true}, TCP, []string{"%eth0/80"}, "requires kernel 5.7"},
		{"v4 address without v4", Inbound, Caps{IPv6: true}, TCP, []string{"192.0.2.1/80"}, "IPv4 is disabled"},
		{"v6 address without v6", Inbound, Caps{IPv4: true}, TCP, []string{"::1/80"}, "IPv6 is disabled"},
		{"TCP disabled", Inbound, Caps{IPv4: true, IPv6: true, NoTCP: true}, TCP, []string{"80"}, "TCP is disabled"},
		{"UDP disabled", Inbound, Caps{IPv4: true, IPv6: true, NoUDP: true}, UDP, []string{"80"}, "UDP is disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(tt.dir, tt.caps)
			last := len(tt.specs) - 1
			for _, s := range tt.specs[:last] {
				if err := tab.Parse(tt.proto, s); err != nil {
					t.Fatalf("Parse(%q): %v", s, err)
				}
			}
			before := len(tab.Spec(tt.proto).Rules)
			err := tab.Parse(tt.proto, tt.specs[last])
			if err == nil {
				t.Fatalf("Parse(%q) = nil, want error containing %q; rules %v",
					tt.specs[last], tt.want, rulesOf(tab.Spec(tt.proto)))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %q, want it to contain %q", tt.specs[last], err, tt.want)
			}
			if n := len(tab.Spec(tt.proto).Rules); n != before {
				t.Errorf("failed spec left %d rules behind", n-before)
			}
		})
	}
}

// TestSyntaxErrorsWrap checks that grammar errors are recognisable.
func TestSyntaxErrorsWrap(t *testing.T) {
	err := NewTable(Inbound, dual).Parse(TCP, "80-")
	if !errors.Is(err, ErrSyntax) {
		t.Errorf("error %v does not wrap ErrSyntax", err)
	}
}

func TestLimits(t *testing.T) {
	// 255 rules per direction, TCP and UDP together.
	tab := NewTable(Inbound, passtCaps)
	var ports []string
	for p := 1; p <= 200; p++ {
		ports = append(ports, fmt.Sprint(2*p))
	}
	if err := tab.Parse(TCP, strings.Join(ports, ",")); err != nil {
		t.Fatal(err)
	}
	if err := tab.Parse(UDP, strings.Join(ports[:55], ",")); err != nil {
		t.Fatal(err)
	}
	if err := tab.Parse(UDP, "1000"); err == nil || !strings.Contains(err.Error(), "too many forwarding rules") {
		t.Errorf("rule 256: got %v", err)
	}

	// 5 × 65536 listening sockets.
	tab = NewTable(Inbound, passtCaps)
	for i := 1; i <= 5; i++ {
		if err := tab.Parse(TCP, fmt.Sprintf("127.0.0.%d/1-65535", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tab.Parse(UDP, "1-5"); err != nil {
		t.Fatal(err)
	}
	if err := tab.Parse(UDP, "6"); err == nil || !strings.Contains(err.Error(), "too many listening sockets") {
		t.Errorf("socket 327681: got %v", err)
	}
}

func TestScanFollowsTCP(t *testing.T) {
	for _, tt := range []struct {
		proto Proto
		spec  string
		want  bool
	}{
		{UDP, "auto", true},
		{UDP, "53,auto", true},
		{UDP, "53", false},
		{UDP, "all", false},
		{TCP, "auto", false}, // a UDP-only property
	} {
		tab := NewTable(Inbound, dual)
		if err := tab.Parse(tt.proto, tt.spec); err != nil {
			t.Fatal(err)
		}
		if got := tab.Spec(tt.proto).ScanFollowsTCP; got != tt.want {
			t.Errorf("%v %q: ScanFollowsTCP = %v, want %v", tt.proto, tt.spec, got, tt.want)
		}
	}
}

func TestLookup(t *testing.T) {
	tab := NewTable(Inbound, dual)
	for _, s := range []string{"192.0.2.1/80:8080", "0.0.0.0/443", "::/443:8443", "1000-1010:2000-2010"} {
		if err := tab.Parse(TCP, s); err != nil {
			t.Fatal(err)
		}
	}
	spec := &tab.TCP
	r, ok := spec.Lookup(1005)
	if !ok || r.Target(1005) != 2005 {
		t.Errorf("Lookup(1005) = %v, %v", r.String(), ok)
	}
	if _, ok := spec.Lookup(999); ok {
		t.Error("Lookup(999) found a rule")
	}
	for _, tt := range []struct {
		local  string
		port   uint16
		rule   int
		target uint16
	}{
		{"192.0.2.1", 80, 0, 8080},
		{"192.0.2.2", 80, -1, 0},
		{"192.0.2.2", 443, 1, 443},
		{"::ffff:192.0.2.2", 443, 1, 443},
		{"2001:db8::1", 443, 2, 8443},
		{"2001:db8::1", 1010, 3, 2010},
	} {
		i, ok := spec.Match(netip.MustParseAddr(tt.local), tt.port)
		if tt.rule < 0 {
			if ok {
				t.Errorf("Match(%s, %d) = %d, want none", tt.local, tt.port, i)
			}
			continue
		}
		if !ok || i != tt.rule || spec.Rules[i].Target(tt.port) != tt.target {
			t.Errorf("Match(%s, %d) = %d, %v; want rule %d to %d", tt.local, tt.port, i, ok, tt.rule, tt.target)
		}
	}

	allocs := testing.AllocsPerRun(100, func() {
		spec.Lookup(1005)
		spec.Match(netip.AddrFrom4([4]byte{192, 0, 2, 1}), 80)
	})
	if allocs != 0 {
		t.Errorf("Lookup/Match allocate %v times per call", allocs)
	}
}

func TestListeners(t *testing.T) {
	tab := NewTable(Inbound, dual)
	for _, s := range []string{"22-23", "::1%lo/53:5353"} {
		if err := tab.Parse(UDP, s); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for l := range tab.UDP.Listeners() {
		got = append(got, fmt.Sprintf("%d %v %s %q %d %v", l.Rule, l.Proto, l.Addr, l.IfName, l.Port, l.DualStack))
	}
	want := []string{
		`0 UDP :: "" 22 true`,
		`0 UDP :: "" 23 true`,
		`1 UDP ::1 "lo" 53 false`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listeners:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := tab.UDP.Sockets(); n != 3 {
		t.Errorf("Sockets() = %d, want 3", n)
	}
}

// FuzzParse feeds arbitrary specs, under arbitrary capabilities, to the
// parser: it must never panic, and whatever it accepts must satisfy the
// invariants the datapath relies on.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"22", "22:23", "22,25", "22-80:32-90", "192.0.2.1/22", "192.0.2.1%eth0/22", "%eth0/22",
		"0.0.0.0/5000:192.0.2.5/6000", "127.0.0.6/all:192.0.2.6", "2000-5000,~3000-3010",
		"~20000-20010", "auto", "::1/auto", "8000-8010,auto", "none", "all", "[::1]/80:[::2]/90",
		"80-", "0", "80:0", "65535-65535:1", "~0-65535", "*%lo/1-65535,~2,auto", "all:0.0.0.0",
	} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(0xff))
	}
	f.Fuzz(func(t *testing.T, spec string, bits uint8) {
		caps := Caps{
			IPv4:           bits&1 != 0,
			IPv6:           bits&2 != 0 || bits&1 == 0,
			Scan:           bits&4 != 0,
			NoBindToDevice: bits&8 != 0,
			NoUDP:          bits&16 != 0,
		}
		dir := Inbound
		if bits&32 != 0 {
			dir = Outbound
		}
		proto := TCP
		if bits&64 != 0 {
			proto = UDP
		}
		tab := NewTable(dir, caps)
		if err := tab.Parse(proto, spec); err != nil {
			return
		}
		// Parse the same spec again into the other protocol, then check.
		_ = tab.Parse(proto^TCP^UDP, spec)
		if tab.rules() > MaxRules || tab.sockets() > MaxSockets {
			t.Fatalf("limits exceeded: %d rules, %d sockets", tab.rules(), tab.sockets())
		}
		for _, s := range []*Spec{&tab.TCP, &tab.UDP} {
			for i := range s.Rules {
				r := &s.Rules[i]
				if r.First == 0 || r.First > r.Last || r.To == 0 || int(r.To)+int(r.Last-r.First) > 65535 {
					t.Fatalf("bad rule %s", r.String())
				}
				if r.TAddr.IsValid() && (r.DualStack() || r.TAddr.Is4() != r.Addr.Is4()) {
					t.Fatalf("bad target in %s", r.String())
				}
				for j := range i {
					o := &s.Rules[j]
					if r.Last >= o.First && o.Last >= r.First && addrsOverlap(r.Addr, o.Addr) {
						t.Fatalf("overlap: %s and %s", r.String(), o.String())
					}
				}
			}
		}
	})
}

// testPorts is a Ports for tests.
type testPorts map[uint16]bool

// Has implements Ports.
func (p testPorts) Has(port uint16) bool { return p[port] }

// TestScanChanges: with "auto" in a spec every rule of it scans (22 too,
// as in the C original), only ports inside the rules change (9000 never
// does), a wanted port without listener is opened, a listened one no
// longer wanted is closed, and a change that returns false stops the walk.
func TestScanChanges(t *testing.T) {
	tab := NewTable(Inbound, dual)
	if err := tab.Parse(TCP, "22,8000-8010,auto"); err != nil {
		t.Fatal(err)
	}
	spec := tab.Spec(TCP)
	listening := map[uint16]bool{8001: true, 8002: true}
	want := testPorts{22: true, 8000: true, 8002: true, 8005: true, 9000: true}
	var got []string
	spec.ScanChanges(want, func(_ int, p uint16) bool { return listening[p] }, func(l Listener, open bool) bool {
		got = append(got, fmt.Sprintf("%d:%v", l.Port, open))
		return true
	})
	if w := "[22:true 8000:true 8001:false 8005:true]"; fmt.Sprint(got) != w {
		t.Errorf("changes %v, want %s", got, w)
	}
	got = nil
	spec.ScanChanges(want, func(_ int, p uint16) bool { return listening[p] }, func(l Listener, open bool) bool {
		got = append(got, fmt.Sprintf("%d:%v", l.Port, open))
		return false
	})
	if len(got) != 1 {
		t.Errorf("a change returning false did not stop the walk: %v", got)
	}
}
