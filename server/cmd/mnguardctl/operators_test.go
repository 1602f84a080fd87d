package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes a file for a test and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOperatorsPasswordFile checks that the password is the first line of
// --password-file, without its line break, and is never sent when the file
// is unusable.
func TestOperatorsPasswordFile(t *testing.T) {
	for _, tt := range []struct {
		name, content, want string
	}{
		{"newline", "correct horse battery\n", "correct horse battery"},
		{"crlf", "correct horse battery\r\n", "correct horse battery"},
		{"no newline", "  spaces count too  ", "  spaces count too  "},
		{"first line only", "first line password\nsecond line\n", "first line password"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pw := writeFile(t, "pw", tt.content)
			h := newHarness()
			r := h.run(t, "operators", "add", "yamada", "--role", "auditor", "--password-file", pw)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			got := h.fake.lastAddOperator
			if got.GetName() != "yamada" || got.GetRole() != "auditor" || got.GetPassword() != tt.want {
				t.Errorf("request name %q role %q password %q; want yamada, auditor, %q", got.GetName(), got.GetRole(), got.GetPassword(), tt.want)
			}
			h = newHarness()
			r = h.run(t, "operators", "set-password", "sato", "--password-file", pw)
			if r.code != 0 {
				t.Fatalf("set-password: exit %d: %s", r.code, r.stderr)
			}
			if got := h.fake.lastSetPassword; got.GetName() != "sato" || got.GetPassword() != tt.want {
				t.Errorf("set-password request name %q password %q; want sato, %q", got.GetName(), got.GetPassword(), tt.want)
			}
			if !strings.HasPrefix(r.stdout, "set a new password for operator sato\n") || strings.Contains(r.stdout, tt.want) {
				t.Errorf("set-password output:\n%s", r.stdout)
			}
		})
	}

	dir := t.TempDir()
	for _, tt := range []struct {
		name, content string
		code          int
		want          string
	}{
		{"empty", "", 1, "password file " + filepath.Join(dir, "empty") + ": empty (the password is its first line)"},
		{"empty first line", "\nsecret on the second line\n", 1, ": empty (the password is its first line)"},
		{"too large", strings.Repeat("x", 5000), 1, "larger than 4096 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"operators", "add", "yamada", "--role", "admin", "--password-file", path},
				{"operators", "set-password", "sato", "--password-file", path},
			} {
				h := newHarness()
				r := h.run(t, args...)
				if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
					t.Errorf("%v: exit %d, stderr %q; want %d and %q", args[:2], r.code, r.stderr, tt.code, tt.want)
				}
				if h.cfg != nil {
					t.Errorf("%v: dialed with an unusable password file", args[:2])
				}
				if strings.Contains(r.stderr, "secret on the second line") {
					t.Errorf("%v: the error shows the file's content", args[:2])
				}
			}
		})
	}
	h := newHarness()
	r := h.run(t, "operators", "add", "yamada", "--role", "admin", "--password-file", filepath.Join(dir, "missing"))
	if r.code != 1 || !strings.Contains(r.stderr, "read password file: open ") || h.cfg != nil {
		t.Errorf("missing file: exit %d, stderr %q, dialed %v", r.code, r.stderr, h.cfg != nil)
	}
}

// TestOperatorsQRFile decodes the PNGs of operators add and reset-totp.
func TestOperatorsQRFile(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"operators", "add", "yamada", "--role", "helpdesk", "--password-file", "testdata/operator.pw"},
		{"operators", "reset-totp", "yamada"},
	} {
		t.Run(args[1], func(t *testing.T) {
			path := filepath.Join(dir, args[1]+".png")
			h := newHarness()
			if args[1] == "reset-totp" {
				h.fake.operators[0].Name = "yamada"
			}
			r := h.run(t, append(args, "--qr", path)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "QR code written to "+path) {
				t.Errorf("output does not mention the QR file:\n%s", r.stdout)
			}
			if got, want := decodeQRFile(t, path), fakeOtpauthURL("yamada"); got != want {
				t.Errorf("QR holds %q, want %q", got, want)
			}
			// Never overwritten, and nothing is changed on the server
			// for a secret that could not be kept.
			h = newHarness()
			r = h.run(t, append(args, "--qr", path)...)
			if r.code != 1 || !strings.Contains(r.stderr, "file exists") || h.cfg != nil {
				t.Errorf("existing --qr file: exit %d, stderr %q, dialed %v", r.code, r.stderr, h.cfg != nil)
			}
		})
	}
	// A QR file that cannot be written after the operator was added says
	// how to get a new secret.
	r := newHarness().run(t, "operators", "add", "yamada", "--role", "helpdesk", "--password-file", "testdata/operator.pw",
		"--qr", filepath.Join(dir, "no-such-dir", "x.png"))
	if r.code != 1 || !strings.Contains(r.stderr, "added operator yamada (helpdesk)") ||
		!strings.Contains(r.stderr, "run 'mnguardctl operators reset-totp yamada' for a new secret") {
		t.Errorf("unwritable --qr: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestOperatorsJSONSecret(t *testing.T) {
	for _, args := range [][]string{
		{"operators", "add", "yamada", "--role", "auditor", "--password-file", "testdata/operator.pw"},
		{"operators", "reset-totp", "sato"},
	} {
		r := newHarness().run(t, append(args, "-o", "json")...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, r.stdout)
		}
		name := args[2]
		if got["name"] != name || got["role"] == "" || got["otpauth_url"] != fakeOtpauthURL(name) || got["secret"] != fakeSecret {
			t.Errorf("%v: %v", args, got)
		}
	}
}

