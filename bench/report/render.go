// Rendering the tables as Markdown and HTML, with the run's description.

package report

import (
	"fmt"
	"html"
	"strings"
)

// Meta describes a run: where, when, how it measured.
type Meta struct {
	Date     string            `json:"date"`
	Commit   string            `json:"commit"`
	Command  string            `json:"command"`
	Profile  string            `json:"profile"`
	Reps     int               `json:"repetitions"`
	Machine  string            `json:"machine"`
	Pinning  string            `json:"pinning"`
	Method   []string          `json:"method"`
	Tools    map[string]string `json:"tools"`
	Notes    []string          `json:"notes"` // skipped configurations, failures
	Load     string            `json:"load"`
	Runtime  string            `json:"runtime"`
	Versions []string          `json:"-"`
}

// notes collects the errors of a table's cells as numbered footnotes.
type notes struct {
	list []string
	idx  map[string]int
}

// ref returns the footnote number of err, adding it if new.
func (n *notes) ref(err string) int {
	if n.idx == nil {
		n.idx = map[string]int{}
	}
	if i, ok := n.idx[err]; ok {
		return i
	}
	n.list = append(n.list, err)
	n.idx[err] = len(n.list)
	return len(n.list)
}

// cellText returns the text of a configuration cell: the median, then the
// range when several repetitions gave figures (wrapped by rng), and
// footnote references for repetitions that failed.
func cellText(c Cell, has bool, unit string, n *notes, rng func(string) string) string {
	if !has {
		return "—"
	}
	var b strings.Builder
	if c.OK() {
		b.WriteString(FormatValue(c.Median, unit))
		if c.N > 1 {
			b.WriteString(" " + rng(FormatValue(c.Min, unit)+"–"+FormatValue(c.Max, unit)))
		}
	} else {
		b.WriteString("fail")
	}
	for _, e := range c.Errors {
		fmt.Fprintf(&b, " [%d]", n.ref(e))
	}
	return b.String()
}

// Markdown returns the results as a Markdown document: the run's
// description, how to read the tables, the tables, and links to plots
// (file names relative to the document).
func Markdown(m Meta, tables []Table, plots []Plot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# gopasst benchmark: %s, %s\n\n", m.Date, m.Commit)
	writeMetaMD(&b, m)
	b.WriteString(HowToRead + "\n")
	for _, t := range tables {
		var n notes
		fmt.Fprintf(&b, "## %s\n\n", t.Section.Heading())
		b.WriteString("| | configuration |")
		for _, mtu := range t.MTUs {
			fmt.Fprintf(&b, " %s |", MTUHeading(mtu))
		}
		b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(t.MTUs)) + "\n")
		for _, g := range t.Groups {
			for i, l := range g.Lines {
				title := ""
				if i == 0 {
					title = fmt.Sprintf("**%s** (%s)", g.Row.TitleFor(t.Section.Mode), g.Row.Unit)
				}
				label := l.Label
				if l.Role == "ratio" {
					label = "*" + label + "*"
				}
				fmt.Fprintf(&b, "| %s | %s |", title, label)
				for j := range t.MTUs {
					if l.Role == "ratio" {
						fmt.Fprintf(&b, " *%s* |", FormatRatio(l.Ratio[j]))
						continue
					}
					fmt.Fprintf(&b, " %s |", cellText(l.Cells[j], l.Has[j], g.Row.Unit, &n, func(s string) string { return "<sub>" + s + "</sub>" }))
				}
				b.WriteString("\n")
			}
		}
		b.WriteString("\n")
		for i, e := range n.list {
			fmt.Fprintf(&b, "[%d] %s  \n", i+1, e)
		}
		if len(n.list) > 0 {
			b.WriteString("\n")
		}
		for _, p := range plots {
			if p.Section == t.Section {
				fmt.Fprintf(&b, "![%s](%s) ", p.Title, p.File)
			}
		}
		b.WriteString("\n\n")
	}
	return b.String()
}

// writeMetaMD writes the run's description as a Markdown list.
func writeMetaMD(b *strings.Builder, m Meta) {
	fmt.Fprintf(b, "- Command: `%s` (profile %s, %d repetition(s) of every measurement, median shown, min–max in small type)\n", m.Command, m.Profile, m.Reps)
	fmt.Fprintf(b, "- Machine: %s\n", m.Machine)
	fmt.Fprintf(b, "- CPU placement: %s\n", m.Pinning)
	if m.Load != "" {
		fmt.Fprintf(b, "- Load: %s\n", m.Load)
	}
	if m.Runtime != "" {
		fmt.Fprintf(b, "- Runtime: %s\n", m.Runtime)
	}
	for _, k := range sortedKeys(m.Tools) {
		fmt.Fprintf(b, "- %s: %s\n", k, m.Tools[k])
	}
	for _, s := range m.Method {
		fmt.Fprintf(b, "- %s\n", s)
	}
	if len(m.Notes) > 0 {
		b.WriteString("\nNotes from this run:\n\n")
		for _, s := range m.Notes {
			fmt.Fprintf(b, "- %s\n", s)
		}
	}
	b.WriteString("\n")
}

