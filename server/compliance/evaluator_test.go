package compliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/fakeclock"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

var jst = time.FixedZone("JST", 9*60*60)

// start is 01:00 in Tokyo, still the day before in UTC: the daily history
// must follow the configured zone.
var start = time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	st    *store.DB
	clock *fakeclock.Clock
	reg   *prometheus.Registry
	ev    *Evaluator
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "mnguard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st, clock: fakeclock.New(start), reg: prometheus.NewRegistry()}
	cfg := Config{
		Store: st, Policy: Policy{ReportInterval: time.Minute, Version: "1.4.0"}, Location: jst,
		Registerer: e.reg, Logger: slog.New(slog.DiscardHandler), Now: e.clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	e.ev = New(cfg)
	return e
}

// enroll enrolls terminal id at the clock, with a certificate valid for
// 90 days.
func (e *env) enroll(id, hostname string) {
	e.t.Helper()
	ctx := context.Background()
	now := e.clock.Now()
	sum := sha256.Sum256([]byte("token " + id))
	if err := e.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{ID: "tok-" + id, Hash: sum[:], CreatedAt: now,
		ExpiresAt: now.Add(time.Hour), Uses: 1}, store.NoAudit); err != nil {
		e.t.Fatal(err)
	}
	serial := sha256.Sum256([]byte(id))
	if err := e.st.Enroll(ctx, sum[:], now, store.Terminal{ID: id, Hostname: hostname, State: store.StateActive, EnrolledAt: now},
		store.Certificate{Serial: hex.EncodeToString(serial[:8]), TerminalID: id, NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
}

// report stores a report of terminal id with posture p, received now.
func (e *env) report(id string, p *mnguardv1.Posture) {
	e.t.Helper()
	b, err := proto.Marshal(p)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reportBytes(id, b)
}

func (e *env) reportBytes(id string, b []byte) {
	e.t.Helper()
	if _, err := e.st.SaveReport(context.Background(), store.Report{TerminalID: id, ReceivedAt: e.clock.Now(), Posture: b,
		CollectedAt: e.clock.Now()}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) evaluateAll() {
	e.t.Helper()
	if err := e.ev.EvaluateAll(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) verdict(id string) store.Compliance {
	e.t.Helper()
	c, err := e.st.TerminalCompliance(context.Background(), id)
	if err != nil {
		e.t.Fatalf("verdict of %s: %v", id, err)
	}
	return c
}

// states returns each terminal's stored state.
func (e *env) states(ids ...string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		out[id] = e.verdict(id).State
	}
	return out
}

// changes returns the compliance.changed events, oldest first, as
// "terminal: from -> to (severity)".
func (e *env) changes() []string {
	e.t.Helper()
	evs, err := e.st.FilterEvents(context.Background(), store.EventFilter{Type: EventType, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range slices.Backward(evs) {
		var m mnguardv1.Event
		if err := proto.Unmarshal(ev.Data, &m); err != nil {
			e.t.Fatalf("event data: %v", err)
		}
		if ev.Source != "server" || m.GetType() != EventType || int32(m.GetSeverity()) != ev.Severity || m.GetMessage() != ev.Message ||
			!m.GetTime().AsTime().Equal(ev.Time) {
			e.t.Errorf("event %+v with data %v", ev, &m)
		}
		a := m.GetAttributes()
		out = append(out, ev.TerminalID+": "+a["from"]+" -> "+a["to"]+" ("+m.GetSeverity().String()+") "+a["failing"])
	}
	return out
}

// intervals returns the failure intervals as "check/terminal open|closed".
func (e *env) intervals() []string {
	e.t.Helper()
	ivs, err := e.st.ComplianceIntervals(context.Background(), start.Add(-time.Hour), start.Add(365*24*time.Hour))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, iv := range ivs {
		s := iv.Check + "/" + iv.TerminalID + " open"
		if !iv.End.IsZero() {
			s = iv.Check + "/" + iv.TerminalID + " closed"
		}
		out = append(out, s)
	}
	return out
}

// gauge reads a gauge from the registry the evaluator registered with.
func (e *env) gauge(name, label, value string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	e.t.Fatalf("no gauge %s{%s=%q}", name, label, value)
	return 0
}

func (e *env) checkGauges(states map[string]float64, failing map[string]float64) {
	e.t.Helper()
	for _, s := range []string{store.Compliant, store.NonCompliant, store.Stale, store.ComplianceRevoked} {
		if got := e.gauge("mnguard_terminals", "state", s); got != states[s] {
			e.t.Errorf("mnguard_terminals{state=%q} = %v, want %v", s, got, states[s])
		}
	}
	for _, c := range store.Checks {
		if got := e.gauge("mnguard_terminal_checks_failing", "check", c); got != failing[c] {
			e.t.Errorf("mnguard_terminal_checks_failing{check=%q} = %v, want %v", c, got, failing[c])
		}
	}
}

func (e *env) day(day string) store.ComplianceDay {
	e.t.Helper()
	ds, err := e.st.ComplianceDays(context.Background(), day, day)
	if err != nil || len(ds) != 1 {
		e.t.Fatalf("ComplianceDays(%s) = %+v, %v", day, ds, err)
	}
	return ds[0]
}

func TestNewDefaults(t *testing.T) {
	for _, tt := range []struct {
		report, interval         time.Duration
		wantReport, wantInterval time.Duration
	}{
		{0, 0, time.Minute, 30 * time.Second},
		{10 * time.Second, 0, 10 * time.Second, 5 * time.Second},
		{time.Second, 0, time.Second, time.Second},
		{time.Hour, 0, time.Hour, 30 * time.Second},
		{time.Minute, 7 * time.Second, time.Minute, 7 * time.Second},
	} {
		ev := New(Config{Policy: Policy{ReportInterval: tt.report}, Interval: tt.interval})
		if ev.Policy().ReportInterval != tt.wantReport || ev.cfg.Interval != tt.wantInterval || ev.cfg.Location != time.UTC {
			t.Errorf("report %v, interval %v: got %v, %v, %v", tt.report, tt.interval, ev.Policy().ReportInterval, ev.cfg.Interval, ev.cfg.Location)
		}
	}
}

func TestEvaluateAll(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	// Gauges exist, at zero, before any evaluation.
	e.checkGauges(nil, nil)

	for _, id := range []string{"t1", "t2", "t3", "t4", "t5"} {
		e.enroll(id, "PC-"+id)
	}
	e.report("t1", goodPosture(e.clock.Now()))
	bad := goodPosture(e.clock.Now())
	bad.Mfa = &mnguardv1.MfaPosture{Reason: "login: pam_mnguard optional"}
	e.report("t2", bad)
	e.reportBytes("t5", []byte{0xff, 0xff, 0xff}) // corrupt: judged as no posture
	if err := e.st.RevokeTerminal(ctx, "t4", "lost", e.clock.Now(), store.NoAudit); err != nil {
		t.Fatal(err)
	}
	// t3 never reports: four minutes later it is stale, the others are
	// not (they report again).
	e.clock.Add(4 * time.Minute)
	e.report("t1", goodPosture(e.clock.Now()))
	e.report("t2", bad)
	e.reportBytes("t5", []byte{0xff, 0xff, 0xff})

	e.evaluateAll()
	if got, want := e.states("t1", "t2", "t3", "t4", "t5"), map[string]string{
		"t1": store.Compliant, "t2": store.NonCompliant, "t3": store.Stale, "t4": store.ComplianceRevoked, "t5": store.NonCompliant,
	}; !maps.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	c1 := e.verdict("t1")
	if c1.AgentVersion != "1.4.0" || c1.Platform != "debian 12" || c1.Addresses != "192.0.2.10 2001:DB8::10" ||
		c1.Search != "pc-t1\x1ft1\x1fpc-01\x1f192.0.2.10\x1f2001:db8::10\x1fsn-stick-1\x1fkbd-serial" ||
		!c1.PostureAt.Equal(e.clock.Now()) || !c1.EvaluatedAt.Equal(e.clock.Now()) || !c1.StateSince.Equal(e.clock.Now()) {
		t.Errorf("verdict of t1: %+v", c1)
	}
	if r := e.verdict("t2").Check(store.CheckMFA); r.Status != store.CheckFail || r.Detail != "check.mfa.not_enforced" ||
		!slices.Equal(r.Args, []string{"login: pam_mnguard optional"}) {
		t.Errorf("mfa of t2: %+v", r)
	}
	if r := e.verdict("t5").Check(store.CheckMedia); r.Detail != "check.no_posture" {
		t.Errorf("media of t5 (corrupt posture): %+v", r)
	}
	if r := e.verdict("t3").Check(store.CheckFresh); r.Detail != "check.fresh.never" {
		t.Errorf("fresh of t3: %+v", r)
	}
	// First verdicts are no changes of state.
	if evs := e.changes(); len(evs) != 0 {
		t.Errorf("events after the first evaluation: %v", evs)
	}
	wantIntervals := []string{
		"fresh/t3 open",
		"media/t3 open", "media/t5 open",
		"mfa/t2 open", "mfa/t3 open", "mfa/t5 open",
		"network/t3 open", "network/t5 open",
		"version/t3 open", "version/t5 open",
	}
	if got := e.intervals(); !slices.Equal(got, wantIntervals) {
		t.Errorf("intervals %v\nwant %v", got, wantIntervals)
	}
	e.checkGauges(map[string]float64{store.Compliant: 1, store.NonCompliant: 2, store.Stale: 1, store.ComplianceRevoked: 1},
		map[string]float64{store.CheckMFA: 3, store.CheckMedia: 2, store.CheckNetwork: 2, store.CheckVersion: 2, store.CheckFresh: 1})
	// The day in Tokyo, not in UTC.
	d := e.day("2026-11-26")
	if d.Compliant != 1 || d.NonCompliant != 2 || d.Stale != 1 || !maps.Equal(d.Failing, map[string]int{
		store.CheckMFA: 3, store.CheckMedia: 2, store.CheckNetwork: 2, store.CheckVersion: 2, store.CheckFresh: 1,
	}) || !d.UpdatedAt.Equal(e.clock.Now()) {
		t.Errorf("day %+v", d)
	}

	// Nothing changes a minute later: nothing is stored.
	evaluated := e.clock.Now()
	e.clock.Add(time.Minute)
	e.report("t1", goodPosture(e.clock.Now().Add(-time.Minute)))
	e.evaluateAll()
	if c := e.verdict("t1"); !c.EvaluatedAt.Equal(evaluated) || !c.StateSince.Equal(evaluated) {
		t.Errorf("an unchanged verdict was rewritten: %+v", c)
	}
	if got := e.intervals(); !slices.Equal(got, wantIntervals) {
		t.Errorf("intervals after an unchanged evaluation: %v", got)
	}
	if d := e.day("2026-11-26"); !d.UpdatedAt.Equal(evaluated) {
		t.Errorf("unchanged day rewritten within 10 minutes: %+v", d)
	}

	// No report for 3 report intervals and a second: t1 and t2 turn
	// stale on the next round, without anyone reading them.
	e.clock.Add(3*time.Minute + time.Second)
	e.evaluateAll()
	if got, want := e.states("t1", "t2", "t3", "t4", "t5"), map[string]string{
		"t1": store.Stale, "t2": store.Stale, "t3": store.Stale, "t4": store.ComplianceRevoked, "t5": store.Stale,
	}; !maps.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	if r := e.verdict("t1").Check(store.CheckFresh); r.Detail != "check.fresh.stale" || !r.Since.Equal(e.clock.Now()) {
		t.Errorf("fresh of t1: %+v", r)
	}
	wantEvents := []string{
		"t1: compliant -> stale (SEVERITY_WARNING) fresh",
		"t2: non-compliant -> stale (SEVERITY_WARNING) mfa,fresh",
		"t5: non-compliant -> stale (SEVERITY_WARNING) media,mfa,network,fresh,version",
	}
	if got := e.changes(); !slices.Equal(sorted(got), wantEvents) {
		t.Errorf("events %v\nwant %v", got, wantEvents)
	}
	if d := e.day("2026-11-26"); d.Compliant != 0 || d.NonCompliant != 0 || d.Stale != 4 || !d.UpdatedAt.Equal(e.clock.Now()) {
		t.Errorf("day after going stale: %+v", d)
	}
	e.checkGauges(map[string]float64{store.Stale: 4, store.ComplianceRevoked: 1},
		map[string]float64{store.CheckMFA: 3, store.CheckMedia: 2, store.CheckNetwork: 2, store.CheckVersion: 2, store.CheckFresh: 4})

	// t1 reports again: evaluating just it makes it compliant and closes
	// its fresh interval.
	staleAt := e.clock.Now()
	e.clock.Add(10 * time.Second)
	e.report("t1", goodPosture(e.clock.Now()))
	if err := e.ev.Evaluate(ctx, []string{"t1"}); err != nil {
		t.Fatal(err)
	}
	if c := e.verdict("t1"); c.State != store.Compliant || !c.StateSince.Equal(e.clock.Now()) {
		t.Errorf("t1 after reporting: %+v", c)
	}
	if got := e.changes(); len(got) != 4 || got[3] != "t1: stale -> compliant (SEVERITY_INFO) " {
		t.Errorf("events %v", got)
	}
	ivs, err := e.st.ComplianceIntervals(ctx, start, start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, iv := range ivs {
		if iv.TerminalID == "t1" && (iv.Check != store.CheckFresh || !iv.Start.Equal(staleAt) || !iv.End.Equal(e.clock.Now())) {
			t.Errorf("interval of t1: %+v", iv)
		}
	}
	e.checkGauges(map[string]float64{store.Compliant: 1, store.Stale: 3, store.ComplianceRevoked: 1},
		map[string]float64{store.CheckMFA: 3, store.CheckMedia: 2, store.CheckNetwork: 2, store.CheckVersion: 2, store.CheckFresh: 3})

	// Revoking ends every open interval of the terminal.
	if err := e.st.RevokeTerminal(ctx, "t2", "decommissioned", e.clock.Now(), store.NoAudit); err != nil {
		t.Fatal(err)
	}
	e.evaluateAll()
	if got := e.changes(); got[len(got)-1] != "t2: stale -> revoked (SEVERITY_INFO) " {
		t.Errorf("events %v", got)
	}
	for _, iv := range e.intervals() {
		if iv == "mfa/t2 open" || iv == "fresh/t2 open" {
			t.Errorf("interval %s of a revoked terminal still open", iv)
		}
	}

	// A week of silence: offline, an alert.
	e.clock.Add(OfflineAfter)
	e.report("t3", goodPosture(e.clock.Now())) // t3 finally reports
	e.evaluateAll()
	c1 = e.verdict("t1")
	if c1.State != store.Stale || !c1.Offline || c1.Check(store.CheckFresh).Detail != "check.fresh.offline" {
		t.Errorf("t1 after a week: %+v", c1)
	}
	got := e.changes()
	for _, want := range []string{"t1: compliant -> stale (SEVERITY_ALERT) fresh", "t3: stale -> compliant (SEVERITY_INFO) "} {
		if !slices.Contains(got, want) {
			t.Errorf("events %v lack %q", got, want)
		}
	}
	// t5 was stale already: going offline changes its verdict but is no
	// change of state.
	if c := e.verdict("t5"); !c.Offline {
		t.Errorf("t5 after a week: %+v", c)
	}
	for _, ev := range got {
		if ev[:3] == "t5:" && ev != wantEvents[2] {
			t.Errorf("event %q for a terminal that stayed stale", ev)
		}
	}
	// A week later is another day in the history.
	if d := e.day("2026-12-03"); d.Compliant != 1 || d.Stale != 2 {
		t.Errorf("day a week later: %+v", d)
	}
}

// TestEvaluateRevokedExemption: an exemption the collector revoked but the
// agent still applies fails the terminal, after the grace period.
func TestEvaluateRevokedExemption(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	e.enroll("t1", "pc-01")
	now := e.clock.Now()
	ex := store.Exemption{ID: "e1", TerminalID: "t1", VendorID: "0781", ProductID: "5581", Serial: "SN-Stick-1",
		NotBefore: now, NotAfter: now.Add(time.Hour), Duration: time.Hour, Issuer: "helpdesk", Reason: "minutes",
		Source: store.ExemptionOnline, Token: []byte("signed"), IssuedAt: now}
	if err := e.st.CreateExemption(ctx, ex, store.NoAudit); err != nil {
		t.Fatal(err)
	}
	p := goodPosture(now)
	p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(time.Hour))}
	e.report("t1", p)
	e.evaluateAll()
	if c := e.verdict("t1"); c.State != store.Compliant {
		t.Fatalf("exemption in force: %+v", c)
	}

	e.clock.Add(time.Minute)
	if _, err := e.st.RevokeExemption(ctx, "e1", "helpdesk", "done early", e.clock.Now(), store.NoAudit); err != nil {
		t.Fatal(err)
	}
	revokedAt := e.clock.Now()
	// Within the grace period the agent may not have heard yet.
	e.clock.Add(time.Minute)
	e.report("t1", p)
	e.evaluateAll()
	if c := e.verdict("t1"); c.State != store.Compliant {
		t.Errorf("within the grace period: %+v", c.Checks)
	}
	e.clock.Add(2 * time.Minute)
	e.report("t1", p)
	e.evaluateAll()
	r := e.verdict("t1").Check(store.CheckExemptions)
	if r.Status != store.CheckFail || r.Detail != "check.exemptions.revoked" ||
		!slices.Equal(r.Args, []string{"e1", "0781:5581:SN-Stick-1", revokedAt.UTC().Format(time.RFC3339)}) {
		t.Errorf("exemptions check: %+v", r)
	}
	if got := e.changes(); !slices.Equal(got, []string{"t1: compliant -> non-compliant (SEVERITY_WARNING) exemptions"}) {
		t.Errorf("events %v", got)
	}
}

// TestRunPoke: Run evaluates at once, a poked terminal within about
// 100 ms, and ends when its context does.
func TestRunPoke(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Interval = time.Hour })
	e.enroll("t1", "pc-01")
	e.report("t1", goodPosture(e.clock.Now()))
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = e.ev.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	waitFor := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		begin := time.Now()
		for !cond() {
			if time.Since(begin) > limit {
				t.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(begin)
	}
	state := func(id string) string {
		c, err := e.st.TerminalCompliance(context.Background(), id)
		if err != nil {
			return ""
		}
		return c.State
	}
	waitFor("the first evaluation", 5*time.Second, func() bool { return state("t1") == store.Compliant })

	// A report that breaks MFA, then a poke.
	e.clock.Add(time.Second)
	p := goodPosture(e.clock.Now())
	p.Mfa.Enforced = false
	e.report("t1", p)
	begin := time.Now()
	e.ev.Poke("t1")
	e.ev.Poke("t1") // a burst of pokes is one round
	took := waitFor("the poked evaluation", 2*time.Second, func() bool { return state("t1") == store.NonCompliant })
	if took < 80*time.Millisecond {
		t.Errorf("evaluated after %v: the pokes of a burst are not gathered", took)
	}
	t.Logf("poke to verdict: %v (%v)", took, time.Since(begin))

	// Another terminal enrolled meanwhile and poked is evaluated alone.
	e.enroll("t2", "pc-02")
	e.report("t2", goodPosture(e.clock.Now()))
	e.ev.Poke("t2")
	waitFor("a new terminal", 2*time.Second, func() bool { return state("t2") == store.Compliant })

	cancel()
	select {
	case <-done:
		if runErr != nil {
			t.Errorf("Run = %v, want nil after cancellation", runErr)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not end with its context")
	}
	// Poke after Run ended never blocks.
	for range 3 {
		e.ev.Poke("t1")
	}
}

// TestRunTicks: Run evaluates every Interval without pokes.
func TestRunTicks(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Interval = 50 * time.Millisecond })
	e.enroll("t1", "pc-01")
	e.report("t1", goodPosture(e.clock.Now()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ev.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := e.st.TerminalCompliance(ctx, "t1")
		if err == nil && c.State == store.Compliant {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first evaluation: %+v, %v", c, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Time passes without reports; the next tick finds t1 stale.
	e.clock.Add(4 * time.Minute)
	for {
		c, err := e.st.TerminalCompliance(ctx, "t1")
		if err == nil && c.State == store.Stale {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tick made t1 stale: %+v, %v", c, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestEvaluateNetworkPolicy: the network check follows the collector's
// network policy as it is set and changed — unknown without one, pending
// until the agent reports holding it, then judged from the findings —
// and the policy's version is read once per round.
func TestEvaluateNetworkPolicy(t *testing.T) {
	var (
		version string
		calls   int
	)
	e := newEnv(t, func(c *Config) {
		c.Policy.NetworkPolicyVersion = func() string { calls++; return version }
	})
	for _, id := range []string{"t1", "t2", "t3"} {
		e.enroll(id, "PC-"+id)
	}
	report := func(id, holds string, findings ...*mnguardv1.NetworkFinding) {
		t.Helper()
		p := goodPosture(e.clock.Now())
		p.Network.PolicyVersion, p.Network.Findings = holds, findings
		e.report(id, p)
	}
	check := func(id string) string {
		t.Helper()
		r := e.verdict(id).Check(store.CheckNetwork)
		return r.Status + " " + r.Detail + " " + strings.Join(r.Args, "|")
	}
	wifi := finding("wireless", "wlan0")
	sock := finding("socket", "tcp 192.0.2.10:50312 → 203.0.113.7:443 established")

	// No network policy: unknown, except a finding that needs none.
	report("t1", "")
	report("t2", "", wifi)
	report("t3", "", sock)
	e.evaluateAll()
	for id, want := range map[string]string{
		"t1": "unknown check.network.no_policy ",
		"t2": "fail check.network.findings 1|wireless|wlan0",
		"t3": "unknown check.network.no_policy ",
	} {
		if got := check(id); got != want {
			t.Errorf("%s without a policy: %q, want %q", id, got, want)
		}
	}
	if got := e.states("t1", "t2", "t3"); !maps.Equal(got, map[string]string{"t1": store.Compliant, "t2": store.NonCompliant, "t3": store.Compliant}) {
		t.Errorf("states without a policy: %v", got)
	}
	if calls != 1 {
		t.Errorf("the policy version was read %d times in one round of 3 terminals, want once", calls)
	}

	// The collector gets a policy: pending until the agents hold it; the
	// terminal with a socket finding fails at once.
	version = "n-00c0ffee"
	e.clock.Add(10 * time.Second)
	report("t1", "")
	report("t2", "", wifi)
	report("t3", "", sock)
	e.evaluateAll()
	for id, want := range map[string]string{
		"t1": "unknown check.network.policy_pending n-00c0ffee|—",
		"t2": "fail check.network.findings 1|wireless|wlan0",
		"t3": "fail check.network.findings 1|socket|tcp 192.0.2.10:50312 → 203.0.113.7:443 established",
	} {
		if got := check(id); got != want {
			t.Errorf("%s with the policy pending: %q, want %q", id, got, want)
		}
	}

	// The agents report holding it: t1 passes, t3's socket closed.
	e.clock.Add(10 * time.Second)
	report("t1", version)
	report("t2", version, wifi)
	report("t3", version)
	e.evaluateAll()
	for id, want := range map[string]string{
		"t1": "pass  ",
		"t2": "fail check.network.findings 1|wireless|wlan0",
		"t3": "pass  ",
	} {
		if got := check(id); got != want {
			t.Errorf("%s holding the policy: %q, want %q", id, got, want)
		}
	}
	got := e.changes()
	if want := []string{"t3: compliant -> non-compliant (SEVERITY_WARNING) network", "t3: non-compliant -> compliant (SEVERITY_INFO) "}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	e.checkGauges(map[string]float64{store.Compliant: 2, store.NonCompliant: 1}, map[string]float64{store.CheckNetwork: 1})
}

// TestRunPokeAll: after PokeAll (the network policy changed), Run
// evaluates every terminal within about 100 ms, not at the next interval.
func TestRunPokeAll(t *testing.T) {
	var version atomic.Value
	version.Store("")
	e := newEnv(t, func(c *Config) {
		c.Interval = time.Hour
		c.Policy.NetworkPolicyVersion = func() string { return version.Load().(string) }
	})
	for _, id := range []string{"t1", "t2"} {
		e.enroll(id, "PC-"+id)
		e.report(id, goodPosture(e.clock.Now()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ev.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	network := func(id string) string {
		c, err := e.st.TerminalCompliance(context.Background(), id)
		if err != nil {
			return ""
		}
		return c.Check(store.CheckNetwork).Detail
	}
	wait := func(what string, cond func() bool) time.Duration {
		t.Helper()
		begin := time.Now()
		for !cond() {
			if time.Since(begin) > 5*time.Second {
				t.Fatalf("%s: not within 5 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(begin)
	}
	wait("the first evaluation", func() bool {
		return network("t1") == "check.network.no_policy" && network("t2") == "check.network.no_policy"
	})

	version.Store("n-00c0ffee")
	e.ev.PokeAll()
	took := wait("every terminal after PokeAll", func() bool {
		return network("t1") == "check.network.policy_pending" && network("t2") == "check.network.policy_pending"
	})
	t.Logf("PokeAll to both verdicts: %v", took)
}

// TestCountsFollowVerdicts changes, adds and forgets verdicts at random
// and compares the counts kept as they change with the verdicts counted
// afresh.
func TestCountsFollowVerdicts(t *testing.T) {
	e := New(Config{Store: nil})
	states := []string{store.Compliant, store.NonCompliant, store.Stale, store.ComplianceRevoked}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		id := fmt.Sprintf("t%d", rnd.IntN(300))
		v := verdict{}
		if rnd.IntN(10) > 0 { // a tenth forget the terminal
			v.state = states[rnd.IntN(len(states))]
			for _, c := range store.Checks {
				if rnd.IntN(3) == 0 {
					v.failing = append(v.failing, c)
				}
			}
		}
		e.mu.Lock()
		e.setVerdict(id, v)
		want, wantFails := map[string]int{}, map[string]int{}
		for _, v := range e.verdicts {
			want[v.state]++
			if v.state != store.ComplianceRevoked {
				for _, c := range v.failing {
					wantFails[c]++
				}
			}
		}
		e.mu.Unlock()
		got, gotFails := e.counts()
		if !maps.Equal(got, want) || !maps.Equal(gotFails, wantFails) {
			t.Fatalf("after change %d (%s to %v): counts %v %v, counted afresh %v %v", i, id, v, got, gotFails, want, wantFails)
		}
	}
	if _, ok := e.verdicts[""]; ok {
		t.Fatal("a forgotten terminal has a verdict")
	}
}

// TestStoredPosture: a posture handed over with Stored is judged without
// reading the store, as long as the store holds a posture received at the
// same time; at any other time the stored posture is read again.
func TestStoredPosture(t *testing.T) {
	e := newEnv(t, nil)
	e.enroll("t1", "PC-t1")
	good := goodPosture(e.clock.Now())
	bad := goodPosture(e.clock.Now())
	bad.Mfa = &mnguardv1.MfaPosture{Reason: "login: pam_mnguard optional"}
	mfa := func() string {
		t.Helper()
		e.evaluateAll()
		return e.verdict("t1").Check(store.CheckMFA).Status
	}

	// Stored with the stored time: the store's posture (good) is not
	// read, the handed one (bad) is judged. The collector never hands a
	// posture other than the one it stored; the difference shows which
	// one the verdict came from.
	e.report("t1", good)
	e.ev.Stored("t1", e.clock.Now(), bad)
	if got := mfa(); got != store.CheckFail {
		t.Fatalf("mfa %s: the handed posture was not used", got)
	}
	// Cached from then on, as facts.
	if got := mfa(); got != store.CheckFail {
		t.Fatalf("mfa %s on the second evaluation", got)
	}

	// A newer report not handed over: the store is read.
	e.clock.Add(time.Minute)
	e.report("t1", good)
	if got := mfa(); got != store.CheckPass {
		t.Fatalf("mfa %s: the stored posture was not read", got)
	}

	// A hand-over older than what the evaluator knows is ignored.
	e.ev.Stored("t1", e.clock.Now().Add(-time.Second), bad)
	if got := mfa(); got != store.CheckPass {
		t.Fatalf("mfa %s after an older hand-over", got)
	}

	// A hand-over whose time is not the stored one (the store kept a
	// newer posture) is not used.
	e.clock.Add(time.Minute)
	e.report("t1", good)
	e.ev.Stored("t1", e.clock.Now().Add(-time.Millisecond), bad)
	if got := mfa(); got != store.CheckPass {
		t.Fatalf("mfa %s: a hand-over of another time was used", got)
	}
}
