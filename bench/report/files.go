// Writing a results directory: raw samples (TSV, JSON), the summary with
// ratios (TSV), the tables (Markdown, HTML) and the plots (SVG).

package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names inside a results directory.
const (
	FileJSON     = "results.json"
	FileSamples  = "samples.tsv"
	FileSummary  = "summary.tsv"
	FileMarkdown = "results.md"
	FileHTML     = "index.html"
)

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// tsvField makes s safe for a TSV field.
func tsvField(s string) string {
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
}

// SamplesTSV returns every sample as a TSV line under a header.
func SamplesTSV(samples []Sample) string {
	var b strings.Builder
	b.WriteString("rep\tconfig\trole\tmode\tpath\tmtu\trow\tvalue\tunit\textra\terror\n")
	for _, s := range samples {
		rd, _ := RowByID(s.Row)
		var ex []string
		for _, k := range sortedKeysF(s.Extra) {
			ex = append(ex, fmt.Sprintf("%s=%g", k, s.Extra[k]))
		}
		val := ""
		if s.Err == "" {
			val = fmt.Sprintf("%g", s.Value)
		}
		fmt.Fprintf(&b, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Rep, tsvField(s.Config), s.Role, s.Mode, s.Path,
			s.MTU, s.Row, val, rd.Unit, strings.Join(ex, ","), tsvField(s.Err))
	}
	return b.String()
}

// sortedKeysF returns the keys of m in order.
func sortedKeysF(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// SummaryTSV returns one line per table line and MTU: medians with min,
// max and count for configurations, the ratio for ratio lines.
func SummaryTSV(tables []Table) string {
	var b strings.Builder
	b.WriteString("mode\tpath\trow\tunit\tline\tkind\tmtu\tmedian\tmin\tmax\tn\tratio\n")
	f := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return fmt.Sprintf("%g", v)
	}
	for _, t := range tables {
		for _, g := range t.Groups {
			for _, l := range g.Lines {
				for i, mtu := range t.MTUs {
					if !l.Has[i] {
						continue
					}
					if l.Role == "ratio" {
						fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\tratio\t%d\t\t\t\t\t%s\n", t.Section.Mode, t.Section.Path, g.Row.ID, g.Row.Unit, tsvField(l.Label), mtu, f(l.Ratio[i]))
						continue
					}
					c := l.Cells[i]
					med, lo, hi := math.NaN(), math.NaN(), math.NaN()
					if c.OK() {
						med, lo, hi = c.Median, c.Min, c.Max
					}
					fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t\n", t.Section.Mode, t.Section.Path, g.Row.ID, g.Row.Unit, tsvField(l.Label), l.Role, mtu, f(med), f(lo), f(hi), c.N)
				}
			}
		}
	}
	return b.String()
}

// Results is the JSON document of a run.
type Results struct {
	Meta    Meta     `json:"meta"`
	Samples []Sample `json:"samples"`
}

// Write writes the results of a run into dir (created if needed): raw
// samples as JSON and TSV, the summary, Markdown, HTML and SVG plots. It
// returns the Markdown document and the first error.
func Write(dir string, m Meta, samples []Sample) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results directory: %w", err)
	}
	tables := BuildTables(samples)
	plots := BuildPlots(tables)
	md := Markdown(m, tables, plots)
	js, err := json.MarshalIndent(Results{m, samples}, "", " ")
	if err != nil {
		return "", fmt.Errorf("results JSON: %w", err)
	}
	files := map[string]string{
		FileJSON:     string(js) + "\n",
		FileSamples:  SamplesTSV(samples),
		FileSummary:  SummaryTSV(tables),
		FileMarkdown: md,
		FileHTML:     HTML(m, tables, plots),
	}
	for _, p := range plots {
		files[p.File] = p.SVG
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("write %s: %w", name, err)
		}
	}
	return md, nil
}
