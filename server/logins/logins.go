package logins

import (
	"context"
	"errors"
	"fmt"
	"github.com/mnguard/mnguard/internal/keylock"
	"log/slog"
	"time"

	"github.com/mnguard/mnguard/internal/totp"
	"github.com/mnguard/mnguard/server/store"
	"github.com/pquerna/otp"
)

// Errors of the operator-facing methods; test with errors.Is. Messages are
// meant for the operator and never contain codes or secrets.
var (
	// ErrInvalid: malformed input (a user name, code, challenge or seed
	// file).
	ErrInvalid = errors.New("invalid")
	// ErrUnknownUser: no such user.
	ErrUnknownUser = errors.New("no such user")
	// ErrUserExists: the name is taken.
	ErrUserExists = errors.New("user exists already")
	// ErrLocked: the user is locked; unlock first.
	ErrLocked = errors.New("user is locked after too many failed attempts: unlock first")
	// ErrNotPending: the enrollment is confirmed already.
	ErrNotPending = errors.New("enrollment is confirmed already")
	// ErrNotConfirmed: the user has not yet confirmed the enrollment with
	// a code from the authenticator.
	ErrNotConfirmed = errors.New("the user has not confirmed the TOTP enrollment yet: an offline login code needs a confirmed user (confirm with a code from the authenticator first)")
	// ErrWrongCode: the code (or the codes, for a resync) did not match.
	ErrWrongCode = errors.New("wrong code")
	// ErrReplay: the code's time step was used already.
	ErrReplay = errors.New("code was used already: wait for the next one")
	// ErrUnknownTerminal: no such terminal.
	ErrUnknownTerminal = errors.New("no such terminal")
	// ErrTerminalRevoked: the terminal is revoked.
	ErrTerminalRevoked = errors.New("terminal is revoked")
	// ErrConflict: someone else changed the user at the same moment; try
	// again.
	ErrConflict = errors.New("user changed concurrently: try again")
)

// Policy defaults.
const (
	DefaultWindow     = totp.DefaultWindow
	DefaultDelayAfter = 3
	DefaultDelay      = 2 * time.Second
	DefaultLockAfter  = 10
	DefaultIssuer     = "mnguard"
	// MaxDelay bounds Policy.Delay: the agent gives up on the collector
	// after 10 s, and a delayed answer must still arrive.
	MaxDelay = 5 * time.Second
	// MaxLockAfter bounds Policy.LockAfter.
	MaxLockAfter = 100
	// ResyncSteps is how far from the server's clock Resync looks for a
	// drifting token: ±100 steps, 50 minutes at 30 s.
	ResyncSteps = 100
)

// Policy says how codes are checked. Start from [DefaultPolicy]: the zero
// value is refused by [New] (LockAfter 0).
type Policy struct {
	// Window is the number of time steps accepted either side of the
	// user's expected step (server step plus learned offset), 0 to
	// totp.MaxWindow.
	Window int
	// DelayAfter: once a user has this many consecutive failures, every
	// further attempt is answered only after Delay (0: from the first
	// attempt).
	DelayAfter int
	// Delay is that delay, 0 (none) to MaxDelay. Attempts for one user are
	// serialized, so parallel guesses wait in line.
	Delay time.Duration
	// LockAfter is the number of consecutive failures that locks a user, 1
	// to MaxLockAfter. There is no "never": without a lockout a 6-digit
	// code falls to patient guessing.
	LockAfter int
	// Issuer is the issuer shown in authenticator apps; DefaultIssuer if
	// empty.
	Issuer string
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Logger receives one line per verification (never the code);
	// slog.Default() if nil.
	Logger *slog.Logger
}

// DefaultPolicy returns ±1 step, a 2 s delay after 3 failures, lockout at
// 10 and the issuer "mnguard".
func DefaultPolicy() Policy {
	return Policy{
		Window: DefaultWindow, DelayAfter: DefaultDelayAfter, Delay: DefaultDelay,
		LockAfter: DefaultLockAfter, Issuer: DefaultIssuer,
	}
}

// Validate reports whether p is usable; the error names the field.
func (p Policy) Validate() error {
	switch {
	case p.Window < 0 || p.Window > totp.MaxWindow:
		return fmt.Errorf("login policy: window %d: must be 0 to %d steps", p.Window, totp.MaxWindow)
	case p.DelayAfter < 0:
		return fmt.Errorf("login policy: delay after %d failures: must not be negative", p.DelayAfter)
	case p.Delay < 0 || p.Delay > MaxDelay:
		return fmt.Errorf("login policy: delay %s: must be 0 to %s (the agent waits 10s for an answer)", p.Delay, MaxDelay)
	case p.LockAfter < 1 || p.LockAfter > MaxLockAfter:
		return fmt.Errorf("login policy: lock after %d failures: must be 1 to %d", p.LockAfter, MaxLockAfter)
	case len(p.Issuer) > 64:
		return fmt.Errorf("login policy: issuer is %d bytes, at most 64", len(p.Issuer))
	}
	for _, r := range p.Issuer {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("login policy: issuer contains control character %U", r)
		}
	}
	return nil
}

