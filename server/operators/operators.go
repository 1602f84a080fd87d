// Package operators manages the people who use the collector's admin API
// and web console: one role each, a password (argon2id) and a TOTP secret
// (sealed like login users'), and the console's sign-in with replay
// protection, delays and lockout.
//
// Every change goes to the store with its audit entry, in one transaction.
// Passwords, secrets and codes never appear in errors, logs or the audit
// log.
package operators

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mnguard/mnguard/internal/keylock"
	"github.com/mnguard/mnguard/internal/totp"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/store"
)

// Errors of the Service; test with errors.Is.
var (
	// ErrInvalid: malformed input (a name, role, password or code).
	ErrInvalid = errors.New("invalid")
	// ErrUnknown: no such operator.
	ErrUnknown = errors.New("no such operator")
	// ErrExists: the name is taken.
	ErrExists = errors.New("operator exists already")
	// ErrSignIn: a sign-in failed. It never says which of the name, the
	// password or the code was wrong.
	ErrSignIn = errors.New("wrong user name, password or code")
	// ErrLocked: too many failed sign-ins; an admin unlocks.
	ErrLocked = errors.New("too many failed sign-ins: this operator is locked until an admin unlocks it")
	// ErrLastAdmin: the change would leave no enabled admin.
	ErrLastAdmin = store.ErrLastAdmin
)

// Policy defaults.
const (
	DefaultDelayAfter = 5
	DefaultDelay      = 2 * time.Second
	DefaultLockAfter  = 10
)

// Policy says how console sign-ins are checked.
type Policy struct {
	// DelayAfter: once an operator has this many consecutive failures,
	// every sign-in attempt is answered only after Delay.
	DelayAfter int
	Delay      time.Duration
	// LockAfter failures lock the operator until an admin unlocks.
	LockAfter int
	// Window is the TOTP steps accepted either side of the expected one.
	Window int
	// Issuer is the issuer authenticator apps show.
	Issuer string
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultPolicy delays after 5 failures by 2 s, locks at 10, accepts ±1
// step, and names the issuer "mnguard console".
func DefaultPolicy() Policy {
	return Policy{DelayAfter: DefaultDelayAfter, Delay: DefaultDelay, LockAfter: DefaultLockAfter,
		Window: totp.DefaultWindow, Issuer: "mnguard console"}
}

// Service manages operators over one store.
type Service struct {
	st    store.Store
	seal  *logins.Sealer
	p     Policy
	locks keylock.Map
}

// New returns a Service that seals TOTP secrets with key (the data
// directory's totp.key).
func New(st store.Store, key []byte, p Policy) (*Service, error) {
	seal, err := logins.NewSealer(key)
	if err != nil {
		return nil, err
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if p.Issuer == "" {
		p.Issuer = DefaultPolicy().Issuer
	}
	if p.LockAfter < 1 || p.DelayAfter < 0 || p.Delay < 0 || p.Window < 0 || p.Window > totp.MaxWindow {
		return nil, fmt.Errorf("operators: invalid sign-in policy %+v", p)
	}
	return &Service{st: st, seal: seal, p: p}, nil
}

// Policy returns the sign-in policy.
func (s *Service) Policy() Policy { return s.p }

// sealName binds an operator's sealed secret to the operator: login user
// names cannot contain ':', so no user's secret opens as an operator's.
func sealName(name string) string { return "operator:" + name }

// ValidateName checks an operator name: the rules of login user names.
func ValidateName(name string) error {
	if err := logins.ValidateName(name); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, trimInvalid(err))
	}
	return nil
}

