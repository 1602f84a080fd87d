package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	"github.com/mnguard/mnguard/server/store"
)

// replicaKeyFiles are the files of a data directory every replica on one
// PostgreSQL must share (the README's list).
var replicaKeyFiles = []string{"ca.crt", "ca.key", "signing.key", "totp.key"}

// copyKeys copies the named key files from one data directory into a new
// one, as an operator setting up a replica does.
func copyKeys(t *testing.T, from string, names ...string) string {
	t.Helper()
	to := t.TempDir()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

func serveArgs(dsn, dir string) []string {
	return []string{"serve", "--db", dsn, "--data-dir", dir, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}
}

// TestServePostgresReplicas: two collector processes on one real
// PostgreSQL, the second with a copy of the first's keys: an agent enrolls
// and reports through each (mutual TLS), both get the same CA and
// exemption key, and the reports are in PostgreSQL (no SQLite file is
// made). A replica with keys of its own, or with one key missing, is
// refused at start, naming the key and what to copy, before it creates
// any key.
func TestServePostgresReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	dirA := t.TempDir()
	a := startServer(t, serveArgs(dsn, dirA)...)
	a.waitListening(t, time.Minute)
	idA, enrA, _ := enrollAndReport(t, a, dirA)

	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := st.Events(ctx, idA, 10)
	if err != nil || len(evs) != 1 || evs[0].Type != "agent.start" || evs[0].Seq != 1 {
		t.Fatalf("events of %s in PostgreSQL: %+v, %v", idA, evs, err)
	}
	if _, err := os.Stat(filepath.Join(dirA, "mnguard.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("serve --db postgres made an SQLite file: %v", err)
	}
	reg, err := registeredKeys(ctx, st)
	if err != nil || len(reg) != 3 {
		t.Fatalf("registered keys %+v, %v; want ca, signing and totp", reg, err)
	}
	have, err := keyFingerprints(dirA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range reg {
		if r.fp != have[name] {
			t.Errorf("%s registered as %s, the data directory's is %s", name, r.fp, have[name])
		}
	}

	// Replica B: a copy of A's keys, no admin files, no database file.
	dirB := copyKeys(t, dirA, replicaKeyFiles...)
	b := startServer(t, serveArgs(dsn, dirB)...)
	b.waitListening(t, time.Minute)
	idB, enrB, _ := enrollAndReport(t, b, dirA) // A's admin token: one database
	if idA == idB || !bytes.Equal(enrA.CaCertificateDer, enrB.CaCertificateDer) || !bytes.Equal(enrA.ExemptionPublicKey, enrB.ExemptionPublicKey) {
		t.Errorf("replicas disagree: terminals %s %s, same CA %v, same exemption key %v", idA, idB,
			bytes.Equal(enrA.CaCertificateDer, enrB.CaCertificateDer), bytes.Equal(enrA.ExemptionPublicKey, enrB.ExemptionPublicKey))
	}
	if ts, err := st.Terminals(ctx); err != nil || len(ts) != 2 {
		t.Errorf("terminals in PostgreSQL: %+v, %v", ts, err)
	}
	if es, _ := st.FilterAudit(ctx, store.AuditFilter{ActionPrefix: keysAction}); len(es) != 1 {
		t.Errorf("%d keys audit entries after the second replica, want 1 (it registered nothing new)", len(es))
	}

	refused := []struct {
		name  string
		dir   string
		want  []string
		never string // a file the refused replica must not have created
	}{
		{"own keys", t.TempDir(), []string{"ca.crt and ca.key (the CA that issues and checks agent certificates) missing from",
			"copy ca.crt and ca.key from it into"}, "ca.key"},
		{"no signing key", copyKeys(t, dirA, "ca.crt", "ca.key", "totp.key"), []string{"signing.key (the key that signs exemptions) missing from"}, "signing.key"},
		{"no totp key", copyKeys(t, dirA, "ca.crt", "ca.key", "signing.key"), []string{"totp.key", "missing from"}, "totp.key"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			p := startServer(t, serveArgs(dsn, tt.dir)...)
			if code := p.exited(time.Minute); code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, p.out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(p.out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, p.out.String())
				}
			}
			if _, err := os.Stat(filepath.Join(tt.dir, tt.never)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the refused replica created %s (%v)", tt.never, err)
			}
		})
	}
	// Another CA in place of the copy: refused, naming both pins.
	dirC := copyKeys(t, dirA, "signing.key", "totp.key")
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"init", "--data-dir", dirC}, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("init of an SQLite directory: %s", stderr.String())
	}
	stderr.Reset()
	code := run(ctx, []string{"init", "--db", dsn, "--data-dir", dirC}, &stdout, &stderr, func(string) string { return "" })
	if code != 1 || !regexp.MustCompile(`ca.crt and ca.key \(the CA .*\) is sha256:[0-9a-f]{64} in .*, but the replicas of this database use sha256:[0-9a-f]{64} \(registered by audit entry \d+ at `).MatchString(stderr.String()) {
		t.Errorf("init --db with another CA: exit %d:\n%s", code, stderr.String())
	}
}

// TestServePostgresDownAtStart: the collector started while its
// PostgreSQL is down logs its attempts, and serves agents once the
// server is up.
func TestServePostgresDownAtStart(t *testing.T) {
	cluster := testenv.NewPostgresCluster(t)
	dsn := testenv.CreateDatabase(t, cluster.DSN)
	if err := cluster.Stop(false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := startServer(t, serveArgs(dsn, dir)...)
	lines := p.waitLog(t, regexp.MustCompile(`msg="database unreachable, retrying"`), 2, 30*time.Second)
	if !strings.Contains(lines[1], "attempt=2") || !strings.Contains(lines[0], `database=`) && !strings.Contains(lines[0], `db="PostgreSQL socket `) {
		t.Errorf("retry lines: %q", lines)
	}
	if strings.Contains(p.out.String(), "collector listening") {
		t.Fatal("listening without its database")
	}
	up := time.Now()
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	p.waitListening(t, time.Minute)
	t.Logf("serving %s after PostgreSQL came up", time.Since(up).Round(time.Millisecond))
	p.waitLog(t, regexp.MustCompile(`msg="database reachable".* attempts=\d+`), 1, time.Second)
	enrollAndReport(t, p, dir)
}
