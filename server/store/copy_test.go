package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// copyTables are the tables the fixture of the copy tests fills; a table
// added by a later migration is copied all the same (Copy reads the
// catalog), and the test says it has no rows in the fixture.
var copyTables = []string{
	"audit_log", "certificates", "compliance_daily", "compliance_intervals", "enrollment_tokens", "events",
	"exemptions", "hardware_tokens", "network_policy", "operator_tokens", "operators", "posture_history",
	"postures", "recovery_codes", "server_events", "terminal_compliance", "terminals", "users", "web_sessions",
}

// copyEvents is the number of agent events in the fixture: more than one
// INSERT of the events table holds (copyArrayRows on PostgreSQL,
// copyBatchParams / its columns on SQLite).
const copyEvents = 5000

// openSQLiteSource opens an SQLite store in a temporary directory with the
// test sealer, as the collector would.
func openSQLiteSource(tb testing.TB) (*DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "mnguard.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if _, err := s.SetKeySealer(context.Background(), newTestSealer(tb, 1)); err != nil {
		tb.Fatal(err)
	}
	return s, path
}

// openCopyTarget opens an empty store on a fresh PostgreSQL database.
func openCopyTarget(tb testing.TB) *DB {
	tb.Helper()
	s, err := Open(context.Background(), testenv.Postgres(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// fillInstallation writes through the store's API every kind of row an
// installation holds.
func fillInstallation(tb testing.TB, s *DB) {
	tb.Helper()
	ctx := context.Background()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	for i := 1; i <= 5; i++ {
		enroll(tb, s, fmt.Sprintf("t%d", i), fmt.Sprintf("pc-%d", i))
	}
	must(s.RevokeTerminal(ctx, "t5", "lost", t0.Add(time.Hour), tAudit))
	// Postures (two fingerprints for t1: two history rows) and events.
	seq := map[string]uint64{}
	for i := range copyEvents / 50 {
		id := fmt.Sprintf("t%d", i%4+1)
		at := t0.Add(time.Duration(i) * time.Minute)
		r := Report{TerminalID: id, ReceivedAt: at, Posture: []byte(fmt.Sprintf("posture %s %d", id, i/8)), CollectedAt: at.Add(-time.Second),
			Fingerprint: hashOf(fmt.Sprintf("%s/%d", id, i/8))}
		for range 50 {
			seq[id]++
			r.Events = append(r.Events, Event{Seq: seq[id], Time: at, Type: "media.write_blocked", Severity: 2,
				Message: fmt.Sprintf("blocked %d — 書き込み禁止", seq[id]), Data: []byte{byte(seq[id]), 0, 0xff}})
		}
		_, err := s.SaveReport(ctx, r)
		must(err)
	}
	must(s.AddServerEvent(ctx, ServerEvent{TerminalID: "t1", Time: t0, Type: "login.verify", Severity: 1, Message: "ok", Data: []byte{1}}))
	createUser(tb, s, "alice", codes("alice", 3))
	_, err := s.ImportTokens(ctx, TokenImport{Unassigned: []HardwareToken{newToken("T1")}}, importAudit())
	must(err)
	createOperator(tb, s, "helpdesk1", RoleHelpdesk)
	signIn(tb, s, "helpdesk1", "s1", t0)
	must(s.CreateOperatorToken(ctx, OperatorToken{ID: "k1", Name: "helpdesk1", Hash: hashOf("api-k1"), CreatedAt: t0, Note: "cli"}, tAudit))
	must(s.CreateExemption(ctx, newExemption("ex1", "t1", t0, time.Hour), tAudit))
	must(s.CreateExemption(ctx, offlineExemption("ex2", "t2", "CHAL-1", t0), tAudit))
	c1 := verdict("t1", NonCompliant, t0, CheckMedia)
	must(s.SaveCompliance(ctx, []ComplianceUpdate{
		{Compliance: c1, Opened: []CheckResult{c1.Check(CheckMedia)}, Event: &ServerEvent{Type: "compliance.changed", Message: "x"}},
		{Compliance: verdict("t2", Compliant, t0)},
	}))
	must(s.SaveComplianceDay(ctx, ComplianceDay{Day: "2025-04-01", Compliant: 3, NonCompliant: 1, Stale: 1,
		Failing: map[string]int{CheckMedia: 1}, UpdatedAt: t0}))
	_, _, err = s.SetNetworkPolicy(ctx, NetworkPolicy{Policy: []byte{0x12, 0x01, 'a'}, Version: "n-00000001", UpdatedAt: t0, UpdatedBy: "admin"}, "",
		func(NetworkPolicy, bool) AuditEntry { return tAudit })
	must(err)
	for i := range 3 {
		_, err := s.AppendAudit(ctx, AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), Actor: "admin", Action: "test.note", Target: "監査", Detail: fmt.Sprint(i)})
		must(err)
	}
}

// tableCounts reads every table's row count.
func tableCounts(tb testing.TB, s *DB) map[string]int64 {
	tb.Helper()
	ctx := context.Background()
	tables, err := copySchemaTables(ctx, s.r, s.Dialect())
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int64{}
	for name := range tables {
		var n int64
		if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+copyQuote(name)).Scan(&n); err != nil {
			tb.Fatal(err)
		}
		out[name] = n
	}
	return out
}

