package tgctl

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// render prints v as indented JSON with -o json, else calls table with a
// tabwriter that is flushed afterwards.
func (a *App) render(v any, table func(t *tableWriter)) error {
	if a.global.output == "json" {
		return writeJSON(a.Stdout, v)
	}
	t := newTable(a.Stdout)
	table(t)
	return t.flush()
}

func (a *App) jsonOutput() bool { return a.global.output == "json" }

// writeJSON writes v indented by two spaces, with a final newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON output: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// tableWriter prints aligned columns: two spaces between columns, headers
// in capitals, "-" for an empty cell.
type tableWriter struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer) *tableWriter {
	return &tableWriter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (t *tableWriter) row(cells ...string) {
	for i, c := range cells {
		c = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' || r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, c)
		if c == "" {
			c = "-"
		}
		cells[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// kv prints a two-column key/value block (for get commands).
func (t *tableWriter) kv(key, value string) { t.row(key+":", value) }

func (t *tableWriter) flush() error { return t.tw.Flush() }

// ts formats a time for tables: RFC 3339 in UTC to the second, "-" if zero.
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func tsp(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ts(*t)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// labels formats a label map as k=v,k2=v2 in key order.
func labels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// nonNil returns s, or an empty slice so JSON prints [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
