// Package offlinecode computes the helpdesk's one-time codes for terminals
// that cannot reach the collector: the agent shows a challenge, the helpdesk
// answers it with a response code computed under the terminal's offline key
// (handed to the agent at enrollment, kept by the collector), and the agent
// checks the answer locally.
//
// A response is a truncated HMAC-SHA256 under the offline key over a purpose
// string and every field it binds, each length-prefixed, and the validity
// window (hours since the Unix epoch). A login code binds terminal, user and
// challenge; the agent accepts the current and the previous window, so a code
// is good for one to two hours, and forgets a challenge once it is answered,
// so each code works once.
package offlinecode

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Lengths of challenges and codes, in decimal digits.
const (
	ChallengeDigits = 8
	CodeDigits      = 10
	// Window is the validity window of a code; a code from the current or
	// the previous window is accepted.
	Window = time.Hour
	// MinKeyBytes is the shortest offline key accepted.
	MinKeyBytes = 16
)

// Purposes keep codes for different uses apart.
const (
	PurposeLogin = "mnguard offline login v1"
)

// ErrMalformed is wrapped by errors about malformed challenges or codes.
var ErrMalformed = errors.New("malformed")

// NewChallenge returns a fresh random challenge of ChallengeDigits digits.
func NewChallenge() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(100_000_000))
	if err != nil {
		return "", fmt.Errorf("offline challenge: %w", err)
	}
	return fmt.Sprintf("%08d", n.Int64()), nil
}

// Format groups digits for display: "1234-5678", "12345-67890".
func Format(digits string) string {
	if len(digits) < 6 {
		return digits
	}
	h := len(digits) / 2
	return digits[:h] + "-" + digits[h:]
}

// Normalize removes the spaces and dashes people type and checks that n
// decimal digits remain.
func Normalize(s string, n int) (string, error) {
	if len(s) > 4*n {
		return "", fmt.Errorf("%w: %d characters, want %d digits", ErrMalformed, len(s), n)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '-':
		case '0' <= c && c <= '9':
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("%w: only digits, spaces and dashes are allowed", ErrMalformed)
		}
	}
	if b.Len() != n {
		return "", fmt.Errorf("%w: %d digits, want %d", ErrMalformed, b.Len(), n)
	}
	return b.String(), nil
}

// WindowOf returns the validity window t falls in.
func WindowOf(t time.Time) int64 { return t.Unix() / int64(Window/time.Second) }

// WindowEnd returns the end of the validity of a code issued in window w.
func WindowEnd(w int64) time.Time {
	return time.Unix((w+2)*int64(Window/time.Second), 0)
}

// LoginCode returns the login code for the terminal, user and (normalized)
// challenge in window w.
func LoginCode(key []byte, terminalID, user, challenge string, w int64) (string, error) {
	if len(key) < MinKeyBytes {
		return "", fmt.Errorf("offline key is %d bytes, want at least %d", len(key), MinKeyBytes)
	}
	c, err := Normalize(challenge, ChallengeDigits)
	if err != nil {
		return "", fmt.Errorf("challenge: %w", err)
	}
	if terminalID == "" || user == "" {
		return "", errors.New("offline code: terminal and user are required")
	}
	return code(key, PurposeLogin, w, terminalID, user, c), nil
}

// VerifyLoginCode reports whether code answers the challenge for the
// terminal and user at now (current or previous window), in constant time
// with respect to the code.
func VerifyLoginCode(key []byte, terminalID, user, challenge, got string, now time.Time) (bool, error) {
	g, err := Normalize(got, CodeDigits)
	if err != nil {
		return false, fmt.Errorf("code: %w", err)
	}
	w := WindowOf(now)
	ok := 0
	for _, win := range []int64{w, w - 1} {
		want, err := LoginCode(key, terminalID, user, challenge, win)
		if err != nil {
			return false, err
		}
		ok |= subtle.ConstantTimeCompare([]byte(want), []byte(g))
	}
	return ok == 1, nil
}

// code is HMAC-SHA256(key, purpose, window, fields...) reduced to CodeDigits
// decimal digits (dynamic truncation as in RFC 4226, on 64 bits).
func code(key []byte, purpose string, w int64, fields ...string) string {
	m := hmac.New(sha256.New, key)
	put := func(s string) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	put(purpose)
	var wb [8]byte
	binary.BigEndian.PutUint64(wb[:], uint64(w))
	m.Write(wb[:])
	for _, f := range fields {
		put(f)
	}
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint64(sum[off:off+8]) & 0x7fff_ffff_ffff_ffff
	return fmt.Sprintf("%0*d", CodeDigits, v%10_000_000_000)
}
