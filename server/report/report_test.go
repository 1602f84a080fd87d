package report

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"flag"
	"html/template"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func buildReport(t *testing.T, r *Renderer, lang string) *Report {
	t.Helper()
	rep, err := r.Report(context.Background(), firstDay, lastDay, lang)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func check(t *testing.T, rep *Report, name string) CheckSummary {
	t.Helper()
	for _, c := range rep.Compliance {
		if c.Check == name {
			return c
		}
	}
	t.Fatalf("no check %s in the report", name)
	return CheckSummary{}
}

func TestReport(t *testing.T) {
	f := newFixture(t)
	f.populate()
	rep := buildReport(t, f.renderer(), "ja")

	t.Run("header", func(t *testing.T) {
		if rep.FirstDay != "2026-04-01" || rep.LastDay != "2026-04-30" || !rep.From.Equal(firstDay) || !rep.To.Equal(at(time.May, 1, 0, 0)) {
			t.Errorf("period %s..%s [%v, %v)", rep.FirstDay, rep.LastDay, rep.From, rep.To)
		}
		if rep.TimeZone != "Asia/Tokyo" || rep.Version != "v1.2.3" || !rep.GeneratedAt.Equal(now) || !rep.Complete {
			t.Errorf("zone %s, version %s, generated %v, complete %v", rep.TimeZone, rep.Version, rep.GeneratedAt, rep.Complete)
		}
		if rep.Title != "自己点検報告書" || rep.Language != "ja" {
			t.Errorf("title %q, language %q", rep.Title, rep.Language)
		}
	})

	t.Run("compliance", func(t *testing.T) {
		if len(rep.Compliance) != len(store.Checks) {
			t.Fatalf("%d checks, want %d", len(rep.Compliance), len(store.Checks))
		}
		for i, c := range rep.Compliance {
			if c.Check != store.Checks[i] || c.Label == "" || strings.HasPrefix(c.Label, "report.") {
				t.Errorf("check %d = %q labelled %q", i, c.Check, c.Label)
			}
		}
		media := check(t, rep, store.CheckMedia)
		if media.FailingAtEnd != 1 || media.FailedInPeriod != 3 || len(media.Terminals) != 3 {
			t.Fatalf("media: %d failing at end, %d in period, %d listed; want 1, 3, 3", media.FailingAtEnd, media.FailedInPeriod, len(media.Terminals))
		}
		want := []struct {
			id      string
			atEnd   bool
			since   time.Time
			seconds int64
			n       int
			detail  string
		}{
			// One day from the stretch that began in March, 36 hours
			// from the one still open.
			{"t-a", true, at(time.April, 29, 12, 0), 24*3600 + 36*3600, 2, "check.media.writable"},
			{"t-b", false, time.Time{}, 30 * 60, 1, "check.media.monitor"},
			// Until the revocation closed it.
			{"t-c", false, time.Time{}, 60 * 3600, 1, "check.media.not_reported"},
		}
		for i, w := range want {
			got := media.Terminals[i]
			if got.TerminalID != w.id || got.FailingAtEnd != w.atEnd || !got.Since.Equal(w.since) ||
				got.FailedSeconds != w.seconds || got.Stretches != w.n || got.DetailKey != w.detail {
				t.Errorf("media terminal %d = %+v, want %+v", i, got, w)
			}
		}
		if media.Terminals[0].Hostname != "pc-a" || media.Terminals[0].Since.Location() != tokyo {
			t.Errorf("t-a: host %q, since in %v", media.Terminals[0].Hostname, media.Terminals[0].Since.Location())
		}
		// Failing up to the period's last instant is failing at its end;
		// a failure from the first instant after it is not in the report.
		mfa := check(t, rep, store.CheckMFA)
		if mfa.FailingAtEnd != 1 || mfa.FailedInPeriod != 1 || mfa.Terminals[0].TerminalID != "t-b" || mfa.Terminals[0].FailedSeconds != 3600 {
			t.Errorf("mfa = %+v", mfa)
		}
		// Network isolation is counted like the others: t-b broke it for
		// four hours in the period.
		network := check(t, rep, store.CheckNetwork)
		if network.FailingAtEnd != 0 || network.FailedInPeriod != 1 || len(network.Terminals) != 1 {
			t.Fatalf("network = %+v, want one failure in the period, none at its end", network)
		}
		if n := network.Terminals[0]; n.TerminalID != "t-b" || n.FailingAtEnd || n.FailedSeconds != 4*3600 || n.Stretches != 1 ||
			n.DetailKey != "check.network.findings" || !strings.Contains(n.Detail, "usb_adapter") || !strings.Contains(n.Detail, "RNDIS") {
			t.Errorf("network terminal = %+v", n)
		}
		for _, name := range []string{store.CheckFresh, store.CheckVersion, store.CheckCertificate, store.CheckExemptions} {
			if c := check(t, rep, name); c.FailedInPeriod != 0 || c.FailingAtEnd != 0 || len(c.Terminals) != 0 {
				t.Errorf("%s = %+v, want no failures", name, c)
			}
		}
		// Undetermined now: t-d (never evaluated) everywhere, and the
		// network check of t-b (the new network policy pending); t-a's
		// passes, and revoked t-c does not count.
		if n := network.UnknownNow; n != 2 {
			t.Errorf("network undetermined on %d terminals, want 2", n)
		}
		if n := media.UnknownNow; n != 1 {
			t.Errorf("media undetermined on %d terminals, want 1", n)
		}
	})

	t.Run("network", func(t *testing.T) {
		nw := rep.Network
		p := nw.Policy
		if p == nil || p.Version != "n-1a2b3c4d" || !p.Enforce || p.UpdatedBy != "admin1 (admin)" || !p.UpdatedAt.Equal(at(time.April, 21, 10, 0)) ||
			strings.Join(p.Networks, " ") != "198.51.100.0/24 2001:db8::/32@tcp/443,tcp/8000-8100,udp/53" || strings.Join(p.DNSServers, " ") != "198.51.100.53" {
			t.Errorf("network policy %+v", p)
		}
		if len(nw.Changes) != 1 || nw.Changes[0].Action != actionNetworkPolicySet || nw.Changes[0].Target != "n-1a2b3c4d" {
			t.Errorf("network policy changes %+v", nw.Changes)
		}
		// Three agent events in the period, on t-b: a socket twice (the
		// first at 10:05), the USB adapter once.
		if nw.FindingEvents != 3 || len(nw.Findings) != 2 {
			t.Fatalf("%d finding events, %d rows: %+v", nw.FindingEvents, len(nw.Findings), nw.Findings)
		}
		s, u := nw.Findings[0], nw.Findings[1]
		if s.TerminalID != "t-b" || s.Hostname != "pc-b" || s.Kind != "socket" || s.Count != 2 || s.Label != "ポリシー外への通信" ||
			!s.First.Equal(at(time.April, 20, 10, 5)) || !s.Last.Equal(at(time.April, 20, 10, 30)) ||
			s.Example != "tcp 192.168.42.129:50312 → 203.0.113.7:443 established — curl (PID 4242, sato "+hostile+")" {
			t.Errorf("socket findings %+v", s)
		}
		if u.Kind != "usb_adapter" || u.Count != 1 || u.Example != "usb0: RNDIS phone" || !u.First.Equal(u.Last) || u.First.Location() != tokyo {
			t.Errorf("USB adapter findings %+v", u)
		}
	})

	t.Run("exemptions", func(t *testing.T) {
		var ids []string
		for _, e := range rep.Exemptions {
			ids = append(ids, e.ID)
		}
		if strings.Join(ids, ",") != "ex-1,ex-2,ex-3" {
			t.Fatalf("exemptions %v, want ex-1,ex-2,ex-3 (issued in the period, oldest first)", ids)
		}
		e1, e2, e3 := rep.Exemptions[0], rep.Exemptions[1], rep.Exemptions[2]
		if !e1.Used || !e1.UsedAt.Equal(at(time.April, 5, 10, 20)) || e1.Device != "0781:5581:S1" || e1.Hostname != "pc-a" ||
			e1.Issuer != "helpdesk-b (helpdesk)" || e1.Ticket != "INC-1" || e1.Source != store.ExemptionOnline ||
			!e1.NotAfter.Equal(at(time.April, 5, 11, 0)) || !e1.RevokedAt.IsZero() {
			t.Errorf("ex-1 = %+v", e1)
		}
		// A write reported by another terminal does not use it.
		if e2.Used || !e2.RevokedAt.Equal(at(time.April, 12, 14, 30)) || e2.RevokedBy != "helpdesk-b (helpdesk)" || e2.RevokeReason != "wrong device" {
			t.Errorf("ex-2 = %+v", e2)
		}
		// The agent names an offline exemption by its challenge.
		if !e3.Used || !e3.UsedAt.Equal(at(time.April, 25, 16, 5)) || e3.Source != store.ExemptionOffline || !e3.AllowNoSerial || e3.Device != "0781:5581:" {
			t.Errorf("ex-3 = %+v", e3)
		}
		if rep.ExemptionsUsed() != 2 || rep.ExemptionsRevoked() != 1 {
			t.Errorf("used %d, revoked %d; want 2, 1", rep.ExemptionsUsed(), rep.ExemptionsRevoked())
		}
	})

	t.Run("mfa", func(t *testing.T) {
		l := rep.MFA.Lockouts
		if len(l) != 2 {
			t.Fatalf("lockouts %+v, want 2", l)
		}
		if l[0].TerminalID != "t-a" || l[0].Hostname != "pc-a" || l[0].User != "sato" || l[0].Service != "login" || !l[0].Time.Equal(at(time.April, 8, 8, 0)) {
			t.Errorf("lockout 0 = %+v", l[0])
		}
		if l[1].TerminalID != "t-b" || l[1].User != "suzuki" || l[1].Reason != "replayed step, lock reached" {
			t.Errorf("lockout 1 = %+v", l[1])
		}
		if len(rep.MFA.Unlocks) != 1 || rep.MFA.Unlocks[0].Target != "sato" || rep.MFA.Unlocks[0].Actor != "helpdesk-b (helpdesk)" {
			t.Errorf("unlocks %+v", rep.MFA.Unlocks)
		}
		if len(rep.MFA.OfflineLoginCodes) != 1 || rep.MFA.OfflineLoginCodes[0].Target != "suzuki" {
			t.Errorf("offline login codes %+v", rep.MFA.OfflineLoginCodes)
		}
		if len(rep.MFA.OfflineExemptionCodes) != 1 || rep.MFA.OfflineExemptionCodes[0].Target != "ex-3" {
			t.Errorf("offline exemption codes %+v", rep.MFA.OfflineExemptionCodes)
		}
	})

	t.Run("terminals", func(t *testing.T) {
		tc := rep.Terminals
		if len(tc.Enrolled) != 1 || tc.Enrolled[0].ID != "t-b" || !tc.Enrolled[0].EnrolledAt.Equal(at(time.April, 10, 9, 0)) {
			t.Errorf("enrolled %+v, want t-b", tc.Enrolled)
		}
		if len(tc.Revoked) != 1 || tc.Revoked[0].ID != "t-c" || tc.Revoked[0].Reason != "disposed "+hostile ||
			!tc.Revoked[0].RevokedAt.Equal(at(time.April, 20, 12, 0)) || tc.Revoked[0].State != store.StateRevoked {
			t.Errorf("revoked %+v, want t-c", tc.Revoked)
		}
	})

	t.Run("operators", func(t *testing.T) {
		o := rep.Operators
		var names []string
		for _, op := range o.Current {
			names = append(names, op.Name+"/"+op.Role)
		}
		if strings.Join(names, ",") != "admin1/admin,auditor1/auditor,helpdesk-b/helpdesk" {
			t.Errorf("operators %v", names)
		}
		if !o.Current[2].Disabled || o.Current[0].Disabled {
			t.Errorf("disabled: %+v", o.Current)
		}
		var actions []string
		for _, c := range o.Changes {
			actions = append(actions, c.Action)
		}
		if strings.Join(actions, ",") != "operator.add,operator.set_role,operator_token.create,operator.set_password" {
			t.Errorf("operator changes %v", actions)
		}
		if o.SignIns != 2 || o.SignInsFailed != 1 || o.SignInsRefused != 1 {
			t.Errorf("sign-ins %d, failed %d, refused %d; want 2, 1, 1", o.SignIns, o.SignInsFailed, o.SignInsRefused)
		}
	})

	t.Run("audit chain", func(t *testing.T) {
		a := rep.AuditChain
		if !a.OK || a.BrokenAt != 0 || a.EntriesWalked != auditLastInIt || a.HeadID != auditLastInIt || a.EntriesInPeriod != auditInPeriod {
			t.Fatalf("audit chain %+v", a)
		}
		es, err := f.st.FilterAudit(f.ctx, store.AuditFilter{Ascending: true, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		head := es[auditLastInIt-1]
		if a.HeadHash != hex.EncodeToString(head.Hash) || len(a.HeadHash) != 64 || !a.HeadTime.Equal(at(time.April, 30, 23, 59)) {
			t.Errorf("head %s at %v, want %x at %v", a.HeadHash, a.HeadTime, head.Hash, head.Time)
		}
	})
}

// TestReportPaging reads events and audit entries in tiny pages: the
// report must be the same, also where a whole page shares one received
// time.
func TestReportPaging(t *testing.T) {
	f := newFixture(t)
	f.populate()
	r := f.renderer()
	want, err := buildReport(t, r, "en").JSON()
	if err != nil {
		t.Fatal(err)
	}
	defer func(n int) { pageSize = n }(pageSize)
	for _, n := range []int{1, 2, 3} {
		pageSize = n
		got, err := buildReport(t, r, "en").JSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("page size %d: the report differs:\n%s\nwant\n%s", n, got, want)
		}
	}
}

// TestReportOngoingPeriod reports a period that has not ended: failures
// count up to now, and nothing after it.
func TestReportOngoingPeriod(t *testing.T) {
	f := newFixture(t)
	f.populate()
	r := f.renderer()
	r.Now = func() time.Time { return at(time.April, 30, 0, 0) }
	rep := buildReport(t, r, "en")
	if rep.Complete {
		t.Error("complete before the period ended")
	}
	media := check(t, rep, store.CheckMedia)
	if a := media.Terminals[0]; a.TerminalID != "t-a" || !a.FailingAtEnd || a.FailedSeconds != 24*3600+12*3600 {
		t.Errorf("t-a media = %+v, want failing, 36 hours", a)
	}
	// t-b's MFA failure begins after now.
	if mfa := check(t, rep, store.CheckMFA); mfa.FailedInPeriod != 0 {
		t.Errorf("mfa = %+v, want no failures yet", mfa)
	}
	html, err := rep.HTML()
	if err != nil {
		t.Fatal(err)
	}
	if note := i18n.T("en", "report.meta.incomplete", "2026-04-30 00:00:00"); !strings.Contains(string(html), note) {
		t.Errorf("the HTML does not say the period is not over (%q)", note)
	}
}

// TestReportAuditTampered changes an entry of the audit log behind the
// store's back: the report says the chain is broken, and where.
func TestReportAuditTampered(t *testing.T) {
	f := newFixture(t)
	f.populate()
	r := f.renderer()
	db, err := sql.Open("sqlite", f.path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The schema refuses changes until someone with the file drops the
	// trigger. An entry after the period is outside its verification.
	if _, err := db.Exec(`UPDATE audit_log SET detail = 'nothing' WHERE id = 2`); err == nil {
		t.Fatal("the audit log took an UPDATE")
	}
	for _, q := range []string{`DROP TRIGGER audit_log_no_update`, `UPDATE audit_log SET detail = 'later' WHERE id = 15`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if a := buildReport(t, r, "ja").AuditChain; !a.OK || a.EntriesWalked != auditLastInIt {
		t.Fatalf("tampering after the period: %+v, want OK through entry %d", a, auditLastInIt)
	}
	if _, err := db.Exec(`UPDATE audit_log SET detail = 'role auditor' WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	rep := buildReport(t, r, "ja")
	a := rep.AuditChain
	if a.OK || a.BrokenAt != 2 || a.BrokenReason == "" || a.EntriesWalked != 1 || a.HeadID != 1 {
		t.Fatalf("audit chain %+v, want broken at entry 2 after 1 entry", a)
	}
	for _, lang := range []string{"ja", "en"} {
		rep.Language = lang
		html, err := rep.HTML()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{i18n.T(lang, "report.audit.broken"), i18n.T(lang, "report.audit.broken_value", int64(2), a.BrokenReason)} {
			if !strings.Contains(string(html), template.HTMLEscapeString(want)) {
				t.Errorf("%s HTML lacks %q", lang, want)
			}
		}
		if strings.Contains(string(html), "<td>"+i18n.T(lang, "report.audit.ok")+"</td>") {
			t.Errorf("%s HTML says OK", lang)
		}
	}
	csvRows := readCSV(t, mustBytes(rep.CSV()))
	if row := onlyRow(t, csvRows, "audit_chain"); row["status"] != "broken" || row["value"] != "2" || row["count"] != "1" {
		t.Errorf("CSV audit_chain row %v", row)
	}
}

func mustBytes(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestReportEmptyStore(t *testing.T) {
	f := newFixture(t)
	rep := buildReport(t, f.renderer(), "ja")
	if !rep.AuditChain.OK || rep.AuditChain.EntriesWalked != 0 || rep.AuditChain.HeadHash != "" || rep.AuditChain.HeadID != 0 {
		t.Errorf("audit chain of an empty log: %+v", rep.AuditChain)
	}
	for _, c := range rep.Compliance {
		if c.FailedInPeriod != 0 || c.UnknownNow != 0 || c.Terminals == nil {
			t.Errorf("check %+v", c)
		}
	}
	// Empty lists are [] in JSON, not null.
	js := string(mustBytes(rep.JSON()))
	if strings.Contains(js, "null") {
		t.Errorf("JSON of an empty report has null:\n%s", js)
	}
	html := string(mustBytes(rep.HTML()))
	if !strings.Contains(html, i18n.T("ja", "report.compliance.no_failures")) || !strings.Contains(html, i18n.T("ja", "report.none_in_period")) {
		t.Error("the HTML does not say that nothing happened")
	}
	readCSV(t, mustBytes(rep.CSV()))
}

func TestSelfInspectionArguments(t *testing.T) {
	f := newFixture(t)
	r := f.renderer()
	ctx := context.Background()
	for _, tt := range []struct {
		name          string
		first, last   time.Time
		format, lang  string
		wantErr       bool
		wantFrom, wTo time.Time
	}{
		{"html ja", firstDay, lastDay, "html", "ja", false, firstDay, at(time.May, 1, 0, 0)},
		{"one day, times of day ignored", at(time.April, 3, 15, 0), at(time.April, 3, 9, 0), "json", "en", false, at(time.April, 3, 0, 0), at(time.April, 4, 0, 0)},
		{"days given in UTC", time.Date(2026, 3, 31, 15, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 15, 0, 0, 0, time.UTC), "json", "ja", false, firstDay, at(time.April, 3, 0, 0)},
		{"last before first", lastDay, firstDay, "html", "ja", true, time.Time{}, time.Time{}},
		{"unknown format", firstDay, lastDay, "pdf", "ja", true, time.Time{}, time.Time{}},
		{"unknown language", firstDay, lastDay, "html", "fr", true, time.Time{}, time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := r.SelfInspection(ctx, tt.first, tt.last, tt.format, tt.lang)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if tt.format == "json" {
				var rep Report
				if err := json.Unmarshal(b, &rep); err != nil {
					t.Fatal(err)
				}
				if !rep.From.Equal(tt.wantFrom) || !rep.To.Equal(tt.wTo) || rep.Language != tt.lang {
					t.Errorf("period [%v, %v) in %s, want [%v, %v) in %s", rep.From, rep.To, rep.Language, tt.wantFrom, tt.wTo, tt.lang)
				}
			}
		})
	}
}

func TestNewDefaultZone(t *testing.T) {
	r := New(nil, nil, "v0")
	if r.Location().String() != DefaultZone {
		t.Errorf("zone %s, want %s", r.Location(), DefaultZone)
	}
	if _, off := time.Date(2026, 1, 1, 0, 0, 0, 0, r.Location()).Zone(); off != 9*3600 {
		t.Errorf("offset %d, want +9h", off)
	}
}

func TestHTML(t *testing.T) {
	f := newFixture(t)
	f.populate()
	for _, lang := range i18n.Languages {
		t.Run(lang, func(t *testing.T) {
			rep := buildReport(t, f.renderer(), lang)
			b, err := rep.HTML()
			if err != nil {
				t.Fatal(err)
			}
			html := string(b)
			for _, want := range []string{
				`<html lang="` + lang + `">`,
				rep.AuditChain.HeadHash,
				"&lt;script&gt;alert(1)&lt;/script&gt;",
				i18n.T(lang, "report.title"),
				i18n.T(lang, "report.check.media"),
				i18n.T(lang, "report.audit.ok"),
				"2026-04-29 12:00:00", // t-a fails media since then
				"@page",
				"pc-a", "t-c", "0781:5581:S1",
			} {
				if !strings.Contains(html, want) {
					t.Errorf("the HTML lacks %q", want)
				}
			}
			lower := strings.ToLower(html)
			for _, bad := range []string{"<script", "javascript:", " onload=", " onerror=", "src=", "href=", "@import", "url("} {
				if strings.Contains(lower, bad) {
					t.Errorf("the HTML has %q: no script and no external resources", bad)
				}
			}
			// Every text came from the catalogue, with the right arguments.
			for _, bad := range []string{"report.", "%!", "(MISSING)", "(EXTRA"} {
				if strings.Contains(html, bad) {
					i := strings.Index(html, bad)
					t.Errorf("the HTML has %q: ...%s...", bad, html[max(0, i-60):min(len(html), i+60)])
				}
			}
			if lang == "ja" && !strings.Contains(html, "自己点検報告書") {
				t.Error("the Japanese report lacks its title")
			}
		})
	}
}

// readCSV parses the report's CSV into rows keyed by column name.
func readCSV(t *testing.T, b []byte) []map[string]string {
	t.Helper()
	if !bytes.HasPrefix(b, []byte(bom)) {
		t.Fatal("the CSV does not start with a byte order mark")
	}
	if !bytes.Contains(b, []byte("\r\n")) {
		t.Error("the CSV lines do not end in CRLF")
	}
	r := csv.NewReader(bytes.NewReader(b[len(bom):]))
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2 || strings.Join(recs[0], ",") != strings.Join(csvColumns[:], ",") || recs[0][0] != "section" {
		t.Fatalf("CSV header %v", recs[0])
	}
	var rows []map[string]string
	for _, rec := range recs[1:] {
		row := map[string]string{}
		for i, v := range rec {
			row[recs[0][i]] = v
		}
		if row["section"] == "" || row["label"] == "" {
			t.Errorf("row without section or label: %v", rec)
		}
		rows = append(rows, row)
	}
	return rows
}

func rowsOf(rows []map[string]string, section string) []map[string]string {
	var out []map[string]string
	for _, r := range rows {
		if r["section"] == section {
			out = append(out, r)
		}
	}
	return out
}

func onlyRow(t *testing.T, rows []map[string]string, section string) map[string]string {
	t.Helper()
	rs := rowsOf(rows, section)
	if len(rs) != 1 {
		t.Fatalf("%d rows of section %s, want 1", len(rs), section)
	}
	return rs[0]
}

func TestCSV(t *testing.T) {
	f := newFixture(t)
	f.populate()
	rep := buildReport(t, f.renderer(), "ja")
	rows := readCSV(t, mustBytes(rep.CSV()))

	counts := map[string]string{}
	for _, r := range rowsOf(rows, "count") {
		counts[r["check"]+"/"+r["name"]] = r["count"]
	}
	for k, want := range map[string]string{
		"media/failing_at_end": "1", "media/failed_in_period": "3", "network/unknown_now": "2", "network/failed_in_period": "1",
		"network/failing_at_end": "0",
		"/exemptions_issued":     "3", "/exemptions_used": "2", "/lockouts": "2", "/unlocks": "1",
		"/offline_login_codes": "1", "/offline_exemption_codes": "1", "/terminals_enrolled": "1",
		"/terminals_revoked": "1", "/operator_changes": "4", "/sign_ins": "2", "/sign_ins_failed": "1",
		"/sign_ins_refused": "1", "/audit_entries_in_period": "13", "/network_finding_events": "3", "/network_policy_changes": "1",
	} {
		if counts[k] != want {
			t.Errorf("count %s = %q, want %s", k, counts[k], want)
		}
	}
	var failures []string
	for _, r := range rowsOf(rows, "failure") {
		failures = append(failures, strings.Join([]string{r["check"], r["terminal_id"], r["status"], r["since"], r["seconds"], r["count"]}, " "))
	}
	if got, want := strings.Join(failures, "\n"), strings.Join([]string{
		"media t-a failing 2026-04-29T12:00:00+09:00 216000 2",
		"media t-b recovered  1800 1",
		"media t-c recovered  216000 1",
		"mfa t-b failing 2026-04-30T23:00:00+09:00 3600 1",
		"network t-b recovered  14400 1",
	}, "\n"); got != want {
		t.Errorf("failure rows:\n%s\nwant\n%s", got, want)
	}
	ex := rowsOf(rows, "exemption")
	if len(ex) != 3 || ex[0]["id"] != "ex-1" || ex[0]["status"] != "used" || ex[0]["used_at"] != "2026-04-05T10:20:00+09:00" ||
		ex[0]["reason"] != "copy minutes "+hostile || ex[0]["device"] != "0781:5581:S1" || ex[0]["hostname"] != "pc-a" {
		t.Fatalf("exemption rows %v", ex)
	}
	// A formula in a cell is defused.
	if ex[1]["ticket"] != `'=HYPERLINK("http://x")` || ex[1]["status"] != "not_used" || ex[1]["revoked_at"] != "2026-04-12T14:30:00+09:00" {
		t.Errorf("ex-2 row %v", ex[1])
	}
	if ex[2]["source"] != "offline" || ex[2]["value"] != "true" {
		t.Errorf("ex-3 row %v", ex[2])
	}
	if n := len(rowsOf(rows, "lockout")); n != 2 {
		t.Errorf("%d lockout rows, want 2", n)
	}
	if r := onlyRow(t, rows, "revoked"); r["terminal_id"] != "t-c" || r["reason"] != "disposed "+hostile {
		t.Errorf("revoked row %v", r)
	}
	a := onlyRow(t, rows, "audit_chain")
	if a["status"] != "ok" || a["hash"] != rep.AuditChain.HeadHash || a["id"] != strconv.Itoa(auditLastInIt) || a["count"] != strconv.Itoa(auditLastInIt) {
		t.Errorf("audit_chain row %v", a)
	}
	if r := onlyRow(t, rows, "network_policy"); r["id"] != "n-1a2b3c4d" || r["status"] != "enforce_on" || r["actor"] != "admin1 (admin)" ||
		r["target"] != "198.51.100.0/24 2001:db8::/32@tcp/443,tcp/8000-8100,udp/53" || r["value"] != "198.51.100.53" || r["time"] != "2026-04-21T10:00:00+09:00" {
		t.Errorf("network_policy row %v", r)
	}
	if r := onlyRow(t, rows, "network_policy_change"); r["action"] != actionNetworkPolicySet || r["target"] != "n-1a2b3c4d" {
		t.Errorf("network_policy_change row %v", r)
	}
	if fs := rowsOf(rows, "network_finding"); len(fs) != 2 || fs[0]["name"] != "socket" || fs[0]["count"] != "2" || fs[0]["terminal_id"] != "t-b" ||
		fs[0]["since"] != "2026-04-20T10:05:00+09:00" || fs[0]["time"] != "2026-04-20T10:30:00+09:00" || !strings.Contains(fs[0]["detail"], "curl (PID 4242") ||
		fs[1]["name"] != "usb_adapter" {
		t.Errorf("network_finding rows %v", fs)
	}
	meta := map[string]string{}
	for _, r := range rowsOf(rows, "meta") {
		meta[r["name"]] = r["value"]
	}
	if meta["from"] != "2026-04-01T00:00:00+09:00" || meta["to"] != "2026-05-01T00:00:00+09:00" || meta["collector_version"] != "v1.2.3" || meta["complete"] != "true" {
		t.Errorf("meta %v", meta)
	}
}

func TestJSON(t *testing.T) {
	f := newFixture(t)
	f.populate()
	rep := buildReport(t, f.renderer(), "en")
	b, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	again, err := back.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Errorf("JSON does not round-trip:\n%s\nthen\n%s", b, again)
	}
	if back.AuditChain.HeadHash != rep.AuditChain.HeadHash || len(back.Exemptions) != 3 || !back.Exemptions[0].Used {
		t.Errorf("decoded %+v", back)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"first_day", "last_day", "generated_at", "collector_version", "compliance", "exemptions", "mfa", "terminals", "operators", "audit_chain"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if !strings.Contains(string(b), `"from": "2026-04-01T00:00:00+09:00"`) || !strings.Contains(string(b), `"failed_seconds": 216000`) {
		t.Error("JSON times are not in the collector's zone, or durations not in seconds")
	}
}

// TestGolden compares the rendered report of the fixture with the files
// in testdata (go test -update rewrites them).
func TestGolden(t *testing.T) {
	f := newFixture(t)
	f.populate()
	r := f.renderer()
	ctx := context.Background()
	for _, g := range []struct{ file, format, lang string }{
		{"selfinspection-ja.html", "html", "ja"},
		{"selfinspection-en.html", "html", "en"},
		{"selfinspection-ja.csv", "csv", "ja"},
		{"selfinspection-en.json", "json", "en"},
	} {
		t.Run(g.file, func(t *testing.T) {
			rep, err := r.Report(ctx, firstDay, lastDay, g.lang)
			if err != nil {
				t.Fatal(err)
			}
			// The reasons' texts are the compliance checks' messages, not
			// this package's: TestDetail checks them.
			for i := range rep.Compliance {
				for j := range rep.Compliance[i].Terminals {
					f := &rep.Compliance[i].Terminals[j]
					f.Detail = "(" + f.DetailKey + ")"
				}
			}
			var got []byte
			switch g.format {
			case "html":
				got, err = rep.HTML()
			case "csv":
				got, err = rep.CSV()
			default:
				got, err = rep.JSON()
			}
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", g.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s (go test -update rewrites it, then review the diff)", g.file, path)
			}
		})
	}
}

// TestDetail checks the reasons of the failures: each shows the arguments
// its check had when it started failing, the one still open and the one
// that ended alike.
func TestDetail(t *testing.T) {
	f := newFixture(t)
	f.populate()
	for _, lang := range i18n.Languages {
		media := check(t, buildReport(t, f.renderer(), lang), store.CheckMedia)
		a, b := media.Terminals[0], media.Terminals[1]
		if want := detailText(lang, "check.media.writable", []string{"sdb", "mounted rw"}); a.Detail != want {
			t.Errorf("%s: t-a reason %q, want %q", lang, a.Detail, want)
		}
		if want := detailText(lang, "check.media.monitor", []string{"monitor"}); b.Detail != want || strings.Contains(b.Detail, "…") {
			t.Errorf("%s: t-b reason %q, want %q", lang, b.Detail, want)
		}
		if i18n.Has("check.media.writable") && (!strings.Contains(a.Detail, "sdb") || !strings.Contains(a.Detail, "mounted rw")) {
			t.Errorf("%s: t-a reason %q lacks the device", lang, a.Detail)
		}
		n := check(t, buildReport(t, f.renderer(), lang), store.CheckNetwork).Terminals[0]
		if want := detailText(lang, "check.network.findings", []string{"1", "usb_adapter", "usb0: usb ancestor 1-2, interface class e0/01/03 (RNDIS)"}); n.Detail != want ||
			strings.HasPrefix(n.Detail, "check.") {
			t.Errorf("%s: t-b network reason %q, want %q", lang, n.Detail, want)
		}
	}
}

func TestDetailText(t *testing.T) {
	for _, tt := range []struct {
		lang, key string
		args      []string
		want      string
	}{
		{"ja", "", nil, ""},
		{"ja", "report.exemptions.ticket", []string{"INC-9"}, "チケット: INC-9"},
		{"ja", "report.exemptions.ticket", nil, "チケット: …"},
		{"en", "report.exemptions.ticket", nil, "ticket …"},
		{"en", "report.exemptions.ticket", []string{"a", "b"}, "ticket a"},
		{"en", "check.not.in.catalogue", []string{"x"}, "check.not.in.catalogue"},
	} {
		if got := detailText(tt.lang, tt.key, tt.args); got != tt.want {
			t.Errorf("detailText(%s, %s, %q) = %q, want %q", tt.lang, tt.key, tt.args, got, tt.want)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		seconds int64
		ja, en  string
	}{
		{0, "0秒", "0 s"},
		{59, "59秒", "59 s"},
		{60, "1分", "1 min"},
		{3600 + 5*60 + 7, "1時間 5分", "1 h 5 min"},
		{216000, "2日 12時間 0分", "2 d 12 h 0 min"},
	} {
		if got := duration("ja", tt.seconds); got != tt.ja {
			t.Errorf("duration(ja, %d) = %q, want %q", tt.seconds, got, tt.ja)
		}
		if got := duration("en", tt.seconds); got != tt.en {
			t.Errorf("duration(en, %d) = %q, want %q", tt.seconds, got, tt.en)
		}
	}
}

// TestFailureUnion sums overlapping failures of one terminal once and
// clips them to the period.
func TestFailureUnion(t *testing.T) {
	end := at(time.May, 1, 0, 0)
	b := &builder{loc: tokyo, lang: "en", start: firstDay, end: end, cut: end, hosts: map[string]string{"t-x": "pc-x"}}
	ivs := []store.ComplianceInterval{
		{TerminalID: "t-x", Check: store.CheckMedia, Start: at(time.April, 1, 11, 0), End: at(time.April, 1, 13, 0), Detail: "k2"},
		{TerminalID: "t-x", Check: store.CheckMedia, Start: at(time.March, 31, 10, 0), End: at(time.April, 1, 12, 0), Detail: "k1"},
		{TerminalID: "t-x", Check: store.CheckMedia, Start: at(time.April, 30, 20, 0), Detail: "k3"},
		// Ends where the period begins: not in it.
		{TerminalID: "t-x", Check: store.CheckMedia, Start: at(time.March, 30, 0, 0), End: firstDay, Detail: "k0"},
	}
	f, ok := b.failure("t-x", ivs)
	if !ok {
		t.Fatal("no failure in the period")
	}
	// 00:00 to 13:00 on 1 April, and 20:00 to 24:00 on 30 April.
	if f.FailedSeconds != (13+4)*3600 || f.Stretches != 3 || !f.FailingAtEnd || !f.Since.Equal(at(time.April, 30, 20, 0)) ||
		f.DetailKey != "k3" || f.Hostname != "pc-x" {
		t.Errorf("failure %+v", f)
	}
	if _, ok := b.failure("t-x", ivs[3:]); ok {
		t.Error("a failure that ended as the period began is in it")
	}
	// Recovered: the reason is the last failure's.
	f, _ = b.failure("t-x", ivs[:2])
	if f.FailingAtEnd || f.DetailKey != "k2" || f.FailedSeconds != 13*3600 {
		t.Errorf("failure %+v", f)
	}
}
