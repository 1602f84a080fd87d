package seeds

import (
	"bytes"
	"strings"
	"testing"
)

func validSeed() Seed {
	return Seed{
		Kind:      TOTP,
		Serial:    "SN0001",
		User:      "alice",
		Secret:    []byte("12345678901234567890"),
		Algorithm: SHA1,
		Digits:    6,
		Period:    30,
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Seed)
		want   string // "" for valid
	}{
		{"valid", func(*Seed) {}, ""},
		{"empty user", func(s *Seed) { s.User = "" }, ""},
		{"sha512 8 digits 60s", func(s *Seed) { s.Algorithm, s.Digits, s.Period = SHA512, 8, 60 }, ""},
		{"64-byte secret", func(s *Seed) { s.Secret = bytes.Repeat([]byte{1}, 64) }, ""},
		{"unicode user", func(s *Seed) { s.User = "山田 太郎" }, ""},
		{"empty serial", func(s *Seed) { s.Serial = "" }, "serial: empty"},
		{"long serial", func(s *Seed) { s.Serial = strings.Repeat("x", 129) }, "serial: 129 bytes"},
		{"newline in user", func(s *Seed) { s.User = "alice\nroot" }, "user: contains control character U+000A"},
		{"escape in user", func(s *Seed) { s.User = "\x1b[2J" }, "user: contains control character"},
		{"bad utf-8 serial", func(s *Seed) { s.Serial = "\xff" }, "serial: not valid UTF-8"},
		{"zero-width user", func(s *Seed) { s.User = "al\u200bice" }, "user: contains non-printable"},
		{"control in model", func(s *Seed) { s.Model = "a\tb" }, "model: contains control"},
		{"short secret", func(s *Seed) { s.Secret = make([]byte, 9) }, "secret: 9 bytes"},
		{"long secret", func(s *Seed) { s.Secret = make([]byte, 65) }, "secret: 65 bytes"},
		{"md5", func(s *Seed) { s.Algorithm = "MD5" }, "algorithm"},
		{"lower-case algorithm", func(s *Seed) { s.Algorithm = "sha1" }, "algorithm"},
		{"7 digits", func(s *Seed) { s.Digits = 7 }, "digits: 7"},
		{"period 10", func(s *Seed) { s.Period = 10 }, "period: 10"},
		{"period 121", func(s *Seed) { s.Period = 121 }, "period: 121"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSeed()
			tt.modify(&s)
			err := s.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate: nil, want error %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	for in, want := range map[string]string{
		"sha1": SHA1, "SHA-1": SHA1, "HMAC-SHA1": SHA1, " sha256 ": SHA256,
		"HMAC-SHA-512": SHA512, "hmacsha512": SHA512, "md5": "", "": "", "SHA384": "",
	} {
		got, ok := parseAlgorithm(in)
		if got != want || ok != (want != "") {
			t.Errorf("parseAlgorithm(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
