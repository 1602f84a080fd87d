package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// busyTimeout is how long a connection waits for a lock held by another
// process (a backup, the sqlite3 shell) before it fails with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// DB is the SQL Store, on SQLite (OpenSQLite) or PostgreSQL (OpenPostgres):
// one store, the same queries, two dialects. With SQLite it is one database
// file in WAL mode.
//
// It holds two connection pools on the file. Every write goes through a
// pool of exactly one connection whose transactions begin IMMEDIATE, so
// writers in this process queue in database/sql rather than fail with
// SQLITE_BUSY, and read-modify-write transactions (token uses, the audit
// chain) are serialized. Reads go through a separate pool of query-only
// connections, which WAL lets run alongside the writer.
type DB struct {
	w *sql.DB // one connection, _txlock=immediate
	r *sql.DB // readers, _query_only
	// Statements prepared once, by query text: ws on the writer, rs on
	// the readers. Parsing SQL took a fifth of a report's CPU time.
	ws, rs map[string]*sql.Stmt
	// keys seals the terminals' offline keys; nil until SetKeySealer.
	keys atomic.Pointer[KeySealer]
	// pool is PostgreSQL's connection pool (nil with SQLite), under w and
	// r, which are then the same database/sql pool: PostgreSQL runs
	// writers side by side, and DB.write serializes them itself.
	pool *pgxpool.Pool
	// reportLock makes SaveReport take the write lock on PostgreSQL too (see
	// saveReport): only the benchmark that measures the lock sets it.
	reportLock bool
}

var _ Store = (*DB)(nil)

// Queries prepared at open: those that run for every agent report or RPC.
const (
	qTerminalState = `SELECT state FROM terminals WHERE id = $1`
	// On PostgreSQL the row stays locked until the transaction ends, so
	// that no revocation commits between the check and the write it
	// allows (SaveReport takes no write lock).
	qTerminalStateLocked = `SELECT state FROM terminals WHERE id = $1 FOR UPDATE`
	qLastSeen            = `UPDATE terminals SET last_seen_at = $2
	WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)`
	qFingerprint   = `SELECT fingerprint FROM postures WHERE terminal_id = $1`
	qUpsertPosture = `INSERT INTO postures (terminal_id, posture, received_at, collected_at, fingerprint)
	VALUES ($1, $2, $3, $4, $5)
	ON CONFLICT (terminal_id) DO UPDATE SET posture = excluded.posture, received_at = excluded.received_at,
		collected_at = excluded.collected_at, fingerprint = excluded.fingerprint
	WHERE postures.received_at <= excluded.received_at`
	qInsertHistory = `INSERT INTO posture_history (terminal_id, posture, received_at, collected_at, fingerprint)
	VALUES ($1, $2, $3, $4, $5)`
	qInsertEvent = `INSERT INTO events
	(terminal_id, seq, occurred_at, received_at, type, severity, message, data)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT (terminal_id, seq) DO NOTHING`
	qCertificate = `SELECT terminal_id, not_before, not_after, revoked_at, issued_at, first_used_at, retired_at, COALESCE(replaced_by, '')
	FROM certificates WHERE serial = $1`
	qOperatorToken = `SELECT k.id, k.name, o.role, k.hash, k.created_at, k.revoked_at, k.expires_at, k.note,
	o.disabled_at FROM operator_tokens k JOIN operators o ON o.name = k.name WHERE k.hash = $1`
)

// prepare prepares each query on db.
func prepare(ctx context.Context, db *sql.DB, queries ...string) (map[string]*sql.Stmt, error) {
	m := make(map[string]*sql.Stmt, len(queries))
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			for _, st := range m {
				st.Close()
			}
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		m[q] = st
	}
	return m, nil
}

// OpenSQLite opens the database at path, creating the file (mode 0600) if it
// is missing, and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	s, err := openSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	return s, nil
}

