package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxUserName is the longest user name, in bytes, the store accepts.
const maxUserName = 256

// checkUserName reports an error unless name is a plausible login name:
// not empty, valid UTF-8, no control characters, at most 256 bytes.
func checkUserName(name string) error {
	switch {
	case name == "":
		return errors.New("user name is empty")
	case len(name) > maxUserName:
		return fmt.Errorf("user name longer than %d bytes", maxUserName)
	case !utf8.ValidString(name):
		return fmt.Errorf("user name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("user name %q contains a control character", name)
		}
	}
	return nil
}

// normalizeUser fills the defaults of a user to create (pending, SHA1, 6
// digits, 30 s, source def, CreatedAt now) and validates it.
func normalizeUser(u *User, def string) error {
	if err := checkUserName(u.Name); err != nil {
		return err
	}
	if u.State == "" {
		u.State = UserPending
	}
	if u.Algorithm == "" {
		u.Algorithm = "SHA1"
	}
	if u.Digits == 0 {
		u.Digits = 6
	}
	if u.Kind == "" {
		u.Kind = TokenTOTP
	}
	if u.Period == 0 && u.Kind == TokenTOTP {
		u.Period = 30
	}
	if u.Source == "" {
		u.Source = def
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	if err := checkToken(*u); err != nil {
		return err
	}
	if u.State != UserPending && u.State != UserActive {
		return fmt.Errorf("user %s: unknown state %q", u.Name, u.State)
	}
	if err := storableTime("created_at", u.CreatedAt); err != nil {
		return err
	}
	return storableTime("confirmed_at", u.ConfirmedAt)
}

// checkToken validates the token fields of u: those ResetUser and a
// replacing import write.
func checkToken(u User) error {
	switch {
	case len(u.SecretSealed) == 0:
		return fmt.Errorf("user %s: sealed secret is empty", u.Name)
	case u.Algorithm != "SHA1" && u.Algorithm != "SHA256" && u.Algorithm != "SHA512":
		return fmt.Errorf("user %s: unknown algorithm %q", u.Name, u.Algorithm)
	case u.Digits != 6 && u.Digits != 8:
		return fmt.Errorf("user %s: want 6 or 8 digits, not %d", u.Name, u.Digits)
	case u.Kind != TokenTOTP && u.Kind != TokenHOTP:
		return fmt.Errorf("user %s: unknown token kind %q", u.Name, u.Kind)
	case u.Kind == TokenTOTP && (u.Period < 15 || u.Period > 120):
		return fmt.Errorf("user %s: period %d s out of range 15 to 120", u.Name, u.Period)
	case u.Kind == TokenHOTP && u.Period != 0:
		return fmt.Errorf("user %s: an HOTP token has no period, not %d s", u.Name, u.Period)
	case u.Counter < 0 || u.Counter > MaxCounter:
		return fmt.Errorf("user %s: HOTP counter %d out of range 0 to %d", u.Name, u.Counter, int64(MaxCounter))
	case u.Kind == TokenTOTP && u.Counter != 0:
		return fmt.Errorf("user %s: a TOTP token has no counter, not %d", u.Name, u.Counter)
	case storableTime("not_after", u.NotAfter) != nil:
		return fmt.Errorf("user %s: %w", u.Name, storableTime("not_after", u.NotAfter))
	case u.Source != SourceEnrolled && u.Source != SourceImported:
		return fmt.Errorf("user %s: unknown source %q", u.Name, u.Source)
	}
	return nil
}

// checkRecoveryHashes reports an error for an empty or repeated hash.
func checkRecoveryHashes(hashes [][]byte) error {
	seen := make(map[string]bool, len(hashes))
	for i, h := range hashes {
		if len(h) == 0 {
			return fmt.Errorf("recovery code hash %d is empty", i)
		}
		if seen[string(h)] {
			return fmt.Errorf("recovery code hash %d repeats an earlier one", i)
		}
		seen[string(h)] = true
	}
	return nil
}

// userQuery selects users with the number of their unused recovery codes.
const userQuery = `SELECT u.name, u.state, u.secret_sealed, u.algorithm, u.digits, u.period, u.source,
	u.token_serial, u.last_step, u.clock_offset, u.failures, u.locked_at, u.last_failure_at,
	u.created_at, u.created_by, u.confirmed_at, u.last_login_at, u.kind, u.counter, u.not_after,
	(SELECT COUNT(*) FROM recovery_codes r WHERE r.user_name = u.name AND r.used_at IS NULL),
	u.pending_notice
FROM users u `

func scanUser(sc interface{ Scan(...any) error }) (User, error) {
	var u User
	err := sc.Scan(&u.Name, &u.State, &u.SecretSealed, &u.Algorithm, &u.Digits, &u.Period, &u.Source,
		&u.TokenSerial, &u.LastStep, &u.Offset, &u.Failures, scanTime(&u.LockedAt), scanTime(&u.LastFailureAt),
		scanTime(&u.CreatedAt), &u.CreatedBy, scanTime(&u.ConfirmedAt), scanTime(&u.LastLoginAt),
		&u.Kind, &u.Counter, scanTime(&u.NotAfter), &u.RecoveryCodesLeft, &u.Notice)
	if u.Kind == TokenHOTP {
		u.Period = 0 // the column holds 0002's placeholder
	}
	return u, err
}

// userInTx reads a user inside a write transaction, ErrNotFound if unknown.
func userInTx(ctx context.Context, tx wtx, name string) (User, error) {
	u, err := scanUser(tx.queryRow(ctx, userQuery+`WHERE u.name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	return u, err
}

// qInsertUser inserts a user. ON CONFLICT DO NOTHING tells a taken name
// from other failures without parsing driver errors, on every backend.
const qInsertUser = `INSERT INTO users
	(name, state, secret_sealed, algorithm, digits, period, source, token_serial,
	 last_step, clock_offset, failures, locked_at, last_failure_at, created_at, created_by, confirmed_at, last_login_at,
	 kind, counter, not_after)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, 0, NULL, NULL, $9, $10, $11, NULL, $12, $13, $14)
	ON CONFLICT (name) DO NOTHING`

// insertUser inserts a normalized user with cleared TOTP state, failures
// and lock; ok is false (and nothing inserted) if the name is taken.
func insertUser(ctx context.Context, tx wtx, u User) (ok bool, err error) {
	res, err := tx.exec(ctx, qInsertUser,
		u.Name, u.State, u.SecretSealed, u.Algorithm, u.Digits, periodColumn(u), u.Source, u.TokenSerial,
		dbTime(u.CreatedAt), u.CreatedBy, dbTime(u.ConfirmedAt), u.Kind, u.Counter, dbTime(u.NotAfter))
	if err != nil {
		return false, fmt.Errorf("insert user %s: %w", u.Name, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// insertRecoveryCodes adds unused recovery codes of the user.
func insertRecoveryCodes(ctx context.Context, tx wtx, name string, hashes [][]byte) error {
	for _, h := range hashes {
		if _, err := tx.exec(ctx, `INSERT INTO recovery_codes (user_name, hash, used_at) VALUES ($1, $2, NULL)`,
			name, h); err != nil {
			return fmt.Errorf("insert recovery code: %w", err)
		}
	}
	return nil
}

// replaceRecoveryCodes deletes all the user's codes, used ones included,
// and adds the new ones.
func replaceRecoveryCodes(ctx context.Context, tx wtx, name string, hashes [][]byte) error {
	if _, err := tx.exec(ctx, `DELETE FROM recovery_codes WHERE user_name = $1`, name); err != nil {
		return fmt.Errorf("delete recovery codes: %w", err)
	}
	return insertRecoveryCodes(ctx, tx, name, hashes)
}

// resetToken replaces the token of an existing user and clears its TOTP
// state, failures, lock and confirmation; the user is pending again. It
// returns ErrNotFound if the user is unknown.
func resetToken(ctx context.Context, tx wtx, u User) error {
	res, err := tx.exec(ctx, `UPDATE users SET state = $2, secret_sealed = $3, algorithm = $4, digits = $5,
	period = $6, source = $7, token_serial = $8, last_step = 0, clock_offset = 0, failures = 0,
	locked_at = NULL, last_failure_at = NULL, confirmed_at = NULL, kind = $9, counter = $10, not_after = $11
	WHERE name = $1`,
		u.Name, UserPending, u.SecretSealed, u.Algorithm, u.Digits, periodColumn(u), u.Source, u.TokenSerial,
		u.Kind, u.Counter, dbTime(u.NotAfter))
	if err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	return oneRow(res)
}

// oneRow returns ErrNotFound unless res affected a row.
func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// CreateUser implements Store. A zero State means pending, a zero
// Algorithm, Digits, Period or Source SHA1, 6, 30 s and enrolled, a zero
// CreatedAt now. The TOTP state, failures, lock and last login of u are
// ignored: a new user starts without them.
func (s *DB) CreateUser(ctx context.Context, u User, recoveryHashes [][]byte, a AuditEntry) error {
	err := normalizeUser(&u, SourceEnrolled)
	if err == nil {
		err = checkRecoveryHashes(recoveryHashes)
	}
	if err == nil {
		err = checkAudit(&a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			ok, err := insertUser(ctx, tx, u)
			if err != nil {
				return err
			}
			if !ok {
				return ErrExists
			}
			if err := insertRecoveryCodes(ctx, tx, u.Name, recoveryHashes); err != nil {
				return err
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: create user %s: %w", u.Name, err)
	}
	return nil
}

// ImportUsers implements Store. New users are created as by CreateUser,
// without recovery codes, with a zero Source meaning imported. A replaced
// user keeps its name, creation, last login and recovery codes; its State
// and ConfirmedAt in users are ignored.
func (s *DB) ImportUsers(ctx context.Context, users []User, replace bool) error {
	if err := s.importUsers(ctx, users, replace); err != nil {
		return fmt.Errorf("store: import users: %w", err)
	}
	return nil
}

func (s *DB) importUsers(ctx context.Context, users []User, replace bool) error {
	users = append([]User(nil), users...) // normalizeUser fills defaults
	seen := make(map[string]bool, len(users))
	for i := range users {
		if err := normalizeUser(&users[i], SourceImported); err != nil {
			return err
		}
		if seen[users[i].Name] {
			return fmt.Errorf("user %s appears more than once", users[i].Name)
		}
		seen[users[i].Name] = true
	}
	return s.write(ctx, func(tx wtx) error {
		for _, u := range users {
			ok, err := insertUser(ctx, tx, u)
			switch {
			case err != nil:
				return err
			case ok:
				continue
			case !replace:
				return fmt.Errorf("user %s: %w", u.Name, ErrExists)
			}
			if err := resetToken(ctx, tx, u); err != nil {
				return fmt.Errorf("replace user %s: %w", u.Name, err)
			}
		}
		return nil
	})
}

// User implements Store.
func (s *DB) User(ctx context.Context, name string) (User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, userQuery+`WHERE u.name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("store: user %s: %w", name, err)
	}
	return u, nil
}

// Users implements Store, ordered by name (bytewise).
func (s *DB) Users(ctx context.Context) ([]User, error) {
	us, err := s.users(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: users: %w", err)
	}
	return us, nil
}

func (s *DB) users(ctx context.Context) ([]User, error) {
	rows, err := s.r.QueryContext(ctx, userQuery+`ORDER BY u.name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var us []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	return us, rows.Err()
}

// DeleteUser implements Store; ErrNotFound if the user is unknown.
func (s *DB) DeleteUser(ctx context.Context, name string, a AuditEntry) error {
	err := checkAudit(&a)
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			if _, err := tx.exec(ctx, `DELETE FROM recovery_codes WHERE user_name = $1`, name); err != nil {
				return fmt.Errorf("delete recovery codes: %w", err)
			}
			res, err := tx.exec(ctx, `DELETE FROM users WHERE name = $1`, name)
			if err != nil {
				return err
			}
			if err := oneRow(res); err != nil {
				return err
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: delete user %s: %w", name, err)
	}
	return nil
}

// ResetUser implements Store: one transaction; ErrNotFound if the user is
// unknown. Of u only the name and the token fields (SecretSealed,
// Algorithm, Digits, Period, Source, TokenSerial) count, with the defaults
// of CreateUser; the creation and last login are kept.
func (s *DB) ResetUser(ctx context.Context, u User, recoveryHashes [][]byte, notice string, a AuditEntry) error {
	err := normalizeUser(&u, SourceEnrolled)
	if err == nil {
		err = checkRecoveryHashes(recoveryHashes)
	}
	if err == nil {
		err = checkNotice(notice)
	}
	if err == nil {
		err = checkAudit(&a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			if err := resetToken(ctx, tx, u); err != nil {
				return err
			}
			if err := replaceRecoveryCodes(ctx, tx, u.Name, recoveryHashes); err != nil {
				return err
			}
			if err := addNotice(ctx, tx, u.Name, notice); err != nil {
				return err
			}
			_, err := appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: reset user %s: %w", u.Name, err)
	}
	return nil
}

// ReplaceRecoveryCodes implements Store: the old codes, used or not, are
// deleted; ErrNotFound if the user is unknown.
func (s *DB) ReplaceRecoveryCodes(ctx context.Context, name string, hashes [][]byte, notice string, a AuditEntry) error {
	err := checkUserName(name)
	if err == nil {
		err = checkRecoveryHashes(hashes)
	}
	if err == nil {
		err = checkNotice(notice)
	}
	if err == nil {
		err = checkAudit(&a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			var n int
			if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM users WHERE name = $1`, name).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return ErrNotFound
			}
			if err := replaceRecoveryCodes(ctx, tx, name, hashes); err != nil {
				return err
			}
			if err := addNotice(ctx, tx, name, notice); err != nil {
				return err
			}
			_, err := appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: replace recovery codes of %s: %w", name, err)
	}
	return nil
}