// TestCopyToPostgres: an SQLite installation with every kind of row,
// copied to a real PostgreSQL database: the same rows in every table, the
// audit chain intact with the same head, what the API reads back equal,
// the identity sequences past the copied rows, and a second copy into the
// now full target refused.
func TestCopyToPostgres(t *testing.T) {
	ctx := context.Background()
	src, _ := openSQLiteSource(t)
	fillInstallation(t, src)
	dst := openCopyTarget(t)
	testCopy(t, dst, src)

	// The offline keys were copied sealed, byte for byte: they open
	// under the same key, and another key is refused.
	if _, err := dst.SetKeySealer(ctx, newTestSealer(t, 2)); !errors.Is(err, ErrKeySealer) {
		t.Errorf("another key opens the copied offline keys: %v", err)
	}
	if _, err := dst.SetKeySealer(ctx, newTestSealer(t, 1)); err != nil {
		t.Fatal(err)
	}
	if k, err := dst.OfflineKey(ctx, "t3"); err != nil || string(k) != "key-t3" {
		t.Errorf("offline key of t3 on the target: %q, %v", k, err)
	}
}

// TestCopySQLite: the copy is dialect-neutral; SQLite to SQLite runs the
// same checks without PostgreSQL.
func TestCopySQLite(t *testing.T) {
	src, _ := openSQLiteSource(t)
	fillInstallation(t, src)
	dst, _ := openSQLiteSource(t)
	testCopy(t, dst, src)
}

