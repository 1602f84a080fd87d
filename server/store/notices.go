package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pending notices: at most maxNotices of at most maxNoticeBytes each; a
// newer notice pushes the oldest out.
const (
	maxNotices     = 5
	maxNoticeBytes = 512
)

// checkNotice validates a notice to add: "" (none) or one line of
// printable UTF-8 of at most maxNoticeBytes.
func checkNotice(n string) error {
	switch {
	case len(n) > maxNoticeBytes:
		return fmt.Errorf("notice longer than %d bytes", maxNoticeBytes)
	case !utf8.ValidString(n):
		return errors.New("notice is not valid UTF-8")
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return errors.New("notice contains a control character")
		}
	}
	return nil
}

// addNotice appends notice (if not "") to the user's pending notices, one
// a line, keeping the newest maxNotices.
func addNotice(ctx context.Context, tx wtx, name, notice string) error {
	if notice == "" {
		return nil
	}
	var cur string
	if err := tx.queryRow(ctx, `SELECT pending_notice FROM users WHERE name = $1`, name).Scan(&cur); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	lines := append(strings.FieldsFunc(cur, func(r rune) bool { return r == '\n' }), notice)
	if len(lines) > maxNotices {
		lines = lines[len(lines)-maxNotices:]
	}
	_, err := tx.exec(ctx, `UPDATE users SET pending_notice = $2 WHERE name = $1`, name, strings.Join(lines, "\n"))
	return err
}

// AddUserNotice implements Store.
func (s *DB) AddUserNotice(ctx context.Context, name, notice string, check func(User) error, a AuditEntry) (User, error) {
	err := checkUserName(name)
	if err == nil {
		err = checkNotice(notice)
	}
	if err == nil {
		err = checkAudit(&a)
	}
	var out User
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			u, err := userInTx(ctx, tx, name)
			if err != nil {
				return err
			}
			if check != nil {
				if err := check(u); err != nil {
					return err
				}
			}
			if err := addNotice(ctx, tx, name, notice); err != nil {
				return err
			}
			if out, err = userInTx(ctx, tx, name); err != nil {
				return err
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return User{}, fmt.Errorf("store: add notice for user %s: %w", name, err)
	}
	return out, nil
}

// TakeUserNotice implements Store.
func (s *DB) TakeUserNotice(ctx context.Context, name string) (string, error) {
	var notice string
	err := s.write(ctx, func(tx wtx) error {
		err := tx.queryRow(ctx, `SELECT pending_notice FROM users WHERE name = $1`, name).Scan(&notice)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil || notice == "":
			return err
		}
		_, err = tx.exec(ctx, `UPDATE users SET pending_notice = '' WHERE name = $1`, name)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: take notice of user %s: %w", name, err)
	}
	return notice, nil
}
