package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Dialects of SQL a DB speaks (DB.Dialect).
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// Open opens the store a URL names: "postgres://..." or "postgresql://..."
// is PostgreSQL (OpenPostgres); "sqlite:PATH" or a plain PATH is an
// SQLite file (OpenSQLite). Any other scheme is an error, so that a typo
// cannot create a stray SQLite file named like a URL.
func Open(ctx context.Context, url string) (*DB, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return OpenPostgres(ctx, url)
	case strings.HasPrefix(url, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(url, "sqlite:"))
	case strings.Contains(url, "://"):
		scheme, _, _ := strings.Cut(url, "://")
		return nil, fmt.Errorf("store: open: unknown database scheme %q: want postgres://, postgresql://, sqlite:PATH or a file path", scheme)
	case url == "":
		return nil, errors.New("store: open: no database given: want postgres://..., sqlite:PATH or a file path")
	}
	return OpenSQLite(ctx, url)
}

// Dialect is DialectSQLite or DialectPostgres.
func (s *DB) Dialect() string {
	if s.pool != nil {
		return DialectPostgres
	}
	return DialectSQLite
}

// Postgres returns the connection pool of a PostgreSQL store, nil for
// SQLite: for what database/sql cannot do, such as LISTEN (acquire a
// connection of its own and keep it; at most PostgresReserved at a time
// are free for that). It is closed with the store; do not close it.
func (s *DB) Postgres() *pgxpool.Pool { return s.pool }
