package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"reflect"
	"regexp"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// unavailableError is an error of the database connection rather than of
// the statement: errors.Is matches both ErrUnavailable and the original.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return "database unavailable: " + e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// unavailable returns err wrapped so that it matches ErrUnavailable if it
// says the database could not be reached or the connection was lost;
// other errors (constraints, bad SQL, the caller's cancellation) it
// returns as they are.
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || !connectionError(err) {
		return err
	}
	return &unavailableError{err}
}

func connectionError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 57P01-03: the server shuts
		// down, crashed or is starting; 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" ||
			pe.Code == "57P03" || pe.Code == "53300"
	}
	var (
		ce *pgconn.ConnectError
		ne net.Error
	)
	switch {
	case errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, puddle.ErrClosedPool),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ENOENT):
		return true
	}
	// pgx's own words for a connection it closed after an error.
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

// The database/sql driver of a PostgreSQL store: pgx's stdlib driver, every
// error of which passes through unavailable. That way every query of the
// store, read or write, answers ErrUnavailable when PostgreSQL is away,
// without a check at each of them. It also translates the one piece of
// SQLite-only syntax the queries use (pgSQL).

// indexedBy matches SQLite's index hint, " INDEXED BY name".
var indexedBy = regexp.MustCompile(` INDEXED BY [a-z0-9_]+`)

// pgSQL is query q for PostgreSQL: without SQLite's INDEXED BY hints
// (PostgreSQL's planner takes none; with SQLite they keep a search on its
// narrow index, console.go).
func pgSQL(q string) string {
	if !strings.Contains(q, " INDEXED BY ") {
		return q
	}
	return indexedBy.ReplaceAllString(q, "")
}

type errConnector struct{ c driver.Connector }

func (c errConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.c.Connect(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	return &errConn{conn}, nil
}

func (c errConnector) Driver() driver.Driver { return c.c.Driver() }

// errConn forwards to pgx's stdlib.Conn, which implements every optional
// interface below.
type errConn struct{ c driver.Conn }

var (
	_ driver.ConnBeginTx            = (*errConn)(nil)
	_ driver.ConnPrepareContext     = (*errConn)(nil)
	_ driver.ExecerContext          = (*errConn)(nil)
	_ driver.QueryerContext         = (*errConn)(nil)
	_ driver.Pinger                 = (*errConn)(nil)
	_ driver.NamedValueChecker      = (*errConn)(nil)
	_ driver.SessionResetter        = (*errConn)(nil)
	_ driver.Validator              = (*errConn)(nil)
	_ driver.RowsColumnTypeScanType = (*errRows)(nil)
)

func (c *errConn) Prepare(q string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), q)
}

func (c *errConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.c.(driver.ConnPrepareContext).PrepareContext(ctx, pgSQL(q))
	if err != nil {
		return nil, unavailable(err)
	}
	return &errStmt{st}, nil
}

func (c *errConn) Close() error { return unavailable(c.c.Close()) }

func (c *errConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *errConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.c.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, unavailable(err)
	}
	return errTx{tx}, nil
}

func (c *errConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	r, err := c.c.(driver.ExecerContext).ExecContext(ctx, pgSQL(q), args)
	return r, unavailable(err)
}

func (c *errConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	r, err := c.c.(driver.QueryerContext).QueryContext(ctx, pgSQL(q), args)
	if err != nil {
		return nil, unavailable(err)
	}
	return &errRows{r}, nil
}

func (c *errConn) Ping(ctx context.Context) error {
	return unavailable(c.c.(driver.Pinger).Ping(ctx))
}

func (c *errConn) CheckNamedValue(v *driver.NamedValue) error {
	return c.c.(driver.NamedValueChecker).CheckNamedValue(v)
}

func (c *errConn) ResetSession(ctx context.Context) error {
	return unavailable(c.c.(driver.SessionResetter).ResetSession(ctx))
}

func (c *errConn) IsValid() bool {
	v, ok := c.c.(driver.Validator)
	return !ok || v.IsValid()
}

type errTx struct{ tx driver.Tx }

func (t errTx) Commit() error   { return unavailable(t.tx.Commit()) }
func (t errTx) Rollback() error { return unavailable(t.tx.Rollback()) }

type errStmt struct{ st driver.Stmt }

func (s *errStmt) Close() error  { return unavailable(s.st.Close()) }
func (s *errStmt) NumInput() int { return s.st.NumInput() }

// Exec and Query are the old interface, which database/sql does not call
// when the context methods are there.
func (s *errStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *errStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}

func (s *errStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	r, err := s.st.(driver.StmtExecContext).ExecContext(ctx, args)
	return r, unavailable(err)
}

func (s *errStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	r, err := s.st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, unavailable(err)
	}
	return &errRows{r}, nil
}

type errRows struct{ r driver.Rows }

func (r *errRows) Columns() []string { return r.r.Columns() }
func (r *errRows) Close() error      { return unavailable(r.r.Close()) }

func (r *errRows) Next(dest []driver.Value) error {
	err := r.r.Next(dest)
	if err == io.EOF {
		return err // the end of the rows, not a lost connection
	}
	return unavailable(err)
}

func (r *errRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.r.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *errRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.r.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *errRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.r.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *errRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.r.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *errRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.r.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