func testCopy(t *testing.T, dst, src *DB) {
	ctx := context.Background()
	var calls []string
	rep, err := Copy(ctx, dst, src, func(table string, n int64) {
		if len(calls) == 0 || calls[len(calls)-1] != table {
			calls = append(calls, table)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := tableCounts(t, src)
	got := tableCounts(t, dst)
	for _, name := range copyTables {
		if want[name] == 0 {
			t.Errorf("the fixture holds no row of %s: fill it too", name)
		}
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d rows copied, source has %d", name, got[name], n)
		}
		if !slices.Contains(copyTables, name) && n == 0 {
			t.Logf("table %s (a newer migration) is empty in the fixture", name)
		}
	}
	if want["events"] != copyEvents {
		t.Errorf("source holds %d events, want %d", want["events"], copyEvents)
	}
	var sum int64
	for _, tc := range rep.Tables {
		if tc.Source != want[tc.Table] || tc.Target != want[tc.Table] {
			t.Errorf("report %+v, source has %d", tc, want[tc.Table])
		}
		sum += tc.Target
	}
	if len(rep.Tables) != len(want) || rep.Rows != sum {
		t.Errorf("report names %d tables and %d rows; %d tables, %d rows", len(rep.Tables), rep.Rows, len(want), sum)
	}
	// Referenced tables come first.
	pos := func(name string) int {
		return slices.IndexFunc(rep.Tables, func(tc TableCount) bool { return tc.Table == name })
	}
	for _, ref := range [][2]string{{"enrollment_tokens", "terminals"}, {"terminals", "events"}, {"terminals", "certificates"},
		{"users", "recovery_codes"}, {"operators", "web_sessions"}} {
		if pos(ref[0]) > pos(ref[1]) {
			t.Errorf("%s copied after %s, which references it", ref[0], ref[1])
		}
	}
	if len(calls) == 0 || !slices.Contains(calls, "events") {
		t.Errorf("progress named %v", calls)
	}

	// The audit chain verifies on the target and ends where the source's does.
	if err := dst.VerifyAuditChain(ctx); err != nil {
		t.Fatal(err)
	}
	sh, err := src.AuditLog(ctx, 1)
	if err != nil || len(sh) != 1 {
		t.Fatal(sh, err)
	}
	if !bytes.Equal(rep.AuditHead, sh[0].Hash) || rep.AuditEntries != sh[0].ID || rep.AuditEntries != want["audit_log"] {
		t.Errorf("report: audit %d entries ending %x; source %d ending %x", rep.AuditEntries, rep.AuditHead, sh[0].ID, sh[0].Hash)
	}

	// Spot checks through the API.
	ts, err := dst.Terminals(ctx)
	if err != nil || len(ts) != 5 || ts[4].ID != "t5" || ts[4].State != StateRevoked || ts[4].RevokeReason != "lost" || ts[0].Hostname != "pc-1" {
		t.Errorf("terminals on the target: %+v, %v", ts, err)
	}
	for _, id := range []string{"t1", "t4"} {
		a, _ := src.Events(ctx, id, 10000)
		b, err := dst.Events(ctx, id, 10000)
		if err != nil || len(a) != len(b) || len(a) < copyEvents/4 {
			t.Fatalf("%s: %d events on the source, %d on the target (%v)", id, len(a), len(b), err)
		}
		for i := range a {
			x, y := a[i], b[i]
			if x.Seq != y.Seq || x.Type != y.Type || x.Message != y.Message || !bytes.Equal(x.Data, y.Data) || !x.Time.Equal(y.Time) || !x.ReceivedAt.Equal(y.ReceivedAt) {
				t.Fatalf("%s event %d: source %+v, target %+v", id, i, x, y)
			}
		}
	}
	if p, at, err := dst.LatestPosture(ctx, "t2"); err != nil || !strings.HasPrefix(string(p), "posture t2 ") || at.IsZero() {
		t.Errorf("posture of t2: %q %v %v", p, at, err)
	}
	if u, err := dst.User(ctx, "alice"); err != nil || sameUser(u, mustUser(t, src, "alice")) != nil {
		t.Errorf("user alice: %+v, %v", u, err)
	}
	if k, err := dst.OperatorTokenByHash(ctx, hashOf("api-k1")); err != nil || k.Name != "helpdesk1" || k.Role != RoleHelpdesk {
		t.Errorf("operator token: %+v, %v", k, err)
	}
	if _, o, err := dst.SessionByHash(ctx, hashOf("session-s1")); err != nil || o.Name != "helpdesk1" {
		t.Errorf("web session: %+v, %v", o, err)
	}
	for _, id := range []string{"ex1", "ex2"} {
		a, _ := src.Exemption(ctx, id)
		b, err := dst.Exemption(ctx, id)
		if err != nil || sameExemption(b, a) != nil {
			t.Errorf("exemption %s: %+v, %v", id, b, err)
		}
	}
	if c, err := dst.TerminalCompliance(ctx, "t1"); err != nil || sameCompliance(c, verdict("t1", NonCompliant, t0, CheckMedia)) != nil {
		t.Errorf("compliance of t1: %+v, %v", c, err)
	}
	if p, err := dst.NetworkPolicy(ctx); err != nil || p.Version != "n-00000001" || !bytes.Equal(p.Policy, []byte{0x12, 0x01, 'a'}) {
		t.Errorf("network policy: %+v, %v", p, err)
	}

	// New rows on the target continue after the copied ones: no
	// identity collides, the audit chain goes on.
	nh := count(t, dst, `SELECT COUNT(*) FROM posture_history`)
	if _, err := dst.SaveReport(ctx, Report{TerminalID: "t1", ReceivedAt: t0.Add(48 * time.Hour), Posture: []byte("new"), Fingerprint: hashOf("new")}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, dst, `SELECT COUNT(*) FROM posture_history`); n != nh+1 {
		t.Errorf("posture history %d rows after a new posture, want %d", n, nh+1)
	}
	if err := dst.AddServerEvent(ctx, ServerEvent{TerminalID: "t2", Time: t0.Add(48 * time.Hour), Type: "after.copy"}); err != nil {
		t.Fatal(err)
	}
	e, err := dst.AppendAudit(ctx, AuditEntry{Time: t0.Add(48 * time.Hour), Actor: "admin", Action: "after.copy"})
	if err != nil || e.ID != sh[0].ID+1 || !bytes.Equal(e.PrevHash, sh[0].Hash) {
		t.Errorf("audit after the copy: %+v, %v", e, err)
	}
	if err := dst.VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}

	// The target holds data now: a second copy is refused and changes
	// nothing.
	before := tableCounts(t, dst)
	if _, err := Copy(ctx, dst, src, nil); !errors.Is(err, ErrTargetNotEmpty) {
		t.Errorf("copy into a full target: %v, want ErrTargetNotEmpty", err)
	}
	if after := tableCounts(t, dst); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused copy changed the target: %v, was %v", after, before)
	}
}

// TestCopyInterrupted: a copy cancelled half-way (in the middle of the
// events) leaves the PostgreSQL target empty, and the same copy run again
// succeeds.
func TestCopyInterrupted(t *testing.T) {
	ctx := context.Background()
	src, _ := openSQLiteSource(t)
	fillInstallation(t, src)
	dst := openCopyTarget(t)

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var copied []string
	_, err := Copy(cctx, dst, src, func(table string, n int64) {
		copied = append(copied, table)
		if table == "events" {
			cancel()
		}
	})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled copy: %v", err)
	}
	if !slices.Contains(copied, "terminals") {
		t.Fatalf("cancelled before any table was copied (%v): the test proves nothing", copied)
	}
	for name, n := range tableCounts(t, dst) {
		if n != 0 {
			t.Errorf("after the cancelled copy %s holds %d rows", name, n)
		}
	}
	rep, err := Copy(ctx, dst, src, nil)
	if err != nil {
		t.Fatalf("copy again: %v", err)
	}
	if rep.AuditEntries == 0 || rep.Rows < copyEvents {
		t.Errorf("second copy: %+v", rep)
	}
}