// Service is the TOTP authority over one store. It is safe for concurrent
// use. Attempts for one user are serialized within the Service; across
// replicas (collectors on one PostgreSQL) the store keeps the rest: its
// compare-and-set keeps every time step single-use, the failure count and
// the lock are one row updated in one statement, and delayed attempts
// take turns through slots reserved in the database.
type Service struct {
	st    store.Store
	seal  *Sealer
	p     Policy
	log   *slog.Logger
	locks keylock.Map
}

// New returns a Service that seals secrets with key ([KeySize] bytes).
func New(st store.Store, key []byte, p Policy) (*Service, error) {
	if p.Issuer == "" {
		p.Issuer = DefaultIssuer
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	s, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	return &Service{st: st, seal: s, p: p, log: p.Logger}, nil
}

// Policy returns the policy in force.
func (s *Service) Policy() Policy { return s.p }

// Enrollment is what enrolling or resetting a user shows once.
type Enrollment struct {
	User store.User
	// URL is the otpauth:// URL for authenticator apps (QR code); it
	// contains the secret.
	URL string
	// Secret is the secret in base32, for typing in.
	Secret string
	// RecoveryCodes are single-use codes, usable at the login prompt once
	// the enrollment is confirmed.
	RecoveryCodes []string
}

// Enroll creates a pending user with a new 160-bit secret (SHA-1, 6
// digits, 30 s) and ten recovery codes. op is recorded as the creator and
// audited with the user, in one transaction.
func (s *Service) Enroll(ctx context.Context, name string, op Operator) (Enrollment, error) {
	if err := ValidateName(name); err != nil {
		return Enrollment{}, err
	}
	return s.newEnrollment(ctx, name, op.Name, func(u store.User, hashes [][]byte) error {
		a := op.audit(s.p.Now(), "user.enroll", name, "new TOTP secret and recovery codes; pending")
		if err := s.st.CreateUser(ctx, u, hashes, a); err != nil {
			if errors.Is(err, store.ErrExists) {
				return fmt.Errorf("user %s: %w (reset it for a new secret)", name, ErrUserExists)
			}
			return fmt.Errorf("create user %s: %w", name, err)
		}
		return nil
	})
}

// Reset gives an existing user a new secret and new recovery codes (lost
// phone, or a hardware token replaced by an app): the user is pending
// again, unlocked, with no failures and a fresh clock. Like
// [Service.NewRecoveryCodes] it leaves the user a notice for the next
// login; the reset, the notice and op's audit entry are one transaction.
func (s *Service) Reset(ctx context.Context, name string, op Operator) (Enrollment, error) {
	if err := ValidateName(name); err != nil {
		return Enrollment{}, err
	}
	unlock, err := s.locks.Lock(ctx, name)
	if err != nil {
		return Enrollment{}, err
	}
	defer unlock()
	return s.newEnrollment(ctx, name, op.Name, func(u store.User, hashes [][]byte) error {
		now := s.p.Now()
		a := op.audit(now, "user.reset", name, "new TOTP secret and recovery codes; pending, unlocked")
		if err := s.st.ResetUser(ctx, u, hashes, resetNotice(now, op), a); err != nil {
			return s.userErr("reset", name, err)
		}
		return nil
	})
}

// newEnrollment makes a new secret and recovery codes for name, stores
// them with save (which maps its own errors) and returns the enrollment.
func (s *Service) newEnrollment(ctx context.Context, name, actor string, save func(store.User, [][]byte) error) (Enrollment, error) {
	u, secret, err := s.newUser(name, actor)
	if err != nil {
		return Enrollment{}, err
	}
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return Enrollment{}, err
	}
	if err := save(u, hashes); err != nil {
		return Enrollment{}, err
	}
	return s.enrollment(ctx, name, secret, codes)
}

func (s *Service) newUser(name, actor string) (store.User, []byte, error) {
	secret, err := totp.NewSecret()
	if err != nil {
		return store.User{}, nil, err
	}
	sealed, err := s.seal.seal(name, secret)
	if err != nil {
		return store.User{}, nil, err
	}
	return store.User{
		Name: name, State: store.UserPending, SecretSealed: sealed,
		Algorithm: "SHA1", Digits: totp.DefaultDigits.Length(), Period: totp.DefaultPeriod,
		Source: store.SourceEnrolled, CreatedAt: s.p.Now(), CreatedBy: actor,
	}, secret, nil
}

