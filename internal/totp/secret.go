package totp

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
)

// Secret sizes in bytes.
const (
	// SecretSize is the size of secrets made by NewSecret: 160 bits, as
	// RFC 4226 recommends.
	SecretSize = 20
	// MinSecretSize is the smallest secret accepted: 80 bits, RFC 4226's
	// minimum.
	MinSecretSize = 10
	// MaxSecretSize is the largest secret accepted: 512 bits, the seed size
	// of RFC 6238's SHA-512 test vectors.
	MaxSecretSize = 64
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSecret returns a new random 160-bit secret from crypto/rand.
func NewSecret() ([]byte, error) {
	s := make([]byte, SecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("totp: new secret: %w", err)
	}
	return s, nil
}

// EncodeSecret returns secret as upper-case base32 without padding, as
// otpauth URLs and authenticator apps want it.
func EncodeSecret(secret []byte) string {
	return b32.EncodeToString(secret)
}

// DecodeSecret decodes a base32 secret as people and token vendors write
// it: lower or upper case, with or without spaces and '=' padding. It
// rejects secrets shorter than 80 bits or longer than 512 bits. Errors
// never contain the secret.
func DecodeSecret(s string) ([]byte, error) {
	// Longest sensible input: MaxSecretSize bytes is 103 base32
	// characters; allow a space between every two, plus padding.
	if len(s) > 4*MaxSecretSize*8/5 {
		return nil, fmt.Errorf("totp: secret too long: %d characters, at most %d bits allowed", len(s), MaxSecretSize*8)
	}
	buf := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			continue
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		buf = append(buf, c)
	}
	// Padding only at the end.
	for len(buf) > 0 && buf[len(buf)-1] == '=' {
		buf = buf[:len(buf)-1]
	}
	if len(buf) == 0 {
		return nil, errors.New("totp: secret is empty")
	}
	// 1, 3 or 6 characters after the last full group of 8 cannot come from
	// whole bytes; encoding/base32 would silently drop them.
	switch len(buf) % 8 {
	case 1, 3, 6:
		return nil, fmt.Errorf("totp: secret is not valid base32: %d characters cannot encode whole bytes", len(buf))
	}
	out := make([]byte, b32.DecodedLen(len(buf)))
	n, err := b32.Decode(out, buf)
	if err != nil {
		var ce base32.CorruptInputError
		if errors.As(err, &ce) {
			// The offset is in the cleaned-up string; say no more, the
			// input is a secret.
			return nil, fmt.Errorf("totp: secret is not valid base32 (A-Z, 2-7) near character %d", int64(ce)+1)
		}
		return nil, errors.New("totp: secret is not valid base32 (A-Z, 2-7)")
	}
	out = out[:n]
	if err := checkSecret(out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkSecret checks the length of a decoded secret.
func checkSecret(secret []byte) error {
	switch {
	case len(secret) < MinSecretSize:
		return fmt.Errorf("totp: secret too short: %d bits, at least %d needed", len(secret)*8, MinSecretSize*8)
	case len(secret) > MaxSecretSize:
		return fmt.Errorf("totp: secret too long: %d bits, at most %d allowed", len(secret)*8, MaxSecretSize*8)
	}
	return nil
}
