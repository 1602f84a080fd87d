package logins

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Outcome is the answer to a login verification.
type Outcome int

// Outcomes of [Service.Verify].
const (
	Accepted Outcome = iota + 1
	Rejected
	// Locked: the user is locked; the code was not checked.
	Locked
	// UnknownUser: no TOTP user of that name.
	UnknownUser
)

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Rejected:
		return "rejected"
	case Locked:
		return "locked"
	case UnknownUser:
		return "unknown_user"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Methods, as recorded in events.
const (
	MethodTOTP     = "totp"
	MethodHOTP     = "hotp"
	MethodRecovery = "recovery"
)

// EventType is the type of the server event each verification records.
const EventType = "login.verify"

// Messages for the person at the terminal. They never say more than the
// outcome: a replayed code and a wrong one read the same, and a locked user
// is not told whether the code was right.
const (
	MsgAccepted        = "code accepted"
	MsgConfirmed       = "code accepted; TOTP enrollment confirmed"
	MsgWrong           = "wrong code"
	MsgMalformed       = "not a code: enter the digits your authenticator shows, or a recovery code"
	MsgNowLocked       = "wrong code; too many failed attempts: the account is now locked, ask the helpdesk to unlock it"
	MsgLocked          = "account locked after too many failed attempts: ask the helpdesk to unlock it"
	MsgUnknownUser     = "no TOTP enrollment for this user: ask the helpdesk"
	MsgRecoveryPending = "recovery codes work only once the enrollment is confirmed with an authenticator code"
	// msgExpired names the expiry date of the token's key.
	msgExpired          = "this token expired on %s: ask the helpdesk for a new one"
	msgRecoveryAccepted = "recovery code accepted; %d left"
)

// Reasons, for the log and the event's "reason" attribute.
const (
	reasonAccepted  = "valid code"
	reasonConfirmed = "confirmed enrollment"
	reasonWrong     = "wrong code"
	reasonReplay    = "replayed step"
	// reasonReplayCounter: an HOTP code of a counter already passed.
	reasonReplayCounter = "replayed counter"
	reasonExpired       = "token expired"
	reasonMalformed     = "malformed code"
	reasonRace          = "changed concurrently"
	reasonLocked        = "locked"
	reasonUnknown       = "unknown user"
	reasonRecovery      = "recovery code"
	reasonRecWrong      = "wrong recovery code"
	reasonRecPend       = "recovery code before confirmation"
)

// Result is the outcome of a verification.
type Result struct {
	Outcome Outcome
	// Message is for the person at the terminal.
	Message string
	// Method is MethodTOTP or MethodRecovery, by the code's shape.
	Method string
	// Reason says why, for logs; never shown to the user.
	Reason string
}

// Verify checks a second-factor code that user typed at a login on the
// terminal for the PAM service. code is either a TOTP code or, for a
// confirmed user, a recovery code (16 base32 characters, dashes and spaces
// ignored).
//
// A locked user gets Locked without the code being looked at. Attempts for
// one user are serialized; once the user has Policy.DelayAfter consecutive
// failures each attempt waits Policy.Delay (honouring ctx) before the code
// is checked, one Delay after the previous delayed attempt across every
// replica on the store (see delay). An accepted TOTP code uses up its time step (and confirms a
// pending enrollment); a wrong or replayed one counts a failure, and the
// Policy.LockAfter-th failure locks the user. A malformed code is rejected
// without counting. Every attempt is recorded as a server event of the
// terminal, without the code.
//
// The error is for failures of the collector itself (store, cancelled ctx);
// the caller must then refuse the login.
func (s *Service) Verify(ctx context.Context, terminalID, user, service, code string) (Result, error) {
	if err := ValidateName(user); err != nil {
		return Result{}, err
	}
	unlock, err := s.locks.Lock(ctx, user)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	res, severity, err := s.verify(ctx, user, code)
	if err != nil {
		return Result{}, err
	}
	s.log.Info("login verification", "terminal", terminalID, "user", user, "service", service,
		"result", res.Outcome.String(), "method", res.Method, "reason", res.Reason)
	if err := s.event(ctx, terminalID, user, service, res, severity); err != nil {
		return Result{}, err
	}
	if res.Outcome == Accepted {
		res.Message = s.deliverNotices(ctx, user, res.Message)
	}
	return res, nil
}

