package logins

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/mnguard/mnguard/internal/totp"
	"github.com/mnguard/mnguard/server/store"
)

// HOTP (RFC 4226) windows.
const (
	// HOTPWindow is the look-ahead of a login: with the next expected
	// counter c, codes for c to c+HOTPWindow are accepted (button presses
	// that never reached a login), and the counter moves past the one
	// that matched.
	HOTPWindow = 10
	// HOTPResyncWindow is how far past the next expected counter Resync
	// looks for two consecutive codes of a token pressed many times.
	HOTPResyncWindow = 1000
	// hotpLookBack is how far below the counter a code is recognised as
	// a replay, for the log; it is refused either way.
	hotpLookBack = HOTPWindow
)

// hotpToken is the HOTP parameters of a user.
type hotpToken struct {
	hash   func() hash.Hash
	digits int
}

// hotpParams returns the HOTP parameters of u.
func hotpParams(u store.User) (hotpToken, error) {
	var t hotpToken
	switch u.Algorithm {
	case "SHA1", "":
		t.hash = sha1.New
	case "SHA256":
		t.hash = sha256.New
	case "SHA512":
		t.hash = sha512.New
	default:
		return hotpToken{}, fmt.Errorf("user %s: stored algorithm %q is not SHA1, SHA256 or SHA512", u.Name, u.Algorithm)
	}
	if u.Digits != 6 && u.Digits != 8 {
		return hotpToken{}, fmt.Errorf("user %s: stored digits %d: want 6 or 8", u.Name, u.Digits)
	}
	t.digits = u.Digits
	return t, nil
}

// code returns the HOTP value of counter c (RFC 4226 §5.3: dynamic
// truncation, then modulo 10^digits, zero-padded).
func (t hotpToken) code(secret []byte, c uint64) string {
	m := hmac.New(t.hash, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], c)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1_000_000)
	if t.digits == 8 {
		mod = 100_000_000
	}
	return fmt.Sprintf("%0*d", t.digits, v%mod)
}

// match compares code with the codes of counters from to to (both
// included) in constant time and returns the lowest that matches.
func (t hotpToken) match(secret []byte, code string, from, to int64) (int64, bool) {
	want := []byte(code)
	var seen, found int64
	for c := from; c <= to; c++ {
		if c < 0 {
			continue
		}
		m := -int64(subtle.ConstantTimeCompare([]byte(t.code(secret, uint64(c))), want))
		take := m &^ seen
		found = found&^take | c&take
		seen |= take
	}
	return found, seen != 0
}

// checkHOTPCode reports whether code is exactly digits ASCII digits.
func checkHOTPCode(code string, digits int) error {
	if len(code) != digits {
		return fmt.Errorf("%w: want %d digits", totp.ErrMalformedCode, digits)
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return fmt.Errorf("%w: want %d digits", totp.ErrMalformedCode, digits)
		}
	}
	return nil
}

// tryHOTP checks an HOTP code against u: the counters u.Counter to
// u.Counter+HOTPWindow are accepted, and the counter moves to the one
// after the match with compare-and-set (retried once against a re-read
// user when another attempt won the race). A code of a counter below
// u.Counter is a replay. Wrong and replayed codes count as failures, as
// TOTP's do; login also records a login and clears the failures, and
// audit, if not nil, is appended with an accepted code.
func (s *Service) tryHOTP(ctx context.Context, u store.User, code string, now time.Time, login bool, audit *store.AuditEntry) (attempt, error) {
	t, err := hotpParams(u)
	if err != nil {
		return attempt{}, err
	}
	if err := checkHOTPCode(code, t.digits); err != nil {
		return attempt{reason: reasonMalformed, user: u, malformed: err}, nil
	}
	secret, err := s.seal.open(u.Name, u.SecretSealed)
	if err != nil {
		return attempt{}, err
	}
	for try := 0; ; try++ {
		c := u.Counter
		m, ok := t.match(secret, code, c, min(c+HOTPWindow, store.MaxCounter-1))
		if !ok {
			if _, replay := t.match(secret, code, c-hotpLookBack, c-1); replay {
				return s.fail(ctx, u.Name, reasonReplayCounter, now)
			}
			return s.fail(ctx, u.Name, reasonWrong, now)
		}
		nu, err := s.st.AcceptCounter(ctx, store.CounterUpdate{
			Name: u.Name, ExpectCounter: c, Counter: m + 1, At: now,
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
			if u, err = s.st.User(ctx, u.Name); err != nil {
				return attempt{}, err
			}
			if !u.LockedAt.IsZero() {
				return attempt{reason: reasonLocked, user: u}, nil
			}
			if u.Kind != store.TokenHOTP {
				return s.fail(ctx, u.Name, reasonRace, now)
			}
		case errors.Is(err, store.ErrConflict):
			return s.fail(ctx, u.Name, reasonRace, now)
		default:
			return attempt{}, fmt.Errorf("accept counter of user %s: %w", u.Name, err)
		}
	}
}

// resyncHOTP finds two consecutive codes of u's HOTP token at counters m
// and m+1 within u.Counter to u.Counter+HOTPResyncWindow and moves the
// counter to m+2; codes below the counter are never found (no replay).
// audit, if set, is stored in the same transaction.
func (s *Service) resyncHOTP(ctx context.Context, u store.User, code1, code2 string, now time.Time, audit *store.AuditEntry) (store.User, error) {
	t, err := hotpParams(u)
	if err != nil {
		return store.User{}, err
	}
	if err := checkHOTPCode(code1, t.digits); err != nil {
		return store.User{}, fmt.Errorf("%w: first code: %v", ErrInvalid, err)
	}
	if err := checkHOTPCode(code2, t.digits); err != nil {
		return store.User{}, fmt.Errorf("%w: second code: %v", ErrInvalid, err)
	}
	secret, err := s.seal.open(u.Name, u.SecretSealed)
	if err != nil {
		return store.User{}, err
	}
	c := u.Counter
	hi := min(c+HOTPResyncWindow, store.MaxCounter-2)
	c1, c2 := []byte(code1), []byte(code2)
	var found int64
	count := 0
	prev := subtle.ConstantTimeCompare([]byte(t.code(secret, uint64(c))), c1)
	for m := c; m < hi; m++ {
		next := t.code(secret, uint64(m+1))
		if prev&subtle.ConstantTimeCompare([]byte(next), c2) == 1 {
			found = m
			count++
		}
		prev = subtle.ConstantTimeCompare([]byte(next), c1)
	}
	switch {
	case count == 0:
		return store.User{}, fmt.Errorf("user %s: %w: the two codes are not consecutive codes of this HOTP token within %d presses after its counter %d (codes used before are never found)", u.Name, ErrWrongCode, HOTPResyncWindow, c)
	case count > 1:
		return store.User{}, fmt.Errorf("user %s: %w: the two codes match at more than one counter; press twice more and try the two new codes", u.Name, ErrWrongCode)
	}
	nu, err := s.st.AcceptCounter(ctx, store.CounterUpdate{Name: u.Name, ExpectCounter: c, Counter: found + 2, At: now, Audit: audit})
	if err != nil {
		return store.User{}, s.userErr("resync", u.Name, err)
	}
	s.log.Info("hotp token resynchronised", "user", u.Name, "counter", found+2)
	return nu, nil
}
