package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	"github.com/mnguard/mnguard/server/store"
)

func noEnv(string) string { return "" }

// TestMigrate: an installation that ran on SQLite (a real collector, a
// terminal enrolled and reporting over mutual TLS) moved to a real
// PostgreSQL with migrate: the command prints the counts and the verified
// audit chain, the collector then serves from PostgreSQL with the same
// data directory, and the terminal enrolled on SQLite reports on as
// before. A second migrate into the now full database is refused.
func TestMigrate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	old := startServer(t, "serve", "--data-dir", dir, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	old.waitListening(t, time.Minute)
	id, _, cert := enrollAndReport(t, old, dir)
	old.stop(t)

	src, err := store.OpenSQLite(ctx, filepath.Join(dir, "mnguard.db"))
	if err != nil {
		t.Fatal(err)
	}
	srcAudit, err := src.AuditLog(ctx, 1)
	src.Close()
	if err != nil || len(srcAudit) != 1 {
		t.Fatal(srcAudit, err)
	}

	dsn := testenv.Postgres(t)
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"migrate", "--from", "sqlite:" + dir, "--to", dsn}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("migrate: exit %d:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, re := range []string{`(?m)^\s+terminals\s+1\s+1\s*$`, `(?m)^\s+events\s+1\s+1\s*$`, `(?m)^\s+certificates\s+1\s+1\s*$`,
		`audit chain verified on PostgreSQL: ` + strconv.FormatInt(srcAudit[0].ID, 10) + ` entries, newest hash [0-9a-f]{64} \(equal to SQLite's\)`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("migrate output does not match %s:\n%s", re, out)
		}
	}
	if !strings.Contains(stderr.String(), "copying SQLite "+filepath.Join(dir, "mnguard.db")) {
		t.Errorf("progress: %s", stderr.String())
	}

	// The same data directory now serves from PostgreSQL: the terminal
	// enrolled on SQLite reports on, with its certificate.
	p := startServer(t, serveArgs(dsn, dir)...)
	p.waitListening(t, time.Minute)
	report(t, p, cert, 2)
	dst, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	evs, err := dst.Events(ctx, id, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("events of %s on PostgreSQL: %+v, %v", id, evs, err)
	}
	if err := dst.VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}

	stdout.Reset()
	stderr.Reset()
	if code := run(ctx, []string{"migrate", "--from", "sqlite:" + dir, "--to", dsn}, &stdout, &stderr, noEnv); code != 1 ||
		!strings.Contains(stderr.String(), "target database is not empty: table") || !strings.Contains(stderr.String(), "new, empty database only") {
		t.Errorf("migrate into a full database: exit %d:\n%s", code, stderr.String())
	}
}

// TestMigrateBadInput: what migrate refuses, and that a refused migrate
// leaves the target empty.
func TestMigrateBadInput(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	installed := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"init", "--data-dir", installed}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatal(stderr.String())
	}
	notDB := filepath.Join(t.TempDir(), "mnguard.db")
	if err := os.WriteFile(notDB, []byte("this is not an SQLite database, but long enough to look like a header of one"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "gone")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no from", []string{"--to", dsn}, nil, "--from: the installation to copy"},
		{"source missing", []string{"--from", "sqlite:" + missing, "--to", dsn}, nil, "--from sqlite:" + missing + ": no such directory or file"},
		{"not a data directory", []string{"--from", "sqlite:" + t.TempDir(), "--to", dsn}, nil, "holds no mnguard.db: not an mnguard-server data directory"},
		{"from postgres", []string{"--from", dsn, "--to", dsn}, nil, "migrate copies from SQLite only"},
		{"not a database", []string{"--from", "sqlite:" + notDB, "--to", dsn}, nil, "store: open sqlite " + notDB},
		{"no to", []string{"--from", "sqlite:" + installed}, nil, "--to: the PostgreSQL database to copy into"},
		{"to sqlite", []string{"--from", "sqlite:" + installed, "--to", "sqlite:/tmp/x.db"}, nil, "--to SQLite /tmp/x.db: not PostgreSQL"},
		{"to a path", []string{"--from", "sqlite:" + installed, "--to", "/tmp/x.db"}, nil, "not PostgreSQL"},
		{"to mysql", []string{"--from", "sqlite:" + installed, "--to", "mysql://root@db/m"}, nil, `--to: database type "mysql" is not supported`},
		{"env to sqlite", []string{"--from", "sqlite:" + installed}, map[string]string{"MNGUARD_DB": "sqlite:/tmp/y.db"}, "not PostgreSQL"},
		{"extra argument", []string{"--from", "sqlite:" + installed, "--to", dsn, "now"}, nil, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(ctx, append([]string{"migrate"}, tt.args...), &stdout, &stderr, func(k string) string { return tt.env[k] })
			if code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("migrate created the missing source")
	}
	// Nothing was copied by any of them.
	dst, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if es, err := dst.AuditLog(ctx, 1); err != nil || len(es) != 0 {
		t.Errorf("the target holds audit entries after refused migrations: %v, %v", es, err)
	}
	if ts, err := dst.Terminals(ctx); err != nil || len(ts) != 0 {
		t.Errorf("terminals: %v, %v", ts, err)
	}
}
