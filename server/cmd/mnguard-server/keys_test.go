package main

import (
	"strings"
	"testing"
	"time"
)

// TestKeyRecord: the detail of a keys audit entry, written and read back;
// what else may stand there is refused.
func TestKeyRecord(t *testing.T) {
	fps, err := keyFingerprints(t.TempDir(), time.Now())
	if err != nil || len(fps) != 0 {
		t.Fatalf("empty data directory: %v, %v", fps, err)
	}
	fp := "sha256:" + strings.Repeat("ab", 32)
	in := map[string]string{"ca": fp, "signing": fp, "totp": fp}
	got, err := parseKeyRecord(formatKeyRecord(in))
	if err != nil || len(got) != 3 || got["signing"] != fp {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	for _, bad := range []string{"", "ca", "ca=" + fp + " ca=" + fp, "dsa=" + fp, "ca=sha256:AB", "ca=md5:" + strings.Repeat("a", 64), "ca=" + fp + "x"} {
		if got, err := parseKeyRecord(bad); err == nil {
			t.Errorf("parseKeyRecord(%q) = %v, want an error", bad, got)
		}
	}
}

// FuzzParseKeyRecord: whatever the audit entry holds, parsing never
// panics, and what it accepts is written back as it reads.
func FuzzParseKeyRecord(f *testing.F) {
	fp := "sha256:" + strings.Repeat("0f", 32)
	for _, s := range []string{"ca=" + fp, "ca=" + fp + " signing=" + fp + " totp=" + fp, "x=y", "", "ca=sha256:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fps, err := parseKeyRecord(s)
		if err != nil {
			return
		}
		again, err := parseKeyRecord(formatKeyRecord(fps))
		if err != nil || len(again) != len(fps) {
			t.Fatalf("%q: read %v, written back and read %v, %v", s, fps, again, err)
		}
		for k, v := range fps {
			if again[k] != v || !fingerprintRE.MatchString(v) {
				t.Fatalf("%q: %s=%s became %s", s, k, v, again[k])
			}
		}
	})
}
