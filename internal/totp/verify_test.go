package totp

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pquerna/otp"
)

// RFC 6238 Appendix B seeds.
var (
	seedSHA1   = []byte("12345678901234567890")
	seedSHA256 = []byte("12345678901234567890123456789012")
	seedSHA512 = []byte("1234567890123456789012345678901234567890123456789012345678901234")
)

// testNow is an arbitrary fixed time, the same as the oathtool interop
// test's, 10 s into its step.
var testNow = time.Date(2026, 11, 25, 12, 0, 10, 0, time.UTC)

func TestRFC6238Vectors(t *testing.T) {
	sha1 := Params{Algorithm: otp.AlgorithmSHA1, Digits: otp.DigitsEight}
	sha256 := Params{Algorithm: otp.AlgorithmSHA256, Digits: otp.DigitsEight}
	sha512 := Params{Algorithm: otp.AlgorithmSHA512, Digits: otp.DigitsEight}
	tests := []struct {
		unix int64
		step int64 // hex in the RFC
		code string
		seed []byte
		p    Params
	}{
		{59, 0x1, "94287082", seedSHA1, sha1},
		{59, 0x1, "46119246", seedSHA256, sha256},
		{59, 0x1, "90693936", seedSHA512, sha512},
		{1111111109, 0x23523EC, "07081804", seedSHA1, sha1},
		{1111111109, 0x23523EC, "68084774", seedSHA256, sha256},
		{1111111109, 0x23523EC, "25091201", seedSHA512, sha512},
		{1111111111, 0x23523ED, "14050471", seedSHA1, sha1},
		{1111111111, 0x23523ED, "67062674", seedSHA256, sha256},
		{1111111111, 0x23523ED, "99943326", seedSHA512, sha512},
		{1234567890, 0x273EF07, "89005924", seedSHA1, sha1},
		{1234567890, 0x273EF07, "91819424", seedSHA256, sha256},
		{1234567890, 0x273EF07, "93441116", seedSHA512, sha512},
		{2000000000, 0x3F940AA, "69279037", seedSHA1, sha1},
		{2000000000, 0x3F940AA, "90698825", seedSHA256, sha256},
		{2000000000, 0x3F940AA, "38618901", seedSHA512, sha512},
		{20000000000, 0x27BC86AA, "65353130", seedSHA1, sha1},
		{20000000000, 0x27BC86AA, "77737706", seedSHA256, sha256},
		{20000000000, 0x27BC86AA, "47863826", seedSHA512, sha512},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.p.Algorithm, tt.unix), func(t *testing.T) {
			now := time.Unix(tt.unix, 0).UTC()
			step, err := Step(now, tt.p)
			if err != nil || step != tt.step {
				t.Fatalf("Step = %#x, %v; want %#x", step, err, tt.step)
			}
			code, err := Generate(tt.seed, now, tt.p)
			if err != nil || code != tt.code {
				t.Fatalf("Generate = %q, %v; want %q", code, err, tt.code)
			}
			ok, step, err := Verify(tt.seed, tt.code, now, tt.p, State{}, DefaultWindow)
			if !ok || err != nil || step != tt.step {
				t.Fatalf("Verify = %v, %#x, %v; want true, %#x, nil", ok, step, err, tt.step)
			}
		})
	}
}

