// Tests of aggregation, tables, rendering and plots on synthetic samples.

package report

import (
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sampleSet returns three repetitions of ours, Debian's pasta and a veth
// reference on two MTUs, and one failing cell.
func sampleSet() []Sample {
	var s []Sample
	add := func(cfg, role, mode string, mtu int, row string, vals ...float64) {
		for i, v := range vals {
			s = append(s, Sample{Rep: i + 1, Config: cfg, Role: role, Mode: mode, Path: "tap", MTU: mtu, Row: row, Value: v})
		}
	}
	add("gopasst pasta", RoleOurs, "pasta", 1500, "tcp4-out", 1, 3, 2)
	add("gopasst pasta", RoleOurs, "pasta", 65520, "tcp4-out", 10, 12, 11)
	add("Debian pasta", RolePeer, "pasta", 1500, "tcp4-out", 0.5, 0.5, 0.5)
	add("Debian pasta", RolePeer, "pasta", 65520, "tcp4-out", 5, 6, 5.5)
	add("veth", RoleKernel, "", 1500, "tcp4-out", 4, 4, 4)
	add("veth", RoleKernel, "", 65520, "tcp4-out", 20, 22, 24)
	add("gopasst pasta", RoleOurs, "pasta", 65520, "tcprr4-out", 50, 40, 60)
	add("veth", RoleKernel, "", 65520, "tcprr4-out", 20)
	s = append(s, Sample{Rep: 1, Config: "Debian pasta", Role: RolePeer, Mode: "pasta", Path: "tap", MTU: 65520, Row: "tcprr4-out", Err: "timed out"})
	return s
}

func TestMedian(t *testing.T) {
	if Median([]float64{3, 1, 2}) != 2 || Median([]float64{4, 1, 3, 2}) != 2.5 || !math.IsNaN(Median(nil)) {
		t.Error("median")
	}
}

func TestAggregate(t *testing.T) {
	c := Aggregate(sampleSet())
	x := c[CellKey{"pasta", "tap", "gopasst pasta", 1500, "tcp4-out"}]
	if x.Median != 2 || x.Min != 1 || x.Max != 3 || x.N != 3 {
		t.Errorf("%+v", x)
	}
	f := c[CellKey{"pasta", "tap", "Debian pasta", 65520, "tcprr4-out"}]
	if f.OK() || len(f.Errors) != 1 || f.Errors[0] != "timed out" {
		t.Errorf("failed cell %+v", f)
	}
}

// line returns the line labelled label in g, or fails.
func line(t *testing.T, g Group, label string) Line {
	t.Helper()
	for _, l := range g.Lines {
		if l.Label == label {
			return l
		}
	}
	t.Fatalf("no line %q in %s", label, g.Row.ID)
	return Line{}
}

func TestBuildTables(t *testing.T) {
	tables := BuildTables(sampleSet())
	if len(tables) != 1 || tables[0].Section != (Section{"pasta", "tap"}) {
		t.Fatalf("tables %+v", tables)
	}
	tb := tables[0]
	if len(tb.MTUs) != 2 || tb.MTUs[0] != 1500 || tb.MTUs[1] != 65520 {
		t.Errorf("MTUs %v", tb.MTUs)
	}
	if tb.Groups[0].Row.ID != "tcp4-out" || tb.Groups[0].Lines[0].Label != "gopasst pasta" {
		t.Errorf("first group %+v", tb.Groups[0])
	}
	g := tb.Groups[0]
	if r := line(t, g, "gopasst pasta / Debian pasta").Ratio; r[0] != 4 || r[1] != 2 {
		t.Errorf("ours / peer %v", r)
	}
	if r := line(t, g, "gopasst pasta / veth").Ratio; r[0] != 0.5 || r[1] != 0.5 {
		t.Errorf("ours / veth %v", r)
	}
	if r := line(t, g, "Debian pasta / veth").Ratio; r[0] != 0.125 || r[1] != 0.25 {
		t.Errorf("peer / veth %v", r)
	}
	// The latency row: the failed peer has a line but no ratio.
	rr := tb.Groups[1]
	if rr.Row.ID != "tcprr4-out" {
		t.Fatalf("second group %s", rr.Row.ID)
	}
	for _, l := range rr.Lines {
		if l.Label == "gopasst pasta / Debian pasta" {
			t.Error("ratio to a failed cell")
		}
	}
	if r := line(t, rr, "gopasst pasta / veth").Ratio; !math.IsNaN(r[0]) || r[1] != 2.5 {
		t.Errorf("latency ratio %v", r)
	}
}

func TestMarkdownAndHTML(t *testing.T) {
	tables := BuildTables(sampleSet())
	m := Meta{Date: "2026-11-23", Commit: "abc123", Command: "make bench", Profile: "full", Reps: 3}
	md := Markdown(m, tables, nil)
	for _, want := range []string{
		"## pasta: connections via the tap device",
		"| 1500B | 65520B |",
		"**TCP throughput over IPv4: ns to host** (Gbps)",
		"| gopasst pasta | 2.00 <sub>1.00–3.00</sub> | 11.0 <sub>10.0–12.0</sub> |",
		"*2.00×*",
		"fail [1]",
		"[1] timed out",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	h := HTML(m, tables, nil)
	for _, want := range []string{"<table>", "<small>1.00–3.00</small>", `<tr class="ratio">`, "<li>timed out</li>"} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
}

func TestTitleForPasst(t *testing.T) {
	rd, _ := RowByID("tcp4-in")
	if got := rd.TitleFor("passt"); got != "TCP throughput over IPv4: host to guest" {
		t.Errorf("%q", got)
	}
}

// wellFormed fails unless s is well-formed XML.
func wellFormed(t *testing.T, name, s string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", name, err)
		}
	}
}