func openSQLite(ctx context.Context, path string) (_ *DB, err error) {
	// The driver reads everything after '?' as its parameters, and a name
	// starting with "file:" or ':' as a URI or a special database.
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":") {
		return nil, errors.New("want the path of a database file, not a URI, :memory: or a name with '?'")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	busy := strconv.FormatInt(busyTimeout.Milliseconds(), 10)

	s := &DB{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The writer gets a 64 MiB page cache (SQLite's default is 2 MiB):
	// reports of a large fleet update rows all over the postures,
	// terminals and verdicts, and with 19,500 terminals reporting a
	// quarter of the collector's CPU went to reading pages back from the
	// operating system, a pread each. It checkpoints the WAL into the
	// database every 10,000 pages (40 MiB; SQLite's default is 1,000): a
	// page the reports rewrite all the time (a terminal's row, its
	// posture) is copied once per checkpoint, and at 1,667 reports/s the
	// checkpoints took half the CPU they took at 1,000 (2.0 s of 30 s, not
	// 4.0 s, two runs each).
	s.w, err = sql.Open("sqlite", path+"?_txlock=immediate&_busy_timeout="+busy+
		"&_foreign_keys=1&_journal_mode=WAL&_synchronous=NORMAL&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(10000)")
	if err != nil {
		return nil, err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	// journal_mode=WAL silently stays as it was where the file system
	// cannot do WAL; readers would then block the writer.
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return nil, err
	}
	if !strings.EqualFold(mode, "wal") {
		return nil, fmt.Errorf("journal mode is %q, not WAL: is the file on a network file system?", mode)
	}
	ms, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, s.w, ms); err != nil {
		return nil, err
	}
	s.ws, err = prepare(ctx, s.w, qTerminalState, qLastSeen, qFingerprint, qUpsertPosture, qInsertHistory, qInsertEvent,
		qReportCert, qSavepoint, qRollbackSavepoint, qReleaseSavepoint)
	if err != nil {
		return nil, err
	}

	// Readers get a 16 MiB page cache each (SQLite's default is 2 MiB):
	// the console's lists of 10,000 terminals read more than that.
	s.r, err = sql.Open("sqlite", path+"?_busy_timeout="+busy+"&_foreign_keys=1&_query_only=1&_pragma=cache_size(-16384)")
	if err != nil {
		return nil, err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	s.rs, err = prepare(ctx, s.r, qCertificate, qOperatorToken)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *DB) Close() error {
	var errs []error
	for _, st := range s.rs {
		errs = append(errs, st.Close())
	}
	for _, st := range s.ws {
		errs = append(errs, st.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil && s.w != s.r {
		errs = append(errs, s.w.Close())
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Ping implements Store: it reads the database through a reader connection.
// It does not wait for the writer, so a long queue of writes does not make
// the store look down.
func (s *DB) Ping(ctx context.Context) error {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// wtx is a write transaction that runs the prepared statements where it can.
type wtx struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	// pg: on PostgreSQL, where other transactions run alongside (see
	// DB.write).
	pg bool
}

// lock takes the store's write lock for the rest of the transaction on
// PostgreSQL (taken twice it is held once); SQLite's single writer
// holds it already.
func (w wtx) lock(ctx context.Context) error {
	if !w.pg {
		return nil
	}
	if _, err := w.tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, WriteLockKey); err != nil {
		return fmt.Errorf("take the write lock: %w", err)
	}
	return nil
}

// stmt returns the prepared statement of q in the transaction, nil if q is
// not prepared.
func (w wtx) stmt(ctx context.Context, q string) *sql.Stmt {
	if st := w.stmts[q]; st != nil {
		return w.tx.StmtContext(ctx, st)
	}
	return nil
}

func (w wtx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := w.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return w.tx.ExecContext(ctx, q, args...)
}

func (w wtx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := w.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return w.tx.QueryRowContext(ctx, q, args...)
}

// write runs fn in a write transaction and commits it if fn returns nil.
//
// SQLite runs one write transaction at a time (one writer connection). So
// does PostgreSQL, across every replica on the database: each write
// transaction first takes a transaction-level advisory lock (WriteLockKey),
// so that the read-modify-write invariants the code keeps under SQLite's
// single writer (the audit chain, token uses, compare-and-set versions,
// TOTP steps, exemption limits) hold as they are, in READ COMMITTED: every
// statement after the lock sees every write committed before it. A
// transaction PostgreSQL aborts as a deadlock or serialization failure is
// run again, at most maxWriteAttempts times, so fn must start from
// scratch each time. Errors of the connection match ErrUnavailable.
func (s *DB) write(ctx context.Context, fn func(tx wtx) error) error {
	return s.writeTx(ctx, true, fn)
}

// writeTx is write, without the PostgreSQL write lock unless lock is set:
// for transactions that keep their invariants with row locks alone
// (saveReport).
func (s *DB) writeTx(ctx context.Context, lock bool, fn func(tx wtx) error) error {
	if s.pool == nil {
		return s.writeOnce(ctx, false, fn)
	}
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, lock, fn)
		if err == nil || attempt >= maxWriteAttempts || !retryable(err) {
			return unavailable(err)
		}
		if werr := retryWait(ctx, attempt); werr != nil {
			return err
		}
	}
}

func (s *DB) writeOnce(ctx context.Context, lock bool, fn func(tx wtx) error) (err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	w := wtx{tx, s.ws, s.pool != nil}
	if lock {
		if err := w.lock(ctx); err != nil {
			return err
		}
	}
	if err := fn(w); err != nil {
		return err
	}
	return tx.Commit()
}

// readRow runs a one-row query on the readers.
func (s *DB) readRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := s.rs[q]; st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.r.QueryRowContext(ctx, q, args...)
}

// blobArg stores nil as NULL and anything else, also empty, as a BLOB.
func blobArg(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// validSerial reports whether serial is lowercase hex, as Certificate says.
func validSerial(serial string) error {
	if serial == "" {
		return errors.New("certificate serial is empty")
	}
	for _, r := range serial {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return fmt.Errorf("certificate serial %q is not lowercase hex", serial)
		}
	}
	return nil
}

func checkCertificate(c Certificate) error {
	if err := validSerial(c.Serial); err != nil {
		return err
	}
	if c.NotBefore.IsZero() || c.NotAfter.IsZero() {
		return fmt.Errorf("certificate %s: validity period not set", c.Serial)
	}
	if err := storableTime("not_before", c.NotBefore); err != nil {
		return err
	}
	return storableTime("not_after", c.NotAfter)
}

// Enroll implements Store.
func (s *DB) Enroll(ctx context.Context, tokenHash []byte, now time.Time, t Terminal, c Certificate) error {
	if err := s.enroll(ctx, tokenHash, now, t, c); err != nil {
		return fmt.Errorf("store: enroll %s: %w", t.ID, err)
	}
	return nil
}

func (s *DB) enroll(ctx context.Context, tokenHash []byte, now time.Time, t Terminal, c Certificate) error {
	if t.ID == "" {
		return errors.New("terminal ID is empty")
	}
	if len(tokenHash) == 0 {
		return ErrTokenUnknown
	}
	if now.IsZero() {
		now = time.Now()
	}
	if t.EnrolledAt.IsZero() {
		t.EnrolledAt = now
	}
	if c.TerminalID == "" {
		c.TerminalID = t.ID
	}
	if c.TerminalID != t.ID {
		return fmt.Errorf("certificate %s is for terminal %s", c.Serial, c.TerminalID)
	}
	if err := checkCertificate(c); err != nil {
		return err
	}
	if err := storableTime("now", now); err != nil {
		return err
	}
	if err := storableTime("enrolled_at", t.EnrolledAt); err != nil {
		return err
	}
	offlineKey, err := s.sealOfflineKey(t.ID, t.OfflineKey)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx wtx) error {
		var (
			tokenID   string
			expiresAt time.Time
			usesLeft  int64
		)
		err := tx.queryRow(ctx, `SELECT id, expires_at, uses_left FROM enrollment_tokens WHERE hash = $1`,
			tokenHash).Scan(&tokenID, scanTime(&expiresAt), &usesLeft)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrTokenUnknown
		case err != nil:
			return err
		case !expiresAt.After(now):
			return ErrTokenExpired
		case usesLeft <= 0:
			return ErrTokenExhausted
		}
		// The condition repeats the check so that the statement alone
		// can never overdraw the token, whatever the isolation.
		res, err := tx.exec(ctx, `UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = $1 AND uses_left > 0`, tokenID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return ErrTokenExhausted
		}
		if _, err := tx.exec(ctx, `INSERT INTO terminals
	(id, host, hostname, state, enrolled_at, last_seen_at, revoked_at, revoke_reason, offline_key, offline_key_sealed, enrolled_with)
	VALUES ($1, $2, $3, $4, $5, NULL, NULL, '', $6, 1, $7)`,
			t.ID, blobArg(t.Host), t.Hostname, StateActive, dbTime(t.EnrolledAt), blobArg(offlineKey), tokenID); err != nil {
			return fmt.Errorf("insert terminal: %w", err)
		}
		if err := insertCertificate(ctx, tx, c); err != nil {
			return err
		}
		return nil
	})
}

