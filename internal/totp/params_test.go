package totp

import (
	"strings"
	"testing"

	"github.com/pquerna/otp"
)

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name    string
		p       Params
		wantErr string // substring; "" means valid
	}{
		{"zero value is the defaults", Params{}, ""},
		{"defaults", DefaultParams(), ""},
		{"sha256 8 digits 60 s", Params{Algorithm: otp.AlgorithmSHA256, Digits: otp.DigitsEight, Period: 60}, ""},
		{"sha512", Params{Algorithm: otp.AlgorithmSHA512}, ""},
		{"period 15", Params{Period: 15}, ""},
		{"period 120", Params{Period: 120}, ""},
		{"md5", Params{Algorithm: otp.AlgorithmMD5}, "algorithm 3"},
		{"unknown algorithm", Params{Algorithm: 42}, "algorithm 42"},
		{"negative algorithm", Params{Algorithm: -1}, "algorithm -1"},
		{"7 digits", Params{Digits: 7}, "digits 7"},
		{"10 digits", Params{Digits: 10}, "digits 10"},
		{"negative digits", Params{Digits: -6}, "digits -6"},
		{"period 14", Params{Period: 14}, "period 14"},
		{"period 121", Params{Period: 121}, "period 121"},
		{"period 1", Params{Period: 1}, "period 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	if got, want := (Params{}).WithDefaults(), DefaultParams(); got != want {
		t.Errorf("Params{}.WithDefaults() = %+v, want %+v", got, want)
	}
	p := Params{Algorithm: otp.AlgorithmSHA512, Digits: otp.DigitsEight, Period: 60}
	if got := p.WithDefaults(); got != p {
		t.Errorf("WithDefaults changed set fields: %+v", got)
	}
}
