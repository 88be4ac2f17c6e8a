// Unit tests of the harness's selection, sizing and /proc readers.

package harness

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopasst/bench/report"
)

func TestConfigSelected(t *testing.T) {
	c := config{tags: []string{"gopasst", "gopasst-tap", "ours", "tap"}}
	for only, want := range map[string]bool{"": true, "gopasst": true, "GOPASST": true, "tap": true, "veth": false, "splice": false} {
		var o []string
		if only != "" {
			o = []string{only}
		}
		if got := c.selected(o); got != want {
			t.Errorf("-only %q: %v, want %v", only, got, want)
		}
	}
}

func TestTestSelected(t *testing.T) {
	var crr, tcp4in testSpec
	for _, s := range allTests {
		switch s.row {
		case "tcpcrr4-out":
			crr = s
		case "tcp4-in":
			tcp4in = s
		}
	}
	cases := []struct {
		s    testSpec
		tok  string
		want bool
	}{
		{crr, "rr", true}, {crr, "crr", true}, {crr, "tcp_crr", true}, {crr, "tcp_rr", false},
		{crr, "tcp", false}, {crr, "latency", true}, {crr, "out", true},
		{tcp4in, "tcp", true}, {tcp4in, "in", true}, {tcp4in, "ipv6", false}, {tcp4in, "tcp4-in", true},
		{tcp4in, "throughput", true}, {tcp4in, "udp", false},
	}
	for _, c := range cases {
		if got := c.s.selected([]string{c.tok}); got != c.want {
			t.Errorf("%s with -tests %s: %v, want %v", c.s.row, c.tok, got, c.want)
		}
	}
}

func TestProfileTestsLargestMTU(t *testing.T) {
	e := &env{prof: profiles["full"]}
	small := e.tests(config{path: "tap"}, false)
	large := e.tests(config{path: "tap"}, true)
	splice := e.tests(config{path: "splice"}, true)
	if len(splice) != len(allTests) {
		t.Errorf("splice path: %d tests, want %d", len(splice), len(allTests))
	}
	if len(large) != len(allTests)-1 {
		t.Errorf("largest MTU: %d tests, want %d (all but udp6-in, the splice path's)", len(large), len(allTests)-1)
	}
	for _, s := range large {
		if s.row == "udp6-in" {
			t.Error("udp6-in on the tap path")
		}
	}
	for _, s := range small {
		if s.kind == "rr" {
			t.Errorf("RR test %s at a smaller MTU", s.row)
		}
	}
	q := &env{prof: profiles["quick"], opts: Options{Tests: []string{"tcp"}}}
	got := q.tests(config{path: "splice"}, true)
	if len(got) != 2 || got[0].row != "tcp4-out" || got[1].row != "tcp4-in" {
		t.Errorf("quick -tests tcp: %+v", got)
	}
}

func TestUDPLen(t *testing.T) {
	for _, c := range []struct{ mtu, fam, want int }{
		{1500, 4, 1472}, {1500, 6, 1452}, {65520, 4, 65492}, {0, 4, 65507}, {0, 6, 65487},
	} {
		if got := udpLen(c.mtu, c.fam); got != c.want {
			t.Errorf("udpLen(%d, %d) = %d, want %d", c.mtu, c.fam, got, c.want)
		}
	}
	// The loopback path's flood is of 1400-byte datagrams, both families.
	for _, fam := range []int{4, 6} {
		if got := udpLenFor(config{path: "splice"}, fam); got != 1400 {
			t.Errorf("splice path, IPv%d: %d bytes, want 1400", fam, got)
		}
		if got := udpLenFor(config{path: "tap", mtu: 1500}, fam); got != udpLen(1500, fam) {
			t.Errorf("tap path, IPv%d: %d bytes", fam, got)
		}
	}
}

func TestCheckSpliced(t *testing.T) {
	ok := []report.Sample{{Row: "tcp4-out", Value: 12}, {Row: "cpu-tcp4-out", Value: 0.4}}
	if !checkSpliced(ok, 1200, "tap0") || ok[0].Err != "" || ok[0].Value != 12 || ok[1].Extra["tap_bytes"] != 1200 {
		t.Errorf("a few neighbour frames: %+v", ok)
	}
	bad := []report.Sample{{Row: "tcp4-out", Value: 12}, {Row: "udp4-out", Err: "timed out"}}
	if checkSpliced(bad, 5<<20, "tap0") || bad[0].Value != 0 || !strings.Contains(bad[0].Err, "crossed the tap") ||
		bad[1].Err != "timed out" {
		t.Errorf("5 MiB over the tap: %+v", bad)
	}
}

