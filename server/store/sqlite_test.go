package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

var jst = time.FixedZone("JST", 9*60*60)

// t0 is a time with nanoseconds in a non-UTC zone: the store must give it
// back Equal.
var t0 = time.Date(2025, 4, 1, 9, 30, 0, 123456789, jst)

// envBackend chooses the database of the store's tests: "sqlite" (unset)
// or "postgres" (a fresh schema on testenv.Postgres's server each).
// make test runs the package with both.
const envBackend = "MNGUARD_STORE_BACKEND"

// testBackend is the backend the tests run on, DialectSQLite or
// DialectPostgres.
func testBackend(tb testing.TB) string {
	switch b := os.Getenv(envBackend); b {
	case "", DialectSQLite:
		return DialectSQLite
	case DialectPostgres:
		return DialectPostgres
	default:
		tb.Fatalf("%s=%q: want sqlite or postgres", envBackend, b)
		return ""
	}
}

// sqliteOnly skips a test about SQLite's files on the PostgreSQL run.
func sqliteOnly(tb testing.TB) {
	tb.Helper()
	if testBackend(tb) != DialectSQLite {
		tb.Skipf("about SQLite's database file; %s=%s", envBackend, os.Getenv(envBackend))
	}
}

// testSQL is q, a test's SQLite statement, for s's dialect: PostgreSQL
// names the table of the trigger to drop.
func testSQL(s *DB, q string) string {
	if s.Dialect() == DialectPostgres && strings.HasPrefix(q, "DROP TRIGGER audit_log_") {
		return q + " ON audit_log"
	}
	return q
}

