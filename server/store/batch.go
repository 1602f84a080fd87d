package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrRetired is matched (errors.Is) by a report whose client certificate a
// renewed one has replaced: the terminal must use the renewed certificate.
var ErrRetired = errors.New("certificate retired")

// BatchReport is one report of a SaveReports batch.
type BatchReport struct {
	Report
	// CertSerial, when set, is the serial of the client certificate the
	// report came with. The report is then stored only while that
	// certificate belongs to the terminal and is neither revoked
	// (ErrRevoked) nor retired (ErrRetired), checked in the transaction
	// that stores it: the collector's caches of certificate facts never
	// decide whether a revoked terminal's report is taken.
	CertSerial string
}

// BatchResult is the outcome of one report of a batch: Err is nil when
// the report was stored (and committed, when SaveReports returned no error).
type BatchResult struct {
	ReportResult
	Err error
}

// qReportCert reads, for a report's client certificate, its terminal, the
// terminal's state and whether the certificate was revoked or retired.
const qReportCert = `SELECT c.terminal_id, t.state,
	CASE WHEN c.revoked_at IS NULL THEN 0 ELSE 1 END,
	CASE WHEN c.retired_at IS NULL THEN 0 ELSE 1 END
	FROM certificates c JOIN terminals t ON t.id = c.terminal_id WHERE c.serial = $1`

// qReportCertLocked is qReportCert on PostgreSQL, where the terminal's row
// stays locked until the transaction ends: no revocation commits between
// the check and the report it allows (see saveReport).
const qReportCertLocked = qReportCert + ` FOR UPDATE OF t`

// The savepoint of each report of a batch.
const (
	qSavepoint         = `SAVEPOINT report`
	qRollbackSavepoint = `ROLLBACK TO SAVEPOINT report`
	qReleaseSavepoint  = `RELEASE SAVEPOINT report`
)

// SaveReports stores many reports in one transaction: one commit (one
// fsync of SQLite's WAL, one round trip of PostgreSQL's) for all, which is
// what lets one collector take thousands of reports per second. Each report
// has its own result: one that fails (invalid, unknown or revoked terminal)
// is rolled back to its savepoint and the others are stored all the same.
// The returned error is the transaction's own (it could not begin or
// commit): then nothing of the batch is stored, whatever the results say.
// Results are in the order of rs; a report is stored as SaveReport would.
func (s *DB) SaveReports(ctx context.Context, rs []BatchReport) ([]BatchResult, error) {
	out := make([]BatchResult, len(rs))
	type prepared struct {
		i    int
		r    Report
		seqs []int64
	}
	todo := make([]prepared, 0, len(rs))
	for i, br := range rs {
		r, seqs, err := checkReport(br.Report)
		if err != nil {
			out[i].Err = fmt.Errorf("store: save report %s: %w", br.TerminalID, err)
			continue
		}
		todo = append(todo, prepared{i, r, seqs})
	}
	if len(todo) == 0 {
		return out, nil
	}
	// Row locks in one order (PostgreSQL): two batches of one terminal
	// never wait for each other crosswise.
	slices.SortStableFunc(todo, func(a, b prepared) int { return strings.Compare(a.r.TerminalID, b.r.TerminalID) })
	// No write lock on PostgreSQL: each report locks its terminal's row,
	// as saveReport does, so batches of other terminals (other replicas)
	// are stored side by side. A transaction retried after a deadlock
	// runs fn again from the start.
	// On SQLite every statement here was prepared at open (parsing SQL was
	// an eighth of the collector's CPU with 5,000 terminals reporting every
	// 60 s); pgx caches PostgreSQL's per connection.
	//
	// A report refused by its checks (unknown, revoked or retired) has
	// written nothing, and the others go on. A report that fails while it
	// writes leaves the transaction unusable on PostgreSQL: the batch is
	// then run again with a savepoint around each report, so that only
	// that report fails. Not with savepoints from the start: each is a
	// subtransaction on PostgreSQL, and a transaction with more than 64 of
	// them makes every other session's snapshot overflow PostgreSQL's
	// cache of them (batches hold up to 256 reports); on SQLite they were
	// two more statements a report.
	run := func(savepoints bool) error {
		return s.writeTx(ctx, s.reportLock, func(tx wtx) error {
			for _, p := range todo {
				out[p.i] = BatchResult{}
				if !savepoints {
					res, err := saveReportTx(ctx, tx, p.r, rs[p.i].CertSerial, p.seqs)
					switch {
					case err == nil:
						out[p.i].ReportResult = res
					case refusedReport(err):
						out[p.i].Err = fmt.Errorf("store: save report %s: %w", p.r.TerminalID, err)
					default:
						return &reportWriteError{fmt.Errorf("store: save report %s: %w", p.r.TerminalID, err)}
					}
					continue
				}
				if _, err := tx.exec(ctx, qSavepoint); err != nil {
					return fmt.Errorf("savepoint: %w", err)
				}
				res, err := saveReportTx(ctx, tx, p.r, rs[p.i].CertSerial, p.seqs)
				if err != nil {
					out[p.i].Err = fmt.Errorf("store: save report %s: %w", p.r.TerminalID, err)
					// A connection that failed fails this too: then the
					// whole transaction is lost, not only this report.
					if _, rerr := tx.exec(ctx, qRollbackSavepoint); rerr != nil {
						return errors.Join(err, fmt.Errorf("roll back to savepoint: %w", rerr))
					}
				} else {
					out[p.i].ReportResult = res
				}
				if _, err := tx.exec(ctx, qReleaseSavepoint); err != nil {
					return fmt.Errorf("release savepoint: %w", err)
				}
			}
			return nil
		})
	}
	err := run(false)
	var werr *reportWriteError
	if errors.As(err, &werr) {
		if len(todo) == 1 {
			// One report alone: its failure is its own, rolled back
			// with the transaction.
			out[todo[0].i].Err = werr.err
			return out, nil
		}
		err = run(true)
	}
	if err != nil {
		return out, fmt.Errorf("store: save %d reports: %w", len(todo), err)
	}
	return out, nil
}

