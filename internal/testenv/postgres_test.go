package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgres creates two databases and writes to each: they are
// distinct, empty, and usable by a client.
func TestPostgres(t *testing.T) {
	ctx := context.Background()
	a, b := Postgres(t), Postgres(t)
	if a == b {
		t.Fatalf("two tests got one database: %s", a)
	}
	for _, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d tables in a fresh database", dsn, n)
		}
		if _, err := conn.Exec(ctx, `CREATE TABLE t (x BIGINT)`); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
}

func TestWithDatabase(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u@/postgres?host=%2Ftmp%2Fx": "postgres://u@/db1?host=%2Ftmp%2Fx",
		"postgresql://u:p@h:5433/x":              "postgresql://u:p@h:5433/db1",
		"host=/tmp/x user=u dbname=postgres":     "host=/tmp/x user=u dbname=postgres dbname=db1",
	} {
		got, err := WithDatabase(in, "db1")
		if err != nil || got != want {
			t.Errorf("WithDatabase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := WithDatabase("mysql://x", "db1"); err == nil {
		t.Error("WithDatabase accepted a mysql URL")
	}
}

// TestPostgresSchema: two schemas in the shared database, each first on
// its DSN's search path, hold tables of the same name apart.
func TestPostgresSchema(t *testing.T) {
	ctx := context.Background()
	a, b := PostgresSchema(t), PostgresSchema(t)
	for i, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `CREATE TABLE t (x BIGINT)`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	for i, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var n, x int
		if err := conn.QueryRow(ctx, `SELECT COUNT(*), MIN(x) FROM t`).Scan(&n, &x); err != nil || n != 1 || x != i {
			t.Errorf("schema %d: %d rows, x = %d, %v; want 1 row, %d", i, n, x, err, i)
		}
		conn.Close(ctx)
	}
}