func (s *Service) enrollment(ctx context.Context, name string, secret []byte, codes []string) (Enrollment, error) {
	u, err := s.user(ctx, name)
	if err != nil {
		return Enrollment{}, err
	}
	return Enrollment{
		User:          u,
		URL:           totp.URL(s.p.Issuer, name, secret, totp.DefaultParams()),
		Secret:        totp.EncodeSecret(secret),
		RecoveryCodes: codes,
	}, nil
}

// NewRecoveryCodes replaces all of a user's recovery codes with ten new
// ones. The user is told at the next successful login who issued them and
// when; the codes, that notice and op's audit entry are one transaction.
func (s *Service) NewRecoveryCodes(ctx context.Context, name string, op Operator) (store.User, []string, error) {
	if err := ValidateName(name); err != nil {
		return store.User{}, nil, err
	}
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return store.User{}, nil, err
	}
	now := s.p.Now()
	a := op.audit(now, "user.recovery_codes", name, fmt.Sprintf("%d new recovery codes replace the old ones", len(codes)))
	if err := s.st.ReplaceRecoveryCodes(ctx, name, hashes, recoveryNotice(now, op), a); err != nil {
		return store.User{}, nil, s.userErr("replace recovery codes of", name, err)
	}
	u, err := s.user(ctx, name)
	return u, codes, err
}

// User returns the user.
func (s *Service) User(ctx context.Context, name string) (store.User, error) {
	if err := ValidateName(name); err != nil {
		return store.User{}, err
	}
	return s.user(ctx, name)
}

// Users lists all users by name.
func (s *Service) Users(ctx context.Context) ([]store.User, error) {
	us, err := s.st.Users(ctx)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// Unlock clears a user's lock and failure count, audited with op.
func (s *Service) Unlock(ctx context.Context, name string, op Operator) (store.User, error) {
	if err := ValidateName(name); err != nil {
		return store.User{}, err
	}
	u, err := s.st.UnlockUser(ctx, name, func(before store.User) store.AuditEntry {
		detail := fmt.Sprintf("was not locked; %d failures cleared", before.Failures)
		if !before.LockedAt.IsZero() {
			detail = fmt.Sprintf("locked since %s after %d failures", before.LockedAt.UTC().Format(time.RFC3339), before.Failures)
		}
		return op.audit(s.p.Now(), "user.unlock", name, detail)
	})
	if err != nil {
		return store.User{}, s.userErr("unlock", name, err)
	}
	return u, nil
}

// Delete removes a user and its recovery codes, audited with op.
func (s *Service) Delete(ctx context.Context, name string, op Operator) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := s.st.DeleteUser(ctx, name, op.audit(s.p.Now(), "user.delete", name, "")); err != nil {
		return s.userErr("delete", name, err)
	}
	return nil
}

// Confirm completes a pending enrollment with a code from the user's
// authenticator, checked as a login is (the code's time step is used up,
// a wrong code counts as a failed attempt). It fails with [ErrNotPending],
// [ErrLocked], [ErrWrongCode], [ErrReplay] or, for a malformed code,
// [ErrInvalid]. The confirmation is audited with op in its transaction.
func (s *Service) Confirm(ctx context.Context, name, code string, op Operator) (store.User, error) {
	if err := ValidateName(name); err != nil {
		return store.User{}, err
	}
	unlock, err := s.locks.Lock(ctx, name)
	if err != nil {
		return store.User{}, err
	}
	defer unlock()
	u, err := s.user(ctx, name)
	if err != nil {
		return store.User{}, err
	}
	switch {
	case !u.LockedAt.IsZero():
		return store.User{}, fmt.Errorf("user %s: %w", name, ErrLocked)
	case u.State != store.UserPending:
		return store.User{}, fmt.Errorf("user %s: %w", name, ErrNotPending)
	}
	if err := s.delay(ctx, u); err != nil {
		return store.User{}, err
	}
	now := s.p.Now()
	audit := op.audit(now, "user.confirm", name, "enrollment confirmed with a valid code")
	a, err := s.tryTOTP(ctx, u, code, now, false, &audit)
	if err != nil {
		return store.User{}, err
	}
	switch {
	case a.ok:
		return a.user, nil
	case a.malformed != nil:
		return store.User{}, fmt.Errorf("%w: code: %v", ErrInvalid, a.malformed)
	case a.reason == reasonReplay, a.reason == reasonReplayCounter:
		return store.User{}, fmt.Errorf("user %s: %w", name, ErrReplay)
	case a.expired:
		return store.User{}, fmt.Errorf("%w: user %s: the token's key expired on %s: import or assign a new token", ErrInvalid, name, u.NotAfter.UTC().Format(time.DateOnly))
	case !a.user.LockedAt.IsZero():
		return store.User{}, fmt.Errorf("user %s: %w; the user is now locked after %d failures", name, ErrWrongCode, a.user.Failures)
	}
	return store.User{}, fmt.Errorf("user %s: %w: check the authenticator's clock, or wait for the next code", name, ErrWrongCode)
}

