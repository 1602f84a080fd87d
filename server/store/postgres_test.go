package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mnguard/mnguard/internal/testenv"
)

// openPGTest opens a store on the PostgreSQL database dsn, whichever
// backend the run is on.
func openPGTest(tb testing.TB, dsn string) *DB {
	tb.Helper()
	s, err := OpenPostgres(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if _, err := s.SetKeySealer(context.Background(), newTestSealer(tb, 1)); err != nil {
		tb.Fatal(err)
	}
	return s
}

// schemaOf describes a store's schema: migrations, tables with their
// columns and nullability, indexes and triggers, by name.
func schemaOf(t *testing.T, s *DB) map[string][]string {
	t.Helper()
	ctx := context.Background()
	list := func(q string, args ...any) []string {
		rows, err := s.r.QueryContext(ctx, q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			out = append(out, a+" "+b)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	m := map[string][]string{}
	m["migrations"] = list(`SELECT CAST(version AS TEXT), name FROM schema_migrations`)
	var tables []string
	if s.Dialect() == DialectSQLite {
		tables = list(`SELECT name, 'table' FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
		m["indexes"] = list(`SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'`)
		m["triggers"] = list(`SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'`)
	} else {
		tables = list(`SELECT table_name, 'table' FROM information_schema.tables WHERE table_schema = 'public'`)
		// Indexes created by name: not those behind a PRIMARY KEY or
		// UNIQUE constraint, which SQLite names sqlite_autoindex_*.
		m["indexes"] = list(`SELECT i.indexname, i.tablename FROM pg_indexes i WHERE i.schemaname = 'public'
	AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)`)
		m["triggers"] = list(`SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT t.tgisinternal`)
	}
	m["tables"] = tables
	for _, tb := range tables {
		name, _, _ := strings.Cut(tb, " ")
		if s.Dialect() == DialectSQLite {
			// An INTEGER PRIMARY KEY (the rowid) is never NULL.
			m["columns "+name] = list(`SELECT name, CASE WHEN "notnull" = 1 OR pk > 0 THEN 'NOT NULL' ELSE 'NULL' END
	FROM pragma_table_info($1)`, name)
		} else {
			m["columns "+name] = list(`SELECT column_name, CASE WHEN is_nullable = 'NO' THEN 'NOT NULL' ELSE 'NULL' END
	FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1`, name)
		}
	}
	return m
}

// TestSchemaSameOnBothDialects: both dialects' migrations give the same
// versions, tables, columns (with nullability), indexes and triggers by
// name. PostgreSQL adds one trigger: TRUNCATE, which SQLite does not have,
// must not empty the audit log either.
func TestSchemaSameOnBothDialects(t *testing.T) {
	ctx := context.Background()
	lite, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	pg := openPGTest(t, testenv.Postgres(t))

	a, b := schemaOf(t, lite), schemaOf(t, pg)
	b["triggers"] = slices.DeleteFunc(b["triggers"], func(s string) bool { return s == "audit_log_no_truncate audit_log" })
	if len(a["tables"]) < 10 || len(a["indexes"]) < 10 || len(a["migrations"]) < 8 {
		t.Fatalf("schema read wrong: %v", a)
	}
	for k, va := range a {
		if vb := b[k]; !slices.Equal(va, vb) {
			t.Errorf("%s:\n sqlite:   %q\n postgres: %q", k, va, vb)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("%s only on postgres: %q", k, b[k])
		}
	}
	// The migration files themselves: the same versions and names.
	ml, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		t.Fatal(err)
	}
	mp, err := loadMigrations(postgresMigrations, "migrations/postgres")
	if err != nil {
		t.Fatal(err)
	}
	names := func(ms []migration) (out []string) {
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%04d_%s", m.version, m.name))
		}
		return out
	}
	if !slices.Equal(names(ml), names(mp)) {
		t.Errorf("migration files differ:\n sqlite:   %v\n postgres: %v", names(ml), names(mp))
	}
	// The audit log is append-only on PostgreSQL too.
	if _, err := pg.AppendAudit(ctx, AuditEntry{Actor: "root", Action: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE audit_log SET actor = 'x'`, `DELETE FROM audit_log`, `TRUNCATE audit_log`} {
		if _, err := pg.w.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", q, err)
		}
	}
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"", "mysql://x/y", "file:///tmp/x.db", "sqlite:", "postgres://%zz"} {
		if s, err := Open(ctx, u); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	path := filepath.Join(t.TempDir(), "a.db")
	for _, u := range []string{path, "sqlite:" + path} {
		s, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if s.Dialect() != DialectSQLite || s.Postgres() != nil {
			t.Errorf("Open(%q): dialect %s", u, s.Dialect())
		}
		s.Close()
	}
	dsn := testenv.Postgres(t)
	for _, u := range []string{dsn, strings.Replace(dsn, "postgres://", "postgresql://", 1)} {
		s, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if s.Dialect() != DialectPostgres || s.Postgres() == nil {
			t.Errorf("Open(%q): dialect %s", u, s.Dialect())
		}
		// The test cluster runs with synchronous_commit=off; the store's
		// own sessions commit durably all the same.
		var sc string
		if err := s.r.QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&sc); err != nil || sc != "on" {
			t.Errorf("Open(%q): synchronous_commit %q, %v; want on", u, sc, err)
		}
		s.Close()
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	if s, err := Open(ctx, dsn+sep+"synchronous_commit=off"); err == nil || !strings.Contains(err.Error(), "synchronous_commit") {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open with synchronous_commit=off: %v, want a refusal naming it", err)
	}
}

// TestPostgresReplicas: stores opened at once on one database (replicas
// starting together) migrate it once; then, writing side by side, they
// keep the audit chain unbroken and never overdraw an enrollment token;
// a schema newer than the program is refused.
func TestPostgresReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	const replicas = 3
	stores := make([]*DB, replicas)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			s, err := OpenPostgres(ctx, dsn)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { s.Close() })
			if _, err := s.SetKeySealer(ctx, newTestSealer(t, 1)); err != nil {
				t.Error(err)
			}
			stores[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ms, _ := loadMigrations(postgresMigrations, "migrations/postgres")
	if n := count(t, stores[0], `SELECT COUNT(*) FROM schema_migrations`); n != len(ms) {
		t.Fatalf("%d migrations recorded, want %d", n, len(ms))
	}

	h := createToken(t, stores[0], "tok", 7, t0.Add(time.Hour))
	audits := count(t, stores[0], `SELECT COUNT(*) FROM audit_log`)
	var enrolled, exhausted atomic.Int32
	const perReplica = 40
	for r, s := range stores {
		for i := range perReplica {
			wg.Go(func() {
				if _, err := s.AppendAudit(ctx, AuditEntry{Actor: fmt.Sprintf("replica %d", r), Action: "test", Target: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
				term, cert := newTerminal(fmt.Sprintf("t-%d-%02d", r, i), "pc")
				cert.Serial = fmt.Sprintf("%02x%02x", r, i)
				switch err := s.Enroll(ctx, h, t0, term, cert); {
				case err == nil:
					enrolled.Add(1)
				case errors.Is(err, ErrTokenExhausted):
					exhausted.Add(1)
				default:
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if enrolled.Load() != 7 || exhausted.Load() != replicas*perReplica-7 {
		t.Errorf("%d enrolled, %d refused as exhausted; want 7 of %d", enrolled.Load(), exhausted.Load(), replicas*perReplica)
	}
	if err := stores[1].VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}
	if n := count(t, stores[2], `SELECT COUNT(*) FROM audit_log`); n != audits+replicas*perReplica {
		t.Errorf("%d audit entries, want %d", n, audits+replicas*perReplica)
	}

	if _, err := stores[0].w.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 1)`); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenPostgres(ctx, dsn); err == nil || !strings.Contains(err.Error(), "newer") {
		if s != nil {
			s.Close()
		}
		t.Errorf("OpenPostgres of a newer schema: %v, want refused", err)
	}
}

// TestPostgresUnavailable stops the real server under a store, and
// terminates its connections: every operation then fails with an error
// matching ErrUnavailable (keeping PostgreSQL's words), nothing half
// stored; once the server is back the store works again by itself.
func TestPostgresUnavailable(t *testing.T) {
	ctx := context.Background()
	c := testenv.NewPostgresCluster(t)
	dsn := testenv.CreateDatabase(t, c.DSN)
	s := openPGTest(t, dsn)
	enroll(t, s, "t1", "pc-01")
	report := func(seq uint64) error {
		_, err := s.SaveReport(ctx, Report{TerminalID: "t1", ReceivedAt: t0.Add(time.Duration(seq) * time.Second),
			Events: []Event{{Seq: seq, Time: t0, Type: "test"}}})
		return err
	}
	if err := report(1); err != nil {
		t.Fatal(err)
	}

	// Connections terminated under the pool (an administrator, a
	// failover): the next operations succeed on new connections or fail
	// as unavailable, never otherwise.
	if _, err := s.w.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(2); seq <= 4; seq++ {
		if err := report(seq); err != nil && !errors.Is(err, ErrUnavailable) {
			t.Fatalf("report after pg_terminate_backend: %v, want success or ErrUnavailable", err)
		}
	}

	audits := count(t, s, `SELECT COUNT(*) FROM audit_log`)
	if err := c.Stop(false); err != nil {
		t.Fatal(err)
	}
	checks := map[string]func() error{
		"SaveReport": func() error { return report(10) },
		"Terminal": func() error {
			_, err := s.Terminal(ctx, "t1")
			return err
		},
		"AppendAudit": func() error {
			_, err := s.AppendAudit(ctx, AuditEntry{Actor: "root", Action: "a"})
			return err
		},
		"Ping": func() error { return s.Ping(ctx) },
		"OpenPostgres": func() error {
			s2, err := OpenPostgres(ctx, dsn)
			if err == nil {
				s2.Close()
			}
			return err
		},
	}
	for name, f := range checks {
		err := f()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with the server down: %v, want ErrUnavailable", name, err)
		} else if !strings.Contains(err.Error(), "database unavailable: ") {
			t.Errorf("%s: %q does not say the database is unavailable", name, err)
		}
		t.Logf("%s with the server down: %v", name, err)
	}

	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := report(10)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("report after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	evs, err := s.Events(ctx, "t1", 100)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range evs {
		seqs = append(seqs, e.Seq)
	}
	slices.Sort(seqs)
	// 2..4 may or may not be stored (terminated connections); 10 once.
	if len(seqs) < 2 || seqs[0] != 1 || seqs[len(seqs)-1] != 10 {
		t.Errorf("events stored: %v, want 1, maybe 2-4, and 10", seqs)
	}
	if err := s.VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM audit_log`); n != audits {
		t.Errorf("%d audit entries, were %d: the append refused was stored", n, audits)
	}
}

// TestPostgresPoolListen: DB.Postgres's pool serves LISTEN/NOTIFY, and
// with PostgresReserved connections held there (listeners), the store's
// queries from many goroutines still run.
func TestPostgresPoolListen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openPGTest(t, testenv.Postgres(t))
	pool := s.Postgres()
	if pool == nil {
		t.Fatal("no pool")
	}
	var listeners []*pgxpool.Conn
	for range PostgresReserved {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		if _, err := c.Exec(ctx, `LISTEN mnguard_test`); err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, c)
	}
	enroll(t, s, "t1", "pc-01")
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := s.SaveReport(ctx, Report{TerminalID: "t1", ReceivedAt: t0,
				Events: []Event{{Seq: uint64(i), Time: t0, Type: "test"}}}); err != nil {
				t.Error(err)
			}
			if _, err := s.Terminal(ctx, "t1"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	if _, err := s.w.ExecContext(ctx, `SELECT pg_notify('mnguard_test', 'hello')`); err != nil {
		t.Fatal(err)
	}
	for _, l := range listeners {
		n, err := l.Conn().WaitForNotification(ctx)
		if err != nil || n.Payload != "hello" {
			t.Fatalf("notification %+v, %v", n, err)
		}
	}
}

// TestPostgresDeadlockRetried: two write transactions that lock two rows
// in opposite orders deadlock; PostgreSQL aborts one (40P01) and the store
// runs it again, so both succeed.
func TestPostgresDeadlockRetried(t *testing.T) {
	ctx := context.Background()
	s := openPGTest(t, testenv.PostgresSchema(t))
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	var (
		attempts [2]atomic.Int32
		bothHold sync.WaitGroup
		wg       sync.WaitGroup
		errs     [2]error
	)
	bothHold.Add(2)
	for i, order := range [][2]string{{"t1", "t2"}, {"t2", "t1"}} {
		wg.Go(func() {
			errs[i] = s.writeTx(ctx, false, func(tx wtx) error {
				n := attempts[i].Add(1)
				if _, err := tx.exec(ctx, `UPDATE terminals SET hostname = hostname WHERE id = $1`, order[0]); err != nil {
					return err
				}
				if n == 1 {
					bothHold.Done()
					bothHold.Wait()
				}
				_, err := tx.exec(ctx, `UPDATE terminals SET hostname = $2 WHERE id = $1`, order[1], fmt.Sprint("by ", i))
				return err
			})
		})
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("errors %v, %v; want both run again until committed", errs[0], errs[1])
	}
	if a, b := attempts[0].Load(), attempts[1].Load(); a+b != 3 {
		t.Errorf("attempts %d and %d, want one transaction run twice", a, b)
	}
}
