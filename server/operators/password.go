package operators

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password limits.
const (
	MinPasswordRunes = 12
	MaxPasswordBytes = 1024
)

// Argon2id parameters of new hashes: 64 MiB, 2 passes, 2 lanes, a 16-byte
// salt and a 32-byte key — above OWASP's minimums (19 MiB, 2 passes),
// about 160 ms on a 2-core collector (RFC 9106's 3 passes took 320 ms,
// too long for a console sign-in).
const (
	argonMemoryKiB = 64 * 1024
	argonTime      = 2
	argonThreads   = 2
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds of the parameters a stored hash may name: a hash outside them is
// refused rather than computed (a tampered row must not cost a gigabyte).
const (
	maxArgonMemoryKiB = 1024 * 1024
	maxArgonTime      = 16
	maxArgonThreads   = 16
)

// ErrMalformedHash is returned for a stored password hash that is not an
// argon2id PHC string within the bounds.
var ErrMalformedHash = errors.New("not an argon2id password hash")

// CheckPassword reports whether pw is acceptable as an operator password:
// valid UTF-8, no control characters, at least MinPasswordRunes characters,
// at most MaxPasswordBytes bytes. The error never repeats the password.
func CheckPassword(pw string) error {
	switch {
	case len(pw) > MaxPasswordBytes:
		return fmt.Errorf("%w: password is longer than %d bytes", ErrInvalid, MaxPasswordBytes)
	case !utf8.ValidString(pw):
		return fmt.Errorf("%w: password is not valid UTF-8", ErrInvalid)
	case utf8.RuneCountInString(pw) < MinPasswordRunes:
		return fmt.Errorf("%w: password is shorter than %d characters", ErrInvalid, MinPasswordRunes)
	}
	for _, r := range pw {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: password contains a control character", ErrInvalid)
		}
	}
	return nil
}

// hashing bounds the argon2id computations running at once: each holds
// 64 MiB and two cores for ~160 ms, and unauthenticated sign-ins trigger
// them, so a flood of sign-ins must leave the collector cores for agents.
var hashing = make(chan struct{}, max(1, runtime.NumCPU()/2))

func idKey(pw, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	hashing <- struct{}{}
	defer func() { <-hashing }()
	return argon2.IDKey(pw, salt, time, memory, threads, keyLen)
}

// HashPassword returns the argon2id PHC string of pw with a fresh salt:
// $argon2id$v=19$m=65536,t=2,p=2$SALT$KEY (unpadded standard base64).
func HashPassword(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := idKey([]byte(pw), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// phc is a parsed argon2id hash.
type phc struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// parseHash parses an argon2id PHC string, refusing parameters outside the
// bounds.
func parseHash(s string) (phc, error) {
	var h phc
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return h, ErrMalformedHash
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, fmt.Errorf("%w: version %q", ErrMalformedHash, parts[2])
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] {
			return h, fmt.Errorf("%w: parameters %q", ErrMalformedHash, parts[3])
		}
		seen[k] = true
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return h, fmt.Errorf("%w: parameter %s", ErrMalformedHash, k)
		}
		switch k {
		case "m":
			if n < 8 || n > maxArgonMemoryKiB {
				return h, fmt.Errorf("%w: memory %d KiB out of bounds", ErrMalformedHash, n)
			}
			h.memory = uint32(n)
		case "t":
			if n > maxArgonTime {
				return h, fmt.Errorf("%w: %d passes out of bounds", ErrMalformedHash, n)
			}
			h.time = uint32(n)
		case "p":
			if n > maxArgonThreads {
				return h, fmt.Errorf("%w: %d lanes out of bounds", ErrMalformedHash, n)
			}
			h.threads = uint8(n)
		default:
			return h, fmt.Errorf("%w: unknown parameter %q", ErrMalformedHash, k)
		}
	}
	if !seen["m"] || !seen["t"] || !seen["p"] {
		return h, fmt.Errorf("%w: parameters %q incomplete", ErrMalformedHash, parts[3])
	}
	if h.memory < 8*uint32(h.threads) {
		return h, fmt.Errorf("%w: memory below 8 KiB per lane", ErrMalformedHash)
	}
	var err error
	// The decoder skips '\r' and '\n' even when strict: only the
	// canonical encoding is accepted.
	b64 := base64.RawStdEncoding.Strict()
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 ||
		b64.EncodeToString(h.salt) != parts[4] {
		return h, fmt.Errorf("%w: salt", ErrMalformedHash)
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 ||
		b64.EncodeToString(h.key) != parts[5] {
		return h, fmt.Errorf("%w: key", ErrMalformedHash)
	}
	return h, nil
}

// VerifyPassword reports whether pw matches the PHC string hash, comparing
// in constant time. A malformed hash is an error, never a match.
func VerifyPassword(hash, pw string) (bool, error) {
	h, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	key := idKey([]byte(pw), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1, nil
}

// dummyHash is verified against when the operator is unknown or has no
// password, so that the answer takes as long as for a real one.
var dummyHash = sync.OnceValue(func() string {
	h, err := HashPassword("mnguard dummy password, never matches")
	if err != nil {
		return "$argon2id$v=19$m=65536,t=2,p=2$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	}
	return h
})
