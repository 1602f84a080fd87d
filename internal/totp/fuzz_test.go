package totp

import (
	"bytes"
	"testing"
	"time"

	"github.com/pquerna/otp"
)

func FuzzVerify(f *testing.F) {
	p0 := Params{}
	T := mustStep(f, testNow, p0)
	f.Add(codeAt(f, seedSHA1, T, p0), testNow.Unix(), int64(0), int64(0), int8(1), uint8(0))
	f.Add(codeAt(f, seedSHA1, T+1, p0), testNow.Unix(), int64(0), T, int8(1), uint8(0))
	f.Add("94287082", int64(59), int64(0), int64(0), int8(1), uint8(1))
	f.Add("１２３４５６", testNow.Unix(), int64(0), int64(0), int8(1), uint8(0))
	f.Add(" 123456", int64(-1), int64(-5), int64(-5), int8(-1), uint8(7))
	f.Add("", int64(1<<62), int64(1<<62), int64(-1<<62), int8(127), uint8(255))
	f.Fuzz(func(t *testing.T, code string, unix, offset, last int64, window int8, sel uint8) {
		p := Params{
			Algorithm: []otp.Algorithm{otp.AlgorithmSHA1, otp.AlgorithmSHA256, otp.AlgorithmSHA512, otp.AlgorithmMD5}[sel%4],
			Digits:    []otp.Digits{6, 8, 0, 7}[sel/4%4],
			Period:    []uint{30, 60, 0, 1}[sel/16%4],
		}
		st := State{LastStep: last, Offset: offset}
		now := time.Unix(unix, 0)
		ok, step, err := Verify(seedSHA1, code, now, p, st, int(window))
		if !ok {
			if step != 0 {
				t.Fatalf("failed Verify returned step %d", step)
			}
			return
		}
		if err != nil {
			t.Fatalf("ok with error %v", err)
		}
		if cerr := CheckCode(code, p); cerr != nil {
			t.Fatalf("accepted code %q that CheckCode rejects: %v", code, cerr)
		}
		if step <= last {
			t.Fatalf("accepted step %d at or before last step %d", step, last)
		}
		center := mustStep(t, now, p) + offset
		if d := step - center; d < -int64(window) || d > int64(window) {
			t.Fatalf("accepted step %d outside window %d around %d", step, window, center)
		}
		if want := codeAt(t, seedSHA1, step, p); want != code {
			t.Fatalf("accepted %q for step %d, whose code is %q", code, step, want)
		}
	})
}

func FuzzDecodeSecret(f *testing.F) {
	for _, s := range []string{
		"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
		"gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
		"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA====",
		"", "====", "GEZDGNBVGY3TQOJQG", "ſEZDGNBVGY3TQOJQ", "A=B",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeSecret(s)
		if err != nil {
			if b != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		if len(b) < MinSecretSize || len(b) > MaxSecretSize {
			t.Fatalf("accepted a %d-byte secret", len(b))
		}
		again, err := DecodeSecret(EncodeSecret(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: %x, %v; want %x", again, err, b)
		}
	})
}
