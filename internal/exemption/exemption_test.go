package exemption

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func sample() *mnguardv1.Exemption {
	return &mnguardv1.Exemption{
		Id: "ex-1", TerminalId: "term-1",
		Device:    &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432"},
		NotBefore: timestamppb.New(t0), NotAfter: timestamppb.New(t0.Add(time.Hour)), DurationSeconds: 3600,
		Issuer: "helpdesk-1 (helpdesk)", Reason: "copy the minutes", Ticket: "INC-42", IssuedAt: timestamppb.New(t0),
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]string{
		"0781:5581:4C530001230815117432": "0781:5581:4C530001230815117432",
		"0BDA:0129:a:b":                  "0bda:0129:a:b",
		"0000:0000:":                     "0000:0000:",
		"0000:0000":                      "0000:0000:",
	} {
		d, err := ParseDevice(in)
		if err != nil || FormatDevice(d) != want {
			t.Errorf("ParseDevice(%q) = %v, %v; want %s", in, FormatDevice(d), err, want)
		}
	}
	for _, bad := range []string{"", "0781", "781:5581:x", "0781:55811:x", "g781:5581:x", "0781:5581:has space", "0781:5581:" + strings.Repeat("x", 127), "0781:5581:\x1b"} {
		if _, err := ParseDevice(bad); err == nil {
			t.Errorf("ParseDevice(%q) accepted", bad)
		}
	}
}

func TestSignVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, otherPriv, _ := ed25519.GenerateKey(nil)
	se, err := Sign(priv, sample())
	if err != nil {
		t.Fatal(err)
	}
	e, err := Verify(pub, se, "term-1", t0.Add(time.Minute))
	if err != nil || !proto.Equal(e, sample()) {
		t.Fatalf("Verify = %v, %v", e, err)
	}
	// Within the clock skew before not-before.
	if _, err := Verify(pub, se, "term-1", t0.Add(-time.Minute)); err != nil {
		t.Errorf("a minute early: %v", err)
	}

	alter := func(f func(e *mnguardv1.Exemption)) *mnguardv1.SignedExemption {
		e := sample()
		f(e)
		p, _ := proto.MarshalOptions{Deterministic: true}.Marshal(e)
		return &mnguardv1.SignedExemption{Payload: p, Signature: se.GetSignature()}
	}
	byOther, _ := Sign(otherPriv, sample())
	flipped := proto.Clone(se).(*mnguardv1.SignedExemption)
	flipped.Payload = bytes.Clone(se.GetPayload())
	flipped.Payload[len(flipped.Payload)-1] ^= 1
	for _, tc := range []struct {
		name string
		pub  ed25519.PublicKey
		se   *mnguardv1.SignedExemption
		term string
		at   time.Time
		want error
	}{
		{"signed by another key", pub, byOther, "term-1", t0, ErrBadSignature},
		{"verified with another key", otherPub, se, "term-1", t0, ErrBadSignature},
		{"altered serial", pub, alter(func(e *mnguardv1.Exemption) { e.Device.Serial = "OTHER" }), "term-1", t0, ErrBadSignature},
		{"altered end", pub, alter(func(e *mnguardv1.Exemption) { e.NotAfter = timestamppb.New(t0.Add(8 * time.Hour)) }), "term-1", t0, ErrBadSignature},
		{"flipped byte", pub, flipped, "term-1", t0, ErrBadSignature},
		{"no signature", pub, &mnguardv1.SignedExemption{Payload: se.GetPayload()}, "term-1", t0, ErrBadSignature},
		{"nil", pub, nil, "term-1", t0, ErrBadSignature},
		{"other terminal", pub, se, "term-2", t0, ErrWrongTerminal},
		{"expired", pub, se, "term-1", t0.Add(time.Hour), ErrExpired},
		{"not yet valid", pub, se, "term-1", t0.Add(-time.Hour), ErrNotYetValid},
	} {
		if _, err := Verify(tc.pub, tc.se, tc.term, tc.at); !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := Verify(nil, se, "term-1", t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("no key: %v", err)
	}
}

