package report

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"time"

	"github.com/mnguard/mnguard/server/i18n"
)

//go:embed selfinspection.html selfinspection.css
var assets embed.FS

// tableTime is how tables show times (in the report's time zone).
const tableTime = "2006-01-02 15:04:05"

// funcs are the template's functions for a report in lang. Every text the
// template shows comes through t or one of the label functions.
func funcs(lang string) template.FuncMap {
	t := func(key string, args ...any) string { return i18n.T(lang, key, args...) }
	return template.FuncMap{
		"t": t,
		// tm shows a time; the zero time as a dash.
		"tm": func(x time.Time) string {
			if x.IsZero() {
				return t("report.dash")
			}
			return x.Format(tableTime)
		},
		// day shows a YYYY-MM-DD day in the language's way.
		"day": func(s string) string {
			d, err := time.Parse(time.DateOnly, s)
			if err != nil {
				return s
			}
			// The month is a time.Month: a number with %d, a name with %s.
			return t("report.date", d.Year(), d.Month(), d.Day())
		},
		"dur":    func(seconds int64) string { return duration(lang, seconds) },
		"role":   func(r string) string { return label(lang, "report.role.", r) },
		"source": func(s string) string { return label(lang, "report.source.", s) },
		"state":  func(s string) string { return label(lang, "report.state.", s) },
		"action": func(a string) string { return label(lang, "report.action.", a) },
		"inc":    func(i int) int { return i + 1 },
		"css":    func() template.CSS { return template.CSS(mustAsset("selfinspection.css")) },
	}
}

// label is the text of key prefix+name, or name itself when the catalogue
// has none (a value the report does not know, shown as it is).
func label(lang, prefix, name string) string {
	if i18n.Has(prefix + name) {
		return i18n.T(lang, prefix+name)
	}
	return name
}

// duration shows a number of seconds in days, hours and minutes.
func duration(lang string, seconds int64) string {
	d := time.Duration(seconds) * time.Second
	days, hours, minutes := int64(d/(24*time.Hour)), int64(d%(24*time.Hour)/time.Hour), int64(d%time.Hour/time.Minute)
	switch {
	case days > 0:
		return i18n.T(lang, "report.duration.dhm", days, hours, minutes)
	case hours > 0:
		return i18n.T(lang, "report.duration.hm", hours, minutes)
	case minutes > 0:
		return i18n.T(lang, "report.duration.m", minutes)
	}
	return i18n.T(lang, "report.duration.s", seconds)
}

func mustAsset(name string) string {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("report: embedded %s: %v", name, err)) // built in: cannot fail
	}
	return string(b)
}

// parseTemplate parses the embedded template with funcs of lang.
func parseTemplate(lang string) (*template.Template, error) {
	return template.New("selfinspection.html").Funcs(funcs(lang)).ParseFS(assets, "selfinspection.html")
}

// HTML renders the report as a printable HTML document.
func (r *Report) HTML() ([]byte, error) {
	tmpl, err := parseTemplate(r.Language)
	if err != nil {
		return nil, fmt.Errorf("report: template: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, r); err != nil {
		return nil, fmt.Errorf("report: render html: %w", err)
	}
	return buf.Bytes(), nil
}
