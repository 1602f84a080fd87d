package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// Advisory lock keys (pg_advisory_lock's one bigint space, shared by every
// mnguard process on the database). Other packages taking advisory locks
// must use other keys.
const (
	// WriteLockKey serializes the store's write transactions across
	// replicas (see DB.write).
	WriteLockKey int64 = 0x6d6e_6775_6172_6401 // "mnguard" 01
	// MigrateLockKey is held while a process migrates the schema.
	MigrateLockKey int64 = 0x6d6e_6775_6172_6402
)

// PostgresReserved is how many connections of DB.Postgres's pool the
// store's own queries leave free (at least 10 in all, unless the DSN's
// pool_max_conns says otherwise): for LISTEN and other direct users.
const PostgresReserved = 2

// maxWriteAttempts bounds the retries of a write transaction PostgreSQL
// aborted for a serialization failure or a deadlock.
const maxWriteAttempts = 5

// OpenPostgres opens the PostgreSQL database of dsn (a postgres:// URL or
// keyword=value DSN, as libpq and pgx read them, pool_max_conns included)
// and brings its schema up to date; two processes starting at once take
// turns (an advisory lock). It fails, with an error matching
// ErrUnavailable, if the server cannot be reached: the caller retries.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	s, err := openPostgres(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", unavailable(err))
	}
	return s, nil
}

func openPostgres(ctx context.Context, dsn string) (_ *DB, err error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message never repeats the password.
		return nil, fmt.Errorf("bad DSN: %w", err)
	}
	// A report is acknowledged once its commit returns: that commit must
	// be on disk, whatever the server's own default (a server run with
	// synchronous_commit=off loses the last commits in a crash, and the
	// agents would never send those events again). Stronger settings
	// (remote_write, remote_apply) given in the DSN are kept.
	switch v := cfg.ConnConfig.RuntimeParams["synchronous_commit"]; v {
	case "":
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	case "off":
		return nil, errors.New("bad DSN: synchronous_commit=off would acknowledge reports a crash of PostgreSQL can lose; leave it out (the store uses on)")
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = int32(max(10, 4*runtime.GOMAXPROCS(0)))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &DB{pool: pool, ws: map[string]*sql.Stmt{}, rs: map[string]*sql.Stmt{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// database/sql holds a pool connection for as long as it keeps its
	// own; PostgresReserved are left for DB.Postgres's users (LISTEN).
	n := max(1, int(cfg.MaxConns)-PostgresReserved)
	db := sql.OpenDB(errConnector{stdlib.GetPoolConnector(pool)})
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	s.w, s.r = db, db
	if err := db.PingContext(ctx); err != nil {
		return nil, err
	}
	ms, err := loadMigrations(postgresMigrations, "migrations/postgres")
	if err != nil {
		return nil, err
	}
	if err := migratePostgres(ctx, db, ms); err != nil {
		return nil, err
	}
	// No statements prepared: pgx prepares and caches every query per
	// connection by itself.
	return s, nil
}

// migratePostgres runs migrate on one connection holding MigrateLockKey,
// so that replicas starting together neither race nor fail.
func migratePostgres(ctx context.Context, db *sql.DB, ms []migration) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, MigrateLockKey); err != nil {
		return fmt.Errorf("lock for migration: %w", err)
	}
	defer func() {
		// A failed unlock ends with the session; closing the connection
		// would not return it to the pool, so raise it.
		if _, uerr := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, MigrateLockKey); uerr != nil {
			conn.Raw(func(any) error { return errors.New("discard") })
			err = errors.Join(err, fmt.Errorf("unlock after migration: %w", uerr))
		}
	}()
	return migrate(ctx, conn, ms)
}

// retryable reports whether PostgreSQL aborted a transaction that may
// succeed if run again: a serialization failure or a deadlock.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// retryWait sleeps before attempt (from 2) of a write transaction: a few
// milliseconds, growing, with jitter so that the same two transactions do
// not collide again.
func retryWait(ctx context.Context, attempt int) error {
	d := time.Duration(1<<attempt)*time.Millisecond + rand.N(5*time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
