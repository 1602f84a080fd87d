package exemption

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzParsePayload fuzzes the token's payload parser itself (FuzzVerify
// stops at the signature): any bytes give an error wrapping ErrInvalid or
// an exemption that is valid, survives a marshal and parse unchanged, and,
// signed, verifies to itself on its terminal within its validity.
func FuzzParsePayload(f *testing.F) {
	se, err := Sign(ed25519.NewKeyFromSeed(vectorSeed), vectorClaims())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(se.GetPayload())
	noSerial := vectorClaims()
	noSerial.Device.Serial, noSerial.AllowNoSerial = "", true
	b, _ := proto.Marshal(noSerial)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a length far past the end
	key := ed25519.NewKeyFromSeed(vectorSeed)
	f.Fuzz(func(t *testing.T, payload []byte) {
		e, err := parsePayload(payload)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := Validate(e); err != nil {
			t.Fatalf("parsed an invalid exemption: %v", err)
		}
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := parsePayload(again)
		if err != nil || !proto.Equal(e, e2) {
			t.Fatalf("round trip: %v, %v", e2, err)
		}
		signed, err := Sign(key, e)
		if err != nil {
			t.Fatalf("Sign of a parsed exemption: %v", err)
		}
		got, err := Verify(key.Public().(ed25519.PublicKey), signed, e.GetTerminalId(), e.GetNotBefore().AsTime())
		if err != nil || !proto.Equal(got, e) {
			t.Fatalf("signed and verified: %v, %v", got, err)
		}
	})
}

// FuzzParseChallenge: a typed offline challenge parses to a normalized
// text, a duration the agent would offer and a 15-bit tag, and parses the
// same again when formatted for display; anything else wraps
// ErrMalformedCode.
func FuzzParseChallenge(f *testing.F) {
	f.Add(vectorChallenge)
	f.Add("138nk-r31kg")
	f.Add("ZZZZZ-ZZZZZ")
	f.Add("ABCDE-FGHJU")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseChallenge(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedCode) {
				t.Fatalf("ParseChallenge(%q): %v does not wrap ErrMalformedCode", s, err)
			}
			return
		}
		if err := OfflineDuration(c.Duration); err != nil || c.Tag > 0x7fff || len(c.Text) != CodeChars {
			t.Fatalf("ParseChallenge(%q) = %+v (%v)", s, c, err)
		}
		c2, err := ParseChallenge(Format(c.Text))
		if err != nil || c2 != c {
			t.Fatalf("ParseChallenge(Format(%q)) = %+v, %v; want %+v", c.Text, c2, err, c)
		}
	})
}

// FuzzVerifyResponse: for any challenge, device and typed code, answering
// never panics; the code ResponseCode gives verifies however it is typed
// (grouped, lower case), and a code differing in one character does not.
func FuzzVerifyResponse(f *testing.F) {
	f.Add(vectorKey, vectorTerminal, vectorChallenge, "0781:5581:4C530001230815117432", vectorResponse)
	f.Add(vectorKey, "t", "0000000000", "0000:0000:", "gf9a7-0k1nf")
	f.Fuzz(func(t *testing.T, key []byte, terminal, challenge, device, code string) {
		d, derr := ParseDevice(device)
		ok, err := VerifyResponse(key, terminal, challenge, d, code)
		if ok && err != nil {
			t.Fatalf("verified with an error: %v", err)
		}
		want, err := ResponseCode(key, terminal, challenge, d)
		if err != nil {
			return
		}
		if derr != nil {
			t.Fatalf("a response for an invalid device %q", device)
		}
		if ok {
			if n, _ := Normalize(code); n != want {
				t.Fatalf("code %q verified, want only %s", code, want)
			}
		}
		for _, typed := range []string{want, Format(want), "  " + Format(want) + " "} {
			if ok, err := VerifyResponse(key, terminal, challenge, d, typed); !ok || err != nil {
				t.Fatalf("own response %q refused: %v", typed, err)
			}
		}
		other := []byte(want)
		other[0] = crockford[(strings.IndexByte(crockford, other[0])+1)%len(crockford)]
		if ok, err := VerifyResponse(key, terminal, challenge, d, string(other)); ok || err != nil {
			t.Fatalf("response %q in place of %s: %v, %v", other, want, ok, err)
		}
	})
}
