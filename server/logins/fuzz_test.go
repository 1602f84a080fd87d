package logins

import (
	"strings"
	"testing"
)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"alice", "yamada@city.example.lg.jp", ".x", "a b", "山田", "a\x00", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			if len(err.Error()) > 300 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if name == "" || len(name) > MaxNameBytes || strings.ContainsAny(name[:1], ".-@") {
			t.Fatalf("accepted %q", name)
		}
		for i := 0; i < len(name); i++ {
			if !nameByte(name[i]) {
				t.Fatalf("accepted %q with byte %#x", name, name[i])
			}
		}
	})
}

func FuzzNormalizeRecovery(f *testing.F) {
	for _, s := range []string{"abcd-efgh-ijkl-mnop", "ABCD EFGH IJKL MNOP", "123456", "12345678", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, code string) {
		n, ok := normalizeRecovery(code)
		if !ok {
			if n != "" {
				t.Fatalf("not a recovery code but %q", n)
			}
			return
		}
		if len(n) != recoveryChars || strings.Trim(n, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("normalized %q to %q", code, n)
		}
		if again, ok := normalizeRecovery(n); !ok || again != n {
			t.Fatalf("not idempotent: %q -> %q", n, again)
		}
	})
}