func TestOperatorsRequests(t *testing.T) {
	h := newHarness()
	if r := h.run(t, "operators", "set-role", "sato", "--role", "auditor"); r.code != 0 || !strings.HasPrefix(r.stdout, "operator sato is now auditor\n") {
		t.Errorf("set-role: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := h.fake.lastSetRole; got.GetName() != "sato" || got.GetRole() != "auditor" {
		t.Errorf("set-role request %v", got)
	}

	for _, tt := range []struct {
		args []string
		ttl  uint32
		note string
	}{
		{[]string{"operators", "token", "sato"}, 0, ""},
		{[]string{"operators", "token", "sato", "--ttl", "720h", "--note", "sato's CLI"}, 720 * 3600, "sato's CLI"},
		{[]string{"operators", "token", "--ttl=90m", "sato"}, 5400, ""},
		{[]string{"operators", "token", "sato", "--ttl", "8760h"}, 8760 * 3600, ""},
	} {
		h := newHarness()
		r := h.run(t, tt.args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, r.code, r.stderr)
		}
		if got := h.fake.lastOperatorToken; got.GetName() != "sato" || got.GetTtlSeconds() != tt.ttl || got.GetNote() != tt.note {
			t.Errorf("%v: request %v", tt.args, got)
		}
		if first, _, _ := strings.Cut(r.stdout, "\n"); first != "mgo_n3wt0k3nf0rsato" {
			t.Errorf("%v: first line %q, want the bare token", tt.args, first)
		}
	}

	// Server refusals are one line, exit 1.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"operators", "token", "suzuki"}, "create API token for operator suzuki: operator suzuki is disabled: enable it first"},
		{[]string{"operators", "revoke-token", "ot-9"}, "revoke API token ot-9: token ot-9 not found"},
		{[]string{"operators", "revoke-token", "ot-3"}, "revoke API token ot-3: token ot-3 is revoked already"},
		{[]string{"operators", "show", "nobody"}, "show operator nobody: operator nobody not found"},
		{[]string{"operators", "delete", "nobody"}, "delete operator nobody: operator nobody not found"},
		{[]string{"operators", "add", "tanaka", "--role", "admin", "--password-file", "testdata/operator.pw"}, "add operator tanaka: operator tanaka exists"},
	} {
		r := newHarness().run(t, tt.args...)
		if want := "mnguardctl: " + tt.want + "\n"; r.code != 1 || r.stderr != want {
			t.Errorf("%v: exit %d, stderr %q; want 1, %q", tt.args, r.code, r.stderr, want)
		}
	}
}

func TestOperatorsUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"operators"}, "operators: missing subcommand: want add, list, show, disable, enable, delete, reset-totp, set-role, set-password, unlock, token or revoke-token"},
		{[]string{"operators", "add", "yamada", "--password-file", "testdata/operator.pw"}, "operators add: --role is required (usage: mnguardctl operators add NAME [--role ROLE] [--password-file PATH] [--qr FILE.png])"},
		{[]string{"operators", "add", "yamada", "--role", "root", "--password-file", "testdata/operator.pw"}, `operators add: invalid --role "root": want admin, helpdesk or auditor`},
		{[]string{"operators", "add", "yamada", "--role", "admin"}, "operators add: --password-file is required"},
		{[]string{"operators", "add", "--role", "admin", "--password-file", "testdata/operator.pw"}, "operators add: missing NAME"},
		{[]string{"operators", "set-role", "sato"}, "operators set-role: --role is required"},
		{[]string{"operators", "set-role", "sato", "--role", "Admin"}, `operators set-role: invalid --role "Admin": want admin, helpdesk or auditor`},
		{[]string{"operators", "set-password", "sato"}, "operators set-password: --password-file is required"},
		{[]string{"operators", "token", "sato", "--ttl", "0"}, `operators token: invalid --ttl "0": must be positive`},
		{[]string{"operators", "token", "sato", "--ttl", "8761h"}, `operators token: invalid --ttl "8761h": must be at most 8760h (a year)`},
		{[]string{"operators", "token", "sato", "--ttl", "30d"}, `operators token: invalid --ttl "30d": want a duration such as 24h or 90m`},
		{[]string{"operators", "token", "sato", "--uses", "2"}, "operators token: flag --uses does not apply"},
		{[]string{"operators", "list", "--role", "admin"}, "operators list: flag --role does not apply"},
		{[]string{"operators", "show"}, "operators show: missing NAME"},
		{[]string{"operators", "revoke-token"}, "operators revoke-token: missing ID"},
		{[]string{"operators", "disable", "a", "b"}, `operators disable: unexpected argument "b"`},
		{[]string{"operators", "reset-totp", "sato", "--password-file", "x"}, "operators reset-totp: flag --password-file does not apply"},
	} {
		h := newHarness()
		r := h.run(t, tt.args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "mnguardctl: "+tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
		if h.cfg != nil {
			t.Errorf("%v: dialed despite a usage error", tt.args)
		}
	}
}
