package totp

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	pqtotp "github.com/pquerna/otp/totp"
)

// Window limits.
const (
	// DefaultWindow is the number of steps before and after the expected
	// one that Verify should accept: ±1, as RFC 6238 §5.2 recommends.
	DefaultWindow = 1
	// MaxWindow is the largest window Verify accepts.
	MaxWindow = 10
	// MaxResyncSteps is the largest search distance Resync accepts: a day
	// either way at 30 s steps.
	MaxResyncSteps = 2880
)

// Errors that callers tell apart. A user must get the same answer for all
// of them as for a wrong code; they are for the server's log.
var (
	// ErrReplay means the code matched only time steps at or before the
	// last accepted one: a replay of a used code, or an older code after a
	// newer one (RFC 6238 §5.2).
	ErrReplay = errors.New("totp: time step already used (replay)")
	// ErrResyncNotFound means Resync found no two consecutive steps with
	// the given codes.
	ErrResyncNotFound = errors.New("totp: resync: codes not found as consecutive steps")
	// ErrResyncAmbiguous means Resync found the two codes at more than one
	// place.
	ErrResyncAmbiguous = errors.New("totp: resync: codes match more than one place, try two other codes")
)

// State is what the server keeps per user between verifications.
type State struct {
	// LastStep is the last accepted time step, 0 if none. No step at or
	// before it is ever accepted again.
	LastStep int64
	// Offset is the token's learned clock offset in steps: the accepted
	// step minus the server's step at the time.
	Offset int64
}

// Verify checks code against secret at time now. It tries the time steps
// T+st.Offset+d for d from -window to +window, where T is now's step
// (floor of Unix seconds / period), and accepts a step only if it is after
// st.LastStep. window is normally [DefaultWindow].
//
// All candidates are generated and compared in constant time whatever
// matches, so the time taken does not tell where, or whether, a code
// matched. When several fresh steps match (a collision), the one closest
// to T+st.Offset wins.
//
// On success ok is true and step is the matched step; the caller must then
// store State{LastStep: step, Offset: step - T} with compare-and-set
// against the st it passed in, and treat a lost race as a failure. T is
// [Step](now, p).
//
// A wrong code returns ok false and a nil error. A code that matches only
// steps at or before st.LastStep returns an error wrapping [ErrReplay]; a
// malformed code one wrapping [ErrMalformedCode]. Bad params, secret,
// window or state return other errors. ok is false whenever err is not
// nil.
func Verify(secret []byte, code string, now time.Time, p Params, st State, window int) (ok bool, step int64, err error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return false, 0, err
	}
	if err := checkSecret(secret); err != nil {
		return false, 0, err
	}
	if window < 0 || window > MaxWindow {
		return false, 0, fmt.Errorf("totp: verify: window %d: must be 0 to %d", window, MaxWindow)
	}
	if err := CheckCode(code, p); err != nil {
		return false, 0, err
	}
	t, err := Step(now, p)
	if err != nil {
		return false, 0, err
	}
	maxStep := p.maxStep()
	if st.Offset < -maxStep || st.Offset > maxStep {
		return false, 0, fmt.Errorf("totp: verify: state offset %d out of range", st.Offset)
	}
	center := t + st.Offset

	enc := EncodeSecret(secret)
	want := []byte(code)
	// Masks are 0 or -1 (all ones); selections are done with them rather
	// than branches on whether a code matched.
	var freshSeen, staleSeen, freshStep, staleStep int64
	for i := 0; i <= 2*window; i++ {
		// Closest to the center first: 0, -1, +1, -2, +2, ...
		d := int64((i + 1) / 2)
		if i%2 == 1 {
			d = -d
		}
		s := center + d
		if s < 1 || s > maxStep {
			// Depends only on the time and state, not on the code.
			continue
		}
		got, err := generate(enc, s, p)
		if err != nil {
			return false, 0, err
		}
		match := -int64(subtle.ConstantTimeCompare([]byte(got), want))
		var fresh int64 // public: depends on the state only
		if s > st.LastStep {
			fresh = -1
		}
		takeFresh := match & fresh &^ freshSeen
		freshStep = freshStep&^takeFresh | s&takeFresh
		freshSeen |= takeFresh
		takeStale := match &^ fresh &^ staleSeen
		staleStep = staleStep&^takeStale | s&takeStale
		staleSeen |= takeStale
	}
	switch {
	case freshSeen != 0:
		return true, freshStep, nil
	case staleSeen != 0:
		return false, 0, fmt.Errorf("%w: step %d, last accepted %d", ErrReplay, staleStep, st.LastStep)
	}
	return false, 0, nil
}

