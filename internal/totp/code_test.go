package totp

import (
	"errors"
	"strings"
	"testing"

	"github.com/pquerna/otp"
)

func TestCheckCode(t *testing.T) {
	six, eight := Params{}, Params{Digits: otp.DigitsEight}
	tests := []struct {
		name    string
		code    string
		p       Params
		wantErr string // "" means valid
	}{
		{"6 digits", "123456", six, ""},
		{"leading zeros", "000000", six, ""},
		{"8 digits", "12345678", eight, ""},
		{"empty", "", six, "empty"},
		{"letters", "abcdef", six, "character 1 is not a digit"},
		{"letter inside", "123a56", six, "character 4 is not a digit"},
		{"5 digits", "12345", six, "5 digits, want 6"},
		{"7 digits", "1234567", six, "7 digits, want 6"},
		{"6 digits for 8", "123456", eight, "6 digits, want 8"},
		{"fullwidth digits", "１２３４５６", six, "character 1 is not a digit"},
		{"arabic-indic digits", "١٢٣٤٥٦", six, "not a digit"},
		{"leading space", " 123456", six, "character 1 is not a digit"},
		{"trailing space", "123456 ", six, "character 7 is not a digit"},
		{"trailing newline", "123456\n", six, "not a digit"},
		{"sign", "+12345", six, "not a digit"},
		{"NUL", "123\x0056", six, "not a digit"},
		{"invalid UTF-8", "12\xff456", six, "not a digit"},
		{"overlong", strings.Repeat("1", 10000), six, "10000 digits, want 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCode(tt.code, tt.p)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckCode(%q) = %v, want nil", tt.code, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckCode(%q) = %v, want error containing %q", tt.code, err, tt.wantErr)
			}
			if !errors.Is(err, ErrMalformedCode) {
				t.Errorf("error %v does not wrap ErrMalformedCode", err)
			}
			if c := strings.TrimSpace(tt.code); len(c) >= 3 && strings.Contains(err.Error(), c) {
				t.Errorf("error %q echoes the code", err)
			}
		})
	}
}
