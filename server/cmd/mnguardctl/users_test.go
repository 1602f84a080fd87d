package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// TestEnrollQRFile decodes the PNG that users enroll --qr writes with an
// independent QR decoder and checks that it holds the otpauth URL.
func TestEnrollQRFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "suzuki.png")
	r := newHarness().run(t, "users", "enroll", "suzuki", "--qr", path)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "QR code written to "+path) {
		t.Errorf("output does not mention the QR file:\n%s", r.stdout)
	}
	want := "otpauth://totp/mnguard:suzuki?algorithm=SHA1&digits=6&issuer=mnguard&period=30&secret=" + fakeSecret
	if got := decodeQRFile(t, path); got != want {
		t.Errorf("QR holds %q, want %q", got, want)
	}

	// Never overwritten: the second enrollment fails before asking the server.
	r = newHarness().run(t, "users", "enroll", "tanaka", "--qr", path)
	if r.code != 1 || !strings.Contains(r.stderr, "file exists") {
		t.Errorf("existing --qr file: exit %d, stderr %q; want 1 and \"file exists\"", r.code, r.stderr)
	}
}

// decodeQRFile checks that path is a PNG of mode 0600 (it holds a secret)
// and returns the text of the QR code in it, read with an independent
// decoder.
func decodeQRFile(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("QR file mode %v, want 0600 (it holds the secret)", fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("decode QR: %v", err)
	}
	return res.GetText()
}

func TestUsersUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"users", "offline-code", "--user", "tanaka", "--challenge", "1234-5678"}, "--terminal is required"},
		{[]string{"users", "offline-code", "--terminal", termID1, "--challenge", "1234-5678"}, "--user is required"},
		{[]string{"users", "offline-code", "--terminal", termID1, "--user", "tanaka"}, "--challenge is required"},
		{[]string{"users", "confirm", "tanaka"}, "missing CODE"},
		{[]string{"users", "resync", "tanaka", "123456"}, "missing CODE2"},
		{[]string{"users", "import", "seeds.csv", "--format", "xml"}, "invalid --format"},
		{[]string{"users", "import", "seeds.csv", "--psk-file", "a", "--password-file", "b"}, "not both"},
		{[]string{"users", "list", "--replace"}, "does not apply"},
		{[]string{"exemptions", "issue", "--device", "0781:5581:X", "--reason", "r", "--ticket", "t"}, "--terminal is required"},
		{[]string{"exemptions", "issue", "--terminal", termID1, "--device", "0781:5581:X", "--ticket", "t"}, "--reason is required"},
		{[]string{"exemptions", "issue", "--terminal", termID1, "--device", "0781:5581:X", "--reason", "r"}, "--ticket is required"},
		{[]string{"exemptions", "issue", "--terminal", termID1, "--device", "0781-5581", "--reason", "r", "--ticket", "t"}, "VID:PID:SERIAL"},
		{[]string{"exemptions", "issue", "--terminal", termID1, "--device", "0781:5581", "--reason", "r", "--ticket", "t"}, "--allow-no-serial"},
		{[]string{"exemptions", "issue", "--terminal", termID1, "--device", "0781:5581:X", "--reason", "r", "--ticket", "t", "--duration", "25h"}, "at most"},
		{[]string{"exemptions", "issue", "--terminal", termID1, "--device", "0781:5581:X", "--reason", "r", "--ticket", "t", "--duration", "soon"}, "invalid --duration"},
		{[]string{"exemptions", "offline-code", "--terminal", termID1, "--challenge", "12", "--reason", "r", "--ticket", "t"}, "--challenge"},
		{[]string{"exemptions", "revoke"}, "missing ID"},
	} {
		r := newHarness().run(t, tt.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
	// A server error is one line, exit 1.
	r := newHarness().run(t, "users", "offline-code", "--terminal", termID1, "--user", "tanaka", "--challenge", "12")
	if r.code != 1 || !strings.Contains(r.stderr, "8 digits") {
		t.Errorf("bad challenge: exit %d, stderr %q", r.code, r.stderr)
	}
	r = newHarness().run(t, "users", "import", filepath.Join(t.TempDir(), "missing.csv"))
	if r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing seed file: exit %d, stderr %q", r.code, r.stderr)
	}
}