// HowToRead explains the tables; it opens every published document.
const HowToRead = `How to read the tables: one table per mode and path as in the C original's
performance page; one column per MTU of the namespace's (or guest's) interface;
throughput in Gbit/s (higher is better), latency in microseconds per transaction,
1e6 / transactions per second, as the C original reports it (lower is better).
Every row lists each configuration: gopasst first, then other builds, the peers
(Debian's pasta and passt, slirp4netns) and the kernel's own path (a veth pair
between two namespaces, loopback for the splice path, and for passt the stream
ceiling: two stream peers joined by a verbatim relay), which is the limit a
translator can approach. Ratio lines divide medians: "A / B" above 1 means A
moved more data per second on a throughput row, and took longer per transaction
on a latency row. "—": not measured there; "fail [n]": every repetition failed,
see note n under the table.
`

// HTML returns the results as a self-contained HTML page (plots linked as
// images by file name).
func HTML(m Meta, tables []Table, plots []Plot) string {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>gopasst benchmark %s %s</title>
<style>
body { font-family: sans-serif; max-width: 75em; margin: 1em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: .25em .6em; }
th { background: #eee; }
td.v { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t { font-weight: bold; background: #f6f6f6; }
tr.ours td { background: #e8f3e8; }
tr.kernel td { color: #555; }
tr.ratio td { font-style: italic; color: #335; }
small { color: #777; }
pre { background: #f4f4f4; padding: .5em; }
img { max-width: 100%%; margin: .3em; border: 1px solid #ddd; }
</style></head><body>
<h1>gopasst benchmark: %s, %s</h1>
`, esc(m.Date), esc(m.Commit), esc(m.Date), esc(m.Commit))
	b.WriteString("<ul>\n")
	fmt.Fprintf(&b, "<li>Command: <code>%s</code> (profile %s, %d repetition(s), median shown, <small>min–max</small>)</li>\n", esc(m.Command), esc(m.Profile), m.Reps)
	fmt.Fprintf(&b, "<li>Machine: %s</li>\n<li>CPU placement: %s</li>\n", esc(m.Machine), esc(m.Pinning))
	if m.Load != "" {
		fmt.Fprintf(&b, "<li>Load: %s</li>\n", esc(m.Load))
	}
	if m.Runtime != "" {
		fmt.Fprintf(&b, "<li>Runtime: %s</li>\n", esc(m.Runtime))
	}
	for _, k := range sortedKeys(m.Tools) {
		fmt.Fprintf(&b, "<li>%s: %s</li>\n", esc(k), esc(m.Tools[k]))
	}
	for _, s := range m.Method {
		fmt.Fprintf(&b, "<li>%s</li>\n", esc(s))
	}
	b.WriteString("</ul>\n")
	if len(m.Notes) > 0 {
		b.WriteString("<p>Notes from this run:</p><ul>\n")
		for _, s := range m.Notes {
			fmt.Fprintf(&b, "<li>%s</li>\n", esc(s))
		}
		b.WriteString("</ul>\n")
	}
	fmt.Fprintf(&b, "<p>%s</p>\n", esc(HowToRead))
	for _, t := range tables {
		var n notes
		fmt.Fprintf(&b, "<h2>%s</h2>\n<table>\n<tr><th></th><th>MTU:</th>", esc(t.Section.Heading()))
		for _, mtu := range t.MTUs {
			fmt.Fprintf(&b, "<th>%s</th>", esc(MTUHeading(mtu)))
		}
		b.WriteString("</tr>\n")
		for _, g := range t.Groups {
			for i, l := range g.Lines {
				fmt.Fprintf(&b, `<tr class="%s">`, esc(l.Role))
				if i == 0 {
					fmt.Fprintf(&b, `<td class="t" rowspan="%d">%s<br><small>%s</small></td>`, len(g.Lines), esc(g.Row.TitleFor(t.Section.Mode)), esc(g.Row.Unit))
				}
				fmt.Fprintf(&b, "<td>%s</td>", esc(l.Label))
				for j := range t.MTUs {
					if l.Role == "ratio" {
						fmt.Fprintf(&b, `<td class="v">%s</td>`, esc(FormatRatio(l.Ratio[j])))
						continue
					}
					txt := cellText(l.Cells[j], l.Has[j], g.Row.Unit, &n, func(s string) string { return "\x00" + s + "\x01" })
					txt = esc(txt)
					txt = strings.ReplaceAll(strings.ReplaceAll(txt, "\x00", "<small>"), "\x01", "</small>")
					fmt.Fprintf(&b, `<td class="v">%s</td>`, txt)
				}
				b.WriteString("</tr>\n")
			}
		}
		b.WriteString("</table>\n")
		if len(n.list) > 0 {
			b.WriteString("<ol>\n")
			for _, e := range n.list {
				fmt.Fprintf(&b, "<li>%s</li>\n", esc(e))
			}
			b.WriteString("</ol>\n")
		}
		for _, p := range plots {
			if p.Section == t.Section {
				fmt.Fprintf(&b, `<img src="%s" alt="%s">`+"\n", esc(p.File), esc(p.Title))
			}
		}
	}
	b.WriteString("</body></html>\n")
	return b.String()
}
