// Package report turns benchmark samples into the published results: raw
// TSV and JSON, Markdown and HTML tables in the C original's layout, and
// SVG plots written by hand.
//
// # Theory of operation
//
// A Sample is one figure of one repetition: a configuration (gopasst's
// pasta at MTU 65520, Debian's pasta, a veth pair...) measured on one row
// (TCP throughput over IPv4 from the namespace to the host, TCP_RR
// latency...). Aggregate groups the repetitions of each configuration, row
// and MTU into a Cell with median, minimum and maximum.
//
// The tables follow the C original's perf page: one table per mode and
// path (pasta over the tap, pasta's splice path, passt), one column per
// MTU, throughput rows in Gbit/s and latency rows in microseconds per
// transaction. Where the C original shows one implementation, each row
// here is a group: one line per configuration (ours first, then other
// builds, the peers and the kernel's own path), followed by ratio lines
// (ours / peer, ours / kernel) computed from the medians.
package report

import (
	"math"
	"sort"
	"strings"
)

// Roles of a configuration, in the order the tables show them.
const (
	RoleOurs   = "ours"   // gopasst
	RoleExtra  = "extra"  // another build given with --pasta/--passt
	RolePeer   = "peer"   // Debian's pasta or passt, slirp4netns
	RoleKernel = "kernel" // loopback, veth: the kernel's own limit
)

// Sample is one measured figure.
type Sample struct {
	Rep    int                `json:"rep"`
	Config string             `json:"config"` // label, e.g. "gopasst pasta"
	Role   string             `json:"role"`
	Mode   string             `json:"mode"` // "pasta" or "passt"
	Path   string             `json:"path"` // "tap", "splice", "stream" (passt's socket) or "vhost-user"
	MTU    int                `json:"mtu"`  // 0 where the path has none (splice, loopback)
	Row    string             `json:"row"`  // a RowDef ID
	Value  float64            `json:"value"`
	Extra  map[string]float64 `json:"extra,omitempty"`
	Err    string             `json:"error,omitempty"`
}

// RowDef describes one table row.
type RowDef struct {
	ID     string
	Title  string // with "ns" for the namespace or guest side: see Title
	Unit   string // "Gbps", "µs", "%", "s/GB", "MiB", "ms"
	Higher bool   // higher is better (throughput); false for latency, loss, CPU
	Plot   bool   // gets an SVG plot by MTU
}

// Rows lists every row in table order.
var Rows = []RowDef{
	{"tcp6-out", "TCP throughput over IPv6: ns to host", "Gbps", true, true},
	{"tcp4-out", "TCP throughput over IPv4: ns to host", "Gbps", true, true},
	{"tcp6-in", "TCP throughput over IPv6: host to ns", "Gbps", true, true},
	{"tcp4-in", "TCP throughput over IPv4: host to ns", "Gbps", true, true},
	{"udp6-out", "UDP throughput over IPv6: ns to host", "Gbps", true, true},
	{"udp4-out", "UDP throughput over IPv4: ns to host", "Gbps", true, true},
	{"udp4-in", "UDP throughput over IPv4: host to ns", "Gbps", true, true},
	{"udp6-in", "UDP throughput over IPv6: host to ns", "Gbps", true, true},
	{"udp4-out-1g", "UDP at 1 Gbit/s over IPv4: ns to host, received", "Gbps", true, false},
	{"udp4-out-1g-loss", "UDP at 1 Gbit/s over IPv4: ns to host, lost", "%", false, false},
	{"tcprr4-out", "TCP RR latency over IPv4: ns to host", "µs", false, false},
	{"tcprr4-in", "TCP RR latency over IPv4: host to ns", "µs", false, false},
	{"tcpcrr4-out", "TCP CRR latency over IPv4: ns to host", "µs", false, false},
	{"tcpcrr4-in", "TCP CRR latency over IPv4: host to ns", "µs", false, false},
	{"udprr4-out", "UDP RR latency over IPv4: ns to host", "µs", false, false},
	{"udprr4-in", "UDP RR latency over IPv4: host to ns", "µs", false, false},
	{"tcprr6-out", "TCP RR latency over IPv6: ns to host", "µs", false, false},
	{"tcprr6-in", "TCP RR latency over IPv6: host to ns", "µs", false, false},
	{"tcpcrr6-out", "TCP CRR latency over IPv6: ns to host", "µs", false, false},
	{"tcpcrr6-in", "TCP CRR latency over IPv6: host to ns", "µs", false, false},
	{"udprr6-out", "UDP RR latency over IPv6: ns to host", "µs", false, false},
	{"udprr6-in", "UDP RR latency over IPv6: host to ns", "µs", false, false},
	{"cpu-tcp6-out", "Translator CPU per GB, TCP over IPv6: ns to host", "s/GB", false, false},
	{"cpu-tcp4-out", "Translator CPU per GB, TCP over IPv4: ns to host", "s/GB", false, false},
	{"cpu-tcp6-in", "Translator CPU per GB, TCP over IPv6: host to ns", "s/GB", false, false},
	{"cpu-tcp4-in", "Translator CPU per GB, TCP over IPv4: host to ns", "s/GB", false, false},
	{"cpu-udp6-out", "Translator CPU per GB delivered, UDP flood over IPv6: ns to host", "s/GB", false, false},
	{"cpu-udp4-out", "Translator CPU per GB delivered, UDP flood over IPv4: ns to host", "s/GB", false, false},
	{"cpu-udp4-in", "Translator CPU per GB delivered, UDP flood over IPv4: host to ns", "s/GB", false, false},
	{"cpu-udp6-in", "Translator CPU per GB delivered, UDP flood over IPv6: host to ns", "s/GB", false, false},
	{"cpu-udp4-out-1g", "Translator CPU per GB delivered, UDP at 1 Gbit/s over IPv4: ns to host", "s/GB", false, false},
	{"rss", "Translator peak RSS", "MiB", false, false},
	{"rss-idle", "Translator RSS, idle after set-up", "MiB", false, false},
	{"startup", "Start-up to exit: pasta --config-net -f -- true", "ms", false, false},
}

