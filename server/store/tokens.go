package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// Token kinds (User.Kind, HardwareToken.Kind).
const (
	TokenTOTP = "totp" // RFC 6238, time-based
	TokenHOTP = "hotp" // RFC 4226, counter-based
)

// MaxCounter is the largest HOTP counter stored: BIGINT, with room for
// the look-ahead and resync windows above it.
const MaxCounter = math.MaxInt64 - 1<<20

// HardwareToken is an imported token that belongs to no user yet. It logs
// nobody in until AssignToken gives it to a user.
type HardwareToken struct {
	Serial string
	Kind   string // TokenTOTP or TokenHOTP
	// SecretSealed is sealed by the caller for the serial, not a user.
	SecretSealed []byte
	Algorithm    string
	Digits       int
	Period       int   // TOTP: seconds; HOTP: 0
	Counter      int64 // HOTP: the next expected counter
	NotAfter     time.Time
	CreatedAt    time.Time
	CreatedBy    string
}

// TokenImport is one seed file's tokens, stored in one transaction.
type TokenImport struct {
	// Users get the tokens the file (or an assignment) gives them; they
	// are created pending, or with Replace have their token replaced.
	Users []User
	// Unassigned are kept for a later AssignToken.
	Unassigned []HardwareToken
	// Replace replaces the token of users that exist, and unassigned
	// tokens of the same serial; without it either fails the import.
	Replace bool
}

// ImportResult counts what an import did.
type ImportResult struct {
	// Created and Replaced users; Unassigned tokens stored, of which
	// Replaced counts those that replaced an unassigned token too.
	Created, Replaced, Unassigned int
}

// CounterUpdate is a compare-and-set of an HOTP user's counter after an
// accepted code: it applies only while the stored counter still equals
// ExpectCounter.
type CounterUpdate struct {
	Name          string
	ExpectCounter int64
	// Counter is the new next expected counter, above ExpectCounter.
	Counter int64
	At      time.Time
	// Confirm makes a pending user active (ConfirmedAt = At) and clears
	// Failures.
	Confirm bool
	// Login records At as LastLoginAt and clears Failures.
	Login bool
	// Audit, if set, is appended in the same transaction.
	Audit *AuditEntry
}