// reportWriteError is a report's failure while it was being written: the
// transaction is rolled back (and the batch run again with savepoints).
type reportWriteError struct{ err error }

func (e *reportWriteError) Error() string { return e.err.Error() }

func (e *reportWriteError) Unwrap() error { return e.err }

// refusedReport says err is a report's refusal by its checks, before it
// wrote anything: the transaction goes on.
func refusedReport(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrRevoked) || errors.Is(err, ErrRetired)
}

// checkReport validates r and fills in its defaults as SaveReport does: a
// zero ReceivedAt means now, a posture without a fingerprint gets its
// SHA-256. It returns the events' sequence numbers as stored.
func checkReport(r Report) (Report, []int64, error) {
	if r.TerminalID == "" {
		return r, nil, errors.New("report of no terminal")
	}
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = time.Now()
	}
	if err := storableTime("received_at", r.ReceivedAt); err != nil {
		return r, nil, err
	}
	if r.Posture != nil {
		if err := storableTime("collected_at", r.CollectedAt); err != nil {
			return r, nil, err
		}
		if len(r.Fingerprint) == 0 {
			sum := sha256.Sum256(r.Posture)
			r.Fingerprint = sum[:]
		}
	}
	seqs := make([]int64, len(r.Events))
	for i, e := range r.Events {
		if e.TerminalID != "" && e.TerminalID != r.TerminalID {
			return r, nil, fmt.Errorf("event %d is of terminal %s", e.Seq, e.TerminalID)
		}
		var err error
		if seqs[i], err = seqArg(e.Seq); err != nil {
			return r, nil, err
		}
		if err := storableTime(fmt.Sprintf("event %d time", e.Seq), e.Time); err != nil {
			return r, nil, err
		}
		if err := storableTime(fmt.Sprintf("event %d received_at", e.Seq), e.ReceivedAt); err != nil {
			return r, nil, err
		}
	}
	return r, seqs, nil
}

// reportCertificate checks, in the transaction, that the certificate of
// serial belongs to the terminal and that neither is revoked, nor the
// certificate retired.
func reportCertificate(ctx context.Context, tx wtx, terminalID, serial string) error {
	var owner, state string
	var revoked, retired int
	q := qReportCert
	if tx.pg {
		q = qReportCertLocked
	}
	err := tx.queryRow(ctx, q, serial).Scan(&owner, &state, &revoked, &retired)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("certificate %s: %w", serial, ErrNotFound)
	case err != nil:
		return fmt.Errorf("read certificate %s: %w", serial, err)
	case owner != terminalID:
		return fmt.Errorf("certificate %s of terminal %s: %w", serial, terminalID, ErrNotFound)
	case state != StateActive || revoked != 0:
		return fmt.Errorf("terminal %w", ErrRevoked)
	case retired != 0:
		return fmt.Errorf("certificate %s: %w", serial, ErrRetired)
	}
	return nil
}

// saveReportTx stores one checked report in tx (see checkReport).
func saveReportTx(ctx context.Context, tx wtx, r Report, serial string, seqs []int64) (ReportResult, error) {
	var res ReportResult
	if serial != "" {
		if err := reportCertificate(ctx, tx, r.TerminalID, serial); err != nil {
			return res, err
		}
	} else if err := activeTerminal(ctx, tx, r.TerminalID); err != nil {
		return res, err
	}
	// Reports may be stored out of order; last_seen_at never goes back.
	if _, err := tx.exec(ctx, qLastSeen, r.TerminalID, dbTime(r.ReceivedAt)); err != nil {
		return res, fmt.Errorf("update last seen: %w", err)
	}
	if r.Posture != nil {
		if err := savePosture(ctx, tx, r); err != nil {
			return res, err
		}
	}
	if len(r.Events) == 0 {
		return res, nil
	}
	for i, e := range r.Events {
		received := e.ReceivedAt
		if received.IsZero() {
			received = r.ReceivedAt
		}
		ins, err := tx.exec(ctx, qInsertEvent, r.TerminalID, seqs[i], dbTime(e.Time), dbTime(received),
			e.Type, int64(e.Severity), e.Message, blobArg(e.Data))
		if err != nil {
			return res, fmt.Errorf("insert event %d: %w", e.Seq, err)
		}
		n, err := ins.RowsAffected()
		if err != nil {
			return res, fmt.Errorf("insert event %d: %w", e.Seq, err)
		}
		if n == 1 {
			res.Stored = append(res.Stored, e.Seq)
		} else {
			res.Duplicates = append(res.Duplicates, e.Seq)
		}
	}
	return res, nil
}