// AcceptStep implements Store. A zero At means now. It returns an error
// wrapping ErrConflict also when u.LastStep does not follow
// u.ExpectLastStep (a step never goes back) and when Login or Confirm is
// set and the user is locked (a concurrent failure may have locked it after
// the caller checked).
func (s *DB) AcceptStep(ctx context.Context, u StepUpdate) (User, error) {
	out, err := s.acceptStep(ctx, u)
	if err != nil {
		return User{}, fmt.Errorf("store: accept step %d of %s: %w", u.LastStep, u.Name, err)
	}
	return out, nil
}

func (s *DB) acceptStep(ctx context.Context, u StepUpdate) (User, error) {
	if err := checkUserName(u.Name); err != nil {
		return User{}, err
	}
	if u.ExpectLastStep < 0 {
		return User{}, fmt.Errorf("expected last step %d is negative", u.ExpectLastStep)
	}
	if u.LastStep <= u.ExpectLastStep {
		return User{}, fmt.Errorf("step %d does not follow %d: %w", u.LastStep, u.ExpectLastStep, ErrConflict)
	}
	if u.At.IsZero() {
		u.At = time.Now()
	}
	if err := storableTime("at", u.At); err != nil {
		return User{}, err
	}
	var audit AuditEntry
	if u.Audit != nil {
		audit = *u.Audit
		if err := checkAudit(&audit); err != nil {
			return User{}, err
		}
	}
	q := `UPDATE users SET last_step = $3, clock_offset = $4`
	if u.Confirm {
		q += `, state = 'active', confirmed_at = COALESCE(confirmed_at, $5)`
	}
	if u.Login {
		q += `, last_login_at = $5`
	}
	if u.Confirm || u.Login {
		// A successful confirm or login also clears the failures of
		// wrong codes (once: PostgreSQL refuses a column set twice).
		q += `, failures = 0`
	}
	q += ` WHERE name = $1 AND last_step = $2`
	if u.Confirm || u.Login {
		q += ` AND locked_at IS NULL`
	}
	var out User
	err := s.write(ctx, func(tx wtx) error {
		args := []any{u.Name, u.ExpectLastStep, u.LastStep, u.Offset}
		if u.Confirm || u.Login {
			args = append(args, dbTime(u.At))
		}
		res, err := tx.exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			// Why not: unknown, another step won, or locked.
			cur, err := userInTx(ctx, tx, u.Name)
			switch {
			case err != nil:
				return err
			case cur.LastStep != u.ExpectLastStep:
				return fmt.Errorf("last step is %d, not %d: %w", cur.LastStep, u.ExpectLastStep, ErrConflict)
			case !cur.LockedAt.IsZero():
				return fmt.Errorf("user is locked: %w", ErrConflict)
			default:
				return ErrConflict
			}
		}
		if out, err = userInTx(ctx, tx, u.Name); err != nil {
			return err
		}
		if u.Audit != nil {
			_, err = appendAuditTx(ctx, tx, audit)
		}
		return err
	})
	return out, err
}