func TestPlotsAndWrite(t *testing.T) {
	dir := t.TempDir()
	md, err := Write(dir, Meta{Date: "d", Commit: "c", Reps: 3}, sampleSet())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md, "plot-pasta-tap-tcp4-out.svg") {
		t.Error("Markdown does not link the plot")
	}
	for _, f := range []string{FileJSON, FileSamples, FileSummary, FileMarkdown, FileHTML,
		"plot-pasta-tap-tcp4-out.svg", "ratio-pasta-tap-tcp4-out.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".svg") {
			wellFormed(t, f, string(b))
			if !strings.Contains(string(b), "<polyline") {
				t.Errorf("%s: no line", f)
			}
		}
	}
	sum, _ := os.ReadFile(filepath.Join(dir, FileSummary))
	if !strings.Contains(string(sum), "tcp4-out\tGbps\tgopasst pasta / Debian pasta\tratio\t65520\t\t\t\t\t2") {
		t.Errorf("summary lacks the ratio:\n%s", sum)
	}
}

// passtSet returns gopasst's and Debian's passt on the stream path, the
// stream ceiling (passt's own kernel reference) and the veth pair (the
// tap path's, shared), at two MTUs, with the pasta samples of sampleSet.
func passtSet() []Sample {
	s := sampleSet()
	add := func(cfg, role, mode, path string, mtu int, row string, vals ...float64) {
		for i, v := range vals {
			s = append(s, Sample{Rep: i + 1, Config: cfg, Role: role, Mode: mode, Path: path, MTU: mtu, Row: row, Value: v})
		}
	}
	add("gopasst passt", RoleOurs, "passt", "stream", 1500, "tcp4-out", 3, 3, 3)
	add("gopasst passt", RoleOurs, "passt", "stream", 65520, "tcp4-out", 9, 9, 9)
	add("Debian passt", RolePeer, "passt", "stream", 1500, "tcp4-out", 1, 1, 1)
	add("Debian passt", RolePeer, "passt", "stream", 65520, "tcp4-out", 3, 3, 3)
	add("stream ceiling", RoleKernel, "passt", "stream", 1500, "tcp4-out", 6, 6, 6)
	add("stream ceiling", RoleKernel, "passt", "stream", 65520, "tcp4-out", 10, 10, 10)
	add("gopasst passt", RoleOurs, "passt", "stream", 65520, "cpu-tcp4-out", 0.5)
	add("Debian passt", RolePeer, "passt", "stream", 65520, "cpu-tcp4-out", 1)
	return s
}

