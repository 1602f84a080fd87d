package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mnguard/mnguard/internal/testenv"
	"github.com/mnguard/mnguard/server/store"
)

// TestParseDB: what --db takes and how each is named in logs.
func TestParseDB(t *testing.T) {
	dir := "/var/lib/mnguard-server"
	tests := []struct {
		raw      string
		url      string
		postgres bool
		desc     string
		err      string
	}{
		{raw: "", url: "", desc: "SQLite /var/lib/mnguard-server/mnguard.db"},
		{raw: "sqlite:/srv/m.db", url: "sqlite:/srv/m.db", desc: "SQLite /srv/m.db"},
		{raw: "/srv/m.db", url: "sqlite:/srv/m.db", desc: "SQLite /srv/m.db"},
		{raw: "postgres://mnguard:pw@db.example:5433/mnguard?sslmode=verify-full", postgres: true,
			desc: `PostgreSQL db.example port 5433 database "mnguard" user "mnguard"`},
		{raw: "postgresql://mnguard@/mnguard?host=/run/postgresql", postgres: true,
			desc: `PostgreSQL socket /run/postgresql port 5432 database "mnguard" user "mnguard"`},
		{raw: "sqlite:", err: "name the database file"},
		{raw: "mysql://root@db/mnguard", err: `database type "mysql" is not supported`},
		{raw: "host=db dbname=mnguard", err: "keyword=value DSN is not taken"},
		{raw: "postgres://u:pw@db:notaport/x", err: "not a usable PostgreSQL URL"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := parseDB("--db", tt.raw, dir)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseDB(%q) = %+v, %v; want an error saying %q", tt.raw, got, err, tt.err)
				}
				if strings.Contains(err.Error(), ":pw@") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantURL := tt.url
			if tt.postgres {
				wantURL = tt.raw
			}
			if got.url != wantURL || got.postgres != tt.postgres || got.desc != tt.desc {
				t.Errorf("parseDB(%q) = %+v; want url %q postgres %v desc %q", tt.raw, got, wantURL, tt.postgres, tt.desc)
			}
		})
	}
}

// FuzzParseDB: whatever --db holds, parsing never panics, and the desc
// of a PostgreSQL URL (in logs and errors) names its host, port, database
// and user and nothing else: never the password.
func FuzzParseDB(f *testing.F) {
	for _, s := range []string{"", "sqlite:/x", "postgres://u:secretpw@h:5432/d", "postgresql://u@/d?host=/tmp", "mysql://x", "a=b", "/x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := parseDB("--db", raw, "/data")
		if err != nil {
			return
		}
		if got.postgres {
			// The desc names the host, port, database and user, and
			// nothing else of the URL: a password only where it is one
			// of them too (a password "0" of a user "0").
			cfg, err := pgconn.ParseConfig(strings.TrimSpace(raw))
			if err != nil {
				t.Fatalf("parseDB took %q, pgconn does not: %v", raw, err)
			}
			host := cfg.Host
			if strings.HasPrefix(host, "/") {
				host = "socket " + host
			}
			if want := fmt.Sprintf("PostgreSQL %s port %d database %q user %q", host, cfg.Port, cfg.Database, cfg.User); got.desc != want {
				t.Fatalf("desc %q, want %q", got.desc, want)
			}
		}
		if got.postgres != (strings.HasPrefix(strings.TrimSpace(raw), "postgres://") || strings.HasPrefix(strings.TrimSpace(raw), "postgresql://")) {
			t.Fatalf("%q taken as postgres=%v", raw, got.postgres)
		}
	})
}

// TestRetryable: outages are retried; answers of a server that is up
// (wrong password, no such database) are not.
func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x: %w", store.ErrUnavailable), true},
		{&pgconn.PgError{Code: "57P03"}, true},
		{&pgconn.PgError{Code: "08006"}, true},
		{fmt.Errorf("%w: %w", store.ErrUnavailable, &pgconn.PgError{Code: "3D000"}), false},
		{fmt.Errorf("%w: %w", store.ErrUnavailable, &pgconn.PgError{Code: "28P01"}), false},
		{errors.New("schema version 99 is newer"), false},
	} {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestServeWaitsForPostgres: serve --db naming a PostgreSQL that is not
// there retries with backoff, logs every attempt naming the database but
// never the password, and a stop while it waits is a clean exit.
func TestServeWaitsForPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	sock := filepath.Join(t.TempDir(), "no-server")
	code := run(ctx, []string{"serve", "--db", "postgres://mnguard:s3cret-pw@/mnguard_db?host=" + sock + "&sslmode=disable",
		"--data-dir", t.TempDir(), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, &stdout, &stderr, func(string) string { return "" })
	out := stderr.String()
	if code != 0 {
		t.Errorf("stopped while waiting: exit %d, want 0", code)
	}
	for _, want := range []string{`msg="database unreachable, retrying"`, `database \"mnguard_db\" user \"mnguard\"`, "attempt=1", "attempt=2", "retry_in=", "stopped before the database answered"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret-pw") {
		t.Errorf("the log shows the password:\n%s", out)
	}
	if strings.Contains(out, "collector listening") {
		t.Errorf("served without a database:\n%s", out)
	}
}

// TestInitMissingDatabase: a PostgreSQL that answers that the database
// does not exist is no outage: init fails at once, naming it.
func TestInitMissingDatabase(t *testing.T) {
	dsn, err := testenv.WithDatabase(testenv.Postgres(t), "mnguard_no_such_db")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(ctx, []string{"init", "--db", dsn, "--data-dir", t.TempDir()}, &stdout, &stderr, func(string) string { return "" })
	if code != 1 || !strings.Contains(stderr.String(), `database \"mnguard_no_such_db\"`) && !strings.Contains(stderr.String(), `database "mnguard_no_such_db"`) ||
		!strings.Contains(stderr.String(), "does not exist") {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if d := time.Since(start); d > 10*time.Second || strings.Contains(stderr.String(), "retrying") {
		t.Errorf("retried a missing database (%s):\n%s", d, stderr.String())
	}
}