func TestValidate(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	for name, f := range map[string]func(e *mnguardv1.Exemption){
		"no id":             func(e *mnguardv1.Exemption) { e.Id = "" },
		"no terminal":       func(e *mnguardv1.Exemption) { e.TerminalId = "" },
		"no device":         func(e *mnguardv1.Exemption) { e.Device = nil },
		"bad vendor":        func(e *mnguardv1.Exemption) { e.Device.VendorId = "xyz" },
		"no serial":         func(e *mnguardv1.Exemption) { e.Device.Serial = "" },
		"no times":          func(e *mnguardv1.Exemption) { e.NotAfter = nil },
		"end before start":  func(e *mnguardv1.Exemption) { e.NotAfter = timestamppb.New(t0.Add(-time.Second)) },
		"duration mismatch": func(e *mnguardv1.Exemption) { e.DurationSeconds = 60 },
		"longer than maximum": func(e *mnguardv1.Exemption) {
			e.NotAfter, e.DurationSeconds = timestamppb.New(t0.Add(25*time.Hour)), 25*3600
		},
		"long reason": func(e *mnguardv1.Exemption) { e.Reason = strings.Repeat("r", 513) },
	} {
		e := sample()
		f(e)
		if _, err := Sign(priv, e); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Sign err = %v, want ErrInvalid", name, err)
		}
	}
	e := sample()
	e.Device.Serial, e.AllowNoSerial = "", true
	if err := Validate(e); err != nil {
		t.Errorf("no serial with override: %v", err)
	}
}

func TestOfflineCode(t *testing.T) {
	key := bytes.Repeat([]byte{9}, 32)
	dev := &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432"}
	c, err := NewChallenge(dev, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Text) != CodeChars || strings.ContainsAny(c.Text, "ILOU") {
		t.Fatalf("challenge %q", c.Text)
	}
	p, err := ParseChallenge(strings.ToLower(Format(c.Text)))
	if err != nil || p != c {
		t.Fatalf("ParseChallenge(Format) = %+v, %v; want %+v", p, err, c)
	}
	if p.Duration != 90*time.Minute || p.Tag != DeviceTag(dev) {
		t.Fatalf("decoded %+v", p)
	}
	code, err := ResponseCode(key, "term-1", c.Text, dev)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := VerifyResponse(key, "term-1", Format(c.Text), dev, strings.ToLower(Format(code))); !ok || err != nil {
		t.Fatalf("VerifyResponse = %v, %v", ok, err)
	}
	other := &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "OTHER"}
	for name, f := range map[string]func() (bool, error){
		"other key":      func() (bool, error) { return VerifyResponse(bytes.Repeat([]byte{8}, 32), "term-1", c.Text, dev, code) },
		"other terminal": func() (bool, error) { return VerifyResponse(key, "term-2", c.Text, dev, code) },
		"other device":   func() (bool, error) { return VerifyResponse(key, "term-1", c.Text, other, code) },
		"wrong code":     func() (bool, error) { return VerifyResponse(key, "term-1", c.Text, dev, "0000000000") },
	} {
		if ok, _ := f(); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ResponseCode(key, "term-1", c.Text, other); err == nil && DeviceTag(other) != c.Tag {
		t.Error("a device without the challenge's tag got a code")
	}
	for _, d := range []time.Duration{0, time.Minute, 20 * time.Minute, 8*time.Hour + DurationStep} {
		if _, err := NewChallenge(dev, d); err == nil {
			t.Errorf("duration %s accepted", d)
		}
	}
	for _, bad := range []string{"", "ABCDE", "ABCDE-FGHJKX", "ABCDE-FGHJ!", "ÄBCDE-FGHJK"} {
		if _, err := ParseChallenge(bad); !errors.Is(err, ErrMalformedCode) {
			t.Errorf("ParseChallenge(%q) = %v", bad, err)
		}
	}
}

func FuzzParseDevice(f *testing.F) {
	f.Add("0781:5581:4C530001230815117432")
	f.Add("0000:0000:")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDevice(s)
		if err != nil {
			return
		}
		d2, err := ParseDevice(FormatDevice(d))
		if err != nil || !SameDevice(d, d2) {
			t.Fatalf("round trip of %q: %v, %v", s, d2, err)
		}
	})
}

func FuzzVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	se, _ := Sign(priv, sample())
	f.Add(se.GetPayload(), se.GetSignature())
	f.Fuzz(func(t *testing.T, payload, sig []byte) {
		e, err := Verify(pub, &mnguardv1.SignedExemption{Payload: payload, Signature: sig}, "term-1", t0)
		if err == nil && (!bytes.Equal(payload, se.GetPayload()) || e.GetTerminalId() != "term-1") {
			t.Fatalf("accepted a token the collector did not sign")
		}
	})
}

func FuzzNormalize(f *testing.F) {
	f.Add("abcde-fghjk")
	f.Add("O1IL0")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if len(n) != CodeChars || strings.Trim(n, crockford) != "" {
			t.Fatalf("Normalize(%q) = %q", s, n)
		}
		if _, err := ParseChallenge(n); err != nil {
			t.Fatalf("normalized %q does not parse: %v", n, err)
		}
	})
}