// checkHardwareToken fills the defaults of an unassigned token and
// validates it.
func checkHardwareToken(t *HardwareToken) error {
	if err := checkUserName(t.Serial); err != nil {
		return fmt.Errorf("token serial: %w", err)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	// The token rules are a user's: check them on one.
	u := User{
		Name: "token " + t.Serial, SecretSealed: t.SecretSealed, Algorithm: t.Algorithm, Digits: t.Digits,
		Period: t.Period, Source: SourceImported, Kind: t.Kind, Counter: t.Counter, NotAfter: t.NotAfter,
	}
	if err := checkToken(u); err != nil {
		return err
	}
	return storableTime("created_at", t.CreatedAt)
}

// periodColumn is the value of users.period: an HOTP token has none, and
// 0002's check wants 15 to 120.
func periodColumn(u User) int {
	if u.Kind == TokenHOTP {
		return 30
	}
	return u.Period
}

// Queries of an import, prepared for its duration: 100,000 tokens run
// each of them 100,000 times.
const (
	qSerialHolder = `SELECT (SELECT name FROM users WHERE token_serial = $1 LIMIT 1),
	(SELECT COUNT(*) FROM hardware_tokens WHERE serial = $1)`
	qDeleteHardwareToken = `DELETE FROM hardware_tokens WHERE serial = $1`
	qInsertHardwareToken = `INSERT INTO hardware_tokens
	(serial, kind, secret_sealed, algorithm, digits, period, counter, not_after, created_at, created_by)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
)

// serialHolder returns the user holding the token serial ("" if none) and
// whether an unassigned token has it.
func serialHolder(ctx context.Context, tx wtx, serial string) (user string, unassigned bool, err error) {
	var name sql.NullString
	var n int
	if err := tx.queryRow(ctx, qSerialHolder, serial).Scan(&name, &n); err != nil {
		return "", false, err
	}
	return name.String, n > 0, nil
}

// ImportTokens implements Store: the users, the unassigned tokens and a
// are stored in one transaction, or nothing is. New users are created as
// by CreateUser (without recovery codes, source imported); with Replace
// an existing user's token is replaced as by ResetUser, keeping its
// recovery codes. A token serial belongs to one user or one unassigned
// token: a serial held by another user fails the import (errors wrap
// ErrExists and name the serial or user); an unassigned token given to a
// user leaves the unassigned list.
func (s *DB) ImportTokens(ctx context.Context, in TokenImport, a AuditEntry) (ImportResult, error) {
	res, err := s.importTokens(ctx, in, a)
	if err != nil {
		return ImportResult{}, fmt.Errorf("store: import tokens: %w", err)
	}
	return res, nil
}

func (s *DB) importTokens(ctx context.Context, in TokenImport, a AuditEntry) (ImportResult, error) {
	users := append([]User(nil), in.Users...)
	toks := append([]HardwareToken(nil), in.Unassigned...)
	names := make(map[string]bool, len(users))
	serials := make(map[string]bool, len(users)+len(toks))
	for i := range users {
		if err := normalizeUser(&users[i], SourceImported); err != nil {
			return ImportResult{}, err
		}
		u := users[i]
		if names[u.Name] {
			return ImportResult{}, fmt.Errorf("user %s appears more than once", u.Name)
		}
		names[u.Name] = true
		if u.TokenSerial != "" {
			if serials[u.TokenSerial] {
				return ImportResult{}, fmt.Errorf("token %s appears more than once", u.TokenSerial)
			}
			serials[u.TokenSerial] = true
		}
	}
	for i := range toks {
		if err := checkHardwareToken(&toks[i]); err != nil {
			return ImportResult{}, err
		}
		if serials[toks[i].Serial] {
			return ImportResult{}, fmt.Errorf("token %s appears more than once", toks[i].Serial)
		}
		serials[toks[i].Serial] = true
	}
	if err := checkAudit(&a); err != nil {
		return ImportResult{}, err
	}
	stmts, err := prepare(ctx, s.w, qInsertUser, qSerialHolder, qDeleteHardwareToken, qInsertHardwareToken)
	if err != nil {
		return ImportResult{}, err
	}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	for q, st := range s.ws {
		stmts[q] = st
	}
	var res ImportResult
	err = s.write(ctx, func(tx wtx) error {
		res = ImportResult{} // from scratch if PostgreSQL runs it again
		tx.stmts = stmts
		for _, u := range users {
			if u.TokenSerial != "" {
				holder, unassigned, err := serialHolder(ctx, tx, u.TokenSerial)
				switch {
				case err != nil:
					return err
				case holder != "" && holder != u.Name:
					return fmt.Errorf("token %s belongs to user %s: %w", u.TokenSerial, holder, ErrExists)
				case unassigned && !in.Replace:
					return fmt.Errorf("token %s is imported already, unassigned: %w", u.TokenSerial, ErrExists)
				case unassigned:
					if _, err := tx.exec(ctx, qDeleteHardwareToken, u.TokenSerial); err != nil {
						return err
					}
				}
			}
			ok, err := insertUser(ctx, tx, u)
			switch {
			case err != nil:
				return err
			case ok:
				res.Created++
				continue
			case !in.Replace:
				return fmt.Errorf("user %s: %w", u.Name, ErrExists)
			}
			if err := resetToken(ctx, tx, u); err != nil {
				return fmt.Errorf("replace user %s: %w", u.Name, err)
			}
			res.Replaced++
		}
		for _, t := range toks {
			holder, unassigned, err := serialHolder(ctx, tx, t.Serial)
			switch {
			case err != nil:
				return err
			case holder != "":
				return fmt.Errorf("token %s belongs to user %s already: %w", t.Serial, holder, ErrExists)
			case unassigned && !in.Replace:
				return fmt.Errorf("token %s is imported already, unassigned: %w", t.Serial, ErrExists)
			case unassigned:
				if _, err := tx.exec(ctx, qDeleteHardwareToken, t.Serial); err != nil {
					return err
				}
				res.Replaced++
			}
			if _, err := tx.exec(ctx, qInsertHardwareToken,
				t.Serial, t.Kind, t.SecretSealed, t.Algorithm, t.Digits, t.Period, t.Counter,
				dbTime(t.NotAfter), dbTime(t.CreatedAt), t.CreatedBy); err != nil {
				return fmt.Errorf("insert token %s: %w", t.Serial, err)
			}
			res.Unassigned++
		}
		_, err := appendAuditTx(ctx, tx, a)
		return err
	})
	return res, err
}

const hardwareTokenQuery = `SELECT serial, kind, secret_sealed, algorithm, digits, period, counter, not_after,
	created_at, created_by FROM hardware_tokens `

func scanHardwareToken(sc interface{ Scan(...any) error }) (HardwareToken, error) {
	var t HardwareToken
	err := sc.Scan(&t.Serial, &t.Kind, &t.SecretSealed, &t.Algorithm, &t.Digits, &t.Period, &t.Counter,
		scanTime(&t.NotAfter), scanTime(&t.CreatedAt), &t.CreatedBy)
	return t, err
}

// HardwareTokens implements Store: the unassigned tokens by serial
// (bytewise).
func (s *DB) HardwareTokens(ctx context.Context) ([]HardwareToken, error) {
	ts, err := s.hardwareTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: hardware tokens: %w", err)
	}
	return ts, nil
}

func (s *DB) hardwareTokens(ctx context.Context) ([]HardwareToken, error) {
	rows, err := s.r.QueryContext(ctx, hardwareTokenQuery+`ORDER BY serial`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ts []HardwareToken
	for rows.Next() {
		t, err := scanHardwareToken(rows)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

// AssignToken implements Store: in one transaction it removes the
// unassigned token serial (ErrNotFound if there is none), creates the user
// u, which the caller made from it (the secret sealed again for the user),
// or with replace replaces the token of an existing user (without replace
// an existing user is ErrExists), and appends a.
func (s *DB) AssignToken(ctx context.Context, serial string, u User, replace bool, a AuditEntry) (User, error) {
	out, err := s.assignToken(ctx, serial, u, replace, a)
	if err != nil {
		return User{}, fmt.Errorf("store: assign token %s to %s: %w", serial, u.Name, err)
	}
	return out, nil
}

func (s *DB) assignToken(ctx context.Context, serial string, u User, replace bool, a AuditEntry) (User, error) {
	if serial == "" || u.TokenSerial != serial {
		return User{}, fmt.Errorf("user's token serial %q is not %q", u.TokenSerial, serial)
	}
	u.Source = SourceImported
	if err := normalizeUser(&u, SourceImported); err != nil {
		return User{}, err
	}
	if err := checkAudit(&a); err != nil {
		return User{}, err
	}
	var out User
	err := s.write(ctx, func(tx wtx) error {
		res, err := tx.exec(ctx, `DELETE FROM hardware_tokens WHERE serial = $1`, serial)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("no unassigned token %s: %w", serial, err)
		}
		ok, err := insertUser(ctx, tx, u)
		switch {
		case err != nil:
			return err
		case !ok && !replace:
			return fmt.Errorf("user %s: %w", u.Name, ErrExists)
		case !ok:
			if err := resetToken(ctx, tx, u); err != nil {
				return err
			}
		}
		if _, err := appendAuditTx(ctx, tx, a); err != nil {
			return err
		}
		out, err = userInTx(ctx, tx, u.Name)
		return err
	})
	return out, err
}

// HardwareToken implements Store.
func (s *DB) HardwareToken(ctx context.Context, serial string) (HardwareToken, error) {
	t, err := scanHardwareToken(s.r.QueryRowContext(ctx, hardwareTokenQuery+`WHERE serial = $1`, serial))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return HardwareToken{}, fmt.Errorf("store: hardware token %s: %w", serial, err)
	}
	return t, nil
}

// AcceptCounter implements Store: it moves an HOTP user's counter from
// ExpectCounter to Counter with compare-and-set and returns the updated
// user; ErrNotFound if the user is gone, ErrConflict if the counter
// changed meanwhile, if Counter <= ExpectCounter (a counter never goes
// back), if the user is not HOTP, or if Login or Confirm is set and the
// user is locked.
func (s *DB) AcceptCounter(ctx context.Context, u CounterUpdate) (User, error) {
	out, err := s.acceptCounter(ctx, u)
	if err != nil {
		return User{}, fmt.Errorf("store: accept counter %d of %s: %w", u.Counter, u.Name, err)
	}
	return out, nil
}

func (s *DB) acceptCounter(ctx context.Context, u CounterUpdate) (User, error) {
	if err := checkUserName(u.Name); err != nil {
		return User{}, err
	}
	switch {
	case u.ExpectCounter < 0:
		return User{}, fmt.Errorf("expected counter %d is negative", u.ExpectCounter)
	case u.Counter > MaxCounter:
		return User{}, fmt.Errorf("counter %d above %d", u.Counter, int64(MaxCounter))
	case u.Counter <= u.ExpectCounter:
		return User{}, fmt.Errorf("counter %d does not follow %d: %w", u.Counter, u.ExpectCounter, ErrConflict)
	}
	if u.At.IsZero() {
		u.At = time.Now()
	}
	if err := storableTime("at", u.At); err != nil {
		return User{}, err
	}
	if u.Audit != nil {
		if err := checkAudit(u.Audit); err != nil {
			return User{}, err
		}
	}
	q := `UPDATE users SET counter = $3`
	if u.Confirm {
		q += `, state = 'active', confirmed_at = COALESCE(confirmed_at, $4), failures = 0`
	}
	if u.Login {
		q += `, last_login_at = $4, failures = 0`
	}
	q += ` WHERE name = $1 AND counter = $2 AND kind = 'hotp'`
	if u.Confirm || u.Login {
		q += ` AND locked_at IS NULL`
	}
	var out User
	err := s.write(ctx, func(tx wtx) error {
		args := []any{u.Name, u.ExpectCounter, u.Counter}
		if u.Confirm || u.Login {
			args = append(args, dbTime(u.At))
		}
		res, err := tx.exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			cur, err := userInTx(ctx, tx, u.Name)
			switch {
			case err != nil:
				return err
			case cur.Kind != TokenHOTP:
				return fmt.Errorf("user has a %s token: %w", cur.Kind, ErrConflict)
			case cur.Counter != u.ExpectCounter:
				return fmt.Errorf("counter is %d, not %d: %w", cur.Counter, u.ExpectCounter, ErrConflict)
			case !cur.LockedAt.IsZero():
				return fmt.Errorf("user is locked: %w", ErrConflict)
			default:
				return ErrConflict
			}
		}
		if u.Audit != nil {
			if _, err := appendAuditTx(ctx, tx, *u.Audit); err != nil {
				return err
			}
		}
		out, err = userInTx(ctx, tx, u.Name)
		return err
	})
	return out, err
}