func (s *Service) verify(ctx context.Context, name, code string) (Result, mnguardv1.Severity, error) {
	const (
		info  = mnguardv1.Severity_SEVERITY_INFO
		warn  = mnguardv1.Severity_SEVERITY_WARNING
		alert = mnguardv1.Severity_SEVERITY_ALERT
	)
	recovery, isRecovery := normalizeRecovery(code)
	method := MethodTOTP
	if isRecovery {
		method = MethodRecovery
	}
	u, err := s.st.User(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return Result{Outcome: UnknownUser, Message: MsgUnknownUser, Method: method, Reason: reasonUnknown}, warn, nil
	}
	if err != nil {
		return Result{}, 0, fmt.Errorf("read user %s: %w", name, err)
	}
	if !isRecovery && u.Kind == store.TokenHOTP {
		method = MethodHOTP
	}
	if !u.LockedAt.IsZero() {
		return Result{Outcome: Locked, Message: MsgLocked, Method: method, Reason: reasonLocked}, alert, nil
	}
	if err := s.delay(ctx, u); err != nil {
		return Result{}, 0, err
	}
	now := s.p.Now()
	var a attempt
	if isRecovery {
		a, err = s.tryRecovery(ctx, u, recovery, now)
	} else {
		a, err = s.tryTOTP(ctx, u, code, now, true, nil)
	}
	if errors.Is(err, store.ErrNotFound) {
		// Deleted while we looked.
		return Result{Outcome: UnknownUser, Message: MsgUnknownUser, Method: method, Reason: reasonUnknown}, warn, nil
	}
	if err != nil {
		return Result{}, 0, err
	}
	switch {
	case a.ok && isRecovery:
		return Result{Outcome: Accepted, Message: fmt.Sprintf(msgRecoveryAccepted, a.user.RecoveryCodesLeft), Method: method, Reason: a.reason}, info, nil
	case a.ok && u.State == store.UserPending:
		return Result{Outcome: Accepted, Message: MsgConfirmed, Method: method, Reason: a.reason}, info, nil
	case a.ok:
		return Result{Outcome: Accepted, Message: MsgAccepted, Method: method, Reason: a.reason}, info, nil
	case a.reason == reasonLocked:
		return Result{Outcome: Locked, Message: MsgLocked, Method: method, Reason: a.reason}, alert, nil
	case a.expired:
		return Result{Outcome: Rejected, Message: fmt.Sprintf(msgExpired, u.NotAfter.UTC().Format(time.DateOnly)), Method: method, Reason: a.reason}, warn, nil
	case a.malformed != nil:
		return Result{Outcome: Rejected, Message: MsgMalformed, Method: method, Reason: a.reason}, warn, nil
	case a.reason == reasonRecPend:
		return Result{Outcome: Rejected, Message: MsgRecoveryPending, Method: method, Reason: a.reason}, warn, nil
	case a.counted && !a.user.LockedAt.IsZero():
		return Result{Outcome: Rejected, Message: MsgNowLocked, Method: method, Reason: a.reason + ", lock reached"}, alert, nil
	}
	return Result{Outcome: Rejected, Message: MsgWrong, Method: method, Reason: a.reason}, warn, nil
}

// deliverNotices appends the user's pending notices (codes an operator
// issued for them) to an accepted login's message and clears them. The
// login stands if that fails: the notices wait for the next one.
func (s *Service) deliverNotices(ctx context.Context, name, msg string) string {
	u, err := s.st.User(ctx, name)
	if err == nil && u.Notice == "" {
		return msg
	}
	var notices string
	if err == nil {
		notices, err = s.st.TakeUserNotice(ctx, name)
	}
	if err != nil {
		s.log.Error("pending notice not delivered", "user", name, "err", err)
		return msg
	}
	return withNotices(msg, notices)
}

// maxSlotWait bounds how long a delayed attempt may wait for its slot: the
// agent gives up on the collector after 10 s.
const maxSlotWait = 10 * time.Second

// slotReserver is the store's ReserveLoginSlot (store.DB).
type slotReserver interface {
	ReserveLoginSlot(ctx context.Context, subject string, now time.Time, delay, maxWait time.Duration) (time.Time, error)
}