// UseRecoveryCode implements Store. A zero at means now. A locked user
// cannot use a code: that returns an error wrapping ErrConflict, whether
// the code is right or not, and leaves the code unused.
func (s *DB) UseRecoveryCode(ctx context.Context, name string, hash []byte, at time.Time) (User, error) {
	out, err := s.useRecoveryCode(ctx, name, hash, at)
	if err != nil {
		return User{}, fmt.Errorf("store: use recovery code of %s: %w", name, err)
	}
	return out, nil
}

func (s *DB) useRecoveryCode(ctx context.Context, name string, hash []byte, at time.Time) (User, error) {
	if err := checkUserName(name); err != nil {
		return User{}, err
	}
	if len(hash) == 0 {
		return User{}, errors.New("recovery code hash is empty")
	}
	if at.IsZero() {
		at = time.Now()
	}
	if err := storableTime("at", at); err != nil {
		return User{}, err
	}
	var out User
	err := s.write(ctx, func(tx wtx) error {
		var lockedAt time.Time
		err := tx.queryRow(ctx, `SELECT locked_at FROM users WHERE name = $1`, name).Scan(scanTime(&lockedAt))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return err
		case !lockedAt.IsZero():
			return fmt.Errorf("user is locked: %w", ErrConflict)
		}
		// The condition alone lets exactly one caller use the code,
		// whatever the isolation.
		res, err := tx.exec(ctx, `UPDATE recovery_codes SET used_at = $3
	WHERE user_name = $1 AND hash = $2 AND used_at IS NULL`, name, hash, dbTime(at))
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("no such unused recovery code: %w", err)
		}
		if _, err := tx.exec(ctx, `UPDATE users SET failures = 0, last_login_at = $2 WHERE name = $1`,
			name, dbTime(at)); err != nil {
			return err
		}
		out, err = userInTx(ctx, tx, name)
		return err
	})
	return out, err
}

