package api

import (
	"strings"
	"testing"
	"time"
)

func TestReportPeriod(t *testing.T) {
	jst := time.FixedZone("JST", 9*3600)
	for _, tt := range []struct {
		from, to, format, lang string
		err                    string
	}{
		{"2026-11-01", "2026-11-30", "html", "ja", ""},
		{"2026-04-01", "2027-03-31", "csv", "en", ""},
		{"2026-11-30", "2026-11-01", "html", "ja", "before"},
		{"2026-13-01", "2026-12-01", "html", "ja", "not a day"},
		{"2026-1-01", "2026-12-01", "html", "ja", "not a day"},
		{"2025-01-01", "2026-12-31", "json", "ja", "longer than"},
		{"2026-11-01", "2026-11-30", "pdf", "ja", "format"},
		{"2026-11-01", "2026-11-30", "html", "fr", "language"},
		{"1999-12-31", "2000-01-01", "html", "ja", "out of range"},
	} {
		first, last, err := ReportPeriod(tt.from, tt.to, tt.format, tt.lang, jst)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s..%s: %v", tt.from, tt.to, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s..%s %s %s: %v, want an error about %q", tt.from, tt.to, tt.format, tt.lang, err, tt.err)
		case err == nil && (first.Location() != jst || first.Hour() != 0 || last.Before(first)):
			t.Errorf("%s..%s: %v .. %v", tt.from, tt.to, first, last)
		}
	}
}

// FuzzReportPeriod: any from and to are refused or give a period of at
// most MaxReportDays days, first not after last.
func FuzzReportPeriod(f *testing.F) {
	f.Add("2026-11-01", "2026-11-30")
	f.Add("2026-02-29", "2026-03-01")
	f.Add("0000-00-00", "9999-99-99")
	f.Fuzz(func(t *testing.T, from, to string) {
		first, last, err := ReportPeriod(from, to, "html", "ja", time.UTC)
		if err != nil {
			return
		}
		if last.Before(first) || last.Sub(first) > MaxReportDays*24*time.Hour {
			t.Fatalf("%q..%q accepted as %v..%v", from, to, first, last)
		}
	})
}
