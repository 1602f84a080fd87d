package operators

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// cheapHash is an argon2id PHC string of pw with parameters far below
// production (64 KiB, one pass), so that tests can verify it often. It is
// encoded here, not by HashPassword.
func cheapHash(tb testing.TB, pw string) string {
	tb.Helper()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		tb.Fatal(err)
	}
	key := argon2.IDKey([]byte(pw), salt, 1, 64, 1, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s", b64.EncodeToString(salt), b64.EncodeToString(key))
}

func TestCheckPassword(t *testing.T) {
	tests := []struct {
		name string
		pw   string
		ok   bool
	}{
		{"12 ASCII characters", "abcdefghijkl", true},
		{"11 ASCII characters", "abcdefghijk", false},
		{"empty", "", false},
		{"12 Japanese characters", "十二文字のパスワードです", true},
		{"11 Japanese characters (33 bytes)", "十一文字のパスワードだ", false},
		{"spaces count", "correct horse battery", true},
		{"newline", "correct horse\nbattery", false},
		{"NUL", "correct horse\x00battery", false},
		{"tab", "correct\thorse battery", false},
		{"DEL", "correct horse battery\x7f", false},
		{"C1 control", "correct horse battery\u0085", false},
		{"invalid UTF-8", "correct horse \xff battery", false},
		{"1024 bytes", strings.Repeat("a", MaxPasswordBytes), true},
		{"1025 bytes", strings.Repeat("a", MaxPasswordBytes+1), false},
		{"341 three-byte characters (1023 bytes)", strings.Repeat("あ", 341), true},
		{"342 three-byte characters (1026 bytes)", strings.Repeat("あ", 342), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPassword(tt.pw)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckPassword = %v, want ok %v", err, tt.ok)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if tt.pw != "" && strings.Contains(err.Error(), tt.pw[:min(len(tt.pw), 8)]) {
				t.Errorf("error %q repeats the password", err)
			}
		})
	}
}

func TestHashPassword(t *testing.T) {
	const pw = "correct horse battery staple"
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	// 16-byte salt, 32-byte key.
	re := fmt.Sprintf(`^\$argon2id\$v=19\$m=%d,t=%d,p=%d\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`, argonMemoryKiB, argonTime, argonThreads)
	if !regexp.MustCompile(re).MatchString(h) {
		t.Fatalf("HashPassword = %q", h)
	}
	if strings.Contains(h, pw) {
		t.Fatal("the hash contains the password")
	}
	ok, err := VerifyPassword(h, pw)
	if err != nil || !ok {
		t.Errorf("VerifyPassword(own hash, right password) = %v, %v", ok, err)
	}
}

// TestVerifyPasswordKnownAnswers checks hashes made by the reference
// implementation (the argon2 command of the phc-winner-argon2 package).
func TestVerifyPasswordKnownAnswers(t *testing.T) {
	tests := []struct {
		hash, pw string
	}{
		// printf 'パスワード：正しい馬' | argon2 somesaltsomesalt -id -t 1 -k 64 -p 1 -l 32 -e
		{"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$tHrFhPrYGTtCXiVe20oK81Ig7vFyEtCZyPKF2gjTnjg", "パスワード：正しい馬"},
		// printf 'correct horse battery staple' | argon2 mnguard-salt-16b -id -t 2 -k 1024 -p 4 -l 16 -e
		{"$argon2id$v=19$m=1024,t=2,p=4$bW5ndWFyZC1zYWx0LTE2Yg$K9d9Hd4mqY0R7UPwWP+eTg", "correct horse battery staple"},
	}
	for _, tt := range tests {
		if ok, err := VerifyPassword(tt.hash, tt.pw); err != nil || !ok {
			t.Errorf("VerifyPassword(%s, right) = %v, %v", tt.hash, ok, err)
		}
		for _, wrong := range []string{"", tt.pw + " ", " " + tt.pw, tt.pw[:len(tt.pw)-1], tt.pw + tt.pw} {
			if wrong == tt.pw {
				t.Fatalf("wrong password %q is the right one", wrong)
			}
			if ok, err := VerifyPassword(tt.hash, wrong); err != nil || ok {
				t.Errorf("VerifyPassword(%s, %q) = %v, %v; want false", tt.hash, wrong, ok, err)
			}
		}
	}
	// A hash of this package's own encoding verifies too.
	h := cheapHash(t, "abcdefghijkl")
	if ok, err := VerifyPassword(h, "abcdefghijkl"); err != nil || !ok {
		t.Errorf("VerifyPassword(cheap, right) = %v, %v", ok, err)
	}
	if ok, err := VerifyPassword(h, "abcdefghijkL"); err != nil || ok {
		t.Errorf("VerifyPassword(cheap, wrong) = %v, %v", ok, err)
	}
}