func insertCertificate(ctx context.Context, tx wtx, c Certificate) error {
	if _, err := tx.exec(ctx, `INSERT INTO certificates (serial, terminal_id, not_before, not_after, revoked_at)
	VALUES ($1, $2, $3, $4, $5)`,
		c.Serial, c.TerminalID, dbTime(c.NotBefore), dbTime(c.NotAfter), dbTime(c.RevokedAt)); err != nil {
		return fmt.Errorf("insert certificate %s: %w", c.Serial, err)
	}
	return nil
}

// terminalState returns the state of the terminal, ErrNotFound if unknown.
func terminalState(ctx context.Context, tx wtx, id string) (string, error) {
	var state string
	q := qTerminalState
	if tx.pg {
		q = qTerminalStateLocked
	}
	err := tx.queryRow(ctx, q, id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("terminal %w", ErrNotFound)
	}
	return state, err
}

// activeTerminal returns nil if the terminal is active, else an error
// wrapping ErrNotFound or ErrRevoked.
func activeTerminal(ctx context.Context, tx wtx, id string) error {
	state, err := terminalState(ctx, tx, id)
	if err != nil {
		return err
	}
	if state != StateActive {
		return fmt.Errorf("terminal %w", ErrRevoked)
	}
	return nil
}

// AddCertificate implements Store.
func (s *DB) AddCertificate(ctx context.Context, c Certificate) error {
	err := checkCertificate(c)
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			if err := activeTerminal(ctx, tx, c.TerminalID); err != nil {
				return err
			}
			return insertCertificate(ctx, tx, c)
		})
	}
	if err != nil {
		return fmt.Errorf("store: add certificate %s of %s: %w", c.Serial, c.TerminalID, err)
	}
	return nil
}

