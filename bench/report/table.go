// Building the tables: one per mode and path, MTU columns, a group of
// lines per row (configurations, then ratios).

package report

import (
	"fmt"
	"math"
	"sort"
)

// Section names a table: a mode and a path.
type Section struct{ Mode, Path string }

// Sections lists the tables in the order they are published.
var Sections = []Section{{"pasta", "tap"}, {"pasta", "splice"}, {"passt", "stream"}, {"passt", "vhost-user"}}

// Heading returns the table's heading.
func (s Section) Heading() string {
	switch {
	case s.Mode == "pasta" && s.Path == "tap":
		return "pasta: connections via the tap device"
	case s.Mode == "pasta" && s.Path == "splice":
		return "pasta: local connections (loopback, splice path)"
	case s.Mode == "passt" && s.Path == "vhost-user":
		return "passt: vhost-user"
	case s.Mode == "passt":
		return "passt: guest connections via the stream socket"
	}
	return s.Mode + ": " + s.Path
}

// refPaths returns the paths whose shared kernel references (mode "")
// the section shows: its own, and for passt's stream path the tap path's
// veth pair too, the kernel's limit between two namespaces, beside the
// stream path's own ceiling.
func (s Section) refPaths() []string {
	if s.Mode == "passt" {
		return []string{s.Path, "tap"}
	}
	return []string{s.Path}
}

// Slug returns a file-name-safe name for the section.
func (s Section) Slug() string { return s.Mode + "-" + s.Path }

// ConfigRef is a configuration as it appears in a table.
type ConfigRef struct{ Label, Role string }

// Line is one line of a row group: a configuration's cells, or a ratio.
type Line struct {
	Label string
	Role  string    // the configuration's role; "ratio" for a ratio line
	Cells []Cell    // one per MTU column; a ratio line's figure is Median
	Has   []bool    // whether the column has a figure (or error) at all
	Ratio []float64 // ratio lines: the ratio per column, NaN where missing
}

// Group is one row of the C original's table: its lines.
type Group struct {
	Row   RowDef
	Lines []Line
}

// Table is one published table.
type Table struct {
	Section Section
	MTUs    []int // columns; 0 is "no MTU" (loopback, splice)
	Configs []ConfigRef
	Groups  []Group
}

// roleRank orders roles in tables.
func roleRank(role string) int {
	switch role {
	case RoleOurs:
		return 0
	case RoleExtra:
		return 1
	case RolePeer:
		return 2
	}
	return 3
}

// inSection reports whether sample s belongs to section sec: kernel
// references carry no mode and belong to every mode's table of their path.
func inSection(s Sample, sec Section) bool {
	if s.Mode != "" {
		return s.Mode == sec.Mode && s.Path == sec.Path
	}
	for _, p := range sec.refPaths() {
		if s.Path == p {
			return true
		}
	}
	return false
}

// BuildTables returns the tables for samples. Shared kernel references
// alone (a run with -only veth) appear in pasta's tables, not again in
// passt's; a reference of passt's own (the stream ceiling) gets passt's.
func BuildTables(samples []Sample) []Table {
	cells := Aggregate(samples)
	var tables []Table
	for _, sec := range Sections {
		t := Table{Section: sec}
		mtus := map[int]bool{}
		seen := map[string]bool{}
		own := map[string]bool{} // configurations of the section's mode
		rows := map[string]bool{}
		translator, ownRef := false, false
		if sec.Path == "vhost-user" && !hasPath(samples, sec) {
			continue // no vhost-user run: no table, whatever stream had
		}
		for _, s := range samples {
			if !inSection(s, sec) {
				continue
			}
			mtus[s.MTU] = true
			rows[s.Row] = true
			if !seen[s.Config] {
				seen[s.Config] = true
				t.Configs = append(t.Configs, ConfigRef{s.Config, s.Role})
			}
			own[s.Config] = s.Mode != ""
			translator = translator || s.Role != RoleKernel
			ownRef = ownRef || s.Role == RoleKernel && s.Mode != ""
		}
		// Shared kernel references belong to every mode's table of their
		// path: show them alone only in pasta's (a run of references only).
		if !translator && !ownRef && (sec.Mode != "pasta" || len(t.Configs) == 0) {
			continue
		}
		for m := range mtus {
			t.MTUs = append(t.MTUs, m)
		}
		sort.Ints(t.MTUs)
		// By role; among kernel references the section's own (the stream
		// ceiling) before shared ones: the first is the plots' reference.
		rank := func(c ConfigRef) int {
			r := 2 * roleRank(c.Role)
			if c.Role == RoleKernel && !own[c.Label] {
				r++
			}
			return r
		}
		sort.SliceStable(t.Configs, func(i, j int) bool { return rank(t.Configs[i]) < rank(t.Configs[j]) })
		for _, rd := range Rows {
			if !rows[rd.ID] {
				continue
			}
			t.Groups = append(t.Groups, buildGroup(cells, sec, rd, t.MTUs, t.Configs))
		}
		tables = append(tables, t)
	}
	return tables
}

