package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mnguard/mnguard/server/collector"
	"github.com/mnguard/mnguard/server/store"
)

// dbTarget is the database --db names, read and checked before anything
// connects.
type dbTarget struct {
	// url is what store.Open takes: "" (the SQLite file in the data
	// directory), "sqlite:PATH" or a PostgreSQL DSN.
	url      string
	postgres bool
	// desc names the database in logs and errors: the file, or host,
	// port, database and user — never the password.
	desc string
	// password is scrubbed from every error text that is shown.
	password string
}

// parseDB reads the value of flag (--db, env MNGUARD_DB; migrate's --to). Empty is the SQLite file
// in dataDir; "sqlite:PATH" or a path is SQLite; "postgres://" or
// "postgresql://" is PostgreSQL. Anything else with a scheme is refused
// rather than taken for a file name.
func parseDB(flag, raw, dataDir string) (dbTarget, error) {
	raw = strings.TrimSpace(raw)
	switch {
	case raw == "":
		path := filepath.Join(dataDir, collector.DBFile)
		return dbTarget{desc: "SQLite " + path}, nil
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		cfg, err := pgconn.ParseConfig(raw)
		if err != nil {
			// pgconn's message hides the password already.
			return dbTarget{}, fmt.Errorf("%s: not a usable PostgreSQL URL: %w", flag, err)
		}
		t := dbTarget{url: raw, postgres: true, password: cfg.Password}
		host := cfg.Host
		if strings.HasPrefix(host, "/") {
			host = "socket " + host
		}
		t.desc = fmt.Sprintf("PostgreSQL %s port %d database %q user %q", host, cfg.Port, cfg.Database, cfg.User)
		return t, nil
	case strings.HasPrefix(raw, "sqlite:"):
		path := strings.TrimPrefix(raw, "sqlite:")
		if path == "" {
			return dbTarget{}, fmt.Errorf("%s sqlite:: name the database file, e.g. sqlite:/var/lib/mnguard-server/mnguard.db", flag)
		}
		return dbTarget{url: raw, desc: "SQLite " + path}, nil
	case strings.Contains(raw, "://"):
		scheme, _, _ := strings.Cut(raw, "://")
		return dbTarget{}, fmt.Errorf("%s: database type %q is not supported: give postgres://USER@HOST:PORT/DATABASE, sqlite:PATH, or nothing for SQLite in the data directory", flag, scheme)
	case strings.Contains(raw, "="):
		return dbTarget{}, fmt.Errorf("%s: a keyword=value DSN is not taken: write it as a URL, postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full", flag)
	}
	return dbTarget{url: "sqlite:" + raw, desc: "SQLite " + raw}, nil
}

// scrub removes the password from an error's text.
func (t dbTarget) scrub(err error) string {
	s := oneLine(err)
	if t.password != "" {
		s = strings.ReplaceAll(s, t.password, "********")
	}
	return s
}

// Backoff between attempts to reach the database at start: doubling from
// the first to the last, each wait drawn from its upper half (jitter, so
// that replicas restarted together do not knock in step).
var (
	dbRetryFirst = time.Second
	dbRetryMax   = 30 * time.Second
)

// openDB opens the database. PostgreSQL that cannot be reached (down,
// starting, restarting, a network fault) is retried with backoff, each
// attempt logged, until it answers or ctx ends; anything else (a wrong
// password, a missing database, a schema newer than this program) fails
// at once.
func openDB(ctx context.Context, t dbTarget, log *slog.Logger) (*store.DB, error) {
	backoff := dbRetryFirst
	for attempt := 1; ; attempt++ {
		st, err := store.Open(ctx, t.url)
		if err == nil {
			if attempt > 1 {
				log.Info("database reachable", "db", t.desc, "attempts", attempt)
			}
			return st, nil
		}
		if !t.postgres || !retryable(err) {
			return nil, fmt.Errorf("open %s: %s", t.desc, t.scrub(err))
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("database unreachable, retrying", "db", t.desc, "attempt", attempt, "retry_in", wait.Round(time.Millisecond).String(), "err", t.scrub(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s unreachable, stopped after %d attempts: %s", t.desc, attempt, t.scrub(err))
		case <-time.After(wait):
		}
		backoff = min(2*backoff, dbRetryMax)
	}
}

// retryable reports whether err means the database could not be reached
// now but may be later.
func retryable(err error) bool {
	// The server's own answer first: a connection refused for a wrong
	// password (28P01) or a missing database (3D000) is no outage,
	// although it fails the connection like one.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exceptions; 57P01-57P03: shutting down,
		// crashed, starting up; 53300: too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" ||
			pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	if errors.Is(err, store.ErrUnavailable) {
		return true
	}
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &netErr) || errors.As(err, &opErr) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, os.ErrDeadlineExceeded)
}

// prepareDB readies the database for init and serve. SQLite: Init, as
// always. PostgreSQL: waits until the server answers, then compares the
// data directory's keys with those the database registered — before Init
// could create a missing one — initialises what is missing (the first
// replica creates the keys and the first admin) and registers the keys
// the database does not know yet.
func prepareDB(ctx context.Context, t dbTarget, dataDir string, log *slog.Logger, now time.Time) (collector.InitResult, error) {
	if !t.postgres {
		return collector.InitDB(ctx, dataDir, t.url, now)
	}
	st, err := openDB(ctx, t, log)
	if err != nil {
		return collector.InitResult{}, err
	}
	defer st.Close()
	if _, err := checkKeys(ctx, st, dataDir, now); err != nil {
		return collector.InitResult{}, err
	}
	res, err := collector.InitDB(ctx, dataDir, t.url, now)
	if err != nil {
		return collector.InitResult{}, fmt.Errorf("%s: %s", t.desc, t.scrub(err))
	}
	if err := registerKeys(ctx, st, dataDir, now); err != nil {
		return collector.InitResult{}, err
	}
	return res, nil
}