// delay waits Policy.Delay when u has failed often enough. The wait ends
// at a slot reserved in the store (ReserveLoginSlot), one Delay after the
// user's previous delayed attempt at the earliest, so that guesses sent to
// several replicas at once still go one per Delay: the delay lives in the
// database, not in this process. Slots are in wall-clock time, as the
// wait is. When the user's queue reaches past maxSlotWait (or ctx's
// deadline) the attempt is refused unchecked: an error, which refuses the
// login and counts no failure.
func (s *Service) delay(ctx context.Context, u store.User) error {
	if s.p.Delay <= 0 || u.Failures < s.p.DelayAfter {
		return nil
	}
	wait := s.p.Delay
	if r, ok := s.st.(slotReserver); ok {
		now := time.Now()
		maxWait := maxSlotWait
		if dl, ok := ctx.Deadline(); ok {
			maxWait = min(maxWait, dl.Sub(now))
		}
		at, err := r.ReserveLoginSlot(ctx, "user:"+u.Name, now, s.p.Delay, max(maxWait, s.p.Delay))
		if err != nil {
			return fmt.Errorf("delay the attempt of user %s: %w", u.Name, err)
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

// attempt is what checking one code did.
type attempt struct {
	ok      bool
	reason  string
	user    store.User // the user afterwards
	counted bool       // a failure was recorded
	// malformed is set when the code is not a code at all.
	malformed error
	// expired is set when the token's key expired: the code was not
	// checked, and no failure is counted.
	expired bool
}

// tryTOTP checks a TOTP code against u and applies the result: the step
// (compare-and-set, retried once against a re-read user when another
// attempt won the race) or a failure. login also records a login and
// clears the failures.
//
// audit, if not nil, is appended with an accepted step, in its transaction.
//
// An expired token's code is not checked (attempt.expired); an HOTP
// user's code is checked by tryHOTP.
func (s *Service) tryTOTP(ctx context.Context, u store.User, code string, now time.Time, login bool, audit *store.AuditEntry) (attempt, error) {
	if !u.NotAfter.IsZero() && !now.Before(u.NotAfter) {
		return attempt{reason: reasonExpired, user: u, expired: true}, nil
	}
	if u.Kind == store.TokenHOTP {
		return s.tryHOTP(ctx, u, code, now, login, audit)
	}
	p, err := params(u)
	if err != nil {
		return attempt{}, err
	}
	secret, err := s.seal.open(u.Name, u.SecretSealed)
	if err != nil {
		return attempt{}, err
	}
	for try := 0; ; try++ {
		ok, step, err := totp.Verify(secret, code, now, p, totp.State{LastStep: u.LastStep, Offset: u.Offset}, s.p.Window)
		switch {
		case errors.Is(err, totp.ErrMalformedCode):
			return attempt{reason: reasonMalformed, user: u, malformed: err}, nil
		case errors.Is(err, totp.ErrReplay):
			return s.fail(ctx, u.Name, reasonReplay, now)
		case err != nil:
			return attempt{}, fmt.Errorf("verify code of user %s: %w", u.Name, err)
		case !ok:
			return s.fail(ctx, u.Name, reasonWrong, now)
		}
		T, err := totp.Step(now, p)
		if err != nil {
			return attempt{}, err
		}
		nu, err := s.st.AcceptStep(ctx, store.StepUpdate{
			Name: u.Name, ExpectLastStep: u.LastStep, LastStep: step, Offset: step - T, At: now,
			Confirm: u.State == store.UserPending, Login: login, Audit: audit,
		})
		switch {
		case err == nil:
			reason := reasonAccepted
			if u.State == store.UserPending {
				reason = reasonConfirmed
			}
			return attempt{ok: true, reason: reason, user: nu}, nil
		case errors.Is(err, store.ErrConflict) && try == 0:
			// Another replica accepted a step meanwhile: check again
			// against its state, where this step may now be a replay.
			if u, err = s.st.User(ctx, u.Name); err != nil {
				return attempt{}, err
			}
			if !u.LockedAt.IsZero() {
				return attempt{reason: reasonLocked, user: u}, nil
			}
		case errors.Is(err, store.ErrConflict):
			return s.fail(ctx, u.Name, reasonRace, now)
		default:
			return attempt{}, fmt.Errorf("accept step of user %s: %w", u.Name, err)
		}
	}
}

// tryRecovery uses up a recovery code of a confirmed user.
func (s *Service) tryRecovery(ctx context.Context, u store.User, normalized string, now time.Time) (attempt, error) {
	if u.State != store.UserActive {
		return s.fail(ctx, u.Name, reasonRecPend, now)
	}
	nu, err := s.st.UseRecoveryCode(ctx, u.Name, recoveryHash(normalized), now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.fail(ctx, u.Name, reasonRecWrong, now)
	case errors.Is(err, store.ErrConflict):
		// Locked meanwhile (by another replica); the code stays unused.
		return attempt{reason: reasonLocked, user: u}, nil
	case err != nil:
		return attempt{}, fmt.Errorf("use recovery code of user %s: %w", u.Name, err)
	}
	return attempt{ok: true, reason: reasonRecovery, user: nu}, nil
}

// fail records a failed attempt.
func (s *Service) fail(ctx context.Context, name, reason string, now time.Time) (attempt, error) {
	u, err := s.st.RecordFailure(ctx, name, now, s.p.LockAfter)
	if err != nil {
		return attempt{}, fmt.Errorf("record failure of user %s: %w", name, err)
	}
	return attempt{reason: reason, user: u, counted: true}, nil
}

// event records the verification as a server event of the terminal.
func (s *Service) event(ctx context.Context, terminalID, user, service string, res Result, sev mnguardv1.Severity) error {
	now := s.p.Now()
	msg := fmt.Sprintf("login %s for %s", res.Outcome, user)
	if service != "" {
		msg += " (" + service + ")"
	}
	msg += ": " + res.Reason
	e := &mnguardv1.Event{
		Time: timestamppb.New(now), Type: EventType, Severity: sev, Message: msg,
		Attributes: map[string]string{
			"user": user, "service": service, "result": res.Outcome.String(),
			"method": res.Method, "reason": res.Reason,
		},
	}
	data, err := proto.Marshal(e)
	if err != nil {
		return fmt.Errorf("login event: %w", err)
	}
	if err := s.st.AddServerEvent(ctx, store.ServerEvent{
		TerminalID: terminalID, Time: now, Type: EventType, Severity: int32(sev), Message: msg, Data: data,
	}); err != nil {
		return fmt.Errorf("record login event: %w", err)
	}
	return nil
}