// codeAt returns the code of step s.
func codeAt(t testing.TB, secret []byte, s int64, p Params) string {
	t.Helper()
	p = p.WithDefaults()
	code, err := Generate(secret, time.Unix(s*int64(p.Period), 0), p)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestVerifyWindow(t *testing.T) {
	for _, p := range []Params{{}, {Algorithm: otp.AlgorithmSHA256, Digits: otp.DigitsEight, Period: 60}} {
		T, err := Step(testNow, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, window := range []int{0, 1, 2} {
			for d := int64(-4); d <= 4; d++ {
				t.Run(fmt.Sprintf("%s-%d/window=%d/d=%+d", p.Algorithm, p.WithDefaults().Period, window, d), func(t *testing.T) {
					code := codeAt(t, seedSHA1, T+d, p)
					ok, step, err := Verify(seedSHA1, code, testNow, p, State{}, window)
					if err != nil {
						t.Fatalf("Verify: %v", err)
					}
					want := d >= -int64(window) && d <= int64(window)
					if ok != want {
						t.Fatalf("Verify ok = %v, want %v", ok, want)
					}
					if ok && step != T+d {
						t.Fatalf("step = %d, want %d", step, T+d)
					}
					if !ok && step != 0 {
						t.Fatalf("step = %d on failure, want 0", step)
					}
				})
			}
		}
	}
}

func TestVerifyReplay(t *testing.T) {
	p := Params{}
	T, _ := Step(testNow, p)
	verify := func(code string, st State) (bool, int64, error) {
		t.Helper()
		return Verify(seedSHA1, code, testNow, p, st, DefaultWindow)
	}

	code := codeAt(t, seedSHA1, T, p)
	ok, step, err := verify(code, State{})
	if !ok || err != nil || step != T {
		t.Fatalf("first use: %v, %d, %v; want true, %d, nil", ok, step, err, T)
	}
	st := State{LastStep: step, Offset: step - T}

	t.Run("same code again", func(t *testing.T) {
		ok, step, err := verify(code, st)
		if ok || step != 0 || !errors.Is(err, ErrReplay) {
			t.Fatalf("replay: %v, %d, %v; want false, 0, ErrReplay", ok, step, err)
		}
	})
	t.Run("older step after newer", func(t *testing.T) {
		newer := State{LastStep: T + 1, Offset: 1}
		for _, s := range []int64{T, T + 1} {
			ok, _, err := verify(codeAt(t, seedSHA1, s, p), newer)
			if ok || !errors.Is(err, ErrReplay) {
				t.Errorf("step %d after %d: %v, %v; want false, ErrReplay", s, newer.LastStep, ok, err)
			}
		}
	})
	t.Run("next step still accepted", func(t *testing.T) {
		ok, step, err := verify(codeAt(t, seedSHA1, T+1, p), st)
		if !ok || err != nil || step != T+1 {
			t.Fatalf("next step: %v, %d, %v; want true, %d, nil", ok, step, err, T+1)
		}
	})
	t.Run("wrong code is not a replay", func(t *testing.T) {
		wrong := "000000"
		for s := T - 1; s <= T+1; s++ {
			if codeAt(t, seedSHA1, s, p) == wrong {
				t.Skip("test code collides")
			}
		}
		ok, step, err := verify(wrong, st)
		if ok || step != 0 || err != nil {
			t.Fatalf("wrong code: %v, %d, %v; want false, 0, nil", ok, step, err)
		}
	})
}

func TestVerifyErrors(t *testing.T) {
	p := Params{}
	code := codeAt(t, seedSHA1, mustStep(t, testNow, p), p)
	tests := []struct {
		name   string
		secret []byte
		code   string
		now    time.Time
		p      Params
		st     State
		window int
		is     error
	}{
		{"malformed code", seedSHA1, " " + code, testNow, p, State{}, 1, ErrMalformedCode},
		{"empty code", seedSHA1, "", testNow, p, State{}, 1, ErrMalformedCode},
		{"8 digits for 6", seedSHA1, code + "00", testNow, p, State{}, 1, ErrMalformedCode},
		{"bad params", seedSHA1, code, testNow, Params{Digits: 7}, State{}, 1, nil},
		{"short secret", seedSHA1[:9], code, testNow, p, State{}, 1, nil},
		{"nil secret", nil, code, testNow, p, State{}, 1, nil},
		{"negative window", seedSHA1, code, testNow, p, State{}, -1, nil},
		{"huge window", seedSHA1, code, testNow, p, State{}, MaxWindow + 1, nil},
		{"before 1970", seedSHA1, code, time.Unix(-1, 0), p, State{}, 1, nil},
		{"far future", seedSHA1, code, time.Unix(1<<62, 0), p, State{}, 1, nil},
		{"huge offset", seedSHA1, code, testNow, p, State{Offset: 1 << 62}, 1, nil},
		{"huge negative offset", seedSHA1, code, testNow, p, State{Offset: -1 << 62}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, step, err := Verify(tt.secret, tt.code, tt.now, tt.p, tt.st, tt.window)
			if ok || step != 0 || err == nil {
				t.Fatalf("Verify = %v, %d, %v; want false, 0, error", ok, step, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			if errors.Is(err, ErrReplay) {
				t.Fatalf("error %v is ErrReplay", err)
			}
		})
	}
}

func TestVerifyNearEpoch(t *testing.T) {
	// Step 0 is "none" in State and never accepted; step 1 is.
	p := Params{}
	code0 := codeAt(t, seedSHA1, 0, p)
	code1 := codeAt(t, seedSHA1, 1, p)
	if code0 == code1 {
		t.Skip("codes collide")
	}
	if ok, _, err := Verify(seedSHA1, code0, time.Unix(10, 0), p, State{}, 1); ok || err != nil {
		t.Errorf("step 0: %v, %v; want false, nil", ok, err)
	}
	if ok, step, err := Verify(seedSHA1, code1, time.Unix(10, 0), p, State{}, 1); !ok || step != 1 || err != nil {
		t.Errorf("step 1: %v, %d, %v; want true, 1, nil", ok, step, err)
	}
}

func mustStep(t testing.TB, now time.Time, p Params) int64 {
	t.Helper()
	s, err := Step(now, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLearnedOffset(t *testing.T) {
	for _, drift := range []int64{3, -3, 40} {
		t.Run(fmt.Sprintf("drift=%+d", drift), func(t *testing.T) {
			p := Params{}
			secret, err := NewSecret()
			if err != nil {
				t.Fatal(err)
			}
			T := mustStep(t, testNow, p)
			// The token runs drift steps off: it shows step T+drift now, and
			// showed T+drift-1 before.
			code1 := codeAt(t, secret, T+drift-1, p)
			code2 := codeAt(t, secret, T+drift, p)

			// Without the offset, its next code is out of the window.
			later := testNow.Add(30 * time.Second)
			next := codeAt(t, secret, T+1+drift, p)
			if ok, _, err := Verify(secret, next, later, p, State{}, DefaultWindow); ok || err != nil {
				t.Fatalf("next code without offset: %v, %v; want false, nil", ok, err)
			}

			offset, step, err := Resync(secret, code1, code2, testNow, p, 100)
			if err != nil {
				t.Fatalf("Resync: %v", err)
			}
			if offset != drift || step != T+drift {
				t.Fatalf("Resync = offset %d, step %d; want %d, %d", offset, step, drift, T+drift)
			}
			st := State{LastStep: step, Offset: offset}

			// The resync codes are burned.
			if ok, _, err := Verify(secret, code2, testNow, p, st, DefaultWindow); ok || !errors.Is(err, ErrReplay) {
				t.Fatalf("resync code again: %v, %v; want false, ErrReplay", ok, err)
			}
			// The token's next code, 30 s later, is accepted with the offset.
			ok, step, err := Verify(secret, next, later, p, st, DefaultWindow)
			if !ok || err != nil || step != T+1+drift {
				t.Fatalf("next code with offset: %v, %d, %v; want true, %d, nil", ok, step, err, T+1+drift)
			}
			if got := step - mustStep(t, later, p); got != drift {
				t.Fatalf("learned offset %d, want %d", got, drift)
			}
		})
	}
}

func TestResync(t *testing.T) {
	p := Params{}
	T := mustStep(t, testNow, p)
	pair := func(s int64) (string, string) {
		return codeAt(t, seedSHA1, s, p), codeAt(t, seedSHA1, s+1, p)
	}
	tests := []struct {
		name     string
		s        int64 // first code's step
		maxSteps int
		wantErr  error
	}{
		{"in sync", T - 1, 100, nil},
		{"behind", T - 30, 100, nil},
		{"lower edge", T - 100, 100, nil},
		{"upper edge", T + 99, 100, nil},
		{"below range", T - 101, 100, ErrResyncNotFound},
		{"second code above range", T + 100, 100, ErrResyncNotFound},
		{"max steps 1", T, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c1, c2 := pair(tt.s)
			offset, step, err := Resync(seedSHA1, c1, c2, testNow, p, tt.maxSteps)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resync = %d, %d, %v; want %v", offset, step, err, tt.wantErr)
				}
				return
			}
			if err != nil || step != tt.s+1 || offset != tt.s+1-T {
				t.Fatalf("Resync = %d, %d, %v; want %d, %d, nil", offset, step, err, tt.s+1-T, tt.s+1)
			}
		})
	}

	c1, c2 := pair(T)
	t.Run("swapped codes", func(t *testing.T) {
		if _, _, err := Resync(seedSHA1, c2, c1, testNow, p, 10); !errors.Is(err, ErrResyncNotFound) {
			t.Fatalf("err = %v, want ErrResyncNotFound", err)
		}
	})
	t.Run("not consecutive", func(t *testing.T) {
		c3 := codeAt(t, seedSHA1, T+2, p)
		if _, _, err := Resync(seedSHA1, c1, c3, testNow, p, 10); !errors.Is(err, ErrResyncNotFound) {
			t.Fatalf("err = %v, want ErrResyncNotFound", err)
		}
	})
	for _, tc := range []struct {
		name       string
		c1, c2     string
		maxSteps   int
		is         error
		wantSubstr string
	}{
		{"malformed first", "12345", c2, 10, ErrMalformedCode, "first code"},
		{"malformed second", c1, "abcdef", 10, ErrMalformedCode, "second code"},
		{"max steps 0", c1, c2, 0, nil, "max steps"},
		{"max steps too big", c1, c2, MaxResyncSteps + 1, nil, "max steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Resync(seedSHA1, tc.c1, tc.c2, testNow, p, tc.maxSteps)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
		})
	}
}

func TestGenerateErrors(t *testing.T) {
	if _, err := Generate(seedSHA1[:5], testNow, Params{}); err == nil {
		t.Error("short secret: no error")
	}
	if _, err := Generate(seedSHA1, testNow, Params{Period: 7}); err == nil {
		t.Error("bad period: no error")
	}
	if _, err := Generate(seedSHA1, time.Unix(-100, 0), Params{}); err == nil {
		t.Error("before 1970: no error")
	}
}

// BenchmarkVerify measures Verify with the defaults (SHA-1, 6 digits, 30 s)
// and window 1. The sub-benchmarks should take the same time: Verify does
// the same work wherever, and whether, the code matches.
func BenchmarkVerify(b *testing.B) {
	p := Params{}
	T := mustStep(b, testNow, p)
	cases := []struct {
		name string
		code string
	}{
		{"match=-1", codeAt(b, seedSHA1, T-1, p)},
		{"match=0", codeAt(b, seedSHA1, T, p)},
		{"match=+1", codeAt(b, seedSHA1, T+1, p)},
		{"wrong", "000000"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Verify(seedSHA1, c.code, testNow, p, State{}, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
