package totp

import (
	"bytes"
	"net/url"
	"strings"
	"testing"

	"github.com/pquerna/otp"
)

func TestURLRoundTrip(t *testing.T) {
	secret := []byte("12345678901234567890")
	tests := []struct {
		name            string
		issuer, account string
		p               Params
		wantIssuer      string
		wantAccount     string
		wantLabelPrefix string
	}{
		{"defaults", "mnguard", "alice", Params{}, "mnguard", "alice", "otpauth://totp/mnguard:alice?"},
		{"sha256 8 digits 60 s", "ACME Corp", "bob@example.com", Params{Algorithm: otp.AlgorithmSHA256, Digits: otp.DigitsEight, Period: 60}, "ACME Corp", "bob@example.com", "otpauth://totp/ACME%20Corp:bob@example.com?"},
		{"sha512", "mnguard", "carol", Params{Algorithm: otp.AlgorithmSHA512}, "mnguard", "carol", ""},
		{"special characters", "A&B?C#D%E+F/G", "x y/z?&=#%+", Params{}, "A&B?C#D%E+F/G", "x y/z?&=#%+", ""},
		{"unicode", "端末認証", "山田 太郎", Params{}, "端末認証", "山田 太郎", ""},
		{"colon in issuer leaves it out of the label", "a:b", "dave", Params{}, "a:b", "dave", "otpauth://totp/dave?"},
		{"colon in account", "mnguard", "dom:eve", Params{}, "mnguard", "dom:eve", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := URL(tt.issuer, tt.account, secret, tt.p)
			if tt.wantLabelPrefix != "" && !strings.HasPrefix(u, tt.wantLabelPrefix) {
				t.Errorf("URL = %q, want prefix %q", u, tt.wantLabelPrefix)
			}
			if strings.Contains(u, "+") {
				t.Errorf("URL %q has '+', which apps may show literally", u)
			}
			k, err := otp.NewKeyFromURL(u)
			if err != nil {
				t.Fatalf("NewKeyFromURL(%q): %v", u, err)
			}
			p := tt.p.WithDefaults()
			if k.Type() != "totp" {
				t.Errorf("Type = %q", k.Type())
			}
			if k.Issuer() != tt.wantIssuer {
				t.Errorf("Issuer = %q, want %q", k.Issuer(), tt.wantIssuer)
			}
			if k.AccountName() != tt.wantAccount {
				t.Errorf("AccountName = %q, want %q", k.AccountName(), tt.wantAccount)
			}
			if k.Algorithm() != p.Algorithm {
				t.Errorf("Algorithm = %v, want %v", k.Algorithm(), p.Algorithm)
			}
			if k.Digits() != p.Digits {
				t.Errorf("Digits = %v, want %v", k.Digits(), p.Digits)
			}
			if k.Period() != uint64(p.Period) {
				t.Errorf("Period = %d, want %d", k.Period(), p.Period)
			}
			got, err := DecodeSecret(k.Secret())
			if err != nil || !bytes.Equal(got, secret) {
				t.Errorf("Secret = %q (%x, %v), want %x", k.Secret(), got, err, secret)
			}
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			if s := pu.Query().Get("secret"); strings.Contains(s, "=") {
				t.Errorf("secret parameter %q is padded", s)
			}
		})
	}
}
