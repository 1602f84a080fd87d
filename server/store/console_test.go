package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// enrollAt enrolls terminal id as enrolled at at.
func enrollAt(tb testing.TB, s *DB, id, hostname string, at time.Time) {
	tb.Helper()
	h := createToken(tb, s, "tok-"+id, 1, t0.Add(time.Hour))
	term, cert := newTerminal(id, hostname)
	term.EnrolledAt = at
	if err := s.Enroll(context.Background(), h, t0, term, cert); err != nil {
		tb.Fatal(err)
	}
}

// consoleTerminals enrolls five terminals, one in each state:
//
//	t-a pc-alpha  compliant      1.2.0  seen +3m  enrolled +4h
//	t-b pc-beta   non-compliant  1.1.0  seen +1m  enrolled +2h  (media fails)
//	t-c pc-gamma  stale          1.3.0  seen +2m  enrolled +5h  (fresh fails)
//	t-d pc_delta  not evaluated         never     enrolled +1h
//	t-e pc-100%   revoked        0.9.0  seen +4m  enrolled +3h
func consoleTerminals(tb testing.TB, s *DB) {
	tb.Helper()
	ctx := context.Background()
	for _, x := range []struct {
		id, host string
		enrolled time.Duration
		seen     time.Duration
	}{
		{"t-a", "pc-alpha", 4 * time.Hour, 3 * time.Minute},
		{"t-b", "pc-beta", 2 * time.Hour, time.Minute},
		{"t-c", "pc-gamma", 5 * time.Hour, 2 * time.Minute},
		{"t-d", "pc_delta", time.Hour, 0},
		{"t-e", "pc-100%", 3 * time.Hour, 4 * time.Minute},
	} {
		enrollAt(tb, s, x.id, x.host, t0.Add(x.enrolled))
		if x.seen != 0 {
			if _, err := s.SaveReport(ctx, Report{TerminalID: x.id, ReceivedAt: t0.Add(x.seen)}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := s.RevokeTerminal(ctx, "t-e", "lost", t0.Add(time.Hour), tAudit); err != nil {
		tb.Fatal(err)
	}
	a := verdict("t-a", Compliant, t0)
	a.AgentVersion, a.Search = "1.2.0", "pc-alpha\x1ft-a\x1f192.0.2.10\x1fsn-abc"
	b := verdict("t-b", NonCompliant, t0, CheckMedia)
	b.AgentVersion, b.Search = "1.1.0", "pc-beta\x1ft-b"
	c := verdict("t-c", Stale, t0, CheckFresh)
	c.AgentVersion, c.Search = "1.3.0", "pc-gamma\x1ft-c"
	e := verdict("t-e", ComplianceRevoked, t0, CheckCertificate)
	e.AgentVersion, e.Search = "0.9.0", "pc-100%\x1ft-e"
	var us []ComplianceUpdate
	for _, v := range []Compliance{a, b, c, e} {
		us = append(us, ComplianceUpdate{Compliance: v})
	}
	if err := s.SaveCompliance(ctx, us); err != nil {
		tb.Fatal(err)
	}
}

func TestTerminalPage(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	consoleTerminals(t, s)
	all := []string{"t-e", "t-a", "t-b", "t-c", "t-d"} // by host name
	tests := []struct {
		name      string
		f         TerminalFilter
		want      []string
		wantTotal int
	}{
		{"all", TerminalFilter{}, all, 5},
		{"compliant", TerminalFilter{State: Compliant}, []string{"t-a"}, 1},
		{"non-compliant", TerminalFilter{State: NonCompliant}, []string{"t-b"}, 1},
		{"stale", TerminalFilter{State: Stale}, []string{"t-c"}, 1},
		{"revoked", TerminalFilter{State: ComplianceRevoked}, []string{"t-e"}, 1},
		{"failing media", TerminalFilter{FailingCheck: CheckMedia}, []string{"t-b"}, 1},
		{"failing fresh", TerminalFilter{FailingCheck: CheckFresh}, []string{"t-c"}, 1},
		{"failing certificate: revoked terminals do not count", TerminalFilter{FailingCheck: CheckCertificate}, nil, 0},
		{"failing mfa", TerminalFilter{FailingCheck: CheckMFA}, nil, 0},
		{"state and check", TerminalFilter{State: Stale, FailingCheck: CheckMedia}, nil, 0},
		{"search host name, any case", TerminalFilter{Search: "ALPHA"}, []string{"t-a"}, 1},
		{"search address", TerminalFilter{Search: "192.0.2.10"}, []string{"t-a"}, 1},
		{"search serial", TerminalFilter{Search: "SN-ABC"}, []string{"t-a"}, 1},
		{"search ID of an unevaluated terminal", TerminalFilter{Search: "t-d"}, []string{"t-d"}, 1},
		{"search host of an unevaluated terminal", TerminalFilter{Search: "DELTA"}, []string{"t-d"}, 1},
		{"search percent is literal", TerminalFilter{Search: "%"}, []string{"t-e"}, 1},
		{"search underscore is literal", TerminalFilter{Search: "_"}, []string{"t-d"}, 1},
		{"search underscore in context", TerminalFilter{Search: "c_d"}, []string{"t-d"}, 1},
		{"search backslash is literal", TerminalFilter{Search: `\`}, nil, 0},
		{"search escaped-looking", TerminalFilter{Search: `\%`}, nil, 0},
		{"search common part", TerminalFilter{Search: "pc"}, all, 5},
		{"search nothing matches", TerminalFilter{Search: "zzz"}, nil, 0},
		{"search and state", TerminalFilter{Search: "pc", State: NonCompliant}, []string{"t-b"}, 1},

		{"sort host name", TerminalFilter{Sort: SortHostname}, all, 5},
		{"sort host name desc", TerminalFilter{Sort: SortHostname, Desc: true}, []string{"t-d", "t-c", "t-b", "t-a", "t-e"}, 5},
		{"sort state", TerminalFilter{Sort: SortState}, []string{"t-b", "t-c", "t-d", "t-a", "t-e"}, 5},
		{"sort state desc", TerminalFilter{Sort: SortState, Desc: true}, []string{"t-e", "t-a", "t-d", "t-c", "t-b"}, 5},
		{"sort last seen", TerminalFilter{Sort: SortLastSeen}, []string{"t-d", "t-b", "t-c", "t-a", "t-e"}, 5},
		{"sort last seen desc", TerminalFilter{Sort: SortLastSeen, Desc: true}, []string{"t-e", "t-a", "t-c", "t-b", "t-d"}, 5},
		{"sort agent version", TerminalFilter{Sort: SortAgentVersion}, []string{"t-d", "t-e", "t-b", "t-a", "t-c"}, 5},
		{"sort agent version desc", TerminalFilter{Sort: SortAgentVersion, Desc: true}, []string{"t-c", "t-a", "t-b", "t-e", "t-d"}, 5},
		{"sort enrolled", TerminalFilter{Sort: SortEnrolled}, []string{"t-d", "t-b", "t-e", "t-a", "t-c"}, 5},
		{"sort enrolled desc", TerminalFilter{Sort: SortEnrolled, Desc: true}, []string{"t-c", "t-a", "t-e", "t-b", "t-d"}, 5},

		{"first page", TerminalFilter{Limit: 2}, []string{"t-e", "t-a"}, 5},
		{"second page", TerminalFilter{Limit: 2, Offset: 2}, []string{"t-b", "t-c"}, 5},
		{"last page", TerminalFilter{Limit: 2, Offset: 4}, []string{"t-d"}, 5},
		{"past the end", TerminalFilter{Limit: 2, Offset: 10}, nil, 5},
		{"negative offset", TerminalFilter{Limit: 2, Offset: -3}, []string{"t-e", "t-a"}, 5},
		{"offset without limit", TerminalFilter{Offset: 3}, []string{"t-c", "t-d"}, 5},
		{"page of a sorted, filtered list", TerminalFilter{Search: "pc-", Sort: SortEnrolled, Desc: true, Limit: 2, Offset: 1},
			[]string{"t-a", "t-e"}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, total, err := s.TerminalPage(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range ts {
				got = append(got, x.ID)
			}
			if !slices.Equal(got, tt.want) || total != tt.wantTotal {
				t.Errorf("TerminalPage(%+v) = %v, %d; want %v, %d", tt.f, got, total, tt.want, tt.wantTotal)
			}
		})
	}

	for _, f := range []TerminalFilter{{Sort: "name"}, {State: "fine"}, {FailingCheck: "antivirus"}} {
		if _, _, err := s.TerminalPage(ctx, f); err == nil {
			t.Errorf("TerminalPage(%+v): no error", f)
		}
	}

	// The summaries carry the terminal, its newest certificate and verdict.
	ts, _, err := s.TerminalPage(ctx, TerminalFilter{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]TerminalSummary{}
	for _, x := range ts {
		byID[x.ID] = x
	}
	_, cert := newTerminal("t-a", "")
	if a := byID["t-a"]; a.Hostname != "pc-alpha" || a.State != StateActive || !a.EnrolledAt.Equal(t0.Add(4*time.Hour)) ||
		!a.LastSeenAt.Equal(t0.Add(3*time.Minute)) || !a.RevokedAt.IsZero() || a.CertSerial != cert.Serial ||
		!a.CertNotAfter.Equal(cert.NotAfter) || a.Compliance == nil || a.Compliance.State != Compliant ||
		a.Compliance.AgentVersion != "1.2.0" || len(a.Compliance.Checks) != len(Checks) {
		t.Errorf("summary of t-a: %+v %+v", a, a.Compliance)
	}
	if d := byID["t-d"]; d.Compliance != nil || !d.LastSeenAt.IsZero() || d.CertSerial != serialOf("t-d") {
		t.Errorf("summary of t-d: %+v", d)
	}
	if e := byID["t-e"]; e.State != StateRevoked || !e.RevokedAt.Equal(t0.Add(time.Hour)) || e.Compliance.State != ComplianceRevoked {
		t.Errorf("summary of t-e: %+v", e)
	}
}

func TestFilterEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	for _, r := range []struct {
		id  string
		seq uint64
		typ string
		at  int
	}{
		{"t1", 1, "media.attached", 1},
		{"t1", 2, "media.usb.blocked", 2},
		{"t1", 3, "media", 3},
		{"t1", 4, "mediation.x", 4},
		{"t2", 1, "media.attached", 5},
	} {
		if _, err := s.SaveReport(ctx, Report{TerminalID: r.id, ReceivedAt: sec(r.at),
			Events: []Event{{Seq: r.seq, Time: t0, Type: r.typ}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []ServerEvent{
		{TerminalID: "t1", Time: sec(6), Type: "media.exempted"},
		{TerminalID: "t1", Time: sec(7), Type: "login.success"},
		{TerminalID: "t2", Time: sec(8), Type: "compliance.changed"},
		{TerminalID: "t2", Time: sec(2), Type: "media.zzz"},
	} {
		if err := s.AddServerEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	list := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			if e.Source == "server" {
				out = append(out, fmt.Sprintf("%s/%s", e.TerminalID, e.Type))
			} else {
				out = append(out, fmt.Sprintf("%s/%d", e.TerminalID, e.Seq))
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    EventFilter
		want []string
	}{
		{"all", EventFilter{}, []string{"t2/compliance.changed", "t1/login.success", "t1/media.exempted", "t2/1", "t1/4", "t1/3",
			"t2/media.zzz", "t1/2", "t1/1"}},
		{"limit", EventFilter{Limit: 3}, []string{"t2/compliance.changed", "t1/login.success", "t1/media.exempted"}},
		{"terminal", EventFilter{TerminalID: "t1"}, []string{"t1/login.success", "t1/media.exempted", "t1/4", "t1/3", "t1/2", "t1/1"}},
		{"unknown terminal", EventFilter{TerminalID: "nobody"}, nil},
		{"type prefix", EventFilter{TypePrefix: "media."}, []string{"t1/media.exempted", "t2/1", "t2/media.zzz", "t1/2", "t1/1"}},
		{"deeper prefix", EventFilter{TypePrefix: "media.usb."}, []string{"t1/2"}},
		{"prefix not at a dot", EventFilter{TypePrefix: "media.a"}, []string{"t2/1", "t1/1"}},
		{"prefix and type", EventFilter{Type: "media.attached", TypePrefix: "media.a"}, []string{"t2/1", "t1/1"}},
		{"exact type", EventFilter{Type: "media"}, []string{"t1/3"}},
		{"exact server type", EventFilter{Type: "login.success"}, []string{"t1/login.success"}},
		{"exact type with a longer sibling", EventFilter{Type: "media.attached"}, []string{"t2/1", "t1/1"}},
		{"unknown type", EventFilter{TypePrefix: "nothing."}, nil},
		{"since and until", EventFilter{Since: sec(2), Until: sec(6)}, []string{"t2/1", "t1/4", "t1/3", "t2/media.zzz", "t1/2"}},
		{"since", EventFilter{Since: sec(7)}, []string{"t2/compliance.changed", "t1/login.success"}},
		{"until", EventFilter{Until: sec(2)}, []string{"t1/1"}},
		{"all at once", EventFilter{TerminalID: "t1", TypePrefix: "media.", Since: sec(2), Limit: 10}, []string{"t1/media.exempted", "t1/2"}},
		{"limit after filtering", EventFilter{TypePrefix: "media.", Limit: 2}, []string{"t1/media.exempted", "t2/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := s.FilterEvents(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := list(evs); !slices.Equal(got, tt.want) {
				t.Errorf("FilterEvents(%+v) = %v\nwant %v", tt.f, got, tt.want)
			}
		})
	}
	if _, err := s.FilterEvents(ctx, EventFilter{Since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Error("unstorable since accepted")
	}
}

// TestFilterEventsPaging: paging with a cursor lists every event once,
// also when a page ends amid events received at the same instant (one
// report's events share their received time).
func TestFilterEventsPaging(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	at := t0.Add(time.Minute)
	var batch []Event
	for seq := uint64(1); seq <= 7; seq++ {
		batch = append(batch, Event{Seq: seq, Time: t0, Type: "media.attached"})
	}
	for _, r := range []Report{
		{TerminalID: "t1", ReceivedAt: at, Events: batch},
		{TerminalID: "t2", ReceivedAt: at.Add(-time.Second), Events: batch[:3]},
		{TerminalID: "t2", ReceivedAt: at.Add(time.Second), Events: []Event{{Seq: 10, Time: t0, Type: "agent.start"}}},
	} {
		if _, err := s.SaveReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := s.AddServerEvent(ctx, ServerEvent{TerminalID: "t1", Time: at, Type: "login.verify"}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.FilterEvents(ctx, EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 14 {
		t.Fatalf("%d events, want 14", len(all))
	}
	for _, size := range []int{1, 2, 3, 5} {
		var paged []Event
		f := EventFilter{Limit: size}
		for {
			page, err := s.FilterEvents(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, page...)
			if len(page) < size {
				break
			}
			c := page[len(page)-1].Cursor()
			f.Before = &c
		}
		if len(paged) != len(all) {
			t.Fatalf("pages of %d: %d events, want %d", size, len(paged), len(all))
		}
		for i := range all {
			if all[i].Cursor() != paged[i].Cursor() || all[i].TerminalID != paged[i].TerminalID {
				t.Fatalf("pages of %d: event %d is %+v, want %+v", size, i, paged[i].Cursor(), all[i].Cursor())
			}
		}
	}
	if _, err := s.FilterEvents(ctx, EventFilter{Before: &EventCursor{ReceivedAt: at, Source: "bogus"}}); err == nil {
		t.Error("a cursor of no source accepted")
	}
}

func TestFilterAudit(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	minute := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	for i, action := range []string{"operator.add", "operator.delete", "terminal.revoke", "operator.sign_in", "端末.失効", "exemption.issue"} {
		if _, err := s.AppendAudit(ctx, AuditEntry{Time: minute(i), Actor: "root", Action: action}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		f    AuditFilter
		want []int64
	}{
		{"all, newest first", AuditFilter{}, []int64{6, 5, 4, 3, 2, 1}},
		{"limit", AuditFilter{Limit: 2}, []int64{6, 5}},
		{"before", AuditFilter{BeforeID: 4}, []int64{3, 2, 1}},
		{"before, limit", AuditFilter{BeforeID: 4, Limit: 1}, []int64{3}},
		{"before the first", AuditFilter{BeforeID: 1}, nil},
		{"since and until", AuditFilter{Since: minute(2), Until: minute(4)}, []int64{4, 3}},
		{"until", AuditFilter{Until: minute(1)}, []int64{1}},
		{"prefix", AuditFilter{ActionPrefix: "operator."}, []int64{4, 2, 1}},
		{"whole action", AuditFilter{ActionPrefix: "operator.add"}, []int64{1}},
		{"prefix longer than actions", AuditFilter{ActionPrefix: "operator.add.more"}, nil},
		{"non-ASCII prefix", AuditFilter{ActionPrefix: "端末."}, []int64{5}},
		{"wildcards are literal", AuditFilter{ActionPrefix: "%"}, nil},
		{"ascending", AuditFilter{Ascending: true}, []int64{1, 2, 3, 4, 5, 6}},
		{"ascending, limit", AuditFilter{Ascending: true, Limit: 2}, []int64{1, 2}},
		{"ascending prefix", AuditFilter{Ascending: true, ActionPrefix: "operator."}, []int64{1, 2, 4}},
		{"everything", AuditFilter{BeforeID: 5, Since: minute(1), ActionPrefix: "operator.", Ascending: true}, []int64{2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, err := s.FilterAudit(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, e := range es {
				got = append(got, e.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("FilterAudit(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
	es, err := s.FilterAudit(ctx, AuditFilter{ActionPrefix: "terminal."})
	if err != nil || len(es) != 1 || es[0].Action != "terminal.revoke" || es[0].Actor != "root" || !es[0].Time.Equal(minute(2)) ||
		len(es[0].Hash) == 0 || len(es[0].PrevHash) == 0 {
		t.Errorf("entry: %+v, %v", es, err)
	}
}

func TestVerifyAudit(t *testing.T) {
	ctx := context.Background()
	minute := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	s, _ := openTest(t)
	v, err := s.VerifyAudit(ctx, time.Time{})
	if err != nil || v.Entries != 0 || v.Head.ID != 0 || v.Broken != nil {
		t.Fatalf("empty log: %+v, %v", v, err)
	}
	for i := range 5 {
		if _, err := s.AppendAudit(ctx, AuditEntry{Time: minute(i), Actor: "root", Action: "a", Target: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.VerifyAudit(ctx, minute(2)); err != nil || v.Broken != nil || v.Entries != 3 || v.Head.ID != 3 {
		t.Errorf("up to minute 2: %+v, %v; want 3 entries", v, err)
	}
	// The clock stepped back before entry 6.
	if _, err := s.AppendAudit(ctx, AuditEntry{Time: minute(1), Actor: "root", Action: "a", Target: "5"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		upTo  time.Time
		wantN int64
	}{
		{"whole log", time.Time{}, 6},
		{"up to minute 2, entry 6 included", minute(2), 6}, // entry 6 is at minute(1)
		{"before everything", minute(-1), 0},
		{"at the first", minute(0), 1},
		{"between", minute(3).Add(30 * time.Second), 6},
	} {
		v, err := s.VerifyAudit(ctx, tt.upTo)
		if err != nil || v.Broken != nil || v.Entries != tt.wantN || v.Head.ID != tt.wantN {
			t.Errorf("%s: %+v, %v; want %d entries", tt.name, v, err, tt.wantN)
		}
	}
	if v, _ := s.VerifyAudit(ctx, time.Time{}); v.Head.Target != "5" || !v.Head.Time.Equal(minute(1)) {
		t.Errorf("head %+v", v.Head)
	}

	// Tampering: entry 3 changed.
	s2, _ := openTest(t)
	for i := range 5 {
		if _, err := s2.AppendAudit(ctx, AuditEntry{Time: minute(i), Actor: "root", Action: "a", Target: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{`DROP TRIGGER audit_log_no_update`, `UPDATE audit_log SET actor = 'someone' WHERE id = 3`} {
		if _, err := s2.w.Exec(testSQL(s2, q)); err != nil {
			t.Fatal(err)
		}
	}
	v, err = s2.VerifyAudit(ctx, time.Time{})
	if err != nil || v.Broken == nil || v.Broken.ID != 3 || v.Entries != 2 || v.Head.ID != 2 {
		t.Errorf("tampered: %+v (broken %+v), %v; want broken at 3 after 2 entries", v, v.Broken, err)
	}
	// Up to before the tampered entry, the chain holds.
	if v, err := s2.VerifyAudit(ctx, minute(1)); err != nil || v.Broken != nil || v.Entries != 2 {
		t.Errorf("up to entry 2: %+v, %v", v, err)
	}
}

func TestExemptionsIssued(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	es := []Exemption{
		newExemption("e1", "t1", t0, time.Hour),
		newExemption("e4", "t2", t0.Add(time.Hour), time.Hour),
		newExemption("e2", "t1", t0.Add(time.Hour), time.Hour),
		newExemption("e3", "t1", t0.Add(2*time.Hour), time.Hour),
	}
	for _, e := range es {
		if err := s.CreateExemption(ctx, e, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		from, to time.Time
		want     string
	}{
		{t0, t0.Add(time.Hour), "e1"},
		{t0.Add(time.Hour), t0.Add(2 * time.Hour), "e2,e4"},
		{t0, t0.Add(3 * time.Hour), "e1,e2,e4,e3"},
		{t0.Add(-time.Hour), t0, ""},
		{t0.Add(2*time.Hour + 1), t0.Add(24 * time.Hour), ""},
	} {
		got, err := s.ExemptionsIssued(ctx, tt.from, tt.to)
		if err != nil {
			t.Fatal(err)
		}
		if ids(got) != tt.want {
			t.Errorf("ExemptionsIssued(%v, %v) = %s, want %s", tt.from.Sub(t0), tt.to.Sub(t0), ids(got), tt.want)
		}
	}
	got, err := s.ExemptionsIssued(ctx, t0, t0.Add(time.Minute))
	if err != nil || len(got) != 1 {
		t.Fatalf("ExemptionsIssued = %+v, %v", got, err)
	}
	if err := sameExemption(got[0], es[0]); err != nil {
		t.Error(err)
	}
}

func TestTerminalHostnames(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	var ids []string
	for i := range 600 { // more than one batch of the IN list
		id := fmt.Sprintf("t%03d", i)
		enroll(t, s, id, "pc-"+id)
		ids = append(ids, id)
	}
	got, err := s.TerminalHostnames(ctx, append(ids, "unknown"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 600 || got["t000"] != "pc-t000" || got["t599"] != "pc-t599" {
		t.Errorf("%d host names, t000 %q, t599 %q", len(got), got["t000"], got["t599"])
	}
	if got, err := s.TerminalHostnames(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("no IDs: %v, %v", got, err)
	}
}
