package report

import (
	"context"
	"fmt"
	"time"
	_ "time/tzdata" // the collector's time zone loads on every system

	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
)

// DefaultZone is the time zone of a Renderer made without one.
const DefaultZone = "Asia/Tokyo"

// Formats of SelfInspection.
const (
	FormatHTML = "html"
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// Renderer makes self-inspection reports from a store.
type Renderer struct {
	st      store.Store
	loc     *time.Location
	version string
	// Now is the clock; time.Now unless a test sets it.
	Now func() time.Time
}

// New returns a Renderer reading st, counting days in loc (DefaultZone
// when nil), that names version as the collector's.
func New(st store.Store, loc *time.Location, version string) *Renderer {
	if loc == nil {
		var err error
		if loc, err = time.LoadLocation(DefaultZone); err != nil {
			// time/tzdata is linked in: this cannot happen.
			loc = time.FixedZone("JST", 9*60*60)
		}
	}
	return &Renderer{st: st, loc: loc, version: version, Now: time.Now}
}

// Location is the collector's time zone, in which days are counted.
func (r *Renderer) Location() *time.Location { return r.loc }

// SelfInspection renders the report of the days first to last (inclusive,
// in Location) in format (FormatHTML, FormatCSV or FormatJSON) and lang
// (a language of package i18n).
func (r *Renderer) SelfInspection(ctx context.Context, first, last time.Time, format, lang string) ([]byte, error) {
	switch format {
	case FormatHTML, FormatCSV, FormatJSON:
	default:
		return nil, fmt.Errorf("report: format %q is not html, csv or json", format)
	}
	rep, err := r.Report(ctx, first, last, lang)
	if err != nil {
		return nil, err
	}
	switch format {
	case FormatHTML:
		return rep.HTML()
	case FormatCSV:
		return rep.CSV()
	default:
		return rep.JSON()
	}
}

// Report gathers the report of the days first to last (inclusive, in
// Location; only their dates count) in lang.
func (r *Renderer) Report(ctx context.Context, first, last time.Time, lang string) (*Report, error) {
	if !i18n.Supported(lang) {
		return nil, fmt.Errorf("report: language %q is not one of %v", lang, i18n.Languages)
	}
	first, last = first.In(r.loc), last.In(r.loc)
	start := time.Date(first.Year(), first.Month(), first.Day(), 0, 0, 0, 0, r.loc)
	lastDay := time.Date(last.Year(), last.Month(), last.Day(), 0, 0, 0, 0, r.loc)
	if lastDay.Before(start) {
		return nil, fmt.Errorf("report: the last day %s is before the first %s", lastDay.Format(time.DateOnly), start.Format(time.DateOnly))
	}
	end := time.Date(last.Year(), last.Month(), last.Day()+1, 0, 0, 0, 0, r.loc)
	now := r.Now().In(r.loc)
	b := &builder{
		st: r.st, loc: r.loc, lang: lang, start: start, end: end, cut: end, now: now,
		rep: &Report{
			Language: lang, Title: i18n.T(lang, "report.title"), TimeZone: r.loc.String(),
			FirstDay: start.Format(time.DateOnly), LastDay: lastDay.Format(time.DateOnly),
			From: start, To: end, GeneratedAt: now, Complete: !now.Before(end), Version: r.version,
		},
	}
	if now.Before(end) {
		b.cut = now
	}
	if err := b.build(ctx); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return b.rep, nil
}