// cellFor returns the cell of config c on row rd at mtu, looking for
// kernel references under any mode.
func cellFor(cells map[CellKey]Cell, sec Section, c ConfigRef, rd RowDef, mtu int) (Cell, bool) {
	if x, ok := cells[CellKey{sec.Mode, sec.Path, c.Label, mtu, rd.ID}]; ok {
		return x, true
	}
	for _, p := range sec.refPaths() {
		if x, ok := cells[CellKey{"", p, c.Label, mtu, rd.ID}]; ok {
			return x, true
		}
	}
	return Cell{}, false
}

// buildGroup returns the lines of row rd: one per configuration measured
// on it, then the ratios of each of ours to every other configuration, and
// of every translator to the kernel reference of the same MTU.
func buildGroup(cells map[CellKey]Cell, sec Section, rd RowDef, mtus []int, configs []ConfigRef) Group {
	g := Group{Row: rd}
	byLabel := map[string]Line{}
	var present []ConfigRef
	for _, c := range configs {
		l := Line{Label: c.Label, Role: c.Role, Cells: make([]Cell, len(mtus)), Has: make([]bool, len(mtus))}
		any := false
		for i, m := range mtus {
			l.Cells[i], l.Has[i] = cellFor(cells, sec, c, rd, m)
			any = any || l.Has[i]
		}
		if any {
			g.Lines = append(g.Lines, l)
			byLabel[c.Label] = l
			present = append(present, c)
		}
	}
	ratio := func(a, b Line, label string) {
		r := Line{Label: label, Role: "ratio", Ratio: make([]float64, len(mtus)), Has: make([]bool, len(mtus))}
		any := false
		for i := range mtus {
			r.Ratio[i] = math.NaN()
			if a.Cells[i].OK() && b.Cells[i].OK() && b.Cells[i].Median > 0 {
				r.Ratio[i] = a.Cells[i].Median / b.Cells[i].Median
				r.Has[i] = true
				any = true
			}
		}
		if any {
			g.Lines = append(g.Lines, r)
		}
	}
	for _, o := range present {
		if o.Role != RoleOurs {
			continue
		}
		for _, x := range present {
			if x.Role == RoleExtra || x.Role == RolePeer {
				ratio(byLabel[o.Label], byLabel[x.Label], o.Label+" / "+x.Label)
			}
		}
	}
	if rd.ID == "rss" || rd.ID == "rss-idle" || rd.ID == "startup" || rd.ID == "udp4-out-1g-loss" || len(rd.ID) > 4 && rd.ID[:4] == "cpu-" {
		return g // no kernel figure to compare with
	}
	for _, o := range present {
		if o.Role == RoleKernel {
			continue
		}
		for _, k := range present {
			if k.Role == RoleKernel {
				ratio(byLabel[o.Label], byLabel[k.Label], o.Label+" / "+k.Label)
			}
		}
	}
	return g
}

// MTUHeading returns a column heading for mtu.
func MTUHeading(mtu int) string {
	if mtu == 0 {
		return "loopback"
	}
	return fmt.Sprintf("%dB", mtu)
}

// FormatValue returns v formatted for its unit: Gbit/s and MiB with two
// decimals below 10 and one above, microseconds whole from 100 up.
func FormatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "—"
	}
	switch unit {
	case "µs":
		if v >= 100 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.1f", v)
	case "%":
		return fmt.Sprintf("%.1f", v)
	case "s/GB":
		return fmt.Sprintf("%.2f", v)
	}
	if v >= 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// FormatRatio returns a ratio as "0.62×".
func FormatRatio(r float64) string {
	if math.IsNaN(r) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", r)
}

// hasPath reports whether samples hold a translator's sample of sec's own
// mode and path.
func hasPath(samples []Sample, sec Section) bool {
	for _, s := range samples {
		if s.Mode == sec.Mode && s.Path == sec.Path {
			return true
		}
	}
	return false
}
