package seeds

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Algorithms, as stored in [Seed.Algorithm].
const (
	SHA1   = "SHA1"
	SHA256 = "SHA256"
	SHA512 = "SHA512"
)

// Token kinds, as stored in [Seed.Kind].
const (
	// TOTP tokens derive codes from the time (RFC 6238).
	TOTP = "totp"
	// HOTP tokens derive codes from a counter moved by each press
	// (RFC 4226).
	HOTP = "hotp"
)

// Defaults for values a seed file leaves out.
const (
	DefaultDigits    = 6
	DefaultPeriod    = 30
	DefaultAlgorithm = SHA1
)

// Limits applied to every seed file.
const (
	// MaxSeeds is the largest number of seeds (CSV rows or PSKC key
	// packages) one file may hold.
	MaxSeeds = 100_000
	// MaxFieldBytes is the largest CSV field or XML text value.
	MaxFieldBytes = 1 << 20
	// maxNameBytes bounds serials, user names, issuers and models.
	maxNameBytes = 128
)

// maxSeeds is MaxSeeds, lowered by tests.
var maxSeeds = MaxSeeds

// Errors callers may want to tell apart with [errors.Is]. Unsupported
// features (HOTP tokens, unknown ciphers) wrap [errors.ErrUnsupported].
var (
	// ErrKeyRequired means a PSKC file holds encrypted secrets and no key
	// (or password) was given.
	ErrKeyRequired = errors.New("encrypted secrets: a key is required")
	// ErrDecrypt means an encrypted secret failed its MAC or padding check:
	// the key or password is wrong, or the file was altered.
	ErrDecrypt = errors.New("decryption failed: wrong key or corrupt file")
)

// Seed is one hardware token's secret and parameters.
type Seed struct {
	// Kind is [TOTP] or [HOTP]; the readers always set it.
	Kind string
	// Serial is the token's serial number, printed on the device.
	Serial string
	// User is the user the token belongs to. It may be empty for PSKC
	// files, which often do not name users: the caller then maps the
	// token by serial.
	User string
	// Secret is the raw HMAC key.
	Secret []byte
	// Algorithm is the HMAC hash: [SHA1], [SHA256] or [SHA512].
	Algorithm string
	// Digits is the code length, 6 or 8.
	Digits int
	// Period is the time step in seconds of a TOTP token, 30 by default;
	// 0 for HOTP.
	Period int
	// Counter is the moving factor (initial counter) of an HOTP token;
	// 0 for TOTP.
	Counter uint64
	// NotAfter is when the key expires (PSKC Policy ExpiryDate); zero
	// means no expiry.
	NotAfter time.Time
	// Issuer and Model are informational (PSKC Issuer, DeviceInfo
	// Manufacturer or Model); they may be empty.
	Issuer, Model string
}

// Validate reports whether s is a seed the server can use: kind [TOTP]
// (period of 15 to 120 seconds, counter 0) or [HOTP] (period 0), a 10 to
// 64 byte secret, 6 or 8 digits, a known algorithm, a non-empty serial, and serial, user, issuer and model of at most 128
// bytes of printable UTF-8. The error names the field, never the secret.
func (s Seed) Validate() error {
	if err := checkName(s.Serial); err != nil {
		return fmt.Errorf("serial: %w", err)
	}
	if s.Serial == "" {
		return errors.New("serial: empty")
	}
	if err := checkName(s.User); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	if err := checkName(s.Issuer); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if err := checkName(s.Model); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if n := len(s.Secret); n < 10 || n > 64 {
		return fmt.Errorf("secret: %d bytes, want 10 to 64", n)
	}
	switch s.Algorithm {
	case SHA1, SHA256, SHA512:
	default:
		return fmt.Errorf("algorithm: %q is not SHA1, SHA256 or SHA512", truncate(s.Algorithm))
	}
	if s.Digits != 6 && s.Digits != 8 {
		return fmt.Errorf("digits: %d, want 6 or 8", s.Digits)
	}
	switch s.Kind {
	case TOTP:
		if s.Period < 15 || s.Period > 120 {
			return fmt.Errorf("period: %d seconds, want 15 to 120", s.Period)
		}
		if s.Counter != 0 {
			return fmt.Errorf("counter: %d, want 0 for a TOTP token", s.Counter)
		}
	case HOTP:
		if s.Period != 0 {
			return fmt.Errorf("period: %d seconds, want 0 for an HOTP token", s.Period)
		}
	default:
		return fmt.Errorf("kind: %q is not %q or %q", truncate(s.Kind), TOTP, HOTP)
	}
	return nil
}

// checkName reports whether v is at most maxNameBytes of valid UTF-8
// without control or other non-printable characters.
func checkName(v string) error {
	if len(v) > maxNameBytes {
		return fmt.Errorf("%d bytes, want at most %d", len(v), maxNameBytes)
	}
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fmt.Errorf("contains control character %U", r)
		}
		if !unicode.IsPrint(r) {
			return fmt.Errorf("contains non-printable character %U", r)
		}
	}
	return nil
}

// parseAlgorithm maps the spellings found in seed files ("sha1", "SHA-256",
// "HMAC-SHA512") to [SHA1], [SHA256] or [SHA512].
func parseAlgorithm(v string) (string, bool) {
	v = strings.ToUpper(strings.TrimSpace(v))
	v = strings.TrimPrefix(v, "HMAC-")
	v = strings.TrimPrefix(v, "HMAC")
	v = strings.ReplaceAll(v, "-", "")
	switch v {
	case SHA1, SHA256, SHA512:
		return v, true
	}
	return "", false
}

// truncate shortens v for an error message.
func truncate(v string) string {
	const limit = 64
	if len(v) <= limit {
		return v
	}
	for i := limit; i > 0; i-- {
		if utf8.RuneStart(v[i]) {
			return v[:i] + "…"
		}
	}
	return ""
}
