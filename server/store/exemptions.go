package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// checkExemption validates an exemption to create. The collector checks
// the fields' formats; the store checks what it relies on.
func checkExemption(e Exemption) error {
	switch {
	case e.ID == "":
		return errors.New("exemption ID is empty")
	case e.TerminalID == "":
		return errors.New("terminal ID is empty")
	case e.VendorID == "" || e.ProductID == "":
		return errors.New("vendor or product ID is empty")
	case e.Serial == "" && !e.AllowNoSerial:
		return errors.New("device without a serial number and no recorded override")
	case e.Issuer == "":
		return errors.New("issuer is empty")
	case e.NotBefore.IsZero() || e.NotAfter.IsZero() || e.IssuedAt.IsZero():
		return errors.New("not_before, not_after and issued_at are required")
	case !e.NotAfter.After(e.NotBefore):
		return errors.New("not_after is not after not_before")
	case e.Duration <= 0 || e.Duration%time.Second != 0:
		return fmt.Errorf("duration %s: want a positive number of whole seconds", e.Duration)
	case !e.RevokedAt.IsZero():
		return errors.New("a new exemption cannot be revoked already")
	}
	switch e.Source {
	case ExemptionOnline:
		if len(e.Token) == 0 || e.Challenge != "" {
			return errors.New("an online exemption needs its token and no challenge")
		}
	case ExemptionOffline:
		if e.Token != nil || e.Challenge == "" {
			return errors.New("an offline exemption needs its challenge and no token")
		}
	default:
		return fmt.Errorf("unknown source %q", e.Source)
	}
	for _, t := range []struct {
		name string
		t    time.Time
	}{{"not_before", e.NotBefore}, {"not_after", e.NotAfter}, {"issued_at", e.IssuedAt}, {"delivered_at", e.DeliveredAt}} {
		if err := storableTime(t.name, t.t); err != nil {
			return err
		}
	}
	return nil
}

