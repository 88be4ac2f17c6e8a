// SVG plots written by hand: throughput by MTU per configuration, and the
// ratio of each translator to the kernel reference.

package report

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Plot is one SVG file.
type Plot struct {
	Section Section
	Title   string
	File    string // base name
	SVG     string
}

// series is one line of a chart: a value (and range) per category.
type series struct {
	label     string
	y, lo, hi []float64 // NaN where missing
	dashed    bool
}

// palette holds line colours, ours first.
var palette = []string{"#1b7a1b", "#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"}

// niceStep returns a tick step of 1, 2 or 5 times a power of ten that
// divides span into at most about n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 || math.IsNaN(span) {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// lineChart returns an SVG line chart: categories on x, one line per
// series with min–max whiskers, an optional dashed reference line at ref
// (NaN for none).
func lineChart(title, ylabel string, cats []string, ss []series, ref float64) string {
	const W, H = 680, 400
	const left, right, top, bottom = 64, 200, 44, 54
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	ymax := 0.0
	for _, s := range ss {
		for i := range s.y {
			for _, v := range []float64{s.y[i], s.hi[i]} {
				if !math.IsNaN(v) && v > ymax {
					ymax = v
				}
			}
		}
	}
	if !math.IsNaN(ref) && ref > ymax {
		ymax = ref
	}
	if ymax <= 0 {
		ymax = 1
	}
	step := niceStep(ymax*1.05, 6)
	ytop := math.Ceil(ymax*1.05/step) * step
	xAt := func(i int) float64 {
		if len(cats) == 1 {
			return float64(left) + pw/2
		}
		return float64(left) + pw*(0.06+0.88*float64(i)/float64(len(cats)-1))
	}
	yAt := func(v float64) float64 { return float64(top) + ph*(1-v/ytop) }
	esc := html.EscapeString
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(title))
	for v := 0.0; v <= ytop+step/2; v += step {
		y := yAt(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, float64(left)+pw, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, esc(trimFloat(v)))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="#333"/>`+"\n", left, top, left, float64(top)+ph)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, float64(top)+ph, float64(left)+pw, float64(top)+ph)
	for i, c := range cats {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xAt(i), float64(top)+ph+18, esc(c))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">MTU</text>`+"\n", float64(left)+pw/2, H-12)
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(top)+ph/2, esc(ylabel))
	if !math.IsNaN(ref) {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="6 4"/>`+"\n", left, yAt(ref), float64(left)+pw, yAt(ref))
	}
	for k, s := range ss {
		col := palette[k%len(palette)]
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="5 3"`
		}
		var pts []string
		flush := func() {
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), col, dash)
			}
			pts = pts[:0]
		}
		for i := range cats {
			if i >= len(s.y) || math.IsNaN(s.y[i]) {
				flush()
				continue
			}
			x, y := xAt(i), yAt(s.y[i])
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			if !math.IsNaN(s.lo[i]) && !math.IsNaN(s.hi[i]) && s.hi[i] > s.lo[i] {
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, yAt(s.lo[i]), x, yAt(s.hi[i]), col)
			}
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title></circle>`+"\n", x, y, col, esc(s.label), esc(trimFloat(s.y[i])))
		}
		flush()
		ly := top + 8 + 20*k
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", W-right+14, ly, W-right+36, ly, col, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", W-right+42, ly+4, esc(s.label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// trimFloat formats v with up to three significant decimals.
func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

// BuildPlots returns the SVG plots of tables with more than one MTU
// column: for every plotted row, the throughput of each configuration by
// MTU, and the ratio of each translator to the kernel reference.
func BuildPlots(tables []Table) []Plot {
	var plots []Plot
	for _, t := range tables {
		if len(t.MTUs) < 2 {
			continue
		}
		cats := make([]string, len(t.MTUs))
		for i, m := range t.MTUs {
			cats[i] = MTUHeading(m)
		}
		for _, g := range t.Groups {
			if !g.Row.Plot {
				continue
			}
			var vals, ratios []series
			var kernel *Line
			for i := range g.Lines {
				if g.Lines[i].Role == RoleKernel && kernel == nil {
					kernel = &g.Lines[i]
				}
			}
			for _, l := range g.Lines {
				if l.Role == "ratio" {
					continue
				}
				s := series{label: l.Label, dashed: l.Role == RoleKernel}
				r := series{label: l.Label + " / " + "kernel"}
				for i := range t.MTUs {
					c := l.Cells[i]
					y, lo, hi := math.NaN(), math.NaN(), math.NaN()
					if c.OK() {
						y, lo, hi = c.Median, c.Min, c.Max
					}
					s.y, s.lo, s.hi = append(s.y, y), append(s.lo, lo), append(s.hi, hi)
					ry := math.NaN()
					if kernel != nil && c.OK() && kernel.Cells[i].OK() && kernel.Cells[i].Median > 0 {
						ry = c.Median / kernel.Cells[i].Median
					}
					r.y, r.lo, r.hi = append(r.y, ry), append(r.lo, math.NaN()), append(r.hi, math.NaN())
				}
				vals = append(vals, s)
				if l.Role != RoleKernel {
					r.label = l.Label + " / " + kernel.labelOr("kernel")
					ratios = append(ratios, r)
				}
			}
			if !multiPoint(vals) {
				continue // measured at one MTU only: the table says it all
			}
			title := g.Row.TitleFor(t.Section.Mode)
			plots = append(plots, Plot{
				Section: t.Section, Title: title,
				File: fmt.Sprintf("plot-%s-%s.svg", t.Section.Slug(), g.Row.ID),
				SVG:  lineChart(title, g.Row.Unit, cats, vals, math.NaN()),
			})
			if kernel != nil && len(ratios) > 0 {
				rt := "Ratio to " + kernel.Label + ": " + title
				plots = append(plots, Plot{
					Section: t.Section, Title: rt,
					File: fmt.Sprintf("ratio-%s-%s.svg", t.Section.Slug(), g.Row.ID),
					SVG:  lineChart(rt, "ratio to kernel", cats, ratios, 1),
				})
			}
		}
	}
	return plots
}

// labelOr returns the line's label, or def for a nil line.
func (l *Line) labelOr(def string) string {
	if l == nil {
		return def
	}
	return l.Label
}

// multiPoint reports whether some series has figures at two MTUs or more.
func multiPoint(ss []series) bool {
	for _, s := range ss {
		n := 0
		for _, y := range s.y {
			if !math.IsNaN(y) {
				n++
			}
		}
		if n >= 2 {
			return true
		}
	}
	return false
}
