package api

import (
	"context"
	"fmt"
	"regexp"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Report formats and languages.
var (
	ReportFormats   = map[string]string{"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8", "json": "application/json"}
	ReportLanguages = map[string]bool{"ja": true, "en": true}
)

// MaxReportDays bounds the period of a self-inspection report: a year and
// a day (a leap year's fiscal year fits).
const MaxReportDays = 367

// ReportRenderer renders the Art. 7 self-inspection report for the days
// first to last (inclusive, in the collector's time zone) in a format of
// ReportFormats and a language of ReportLanguages.
type ReportRenderer interface {
	SelfInspection(ctx context.Context, first, last time.Time, format, lang string) ([]byte, error)
	// Location is the collector's time zone, in which days are counted.
	Location() *time.Location
}

var dayRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)

// ReportPeriod checks the days and format of a report request and returns
// the first and last day (midnight, in loc).
func ReportPeriod(from, to, format, lang string, loc *time.Location) (first, last time.Time, err error) {
	parse := func(field, s string) (time.Time, error) {
		if !dayRE.MatchString(s) {
			return time.Time{}, fmt.Errorf("%s: %q is not a day (YYYY-MM-DD)", field, truncate(s))
		}
		d, err := time.ParseInLocation(time.DateOnly, s, loc)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: %q is not a day (YYYY-MM-DD)", field, s)
		}
		if d.Year() < 2000 || d.Year() > 2200 {
			return time.Time{}, fmt.Errorf("%s: %s is out of range", field, s)
		}
		return d, nil
	}
	if first, err = parse("from", from); err != nil {
		return
	}
	if last, err = parse("to", to); err != nil {
		return
	}
	switch {
	case last.Before(first):
		err = fmt.Errorf("to (%s) is before from (%s)", to, from)
	case last.Sub(first) > (MaxReportDays-1)*24*time.Hour+time.Hour:
		err = fmt.Errorf("the period is longer than %d days", MaxReportDays)
	case ReportFormats[format] == "":
		err = fmt.Errorf("format: %q is not html, csv or json", truncate(format))
	case !ReportLanguages[lang]:
		err = fmt.Errorf("language: %q is not ja or en", truncate(lang))
	}
	return
}

// GetSelfInspectionReport implements mnguardv1.AdminServiceServer.
func (a *AdminService) GetSelfInspectionReport(ctx context.Context, req *mnguardv1.GetSelfInspectionReportRequest) (*mnguardv1.GetSelfInspectionReportResponse, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	r := a.s.cfg.Reports
	if r == nil {
		return nil, status.Error(codes.Unimplemented, "reports are not configured on this collector")
	}
	format, lang := req.GetFormat(), req.GetLanguage()
	if format == "" {
		format = "html"
	}
	if lang == "" {
		lang = "ja"
	}
	first, last, err := ReportPeriod(req.GetFrom(), req.GetTo(), format, lang, r.Location())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	doc, err := r.SelfInspection(ctx, first, last, format, lang)
	if err != nil {
		return nil, storeErr("self-inspection report", err)
	}
	if err := a.audit(ctx, op, "report.self_inspection", req.GetFrom()+".."+req.GetTo(), "format "+format+", language "+lang); err != nil {
		return nil, err
	}
	return &mnguardv1.GetSelfInspectionReportResponse{
		Document: doc, ContentType: ReportFormats[format],
		Filename: fmt.Sprintf("self-inspection-%s-%s.%s", req.GetFrom(), req.GetTo(), format),
	}, nil
}