// Certificate implements Store.
func (s *DB) Certificate(ctx context.Context, serial string) (Certificate, error) {
	c := Certificate{Serial: serial}
	err := s.readRow(ctx, qCertificate, serial).
		Scan(&c.TerminalID, scanTime(&c.NotBefore), scanTime(&c.NotAfter), scanTime(&c.RevokedAt),
			scanTime(&c.IssuedAt), scanTime(&c.FirstUsedAt), scanTime(&c.RetiredAt), &c.ReplacedBy)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Certificate{}, fmt.Errorf("store: certificate %s: %w", serial, err)
	}
	return c, nil
}

// terminalQuery selects terminals with their newest certificate, latest
// posture and history count, never the offline key (see OfflineKey).
// Lists (full false) leave out the posture bytes.
func terminalQuery(full bool, where string) string {
	secret := "NULL, NULL"
	if full {
		secret = "NULL, p.posture"
	}
	return `SELECT t.id, t.host, t.hostname, t.state, t.enrolled_at, t.last_seen_at, t.revoked_at,
	t.revoke_reason, ` + secret + `, c.serial, c.not_after, p.received_at,
	(SELECT COUNT(*) FROM posture_history h WHERE h.terminal_id = t.id)
FROM terminals t
LEFT JOIN postures p ON p.terminal_id = t.id
LEFT JOIN certificates c ON c.serial = (
	SELECT c2.serial FROM certificates c2 WHERE c2.terminal_id = t.id
	ORDER BY c2.not_after DESC, c2.serial DESC LIMIT 1)
` + where
}

func scanTerminal(sc interface{ Scan(...any) error }) (Terminal, error) {
	var (
		t      Terminal
		serial sql.NullString
	)
	err := sc.Scan(&t.ID, &t.Host, &t.Hostname, &t.State, scanTime(&t.EnrolledAt), scanTime(&t.LastSeenAt),
		scanTime(&t.RevokedAt), &t.RevokeReason, &t.OfflineKey, &t.Posture, &serial, scanTime(&t.CertNotAfter),
		scanTime(&t.PostureReceivedAt), &t.PostureHistoryCount)
	t.CertSerial = serial.String
	return t, err
}

