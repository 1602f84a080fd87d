package offlinecode

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLoginCodeWireFormat pins the offline login code: agents in the field
// check the codes of collectors newer than themselves, so a change of the
// derivation (purpose, field order, length prefixes, window, truncation)
// must fail here. The expected code was computed independently of this
// code (Python hmac/hashlib) from the key, fields and window below.
func TestLoginCodeWireFormat(t *testing.T) {
	key := make([]byte, 32) // 00 01 … 1f
	for i := range key {
		key[i] = byte(i)
	}
	const (
		terminal = "3f1c1b9e-7a52-4c0e-9d6b-2f8a1e5c4b01"
		window   = 493000 // 2026-03-29 16:00 to 17:00 UTC
		want     = "2961732357"
	)
	got, err := LoginCode(key, terminal, "alice", "1234-5678", window)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("login code: %s, want %s", got, want)
	}
	at := time.Unix(window*3600+1800, 0)
	if WindowOf(at) != window {
		t.Fatalf("WindowOf(%v) = %d, want %d", at, WindowOf(at), window)
	}
	if ok, err := VerifyLoginCode(key, terminal, "alice", "12345678", "29617-32357", at); !ok || err != nil {
		t.Errorf("the pinned code as typed: %v, %v", ok, err)
	}
}

// FuzzVerifyLoginCode: any challenge and typed code give an answer or an
// error, never a panic; a code LoginCode gives verifies in its window and
// the next, typed grouped, and not two windows later; a code verifies only
// when it is that code.
func FuzzVerifyLoginCode(f *testing.F) {
	f.Add(key, "term-1", "alice", "1234-5678", "29617-32357", int64(493000))
	f.Add(key, "t", "u", "00000000", "0000000000", int64(-1))
	f.Add(key[:8], "t", "u", "1234 5678", "", int64(1<<62))
	f.Fuzz(func(t *testing.T, k []byte, terminal, user, challenge, typed string, w int64) {
		w %= 1 << 40 // windows of hours: keep the times representable
		at := time.Unix(w*3600, 0)
		ok, err := VerifyLoginCode(k, terminal, user, challenge, typed, at)
		if ok && err != nil {
			t.Fatalf("verified with an error: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), typed) && len(typed) >= 4 {
			t.Fatalf("error %q repeats the code", err)
		}
		want, err := LoginCode(k, terminal, user, challenge, WindowOf(at))
		if err != nil {
			if ok {
				t.Fatal("verified without a code")
			}
			return
		}
		if len(want) != CodeDigits || strings.Trim(want, "0123456789") != "" {
			t.Fatalf("code %q: want %d digits", want, CodeDigits)
		}
		if ok {
			prev, _ := LoginCode(k, terminal, user, challenge, WindowOf(at)-1)
			if n, _ := Normalize(typed, CodeDigits); n != want && n != prev {
				t.Fatalf("%q verified, want only %s or %s", typed, want, prev)
			}
		}
		for d := range int64(3) {
			later := at.Add(time.Duration(d) * Window)
			got, err := VerifyLoginCode(k, terminal, user, challenge, Format(want), later)
			if err != nil {
				t.Fatalf("own code %d windows later: %v", d, err)
			}
			if d < 2 && !got {
				t.Fatalf("own code refused %d windows later", d)
			}
			if d == 2 && got {
				// Only if that window's codes collide with it (10^-10).
				c2, _ := LoginCode(k, terminal, user, challenge, WindowOf(later))
				c1, _ := LoginCode(k, terminal, user, challenge, WindowOf(later)-1)
				if c2 != want && c1 != want {
					t.Fatal("own code accepted two windows later")
				}
			}
		}
	})
}

// FuzzChallengeRoundTrip: every challenge NewChallenge could give (any 8
// digits) survives Format and Normalize, as the helpdesk types it back.
func FuzzChallengeRoundTrip(f *testing.F) {
	f.Add(uint32(12345678))
	f.Add(uint32(0))
	f.Fuzz(func(t *testing.T, n uint32) {
		c := fmt.Sprintf("%08d", n%100_000_000)
		got, err := Normalize(Format(c), ChallengeDigits)
		if err != nil || got != c {
			t.Fatalf("Normalize(Format(%q)) = %q, %v", c, got, err)
		}
		if _, err := Normalize(c+"0", ChallengeDigits); !errors.Is(err, ErrMalformed) {
			t.Fatalf("nine digits accepted: %v", err)
		}
	})
}