// Resync finds a drifting token's clock: it looks for two consecutive time
// steps s and s+1, both within maxSteps of now's step T, whose codes are
// code1 and code2, and returns offset (s+1)-T and step s+1. The caller
// must refuse the result if step is at or before the stored LastStep (the
// codes were used before), and otherwise store State{LastStep: step,
// Offset: offset} with compare-and-set. maxSteps is 1 to
// [MaxResyncSteps]; 100 is ±50 minutes at 30 s steps.
//
// It returns [ErrResyncNotFound] if no such pair exists and
// [ErrResyncAmbiguous] if more than one does.
func Resync(secret []byte, code1, code2 string, now time.Time, p Params, maxSteps int) (offset int64, step int64, err error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return 0, 0, err
	}
	if err := checkSecret(secret); err != nil {
		return 0, 0, err
	}
	if maxSteps < 1 || maxSteps > MaxResyncSteps {
		return 0, 0, fmt.Errorf("totp: resync: max steps %d: must be 1 to %d", maxSteps, MaxResyncSteps)
	}
	if err := CheckCode(code1, p); err != nil {
		return 0, 0, fmt.Errorf("first code: %w", err)
	}
	if err := CheckCode(code2, p); err != nil {
		return 0, 0, fmt.Errorf("second code: %w", err)
	}
	t, err := Step(now, p)
	if err != nil {
		return 0, 0, err
	}
	maxStep := p.maxStep()
	lo := max(t-int64(maxSteps), 1)
	hi := min(t+int64(maxSteps), maxStep)
	if hi <= lo {
		return 0, 0, ErrResyncNotFound
	}

	enc := EncodeSecret(secret)
	c1, c2 := []byte(code1), []byte(code2)
	m1 := make([]int, hi-lo+1)
	m2 := make([]int, hi-lo+1)
	for s := lo; s <= hi; s++ {
		got, err := generate(enc, s, p)
		if err != nil {
			return 0, 0, err
		}
		m1[s-lo] = subtle.ConstantTimeCompare([]byte(got), c1)
		m2[s-lo] = subtle.ConstantTimeCompare([]byte(got), c2)
	}
	var found, count int64
	for i := range len(m1) - 1 {
		m := int64(m1[i] & m2[i+1])
		count += m
		found = found&^-m | (lo+int64(i)+1)&-m
	}
	switch {
	case count == 0:
		return 0, 0, ErrResyncNotFound
	case count > 1:
		return 0, 0, fmt.Errorf("%w (%d places)", ErrResyncAmbiguous, count)
	}
	return found - t, found, nil
}

// Generate returns the code for secret at time t. It is for tests and the
// helpdesk's offline tooling; a server verifies with [Verify].
func Generate(secret []byte, t time.Time, p Params) (string, error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return "", err
	}
	if err := checkSecret(secret); err != nil {
		return "", err
	}
	s, err := Step(t, p)
	if err != nil {
		return "", err
	}
	return generate(EncodeSecret(secret), s, p)
}

// Step returns the RFC 6238 time step of t: floor(Unix seconds / period),
// with the defaults applied to p. Times before 1970 or absurdly far in the
// future are an error.
func Step(t time.Time, p Params) (int64, error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return 0, err
	}
	u := t.Unix()
	if u < 0 {
		return 0, fmt.Errorf("totp: time %d (Unix seconds) is before 1970", u)
	}
	s := u / int64(p.Period)
	if s > p.maxStep() {
		return 0, fmt.Errorf("totp: time %d (Unix seconds) is out of range", u)
	}
	return s, nil
}

// generate returns the code of step s for the base32 secret enc, through
// pquerna/otp so that the HOTP arithmetic is not ours.
func generate(enc string, s int64, p Params) (string, error) {
	code, err := pqtotp.GenerateCodeCustom(enc, time.Unix(s*int64(p.Period), 0), pqtotp.ValidateOpts{
		Period:    p.Period,
		Digits:    p.Digits,
		Algorithm: p.Algorithm,
	})
	if err != nil {
		return "", fmt.Errorf("totp: generate: %w", err)
	}
	return code, nil
}