func trimInvalid(err error) string {
	msg := err.Error()
	if p := logins.ErrInvalid.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

// ValidateRole checks a role name.
func ValidateRole(role string) error {
	if !store.ValidRole(role) {
		return fmt.Errorf("%w: role %q: want admin, helpdesk or auditor", ErrInvalid, truncate(role))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// TOTP is what adding an operator or resetting its TOTP shows once.
type TOTP struct {
	URL    string
	Secret string
}

func (s *Service) newTOTP(name string) ([]byte, TOTP, error) {
	secret, err := totp.NewSecret()
	if err != nil {
		return nil, TOTP{}, err
	}
	sealed, err := s.seal.Seal(sealName(name), secret)
	if err != nil {
		return nil, TOTP{}, err
	}
	return sealed, TOTP{URL: totp.URL(s.p.Issuer, name, secret, totp.DefaultParams()), Secret: totp.EncodeSecret(secret)}, nil
}

// Add creates an operator with a password and a new TOTP secret, which it
// returns once; a is the audit entry (Detail is filled in).
func (s *Service) Add(ctx context.Context, name, role, password, actor string, a store.AuditEntry) (store.Operator, TOTP, error) {
	if err := ValidateName(name); err != nil {
		return store.Operator{}, TOTP{}, err
	}
	if err := ValidateRole(role); err != nil {
		return store.Operator{}, TOTP{}, err
	}
	if err := CheckPassword(password); err != nil {
		return store.Operator{}, TOTP{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.Operator{}, TOTP{}, err
	}
	sealed, t, err := s.newTOTP(name)
	if err != nil {
		return store.Operator{}, TOTP{}, err
	}
	o := store.Operator{Name: name, Role: role, PasswordHash: hash, TOTPSealed: sealed, CreatedAt: s.p.Now(), CreatedBy: actor}
	a.Action, a.Target = "operator.add", name
	a.Detail = "role " + role + "; password and TOTP set"
	if err := s.st.CreateOperator(ctx, o, a); err != nil {
		if errors.Is(err, store.ErrExists) {
			return store.Operator{}, TOTP{}, fmt.Errorf("operator %s: %w", name, ErrExists)
		}
		return store.Operator{}, TOTP{}, err
	}
	o, err = s.Get(ctx, name)
	return o, t, err
}

// Get returns the operator.
func (s *Service) Get(ctx context.Context, name string) (store.Operator, error) {
	if err := ValidateName(name); err != nil {
		return store.Operator{}, err
	}
	o, err := s.st.Operator(ctx, name)
	if err != nil {
		return store.Operator{}, mapErr(name, err)
	}
	return o, nil
}

func mapErr(name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("operator %s: %w", name, ErrUnknown)
	case errors.Is(err, store.ErrLastAdmin):
		return fmt.Errorf("operator %s: %w", name, ErrLastAdmin)
	}
	return err
}

// Change applies change to the operator with the audit entry a (action
// and target set here), in one transaction.
func (s *Service) Change(ctx context.Context, name, action string, change func(*store.Operator, *store.AuditEntry) error, a store.AuditEntry) (store.Operator, error) {
	if err := ValidateName(name); err != nil {
		return store.Operator{}, err
	}
	a.Action, a.Target = action, name
	o, err := s.st.UpdateOperator(ctx, name, change, a)
	if err != nil {
		return store.Operator{}, mapErr(name, err)
	}
	return o, nil
}

// SetRole changes the operator's role.
func (s *Service) SetRole(ctx context.Context, name, role string, a store.AuditEntry) (store.Operator, error) {
	if err := ValidateRole(role); err != nil {
		return store.Operator{}, err
	}
	return s.Change(ctx, name, "operator.set_role", func(o *store.Operator, a *store.AuditEntry) error {
		a.Detail = "role " + o.Role + " -> " + role
		o.Role = role
		return nil
	}, a)
}

// SetEnabled disables or enables the operator. A disabled operator's
// sessions end and its API tokens are refused.
func (s *Service) SetEnabled(ctx context.Context, name string, enabled bool, a store.AuditEntry) (store.Operator, error) {
	action := "operator.disable"
	if enabled {
		action = "operator.enable"
	}
	return s.Change(ctx, name, action, func(o *store.Operator, a *store.AuditEntry) error {
		switch {
		case enabled && o.Enabled():
			a.Detail = "was enabled already"
		case enabled:
			a.Detail = "disabled since " + o.DisabledAt.UTC().Format(time.RFC3339)
			o.DisabledAt = time.Time{}
		case !o.Enabled():
			a.Detail = "was disabled already"
		default:
			a.Detail = "sessions ended, API tokens refused"
			o.DisabledAt = s.p.Now()
		}
		return nil
	}, a)
}

// Unlock clears the operator's sign-in failures and lock.
func (s *Service) Unlock(ctx context.Context, name string, a store.AuditEntry) (store.Operator, error) {
	return s.Change(ctx, name, "operator.unlock", func(o *store.Operator, a *store.AuditEntry) error {
		a.Detail = fmt.Sprintf("was not locked; %d failures cleared", o.Failures)
		if !o.LockedAt.IsZero() {
			a.Detail = fmt.Sprintf("locked since %s after %d failures", o.LockedAt.UTC().Format(time.RFC3339), o.Failures)
		}
		o.LockedAt, o.Failures = time.Time{}, 0
		return nil
	}, a)
}

// SetPassword replaces the operator's password.
func (s *Service) SetPassword(ctx context.Context, name, password string, a store.AuditEntry) (store.Operator, error) {
	if err := CheckPassword(password); err != nil {
		return store.Operator{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.Operator{}, err
	}
	return s.Change(ctx, name, "operator.set_password", func(o *store.Operator, a *store.AuditEntry) error {
		a.Detail = "new password"
		o.PasswordHash = hash
		return nil
	}, a)
}

// SetLanguage sets the operator's console language ("ja", "en" or "").
func (s *Service) SetLanguage(ctx context.Context, name, lang string, a store.AuditEntry) (store.Operator, error) {
	if lang != "" && lang != "ja" && lang != "en" {
		return store.Operator{}, fmt.Errorf("%w: language %q: want ja or en", ErrInvalid, truncate(lang))
	}
	return s.Change(ctx, name, "operator.set_language", func(o *store.Operator, a *store.AuditEntry) error {
		a.Detail = "language " + lang
		o.Language = lang
		return nil
	}, a)
}

// ResetTOTP gives the operator a new TOTP secret, returned once; the old
// one stops working.
func (s *Service) ResetTOTP(ctx context.Context, name string, a store.AuditEntry) (store.Operator, TOTP, error) {
	sealed, t, err := s.newTOTP(name)
	if err != nil {
		return store.Operator{}, TOTP{}, err
	}
	o, err := s.Change(ctx, name, "operator.reset_totp", func(o *store.Operator, a *store.AuditEntry) error {
		a.Detail = "new TOTP secret"
		o.TOTPSealed, o.TOTPLastStep, o.TOTPOffset = sealed, 0, 0
		return nil
	}, a)
	if err != nil {
		return store.Operator{}, TOTP{}, err
	}
	return o, t, nil
}

// Delete removes the operator, its API tokens and sessions.
func (s *Service) Delete(ctx context.Context, name string, a store.AuditEntry) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	a.Action, a.Target, a.Detail = "operator.delete", name, "with its API tokens and sessions"
	return mapErr(name, s.st.DeleteOperator(ctx, name, a))
}

// SignInRequest is one console sign-in attempt.
type SignInRequest struct {
	Name, Password, Code string
	// Session is stored when the attempt succeeds; its Operator is set
	// here.
	Session store.Session
	// Remote is the client's address, for the audit log.
	Remote string
}

// maxSlotWait bounds how long a delayed sign-in may wait for its slot.
const maxSlotWait = 10 * time.Second

// slotReserver is the store's ReserveLoginSlot (store.DB).
type slotReserver interface {
	ReserveLoginSlot(ctx context.Context, subject string, now time.Time, delay, maxWait time.Duration) (time.Time, error)
}

// delay waits Policy.Delay when o has failed often enough. The wait ends
// at a slot reserved in the store, one Delay after the operator's previous
// delayed attempt at the earliest, so that guesses sent to several
// collector replicas at once still go one per Delay (the per-process lock
// of SignIn does not reach the other replicas). When the operator's queue
// reaches past maxSlotWait (or ctx's deadline) the attempt is refused
// unchecked, with an error that counts no failure.
func (s *Service) delay(ctx context.Context, o store.Operator) error {
	if s.p.Delay <= 0 || o.Failures < s.p.DelayAfter {
		return nil
	}
	wait := s.p.Delay
	if r, ok := s.st.(slotReserver); ok {
		now := time.Now()
		maxWait := maxSlotWait
		if dl, ok := ctx.Deadline(); ok {
			maxWait = min(maxWait, dl.Sub(now))
		}
		at, err := r.ReserveLoginSlot(ctx, "operator:"+o.Name, now, s.p.Delay, max(maxWait, s.p.Delay))
		if err != nil {
			return fmt.Errorf("delay the sign-in of operator %s: %w", o.Name, err)
		}
		wait = at.Sub(now)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SignIn checks a console sign-in: the operator's password and a TOTP code
// whose time step was never used before. Attempts for one operator are
// served one at a time; once it has Policy.DelayAfter consecutive failures
// each attempt waits Policy.Delay first, and Policy.LockAfter failures lock
// it. A locked or disabled operator is refused whatever it typed. Every
// attempt for a known operator is in the audit log. It returns ErrSignIn
// for wrong input of any kind, ErrLocked, ErrInvalid for a malformed
// request, or a store error.
func (s *Service) SignIn(ctx context.Context, req SignInRequest) (store.Operator, error) {
	if err := ValidateName(req.Name); err != nil {
		return store.Operator{}, err
	}
	if len(req.Password) > MaxPasswordBytes || len(req.Code) > 64 {
		return store.Operator{}, fmt.Errorf("%w: password or code too long", ErrInvalid)
	}
	unlock, err := s.locks.Lock(ctx, req.Name)
	if err != nil {
		return store.Operator{}, err
	}
	defer unlock()
	audit := func(action, detail string) store.AuditEntry {
		return store.AuditEntry{Time: s.p.Now(), Actor: req.Name + " (sign-in from " + req.Remote + ")", Action: action, Target: req.Name, Detail: detail}
	}
	o, err := s.st.Operator(ctx, req.Name)
	if errors.Is(err, store.ErrNotFound) {
		_, _ = VerifyPassword(dummyHash(), req.Password)
		s.p.Logger.Warn("console sign-in for an unknown operator", "name", req.Name, "remote", req.Remote)
		return store.Operator{}, ErrSignIn
	}
	if err != nil {
		return store.Operator{}, err
	}
	if err := s.delay(ctx, o); err != nil {
		return store.Operator{}, err
	}
	switch {
	case !o.LockedAt.IsZero():
		if _, err := s.st.RecordOperatorFailure(ctx, o.Name, s.p.Now(), 0, audit("operator.sign_in_refused", "locked")); err != nil {
			return store.Operator{}, err
		}
		return store.Operator{}, ErrLocked
	case !o.Enabled():
		_, _ = VerifyPassword(dummyHash(), req.Password)
		if _, err := s.st.AppendAudit(ctx, audit("operator.sign_in_refused", "disabled")); err != nil {
			return store.Operator{}, err
		}
		return store.Operator{}, ErrSignIn
	}
	reason, step, offset, err := s.check(o, req)
	if err != nil {
		return store.Operator{}, err
	}
	if reason != "" {
		f, err := s.st.RecordOperatorFailure(ctx, o.Name, s.p.Now(), s.p.LockAfter, audit("operator.sign_in_failed", reason))
		if err != nil {
			return store.Operator{}, err
		}
		s.p.Logger.Warn("console sign-in failed", "operator", o.Name, "remote", req.Remote, "reason", reason, "failures", f.Failures)
		if !f.LockedAt.IsZero() {
			return store.Operator{}, ErrLocked
		}
		return store.Operator{}, ErrSignIn
	}
	req.Session.Operator = o.Name
	n, err := s.st.OperatorSignedIn(ctx, store.SignIn{
		Name: o.Name, ExpectLastStep: o.TOTPLastStep, LastStep: step, Offset: offset, At: s.p.Now(), Session: req.Session,
	}, audit("operator.sign_in", "console session opened"))
	if errors.Is(err, store.ErrConflict) {
		// The step was used, or the operator locked or disabled, meanwhile.
		return store.Operator{}, ErrSignIn
	}
	if err != nil {
		return store.Operator{}, err
	}
	s.p.Logger.Info("console sign-in", "operator", o.Name, "role", o.Role, "remote", req.Remote)
	return n, nil
}

// check verifies the password and the code of a sign-in. reason is empty
// when both are right, else why not (for the audit log, never shown).
func (s *Service) check(o store.Operator, req SignInRequest) (reason string, step, offset int64, err error) {
	hash := o.PasswordHash
	if hash == "" {
		hash = dummyHash()
	}
	ok, err := VerifyPassword(hash, req.Password)
	if err != nil {
		return "", 0, 0, fmt.Errorf("operator %s: stored password hash: %w", o.Name, err)
	}
	if len(o.TOTPSealed) == 0 {
		return "no TOTP secret set", 0, 0, nil
	}
	secret, err := s.seal.Open(sealName(o.Name), o.TOTPSealed)
	if err != nil {
		return "", 0, 0, err
	}
	now := s.p.Now()
	p := totp.DefaultParams()
	codeOK, step, verr := totp.Verify(secret, req.Code, now, p, totp.State{LastStep: o.TOTPLastStep, Offset: o.TOTPOffset}, s.p.Window)
	switch {
	case o.PasswordHash == "":
		return "no password set", 0, 0, nil
	case !ok:
		return "wrong password", 0, 0, nil
	case errors.Is(verr, totp.ErrReplay):
		return "replayed TOTP code", 0, 0, nil
	case errors.Is(verr, totp.ErrMalformedCode):
		return "malformed TOTP code", 0, 0, nil
	case verr != nil:
		return "", 0, 0, fmt.Errorf("operator %s: verify code: %w", o.Name, verr)
	case !codeOK:
		return "wrong TOTP code", 0, 0, nil
	}
	T, err := totp.Step(now, p)
	if err != nil {
		return "", 0, 0, err
	}
	return "", step, step - T, nil
}