// RecordFailure implements Store. A zero at means now. Failures keep
// counting while the user is locked; LockedAt keeps the first lock's time.
func (s *DB) RecordFailure(ctx context.Context, name string, at time.Time, lockAfter int) (User, error) {
	out, err := s.recordFailure(ctx, name, at, lockAfter)
	if err != nil {
		return User{}, fmt.Errorf("store: record failure of %s: %w", name, err)
	}
	return out, nil
}

func (s *DB) recordFailure(ctx context.Context, name string, at time.Time, lockAfter int) (User, error) {
	if err := checkUserName(name); err != nil {
		return User{}, err
	}
	if lockAfter < 0 {
		return User{}, fmt.Errorf("lock after %d failures: negative", lockAfter)
	}
	if at.IsZero() {
		at = time.Now()
	}
	if err := storableTime("at", at); err != nil {
		return User{}, err
	}
	var out User
	err := s.write(ctx, func(tx wtx) error {
		// One statement: the increment and the lock decision read the
		// same row version.
		res, err := tx.exec(ctx, `UPDATE users SET failures = failures + 1, last_failure_at = $2,
	locked_at = CASE WHEN locked_at IS NULL AND $3 > 0 AND failures + 1 >= $3 THEN $2 ELSE locked_at END
	WHERE name = $1`, name, dbTime(at), int64(lockAfter))
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		out, err = userInTx(ctx, tx, name)
		return err
	})
	return out, err
}

// UnlockUser implements Store; ErrNotFound if the user is unknown.
func (s *DB) UnlockUser(ctx context.Context, name string, audit func(before User) AuditEntry) (User, error) {
	var out User
	err := s.write(ctx, func(tx wtx) error {
		if audit == nil {
			return errors.New("audit entry missing")
		}
		before, err := userInTx(ctx, tx, name)
		if err != nil {
			return err
		}
		a := audit(before)
		if err := checkAudit(&a); err != nil {
			return err
		}
		res, err := tx.exec(ctx, `UPDATE users SET locked_at = NULL, failures = 0 WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		if out, err = userInTx(ctx, tx, name); err != nil {
			return err
		}
		_, err = appendAuditTx(ctx, tx, a)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("store: unlock user %s: %w", name, err)
	}
	return out, nil
}
