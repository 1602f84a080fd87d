package pki

import (
	"strings"
	"testing"
)

const (
	testHex   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testPin   = "sha256:" + testHex
	testColon = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF"
)

func TestPin(t *testing.T) {
	// SHA-256 of the empty string.
	const want = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := Pin(nil); got != want {
		t.Errorf("Pin(nil) = %s, want %s", got, want)
	}
}

func TestParsePin(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{name: "canonical", in: testPin, want: testPin},
		{name: "uppercase hex", in: "sha256:" + strings.ToUpper(testHex), want: testPin},
		{name: "uppercase prefix", in: "SHA256:" + testHex, want: testPin},
		{name: "spaces", in: "  \t" + testPin + "\n", want: testPin},
		{name: "colons", in: "sha256:" + testColon, want: testPin},
		{name: "lowercase colons", in: "sha256:" + strings.ToLower(testColon), want: testPin},
		{name: "empty", in: "", wantErr: `missing "sha256:" prefix`},
		{name: "no prefix", in: testHex, wantErr: `missing "sha256:" prefix (did you mean "` + testPin + `"?)`},
		{name: "other algorithm", in: "sha1:" + testHex[:40], wantErr: `missing "sha256:" prefix`},
		{name: "prefix only", in: "sha256:", wantErr: "has 0 hex digits, want 64"},
		{name: "short", in: testPin[:len(testPin)-2], wantErr: "has 62 hex digits, want 64"},
		{name: "long", in: testPin + "00", wantErr: "has 66 hex digits, want 64"},
		{name: "odd", in: testPin + "0", wantErr: "has 65 hex digits, want 64"},
		{name: "not hex", in: "sha256:" + testHex[:63] + "g", wantErr: `invalid hex digit 'g' at offset 63`},
		{name: "inner space", in: "sha256: " + testHex, wantErr: "invalid hex digit ' '"},
		{name: "bad colon group", in: "sha256:0:" + testColon[2:], wantErr: `byte 1 is "0"`},
		{name: "trailing colon", in: "sha256:" + testColon + ":", wantErr: `byte 33 is ""`},
		{name: "short colons", in: "sha256:" + testColon[3:], wantErr: "has 62 hex digits, want 64"},
		{name: "base64", in: "sha256//AAAA", wantErr: `missing "sha256:" prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePin(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePin(%q) = %q, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePin(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePin(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParsePin(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzParsePin(f *testing.F) {
	for _, s := range []string{testPin, "sha256:" + testColon, testHex, "", "sha256:", "SHA256:zz", " sha256:" + testHex + " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParsePin(s)
		if err != nil {
			if got != "" {
				t.Fatalf("ParsePin(%q) = %q with error %v", s, got, err)
			}
			return
		}
		if len(got) != len(testPin) || !strings.HasPrefix(got, "sha256:") || strings.ToLower(got) != got {
			t.Fatalf("ParsePin(%q) = %q, not canonical", s, got)
		}
		again, err := ParsePin(got)
		if err != nil || again != got {
			t.Fatalf("ParsePin(%q) = %q, %v; want it to round-trip", got, again, err)
		}
	})
}
