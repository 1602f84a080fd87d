package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGolden renders every command in every format against the fake and
// compares with testdata/NAME.golden. Run with -update to rewrite them.
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"terminals_list.table", []string{"terminals", "list"}},
		{"terminals_list.csv", []string{"terminals", "list", "-o", "csv"}},
		{"terminals_list.json", []string{"terminals", "list", "-o", "json"}},
		{"terminals_show.table", []string{"terminals", "show", termID1}},
		{"terminals_show.csv", []string{"terminals", "show", termID1, "-o", "csv"}},
		{"terminals_show.json", []string{"terminals", "show", termID1, "-o", "json"}},
		{"terminals_show_revoked.table", []string{"terminals", "show", termID2}},
		{"terminals_revoke.table", []string{"terminals", "revoke", termID1, "--reason", "stolen"}},
		{"terminals_revoke.csv", []string{"terminals", "revoke", termID1, "-o", "csv"}},
		{"tokens_create.table", []string{"tokens", "create", "--uses", "3"}},
		{"tokens_create.csv", []string{"tokens", "create", "-o", "csv"}},
		{"tokens_create.json", []string{"tokens", "create", "-o", "json"}},
		{"tokens_list.table", []string{"tokens", "list"}},
		{"tokens_list.csv", []string{"tokens", "list", "-o", "csv"}},
		{"tokens_list.json", []string{"tokens", "list", "-o", "json"}},
		{"events_list.table", []string{"events", "list"}},
		{"events_list.csv", []string{"events", "list", "-o", "csv"}},
		{"events_list.json", []string{"events", "list", "-o", "json"}},
		{"whoami.table", []string{"whoami"}},
		{"whoami.csv", []string{"whoami", "-o", "csv"}},
		{"whoami.json", []string{"whoami", "-o", "json"}},
		{"users_list.table", []string{"users", "list"}},
		{"users_list.csv", []string{"users", "list", "-o", "csv"}},
		{"users_list.json", []string{"users", "list", "-o", "json"}},
		{"users_show.table", []string{"users", "show", "sato"}},
		{"users_show.csv", []string{"users", "show", "sato", "-o", "csv"}},
		{"users_enroll.table", []string{"users", "enroll", "suzuki"}},
		{"users_enroll.csv", []string{"users", "enroll", "suzuki", "-o", "csv"}},
		{"users_enroll.json", []string{"users", "enroll", "suzuki", "-o", "json"}},
		{"users_offline_code.table", []string{"users", "offline-code", "--terminal", termID1, "--user", "tanaka", "--challenge", "1234-5678"}},
		{"users_offline_code.json", []string{"users", "offline-code", "--terminal", termID1, "--user", "tanaka", "--challenge", "1234-5678", "-o", "json"}},
		{"exemptions_issue.table", []string{"exemptions", "issue", "--terminal", termID1, "--device", "0781:5581:4C530001230815117432", "--duration", "2h", "--reason", "minutes", "--ticket", "INC-1"}},
		{"exemptions_list.table", []string{"exemptions", "list"}},
		{"exemptions_list.csv", []string{"exemptions", "list", "-o", "csv"}},
		{"exemptions_list.json", []string{"exemptions", "list", "--active", "-o", "json"}},
		{"exemptions_offline_code.table", []string{"exemptions", "offline-code", "--terminal", termID1, "--challenge", "7k2qm-9xh4c", "--reason", "r", "--ticket", "t"}},
		{"terminals_list_page.table", []string{"terminals", "list", "--limit", "1", "--offset", "1"}},
		{"terminals_show_stale.table", []string{"terminals", "show", termID3}},
		{"terminals_show_stale.csv", []string{"terminals", "show", termID3, "-o", "csv"}},
		{"operators_add.table", []string{"operators", "add", "yamada", "--role", "helpdesk", "--password-file", "testdata/operator.pw"}},
		{"operators_add.csv", []string{"operators", "add", "yamada", "--role", "helpdesk", "--password-file", "testdata/operator.pw", "-o", "csv"}},
		{"operators_add.json", []string{"operators", "add", "yamada", "--role", "helpdesk", "--password-file", "testdata/operator.pw", "-o", "json"}},
		{"operators_list.table", []string{"operators", "list"}},
		{"operators_list.csv", []string{"operators", "list", "-o", "csv"}},
		{"operators_list.json", []string{"operators", "list", "-o", "json"}},
		{"operators_show.table", []string{"operators", "show", "tanaka"}},
		{"operators_show.csv", []string{"operators", "show", "tanaka", "-o", "csv"}},
		{"operators_show.json", []string{"operators", "show", "tanaka", "-o", "json"}},
		{"operators_show_disabled.table", []string{"operators", "show", "suzuki"}},
		{"operators_disable.table", []string{"operators", "disable", "sato"}},
		{"operators_unlock.csv", []string{"operators", "unlock", "sato", "-o", "csv"}},
		{"operators_set_role.json", []string{"operators", "set-role", "sato", "--role", "admin", "-o", "json"}},
		{"operators_reset_totp.table", []string{"operators", "reset-totp", "sato"}},
		{"operators_delete.table", []string{"operators", "delete", "sato"}},
		{"operators_token.table", []string{"operators", "token", "sato", "--ttl", "720h", "--note", "sato's CLI"}},
		{"operators_token_no_expiry.table", []string{"operators", "token", "sato"}},
		{"operators_token.csv", []string{"operators", "token", "sato", "-o", "csv"}},
		{"operators_token.json", []string{"operators", "token", "sato", "--ttl", "1h", "-o", "json"}},
		{"operators_revoke_token.table", []string{"operators", "revoke-token", "ot-1"}},
		{"audit_list.table", []string{"audit", "list"}},
		{"audit_list.csv", []string{"audit", "list", "-o", "csv"}},
		{"audit_list.json", []string{"audit", "list", "--limit", "2", "-o", "json"}},
		{"audit_verify.table", []string{"audit", "verify"}},
		{"audit_verify.csv", []string{"audit", "verify", "-o", "csv"}},
		{"audit_verify.json", []string{"audit", "verify", "-o", "json"}},
		{"reports_self_inspection.html", []string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30"}},
		{"reports_self_inspection.csv", []string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "-o", "csv"}},
		{"reports_self_inspection.json", []string{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-30", "-o", "json", "--lang", "en"}},
		{"ca_pin.table", []string{"ca", "pin"}},
		{"ca_pin.csv", []string{"ca", "pin", "-o", "csv"}},
		{"ca_pin.json", []string{"ca", "pin", "-o", "json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newHarness().run(t, tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			golden(t, filepath.Join("testdata", tt.name+".golden"), r.stdout)
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// TestJSONOutput checks that -o json prints exactly one JSON document with
// snake_case keys, for every command.
func TestJSONOutput(t *testing.T) {
	dir := t.TempDir()
	writeCA(t, dir)
	for _, args := range [][]string{
		{"terminals", "list"},
		{"terminals", "show", termID1},
		{"terminals", "revoke", termID2},
		{"tokens", "create", "--ttl", "1h"},
		{"tokens", "list"},
		{"events", "list"},
		{"ca", "pin"},
		{"ca", "pin", "--data-dir", dir},
		{"whoami"},
		{"version"},
		{"operators", "add", "yamada", "--role", "auditor", "--password-file", "testdata/operator.pw"},
		{"operators", "list"},
		{"operators", "show", "tanaka"},
		{"operators", "disable", "sato"},
		{"operators", "enable", "suzuki"},
		{"operators", "delete", "sato"},
		{"operators", "reset-totp", "sato"},
		{"operators", "set-role", "sato", "--role", "auditor"},
		{"operators", "set-password", "sato", "--password-file", "testdata/operator.pw"},
		{"operators", "unlock", "sato"},
		{"operators", "token", "sato"},
		{"operators", "revoke-token", "ot-1"},
		{"audit", "list"},
		{"audit", "verify"},
		{"reports", "self-inspection", "--from", "2026-04-01", "--to", "2026-04-01"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := newHarness().run(t, append(args, "-o", "json")...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			var doc any
			if err := dec.Decode(&doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, r.stdout)
			}
			if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
				t.Fatalf("more than one JSON document (%v):\n%s", err, r.stdout)
			}
			if _, ok := doc.(map[string]any); !ok {
				t.Fatalf("document is %T, want an object", doc)
			}
			checkKeys(t, "", doc)
		})
	}
}

func checkKeys(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			if !snakeKey.MatchString(k) {
				t.Errorf("key %q at %s is not snake_case", k, path)
			}
			if k == "attributes" {
				continue // map keys are data, not field names
			}
			checkKeys(t, path+"."+k, sub)
		}
	case []any:
		for _, sub := range v {
			checkKeys(t, path+"[]", sub)
		}
	}
}

