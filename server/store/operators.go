package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrLastAdmin is returned by a change that would leave no enabled admin
// operator: nobody could then manage operators any more.
var ErrLastAdmin = errors.New("it is the last enabled admin: add or enable another admin first")

// Operator is a person who uses the admin API or the web console.
type Operator struct {
	Name string
	Role string // RoleAdmin, RoleHelpdesk or RoleAuditor
	// PasswordHash is an argon2id PHC string; "" means no password (no
	// console sign-in).
	PasswordHash string
	// TOTPSealed is the operator's TOTP secret sealed by the caller; nil
	// when none is set.
	TOTPSealed []byte
	// TOTPLastStep is the last accepted time step (0: none); TOTPOffset
	// the learned clock offset in steps. Changed only by compare-and-set
	// (SignIn) or a TOTP reset.
	TOTPLastStep int64
	TOTPOffset   int64
	// Failures counts consecutive failed sign-ins; LockedAt is set when
	// they reached the lock limit.
	Failures      int
	LastFailureAt time.Time
	LockedAt      time.Time
	DisabledAt    time.Time
	// Language is "ja", "en" or "" (from the browser).
	Language     string
	CreatedAt    time.Time
	CreatedBy    string
	LastSignInAt time.Time
}

// Enabled reports whether the operator may act at all.
func (o Operator) Enabled() bool { return o.DisabledAt.IsZero() }

// ValidRole reports whether role is one of the three operator roles.
func ValidRole(role string) bool {
	return role == RoleAdmin || role == RoleHelpdesk || role == RoleAuditor
}

func checkOperator(o Operator) error {
	if err := checkUserName(o.Name); err != nil {
		return fmt.Errorf("operator: %w", err)
	}
	switch {
	case !ValidRole(o.Role):
		return fmt.Errorf("operator %s: unknown role %q", o.Name, o.Role)
	case o.Language != "" && o.Language != "ja" && o.Language != "en":
		return fmt.Errorf("operator %s: unknown language %q", o.Name, o.Language)
	case o.Failures < 0 || o.TOTPLastStep < 0:
		return fmt.Errorf("operator %s: negative failures or TOTP step", o.Name)
	}
	for what, t := range map[string]time.Time{
		"created_at": o.CreatedAt, "locked_at": o.LockedAt, "disabled_at": o.DisabledAt,
		"last_failure_at": o.LastFailureAt, "last_sign_in_at": o.LastSignInAt,
	} {
		if err := storableTime(what, t); err != nil {
			return err
		}
	}
	return nil
}

const operatorColumns = `SELECT name, role, password_hash, totp_sealed, totp_last_step, totp_offset, failures,
	last_failure_at, locked_at, disabled_at, language, created_at, created_by, last_sign_in_at FROM operators `

func scanOperator(sc interface{ Scan(...any) error }) (Operator, error) {
	var o Operator
	err := sc.Scan(&o.Name, &o.Role, &o.PasswordHash, &o.TOTPSealed, &o.TOTPLastStep, &o.TOTPOffset, &o.Failures,
		scanTime(&o.LastFailureAt), scanTime(&o.LockedAt), scanTime(&o.DisabledAt), &o.Language,
		scanTime(&o.CreatedAt), &o.CreatedBy, scanTime(&o.LastSignInAt))
	return o, err
}

