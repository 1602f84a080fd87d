package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// maxReportDays is the longest period of a report the collector accepts:
// a year and a day.
const maxReportDays = 367

// reportLanguages are the languages of reports, the default first.
var reportLanguages = []string{"ja", "en"}

// reportRequest validates the flags of reports self-inspection.
func reportRequest(inv *invocation) (*mnguardv1.GetSelfInspectionReportRequest, error) {
	o := inv.opts
	if err := requireFlags(inv, flagValue{"from", o.from.v}, flagValue{"to", o.to.v}); err != nil {
		return nil, err
	}
	// Days are counted in the collector's time zone; any zone serves to
	// check them.
	from, err := parseDay(inv, "from", o.from.v, time.UTC)
	if err != nil {
		return nil, err
	}
	to, err := parseDay(inv, "to", o.to.v, time.UTC)
	if err != nil {
		return nil, err
	}
	switch days := int(to.Sub(from)/(24*time.Hour)) + 1; {
	case to.Before(from):
		return nil, usagef("%s: --to %s is before --from %s", inv.cmd.name, o.to.v, o.from.v)
	case days > maxReportDays:
		return nil, usagef("%s: the period from %s to %s is %d days, longer than %d", inv.cmd.name, o.from.v, o.to.v, days, maxReportDays)
	}
	if o.lang.v != "" && !slices.Contains(reportLanguages, o.lang.v) {
		return nil, usagef("%s: invalid --lang %q: want %s", inv.cmd.name, o.lang.v, orList(reportLanguages))
	}
	return &mnguardv1.GetSelfInspectionReportRequest{From: o.from.v, To: o.to.v, Format: inv.format, Language: o.lang.v}, nil
}

// reportsSelfInspection fetches the report and writes it as it is, to
// stdout or to a new file.
func reportsSelfInspection(ctx context.Context, inv *invocation, w *bytes.Buffer) error {
	req, err := reportRequest(inv)
	if err != nil {
		return err
	}
	out := inv.opts.out.v
	if err := checkNewFile("out", out, "reports are never overwritten"); err != nil {
		return err
	}
	resp, _, err := request(ctx, inv, "get self-inspection report", mnguardv1.AdminServiceClient.GetSelfInspectionReport, req)
	if err != nil {
		return err
	}
	doc := resp.GetDocument()
	if out == "" {
		w.Write(doc)
		return nil
	}
	if err := writeNewFile(out, doc); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(w, "wrote the self-inspection report for %s..%s to %s (%s, %s)\n", req.GetFrom(), req.GetTo(), sanitize(out),
		inv.format, humanBytes(uint64(len(doc))))
	return nil
}