// CreateExemption implements Store: the exemption and its audit entry a
// are stored in one transaction. RevokedAt must be zero.
func (s *DB) CreateExemption(ctx context.Context, e Exemption, a AuditEntry) error {
	err := checkExemption(e)
	if err == nil {
		err = checkAudit(&a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			if err := activeTerminal(ctx, tx, e.TerminalID); err != nil {
				return err
			}
			var challenge any
			if e.Challenge != "" {
				challenge = e.Challenge
			}
			// The conflict target is the (terminal, challenge) pair only:
			// a repeated ID stays an error of its own.
			res, err := tx.exec(ctx, `INSERT INTO exemptions
	(id, terminal_id, vendor_id, product_id, serial, allow_no_serial, not_before, not_after, duration_seconds,
	 issuer, reason, ticket, source, challenge, issued_at, delivered_at, revoked_at, revoked_by, revoke_reason, token)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL, '', '', $17)
	ON CONFLICT (terminal_id, challenge) DO NOTHING`,
				e.ID, e.TerminalID, e.VendorID, e.ProductID, e.Serial, boolArg(e.AllowNoSerial),
				dbTime(e.NotBefore), dbTime(e.NotAfter), int64(e.Duration/time.Second),
				e.Issuer, e.Reason, e.Ticket, e.Source, challenge, dbTime(e.IssuedAt), dbTime(e.DeliveredAt), blobArg(e.Token))
			if err != nil {
				return fmt.Errorf("insert exemption: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return fmt.Errorf("challenge %s of this terminal was answered already: %w", e.Challenge, ErrExists)
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: create exemption %s of %s: %w", e.ID, e.TerminalID, err)
	}
	return nil
}

func boolArg(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

const exemptionColumns = `SELECT id, terminal_id, vendor_id, product_id, serial, allow_no_serial, not_before, not_after,
	duration_seconds, issuer, reason, ticket, source, challenge, issued_at, delivered_at, revoked_at, revoked_by,
	revoke_reason, token FROM exemptions `

func scanExemption(sc interface{ Scan(...any) error }) (Exemption, error) {
	var (
		e         Exemption
		allow     int64
		secs      int64
		challenge sql.NullString
	)
	err := sc.Scan(&e.ID, &e.TerminalID, &e.VendorID, &e.ProductID, &e.Serial, &allow,
		scanTime(&e.NotBefore), scanTime(&e.NotAfter), &secs, &e.Issuer, &e.Reason, &e.Ticket, &e.Source,
		&challenge, scanTime(&e.IssuedAt), scanTime(&e.DeliveredAt), scanTime(&e.RevokedAt), &e.RevokedBy,
		&e.RevokeReason, &e.Token)
	e.AllowNoSerial, e.Duration, e.Challenge = allow != 0, time.Duration(secs)*time.Second, challenge.String
	return e, err
}

// Exemption implements Store.
func (s *DB) Exemption(ctx context.Context, id string) (Exemption, error) {
	e, err := scanExemption(s.r.QueryRowContext(ctx, exemptionColumns+`WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Exemption{}, fmt.Errorf("store: exemption %s: %w", id, err)
	}
	return e, nil
}

// Exemptions implements Store; on equal issue times by ID, descending.
func (s *DB) Exemptions(ctx context.Context, terminalID string, activeAt time.Time, limit int) ([]Exemption, error) {
	es, err := s.exemptions(ctx, terminalID, activeAt, limit)
	if err != nil {
		return nil, fmt.Errorf("store: exemptions of %q: %w", terminalID, err)
	}
	return es, nil
}

func (s *DB) exemptions(ctx context.Context, terminalID string, activeAt time.Time, limit int) ([]Exemption, error) {
	if err := storableTime("active_at", activeAt); err != nil {
		return nil, err
	}
	var (
		q    = exemptionColumns
		args []any
		and  = "WHERE "
	)
	if terminalID != "" {
		args = append(args, terminalID)
		q += fmt.Sprintf("%sterminal_id = $%d ", and, len(args))
		and = "AND "
	}
	if !activeAt.IsZero() {
		args = append(args, dbTime(activeAt))
		q += fmt.Sprintf("%srevoked_at IS NULL AND not_after > $%d AND not_before <= $%[2]d ", and, len(args))
	}
	q += "ORDER BY issued_at DESC, id DESC"
	if limit > 0 {
		args = append(args, limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var es []Exemption
	for rows.Next() {
		e, err := scanExemption(rows)
		if err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, rows.Err()
}

// RevokeExemption implements Store. A zero at means now.
func (s *DB) RevokeExemption(ctx context.Context, id, by, reason string, at time.Time, a AuditEntry) (Exemption, error) {
	e, err := s.revokeExemption(ctx, id, by, reason, at, a)
	if err != nil {
		return Exemption{}, fmt.Errorf("store: revoke exemption %s: %w", id, err)
	}
	return e, nil
}

func (s *DB) revokeExemption(ctx context.Context, id, by, reason string, at time.Time, a AuditEntry) (Exemption, error) {
	if by == "" {
		return Exemption{}, errors.New("revoked_by is empty")
	}
	if err := checkAudit(&a); err != nil {
		return Exemption{}, err
	}
	if at.IsZero() {
		at = time.Now()
	}
	if err := storableTime("revoked_at", at); err != nil {
		return Exemption{}, err
	}
	var out Exemption
	err := s.write(ctx, func(tx wtx) error {
		e, err := scanExemption(tx.queryRow(ctx, exemptionColumns+`WHERE id = $1`, id))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return err
		case !e.RevokedAt.IsZero():
			return fmt.Errorf("%w already, at %s by %s", ErrRevoked, e.RevokedAt.UTC().Format(time.RFC3339), e.RevokedBy)
		case !at.Before(e.NotAfter):
			return fmt.Errorf("%w at %s", ErrExpired, e.NotAfter.UTC().Format(time.RFC3339))
		}
		// The condition repeats the check: the first revocation stays.
		res, err := tx.exec(ctx, `UPDATE exemptions SET revoked_at = $2, revoked_by = $3, revoke_reason = $4
	WHERE id = $1 AND revoked_at IS NULL`, id, dbTime(at), by, reason)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		e.RevokedAt, e.RevokedBy, e.RevokeReason = time.Unix(0, at.UnixNano()).UTC(), by, reason
		out = e
		_, err = appendAuditTx(ctx, tx, a)
		return err
	})
	return out, err
}

// MarkExemptionDelivered implements Store.
func (s *DB) MarkExemptionDelivered(ctx context.Context, id string, at time.Time) (bool, error) {
	first, err := s.markExemptionDelivered(ctx, id, at)
	if err != nil {
		return false, fmt.Errorf("store: mark exemption %s delivered: %w", id, err)
	}
	return first, nil
}

func (s *DB) markExemptionDelivered(ctx context.Context, id string, at time.Time) (bool, error) {
	if at.IsZero() {
		at = time.Now()
	}
	if err := storableTime("delivered_at", at); err != nil {
		return false, err
	}
	var first bool
	err := s.write(ctx, func(tx wtx) error {
		res, err := tx.exec(ctx, `UPDATE exemptions SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL`, id, dbTime(at))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if first = n == 1; first {
			return nil
		}
		var one int
		err = tx.queryRow(ctx, `SELECT 1 FROM exemptions WHERE id = $1`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	return first, err
}