// RowByID returns the definition of the row id and whether it exists.
func RowByID(id string) (RowDef, bool) {
	for _, r := range Rows {
		if r.ID == id {
			return r, true
		}
	}
	return RowDef{}, false
}

// TitleFor returns the row's title for mode: passt's other side is a guest,
// pasta's a namespace ("ns"), as in the C original's tables.
func (r RowDef) TitleFor(mode string) string {
	if mode != "passt" {
		return r.Title
	}
	t := strings.ReplaceAll(r.Title, ": ns to host", ": guest to host")
	return strings.ReplaceAll(t, ": host to ns", ": host to guest")
}

// Cell is the aggregate of one configuration, row and MTU.
type Cell struct {
	Median, Min, Max float64
	N                int      // repetitions with a figure
	Errors           []string // distinct errors of the others
}

// OK reports whether the cell has at least one figure.
func (c Cell) OK() bool { return c.N > 0 }

// CellKey identifies a cell.
type CellKey struct {
	Mode, Path, Config string
	MTU                int
	Row                string
}

// Aggregate groups samples into cells: median, minimum and maximum of the
// figures, and the distinct errors of the repetitions that had none.
func Aggregate(samples []Sample) map[CellKey]Cell {
	vals := make(map[CellKey][]float64)
	errs := make(map[CellKey][]string)
	for _, s := range samples {
		k := CellKey{s.Mode, s.Path, s.Config, s.MTU, s.Row}
		if s.Err != "" || math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			e := s.Err
			if e == "" {
				e = "not a number"
			}
			found := false
			for _, x := range errs[k] {
				found = found || x == e
			}
			if !found {
				errs[k] = append(errs[k], e)
			}
			if _, ok := vals[k]; !ok {
				vals[k] = nil
			}
			continue
		}
		vals[k] = append(vals[k], s.Value)
	}
	out := make(map[CellKey]Cell, len(vals))
	for k, v := range vals {
		c := Cell{N: len(v), Errors: errs[k]}
		if len(v) > 0 {
			c.Median, c.Min, c.Max = Median(v), minOf(v), maxOf(v)
		}
		out[k] = c
	}
	return out
}

// Median returns the median of v (the mean of the middle two for an even
// count), without reordering v; NaN for an empty v.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// minOf returns the smallest of v (len(v) > 0).
func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = math.Min(m, x)
	}
	return m
}

// maxOf returns the largest of v (len(v) > 0).
func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = math.Max(m, x)
	}
	return m
}
