package totp

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 20 || len(b) != 20 {
		t.Fatalf("secret lengths %d, %d; want 20 (160 bits)", len(a), len(b))
	}
	if bytes.Equal(a, b) {
		t.Fatal("two new secrets are equal")
	}
	enc := EncodeSecret(a)
	if len(enc) != 32 || strings.ContainsAny(enc, "= ") {
		t.Errorf("EncodeSecret = %q, want 32 base32 characters without padding", enc)
	}
	dec, err := DecodeSecret(enc)
	if err != nil || !bytes.Equal(dec, a) {
		t.Errorf("DecodeSecret(EncodeSecret(s)) = %x, %v; want %x", dec, err, a)
	}
}

func TestDecodeSecret(t *testing.T) {
	rfc := []byte("12345678901234567890")
	const rfcB32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr string
	}{
		{"upper", rfcB32, rfc, ""},
		{"lower", strings.ToLower(rfcB32), rfc, ""},
		{"mixed case", "GeZdGnBvGy3tQoJqGeZdGnBvGy3tQoJq", rfc, ""},
		{"spaces in groups of 4", "gezd gnbv gy3t qojq gezd gnbv gy3t qojq", rfc, ""},
		{"leading and trailing space, tab, newline", " \t" + rfcB32 + "\r\n", rfc, ""},
		{"80 bits, minimum", "GEZDGNBVGY3TQOJQ", []byte("1234567890"), ""},
		{"padded", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA====", []byte("12345678901234567890123456789012"), ""},
		{"padding dropped", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA", []byte("12345678901234567890123456789012"), ""},
		{"512 bits, maximum", EncodeSecret(bytes.Repeat([]byte{7}, 64)), bytes.Repeat([]byte{7}, 64), ""},
		{"empty", "", nil, "empty"},
		{"only spaces", "   ", nil, "empty"},
		{"only padding", "====", nil, "empty"},
		{"72 bits", EncodeSecret(make([]byte, 9)), nil, "too short: 72 bits"},
		{"520 bits", EncodeSecret(make([]byte, 65)), nil, "too long: 520 bits"},
		{"huge", strings.Repeat("A", 100000), nil, "too long"},
		{"digit 1 is not base32", "GEZDGNBVGY3TQOJ1", nil, "not valid base32"},
		{"digit 0", "0EZDGNBVGY3TQOJQ", nil, "near character 1"},
		{"hyphens", "GEZD-GNBV-GY3T-QOJQ", nil, "not valid base32"},
		{"padding in the middle", "GEZDGNBV====GY3TQOJQ", nil, "not valid base32"},
		{"invalid length", "GEZDGNBVGY3TQOJQG", nil, "not valid base32"},
		{"non-ASCII that upper-cases to ASCII", "ſEZDGNBVGY3TQOJQ", nil, "not valid base32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeSecret(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeSecret = %x, %v; want error containing %q", got, err, tt.wantErr)
				}
				if len(tt.in) >= 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
					t.Errorf("error %q echoes the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeSecret: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("DecodeSecret = %x, want %x", got, tt.want)
			}
		})
	}
}
