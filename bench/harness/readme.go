// Keeping bench/README.md pointed at the latest published results.

package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopasst/bench/report"
)

// Markers of the generated blocks in bench/README.md.
const (
	markFullBegin  = "<!-- latest-full:begin (written by bench) -->"
	markFullEnd    = "<!-- latest-full:end -->"
	markQuickBegin = "<!-- latest-quick:begin (written by bench) -->"
	markQuickEnd   = "<!-- latest-quick:end -->"
)

// UpdateReadme rewrites the generated block of profile in the README at
// readme to show the results in dir: for the full profile the tables
// themselves (links made relative to the README), for the quick profile a
// link. It returns an error when the README or its markers are missing.
func UpdateReadme(readme, dir, profile string) error {
	b, err := os.ReadFile(readme)
	if err != nil {
		return fmt.Errorf("README: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(readme), dir)
	if err != nil {
		return fmt.Errorf("README: %w", err)
	}
	rel = filepath.ToSlash(rel)
	begin, end := markFullBegin, markFullEnd
	links := fmt.Sprintf("Results: [%s/](%s/) — [HTML page](%s/%s), [Markdown](%s/%s), raw [samples.tsv](%s/%s), [summary.tsv](%s/%s), [results.json](%s/%s).\n",
		rel, rel, rel, report.FileHTML, rel, report.FileMarkdown, rel, report.FileSamples, rel, report.FileSummary, rel, report.FileJSON)
	block := links
	if profile == "quick" {
		begin, end = markQuickBegin, markQuickEnd
	} else {
		md, err := os.ReadFile(filepath.Join(dir, report.FileMarkdown))
		if err != nil {
			return fmt.Errorf("README: %w", err)
		}
		body := string(md)
		// Demote headings one level and point plots at the results directory.
		body = strings.ReplaceAll(body, "\n## ", "\n### ")
		if strings.HasPrefix(body, "# ") {
			body = "##" + body[1:]
		}
		body = strings.ReplaceAll(body, "](plot-", "]("+rel+"/plot-")
		body = strings.ReplaceAll(body, "](ratio-", "]("+rel+"/ratio-")
		block = links + "\n" + body
	}
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("README %s: markers %q and %q not found", readme, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + block + "\n" + s[j:]
	return os.WriteFile(readme, []byte(s), 0o644)
}