// Terminal implements Store.
func (s *DB) Terminal(ctx context.Context, id string) (Terminal, error) {
	row := s.r.QueryRowContext(ctx, terminalQuery(true, "WHERE t.id = $1"), id)
	t, err := scanTerminal(row)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Terminal{}, fmt.Errorf("store: terminal %s: %w", id, err)
	}
	if t.Posture == nil && !t.PostureReceivedAt.IsZero() {
		t.Posture = []byte{} // an empty posture, not none
	}
	return t, nil
}

// Terminals implements Store. The list leaves out the posture bytes and,
// since it is for display, the offline keys; PostureReceivedAt is set.
func (s *DB) Terminals(ctx context.Context) ([]Terminal, error) {
	ts, err := s.terminals(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: terminals: %w", err)
	}
	return ts, nil
}

func (s *DB) terminals(ctx context.Context) ([]Terminal, error) {
	rows, err := s.r.QueryContext(ctx, terminalQuery(false, "ORDER BY t.hostname, t.id"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ts []Terminal
	for rows.Next() {
		t, err := scanTerminal(rows)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

// RevokeTerminal implements Store. Revoking a revoked terminal keeps the
// first time and reason (and is audited again).
func (s *DB) RevokeTerminal(ctx context.Context, id, reason string, now time.Time, a AuditEntry) error {
	if now.IsZero() {
		now = time.Now()
	}
	err := storableTime("now", now)
	if err == nil {
		err = checkAudit(&a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			state, err := terminalState(ctx, tx, id)
			if err != nil {
				return err
			}
			if state != StateRevoked {
				if _, err := tx.exec(ctx, `UPDATE terminals SET state = $2, revoked_at = $3, revoke_reason = $4 WHERE id = $1`,
					id, StateRevoked, dbTime(now), reason); err != nil {
					return err
				}
			}
			if _, err = tx.exec(ctx, `UPDATE certificates SET revoked_at = (SELECT revoked_at FROM terminals WHERE id = $1)
	WHERE terminal_id = $1 AND revoked_at IS NULL`, id); err != nil {
				return err
			}
			// Its exemptions end with it (the agent can no longer hear of
			// a revocation; its certificate is refused from now on).
			if _, err = tx.exec(ctx, `UPDATE exemptions SET revoked_at = $2, revoked_by = 'terminal revoked', revoke_reason = $3
	WHERE terminal_id = $1 AND revoked_at IS NULL AND not_after > $2`, id, dbTime(now), reason); err != nil {
				return err
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: revoke terminal %s: %w", id, err)
	}
	return nil
}

// SaveReport implements Store. Events without a ReceivedAt get the report's;
// a zero Report.ReceivedAt means now. A posture without a fingerprint is
// fingerprinted by its SHA-256.
func (s *DB) SaveReport(ctx context.Context, r Report) (ReportResult, error) {
	res, err := s.saveReport(ctx, r)
	if err != nil {
		return ReportResult{}, fmt.Errorf("store: save report %s: %w", r.TerminalID, err)
	}
	return res, nil
}

func (s *DB) saveReport(ctx context.Context, r Report) (ReportResult, error) {
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = time.Now()
	}
	if err := storableTime("received_at", r.ReceivedAt); err != nil {
		return ReportResult{}, err
	}
	if r.Posture != nil {
		if err := storableTime("collected_at", r.CollectedAt); err != nil {
			return ReportResult{}, err
		}
		if len(r.Fingerprint) == 0 {
			sum := sha256.Sum256(r.Posture)
			r.Fingerprint = sum[:]
		}
	}
	seqs := make([]int64, len(r.Events))
	for i, e := range r.Events {
		if e.TerminalID != "" && e.TerminalID != r.TerminalID {
			return ReportResult{}, fmt.Errorf("event %d is of terminal %s", e.Seq, e.TerminalID)
		}
		var err error
		if seqs[i], err = seqArg(e.Seq); err != nil {
			return ReportResult{}, err
		}
		if err := storableTime(fmt.Sprintf("event %d time", e.Seq), e.Time); err != nil {
			return ReportResult{}, err
		}
		if err := storableTime(fmt.Sprintf("event %d received_at", e.Seq), e.ReceivedAt); err != nil {
			return ReportResult{}, err
		}
	}

	// On PostgreSQL a report takes no write lock, so that reports of
	// different terminals are stored side by side: it locks its terminal's
	// row (activeTerminal), which serializes it with the same terminal's
	// other reports (the posture history, last_seen_at) and with
	// revocation; events are stored once by their primary key; nothing
	// else is read and written.
	var res ReportResult
	err := s.writeTx(ctx, s.reportLock, func(tx wtx) error {
		res = ReportResult{}
		if err := activeTerminal(ctx, tx, r.TerminalID); err != nil {
			return err
		}
		// Reports may be stored out of order; last_seen_at never goes back.
		if _, err := tx.exec(ctx, qLastSeen, r.TerminalID, dbTime(r.ReceivedAt)); err != nil {
			return fmt.Errorf("update last seen: %w", err)
		}
		if r.Posture != nil {
			if err := savePosture(ctx, tx, r); err != nil {
				return err
			}
		}
		if len(r.Events) == 0 {
			return nil
		}
		stmt := tx.stmt(ctx, qInsertEvent)
		for i, e := range r.Events {
			received := e.ReceivedAt
			if received.IsZero() {
				received = r.ReceivedAt
			}
			args := []any{r.TerminalID, seqs[i], dbTime(e.Time), dbTime(received),
				e.Type, int64(e.Severity), e.Message, blobArg(e.Data)}
			var (
				ins sql.Result
				err error
			)
			if stmt != nil {
				ins, err = stmt.ExecContext(ctx, args...)
			} else { // PostgreSQL: pgx caches the prepared statement itself
				ins, err = tx.tx.ExecContext(ctx, qInsertEvent, args...)
			}
			if err != nil {
				return fmt.Errorf("insert event %d: %w", e.Seq, err)
			}
			n, err := ins.RowsAffected()
			if err != nil {
				return fmt.Errorf("insert event %d: %w", e.Seq, err)
			}
			if n == 1 {
				res.Stored = append(res.Stored, e.Seq)
			} else {
				res.Duplicates = append(res.Duplicates, e.Seq)
			}
		}
		return nil
	})
	if err != nil {
		return ReportResult{}, err
	}
	return res, nil
}

// savePosture replaces the latest posture, unless the stored one arrived
// later, and adds a history row if the fingerprint differs from the latest.
func savePosture(ctx context.Context, tx wtx, r Report) error {
	var prev []byte
	err := tx.queryRow(ctx, qFingerprint, r.TerminalID).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read posture fingerprint: %w", err)
	}
	changed := errors.Is(err, sql.ErrNoRows) || !bytes.Equal(prev, r.Fingerprint)
	if _, err := tx.exec(ctx, qUpsertPosture,
		r.TerminalID, r.Posture, dbTime(r.ReceivedAt), dbTime(r.CollectedAt), r.Fingerprint); err != nil {
		return fmt.Errorf("upsert posture: %w", err)
	}
	if !changed {
		return nil
	}
	if _, err := tx.exec(ctx, qInsertHistory,
		r.TerminalID, r.Posture, dbTime(r.ReceivedAt), dbTime(r.CollectedAt), r.Fingerprint); err != nil {
		return fmt.Errorf("insert posture history: %w", err)
	}
	return nil
}

// defaultLimit is what a limit <= 0 means in Events and AuditLog.
const defaultLimit = 100

// Events implements Store: agent and server events merged, newest first by
// received_at (a server event's is its time); on equal times server events
// first, then by seq or ID, descending. A limit <= 0 means 100.
func (s *DB) Events(ctx context.Context, terminalID string, limit int) ([]Event, error) {
	evs, err := s.events(ctx, terminalID, limit)
	if err != nil {
		return nil, fmt.Errorf("store: events of %q: %w", terminalID, err)
	}
	return evs, nil
}

// eventsQuery merges the newest limit ($1) rows of each table, each read
// backwards along its (terminal_id,) received_at index, and keeps the
// newest limit of those: at most twice limit rows are sorted. The list's
// order is received_at, then source (server first), then seq or ID, all
// descending. whereAgent and whereServer are the tables' WHERE clauses.
func eventsQuery(whereAgent, whereServer string) string {
	return `SELECT terminal_id, seq, occurred_at, received_at, type, severity, message, data, source, k FROM (
	SELECT * FROM (SELECT terminal_id, seq, occurred_at, received_at, type, severity, message, data,
		'agent' AS source, seq AS k
		FROM events ` + whereAgent + ` ORDER BY received_at DESC, seq DESC LIMIT $1) a
	UNION ALL
	SELECT * FROM (SELECT terminal_id, 0, occurred_at, received_at, type, severity, message, data,
		'server', id
		FROM server_events ` + whereServer + ` ORDER BY received_at DESC, id DESC LIMIT $1) s
) e ORDER BY received_at DESC, source DESC, k DESC LIMIT $1`
}

func (s *DB) events(ctx context.Context, terminalID string, limit int) ([]Event, error) {
	return s.filterEvents(ctx, EventFilter{TerminalID: terminalID, Limit: limit})
}

// AddServerEvent implements Store. A zero Time means now; the ID is
// assigned by the store and e.ID ignored. The terminal must be known
// (ErrNotFound otherwise), revoked ones included.
func (s *DB) AddServerEvent(ctx context.Context, e ServerEvent) error {
	if err := s.addServerEvent(ctx, e); err != nil {
		return fmt.Errorf("store: add server event %s of %s: %w", e.Type, e.TerminalID, err)
	}
	return nil
}

func (s *DB) addServerEvent(ctx context.Context, e ServerEvent) error {
	switch {
	case e.TerminalID == "":
		return errors.New("terminal ID is empty")
	case e.Type == "":
		return errors.New("event type is empty")
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if err := storableTime("time", e.Time); err != nil {
		return err
	}
	return s.write(ctx, func(tx wtx) error {
		if _, err := terminalState(ctx, tx, e.TerminalID); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `INSERT INTO server_events
	(terminal_id, occurred_at, received_at, type, severity, message, data)
	VALUES ($1, $2, $2, $3, $4, $5, $6)`,
			e.TerminalID, dbTime(e.Time), e.Type, int64(e.Severity), e.Message, blobArg(e.Data))
		return err
	})
}

// CreateEnrollmentToken implements Store. A zero UsesLeft means Uses, a
// zero CreatedAt now.
func (s *DB) CreateEnrollmentToken(ctx context.Context, t EnrollmentToken, a AuditEntry) error {
	if err := s.createEnrollmentToken(ctx, t, a); err != nil {
		return fmt.Errorf("store: create enrollment token %s: %w", t.ID, err)
	}
	return nil
}

func (s *DB) createEnrollmentToken(ctx context.Context, t EnrollmentToken, a AuditEntry) error {
	switch {
	case t.ID == "":
		return errors.New("token ID is empty")
	case len(t.Hash) == 0:
		return errors.New("token hash is empty")
	case t.ExpiresAt.IsZero():
		return errors.New("token has no expiry")
	case t.Uses < 1 || t.UsesLeft < 0 || t.UsesLeft > t.Uses:
		return fmt.Errorf("want 1 <= uses (%d) and 0 <= uses left (%d) <= uses", t.Uses, t.UsesLeft)
	}
	if t.UsesLeft == 0 {
		t.UsesLeft = t.Uses
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	if err := checkAudit(&a); err != nil {
		return err
	}
	return s.write(ctx, func(tx wtx) error {
		if _, err := tx.exec(ctx, `INSERT INTO enrollment_tokens
	(id, hash, created_at, expires_at, uses, uses_left, created_by, note)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			t.ID, t.Hash, dbTime(t.CreatedAt), dbTime(t.ExpiresAt), t.Uses, t.UsesLeft, t.CreatedBy, t.Note); err != nil {
			return err
		}
		_, err := appendAuditTx(ctx, tx, a)
		return err
	})
}

// EnrollmentTokens implements Store, oldest first.
func (s *DB) EnrollmentTokens(ctx context.Context) ([]EnrollmentToken, error) {
	ts, err := s.enrollmentTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: enrollment tokens: %w", err)
	}
	return ts, nil
}

func (s *DB) enrollmentTokens(ctx context.Context) ([]EnrollmentToken, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, hash, created_at, expires_at, uses, uses_left, created_by, note
	FROM enrollment_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ts []EnrollmentToken
	for rows.Next() {
		var t EnrollmentToken
		if err := rows.Scan(&t.ID, &t.Hash, scanTime(&t.CreatedAt), scanTime(&t.ExpiresAt),
			&t.Uses, &t.UsesLeft, &t.CreatedBy, &t.Note); err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

// AppendAudit implements Store. A zero Time means now; Actor and Action are
// required. Appends are serialized by the single writer connection, and the
// schema refuses two entries with one predecessor, so the chain never forks.
func (s *DB) AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	e, err := s.appendAudit(ctx, e)
	if err != nil {
		return AuditEntry{}, fmt.Errorf("store: append audit %s by %s: %w", e.Action, e.Actor, err)
	}
	return e, nil
}

func (s *DB) appendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	if isNoAudit(e) {
		return e, errors.New("NoAudit is no entry to append")
	}
	var out AuditEntry
	err := s.write(ctx, func(tx wtx) error {
		var err error
		out, err = appendAuditTx(ctx, tx, e)
		return err
	})
	if err != nil {
		return e, err
	}
	return out, nil
}

// NoAudit is the audit entry that appends none where a change takes one. It is
// for test fixtures that build a store's content directly; no operator's
// action passes it (TestChangesAuditedOrNotAtAll in package api calls
// every state-changing RPC with the audit log refusing writes).
var NoAudit = AuditEntry{Action: noAuditAction}

const noAuditAction = "\x00no audit entry"

func isNoAudit(e AuditEntry) bool { return e.Action == noAuditAction && e.Actor == "" }

// checkAudit fills the defaults of an entry to append and validates it.
func checkAudit(e *AuditEntry) error {
	if isNoAudit(*e) {
		return nil
	}
	if e.Actor == "" || e.Action == "" {
		return errors.New("audit: actor and action are required")
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	return storableTime("audit time", e.Time)
}

// appendAuditTx appends e to the audit log inside the write transaction
// tx, so that the entry and the change it records commit together or not
// at all.
func appendAuditTx(ctx context.Context, tx wtx, e AuditEntry) (AuditEntry, error) {
	if isNoAudit(e) {
		return e, nil
	}
	if err := checkAudit(&e); err != nil {
		return e, err
	}
	// Held already, unless in a transaction that took no write lock.
	if err := tx.lock(ctx); err != nil {
		return e, err
	}
	var (
		lastID   int64
		lastHash []byte
	)
	err := tx.queryRow(ctx, `SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1`).Scan(&lastID, &lastHash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		lastID, lastHash = 0, auditGenesis
	case err != nil:
		return e, err
	}
	e.ID, e.PrevHash = lastID+1, lastHash
	e.Hash = AuditHash(e.PrevHash, e)
	_, err = tx.exec(ctx, `INSERT INTO audit_log (id, at, actor, action, target, detail, prev_hash, hash)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		e.ID, dbTime(e.Time), e.Actor, e.Action, e.Target, e.Detail, e.PrevHash, e.Hash)
	if err != nil {
		return e, fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return e, nil
}

const auditColumns = `SELECT id, at, actor, action, target, detail, prev_hash, hash FROM audit_log `

func scanAudit(rows *sql.Rows) (AuditEntry, error) {
	var e AuditEntry
	err := rows.Scan(&e.ID, scanTime(&e.Time), &e.Actor, &e.Action, &e.Target, &e.Detail, &e.PrevHash, &e.Hash)
	return e, err
}

// AuditLog implements Store: the newest entries first; a limit <= 0 means 100.
func (s *DB) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	es, err := s.auditLog(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit log: %w", err)
	}
	return es, nil
}

func (s *DB) auditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = defaultLimit
	}
	rows, err := s.r.QueryContext(ctx, auditColumns+`ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var es []AuditEntry
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, rows.Err()
}

// VerifyAuditChain walks the whole audit log in order and returns an error
// wrapping an *AuditChainError that names the first entry not chained to
// its predecessor. It cannot see entries cut off the end of the log: keep
// the newest ID and Hash elsewhere (a report, an export) to detect that.
func (s *DB) VerifyAuditChain(ctx context.Context) error {
	v, err := s.VerifyAudit(ctx, time.Time{})
	if err != nil {
		return err
	}
	if v.Broken != nil {
		return fmt.Errorf("store: verify audit chain: %w", v.Broken)
	}
	return nil
}