// TestCopyRefuses: a target at another schema version, and the source as
// its own target.
func TestCopyRefuses(t *testing.T) {
	ctx := context.Background()
	src, _ := openSQLiteSource(t)
	fillInstallation(t, src)
	if _, err := Copy(ctx, src, src, nil); err == nil || !strings.Contains(err.Error(), "same database") {
		t.Errorf("copy onto itself: %v", err)
	}
	dst := openCopyTarget(t)
	if _, err := dst.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	_, err := Copy(ctx, dst, src, nil)
	if err == nil || !strings.Contains(err.Error(), "target 9999") {
		t.Errorf("copy to a newer schema: %v", err)
	}
	for name, n := range tableCounts(t, dst) {
		if n != 0 {
			t.Errorf("refused copy left %d rows in %s", n, name)
		}
	}
}

// FuzzCopyConvert: whatever value a source column hands back, converting
// it for any target column never panics, and what it accepts keeps the
// kind the column takes.
func FuzzCopyConvert(f *testing.F) {
	f.Add(int64(1), "text", []byte{1, 2}, 1.5, 0)
	f.Add(int64(-3), "42", []byte("x"), 3.0, 1)
	f.Fuzz(func(t *testing.T, i int64, s string, b []byte, fl float64, kind int) {
		kind = ((kind % 5) + 5) % 5
		for _, v := range []any{nil, i, s, b, fl, true} {
			got, err := copyConvert(v, kind)
			if err != nil {
				continue
			}
			switch kind {
			case copyKindInt:
				switch got.(type) {
				case nil, int64, bool:
				default:
					t.Fatalf("%T %v into an integer column gave %T", v, v, got)
				}
			case copyKindBytes:
				if _, ok := got.(string); ok {
					t.Fatalf("%T %v into a binary column gave text", v, v)
				}
			case copyKindText:
				if _, ok := got.([]byte); ok {
					t.Fatalf("%T %v into a text column gave bytes", v, v)
				}
			}
		}
	})
}

// BenchmarkCopyToPostgres: rows a second Copy moves from SQLite into a
// real PostgreSQL database, for an installation of 100,000 events, 2,000
// terminals with a posture each, and their audit entries (env
// MNGUARD_BENCH_COPY_EVENTS changes the number of events).
func BenchmarkCopyToPostgres(b *testing.B) {
	ctx := context.Background()
	events := 100000
	if v := os.Getenv("MNGUARD_BENCH_COPY_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("MNGUARD_BENCH_COPY_EVENTS=%q: want a positive number", v)
		}
		events = n
	}
	src, _ := openSQLiteSource(b)
	const terminals = 2000
	for i := range terminals {
		enroll(b, src, fmt.Sprintf("t%05d", i), fmt.Sprintf("pc-%05d", i))
	}
	seq := map[string]uint64{}
	for i := 0; i < events; i += 500 {
		id := fmt.Sprintf("t%05d", (i/500)%terminals)
		r := Report{TerminalID: id, ReceivedAt: t0.Add(time.Duration(i) * time.Millisecond), Posture: bytes.Repeat([]byte{'p'}, 1000), Fingerprint: hashOf(id)}
		for range min(500, events-i) {
			seq[id]++
			r.Events = append(r.Events, Event{Seq: seq[id], Time: r.ReceivedAt, Type: "media.write_blocked", Severity: 2, Message: "blocked", Data: bytes.Repeat([]byte{1}, 100)})
		}
		if _, err := src.SaveReport(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	for i := range terminals {
		id := fmt.Sprintf("t%05d", i)
		if _, err := src.SaveReport(ctx, Report{TerminalID: id, ReceivedAt: t0.Add(time.Hour), Posture: bytes.Repeat([]byte{'q'}, 1000), Fingerprint: hashOf("q" + id)}); err != nil {
			b.Fatal(err)
		}
	}
	var rows int64
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		dst := openCopyTarget(b)
		b.StartTimer()
		start := time.Now()
		rep, err := Copy(ctx, dst, src, nil)
		if err != nil {
			b.Fatal(err)
		}
		took += time.Since(start)
		rows += rep.Rows
	}
	b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
	b.ReportMetric(float64(rows)/float64(b.N), "rows/copy")
}