const validSalt, validKey = "c29tZXNhbHRzb21lc2FsdA", "tHrFhPrYGTtCXiVe20oK81Ig7vFyEtCZyPKF2gjTnjg"

// phcWith is a PHC string with the given parameter section.
func phcWith(params string) string {
	return "$argon2id$v=19$" + params + "$" + validSalt + "$" + validKey
}

func TestParseHash(t *testing.T) {
	good := []struct {
		s               string
		m, t            uint32
		p               uint8
		saltLen, keyLen int
	}{
		{phcWith("m=64,t=1,p=1"), 64, 1, 1, 16, 32},
		{phcWith("m=65536,t=3,p=2"), 65536, 3, 2, 16, 32},
		{phcWith("p=2,t=3,m=65536"), 65536, 3, 2, 16, 32},
		{phcWith("m=8,t=1,p=1"), 8, 1, 1, 16, 32},
		{phcWith("m=128,t=16,p=16"), 128, 16, 16, 16, 32},
		{phcWith("m=1048576,t=1,p=1"), 1048576, 1, 1, 16, 32},
		{"$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", 64, 1, 1, 8, 16},
		{"$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("A", 86) + "$" + strings.Repeat("A", 86), 64, 1, 1, 64, 64},
	}
	for _, tt := range good {
		h, err := parseHash(tt.s)
		if err != nil {
			t.Errorf("parseHash(%q) = %v", tt.s, err)
			continue
		}
		if h.memory != tt.m || h.time != tt.t || h.threads != tt.p || len(h.salt) != tt.saltLen || len(h.key) != tt.keyLen {
			t.Errorf("parseHash(%q) = m %d t %d p %d salt %d key %d", tt.s, h.memory, h.time, h.threads, len(h.salt), len(h.key))
		}
	}

	bad := []struct {
		name, s string
	}{
		{"empty", ""},
		{"no password", "correct horse battery"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$" + validSalt + "$" + validKey},
		{"argon2d", "$argon2d$v=19$m=64,t=1,p=1$" + validSalt + "$" + validKey},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"},
		{"version 16", "$argon2id$v=16$m=64,t=1,p=1$" + validSalt + "$" + validKey},
		{"no version", "$argon2id$m=64,t=1,p=1$" + validSalt + "$" + validKey},
		{"leading space", " " + phcWith("m=64,t=1,p=1")},
		{"trailing newline", phcWith("m=64,t=1,p=1") + "\n"},
		{"extra field", phcWith("m=64,t=1,p=1") + "$x"},
		{"no key", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt},
		{"m missing", phcWith("t=1,p=1")},
		{"t missing", phcWith("m=64,p=1")},
		{"p missing", phcWith("m=64,t=1")},
		{"no parameters", phcWith("")},
		{"m twice", phcWith("m=64,m=64,t=1,p=1")},
		{"unknown parameter", phcWith("m=64,t=1,p=1,x=1")},
		{"keyid parameter", phcWith("m=64,t=1,p=1,keyid=abc")},
		{"no value", phcWith("m=,t=1,p=1")},
		{"no equals", phcWith("m64,t=1,p=1")},
		{"trailing comma", phcWith("m=64,t=1,p=1,")},
		{"spaces", phcWith("m=64, t=1, p=1")},
		{"negative", phcWith("m=64,t=-1,p=1")},
		{"plus sign", phcWith("m=+64,t=1,p=1")},
		{"hex", phcWith("m=0x40,t=1,p=1")},
		{"underscore", phcWith("m=65_536,t=1,p=1")},
		{"m zero", phcWith("m=0,t=1,p=1")},
		{"m below 8", phcWith("m=7,t=1,p=1")},
		{"m too big", phcWith("m=1048577,t=1,p=1")},
		{"m 4 GiB", phcWith("m=4194304,t=1,p=1")},
		{"m overflows uint32", phcWith("m=4294967296,t=1,p=1")},
		{"t zero", phcWith("m=64,t=0,p=1")},
		{"t 17", phcWith("m=64,t=17,p=1")},
		{"t huge", phcWith("m=64,t=4294967295,p=1")},
		{"p zero", phcWith("m=64,t=1,p=0")},
		{"p=2 below the production minimum is fine, but not below 8 KiB per lane", phcWith("m=8,t=1,p=2")},
		{"p 17", phcWith("m=1024,t=1,p=17")},
		{"p 256 (wraps to 0 as a byte)", phcWith("m=4096,t=1,p=256")},
		{"m below 8 per lane", phcWith("m=15,t=1,p=2")},
		{"salt not base64", "$argon2id$v=19$m=64,t=1,p=1$!!!!!!!!!!!$" + validKey},
		{"salt padded", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "==$" + validKey},
		{"salt with loose bits", "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdB$" + validKey},
		{"salt 7 bytes", "$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAA$" + validKey},
		{"salt 65 bytes", "$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("A", 87) + "$" + validKey},
		{"empty salt", "$argon2id$v=19$m=64,t=1,p=1$$" + validKey},
		{"key 15 bytes", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "$AAAAAAAAAAAAAAAAAAAA"},
		{"key 65 bytes", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "$" + strings.Repeat("A", 87)},
		{"key URL-safe alphabet", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "$tHrFhPrYGTtCXiVe20oK81Ig7vFyEtCZyPKF2gjTnjg_"},
		{"empty key", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "$"},
		{"newline in the key", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "$" + validKey[:10] + "\n" + validKey[10:]},
		{"carriage return in the salt", "$argon2id$v=19$m=64,t=1,p=1$" + validSalt[:5] + "\r" + validSalt[5:] + "$" + validKey},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseHash(tt.s); !errors.Is(err, ErrMalformedHash) {
				t.Errorf("parseHash(%q) = %v, want ErrMalformedHash", tt.s, err)
			}
			// VerifyPassword refuses it without computing anything: an
			// out-of-bounds hash would take seconds and gigabytes.
			start := time.Now()
			if ok, err := VerifyPassword(tt.s, "abcdefghijkl"); ok || !errors.Is(err, ErrMalformedHash) {
				t.Errorf("VerifyPassword(%q) = %v, %v; want ErrMalformedHash", tt.s, ok, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("VerifyPassword took %v on a malformed hash", d)
			}
		})
	}
}

// encodeHash is the PHC string of h.
func encodeHash(h phc) string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", h.memory, h.time, h.threads,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

func FuzzParseHash(f *testing.F) {
	for _, s := range []string{
		phcWith("m=64,t=1,p=1"),
		phcWith("m=65536,t=3,p=2"),
		phcWith("p=2,t=3,m=65536"),
		phcWith("m=0064,t=01,p=1"),
		phcWith("m=1048577,t=1,p=1"),
		phcWith("m=15,t=1,p=2"),
		phcWith("m=64,t=1,p=1,m=64"),
		phcWith("m=4294967296,t=1,p=1"),
		"$argon2id$v=19$m=1024,t=2,p=4$bW5ndWFyZC1zYWx0LTE2Yg$K9d9Hd4mqY0R7UPwWP+eTg",
		"$argon2id$v=19$m=64,t=1,p=1$" + validSalt + "==$" + validKey,
		"$argon2i$v=19$m=64,t=1,p=1$" + validSalt + "$" + validKey,
		"$argon2id$v=19$$$",
		"$$$$$",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHash(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("parseHash(%q) = %v, not ErrMalformedHash", s, err)
			}
			return
		}
		switch {
		case h.memory < 8 || h.memory > maxArgonMemoryKiB:
			t.Fatalf("parseHash(%q): memory %d out of bounds", s, h.memory)
		case h.time < 1 || h.time > maxArgonTime:
			t.Fatalf("parseHash(%q): time %d out of bounds", s, h.time)
		case h.threads < 1 || h.threads > maxArgonThreads:
			t.Fatalf("parseHash(%q): threads %d out of bounds", s, h.threads)
		case h.memory < 8*uint32(h.threads):
			t.Fatalf("parseHash(%q): memory %d below 8 KiB for %d lanes", s, h.memory, h.threads)
		case len(h.salt) < 8 || len(h.salt) > 64 || len(h.key) < 16 || len(h.key) > 64:
			t.Fatalf("parseHash(%q): salt %d, key %d bytes", s, len(h.salt), len(h.key))
		}
		// What it accepted re-encodes canonically, and that parses to the
		// same: nothing in the string was ignored.
		enc := encodeHash(h)
		h2, err := parseHash(enc)
		if err != nil {
			t.Fatalf("re-encoding %q of %q: %v", enc, s, err)
		}
		if encodeHash(h2) != enc {
			t.Fatalf("re-encoding %q parses to %q", enc, encodeHash(h2))
		}
		parts, encParts := strings.Split(s, "$"), strings.Split(enc, "$")
		if parts[4] != encParts[4] || parts[5] != encParts[5] {
			t.Fatalf("salt or key of %q re-encode as %q", s, enc)
		}
	})
}
