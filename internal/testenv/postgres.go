package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EnvPostgres names the variable that gives the tests a PostgreSQL server:
// the DSN of a superuser on it, e.g.
// "postgres://postgres@/postgres?host=/tmp/pg" (scripts/testpg.sh exports
// one for the whole of make test). Unset, the first test that asks starts a
// throw-away cluster of its own for the test binary (see startCluster).
const EnvPostgres = "MNGUARD_TEST_POSTGRES"

var shared struct {
	once sync.Once
	dsn  string
	err  error
	// cluster stays referenced for the life of the binary: collected, its
	// pipe to the keeper would be closed by the finalizer, and the keeper
	// would stop the cluster in the middle of the tests.
	cluster *PGCluster
}

// adminDSN returns the superuser DSN of the server the tests use: the
// environment's, or that of a cluster started once per test binary.
func adminDSN() (string, error) {
	if dsn := os.Getenv(EnvPostgres); dsn != "" {
		return dsn, nil
	}
	shared.once.Do(func() {
		c, err := startCluster()
		if err != nil {
			shared.err = fmt.Errorf("start a throw-away PostgreSQL cluster (or set %s to a superuser DSN): %w", EnvPostgres, err)
			return
		}
		// Never stopped by the test binary itself: the cluster's keeper
		// stops it and removes its directory when the binary exits (see
		// startCluster).
		shared.dsn, shared.cluster = c.DSN, c
	})
	return shared.dsn, shared.err
}

// Postgres returns the DSN of a fresh, empty database of its own on a real
// PostgreSQL server, dropped (WITH (FORCE)) when the test ends. Tests in
// parallel, and test binaries in parallel, each get their own database.
// Without PostgreSQL the test skips, and fails under CI (CI=true).
func Postgres(tb testing.TB) string {
	tb.Helper()
	admin, err := adminDSN()
	if err != nil {
		missing(tb, err)
	}
	return CreateDatabase(tb, admin)
}

// CreateDatabase creates an empty database with a random name on the
// server of the superuser DSN admin, dropped when the test ends, and
// returns its DSN.
func CreateDatabase(tb testing.TB, admin string) string {
	tb.Helper()
	var b [8]byte
	rand.Read(b[:])
	name := "mnguard_test_" + hex.EncodeToString(b[:])
	dsn, err := WithDatabase(admin, name)
	if err != nil {
		tb.Fatalf("%s: %v", EnvPostgres, err)
	}
	if err := adminExec(admin, "CREATE DATABASE "+name); err != nil {
		missing(tb, err)
	}
	tb.Cleanup(func() {
		if err := adminExec(admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
	})
	return dsn
}

// missing skips the test, or fails it under CI, where PostgreSQL is
// installed and a skip would hide that it does not run.
func missing(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("PostgreSQL: %v", err)
	}
	tb.Skipf("PostgreSQL: %v", err)
}

func adminExec(admin, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// WithDatabase returns dsn, a URL (postgres://...) or keyword/value DSN,
// naming database name instead.
func WithDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("DSN is not a valid URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		q := u.Query()
		if q.Has("dbname") {
			q.Set("dbname", name)
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	if strings.Contains(dsn, "=") {
		// pgx: a later keyword overrides an earlier one.
		return dsn + " dbname=" + name, nil
	}
	return "", errors.New("want a postgres:// URL or a keyword=value DSN")
}

// schemasDB is the database PostgresSchema's schemas live in. It is
// created once on a server and kept (empty between tests): creating a
// database takes seconds, a schema milliseconds.
const schemasDB = "mnguard_test_schemas"

var schemas struct {
	mu    sync.Mutex
	dsn   string // of schemasDB, once it exists
	admin string
}

// PostgresSchema returns the DSN of a fresh, empty schema of its own,
// first on the search path, in a database the test binary's tests share on
// Postgres's server; the schema is dropped when the test ends. It is much
// faster than Postgres, for tests that need no database of their own
// (advisory locks and LISTEN channels are per database: tests using
// them side by side want Postgres).
func PostgresSchema(tb testing.TB) string {
	tb.Helper()
	admin, err := adminDSN()
	if err != nil {
		missing(tb, err)
	}
	dbDSN, err := schemasDatabase(admin)
	if err != nil {
		missing(tb, err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	if err := adminExec(dbDSN, "CREATE SCHEMA "+name); err != nil {
		missing(tb, err)
	}
	tb.Cleanup(func() {
		if err := adminExec(dbDSN, "DROP SCHEMA IF EXISTS "+name+" CASCADE"); err != nil {
			tb.Errorf("drop test schema %s: %v", name, err)
		}
	})
	dsn, err := withParam(dbDSN, "search_path", name)
	if err != nil {
		tb.Fatalf("%s: %v", EnvPostgres, err)
	}
	return dsn
}

// schemasDatabase creates schemasDB on admin's server unless it exists
// (another test binary may create it at the same moment).
func schemasDatabase(admin string) (string, error) {
	schemas.mu.Lock()
	defer schemas.mu.Unlock()
	if schemas.dsn != "" && schemas.admin == admin {
		return schemas.dsn, nil
	}
	dsn, err := WithDatabase(admin, schemasDB)
	if err != nil {
		return "", err
	}
	if err := adminExec(admin, "CREATE DATABASE "+schemasDB); err != nil {
		var pe *pgconn.PgError
		// 42P04: it exists; 23505: created by another binary meanwhile.
		if !errors.As(err, &pe) || (pe.Code != "42P04" && pe.Code != "23505") {
			return "", err
		}
	}
	schemas.dsn, schemas.admin = dsn, admin
	return dsn, nil
}

// withParam adds a run-time parameter to a URL or keyword/value DSN.
func withParam(dsn, key, value string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("DSN is not a valid URL: %w", err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return dsn + " " + key + "=" + value, nil
}