// openTest opens an empty store on the test backend; the second result is
// what Open opens it again with: the SQLite file's path or the PostgreSQL
// database's DSN.
func openTest(tb testing.TB) (*DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "mnguard.db")
	if testBackend(tb) == DialectPostgres {
		// A schema of its own: creating a database per test took most of
		// the suite's time.
		path = testenv.PostgresSchema(tb)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.SetKeySealer(context.Background(), newTestSealer(tb, 1)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s, path
}

func hashOf(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// count returns the result of a COUNT(*) query.
// failInserts makes every insert into table for which cond (SQL on NEW,
// the same on both backends) holds fail with "injected failure", by a
// trigger named fail_NAME.
func failInserts(tb testing.TB, s *DB, name, table, cond string) {
	tb.Helper()
	trigger := fmt.Sprintf(`CREATE TRIGGER fail_%s BEFORE INSERT ON %s WHEN %s
	BEGIN SELECT RAISE(ABORT, 'injected failure'); END`, name, table, cond)
	if s.Dialect() == DialectPostgres {
		trigger = fmt.Sprintf(`CREATE FUNCTION fail_%[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'injected failure'; END; $$;
	CREATE TRIGGER fail_%[1]s BEFORE INSERT ON %[2]s FOR EACH ROW WHEN (%[3]s)
	EXECUTE FUNCTION fail_%[1]s()`, name, table, cond)
	}
	if _, err := s.w.Exec(trigger); err != nil {
		tb.Fatal(err)
	}
}

func count(tb testing.TB, s *DB, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := s.r.QueryRow(query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

func createToken(tb testing.TB, s *DB, id string, uses int, expires time.Time) []byte {
	tb.Helper()
	h := hashOf("secret-" + id)
	if err := s.CreateEnrollmentToken(context.Background(), EnrollmentToken{
		ID: id, Hash: h, CreatedAt: t0, ExpiresAt: expires, Uses: uses, UsesLeft: uses, CreatedBy: "admin", Note: "test",
	}, tAudit); err != nil {
		tb.Fatal(err)
	}
	return h
}

func usesLeft(tb testing.TB, s *DB, id string) int {
	tb.Helper()
	var n int
	if err := s.r.QueryRow(`SELECT uses_left FROM enrollment_tokens WHERE id = $1`, id).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func serialOf(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

func newTerminal(id, hostname string) (Terminal, Certificate) {
	return Terminal{
			ID: id, Host: []byte("host-" + id), Hostname: hostname, State: StateActive,
			EnrolledAt: t0, OfflineKey: []byte("key-" + id),
		}, Certificate{
			Serial: serialOf(id), TerminalID: id, NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(90 * 24 * time.Hour),
		}
}

// enroll enrolls terminal id with a fresh one-use token.
func enroll(tb testing.TB, s *DB, id, hostname string) Certificate {
	tb.Helper()
	h := createToken(tb, s, "tok-"+id, 1, t0.Add(time.Hour))
	term, cert := newTerminal(id, hostname)
	if err := s.Enroll(context.Background(), h, t0, term, cert); err != nil {
		tb.Fatal(err)
	}
	return cert
}

func TestOpenSQLite(t *testing.T) {
	sqliteOnly(t)
	s, path := openTest(t)
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("database file mode = %v, want 0600", perm)
		}
	}
	var mode string
	if err := s.r.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	var fk int
	if err := s.w.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
	}
	var syncMode int
	if err := s.w.QueryRow(`PRAGMA synchronous`).Scan(&syncMode); err != nil || syncMode != 1 {
		t.Errorf("synchronous = %d, %v; want 1 (NORMAL)", syncMode, err)
	}
	var busy int
	if err := s.w.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != int(busyTimeout.Milliseconds()) {
		t.Errorf("busy_timeout = %d, %v", busy, err)
	}
	// The writer's cache and checkpoint size (a misspelt pragma in the
	// DSN is silently ignored).
	for pragma, want := range map[string]int{"cache_size": -65536, "wal_autocheckpoint": 10000} {
		var got int
		if err := s.w.QueryRow(`PRAGMA ` + pragma).Scan(&got); err != nil || got != want {
			t.Errorf("writer's %s = %d, %v; want %d", pragma, got, err, want)
		}
	}
	var rcache int
	if err := s.r.QueryRow(`PRAGMA cache_size`).Scan(&rcache); err != nil || rcache != -16384 {
		t.Errorf("readers' cache_size = %d, %v; want -16384", rcache, err)
	}
	if _, err := s.r.Exec(`CREATE TABLE x (y TEXT)`); err == nil {
		t.Error("reader pool accepted a write")
	}
	ms, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM schema_migrations`); n != len(ms) || len(ms) < 2 {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(ms))
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Error(err)
	}
	s.Close()
	if err := s.Ping(context.Background()); err == nil {
		t.Error("Ping of a closed store succeeded")
	}
}

func TestOpenSQLiteRejectsNonPaths(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		t.Run(path, func(t *testing.T) {
			t.Chdir(t.TempDir())
			if s, err := OpenSQLite(context.Background(), path); err == nil {
				s.Close()
				t.Fatalf("OpenSQLite(%q) succeeded", path)
			}
		})
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mnguard.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetKeySealer(ctx, newTestSealer(t, 1)); err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "t1", "pc-01")
	if _, err := s.AppendAudit(ctx, AuditEntry{Time: t0, Actor: "admin", Action: "token.create"}); err != nil {
		t.Fatal(err)
	}
	var applied int64
	if err := s.r.QueryRow(`SELECT applied_at FROM schema_migrations WHERE version = 1`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var again int64
	if err := s.r.QueryRow(`SELECT applied_at FROM schema_migrations WHERE version = 1`).Scan(&again); err != nil {
		t.Fatal(err)
	}
	ms, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM schema_migrations`); n != len(ms) || again != applied {
		t.Errorf("after reopen: %d migrations, applied_at %d (was %d): migration re-applied", n, again, applied)
	}
	term, err := s.Terminal(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if term.Hostname != "pc-01" || !term.EnrolledAt.Equal(t0) {
		t.Errorf("after reopen: terminal %+v", term)
	}
	if err := s.VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	m1 := &fstest.MapFile{Data: []byte(`CREATE TABLE a (x TEXT);`)}
	m2 := &fstest.MapFile{Data: []byte(`CREATE TABLE b (x TEXT); INSERT INTO b VALUES ('one');`)}
	bad := &fstest.MapFile{Data: []byte(`CREATE TABLE c (x TEXT); INSERT INTO nowhere VALUES (1);`)}

	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tables := func() []string {
		rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		return names
	}
	versions := func() []int64 {
		rows, err := db.Query(`SELECT version FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var vs []int64
		for rows.Next() {
			var v int64
			rows.Scan(&v)
			vs = append(vs, v)
		}
		return vs
	}
	run := func(fsys fstest.MapFS) error {
		ms, err := loadMigrations(fsys, "m")
		if err != nil {
			return err
		}
		return migrate(ctx, db, ms)
	}

	steps := []struct {
		name       string
		fs         fstest.MapFS
		wantErr    bool
		wantTables []string
		wantVers   []int64
	}{
		{"first", fstest.MapFS{"m/0001_a.sql": m1}, false, []string{"a", "schema_migrations"}, []int64{1}},
		{"same again", fstest.MapFS{"m/0001_a.sql": m1}, false, []string{"a", "schema_migrations"}, []int64{1}},
		{"second only", fstest.MapFS{"m/0001_a.sql": m1, "m/0002_b.sql": m2}, false, []string{"a", "b", "schema_migrations"}, []int64{1, 2}},
		{"failing rolls back", fstest.MapFS{"m/0001_a.sql": m1, "m/0002_b.sql": m2, "m/0003_c.sql": bad}, true, []string{"a", "b", "schema_migrations"}, []int64{1, 2}},
		{"newer database refused", fstest.MapFS{"m/0001_a.sql": m1}, true, []string{"a", "b", "schema_migrations"}, []int64{1, 2}},
		{"bad name", fstest.MapFS{"m/0001_a.sql": m1, "m/2_B.sql": m2}, true, []string{"a", "b", "schema_migrations"}, []int64{1, 2}},
		{"duplicate version", fstest.MapFS{"m/0001_a.sql": m1, "m/01_b.sql": m2}, true, []string{"a", "b", "schema_migrations"}, []int64{1, 2}},
	}
	for _, st := range steps {
		err := run(st.fs)
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: err = %v, want error %v", st.name, err, st.wantErr)
		}
		if got := tables(); !slices.Equal(got, st.wantTables) {
			t.Errorf("%s: tables %v, want %v", st.name, got, st.wantTables)
		}
		if got := versions(); !slices.Equal(got, st.wantVers) {
			t.Errorf("%s: versions %v, want %v", st.name, got, st.wantVers)
		}
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM b`).Scan(&n); err != nil || n != 1 {
		t.Errorf("table b has %d rows (%v), want 1: a migration ran twice", n, err)
	}
}

func TestEnroll(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	h := createToken(t, s, "tok", 2, t0.Add(time.Hour))

	term, cert := newTerminal("t1", "pc-01")
	if err := s.Enroll(ctx, h, t0, term, cert); err != nil {
		t.Fatal(err)
	}
	if n := usesLeft(t, s, "tok"); n != 1 {
		t.Errorf("uses left = %d, want 1", n)
	}
	got, err := s.Terminal(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateActive || got.Hostname != "pc-01" || !bytes.Equal(got.Host, term.Host) ||
		got.OfflineKey != nil || !got.EnrolledAt.Equal(t0) ||
		got.CertSerial != cert.Serial || !got.CertNotAfter.Equal(cert.NotAfter) ||
		!got.LastSeenAt.IsZero() || !got.RevokedAt.IsZero() || got.Posture != nil || got.PostureHistoryCount != 0 {
		t.Errorf("Terminal = %+v", got)
	}
	if got.EnrolledAt.Location() != time.UTC {
		t.Errorf("EnrolledAt in %v, want UTC", got.EnrolledAt.Location())
	}
	if key, err := s.OfflineKey(ctx, "t1"); err != nil || !bytes.Equal(key, term.OfflineKey) {
		t.Errorf("OfflineKey = %q, %v; want %q", key, err, term.OfflineKey)
	}
	c, err := s.Certificate(ctx, cert.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if c.TerminalID != "t1" || !c.NotBefore.Equal(cert.NotBefore) || !c.NotAfter.Equal(cert.NotAfter) || !c.RevokedAt.IsZero() {
		t.Errorf("Certificate = %+v", c)
	}
}

func TestEnrollRefusedStoresNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	live := createToken(t, s, "live", 3, t0.Add(time.Hour))
	expired := createToken(t, s, "expired", 3, t0.Add(-time.Second))
	atNow := createToken(t, s, "at-now", 3, t0)
	exhausted := createToken(t, s, "exhausted", 1, t0.Add(time.Hour))
	first, firstCert := newTerminal("first", "pc-00")
	if err := s.Enroll(ctx, exhausted, t0, first, firstCert); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		hash    []byte
		token   string // whose uses_left must not change
		id      string
		cert    func(*Certificate)
		wantErr error
	}{
		{"unknown token", hashOf("nope"), "live", "t1", nil, ErrTokenUnknown},
		{"empty token", nil, "live", "t1", nil, ErrTokenUnknown},
		{"expired token", expired, "expired", "t1", nil, ErrTokenExpired},
		{"token expiring now", atNow, "at-now", "t1", nil, ErrTokenExpired},
		{"exhausted token", exhausted, "exhausted", "t1", nil, ErrTokenExhausted},
		{"terminal ID taken", live, "live", "first", nil, nil},
		{"serial taken", live, "live", "t1", func(c *Certificate) { c.Serial = firstCert.Serial }, nil},
		{"certificate of another terminal", live, "live", "t1", func(c *Certificate) { c.TerminalID = "t2" }, nil},
		{"serial not hex", live, "live", "t1", func(c *Certificate) { c.Serial = "AB:CD" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			terminals := count(t, s, `SELECT COUNT(*) FROM terminals`)
			certs := count(t, s, `SELECT COUNT(*) FROM certificates`)
			left := usesLeft(t, s, tt.token)
			term, cert := newTerminal(tt.id, "pc-01")
			if tt.cert != nil {
				tt.cert(&cert)
			}
			err := s.Enroll(ctx, tt.hash, t0, term, cert)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("Enroll: %v, want %v", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "store: enroll ") {
				t.Errorf("error %q lacks context", err)
			}
			if n := count(t, s, `SELECT COUNT(*) FROM terminals`); n != terminals {
				t.Errorf("terminals: %d, was %d", n, terminals)
			}
			if n := count(t, s, `SELECT COUNT(*) FROM certificates`); n != certs {
				t.Errorf("certificates: %d, was %d", n, certs)
			}
			if n := usesLeft(t, s, tt.token); n != left {
				t.Errorf("uses left of %s: %d, was %d", tt.token, n, left)
			}
		})
	}
}

func TestEnrollConcurrentNeverOverdraws(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	h := createToken(t, s, "tok", 5, t0.Add(time.Hour))
	var (
		wg                  sync.WaitGroup
		ok, exhausted, fail atomic.Int32
	)
	for i := range 20 {
		wg.Go(func() {
			term, cert := newTerminal(fmt.Sprintf("t%02d", i), "pc")
			switch err := s.Enroll(ctx, h, t0, term, cert); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrTokenExhausted):
				exhausted.Add(1)
			default:
				fail.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 5 || exhausted.Load() != 15 || fail.Load() != 0 {
		t.Errorf("%d enrolled, %d exhausted, %d failed; want 5, 15, 0", ok.Load(), exhausted.Load(), fail.Load())
	}
	if n := usesLeft(t, s, "tok"); n != 0 {
		t.Errorf("uses left = %d", n)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM terminals`); n != 5 {
		t.Errorf("%d terminals, want 5", n)
	}
}

func TestCertificates(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	first := enroll(t, s, "t1", "pc-01")
	enroll(t, s, "gone", "pc-02")
	if err := s.RevokeTerminal(ctx, "gone", "stolen", t0, tAudit); err != nil {
		t.Fatal(err)
	}
	renewed := Certificate{Serial: "0abc", TerminalID: "t1", NotBefore: t0, NotAfter: first.NotAfter.Add(24 * time.Hour)}
	older := Certificate{Serial: "0def", TerminalID: "t1", NotBefore: t0, NotAfter: first.NotAfter.Add(-time.Hour)}

	tests := []struct {
		name    string
		c       Certificate
		wantErr error // nil: any error; ok set: none
		ok      bool
	}{
		{"renewal", renewed, nil, true},
		{"older one", older, nil, true},
		{"unknown terminal", Certificate{Serial: "01", TerminalID: "nobody", NotBefore: t0, NotAfter: t0}, ErrNotFound, false},
		{"revoked terminal", Certificate{Serial: "02", TerminalID: "gone", NotBefore: t0, NotAfter: t0}, ErrRevoked, false},
		{"duplicate serial", renewed, nil, false},
		{"uppercase serial", Certificate{Serial: "0ABC", TerminalID: "t1", NotBefore: t0, NotAfter: t0}, nil, false},
		{"no validity", Certificate{Serial: "03", TerminalID: "t1"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.AddCertificate(ctx, tt.c)
			switch {
			case tt.ok && err != nil:
				t.Fatal(err)
			case !tt.ok && err == nil:
				t.Fatal("AddCertificate succeeded")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}

	term, err := s.Terminal(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if term.CertSerial != renewed.Serial || !term.CertNotAfter.Equal(renewed.NotAfter) {
		t.Errorf("newest certificate = %s %v, want %s %v", term.CertSerial, term.CertNotAfter, renewed.Serial, renewed.NotAfter)
	}
	got, err := s.Certificate(ctx, renewed.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if got.TerminalID != "t1" || !got.NotBefore.Equal(t0) || !got.NotAfter.Equal(renewed.NotAfter) || !got.RevokedAt.IsZero() {
		t.Errorf("Certificate = %+v", got)
	}
	if _, err := s.Certificate(ctx, "ffff"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown serial: %v, want ErrNotFound", err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM certificates WHERE terminal_id = 'gone'`); n != 1 {
		t.Errorf("revoked terminal has %d certificates, want 1", n)
	}
}

func TestRevokeTerminal(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	first := enroll(t, s, "t1", "pc-01")
	second := Certificate{Serial: "0abc", TerminalID: "t1", NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	if err := s.AddCertificate(ctx, second); err != nil {
		t.Fatal(err)
	}
	other := enroll(t, s, "t2", "pc-02")
	revokedAt := t0.Add(time.Hour)

	if err := s.RevokeTerminal(ctx, "t1", "stolen", revokedAt, tAudit); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeTerminal(ctx, "t1", "again", revokedAt.Add(time.Hour), tAudit); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if err := s.RevokeTerminal(ctx, "nobody", "x", revokedAt, tAudit); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown terminal: %v, want ErrNotFound", err)
	}

	term, err := s.Terminal(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if term.State != StateRevoked || !term.RevokedAt.Equal(revokedAt) || term.RevokeReason != "stolen" {
		t.Errorf("revoked terminal: state %q at %v reason %q; want revoked at %v, stolen (the first revoke)",
			term.State, term.RevokedAt, term.RevokeReason, revokedAt)
	}
	for _, serial := range []string{first.Serial, second.Serial} {
		c, err := s.Certificate(ctx, serial)
		if err != nil {
			t.Fatal(err)
		}
		if !c.RevokedAt.Equal(revokedAt) {
			t.Errorf("certificate %s revoked at %v, want %v", serial, c.RevokedAt, revokedAt)
		}
	}
	if c, err := s.Certificate(ctx, other.Serial); err != nil || !c.RevokedAt.IsZero() {
		t.Errorf("other terminal's certificate: %+v, %v", c, err)
	}
	if term, err := s.Terminal(ctx, "t2"); err != nil || term.State != StateActive {
		t.Errorf("other terminal: %+v, %v", term, err)
	}
}

func TestSaveReport(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	ev := func(seq uint64) Event {
		return Event{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Type: "media.blocked", Severity: 2,
			Message: fmt.Sprintf("event %d", seq), Data: []byte{byte(seq)}}
	}

	steps := []struct {
		name         string
		r            Report
		wantStored   []uint64
		wantDup      []uint64
		wantHistory  int
		wantPosture  string
		wantLastSeen time.Time
	}{
		{"first posture", Report{ReceivedAt: t0.Add(1), Posture: []byte("A1"), CollectedAt: t0, Fingerprint: []byte("A"),
			Events: []Event{ev(1), ev(2)}}, []uint64{1, 2}, nil, 1, "A1", t0.Add(1)},
		{"same fingerprint", Report{ReceivedAt: t0.Add(2), Posture: []byte("A2"), CollectedAt: t0, Fingerprint: []byte("A"),
			Events: []Event{ev(2), ev(3)}}, []uint64{3}, []uint64{2}, 1, "A2", t0.Add(2)},
		{"events only", Report{ReceivedAt: t0.Add(3), Events: []Event{ev(4), ev(4), ev(1)}},
			[]uint64{4}, []uint64{4, 1}, 1, "A2", t0.Add(3)},
		{"new fingerprint", Report{ReceivedAt: t0.Add(4), Posture: []byte("B"), CollectedAt: t0, Fingerprint: []byte("B")},
			nil, nil, 2, "B", t0.Add(4)},
		{"back to the first", Report{ReceivedAt: t0.Add(5), Posture: []byte("A3"), CollectedAt: t0, Fingerprint: []byte("A")},
			nil, nil, 3, "A3", t0.Add(5)},
		{"late report keeps last seen and posture", Report{ReceivedAt: t0, Posture: []byte("old"), CollectedAt: t0,
			Fingerprint: []byte("A"), Events: []Event{ev(5)}}, []uint64{5}, nil, 3, "A3", t0.Add(5)},
		{"no fingerprint: hash of bytes", Report{ReceivedAt: t0.Add(6), Posture: []byte("C"), CollectedAt: t0},
			nil, nil, 4, "C", t0.Add(6)},
		{"heartbeat", Report{ReceivedAt: t0.Add(7)}, nil, nil, 4, "C", t0.Add(7)},
	}
	for _, st := range steps {
		st.r.TerminalID = "t1"
		res, err := s.SaveReport(ctx, st.r)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !slices.Equal(res.Stored, st.wantStored) || !slices.Equal(res.Duplicates, st.wantDup) {
			t.Errorf("%s: stored %v duplicates %v, want %v %v", st.name, res.Stored, res.Duplicates, st.wantStored, st.wantDup)
		}
		term, err := s.Terminal(ctx, "t1")
		if err != nil {
			t.Fatal(err)
		}
		if term.PostureHistoryCount != st.wantHistory || string(term.Posture) != st.wantPosture || !term.LastSeenAt.Equal(st.wantLastSeen) {
			t.Errorf("%s: history %d posture %q last seen %v; want %d %q %v", st.name,
				term.PostureHistoryCount, term.Posture, term.LastSeenAt, st.wantHistory, st.wantPosture, st.wantLastSeen)
		}
	}
	if n := count(t, s, `SELECT COUNT(*) FROM events WHERE terminal_id = 't1'`); n != 5 {
		t.Errorf("%d events stored, want 5", n)
	}
	term, err := s.Terminal(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if !term.PostureReceivedAt.Equal(t0.Add(6)) {
		t.Errorf("PostureReceivedAt = %v, want %v", term.PostureReceivedAt, t0.Add(6))
	}
	var collected int64
	if err := s.r.QueryRow(`SELECT collected_at FROM postures WHERE terminal_id = 't1'`).Scan(&collected); err != nil || collected != t0.UnixNano() {
		t.Errorf("collected_at = %d, %v; want %d", collected, err, t0.UnixNano())
	}
	evs, err := s.Events(ctx, "t1", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Event 1 arrived with the first report and was not replaced by its
	// duplicate: all its fields are the first ones.
	i := slices.IndexFunc(evs, func(e Event) bool { return e.Seq == 1 })
	if i < 0 {
		t.Fatalf("event 1 missing from %+v", evs)
	}
	e1, want := evs[i], ev(1)
	if e1.TerminalID != "t1" || e1.Seq != 1 || !e1.Time.Equal(want.Time) || !e1.ReceivedAt.Equal(t0.Add(1)) ||
		e1.Type != want.Type || e1.Severity != want.Severity || e1.Message != want.Message || !bytes.Equal(e1.Data, want.Data) {
		t.Errorf("oldest event = %+v", e1)
	}
}

func TestSaveReportRefusedStoresNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "gone", "pc-01")
	if err := s.RevokeTerminal(ctx, "gone", "stolen", t0, tAudit); err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "t1", "pc-02")
	report := func(id string) Report {
		return Report{TerminalID: id, ReceivedAt: t0, Posture: []byte("P"), CollectedAt: t0, Fingerprint: []byte("F"),
			Events: []Event{{Seq: 1, Time: t0, Type: "x"}}}
	}
	tests := []struct {
		name    string
		r       Report
		wantErr error
	}{
		{"unknown terminal", report("nobody"), ErrNotFound},
		{"revoked terminal", report("gone"), ErrRevoked},
		{"event of another terminal", func() Report {
			r := report("t1")
			r.Events = append(r.Events, Event{TerminalID: "gone", Seq: 2})
			return r
		}(), nil},
		{"seq out of range", func() Report { r := report("t1"); r.Events[0].Seq = 1 << 63; return r }(), nil},
		{"time out of range", func() Report {
			r := report("t1")
			r.CollectedAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
			return r
		}(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.SaveReport(ctx, tt.r)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("SaveReport = %v, %v; want %v", res, err, tt.wantErr)
			}
			if want := "store: save report " + tt.r.TerminalID + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q, want prefix %q", err, want)
			}
			for _, table := range []string{"events", "postures", "posture_history"} {
				if n := count(t, s, `SELECT COUNT(*) FROM `+table); n != 0 {
					t.Errorf("%d rows in %s", n, table)
				}
			}
			if n := count(t, s, `SELECT COUNT(*) FROM terminals WHERE last_seen_at IS NOT NULL`); n != 0 {
				t.Errorf("last_seen_at set on %d terminals", n)
			}
		})
	}
}

func TestSaveReportConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	const (
		workers = 16
		reports = 25
	)
	for i := range workers {
		enroll(t, s, fmt.Sprintf("t%02d", i), "pc")
	}
	enroll(t, s, "shared", "pc")
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			id := fmt.Sprintf("t%02d", i)
			for j := range reports {
				seq := uint64(j + 1)
				if _, err := s.SaveReport(ctx, Report{
					TerminalID: id, ReceivedAt: time.Now(), Posture: []byte("posture"), CollectedAt: t0,
					Fingerprint: []byte{byte(j % 3)}, Events: []Event{{Seq: seq, Time: t0, Type: "t"}},
				}); err != nil {
					t.Error(err)
					return
				}
				// Every worker also sends the same events for one shared terminal.
				if _, err := s.SaveReport(ctx, Report{TerminalID: "shared", ReceivedAt: time.Now(),
					Events: []Event{{Seq: seq, Time: t0, Type: "t"}}}); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Terminal(ctx, id); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := count(t, s, `SELECT COUNT(*) FROM events`); n != workers*reports+reports {
		t.Errorf("%d events, want %d", n, workers*reports+reports)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM posture_history`); n != workers*reports {
		t.Errorf("%d history rows, want %d", n, workers*reports)
	}
}

func TestTerminals(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if ts, err := s.Terminals(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("empty store: %v, %v", ts, err)
	}
	for _, x := range []struct{ id, host string }{{"c", "pc-02"}, {"b", "pc-01"}, {"a", "pc-02"}, {"d", "kiosk"}} {
		enroll(t, s, x.id, x.host)
	}
	if _, err := s.SaveReport(ctx, Report{TerminalID: "a", ReceivedAt: t0, Posture: []byte("P"), CollectedAt: t0, Fingerprint: []byte("F")}); err != nil {
		t.Fatal(err)
	}
	ts, err := s.Terminals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range ts {
		ids = append(ids, x.ID)
		if x.Posture != nil || x.OfflineKey != nil {
			t.Errorf("%s: list carries posture %q or offline key %q", x.ID, x.Posture, x.OfflineKey)
		}
		if x.CertSerial != serialOf(x.ID) || x.State != StateActive || !bytes.Equal(x.Host, []byte("host-"+x.ID)) {
			t.Errorf("%s: %+v", x.ID, x)
		}
	}
	if want := []string{"d", "b", "a", "c"}; !slices.Equal(ids, want) {
		t.Errorf("order %v, want %v", ids, want)
	}
	if a := ts[2]; !a.PostureReceivedAt.Equal(t0) || a.PostureHistoryCount != 1 || !a.LastSeenAt.Equal(t0) {
		t.Errorf("a: %+v", a)
	}
	if _, err := s.Terminal(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown terminal: %v, want ErrNotFound", err)
	}
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	// t1: seqs 1..120 received in batches of 3 at the same time; t2: one event.
	for i := uint64(0); i < 40; i++ {
		r := Report{TerminalID: "t1", ReceivedAt: t0.Add(time.Duration(i) * time.Second)}
		for j := uint64(1); j <= 3; j++ {
			r.Events = append(r.Events, Event{Seq: 3*i + j, Time: t0, Type: "t"})
		}
		if _, err := s.SaveReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SaveReport(ctx, Report{TerminalID: "t2", ReceivedAt: t0.Add(time.Hour),
		Events: []Event{{Seq: 7, Time: t0, Type: "t"}}}); err != nil {
		t.Fatal(err)
	}
	seqs := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			out = append(out, fmt.Sprintf("%s/%d", e.TerminalID, e.Seq))
		}
		return out
	}
	tests := []struct {
		name     string
		terminal string
		limit    int
		wantLen  int
		wantHead []string
	}{
		{"all, default limit", "", 0, 100, []string{"t2/7", "t1/120", "t1/119", "t1/118", "t1/117"}},
		{"all, negative limit", "", -1, 100, []string{"t2/7", "t1/120"}},
		{"one terminal", "t1", 4, 4, []string{"t1/120", "t1/119", "t1/118", "t1/117"}},
		{"one terminal, large limit", "t1", 1000, 120, []string{"t1/120"}},
		{"other terminal", "t2", 10, 1, []string{"t2/7"}},
		{"unknown terminal", "nobody", 10, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := s.Events(ctx, tt.terminal, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			got := seqs(evs)
			if len(got) != tt.wantLen || !slices.Equal(got[:min(len(got), len(tt.wantHead))], tt.wantHead) {
				t.Errorf("got %d events starting %v, want %d starting %v", len(got), got[:min(len(got), 5)], tt.wantLen, tt.wantHead)
			}
		})
	}
}

func TestEnrollmentTokens(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	a := EnrollmentToken{ID: "a", Hash: hashOf("a"), CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Uses: 5, CreatedBy: "admin", Note: "lab"}
	b := EnrollmentToken{ID: "b", Hash: hashOf("b"), CreatedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(time.Hour), Uses: 3, UsesLeft: 2}
	for _, tok := range []EnrollmentToken{a, b} {
		if err := s.CreateEnrollmentToken(ctx, tok, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	bad := []struct {
		name string
		tok  EnrollmentToken
	}{
		{"no ID", EnrollmentToken{Hash: hashOf("x"), ExpiresAt: t0, Uses: 1}},
		{"no hash", EnrollmentToken{ID: "x", ExpiresAt: t0, Uses: 1}},
		{"no expiry", EnrollmentToken{ID: "x", Hash: hashOf("x"), Uses: 1}},
		{"no uses", EnrollmentToken{ID: "x", Hash: hashOf("x"), ExpiresAt: t0}},
		{"more left than uses", EnrollmentToken{ID: "x", Hash: hashOf("x"), ExpiresAt: t0, Uses: 1, UsesLeft: 2}},
		{"duplicate ID", EnrollmentToken{ID: "a", Hash: hashOf("x"), ExpiresAt: t0, Uses: 1}},
		{"duplicate hash", EnrollmentToken{ID: "x", Hash: hashOf("a"), ExpiresAt: t0, Uses: 1}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.CreateEnrollmentToken(ctx, tt.tok, tAudit); err == nil {
				t.Error("CreateEnrollmentToken succeeded")
			}
		})
	}
	ts, err := s.EnrollmentTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.UsesLeft = a.Uses
	want := []EnrollmentToken{b, a}
	if len(ts) != len(want) {
		t.Fatalf("got %d tokens, want %d", len(ts), len(want))
	}
	for i, got := range ts {
		w := want[i]
		if got.ID != w.ID || !bytes.Equal(got.Hash, w.Hash) || !got.CreatedAt.Equal(w.CreatedAt) || !got.ExpiresAt.Equal(w.ExpiresAt) ||
			got.Uses != w.Uses || got.UsesLeft != w.UsesLeft || got.CreatedBy != w.CreatedBy || got.Note != w.Note {
			t.Errorf("token %d = %+v, want %+v", i, got, w)
		}
	}
}

func TestOperatorTokens(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	audit := AuditEntry{Actor: "test", Action: "operator_token.create"}
	for _, o := range []Operator{{Name: "yamada", Role: RoleHelpdesk, CreatedAt: t0}, {Name: "suzuki", Role: RoleAdmin, CreatedAt: t0}} {
		if err := s.CreateOperator(ctx, o, AuditEntry{Actor: "test", Action: "operator.add"}); err != nil {
			t.Fatal(err)
		}
	}
	live := OperatorToken{ID: "o1", Name: "yamada", Role: RoleHelpdesk, Hash: hashOf("o1"), CreatedAt: t0}
	revoked := OperatorToken{ID: "o2", Name: "suzuki", Role: RoleAdmin, Hash: hashOf("o2"), CreatedAt: t0, RevokedAt: t0.Add(time.Hour)}
	if toks, err := s.OperatorTokens(ctx, "yamada"); err != nil || len(toks) != 0 {
		t.Fatalf("tokens of yamada on a new store: %v, %v", toks, err)
	}
	for _, tok := range []OperatorToken{live, revoked} {
		if err := s.CreateOperatorToken(ctx, tok, audit); err != nil {
			t.Fatal(err)
		}
	}
	if toks, err := s.OperatorTokens(ctx, "yamada"); err != nil || len(toks) != 1 || toks[0].ID != live.ID {
		t.Errorf("tokens of yamada = %v, %v; want %s", toks, err, live.ID)
	}
	for _, tok := range []OperatorToken{
		{ID: "x", Name: "nobody", Role: RoleAuditor, Hash: hashOf("x")},
		{ID: "x", Name: "yamada", Role: RoleAuditor},
		{Name: "yamada", Role: RoleAuditor, Hash: hashOf("x")},
		{ID: "o1", Name: "yamada", Role: RoleAuditor, Hash: hashOf("x")},
	} {
		if err := s.CreateOperatorToken(ctx, tok, audit); err == nil {
			t.Errorf("CreateOperatorToken(%+v) succeeded", tok)
		}
	}
	tests := []struct {
		name    string
		hash    []byte
		want    OperatorToken
		wantErr error
	}{
		{"live", live.Hash, live, nil},
		{"revoked", revoked.Hash, OperatorToken{}, ErrRevoked},
		{"unknown", hashOf("nope"), OperatorToken{}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.OperatorTokenByHash(ctx, tt.hash)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got.ID != tt.want.ID || got.Name != tt.want.Name || got.Role != tt.want.Role || !bytes.Equal(got.Hash, tt.want.Hash) ||
				!got.CreatedAt.Equal(tt.want.CreatedAt) || !got.RevokedAt.Equal(tt.want.RevokedAt) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	// The token acts with its operator's role now, and says when the
	// operator is disabled.
	if _, err := s.UpdateOperator(ctx, "yamada", func(o *Operator, _ *AuditEntry) error {
		o.Role, o.DisabledAt = RoleAuditor, t0.Add(time.Hour)
		return nil
	}, AuditEntry{Actor: "test", Action: "operator.set_role"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.OperatorTokenByHash(ctx, live.Hash)
	if err != nil || got.Role != RoleAuditor || !got.OperatorDisabled {
		t.Errorf("after demoting and disabling yamada: %+v, %v", got, err)
	}
	// Tokens go with their operator.
	if err := s.CreateOperator(ctx, Operator{Name: "admin2", Role: RoleAdmin, CreatedAt: t0}, audit); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOperator(ctx, "yamada", AuditEntry{Actor: "test", Action: "operator.delete"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OperatorTokenByHash(ctx, live.Hash); !errors.Is(err, ErrNotFound) {
		t.Errorf("token of a deleted operator: %v, want ErrNotFound", err)
	}
}

func TestAuditHashKnownAnswer(t *testing.T) {
	// Computed independently (Python hashlib) from the encoding documented
	// on AuditHash.
	e := AuditEntry{ID: 1, Time: time.Date(2024, 4, 1, 18, 30, 0, 123456789, jst),
		Actor: "admin", Action: "terminal.revoke", Target: "t-1", Detail: "理由: lost"}
	const want = "d9839ddc4cf35eed066a39569aef20d6ee5c6830aeb31529ffc90149b979c976"
	if got := hex.EncodeToString(AuditHash(auditGenesis, e)); got != want {
		t.Errorf("AuditHash = %s, want %s", got, want)
	}
	// Moving bytes between fields changes the hash.
	e2 := e
	e2.Actor, e2.Action = "admint", "erminal.revoke"
	if bytes.Equal(AuditHash(auditGenesis, e), AuditHash(auditGenesis, e2)) {
		t.Error("field boundaries are not part of the hash")
	}
}

func TestAuditLog(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if err := s.VerifyAuditChain(ctx); err != nil {
		t.Fatalf("empty log: %v", err)
	}
	var appended []AuditEntry
	for i := range 5 {
		e, err := s.AppendAudit(ctx, AuditEntry{Time: t0.Add(time.Duration(i)), Actor: "admin", Action: "terminal.revoke",
			Target: fmt.Sprintf("t%d", i), Detail: "reason"})
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, e)
	}
	for i, e := range appended {
		prev := auditGenesis
		if i > 0 {
			prev = appended[i-1].Hash
		}
		if e.ID != int64(i+1) || !bytes.Equal(e.PrevHash, prev) || !bytes.Equal(e.Hash, AuditHash(prev, e)) || e.Time.Location() != time.UTC {
			t.Errorf("entry %d = %+v", i, e)
		}
	}
	if _, err := s.AppendAudit(ctx, AuditEntry{Action: "x"}); err == nil {
		t.Error("entry without actor accepted")
	}
	if e, err := s.AppendAudit(ctx, AuditEntry{Actor: "system", Action: "start"}); err != nil || e.Time.IsZero() || e.ID != 6 {
		t.Errorf("entry without time: %+v, %v", e, err)
	}

	log, err := s.AuditLog(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 3 || log[0].ID != 6 || log[2].ID != 4 {
		t.Fatalf("AuditLog(3) = %+v", log)
	}
	got := log[1]
	if want := appended[4]; got.ID != want.ID || !got.Time.Equal(want.Time) || got.Actor != want.Actor || got.Action != want.Action ||
		got.Target != want.Target || got.Detail != want.Detail || !bytes.Equal(got.PrevHash, want.PrevHash) || !bytes.Equal(got.Hash, want.Hash) {
		t.Errorf("stored entry %+v, appended %+v", got, want)
	}
	if all, err := s.AuditLog(ctx, 0); err != nil || len(all) != 6 {
		t.Errorf("AuditLog(0): %d entries, %v", len(all), err)
	}

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := s.AppendAudit(ctx, AuditEntry{Actor: fmt.Sprintf("op%d", i), Action: "x"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := s.VerifyAuditChain(ctx); err != nil {
		t.Fatalf("after concurrent appends: %v", err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM audit_log`); n != 26 {
		t.Errorf("%d entries, want 26", n)
	}
}

func TestAuditTamperingDetected(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		tamper []string
		wantID int64
	}{
		{"detail changed", []string{`UPDATE audit_log SET detail = 'nothing happened' WHERE id = 3`}, 3},
		{"time changed", []string{`UPDATE audit_log SET at = at + 1 WHERE id = 4`}, 4},
		{"entry deleted", []string{`DELETE FROM audit_log WHERE id = 2`}, 3},
		{"first entry deleted", []string{`DELETE FROM audit_log WHERE id = 1`}, 2},
		{"entries swapped", []string{
			`UPDATE audit_log SET id = 100 WHERE id = 2`,
			`UPDATE audit_log SET id = 2 WHERE id = 3`,
			`UPDATE audit_log SET id = 3 WHERE id = 100`,
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTest(t)
			for i := range 5 {
				if _, err := s.AppendAudit(ctx, AuditEntry{Time: t0, Actor: "admin", Action: "a", Target: fmt.Sprint(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.VerifyAuditChain(ctx); err != nil {
				t.Fatal(err)
			}
			// The schema refuses changes...
			if _, err := s.w.Exec(tt.tamper[0]); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Fatalf("%s: %v, want refused as append-only", tt.tamper[0], err)
			}
			// ...until someone with the file drops the triggers.
			for _, q := range append([]string{`DROP TRIGGER audit_log_no_update`, `DROP TRIGGER audit_log_no_delete`}, tt.tamper...) {
				if _, err := s.w.Exec(testSQL(s, q)); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			err := s.VerifyAuditChain(ctx)
			var chainErr *AuditChainError
			if !errors.As(err, &chainErr) || chainErr.ID != tt.wantID {
				t.Fatalf("VerifyAuditChain = %v, want broken at %d", err, tt.wantID)
			}
		})
	}
}

func TestTimes(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	times := []time.Time{
		t0,
		time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC), // the last storable nanosecond
		time.Date(1970, 1, 1, 0, 0, 0, 1, jst),
		time.Now(), // with a monotonic reading
	}
	for i, tm := range times {
		e, err := s.AppendAudit(ctx, AuditEntry{Time: tm, Actor: "a", Action: "b"})
		if err != nil {
			t.Fatal(err)
		}
		log, err := s.AuditLog(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := log[0].Time; !got.Equal(tm) || got.Location() != time.UTC || !e.Time.Equal(tm) {
			t.Errorf("time %d: stored %v, got back %v", i, tm, got)
		}
	}
	for _, tm := range []time.Time{time.Date(2262, 4, 11, 23, 47, 16, 854775808, time.UTC), time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if _, err := s.AppendAudit(ctx, AuditEntry{Time: tm, Actor: "a", Action: "b"}); err == nil {
			t.Errorf("time %v out of range accepted", tm)
		}
	}
}

// BenchmarkSaveReport stores reports of 500 terminals from parallel
// goroutines, each a ~4 KB posture (fingerprint changing every 10th report)
// and 2 events.
func BenchmarkSaveReport(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	const terminals = 500
	h := createToken(b, s, "bench", terminals, t0.Add(24*time.Hour))
	ids := make([]string, terminals)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		term, cert := newTerminal(ids[i], fmt.Sprintf("pc-%04d", i))
		term.Host = make([]byte, 300)
		rand.Read(term.Host)
		if err := s.Enroll(ctx, h, t0, term, cert); err != nil {
			b.Fatal(err)
		}
	}
	posture := make([]byte, 4096)
	rand.Read(posture)
	data := make([]byte, 200)
	rand.Read(data)
	seqs := make([]atomic.Uint64, terminals)
	var next atomic.Uint64

	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			i := n % terminals
			seq := seqs[i].Add(2)
			now := time.Now()
			r := Report{
				TerminalID: ids[i], ReceivedAt: now, Posture: posture, CollectedAt: now,
				Fingerprint: []byte{byte(n / terminals / 10)},
				Events: []Event{
					{Seq: seq - 1, Time: now, ReceivedAt: now, Type: "media.write_blocked", Severity: 2, Message: "write blocked on USB stick", Data: data},
					{Seq: seq, Time: now, ReceivedAt: now, Type: "login.success", Severity: 1, Message: "login yamada", Data: data},
				},
			}
			if _, err := s.SaveReport(ctx, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
