package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// verdict is a verdict on terminal id evaluated at at: the named checks
// fail (since at), the others pass.
func verdict(id, state string, at time.Time, fails ...string) Compliance {
	c := Compliance{TerminalID: id, State: state, StateSince: at, EvaluatedAt: at, PostureAt: at.Add(-time.Second),
		AgentVersion: "1.2.3", Platform: "debian 12", Addresses: "192.0.2.10", Search: "pc-" + id + "\x1f" + id}
	for _, name := range Checks {
		r := CheckResult{Name: name, Status: CheckPass, Since: at}
		if slices.Contains(fails, name) {
			r.Status, r.Detail, r.Args = CheckFail, "check."+name+".bad", []string{"arg-" + name, "二"}
		}
		c.Checks = append(c.Checks, r)
	}
	return c
}

// sameCompliance reports the first difference, times compared with Equal.
func sameCompliance(got, want Compliance) error {
	for _, tt := range []struct {
		name      string
		got, want time.Time
	}{
		{"StateSince", got.StateSince, want.StateSince}, {"PostureAt", got.PostureAt, want.PostureAt},
		{"EvaluatedAt", got.EvaluatedAt, want.EvaluatedAt},
	} {
		if !tt.got.Equal(tt.want) {
			return fmt.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if len(got.Checks) != len(want.Checks) {
		return fmt.Errorf("%d checks, want %d", len(got.Checks), len(want.Checks))
	}
	for i := range got.Checks {
		g, w := got.Checks[i], want.Checks[i]
		if !g.Since.Equal(w.Since) {
			return fmt.Errorf("check %s: since %v, want %v", w.Name, g.Since, w.Since)
		}
		g.Since, w.Since = time.Time{}, time.Time{}
		if g.Name != w.Name || g.Status != w.Status || g.Detail != w.Detail || !slices.Equal(g.Args, w.Args) {
			return fmt.Errorf("check %d: %+v, want %+v", i, g, w)
		}
	}
	got.StateSince, got.PostureAt, got.EvaluatedAt, got.Checks = want.StateSince, want.PostureAt, want.EvaluatedAt, want.Checks
	if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
		return fmt.Errorf("got  %s\nwant %s", g, w)
	}
	return nil
}

func intervalText(ivs []ComplianceInterval) []string {
	var out []string
	for _, iv := range ivs {
		end := "open"
		if !iv.End.IsZero() {
			end = iv.End.Sub(t0).String()
		}
		out = append(out, fmt.Sprintf("%s/%s/%s-%s", iv.Check, iv.TerminalID, iv.Start.Sub(t0), end))
	}
	return out
}

func TestSaveCompliance(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	if err := s.SaveCompliance(ctx, nil); err != nil {
		t.Fatalf("nothing to save: %v", err)
	}
	if _, err := s.TerminalCompliance(ctx, "t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("never evaluated: %v, want ErrNotFound", err)
	}

	// t1 starts failing media; a check may have no since.
	c1 := verdict("t1", NonCompliant, t0, CheckMedia)
	c1.Checks[2].Status, c1.Checks[2].Since, c1.Checks[2].Detail = CheckUnknown, time.Time{}, "check.network.not_reported"
	c1.Offline = true
	ev := &ServerEvent{Type: "compliance.changed", Severity: 2, Message: "compliant -> non-compliant", Data: []byte{7}}
	if err := s.SaveCompliance(ctx, []ComplianceUpdate{
		{Compliance: c1, Opened: []CheckResult{c1.Check(CheckMedia)}, Event: ev},
		{Compliance: verdict("t2", Compliant, t0)},
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.TerminalCompliance(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sameCompliance(got, c1); err != nil {
		t.Error(err)
	}
	if got.Check(CheckMedia).Status != CheckFail || !slices.Equal(got.Failing(), []string{CheckMedia}) {
		t.Errorf("Check/Failing of %+v", got)
	}
	if got, err := s.TerminalCompliance(ctx, "t2"); err != nil || sameCompliance(got, verdict("t2", Compliant, t0)) != nil {
		t.Errorf("t2: %+v, %v", got, err)
	}
	ivs, err := s.ComplianceIntervals(ctx, t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != 1 || ivs[0].Detail != "check.media.bad" || !slices.Equal(ivs[0].Args, c1.Check(CheckMedia).Args) ||
		!slices.Equal(intervalText(ivs), []string{"media/t1/0s-open"}) {
		t.Errorf("intervals %+v", ivs)
	}
	evs, err := s.FilterEvents(ctx, EventFilter{TerminalID: "t1", Type: "compliance.changed"})
	if err != nil {
		t.Fatal(err)
	}
	// The event takes the evaluation's time when it has none.
	if len(evs) != 1 || evs[0].Source != "server" || !evs[0].Time.Equal(t0) || !evs[0].ReceivedAt.Equal(t0) ||
		evs[0].Severity != 2 || evs[0].Message != ev.Message || string(evs[0].Data) != "\x07" {
		t.Errorf("events %+v", evs)
	}

	// Ten minutes later t1 also fails mfa and its media passes again.
	at := t0.Add(10 * time.Minute)
	c1b := verdict("t1", NonCompliant, at, CheckMFA)
	c1b.StateSince = t0
	if err := s.SaveCompliance(ctx, []ComplianceUpdate{
		{Compliance: c1b, Opened: []CheckResult{{Name: CheckMFA, Status: CheckFail, Detail: "mfa"}}, Closed: []string{CheckMedia}},
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TerminalCompliance(ctx, "t1"); err != nil || sameCompliance(got, c1b) != nil {
		t.Errorf("after the second save: %v\n%v", err, sameCompliance(got, c1b))
	}
	ivs, err = s.ComplianceIntervals(ctx, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// An opened check without since starts at the evaluation.
	if want := []string{"media/t1/0s-10m0s", "mfa/t1/10m0s-open"}; !slices.Equal(intervalText(ivs), want) {
		t.Errorf("intervals %v, want %v", intervalText(ivs), want)
	}
	if evs, _ := s.FilterEvents(ctx, EventFilter{TerminalID: "t1", Type: "compliance.changed"}); len(evs) != 1 {
		t.Errorf("%d events: an update without an event added one", len(evs))
	}

	// A clock that stepped back closes an interval where it started
	// rather than failing the whole batch.
	back := verdict("t1", Compliant, at.Add(-5*time.Minute))
	if err := s.SaveCompliance(ctx, []ComplianceUpdate{
		{Compliance: back, Closed: []string{CheckMFA}},
		{Compliance: verdict("t2", Compliant, at.Add(-5*time.Minute))},
	}); err != nil {
		t.Fatalf("closing with a clock that stepped back: %v", err)
	}
	ivs, _ = s.ComplianceIntervals(ctx, t0, t0.Add(time.Hour))
	if want := []string{"media/t1/0s-10m0s", "mfa/t1/10m0s-10m0s"}; !slices.Equal(intervalText(ivs), want) {
		t.Errorf("intervals %v, want %v", intervalText(ivs), want)
	}
}

func TestSaveComplianceRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	valid := ComplianceUpdate{Compliance: verdict("t1", NonCompliant, t0, CheckMedia), Opened: []CheckResult{{Name: CheckMedia}}}
	mod := func(f func(c *Compliance)) ComplianceUpdate {
		c := verdict("t2", Compliant, t0)
		f(&c)
		return ComplianceUpdate{Compliance: c}
	}
	for _, tt := range []struct {
		name string
		u    ComplianceUpdate
	}{
		{"no terminal", mod(func(c *Compliance) { c.TerminalID = "" })},
		{"unknown state", mod(func(c *Compliance) { c.State = "fine" })},
		{"no state", mod(func(c *Compliance) { c.State = "" })},
		{"too few checks", mod(func(c *Compliance) { c.Checks = c.Checks[1:] })},
		{"checks out of order", mod(func(c *Compliance) { c.Checks[0], c.Checks[1] = c.Checks[1], c.Checks[0] })},
		{"unknown status", mod(func(c *Compliance) { c.Checks[3].Status = "ok" })},
		{"no state since", mod(func(c *Compliance) { c.StateSince = time.Time{} })},
		{"no evaluation time", mod(func(c *Compliance) { c.EvaluatedAt = time.Time{} })},
		{"unstorable since", mod(func(c *Compliance) { c.Checks[0].Since = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC) })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SaveCompliance(ctx, []ComplianceUpdate{valid, tt.u}); err == nil {
				t.Fatal("no error")
			}
			for _, id := range []string{"t1", "t2"} {
				if _, err := s.TerminalCompliance(ctx, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s stored from a refused batch: %v", id, err)
				}
			}
		})
	}

	// A batch is one transaction: a write failing for the second update
	// (here forced by a trigger) leaves no trace of the first.
	failInserts(t, s, "t2", "server_events", "NEW.terminal_id = 't2'")
	failing := ComplianceUpdate{Compliance: verdict("t2", Stale, t0, CheckFresh), Opened: []CheckResult{{Name: CheckFresh}},
		Event: &ServerEvent{Type: "compliance.changed"}}
	if err := s.SaveCompliance(ctx, []ComplianceUpdate{valid, failing}); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM terminal_compliance`) + count(t, s, `SELECT COUNT(*) FROM compliance_intervals`) +
		count(t, s, `SELECT COUNT(*) FROM server_events`); n != 0 {
		t.Errorf("%d rows left by a failed batch", n)
	}
}

func TestComplianceInputs(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		enroll(t, s, id, "pc-"+id)
	}
	if _, err := s.SaveReport(ctx, Report{TerminalID: "t1", ReceivedAt: t0.Add(time.Minute), Posture: []byte("posture-1"),
		CollectedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveReport(ctx, Report{TerminalID: "t2", ReceivedAt: t0.Add(2 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	renewed := Certificate{Serial: "abcd", TerminalID: "t1", NotBefore: t0, NotAfter: t0.Add(365 * 24 * time.Hour)}
	if err := s.AddCertificate(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeTerminal(ctx, "t3", "lost", t0.Add(time.Hour), tAudit); err != nil {
		t.Fatal(err)
	}
	prev := verdict("t2", NonCompliant, t0, CheckMFA)
	if err := s.SaveCompliance(ctx, []ComplianceUpdate{{Compliance: prev}}); err != nil {
		t.Fatal(err)
	}

	all, err := s.ComplianceInputs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]ComplianceInput{}
	for _, in := range all {
		byID[in.TerminalID] = in
	}
	if len(all) != 4 || len(byID) != 4 {
		t.Fatalf("ComplianceInputs(nil) = %+v", all)
	}
	_, cert := newTerminal("t4", "")
	for _, tt := range []struct {
		id                                       string
		state                                    string
		lastSeen, revoked, certNotAfter, posture time.Time
		prev                                     bool
	}{
		{"t1", StateActive, t0.Add(time.Minute), time.Time{}, renewed.NotAfter, t0.Add(time.Minute), false},
		{"t2", StateActive, t0.Add(2 * time.Minute), time.Time{}, cert.NotAfter, time.Time{}, true},
		{"t3", StateRevoked, time.Time{}, t0.Add(time.Hour), cert.NotAfter, time.Time{}, false},
		{"t4", StateActive, time.Time{}, time.Time{}, cert.NotAfter, time.Time{}, false},
	} {
		in := byID[tt.id]
		if in.Hostname != "pc-"+tt.id || in.State != tt.state || !in.EnrolledAt.Equal(t0) || !in.LastSeenAt.Equal(tt.lastSeen) ||
			!in.RevokedAt.Equal(tt.revoked) || !in.CertNotAfter.Equal(tt.certNotAfter) || !in.PostureReceivedAt.Equal(tt.posture) ||
			(in.Prev != nil) != tt.prev {
			t.Errorf("input of %s: %+v", tt.id, in)
		}
	}
	if err := sameCompliance(*byID["t2"].Prev, prev); err != nil {
		t.Errorf("Prev of t2: %v", err)
	}

	some, err := s.ComplianceInputs(ctx, []string{"t2", "nobody", "t4"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range some {
		ids = append(ids, in.TerminalID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"t2", "t4"}) {
		t.Errorf("ComplianceInputs(t2, nobody, t4) = %v", ids)
	}
	// More terminals than one statement may name (a fleet that went
	// silent at once is due at once): each named terminal found once.
	many := []string{"t4"}
	for i := range 70000 {
		many = append(many, fmt.Sprintf("gone-%d", i))
	}
	many = append(many, "t2")
	if got, err := s.ComplianceInputs(ctx, many); err != nil || len(got) != 2 || got[0].TerminalID != "t4" || got[1].TerminalID != "t2" {
		var ids []string
		for _, in := range got {
			ids = append(ids, in.TerminalID)
		}
		t.Errorf("ComplianceInputs(t4, 70,000 unknown, t2) = %v, %v", ids, err)
	}
	if none, err := s.ComplianceInputs(ctx, []string{}); err != nil || len(none) != 0 {
		t.Errorf("ComplianceInputs(empty) = %+v, %v", none, err)
	}

	b, at, err := s.LatestPosture(ctx, "t1")
	if err != nil || string(b) != "posture-1" || !at.Equal(t0.Add(time.Minute)) {
		t.Errorf("LatestPosture(t1) = %q, %v, %v", b, at, err)
	}
	if _, _, err := s.LatestPosture(ctx, "t2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LatestPosture without posture: %v, want ErrNotFound", err)
	}
}

func TestCountCompliance(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	got, err := s.CountCompliance(ctx)
	if err != nil || len(got.States) != 0 || len(got.Failing) != 0 || got.Unevaluated != 0 {
		t.Fatalf("empty store: %+v, %v", got, err)
	}
	for _, id := range []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7"} {
		enroll(t, s, id, "pc-"+id)
	}
	for _, id := range []string{"t4", "t6"} {
		if err := s.RevokeTerminal(ctx, id, "lost", t0, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	// t5 (active) and t6 (revoked) are never evaluated. The revoked
	// verdict's failing check does not count.
	if err := s.SaveCompliance(ctx, []ComplianceUpdate{
		{Compliance: verdict("t1", Compliant, t0)},
		{Compliance: verdict("t2", NonCompliant, t0, CheckMedia, CheckMFA)},
		{Compliance: verdict("t3", Stale, t0, CheckFresh, CheckMedia)},
		{Compliance: verdict("t4", ComplianceRevoked, t0, CheckCertificate)},
		{Compliance: verdict("t7", NonCompliant, t0, CheckVersion)},
	}); err != nil {
		t.Fatal(err)
	}
	got, err = s.CountCompliance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantStates := map[string]int{Compliant: 1, NonCompliant: 2, Stale: 1, ComplianceRevoked: 1}
	wantFailing := map[string]int{CheckMedia: 2, CheckMFA: 1, CheckFresh: 1, CheckVersion: 1}
	for _, c := range Checks {
		if got.Failing[c] != wantFailing[c] {
			t.Errorf("Failing[%s] = %d, want %d", c, got.Failing[c], wantFailing[c])
		}
	}
	if !maps.Equal(got.States, wantStates) || got.Unevaluated != 1 {
		t.Errorf("States %v (want %v), Unevaluated %d (want 1)", got.States, wantStates, got.Unevaluated)
	}
}

func TestComplianceDays(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	days := []ComplianceDay{
		{Day: "2025-03-31", Compliant: 1, UpdatedAt: t0},
		{Day: "2025-04-02", Compliant: 5, NonCompliant: 2, Stale: 1, Failing: map[string]int{CheckMedia: 2, CheckFresh: 1}, UpdatedAt: t0},
		{Day: "2025-04-01", Compliant: 3, Failing: map[string]int{}, UpdatedAt: t0},
		{Day: "2025-04-03", Compliant: 9, UpdatedAt: t0},
		// Replaces the first 2025-04-02.
		{Day: "2025-04-02", Compliant: 6, NonCompliant: 1, Failing: map[string]int{CheckMFA: 1}, UpdatedAt: t0.Add(time.Hour)},
	}
	for _, d := range days {
		if err := s.SaveComplianceDay(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ComplianceDays(ctx, "2025-04-01", "2025-04-02")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("ComplianceDays = %+v", got)
	}
	for i, want := range []ComplianceDay{days[2], days[4]} {
		g := got[i]
		if g.Day != want.Day || g.Compliant != want.Compliant || g.NonCompliant != want.NonCompliant || g.Stale != want.Stale ||
			!maps.Equal(g.Failing, want.Failing) || !g.UpdatedAt.Equal(want.UpdatedAt) {
			t.Errorf("day %d = %+v, want %+v", i, g, want)
		}
	}
	if got, err := s.ComplianceDays(ctx, "2025-04-04", "2025-05-01"); err != nil || len(got) != 0 {
		t.Errorf("days without records: %+v, %v", got, err)
	}
	if got, err := s.ComplianceDays(ctx, "2025-01-01", "2025-12-31"); err != nil || len(got) != 4 || got[0].Day != "2025-03-31" || got[3].Day != "2025-04-03" {
		t.Errorf("whole year: %+v, %v", got, err)
	}
	for _, day := range []string{"", "2025-4-1", "2025/04/01", "2025-04-01T00:00:00Z", "2025-02-30", "yesterday"} {
		if err := s.SaveComplianceDay(ctx, ComplianceDay{Day: day}); err == nil {
			t.Errorf("day %q accepted", day)
		}
	}
	// A zero UpdatedAt means now.
	before := time.Now()
	if err := s.SaveComplianceDay(ctx, ComplianceDay{Day: "2025-06-01"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ComplianceDays(ctx, "2025-06-01", "2025-06-01"); err != nil || len(got) != 1 || got[0].UpdatedAt.Before(before) {
		t.Errorf("day with defaults: %+v, %v", got, err)
	}
}

func TestComplianceIntervals(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	// Each step: the checks of one terminal that open and close at a time.
	steps := []struct {
		id     string
		at     int
		opened []string
		closed []string
	}{
		{"t1", 5, []string{CheckFresh}, nil},
		{"t1", 10, []string{CheckMedia}, nil},
		{"t2", 10, []string{CheckMFA}, nil},
		{"t1", 20, nil, []string{CheckMedia}},
		{"t2", 20, nil, []string{CheckMFA}},
		{"t1", 20, []string{CheckMedia}, nil},
		{"t1", 30, nil, []string{CheckMedia}},
		{"t2", 30, []string{CheckMedia}, nil},
		{"t2", 40, nil, []string{CheckMedia}},
	}
	for _, st := range steps {
		u := ComplianceUpdate{Compliance: verdict(st.id, NonCompliant, m(st.at)), Closed: st.closed}
		for _, name := range st.opened {
			u.Opened = append(u.Opened, CheckResult{Name: name, Status: CheckFail, Since: m(st.at)})
		}
		if err := s.SaveCompliance(ctx, []ComplianceUpdate{u}); err != nil {
			t.Fatal(err)
		}
	}
	// Intervals: fresh/t1 [5, open), media/t1 [10, 20) and [20, 30),
	// mfa/t2 [10, 20), media/t2 [30, 40).
	for _, tt := range []struct {
		from, to int
		want     []string
	}{
		{0, 5, nil},
		{0, 6, []string{"fresh/t1/5m0s-open"}},
		{0, 10, []string{"fresh/t1/5m0s-open"}},
		{10, 20, []string{"fresh/t1/5m0s-open", "media/t1/10m0s-20m0s", "mfa/t2/10m0s-20m0s"}},
		{19, 21, []string{"fresh/t1/5m0s-open", "media/t1/10m0s-20m0s", "media/t1/20m0s-30m0s", "mfa/t2/10m0s-20m0s"}},
		{20, 25, []string{"fresh/t1/5m0s-open", "media/t1/20m0s-30m0s"}},
		{30, 40, []string{"fresh/t1/5m0s-open", "media/t2/30m0s-40m0s"}},
		{40, 1000, []string{"fresh/t1/5m0s-open"}},
		{-100, 0, nil},
	} {
		ivs, err := s.ComplianceIntervals(ctx, m(tt.from), m(tt.to))
		if err != nil {
			t.Fatal(err)
		}
		if got := intervalText(ivs); !slices.Equal(got, tt.want) {
			t.Errorf("[%d, %d): %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}