func TestNeperDir(t *testing.T) {
	dir := t.TempDir()
	for _, b := range []string{"tcp_rr", "tcp_crr"} {
		if err := os.WriteFile(dir+"/"+b, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := neperDir(dir); got != "" {
		t.Errorf("udp_rr missing: %q, want none", got)
	}
	if err := os.WriteFile(dir+"/udp_rr", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := neperDir(dir); got != dir {
		t.Errorf("neperDir: %q, want %q", got, dir)
	}
	t.Setenv("PATH", dir)
	if got := neperDir(""); got != dir {
		t.Errorf("from PATH: %q, want %q", got, dir)
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	// Burn a little CPU so the tick count is likely above zero.
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i
	}
	_ = x
	if ticks, err := cpuTicks(pid); err != nil || ticks < 0 {
		t.Errorf("cpuTicks: %d, %v", ticks, err)
	}
	if kb, err := peakRSSKiB(pid); err != nil || kb <= 0 {
		t.Errorf("peakRSSKiB: %d, %v", kb, err)
	}
	if _, err := cpuTicks(-1); err == nil {
		t.Error("cpuTicks of no process")
	}
}

func TestUpdateReadme(t *testing.T) {
	dir := t.TempDir()
	readme := dir + "/README.md"
	res := dir + "/results/2026-11-23-abc"
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	orig := "intro\n" + markQuickBegin + "\nold\n" + markQuickEnd + "\n" + markFullBegin + "\nold\n" + markFullEnd + "\ntail\n"
	if err := os.WriteFile(readme, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	md := "# gopasst benchmark: x\n\n## pasta: connections via the tap device\n\n| a |\n![p](plot-pasta-tap-tcp4-out.svg)\n"
	if err := os.WriteFile(res+"/results.md", []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := UpdateReadme(readme, res, "full"); err != nil {
		t.Fatal(err)
	}
	if err := UpdateReadme(readme, res, "quick"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(readme)
	s := string(b)
	for _, want := range []string{"intro\n", "tail\n", "### pasta: connections", "## gopasst benchmark: x",
		"(results/2026-11-23-abc/plot-pasta-tap-tcp4-out.svg)", "[HTML page](results/2026-11-23-abc/index.html)"} {
		if !strings.Contains(s, want) {
			t.Errorf("README lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "old") {
		t.Errorf("old block kept:\n%s", s)
	}
	if err := UpdateReadme(dir+"/none.md", res, "full"); err == nil {
		t.Error("no error for a missing README")
	}
}

func TestTreeCountsChildren(t *testing.T) {
	var p procs
	p.log = func(string, ...any) {}
	pr, err := p.start("tree test", []string{"sh", "-c", "sleep 5 & wait"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.stopAll()
	if !waitFor(3*time.Second, func() bool { return len(tree(pr.pid())) >= 2 }) {
		t.Fatalf("tree of %d: %v, want the shell and its sleep", pr.pid(), tree(pr.pid()))
	}
	if kb, err := treePeakRSSKiB(pr.pid()); err != nil || kb <= 0 {
		t.Errorf("treePeakRSSKiB: %d, %v", kb, err)
	}
	if _, err := treeTicks(pr.pid()); err != nil {
		t.Error(err)
	}
}

// testAvail is a run with every translator present, one -pasta and one
// -passt build.
var testAvail = avail{pastaPeer: "/usr/bin/pasta", passtPeer: "/usr/bin/passt", slirp: "/usr/bin/slirp4netns",
	oursPasta: "/tmp/x/pasta", oursPasst: "/tmp/x/passt", extraPasta: []string{"/o/pasta"}, extraPasst: []string{"/o/passt"}}

// names returns label, path and MTU of each of cs, for comparisons.
func names(cs []config) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.label+"/"+c.path+"/"+strconv.Itoa(c.mtu))
	}
	return out
}

func TestCatalogPasst(t *testing.T) {
	all := catalog(profiles["full"], testAvail)
	byLabel := map[string][]config{}
	for _, c := range all {
		byLabel[c.label] = append(byLabel[c.label], c)
	}
	for label, want := range map[string]struct {
		role, mode, path, kind string
		mtus                   int
	}{
		"gopasst passt":  {report.RoleOurs, "passt", "stream", "passt", 4},
		"Debian passt":   {report.RolePeer, "passt", "stream", "passt", 4},
		"passt /o/passt": {report.RoleExtra, "passt", "stream", "passt", 4},
		"stream ceiling": {report.RoleKernel, "passt", "stream", "ceiling", 2},
		"veth":           {report.RoleKernel, "", "tap", "veth", 2},
		"gopasst pasta":  {report.RoleOurs, "pasta", "tap", "pasta", 4}, // and splice
		"Debian pasta":   {report.RolePeer, "pasta", "tap", "pasta", 4},
		"pasta /o/pasta": {report.RoleExtra, "pasta", "tap", "pasta", 4},
		"slirp4netns":    {report.RolePeer, "pasta", "tap", "slirp4netns", 1},
	} {
		cs := byLabel[label]
		n := 0
		for _, c := range cs {
			if c.path == "splice" {
				continue
			}
			n++
			if c.role != want.role || c.mode != want.mode || c.path != want.path || c.kind != want.kind {
				t.Errorf("%s: %+v, want %+v", label, c, want)
			}
		}
		if n != want.mtus {
			t.Errorf("%s: %d MTU columns, want %d: %v", label, n, want.mtus, names(cs))
		}
	}
	if c := byLabel["gopasst passt"][0]; c.bin != "/tmp/x/passt" || !c.needsPeer() {
		t.Errorf("gopasst passt runs %q (needs the peer: %v)", c.bin, c.needsPeer())
	}
	if byLabel["veth"][0].needsPeer() || byLabel["gopasst pasta"][0].needsPeer() || !byLabel["stream ceiling"][0].needsPeer() {
		t.Error("needsPeer")
	}
	// The accelerated splice path: a column only with -accel's options.
	if _, ok := byLabel[labelAccel]; ok {
		t.Errorf("%s without -accel", labelAccel)
	}
	av := testAvail
	av.accel = []string{"--splice-accel"}
	var accel []config
	for _, c := range catalog(profiles["full"], av) {
		if c.label == labelAccel {
			accel = append(accel, c)
		}
	}
	if len(accel) != 1 || accel[0].path != "splice" || accel[0].role != report.RoleOurs ||
		strings.Join(accel[0].args, " ") != "--splice-accel" || !accel[0].selected([]string{"gopasst-accel"}) ||
		accel[0].selected([]string{"gopasst-splice"}) {
		t.Errorf("accelerated column: %+v", accel)
	}
	// Without Debian's passt or gopasst's build, their columns go.
	none := catalog(profiles["quick"], avail{})
	if got := names(none); strings.Join(got, " ") != "loopback/splice/0 veth/tap/65520 stream ceiling/stream/65520" {
		t.Errorf("nothing installed: %v", got)
	}
}

func TestFilterSelectors(t *testing.T) {
	all := catalog(profiles["full"], testAvail)
	labels := func(only []string, mtus []int) string {
		seen := map[string]bool{}
		var out []string
		for _, c := range (Options{Only: only, MTUs: mtus}).filter(all) {
			k := c.label + "/" + c.path
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
		return strings.Join(out, ",")
	}
	for _, c := range []struct {
		only []string
		want string
	}{
		{[]string{"gopasst-passt"}, "gopasst passt/stream"},
		{[]string{"passt"}, "Debian passt/stream,passt /o/passt/stream,passt /o/passt, vhost-user/vhost-user,gopasst passt/stream,gopasst passt, vhost-user/vhost-user"},
		{[]string{"gopasst-vhost-user"}, "gopasst passt, vhost-user/vhost-user"},
		{[]string{"stream"}, "stream ceiling/stream,Debian passt/stream,passt /o/passt/stream,gopasst passt/stream"},
		{[]string{"ceiling"}, "stream ceiling/stream"},
		{[]string{"passt", "ceiling"}, "stream ceiling/stream,Debian passt/stream,passt /o/passt/stream,passt /o/passt, vhost-user/vhost-user,gopasst passt/stream,gopasst passt, vhost-user/vhost-user"},
		{[]string{"debian-passt"}, "Debian passt/stream"},
		{[]string{"kernel"}, "loopback/splice,veth/tap,stream ceiling/stream"},
		{[]string{"ours"}, "gopasst pasta/tap,gopasst pasta/splice,gopasst passt/stream,gopasst passt, vhost-user/vhost-user"},
		// The existing selectors keep their configurations.
		{[]string{"tap"}, "veth/tap,Debian pasta/tap,slirp4netns/tap,pasta /o/pasta/tap,gopasst pasta/tap"},
		{[]string{"gopasst-tap"}, "gopasst pasta/tap"},
		{[]string{"veth"}, "veth/tap"},
		{[]string{"splice"}, "loopback/splice,Debian pasta/splice,pasta /o/pasta/splice,gopasst pasta/splice"},
	} {
		if got := labels(c.only, nil); got != c.want {
			t.Errorf("-only %v:\n got %s\nwant %s", c.only, got, c.want)
		}
	}
	n := 0
	for _, c := range (Options{Only: []string{"passt", "ceiling"}, MTUs: []int{1500, 65520}}).filter(all) {
		if c.mtu != 1500 && c.mtu != 65520 {
			t.Errorf("-mtu 1500,65520 kept %s", c.name())
		}
		n++
	}
	if n != 12 { // three passts, two vhost-user ones and the ceiling, two MTUs each
		t.Errorf("-only passt,ceiling -mtu 1500,65520: %d configurations, want 12", n)
	}
}
