package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Session is a web console session. The cookie holds a random secret; the
// store keeps only its SHA-256.
type Session struct {
	IDHash     []byte
	Operator   string
	CSRF       string
	CreatedAt  time.Time
	LastSeenAt time.Time
	RemoteAddr string
	UserAgent  string
}

func checkSession(s Session) error {
	switch {
	case len(s.IDHash) == 0:
		return errors.New("session: ID hash is empty")
	case s.Operator == "":
		return errors.New("session: operator is empty")
	case s.CSRF == "":
		return errors.New("session: CSRF token is empty")
	case s.CreatedAt.IsZero() || s.LastSeenAt.IsZero():
		return errors.New("session: times not set")
	case len(s.RemoteAddr) > 256 || len(s.UserAgent) > 1024:
		return errors.New("session: remote address or user agent too long")
	}
	if err := storableTime("session created_at", s.CreatedAt); err != nil {
		return err
	}
	return storableTime("session last_seen_at", s.LastSeenAt)
}

func insertSession(ctx context.Context, tx wtx, s Session) error {
	_, err := tx.exec(ctx, `INSERT INTO web_sessions (id_hash, operator, csrf, created_at, last_seen_at, remote_addr, user_agent)
	VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		s.IDHash, s.Operator, s.CSRF, dbTime(s.CreatedAt), dbTime(s.LastSeenAt), s.RemoteAddr, s.UserAgent)
	if err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	return nil
}

// SessionByHash returns the session with the ID hash and its operator;
// ErrNotFound if there is none.
func (s *DB) SessionByHash(ctx context.Context, hash []byte) (Session, Operator, error) {
	var ses Session
	row := s.r.QueryRowContext(ctx, `SELECT w.id_hash, w.operator, w.csrf, w.created_at, w.last_seen_at, w.remote_addr, w.user_agent,
	o.name, o.role, o.password_hash, o.totp_sealed, o.totp_last_step, o.totp_offset, o.failures,
	o.last_failure_at, o.locked_at, o.disabled_at, o.language, o.created_at, o.created_by, o.last_sign_in_at
	FROM web_sessions w JOIN operators o ON o.name = w.operator WHERE w.id_hash = $1`, hash)
	var o Operator
	err := row.Scan(&ses.IDHash, &ses.Operator, &ses.CSRF, scanTime(&ses.CreatedAt), scanTime(&ses.LastSeenAt),
		&ses.RemoteAddr, &ses.UserAgent,
		&o.Name, &o.Role, &o.PasswordHash, &o.TOTPSealed, &o.TOTPLastStep, &o.TOTPOffset, &o.Failures,
		scanTime(&o.LastFailureAt), scanTime(&o.LockedAt), scanTime(&o.DisabledAt), &o.Language,
		scanTime(&o.CreatedAt), &o.CreatedBy, scanTime(&o.LastSignInAt))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Session{}, Operator{}, fmt.Errorf("store: session: %w", err)
	}
	return ses, o, nil
}

// TouchSession records activity on the session at at (it never goes back);
// ErrNotFound if the session is gone.
func (s *DB) TouchSession(ctx context.Context, hash []byte, at time.Time) error {
	err := storableTime("at", at)
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			res, err := tx.exec(ctx, `UPDATE web_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2`, hash, dbTime(at))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 1 {
				return err
			}
			var k int
			if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM web_sessions WHERE id_hash = $1`, hash).Scan(&k); err != nil {
				return err
			}
			if k == 0 {
				return ErrNotFound
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("store: touch session: %w", err)
	}
	return nil
}

// DeleteSession ends the session and, when a is not nil, appends it to the
// audit log in the same transaction; ErrNotFound if there was none.
func (s *DB) DeleteSession(ctx context.Context, hash []byte, a *AuditEntry) error {
	var err error
	if a != nil {
		err = checkAudit(a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			res, err := tx.exec(ctx, `DELETE FROM web_sessions WHERE id_hash = $1`, hash)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return ErrNotFound
			}
			if a != nil {
				_, err = appendAuditTx(ctx, tx, *a)
			}
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes sessions idle since before idleBefore or
// created before createdBefore, and returns how many.
func (s *DB) DeleteExpiredSessions(ctx context.Context, idleBefore, createdBefore time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx wtx) error {
		res, err := tx.exec(ctx, `DELETE FROM web_sessions WHERE last_seen_at < $1 OR created_at < $2`, dbTime(idleBefore), dbTime(createdBefore))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: delete expired sessions: %w", err)
	}
	return int(n), nil
}
