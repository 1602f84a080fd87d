package totp

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
)

// TestOathtoolInterop checks Verify against codes from oathtool (OATH
// Toolkit, Debian package oathtool), an independent implementation. It
// skips when oathtool is missing, except under CI=true.
func TestOathtoolInterop(t *testing.T) {
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("oathtool not found (apt-get install oathtool); CI must run this test: %v", err)
		}
		t.Skipf("oathtool not found (apt-get install oathtool): %v", err)
	}
	const when = "2026-11-25 12:00:00 UTC"
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	random, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		secret []byte
		p      Params
		mode   string
	}{
		{"sha1-6-30", seedSHA1, Params{}, "--totp"},
		{"sha1-6-30-random", random, Params{}, "--totp"},
		{"sha256-8-30", seedSHA256, Params{Algorithm: otp.AlgorithmSHA256, Digits: otp.DigitsEight}, "--totp=sha256"},
		{"sha512-8-60", seedSHA512, Params{Algorithm: otp.AlgorithmSHA512, Digits: otp.DigitsEight, Period: 60}, "--totp=sha512"},
		{"sha1-6-30-10bytes", seedSHA1[:10], Params{}, "--totp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.p.WithDefaults()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			// -w 1: the codes of the current step and the next one.
			cmd := exec.CommandContext(ctx, bin, tt.mode,
				"-d", strconv.Itoa(int(p.Digits)),
				"-s", strconv.Itoa(int(p.Period)),
				"-w", "1",
				"--now", when,
				"-b", EncodeSecret(tt.secret))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("oathtool: %v", err)
			}
			codes := strings.Fields(string(out))
			if len(codes) != 2 {
				t.Fatalf("oathtool printed %q, want two codes", out)
			}
			T := mustStep(t, now, p)
			for i, code := range codes {
				step := T + int64(i)
				if got := codeAt(t, tt.secret, step, p); got != code {
					t.Errorf("step %d: Generate = %s, oathtool %s", step, got, code)
				}
				ok, gotStep, err := Verify(tt.secret, code, now, p, State{}, DefaultWindow)
				if !ok || err != nil || gotStep != step {
					t.Errorf("Verify(oathtool code of step %d) = %v, %d, %v", step, ok, gotStep, err)
				}
			}
			t.Logf("oathtool %s -d %d -s %d at %q: %v accepted", tt.mode, p.Digits, p.Period, when, codes)
		})
	}
}