func TestBuildTablesPasst(t *testing.T) {
	tables := BuildTables(passtSet())
	if len(tables) != 2 || tables[1].Section != (Section{"passt", "stream"}) {
		t.Fatalf("tables %+v", tables)
	}
	pasta, tb := tables[0], tables[1]
	for _, c := range pasta.Configs {
		if c.Label == "stream ceiling" || strings.HasSuffix(c.Label, " passt") {
			t.Errorf("pasta's table shows %q", c.Label)
		}
	}
	var order []string
	for _, c := range tb.Configs {
		order = append(order, c.Label)
	}
	// Ours, the peer, then the stream path's own reference before the
	// shared veth pair (the plots' reference is the first kernel line).
	if strings.Join(order, ",") != "gopasst passt,Debian passt,stream ceiling,veth" {
		t.Errorf("passt's configurations %v", order)
	}
	g := tb.Groups[0]
	if g.Row.ID != "tcp4-out" || g.Row.TitleFor(tb.Section.Mode) != "TCP throughput over IPv4: guest to host" {
		t.Fatalf("first group %s", g.Row.ID)
	}
	for label, want := range map[string][2]float64{
		"gopasst passt / Debian passt":   {3, 3},
		"gopasst passt / stream ceiling": {0.5, 0.9},
		"gopasst passt / veth":           {0.75, 9.0 / 22},
		"Debian passt / stream ceiling":  {1.0 / 6, 0.3},
	} {
		r := line(t, g, label).Ratio
		if math.Abs(r[0]-want[0]) > 1e-9 || math.Abs(r[1]-want[1]) > 1e-9 {
			t.Errorf("%s: %v, want %v", label, r, want)
		}
	}
	var cpu Group
	for _, g := range tb.Groups {
		if g.Row.ID == "cpu-tcp4-out" {
			cpu = g
		}
	}
	if r := line(t, cpu, "gopasst passt / Debian passt").Ratio; r[1] != 0.5 {
		t.Errorf("CPU ratio %v", r)
	}
	md := Markdown(Meta{}, tables, nil)
	for _, want := range []string{"## passt: guest connections via the stream socket", "|  | stream ceiling | 6.00 <sub>6.00–6.00</sub> | 10.0 <sub>10.0–10.0</sub> |"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	if _, err := Write(dir, Meta{}, passtSet()); err != nil {
		t.Fatal(err)
	}
	sum, _ := os.ReadFile(filepath.Join(dir, FileSummary))
	if !strings.Contains(string(sum), "passt\tstream\ttcp4-out\tGbps\tgopasst passt / Debian passt\tratio\t65520\t\t\t\t\t3\n") {
		t.Errorf("summary lacks passt's ratio:\n%s", sum)
	}
	if _, err := os.Stat(filepath.Join(dir, "ratio-passt-stream-tcp4-out.svg")); err != nil {
		t.Error(err)
	}
}

func TestBuildTablesReferencesAlone(t *testing.T) {
	var veth, ceil []Sample
	for _, s := range passtSet() {
		switch s.Config {
		case "veth":
			veth = append(veth, s)
		case "stream ceiling":
			ceil = append(ceil, s)
		}
	}
	// -only veth: pasta's table only, not passt's again.
	if tb := BuildTables(veth); len(tb) != 1 || tb[0].Section.Mode != "pasta" {
		t.Errorf("veth alone: %+v", tb)
	}
	// -only ceiling: passt's table, the ceiling's own.
	if tb := BuildTables(ceil); len(tb) != 1 || tb[0].Section != (Section{"passt", "stream"}) {
		t.Errorf("ceiling alone: %+v", tb)
	}
	// -only ceiling,veth: both references in passt's table.
	tb := BuildTables(append(ceil, veth...))
	if len(tb) != 2 || len(tb[1].Configs) != 2 {
		t.Errorf("ceiling and veth: %+v", tb)
	}
}
