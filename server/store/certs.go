package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// certIssued is the time a certificate counts as issued at: a renewal's
// issued_at, else (enrollment certificates, and those from before
// migration 0006) its not_before.
const certIssued = `COALESCE(issued_at, not_before)`

// CheckEnrollmentToken implements Store.
func (s *DB) CheckEnrollmentToken(ctx context.Context, tokenHash []byte, now time.Time) error {
	if len(tokenHash) == 0 {
		return ErrTokenUnknown
	}
	var (
		expiresAt time.Time
		usesLeft  int64
	)
	err := s.readRow(ctx, `SELECT expires_at, uses_left FROM enrollment_tokens WHERE hash = $1`, tokenHash).
		Scan(scanTime(&expiresAt), &usesLeft)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrTokenUnknown
	case err != nil:
		return fmt.Errorf("store: check enrollment token: %w", err)
	case !expiresAt.After(now):
		return ErrTokenExpired
	case usesLeft <= 0:
		return ErrTokenExhausted
	}
	return nil
}

// LastCertificateIssued implements Store.
func (s *DB) LastCertificateIssued(ctx context.Context, terminalID string) (time.Time, error) {
	var last time.Time
	err := s.readRow(ctx, `SELECT MAX(`+certIssued+`) FROM certificates WHERE terminal_id = $1`, terminalID).Scan(scanTime(&last))
	if err == nil && last.IsZero() {
		err = ErrNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("store: last certificate of %s: %w", terminalID, err)
	}
	return last, nil
}

// RenewCertificate implements Store.
func (s *DB) RenewCertificate(ctx context.Context, c Certificate, replaces string, minInterval time.Duration, a AuditEntry) error {
	err := s.renewCertificate(ctx, c, replaces, minInterval, a)
	if err != nil {
		return fmt.Errorf("store: renew certificate %s of %s: %w", replaces, c.TerminalID, err)
	}
	return nil
}

func (s *DB) renewCertificate(ctx context.Context, c Certificate, replaces string, minInterval time.Duration, a AuditEntry) error {
	if err := checkCertificate(c); err != nil {
		return err
	}
	if c.IssuedAt.IsZero() {
		return errors.New("issue time not set")
	}
	if err := storableTime("issued_at", c.IssuedAt); err != nil {
		return err
	}
	if !c.RevokedAt.IsZero() || !c.RetiredAt.IsZero() || !c.FirstUsedAt.IsZero() {
		return errors.New("a renewed certificate starts unused, unretired and unrevoked")
	}
	if err := validSerial(replaces); err != nil {
		return err
	}
	return s.write(ctx, func(tx wtx) error {
		if err := activeTerminal(ctx, tx, c.TerminalID); err != nil {
			return err
		}
		var (
			owner    string
			replaced time.Time
		)
		err := tx.queryRow(ctx, `SELECT terminal_id, `+certIssued+` FROM certificates WHERE serial = $1`, replaces).Scan(&owner, scanTime(&replaced))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("certificate %s: %w", replaces, ErrNotFound)
		case err != nil:
			return err
		case owner != c.TerminalID:
			return fmt.Errorf("certificate %s is of terminal %s", replaces, owner)
		}
		var last time.Time
		if err := tx.queryRow(ctx, `SELECT MAX(`+certIssued+`) FROM certificates WHERE terminal_id = $1`, c.TerminalID).Scan(scanTime(&last)); err != nil {
			return err
		}
		if next := last.Add(minInterval); c.IssuedAt.Before(next) {
			return &TooSoonError{Last: last, Next: next}
		}
		// Issued after the one renewed and never used: the caller
		// never got them.
		orphans, err := querySerials(ctx, tx, `SELECT serial FROM certificates
	WHERE terminal_id = $1 AND serial <> $2 AND `+certIssued+` > $3
		AND first_used_at IS NULL AND retired_at IS NULL AND revoked_at IS NULL ORDER BY serial`,
			c.TerminalID, replaces, dbTime(replaced))
		if err != nil {
			return err
		}
		if err := retire(ctx, tx, orphans, c.Serial, c.IssuedAt); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `INSERT INTO certificates (serial, terminal_id, not_before, not_after, revoked_at, issued_at)
	VALUES ($1, $2, $3, $4, NULL, $5)`,
			c.Serial, c.TerminalID, dbTime(c.NotBefore), dbTime(c.NotAfter), dbTime(c.IssuedAt)); err != nil {
			return fmt.Errorf("insert certificate %s: %w", c.Serial, err)
		}
		a.Target = c.TerminalID
		a.Detail = fmt.Sprintf("certificate %s (valid until %s) renews %s", c.Serial, c.NotAfter.UTC().Format(time.RFC3339), replaces)
		if len(orphans) > 0 {
			a.Detail += "; retired, never used: " + strings.Join(orphans, ", ")
		}
		_, err = appendAuditTx(ctx, tx, a)
		return err
	})
}

// UseCertificate implements Store.
func (s *DB) UseCertificate(ctx context.Context, serial string, at time.Time, a AuditEntry) ([]string, error) {
	var retired []string
	err := storableTime("at", at)
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			retired = nil
			var (
				terminalID string
				issued     time.Time
			)
			err := tx.queryRow(ctx, `SELECT terminal_id, `+certIssued+` FROM certificates WHERE serial = $1`, serial).Scan(&terminalID, scanTime(&issued))
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			res, err := tx.exec(ctx, `UPDATE certificates SET first_used_at = $2 WHERE serial = $1 AND first_used_at IS NULL`, serial, dbTime(at))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return err // used before: nothing more to do
			}
			older, err := querySerials(ctx, tx, `SELECT serial FROM certificates
	WHERE terminal_id = $1 AND serial <> $2 AND `+certIssued+` < $3 AND retired_at IS NULL AND revoked_at IS NULL
	ORDER BY serial`, terminalID, serial, dbTime(issued))
			if err != nil || len(older) == 0 {
				return err
			}
			if err := retire(ctx, tx, older, serial, at); err != nil {
				return err
			}
			a.Target = terminalID
			a.Detail = fmt.Sprintf("certificate %s first used; retired: %s", serial, strings.Join(older, ", "))
			if _, err := appendAuditTx(ctx, tx, a); err != nil {
				return err
			}
			retired = older
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("store: use certificate %s: %w", serial, err)
	}
	return retired, nil
}

func querySerials(ctx context.Context, tx wtx, q string, args ...any) ([]string, error) {
	rows, err := tx.tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var serials []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		serials = append(serials, s)
	}
	return serials, rows.Err()
}

// retire marks the certificates replaced by the one of serial by.
func retire(ctx context.Context, tx wtx, serials []string, by string, at time.Time) error {
	for _, s := range serials {
		if _, err := tx.exec(ctx, `UPDATE certificates SET retired_at = $2, replaced_by = $3 WHERE serial = $1 AND retired_at IS NULL`,
			s, dbTime(at), by); err != nil {
			return fmt.Errorf("retire certificate %s: %w", s, err)
		}
	}
	return nil
}
