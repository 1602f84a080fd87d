package exemption

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Offline exemptions: on a terminal that cannot reach the collector,
// 'mnguard-agent exemption challenge' prints a challenge; the helpdesk's
// 'mnguardctl exemptions offline-code' answers it with a response code under
// the terminal's offline key; 'mnguard-agent exemption enter' applies it.
//
// A challenge is CodeChars characters of Crockford's base32 (no I, L, O, U),
// 50 bits: 30 random, 5 for the duration ((k+1)·15 min, up to 8 h) and 15
// of a tag of the device identity, so the collector can find the device
// among those the terminal reported. The response is the first 50 bits of
// HMAC-SHA256 under the offline key over a purpose string, the terminal ID,
// the challenge, the device identity and the duration.

// Offline code parameters.
const (
	CodeChars       = 10
	DurationStep    = 15 * time.Minute
	MaxOfflineSteps = 32 // 8 h
	offlinePurpose  = "mnguard offline exemption v1"
	crockford       = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	minOfflineKey   = 16
)

// ErrMalformedCode is wrapped by errors about malformed challenges and codes.
var ErrMalformedCode = errors.New("malformed code")

// Challenge is a decoded offline challenge.
type Challenge struct {
	// Text is the normalized challenge, CodeChars characters.
	Text     string
	Duration time.Duration
	Tag      uint16
}

// DeviceTag is the 15-bit tag of a device identity a challenge carries.
func DeviceTag(d *mnguardv1.DeviceIdentity) uint16 {
	sum := sha256.Sum256([]byte(FormatDevice(d)))
	return binary.BigEndian.Uint16(sum[:2]) & 0x7fff
}

// OfflineDuration checks that d is a whole number of DurationSteps, 1 to
// MaxOfflineSteps of them.
func OfflineDuration(d time.Duration) error {
	if d < DurationStep || d > MaxOfflineSteps*DurationStep || d%DurationStep != 0 {
		return fmt.Errorf("offline exemption duration %s: want a multiple of %s up to %s", d, DurationStep, MaxOfflineSteps*DurationStep)
	}
	return nil
}

// NewChallenge returns a fresh challenge for the device and duration.
func NewChallenge(d *mnguardv1.DeviceIdentity, duration time.Duration) (Challenge, error) {
	if err := ValidateDevice(d); err != nil {
		return Challenge{}, err
	}
	if err := OfflineDuration(duration); err != nil {
		return Challenge{}, err
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return Challenge{}, fmt.Errorf("offline challenge: %w", err)
	}
	nonce := uint64(binary.BigEndian.Uint32(r[:]) & (1<<30 - 1))
	k := uint64(duration/DurationStep - 1)
	tag := DeviceTag(d)
	v := nonce<<20 | k<<15 | uint64(tag)
	return Challenge{Text: encode50(v), Duration: duration, Tag: tag}, nil
}

// ParseChallenge normalizes and decodes a challenge as typed.
func ParseChallenge(s string) (Challenge, error) {
	n, err := Normalize(s)
	if err != nil {
		return Challenge{}, fmt.Errorf("challenge: %w", err)
	}
	v := decode50(n)
	k := (v >> 15) & 0x1f
	return Challenge{Text: n, Duration: time.Duration(k+1) * DurationStep, Tag: uint16(v & 0x7fff)}, nil
}

// ResponseCode is the helpdesk's answer to challenge for the terminal and
// device; the device must carry the challenge's tag.
func ResponseCode(key []byte, terminalID, challenge string, d *mnguardv1.DeviceIdentity) (string, error) {
	c, err := ParseChallenge(challenge)
	if err != nil {
		return "", err
	}
	if len(key) < minOfflineKey {
		return "", fmt.Errorf("offline key is %d bytes, want at least %d", len(key), minOfflineKey)
	}
	if terminalID == "" {
		return "", errors.New("offline code: terminal ID is required")
	}
	if err := ValidateDevice(d); err != nil {
		return "", err
	}
	if DeviceTag(d) != c.Tag {
		return "", fmt.Errorf("device %s is not the one the challenge names", FormatDevice(d))
	}
	m := hmac.New(sha256.New, key)
	for _, f := range []string{offlinePurpose, terminalID, c.Text, d.GetVendorId(), d.GetProductId(), d.GetSerial()} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		m.Write(n[:])
		m.Write([]byte(f))
	}
	var ds [8]byte
	binary.BigEndian.PutUint64(ds[:], uint64(c.Duration/time.Second))
	m.Write(ds[:])
	sum := m.Sum(nil)
	return encode50(binary.BigEndian.Uint64(sum[:8]) >> 14), nil
}

// VerifyResponse reports, in constant time with respect to the code,
// whether code answers challenge for the terminal and device.
func VerifyResponse(key []byte, terminalID, challenge string, d *mnguardv1.DeviceIdentity, code string) (bool, error) {
	got, err := Normalize(code)
	if err != nil {
		return false, fmt.Errorf("code: %w", err)
	}
	want, err := ResponseCode(key, terminalID, challenge, d)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1, nil
}

// Format groups a code for display: "ABCDE-FGHJK".
func Format(code string) string {
	if len(code) != CodeChars {
		return code
	}
	return code[:5] + "-" + code[5:]
}

// Normalize uppercases a typed code, drops spaces and dashes, reads O as 0
// and I or L as 1, and checks that CodeChars base32 characters remain.
func Normalize(s string) (string, error) {
	if len(s) > 4*CodeChars {
		return "", fmt.Errorf("%w: %d characters, want %d", ErrMalformedCode, len(s), CodeChars)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		switch c {
		case ' ', '-':
			continue
		case 'O':
			c = '0'
		case 'I', 'L':
			c = '1'
		}
		if strings.IndexByte(crockford, c) < 0 {
			return "", fmt.Errorf("%w: %q is not one of the code's characters", ErrMalformedCode, rune(s[i]))
		}
		b.WriteByte(c)
	}
	if b.Len() != CodeChars {
		return "", fmt.Errorf("%w: %d characters, want %d", ErrMalformedCode, b.Len(), CodeChars)
	}
	return b.String(), nil
}

func encode50(v uint64) string {
	var b [CodeChars]byte
	for i := CodeChars - 1; i >= 0; i-- {
		b[i] = crockford[v&31]
		v >>= 5
	}
	return string(b[:])
}

func decode50(s string) uint64 {
	var v uint64
	for i := 0; i < len(s); i++ {
		v = v<<5 | uint64(strings.IndexByte(crockford, s[i]))
	}
	return v
}