func operatorInTx(ctx context.Context, tx wtx, name string) (Operator, error) {
	o, err := scanOperator(tx.queryRow(ctx, operatorColumns+`WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Operator{}, fmt.Errorf("operator %s: %w", name, ErrNotFound)
	}
	return o, err
}

// enabledAdmins counts the enabled admins inside tx.
func enabledAdmins(ctx context.Context, tx wtx) (int, error) {
	var n int
	err := tx.queryRow(ctx, `SELECT COUNT(*) FROM operators WHERE role = 'admin' AND disabled_at IS NULL`).Scan(&n)
	return n, err
}

func writeOperator(ctx context.Context, tx wtx, o Operator) error {
	_, err := tx.exec(ctx, `UPDATE operators SET role = $2, password_hash = $3, totp_sealed = $4, totp_last_step = $5,
	totp_offset = $6, failures = $7, last_failure_at = $8, locked_at = $9, disabled_at = $10, language = $11,
	last_sign_in_at = $12 WHERE name = $1`,
		o.Name, o.Role, o.PasswordHash, blobArg(o.TOTPSealed), o.TOTPLastStep, o.TOTPOffset, o.Failures,
		dbTime(o.LastFailureAt), dbTime(o.LockedAt), dbTime(o.DisabledAt), o.Language, dbTime(o.LastSignInAt))
	return err
}

// CreateOperator adds an operator and appends a to the audit log in the
// same transaction; ErrExists if the name is taken. A zero CreatedAt means
// now.
func (s *DB) CreateOperator(ctx context.Context, o Operator, a AuditEntry) error {
	if o.CreatedAt.IsZero() {
		o.CreatedAt = time.Now()
	}
	err := checkOperator(o)
	if err == nil {
		err = checkAudit(&a)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			res, err := tx.exec(ctx, `INSERT INTO operators (name, role, password_hash, totp_sealed, language, created_at, created_by)
	VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING`,
				o.Name, o.Role, o.PasswordHash, blobArg(o.TOTPSealed), o.Language, dbTime(o.CreatedAt), o.CreatedBy)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return ErrExists
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: create operator %s: %w", o.Name, err)
	}
	return nil
}

// Operator returns the operator, ErrNotFound if unknown.
func (s *DB) Operator(ctx context.Context, name string) (Operator, error) {
	o, err := scanOperator(s.r.QueryRowContext(ctx, operatorColumns+`WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Operator{}, fmt.Errorf("store: operator %s: %w", name, err)
	}
	return o, nil
}

// Operators lists every operator by name.
func (s *DB) Operators(ctx context.Context) ([]Operator, error) {
	rows, err := s.r.QueryContext(ctx, operatorColumns+`ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: operators: %w", err)
	}
	defer rows.Close()
	var os []Operator
	for rows.Next() {
		o, err := scanOperator(rows)
		if err != nil {
			return nil, fmt.Errorf("store: operators: %w", err)
		}
		os = append(os, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: operators: %w", err)
	}
	return os, nil
}

// UpdateOperator reads the operator, lets change modify it, writes it back
// and appends a (which change may fill in) to the audit log, all in one
// transaction. The name and creation cannot change. It returns
// ErrNotFound for an unknown operator, change's error as it is, and
// ErrLastAdmin (changing nothing) when afterwards no enabled admin would
// remain.
func (s *DB) UpdateOperator(ctx context.Context, name string, change func(o *Operator, a *AuditEntry) error, a AuditEntry) (Operator, error) {
	var out Operator
	err := s.write(ctx, func(tx wtx) error {
		o, err := operatorInTx(ctx, tx, name)
		if err != nil {
			return err
		}
		n := o
		if err := change(&n, &a); err != nil {
			return err
		}
		n.Name, n.CreatedAt, n.CreatedBy = o.Name, o.CreatedAt, o.CreatedBy
		if err := checkOperator(n); err != nil {
			return err
		}
		if err := checkAudit(&a); err != nil {
			return err
		}
		if err := writeOperator(ctx, tx, n); err != nil {
			return err
		}
		if o.Role == RoleAdmin && o.Enabled() && (n.Role != RoleAdmin || !n.Enabled()) {
			if k, err := enabledAdmins(ctx, tx); err != nil {
				return err
			} else if k == 0 {
				return ErrLastAdmin
			}
		}
		if !n.Enabled() {
			// A disabled operator's sessions end at once.
			if _, err := tx.exec(ctx, `DELETE FROM web_sessions WHERE operator = $1`, name); err != nil {
				return err
			}
		}
		if _, err := appendAuditTx(ctx, tx, a); err != nil {
			return err
		}
		out = n
		return nil
	})
	if err != nil {
		return Operator{}, fmt.Errorf("store: update operator %s: %w", name, err)
	}
	return out, nil
}

// DeleteOperator removes the operator with its API tokens and sessions and
// appends a, in one transaction; ErrNotFound if unknown, ErrLastAdmin for
// the last enabled admin.
func (s *DB) DeleteOperator(ctx context.Context, name string, a AuditEntry) error {
	err := checkAudit(&a)
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			o, err := operatorInTx(ctx, tx, name)
			if err != nil {
				return err
			}
			for _, q := range []string{
				`DELETE FROM web_sessions WHERE operator = $1`,
				`DELETE FROM operator_tokens WHERE name = $1`,
				`DELETE FROM operators WHERE name = $1`,
			} {
				if _, err := tx.exec(ctx, q, name); err != nil {
					return err
				}
			}
			// Only removing an enabled admin can leave none; a store
			// without one (operators migrated from helpdesk tokens)
			// must still let others be deleted.
			if o.Role == RoleAdmin && o.Enabled() {
				if k, err := enabledAdmins(ctx, tx); err != nil {
					return err
				} else if k == 0 {
					return ErrLastAdmin
				}
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: delete operator %s: %w", name, err)
	}
	return nil
}

// SignIn is a successful console sign-in: the TOTP step it used, by
// compare-and-set, and the session it opens.
type SignIn struct {
	Name           string
	ExpectLastStep int64
	LastStep       int64
	Offset         int64
	At             time.Time
	Session        Session
}

// OperatorSignedIn records a successful sign-in in one transaction: it
// accepts the TOTP step only while the stored last step still equals
// ExpectLastStep and is below LastStep (ErrConflict otherwise: the code
// was used meanwhile), refuses a locked or disabled operator
// (ErrConflict), clears the failures, records the time, creates the
// session and appends a.
func (s *DB) OperatorSignedIn(ctx context.Context, in SignIn, a AuditEntry) (Operator, error) {
	var out Operator
	err := checkAudit(&a)
	if err == nil {
		err = checkSession(in.Session)
	}
	if err == nil && in.LastStep <= in.ExpectLastStep {
		err = fmt.Errorf("step %d does not follow %d: %w", in.LastStep, in.ExpectLastStep, ErrConflict)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			res, err := tx.exec(ctx, `UPDATE operators SET totp_last_step = $3, totp_offset = $4, failures = 0,
	last_sign_in_at = $5 WHERE name = $1 AND totp_last_step = $2 AND locked_at IS NULL AND disabled_at IS NULL`,
				in.Name, in.ExpectLastStep, in.LastStep, in.Offset, dbTime(in.At))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n != 1 {
				if _, err := operatorInTx(ctx, tx, in.Name); err != nil {
					return err
				}
				return ErrConflict
			}
			if err := insertSession(ctx, tx, in.Session); err != nil {
				return err
			}
			if _, err := appendAuditTx(ctx, tx, a); err != nil {
				return err
			}
			out, err = operatorInTx(ctx, tx, in.Name)
			return err
		})
	}
	if err != nil {
		return Operator{}, fmt.Errorf("store: sign-in of %s: %w", in.Name, err)
	}
	return out, nil
}

// RecordOperatorFailure counts one failed sign-in atomically, locks the
// operator (LockedAt = at) when the failures reach lockAfter (0: never)
// and appends a; it returns the operator afterwards, ErrNotFound if
// unknown.
func (s *DB) RecordOperatorFailure(ctx context.Context, name string, at time.Time, lockAfter int, a AuditEntry) (Operator, error) {
	var out Operator
	err := checkAudit(&a)
	if err == nil {
		err = storableTime("at", at)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			o, err := operatorInTx(ctx, tx, name)
			if err != nil {
				return err
			}
			o.Failures++
			o.LastFailureAt = at
			if lockAfter > 0 && o.Failures >= lockAfter && o.LockedAt.IsZero() {
				o.LockedAt = at
			}
			if err := writeOperator(ctx, tx, o); err != nil {
				return err
			}
			if _, err := appendAuditTx(ctx, tx, a); err != nil {
				return err
			}
			out = o
			return nil
		})
	}
	if err != nil {
		return Operator{}, fmt.Errorf("store: record sign-in failure of %s: %w", name, err)
	}
	return out, nil
}

// OperatorToken is an API token of an operator; stored hashed. It acts
// with its operator's current role.
type OperatorToken struct {
	ID        string
	Name      string // the operator
	Role      string // read: the operator's role now; written: at creation
	Hash      []byte
	CreatedAt time.Time
	ExpiresAt time.Time // zero: no expiry
	RevokedAt time.Time
	Note      string
	// OperatorDisabled is set (read only) when the operator is disabled.
	OperatorDisabled bool
}

// CreateOperatorToken records a token of an existing operator and appends
// a, in one transaction; ErrNotFound if the operator is unknown. A zero
// CreatedAt means now.
func (s *DB) CreateOperatorToken(ctx context.Context, t OperatorToken, a AuditEntry) error {
	if err := s.createOperatorToken(ctx, t, a); err != nil {
		return fmt.Errorf("store: create operator token %s: %w", t.ID, err)
	}
	return nil
}

func (s *DB) createOperatorToken(ctx context.Context, t OperatorToken, a AuditEntry) error {
	switch {
	case t.ID == "":
		return errors.New("token ID is empty")
	case len(t.Hash) == 0:
		return errors.New("token hash is empty")
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	if err := storableTime("expires_at", t.ExpiresAt); err != nil {
		return err
	}
	if err := checkAudit(&a); err != nil {
		return err
	}
	return s.write(ctx, func(tx wtx) error {
		o, err := operatorInTx(ctx, tx, t.Name)
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `INSERT INTO operator_tokens (id, name, role, hash, created_at, revoked_at, expires_at, note)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			t.ID, t.Name, o.Role, t.Hash, dbTime(t.CreatedAt), dbTime(t.RevokedAt), dbTime(t.ExpiresAt), t.Note); err != nil {
			return err
		}
		_, err = appendAuditTx(ctx, tx, a)
		return err
	})
}