// TestJSONOutputStable checks that JSON output does not vary between runs:
// protojson randomises its whitespace.
func TestJSONOutputStable(t *testing.T) {
	first := newHarness().run(t, "terminals", "show", termID1, "-o", "json").stdout
	for range 20 {
		if got := newHarness().run(t, "terminals", "show", termID1, "-o", "json").stdout; got != first {
			t.Fatalf("JSON output varies:\n%s\n---\n%s", first, got)
		}
	}
}

// TestCSVOutput checks that every CSV output parses, with a header and rows
// of its width.
func TestCSVOutput(t *testing.T) {
	for _, args := range [][]string{
		{"terminals", "list"},
		{"terminals", "show", termID1},
		{"tokens", "list"},
		{"tokens", "create"},
		{"events", "list"},
		{"whoami"},
		{"version"},
		{"terminals", "revoke", termID1},
		{"operators", "add", "yamada", "--role", "auditor", "--password-file", "testdata/operator.pw"},
		{"operators", "list"},
		{"operators", "show", "tanaka"},
		{"operators", "disable", "sato"},
		{"operators", "delete", "sato"},
		{"operators", "reset-totp", "sato"},
		{"operators", "token", "sato"},
		{"operators", "revoke-token", "ot-1"},
		{"audit", "list"},
		{"audit", "verify"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := newHarness().run(t, append(args, "-o", "csv")...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
			if err != nil {
				t.Fatalf("not CSV: %v\n%s", err, r.stdout)
			}
			if len(rows) < 2 {
				t.Fatalf("want a header and rows, got %d rows", len(rows))
			}
			for _, k := range rows[0] {
				if !snakeKey.MatchString(k) {
					t.Errorf("header %q is not snake_case", k)
				}
			}
		})
	}
}

