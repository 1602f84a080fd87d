package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mnguard/mnguard/internal/csvsafe"
)

// writeProtoJSON writes m as one indented JSON document with the field
// names of the .proto files.
func writeProtoJSON(w *bytes.Buffer, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	// protojson varies its whitespace on purpose so that nobody relies on
	// it; compact and indent it again for stable, diffable output.
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	// A list printed is every page of it: its empty next_page_token, the
	// answer's last field, says nothing.
	out := compact.Bytes()
	if rest, ok := bytes.CutSuffix(out, []byte(`,"next_page_token":""}`)); ok {
		out = append(rest, '}')
	}
	if err := json.Indent(w, out, "", "  "); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	w.WriteByte('\n')
	return nil
}

// writeJSON writes v, which is not a protobuf message, as one indented JSON
// document. It does not escape <, > and & for HTML, so that otpauth:// URLs
// read as they are.
func writeJSON(w *bytes.Buffer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	w.Write(b.Bytes())
	return nil
}

// column is one column of a list. A column without a name is only in CSV
// output; one without a key only in tables.
type column[T any] struct {
	name  string         // table header
	key   string         // CSV header
	table func(T) string // cell in a table
	csv   func(T) string // cell in CSV; nil means the same as table
}

// writeList writes items as a table or CSV.
func writeList[T any](w *bytes.Buffer, format string, cols []column[T], items []T) error {
	if format == formatCSV {
		cw := csv.NewWriter(w)
		var header []string
		for _, c := range cols {
			if c.key != "" {
				header = append(header, c.key)
			}
		}
		cw.Write(header)
		for _, it := range items {
			var row []string
			for _, c := range cols {
				if c.key == "" {
					continue
				}
				f := c.csv
				if f == nil {
					f = c.table
				}
				row = append(row, csvCell(f(it)))
			}
			cw.Write(row)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := newTabWriter(w)
	var cells []string
	for _, c := range cols {
		if c.name != "" {
			cells = append(cells, c.name)
		}
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for _, it := range items {
		cells = cells[:0]
		for _, c := range cols {
			if c.name != "" {
				cells = append(cells, cell(c.table(it)))
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func newTabWriter(w *bytes.Buffer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// field is one line of a key/value view. A field without a label is only in
// CSV output; one without a key only in tables (a section heading, say).
type field struct {
	key   string // CSV key, e.g. "posture.cpu_count"
	label string // table label, e.g. "CPUs"
	value string // table value
	raw   string // CSV value
	sub   []field
}

// kv returns a field shown the same in tables and CSV.
func kv(key, label, value string) field {
	return field{key: key, label: label, value: value, raw: value}
}

// writeFields writes a key/value view: "Label:  value" lines, indented by
// depth, for tables; "key,value" rows under a header for CSV.
func writeFields(w *bytes.Buffer, format string, fields []field) error {
	if format == formatCSV {
		cw := csv.NewWriter(w)
		cw.Write([]string{"key", "value"})
		var walk func([]field)
		walk = func(fs []field) {
			for _, f := range fs {
				if f.key != "" {
					cw.Write([]string{f.key, csvCell(f.raw)})
				}
				walk(f.sub)
			}
		}
		walk(fields)
		cw.Flush()
		return cw.Error()
	}
	var tbl bytes.Buffer
	tw := newTabWriter(&tbl)
	var walk func([]field, string)
	walk = func(fs []field, indent string) {
		for _, f := range fs {
			if f.label == "" {
				continue
			}
			v := f.value
			if len(f.sub) == 0 {
				v = cell(v)
			} else {
				v = sanitize(v)
			}
			fmt.Fprintf(tw, "%s%s:\t%s\n", indent, sanitize(f.label), v)
			walk(f.sub, indent+"  ")
		}
	}
	walk(fields, "")
	if err := tw.Flush(); err != nil {
		return err
	}
	// A heading has no value but is padded like a label; drop the padding.
	for line := range strings.Lines(tbl.String()) {
		w.WriteString(strings.TrimRight(line, " \n"))
		w.WriteByte('\n')
	}
	return nil
}

// cell is s made safe for a table, or "-" when it is empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return sanitize(s)
}

// sanitize replaces control and formatting characters, which would break
// the table's layout or, as escape sequences, the operator's terminal. Much
// of what is shown (hostnames, USB strings, event messages) comes from the
// terminals and is not trusted.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == unicode.ReplacementChar:
			return '?'
		}
		return r
	}, s)
}

// csvCell replaces control characters other than line breaks and tabs,
// which CSV quotes, so that printing a CSV file cannot send escape sequences
// to a terminal; and it puts an apostrophe before a cell that a spreadsheet
// would take for a formula (=, +, -, @), since host names and messages come
// from terminals and auditors open these exports in spreadsheets (OWASP's
// CSV injection advice). JSON output is exact.
func csvCell(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return '?'
		}
		return r
	}, csvsafe.Cell(s))
}

// timeText formats ts as RFC 3339 in the invocation's time zone, or "".
func (inv *invocation) timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().In(inv.loc).Format(time.RFC3339)
}

// timeRel is timeText followed by how long ago or ahead that is, for tables.
func (inv *invocation) timeRel(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return inv.timeText(ts) + " (" + relative(inv.now(), ts.AsTime()) + ")"
}

// timeField is a field holding a time, with the relative time in tables.
func (inv *invocation) timeField(key, label string, ts *timestamppb.Timestamp) field {
	return field{key: key, label: label, value: inv.timeRel(ts), raw: inv.timeText(ts)}
}

// relative says how long ago t was, or how long until it is: "12s ago",
// "in 3h".
func relative(now, t time.Time) string {
	d := now.Sub(t)
	prefix, suffix := "", " ago"
	if d < 0 {
		d = -d
		prefix, suffix = "in ", ""
	}
	return prefix + shortDuration(d) + suffix
}

// shortDuration rounds d to its largest unit: "12s", "5m", "3h", "2d".
func shortDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d < time.Minute-time.Second/2:
		return fmt.Sprintf("%ds", d.Round(time.Second)/time.Second)
	case d < time.Hour-time.Minute/2:
		return fmt.Sprintf("%dm", d.Round(time.Minute)/time.Minute)
	case d < 48*time.Hour-time.Hour/2:
		return fmt.Sprintf("%dh", d.Round(time.Hour)/time.Hour)
	}
	return fmt.Sprintf("%dd", d.Round(day)/day)
}

// longDuration is d in days, hours and minutes: "3d 4h 5m".
func longDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d < time.Minute {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	days, d := d/day, d%day
	hours, d := d/time.Hour, d%time.Hour
	mins := d / time.Minute
	var parts []string
	if days > 0 {
		parts = append(parts, fmt.Sprintf("%dd", days))
	}
	if days > 0 || hours > 0 {
		parts = append(parts, fmt.Sprintf("%dh", hours))
	}
	parts = append(parts, fmt.Sprintf("%dm", mins))
	return strings.Join(parts, " ")
}

// humanBytes is n in binary units: "15.6 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