// OperatorTokenByHash returns the token with its operator's current role;
// ErrNotFound for an unknown token (or one whose operator is gone),
// ErrRevoked for a revoked one. Expiry and OperatorDisabled are for the
// caller to check.
func (s *DB) OperatorTokenByHash(ctx context.Context, hash []byte) (OperatorToken, error) {
	var (
		t        OperatorToken
		disabled time.Time
	)
	err := s.readRow(ctx, qOperatorToken, hash).
		Scan(&t.ID, &t.Name, &t.Role, &t.Hash, scanTime(&t.CreatedAt), scanTime(&t.RevokedAt), scanTime(&t.ExpiresAt),
			&t.Note, scanTime(&disabled))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return OperatorToken{}, fmt.Errorf("store: operator token: %w", ErrNotFound)
	case err != nil:
		return OperatorToken{}, fmt.Errorf("store: operator token: %w", err)
	case !t.RevokedAt.IsZero():
		return OperatorToken{}, fmt.Errorf("store: operator token %s: %w", t.ID, ErrRevoked)
	}
	t.OperatorDisabled = !disabled.IsZero()
	return t, nil
}

// OperatorTokens lists the tokens of an operator (without hashes), newest
// first, revoked ones included.
func (s *DB) OperatorTokens(ctx context.Context, name string) ([]OperatorToken, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, role, created_at, expires_at, revoked_at, note
	FROM operator_tokens WHERE name = $1 ORDER BY created_at DESC, id`, name)
	if err != nil {
		return nil, fmt.Errorf("store: tokens of %s: %w", name, err)
	}
	defer rows.Close()
	var ts []OperatorToken
	for rows.Next() {
		var t OperatorToken
		if err := rows.Scan(&t.ID, &t.Name, &t.Role, scanTime(&t.CreatedAt), scanTime(&t.ExpiresAt), scanTime(&t.RevokedAt), &t.Note); err != nil {
			return nil, fmt.Errorf("store: tokens of %s: %w", name, err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tokens of %s: %w", name, err)
	}
	return ts, nil
}

// RevokeOperatorToken revokes the token at at and appends a; ErrNotFound
// if unknown, ErrRevoked if revoked already.
func (s *DB) RevokeOperatorToken(ctx context.Context, id string, at time.Time, a AuditEntry) error {
	err := checkAudit(&a)
	if err == nil {
		err = storableTime("at", at)
	}
	if err == nil {
		err = s.write(ctx, func(tx wtx) error {
			var revoked time.Time
			err := tx.queryRow(ctx, `SELECT revoked_at FROM operator_tokens WHERE id = $1`, id).Scan(scanTime(&revoked))
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return ErrNotFound
			case err != nil:
				return err
			case !revoked.IsZero():
				return ErrRevoked
			}
			if _, err := tx.exec(ctx, `UPDATE operator_tokens SET revoked_at = $2 WHERE id = $1`, id, dbTime(at)); err != nil {
				return err
			}
			_, err = appendAuditTx(ctx, tx, a)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("store: revoke operator token %s: %w", id, err)
	}
	return nil
}

// HasOperators reports whether any operator exists. It is not part of
// Store: only the collector's init, which creates the first admin, needs
// it.
func (s *DB) HasOperators(ctx context.Context) (bool, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM operators`).Scan(&n); err != nil {
		return false, fmt.Errorf("store: count operators: %w", err)
	}
	return n > 0, nil
}