func TestTableSanitizes(t *testing.T) {
	r := newHarness().run(t, "terminals", "show", termID1)
	if strings.ContainsAny(r.stdout, "\x1b") {
		t.Errorf("escape sequence from terminal data reaches the table:\n%q", r.stdout)
	}
	r = newHarness().run(t, "terminals", "show", termID1, "-o", "csv")
	if strings.ContainsAny(r.stdout, "\x1b") {
		t.Errorf("escape sequence from terminal data reaches CSV output:\n%q", r.stdout)
	}
	r = newHarness().run(t, "tokens", "list")
	if n := strings.Count(r.stdout, "\n"); n != 4 {
		t.Errorf("token list has %d lines, want 4 (a note's newline leaks into the table):\n%s", n, r.stdout)
	}
}

func TestEmptyList(t *testing.T) {
	h := newHarness()
	h.fake.terminals = nil
	r := h.run(t, "terminals", "list")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ID ") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("empty table: exit %d, %q", r.code, r.stdout)
	}
	r = h.run(t, "terminals", "list", "-o", "json")
	if strings.TrimSpace(r.stdout) != "{\n  \"terminals\": [],\n  \"total\": 0\n}" {
		t.Errorf("empty JSON list: %q", r.stdout)
	}
}

func TestRelative(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s ago"},
		{12 * time.Second, "12s ago"},
		{59*time.Second + 600*time.Millisecond, "1m ago"},
		{90 * time.Minute, "2h ago"},
		{47 * time.Hour, "47h ago"},
		{72 * time.Hour, "3d ago"},
		{-(23*time.Hour + 59*time.Minute + 59*time.Second), "in 24h"},
	}
	for _, tt := range tests {
		if got := relative(testNow, testNow.Add(-tt.d)); got != tt.want {
			t.Errorf("relative(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 16_640_000_000: "15.5 GiB", 1 << 60: "1.0 EiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWriteFieldsCSVOnlyAndTableOnly(t *testing.T) {
	fs := []field{
		{label: "Section", sub: []field{kv("a.b", "", "csv only"), kv("", "Shown", "table only")}},
	}
	var tbl, c bytes.Buffer
	if err := writeFields(&tbl, formatTable, fs); err != nil {
		t.Fatal(err)
	}
	if err := writeFields(&c, formatCSV, fs); err != nil {
		t.Fatal(err)
	}
	if got, want := tbl.String(), "Section:\n  Shown:  table only\n"; got != want {
		t.Errorf("table = %q, want %q", got, want)
	}
	if got, want := c.String(), "key,value\na.b,csv only\n"; got != want {
		t.Errorf("csv = %q, want %q", got, want)
	}
}

func TestCSVCell(t *testing.T) {
	for in, want := range map[string]string{
		"term-01":           "term-01",
		"=HYPERLINK(\"x\")": "'=HYPERLINK(\"x\")",
		"+1":                "'+1",
		"-2":                "'-2",
		"@SUM(A1)":          "'@SUM(A1)",
		"a\x1b[2Jb":         "a?[2Jb",
		"":                  "",
	} {
		if got := csvCell(in); got != want {
			t.Errorf("csvCell(%q) = %q, want %q", in, got, want)
		}
	}
}