// Resync learns a drifting token's clock offset from two consecutive codes
// found within ±[ResyncSteps] time steps of the server's clock. It changes
// nothing else: a locked user stays locked, a pending one pending. It is
// audited with op in its transaction.
func (s *Service) Resync(ctx context.Context, name, code1, code2 string, op Operator) (store.User, error) {
	if err := ValidateName(name); err != nil {
		return store.User{}, err
	}
	unlock, err := s.locks.Lock(ctx, name)
	if err != nil {
		return store.User{}, err
	}
	defer unlock()
	u, err := s.user(ctx, name)
	if err != nil {
		return store.User{}, err
	}
	if u.Kind == store.TokenHOTP {
		now := s.p.Now()
		audit := op.audit(now, "user.resync", name, "HOTP counter resynchronised with two consecutive codes")
		return s.resyncHOTP(ctx, u, code1, code2, now, &audit)
	}
	p, err := params(u)
	if err != nil {
		return store.User{}, err
	}
	secret, err := s.seal.open(name, u.SecretSealed)
	if err != nil {
		return store.User{}, err
	}
	now := s.p.Now()
	offset, step, err := totp.Resync(secret, code1, code2, now, p, ResyncSteps)
	switch {
	case errors.Is(err, totp.ErrMalformedCode):
		return store.User{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	case errors.Is(err, totp.ErrResyncNotFound):
		return store.User{}, fmt.Errorf("user %s: %w: the two codes are not consecutive codes of this token within %d time steps of the server's clock", name, ErrWrongCode, ResyncSteps)
	case errors.Is(err, totp.ErrResyncAmbiguous):
		return store.User{}, fmt.Errorf("user %s: %w: the two codes match at more than one time; try two other consecutive codes", name, ErrWrongCode)
	case err != nil:
		return store.User{}, fmt.Errorf("resync user %s: %w", name, err)
	case step <= u.LastStep:
		return store.User{}, fmt.Errorf("user %s: %w (resync needs two new consecutive codes)", name, ErrReplay)
	}
	audit := op.audit(now, "user.resync", name, fmt.Sprintf("clock offset %d -> %d steps", u.Offset, offset))
	nu, err := s.st.AcceptStep(ctx, store.StepUpdate{
		Name: name, ExpectLastStep: u.LastStep, LastStep: step, Offset: offset, At: now, Audit: &audit,
	})
	if err != nil {
		return store.User{}, s.userErr("resync", name, err)
	}
	s.log.Info("totp token resynchronised", "user", name, "offset_steps", offset)
	return nu, nil
}

func (s *Service) user(ctx context.Context, name string) (store.User, error) {
	u, err := s.st.User(ctx, name)
	if err != nil {
		return store.User{}, s.userErr("read", name, err)
	}
	return u, nil
}

// userErr maps store errors about one user.
func (s *Service) userErr(verb, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("user %s: %w", name, ErrUnknownUser)
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("user %s: %w", name, ErrConflict)
	case errors.Is(err, store.ErrExists):
		return fmt.Errorf("user %s: %w", name, ErrUserExists)
	}
	return fmt.Errorf("%s user %s: %w", verb, name, err)
}

// params returns the TOTP parameters of u.
func params(u store.User) (totp.Params, error) {
	p := totp.Params{Digits: otp.Digits(u.Digits), Period: uint(u.Period)}
	switch u.Algorithm {
	case "SHA1", "":
		p.Algorithm = otp.AlgorithmSHA1
	case "SHA256":
		p.Algorithm = otp.AlgorithmSHA256
	case "SHA512":
		p.Algorithm = otp.AlgorithmSHA512
	default:
		return totp.Params{}, fmt.Errorf("user %s: stored algorithm %q is not SHA1, SHA256 or SHA512", u.Name, u.Algorithm)
	}
	if u.Period < 0 || u.Digits < 0 {
		return totp.Params{}, fmt.Errorf("user %s: stored digits %d or period %d invalid", u.Name, u.Digits, u.Period)
	}
	if err := p.Validate(); err != nil {
		return totp.Params{}, fmt.Errorf("user %s: %w", u.Name, err)
	}
	return p, nil
}

// KeySealer returns the sealer of the terminals' offline keys, under the
// same key as the TOTP secrets, for [store.DB.SetKeySealer].
func (s *Service) KeySealer() store.KeySealer { return s.seal }
