package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAuditRequest(t *testing.T) {
	h := newHarness()
	r := h.run(t, "audit", "list", "--limit", "10000", "--before-id", "4", "--since", "2026-04-01", "--until", "2026-04-30", "--action", "exemption.")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := h.fake.lastAudit
	// Days are in the local time zone (JST in tests); --until includes its
	// day.
	since := time.Date(2026, 4, 1, 0, 0, 0, 0, testLoc)
	until := time.Date(2026, 5, 1, 0, 0, 0, 0, testLoc)
	// --limit is counted by the CLI over the pages, each of at most 1000.
	if got.GetLimit() != 0 || got.GetPageSize() != 1000 || got.GetBeforeId() != 4 || got.GetAction() != "exemption." ||
		!got.GetSince().AsTime().Equal(since) || !got.GetUntil().AsTime().Equal(until) {
		t.Errorf("request %v; want since %v, until %v", got, since, until)
	}
	if n := strings.Count(r.stdout, "\n"); n != 2 {
		t.Errorf("want a header and entry 3, got %d lines:\n%s", n, r.stdout)
	}

	h = newHarness()
	if r := h.run(t, "audit", "list", "--since", "2026-04-30T12:00:00Z", "--until", "2026-04-30T22:00:00+09:00"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got = h.fake.lastAudit
	if !got.GetSince().AsTime().Equal(time.Date(2026, 4, 30, 12, 0, 0, 0, time.UTC)) ||
		!got.GetUntil().AsTime().Equal(time.Date(2026, 4, 30, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("RFC 3339 request %v", got)
	}

	h = newHarness()
	h.run(t, "audit", "list")
	if got := h.fake.lastAudit; got.GetLimit() != 0 || got.GetBeforeId() != 0 || got.GetSince() != nil || got.GetUntil() != nil || got.GetAction() != "" {
		t.Errorf("default request %v", got)
	}
}

// TestAuditVerifyBroken checks that a broken chain fails in every format:
// exit status 1 and a line naming the entry; JSON and CSV print the verdict
// too.
func TestAuditVerifyBroken(t *testing.T) {
	broken := func(h *harness) {
		h.fake.verify = &mnguardv1.VerifyAuditResponse{
			Ok: false, Entries: 4, HeadId: 4, HeadHash: h.fake.audit[0].GetHash(),
			BrokenAt: 3, Reason: "hash does not follow from entry 2\x1b[2J",
		}
	}
	const wantErr = "mnguardctl: audit log broken at entry 3: hash does not follow from entry 2?[2J (4 entries verified, head 4)\n"

	h := newHarness()
	broken(h)
	r := h.run(t, "audit", "verify")
	if r.code != 1 || r.stderr != wantErr || r.stdout != "" {
		t.Errorf("table: exit %d, stdout %q, stderr %q; want 1, nothing, %q", r.code, r.stdout, r.stderr, wantErr)
	}

	h = newHarness()
	broken(h)
	r = h.run(t, "audit", "verify", "-o", "json")
	if r.code != 1 || r.stderr != wantErr {
		t.Errorf("json: exit %d, stderr %q", r.code, r.stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if v["ok"] != false || v["broken_at"] != "3" || v["reason"] != "hash does not follow from entry 2\x1b[2J" {
		t.Errorf("json verdict %v", v)
	}

	h = newHarness()
	broken(h)
	r = h.run(t, "audit", "verify", "-o", "csv")
	if r.code != 1 || r.stderr != wantErr {
		t.Errorf("csv: exit %d, stderr %q", r.code, r.stderr)
	}
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, r.stdout)
	}
	fields := map[string]string{}
	for _, row := range rows[1:] {
		fields[row[0]] = row[1]
	}
	if fields["ok"] != "false" || fields["broken_at"] != "3" || fields["head_hash"] == "" || strings.Contains(fields["reason"], "\x1b") {
		t.Errorf("csv verdict %v", fields)
	}

	// An intact chain succeeds.
	if r := newHarness().run(t, "audit", "verify"); r.code != 0 || !strings.HasPrefix(r.stdout, "Audit log:  intact") {
		t.Errorf("intact: exit %d, stdout %q", r.code, r.stdout)
	}
	// An empty log is intact.
	h = newHarness()
	h.fake.verify = &mnguardv1.VerifyAuditResponse{Ok: true}
	if r := h.run(t, "audit", "verify"); r.code != 0 || !strings.Contains(r.stdout, "Head ID:    none: the log is empty\n") {
		t.Errorf("empty: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestReportRequest(t *testing.T) {
	for _, tt := range []struct {
		args         []string
		env          string // MNGUARD_OUTPUT
		format, lang string
		prefix       string
	}{
		{nil, "", "html", "", "<!DOCTYPE html>\n<html lang=\"ja\">"},
		{[]string{"-o", "html", "--lang", "en"}, "", "html", "en", "<!DOCTYPE html>\n<html lang=\"en\">"},
		{[]string{"-o", "CSV"}, "", "csv", "", "section,item,value\n"},
		{[]string{"--output=json"}, "", "json", "", `{"from":"2026-04-01"`},
		// MNGUARD_OUTPUT says how to print lists, not which document.
		{nil, "table", "html", "", "<!DOCTYPE html>"},
		{nil, "csv", "html", "", "<!DOCTYPE html>"},
	} {
		h := newHarness()
		if tt.env != "" {
			h.env["MNGUARD_OUTPUT"] = tt.env
		}
		args := append([]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2027-04-02"}, tt.args...)
		r := h.run(t, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		got := h.fake.lastReport
		if got.GetFrom() != "2026-04-01" || got.GetTo() != "2027-04-02" || got.GetFormat() != tt.format || got.GetLanguage() != tt.lang {
			t.Errorf("%v: request %v; want format %q, language %q", args, got, tt.format, tt.lang)
		}
		if !strings.HasPrefix(r.stdout, tt.prefix) {
			t.Errorf("%v: stdout %q, want the document", args, r.stdout)
		}
	}
}

func TestReportOutFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.csv")
	h := newHarness()
	r := h.run(t, "reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "-o", "csv", "--out", path)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if want := "wrote the self-inspection report for 2026-04-01..2026-04-30 to " + path + " (csv, 54 B)\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "section,item,value\nperiod,days,2026-04-01..2026-04-30\n"; string(b) != want {
		t.Errorf("file holds %q, want %q", b, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	// Never overwritten; the server is not asked.
	h = newHarness()
	r = h.run(t, "reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "--out", path)
	if r.code != 1 || r.stderr != "mnguardctl: --out "+path+": file exists; reports are never overwritten\n" || h.fake.lastReport != nil {
		t.Errorf("existing --out: exit %d, stderr %q, asked %v", r.code, r.stderr, h.fake.lastReport != nil)
	}
	// Nor is a file left behind when the server refuses.
	path = filepath.Join(t.TempDir(), "refused.html")
	h = newHarness()
	h.fake.reportErr = status.Error(codes.Unimplemented, "reports are not configured on this collector")
	r = h.run(t, "reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "--out", path)
	if r.code != 1 || !strings.Contains(r.stderr, "get self-inspection report: server collector.test:8443 does not support this request") {
		t.Errorf("refused: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("a failed request left %s behind", path)
	}
}

func TestTerminalsRequest(t *testing.T) {
	h := newHarness()
	r := h.run(t, "terminals", "list", "--state", "non-compliant", "--check", "mfa", "--search", "  MN-PC ", "--sort", "last_seen", "--desc", "--limit", "100000", "--offset", "0")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := h.fake.lastTerminals
	if got.GetState() != "non-compliant" || got.GetFailingCheck() != "mfa" || got.GetSearch() != "MN-PC" || got.GetSort() != "last_seen" ||
		!got.GetDescending() || got.GetLimit() != 0 || got.GetPageSize() != 1000 || got.GetOffset() != 0 {
		t.Errorf("request %v", got)
	}
	if n := strings.Count(r.stdout, "\n"); n != 2 || !strings.Contains(r.stdout, "non-compliant: mfa, version") {
		t.Errorf("want a header and mn-pc-01:\n%s", r.stdout)
	}

	h = newHarness()
	h.run(t, "terminals", "list")
	if got := h.fake.lastTerminals; got.GetState() != "" || got.GetFailingCheck() != "" || got.GetSearch() != "" || got.GetSort() != "" ||
		got.GetDescending() || got.GetLimit() != 0 || got.GetOffset() != 0 {
		t.Errorf("default request %v", got)
	}

	// The table says when it shows a page, and no more than that.
	for _, tt := range []struct {
		args   []string
		footer string
	}{
		{[]string{"--limit", "2"}, "terminals 1 to 2 of 3 (--offset and --limit show others)\n"},
		{[]string{"--offset", "5"}, "none at offset 5: 3 terminals match\n"},
		{[]string{"--limit", "3"}, ""},
		{[]string{"--state", "stale"}, ""},
	} {
		r := newHarness().run(t, append([]string{"terminals", "list"}, tt.args...)...)
		lines := strings.SplitAfter(r.stdout, "\n")
		last := lines[len(lines)-2]
		if tt.footer == "" && !strings.HasPrefix(last, termID1[:8]) && !strings.HasPrefix(last, termID3[:8]) || tt.footer != "" && last != tt.footer {
			t.Errorf("%v: last line %q, want %q", tt.args, last, tt.footer)
		}
	}
	if r := newHarness().run(t, "terminals", "list", "--offset", "1", "-o", "csv"); strings.Contains(r.stdout, "of 3") {
		t.Errorf("CSV has a footer:\n%s", r.stdout)
	}
}

func TestComplianceText(t *testing.T) {
	for _, tt := range []struct {
		c    *mnguardv1.Compliance
		want string
	}{
		{nil, "not evaluated"},
		{&mnguardv1.Compliance{State: "compliant", Checks: []*mnguardv1.CheckResult{{Name: "media", Status: "pass"}, {Name: "network", Status: "unknown"}}}, "compliant"},
		{&mnguardv1.Compliance{State: "non-compliant", Checks: []*mnguardv1.CheckResult{{Name: "media", Status: "fail"}, {Name: "mfa", Status: "fail"}}}, "non-compliant: media, mfa"},
		{&mnguardv1.Compliance{State: "stale", Offline: true, Checks: []*mnguardv1.CheckResult{{Name: "fresh", Status: "fail"}}}, "stale (offline): fresh"},
	} {
		if got := complianceText(tt.c); got != tt.want {
			t.Errorf("complianceText(%v) = %q, want %q", tt.c, got, tt.want)
		}
	}
	// Not evaluated yet: a table says so, CSV leaves the columns empty.
	h := newHarness()
	h.fake.terminals = h.fake.terminals[:1]
	h.fake.terminals[0].Compliance = nil
	if r := h.run(t, "terminals", "list"); !strings.Contains(r.stdout, "  not evaluated  ") {
		t.Errorf("table:\n%s", r.stdout)
	}
	if r := h.run(t, "terminals", "show", termID1); !strings.Contains(r.stdout, "\nCompliance:                 not evaluated yet\n") {
		t.Errorf("show:\n%s", r.stdout)
	}
	if r := h.run(t, "terminals", "list", "-o", "csv"); !strings.HasSuffix(r.stdout, ",,,,,,,,,,\n") {
		t.Errorf("csv:\n%s", r.stdout)
	}
}

func TestEventsFilters(t *testing.T) {
	h := newHarness()
	r := h.run(t, "events", "list", "--type", "media.", "--since", "2026-04-30T10:00:00+09:00", "--until", "2026-04-30")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := h.fake.lastEvents
	if got.GetType() != "media." || !got.GetSince().AsTime().Equal(time.Date(2026, 4, 30, 1, 0, 0, 0, time.UTC)) ||
		!got.GetUntil().AsTime().Equal(time.Date(2026, 5, 1, 0, 0, 0, 0, testLoc)) {
		t.Errorf("request %v", got)
	}
	for _, typ := range []string{"media.attached", "login", "agent.start", "a.b_c.d"} {
		h := newHarness()
		if r := h.run(t, "events", "list", "--type", typ); r.code != 0 || h.fake.lastEvents.GetType() != typ {
			t.Errorf("--type %s: exit %d, %s", typ, r.code, r.stderr)
		}
	}
	h = newHarness()
	h.run(t, "events", "list")
	if got := h.fake.lastEvents; got.GetType() != "" || got.GetSince() != nil || got.GetUntil() != nil {
		t.Errorf("default request %v", got)
	}
}

// TestFilterUsageErrors checks the new filter flags: exit status 2, a line
// that names the flag, and nothing asked of the server.
func TestFilterUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"terminals", "list", "--state", "broken"}, `terminals list: invalid --state "broken": want compliant, non-compliant, stale or revoked`},
		{[]string{"terminals", "list", "--state", "Compliant"}, `terminals list: invalid --state "Compliant": want compliant, non-compliant, stale or revoked`},
		{[]string{"terminals", "list", "--check", "usb"}, `terminals list: invalid --check "usb": want media, mfa, network, fresh, version, certificate or exemptions`},
		{[]string{"terminals", "list", "--sort", "name"}, `terminals list: invalid --sort "name": want hostname, state, last_seen, agent_version or enrolled`},
		{[]string{"terminals", "list", "--limit", "0"}, `terminals list: invalid --limit "0": want a whole number from 1 to 100000`},
		{[]string{"terminals", "list", "--limit", "100001"}, `terminals list: invalid --limit "100001": want a whole number from 1 to 100000`},
		{[]string{"terminals", "list", "--offset", "-1"}, `terminals list: invalid --offset "-1": want a whole number from 0 to 10000000`},
		{[]string{"terminals", "list", "--offset", "ten"}, `terminals list: invalid --offset "ten": want a whole number from 0 to 10000000`},
		{[]string{"terminals", "list", "--search", strings.Repeat("x", 129)}, "terminals list: invalid --search: longer than 128 bytes"},
		{[]string{"terminals", "list", "--search", "a\x1bb"}, "terminals list: invalid --search: contains a control character"},
		{[]string{"terminals", "list", "--desc=maybe"}, "bad command line: invalid boolean value"},
		{[]string{"terminals", "show", termID1, "--state", "stale"}, "terminals show: flag --state does not apply"},
		{[]string{"events", "list", "--type", "Media.attached"}, `events list: invalid --type "Media.attached": want an event type such as media.attached, or a prefix ending in a dot such as media.`},
		{[]string{"events", "list", "--type", "media..attached"}, `events list: invalid --type "media..attached"`},
		{[]string{"events", "list", "--type", "media.*"}, `events list: invalid --type "media.*"`},
		{[]string{"events", "list", "--since", "yesterday"}, `events list: invalid --since "yesterday": want a time such as 2026-05-01T09:00:00+09:00 (RFC 3339) or a day such as 2026-05-01`},
		{[]string{"events", "list", "--since", "2026-05-01 09:00"}, `events list: invalid --since "2026-05-01 09:00": want a time`},
		{[]string{"events", "list", "--until", "2026-02-30"}, `events list: invalid --until "2026-02-30": no such day`},
		{[]string{"events", "list", "--until", "1969-12-31"}, `events list: invalid --until "1969-12-31": out of range`},
		{[]string{"events", "list", "--since", "2026-05-02", "--until", "2026-05-01"}, `events list: --since "2026-05-02" is not before --until "2026-05-01": the period is empty`},
		{[]string{"events", "list", "--since", "2026-05-01T10:00:00+09:00", "--until", "2026-05-01T01:00:00Z"}, `events list: --since "2026-05-01T10:00:00+09:00" is not before --until "2026-05-01T01:00:00Z": the period is empty`},
		{[]string{"audit", "list", "--limit", "0"}, `audit list: invalid --limit "0": want a whole number from 1 to 10000`},
		{[]string{"audit", "list", "--limit", "10000001"}, `audit list: invalid --limit "10000001": want a whole number from 1 to 10000000`},
		{[]string{"audit", "list", "--page-size", "1001"}, `audit list: invalid --page-size "1001": want a whole number from 1 to 1000`},
		{[]string{"terminals", "list", "--page-size", "0"}, `terminals list: invalid --page-size "0": want a whole number from 1 to 1000`},
		{[]string{"audit", "list", "--before-id", "0"}, `audit list: invalid --before-id "0": want a whole number from 1 to 9223372036854775807`},
		{[]string{"audit", "list", "--before-id", "9223372036854775808"}, `audit list: invalid --before-id "9223372036854775808"`},
		{[]string{"audit", "list", "--action", strings.Repeat("a", 65)}, "audit list: invalid --action: longer than 64 bytes"},
		{[]string{"audit", "list", "--since", "2026-13-01"}, `audit list: invalid --since "2026-13-01": no such day`},
		{[]string{"audit", "list", "--until", "2026-04-30", "--since", "2026-05-01"}, `audit list: --since "2026-05-01" is not before --until "2026-04-30"`},
		{[]string{"audit", "verify", "--limit", "5"}, "audit verify: flag --limit does not apply"},
		{[]string{"audit"}, "audit: missing subcommand: want list or verify"},
		{[]string{"reports", "self-inspection", "--to", "2026-04-30"}, "reports self-inspection: --from is required"},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01"}, "reports self-inspection: --to is required"},
		{[]string{"reports", "self-inspection", "--from", "2026/04/01", "--to", "2026-04-30"}, `reports self-inspection: invalid --from "2026/04/01": want a day such as 2026-05-01`},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01T00:00:00Z", "--to", "2026-04-30"}, `reports self-inspection: invalid --from "2026-04-01T00:00:00Z": want a day`},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-31"}, `reports self-inspection: invalid --to "2026-04-31": no such day`},
		{[]string{"reports", "self-inspection", "--from", "2026-04-30", "--to", "2026-04-01"}, "reports self-inspection: --to 2026-04-01 is before --from 2026-04-30"},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2027-04-03"}, "reports self-inspection: the period from 2026-04-01 to 2027-04-03 is 368 days, longer than 367"},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "--lang", "fr"}, `reports self-inspection: invalid --lang "fr": want ja or en`},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "-o", "table"}, `reports self-inspection: invalid output format "table" from --output: want html, csv or json`},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "-o", "pdf"}, `reports self-inspection: invalid output format "pdf" from --output: want html, csv or json`},
		{[]string{"terminals", "list", "-o", "html"}, `invalid output format "html" from --output: want table, json or csv`},
		{[]string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "--qr", "x.png"}, "reports self-inspection: flag --qr does not apply"},
	} {
		h := newHarness()
		r := h.run(t, tt.args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "mnguardctl: "+tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
		if h.cfg != nil {
			t.Errorf("%q: dialed despite a usage error", tt.args)
		}
	}
}

// TestTimeRangeDays checks the days of --since and --until in another time
// zone: midnight there, and --until includes its day.
func TestTimeRangeDays(t *testing.T) {
	loc := time.FixedZone("UTC-5", -5*60*60)
	opts, _, err := parseArgs([]string{"--since", "2026-03-08", "--until", "2026-03-08"})
	if err != nil {
		t.Fatal(err)
	}
	inv := &invocation{app: &app{loc: loc}, cmd: &command{name: "events list"}, opts: opts}
	since, until, err := inv.timeRange()
	if err != nil {
		t.Fatal(err)
	}
	wantSince, wantUntil := time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 5, 0, 0, 0, time.UTC)
	if !since.AsTime().Equal(wantSince) || !until.AsTime().Equal(wantUntil) {
		t.Errorf("since %v, until %v; want %v, %v", since.AsTime(), until.AsTime(), wantSince, wantUntil)
	}
}
