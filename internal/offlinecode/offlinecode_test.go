package offlinecode

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

var key = bytes.Repeat([]byte{7}, 32)

func TestLoginCodeBindsEveryField(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC)
	w := WindowOf(now)
	c, err := LoginCode(key, "term-1", "alice", "1234-5678", w)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != CodeDigits {
		t.Fatalf("code %q: want %d digits", c, CodeDigits)
	}
	for _, f := range []string{Format(c), c, " " + c[:3] + " " + c[3:]} {
		ok, err := VerifyLoginCode(key, "term-1", "alice", "12345678", f, now)
		if err != nil || !ok {
			t.Errorf("VerifyLoginCode(%q) = %v, %v; want true", f, ok, err)
		}
	}
	other := []struct {
		name             string
		key              []byte
		term, user, chal string
		at               time.Time
	}{
		{"other key", bytes.Repeat([]byte{8}, 32), "term-1", "alice", "12345678", now},
		{"other terminal", key, "term-2", "alice", "12345678", now},
		{"other user", key, "term-1", "alicf", "12345678", now},
		{"other challenge", key, "term-1", "alice", "12345679", now},
		{"two windows later", key, "term-1", "alice", "12345678", now.Add(2 * Window)},
		{"window before", key, "term-1", "alice", "12345678", now.Add(-Window)},
	}
	for _, o := range other {
		ok, err := VerifyLoginCode(o.key, o.term, o.user, o.chal, c, o.at)
		if err != nil || ok {
			t.Errorf("%s: VerifyLoginCode = %v, %v; want false", o.name, ok, err)
		}
	}
	// The next window still accepts it.
	if ok, _ := VerifyLoginCode(key, "term-1", "alice", "12345678", c, now.Add(Window)); !ok {
		t.Error("code refused in the following window")
	}
	if !WindowEnd(w).After(now.Add(Window)) {
		t.Errorf("WindowEnd(%d) = %v: too early", w, WindowEnd(w))
	}
}

func TestMalformed(t *testing.T) {
	for _, s := range []string{"", "12345", "123456789", "1234567a", "1234\n5678", "12345678901234567890123456789012345"} {
		if _, err := Normalize(s, ChallengeDigits); !errors.Is(err, ErrMalformed) {
			t.Errorf("Normalize(%q) = %v; want ErrMalformed", s, err)
		}
	}
	if _, err := LoginCode(key[:8], "t", "u", "12345678", 1); err == nil {
		t.Error("short key accepted")
	}
	if _, err := LoginCode(key, "", "u", "12345678", 1); err == nil {
		t.Error("empty terminal accepted")
	}
	if _, err := VerifyLoginCode(key, "t", "u", "12345678", "12345", time.Now()); !errors.Is(err, ErrMalformed) {
		t.Errorf("short code: err = %v", err)
	}
}

func TestNewChallenge(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		c, err := NewChallenge()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Normalize(c, ChallengeDigits); err != nil {
			t.Fatalf("challenge %q: %v", c, err)
		}
		seen[c] = true
	}
	if len(seen) < 99 {
		t.Errorf("only %d distinct challenges in 100", len(seen))
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add("1234-5678")
	f.Add(" 12 34 56 78 ")
	f.Add("\xff")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s, ChallengeDigits)
		if err != nil {
			return
		}
		if len(n) != ChallengeDigits {
			t.Fatalf("Normalize(%q) = %q", s, n)
		}
		for i := range len(n) {
			if n[i] < '0' || n[i] > '9' {
				t.Fatalf("Normalize(%q) = %q: not digits", s, n)
			}
		}
	})
}
