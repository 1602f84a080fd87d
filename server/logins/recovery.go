package logins

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
)

// Recovery codes.
const (
	// RecoveryCodes is how many recovery codes a user gets at a time.
	RecoveryCodes = 10
	// recoveryBytes is the entropy of one code: 80 bits, 16 base32
	// characters.
	recoveryBytes = 10
	recoveryChars = 16
)

var lowerB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newRecoveryCodes returns RecoveryCodes fresh codes as shown to the user
// (xxxx-xxxx-xxxx-xxxx) and the hashes to store.
func newRecoveryCodes() (codes []string, hashes [][]byte, err error) {
	for range RecoveryCodes {
		b := make([]byte, recoveryBytes)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("recovery codes: %w", err)
		}
		c := lowerB32.EncodeToString(b)
		codes = append(codes, c[0:4]+"-"+c[4:8]+"-"+c[8:12]+"-"+c[12:16])
		hashes = append(hashes, recoveryHash(c))
	}
	return codes, hashes, nil
}

// normalizeRecovery returns the code without spaces and dashes, in lower
// case, and whether that is 16 base32 characters: the shape of a recovery
// code. TOTP codes (digits only, 0, 1, 8 and 9 included) never have it.
func normalizeRecovery(code string) (string, bool) {
	if len(code) > 4*recoveryChars {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case c == ' ' || c == '-':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '2' <= c && c <= '7':
		default:
			return "", false
		}
		b.WriteByte(c)
	}
	if b.Len() != recoveryChars {
		return "", false
	}
	return b.String(), true
}

// recoveryHash is what the store keeps of a normalized recovery code. The
// codes carry 80 random bits, so one unsalted SHA-256 suffices.
func recoveryHash(normalized string) []byte {
	h := sha256.Sum256([]byte("mnguard recovery code\x00" + normalized))
	return h[:]
}
