package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const otherPin = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

// TestConnPrecedence checks where the connection settings come from: flags
// beat environment variables, wherever the flags are on the command line.
func TestConnPrecedence(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("  mgo_fromfile \r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string // replaces the harness's environment
		args    []string
		server  string
		token   string
		pin     string
		timeout time.Duration
	}{
		{
			name:   "env only",
			args:   []string{"whoami"},
			server: "collector.test:8443", token: testToken, pin: testPin, timeout: 10 * time.Second,
		},
		{
			name:   "flags before the command beat env",
			args:   []string{"--server", "flag.test:1", "--token", "mgo_flag", "--ca-pin", otherPin, "--timeout", "3s", "whoami"},
			server: "flag.test:1", token: "mgo_flag", pin: otherPin, timeout: 3 * time.Second,
		},
		{
			name:   "flags after the command beat env",
			args:   []string{"whoami", "--server=flag.test:1", "--token=mgo_flag", "--ca-pin=" + otherPin, "--timeout=3s"},
			server: "flag.test:1", token: "mgo_flag", pin: otherPin, timeout: 3 * time.Second,
		},
		{
			name:   "single dash flags",
			args:   []string{"-server", "flag.test:1", "whoami"},
			server: "flag.test:1", token: testToken, pin: testPin, timeout: 10 * time.Second,
		},
		{
			name:   "token file beats env token and is trimmed",
			args:   []string{"whoami", "--token-file", tokenFile},
			server: "collector.test:8443", token: "mgo_fromfile", pin: testPin, timeout: 10 * time.Second,
		},
		{
			name: "token file from env",
			env: map[string]string{
				"MNGUARD_SERVER": "env.test:9", "MNGUARD_TOKEN_FILE": tokenFile, "MNGUARD_CA_PIN": otherPin,
				"MNGUARD_TIMEOUT": "1m",
			},
			args:   []string{"whoami"},
			server: "env.test:9", token: "mgo_fromfile", pin: otherPin, timeout: time.Minute,
		},
		{
			name: "token flag beats token file env",
			env: map[string]string{
				"MNGUARD_SERVER": "env.test:9", "MNGUARD_TOKEN_FILE": tokenFile, "MNGUARD_CA_PIN": otherPin,
			},
			args:   []string{"whoami", "--token", "mgo_flag"},
			server: "env.test:9", token: "mgo_flag", pin: otherPin, timeout: 10 * time.Second,
		},
		{
			name:   "pin is normalised",
			args:   []string{"whoami", "--ca-pin", strings.ToUpper(otherPin)},
			server: "collector.test:8443", token: testToken, pin: otherPin, timeout: 10 * time.Second,
		},
		{
			name:   "empty flag falls back to env",
			args:   []string{"whoami", "--server", ""},
			server: "collector.test:8443", token: testToken, pin: testPin, timeout: 10 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			if tt.env != nil {
				h.env = tt.env
			}
			r := h.run(t, tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			c := h.cfg
			if c.server != tt.server || c.token != tt.token || c.pin != tt.pin || c.timeout != tt.timeout {
				t.Errorf("got server=%s token=%s pin=%s timeout=%s; want %s %s %s %s",
					c.server, c.token, c.pin, c.timeout, tt.server, tt.token, tt.pin, tt.timeout)
			}
		})
	}
}

// TestOutputFlagPosition checks that -o works before and after the command
// and beats MNGUARD_OUTPUT.
func TestOutputFlagPosition(t *testing.T) {
	for _, args := range [][]string{
		{"-o", "json", "terminals", "list"},
		{"terminals", "list", "-o", "json"},
		{"terminals", "list", "--output=json"},
		{"--output", "JSON", "terminals", "list"},
		{"terminals", "-o", "json", "list"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			h := newHarness()
			h.env["MNGUARD_OUTPUT"] = "csv"
			r := h.run(t, args...)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "{\n") {
				t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
	h := newHarness()
	h.env["MNGUARD_OUTPUT"] = "csv"
	if r := h.run(t, "terminals", "list"); !strings.HasPrefix(r.stdout, "id,hostname,") {
		t.Errorf("MNGUARD_OUTPUT=csv: %q", r.stdout)
	}
}

func TestDashDash(t *testing.T) {
	h := newHarness()
	r := h.run(t, "terminals", "show", "-o", "json", "--", "-odd-id")
	if r.code != 1 || r.stderr != "mnguardctl: show terminal -odd-id: terminal not found\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	// "--" as a flag's value is the value.
	r = h.run(t, "terminals", "revoke", termID1, "--reason", "--")
	if r.code != 0 || h.fake.lastRevoke.GetReason() != "--" {
		t.Errorf("exit %d, stderr %q, reason %q", r.code, r.stderr, h.fake.lastRevoke.GetReason())
	}
}

// TestUsageErrors checks mistakes on the command line: exit status 2 and a
// line that names what to fix.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name  string
		unset []string // environment variables to remove
		env   map[string]string
		args  []string
		want  string // stderr, after "mnguardctl: "
	}{
		{name: "no command", want: "missing command: run 'mnguardctl help' for the list"},
		{name: "unknown command", args: []string{"frobnicate"}, want: `unknown command "frobnicate": run 'mnguardctl help' for the list`},
		{name: "missing subcommand", args: []string{"terminals"}, want: "terminals: missing subcommand: want list, show or revoke"},
		{name: "unknown subcommand", args: []string{"tokens", "delete"}, want: `tokens: unknown subcommand "delete": want create or list`},
		{name: "unknown flag", args: []string{"terminals", "list", "--frob"}, want: "bad command line: flag provided but not defined: -frob (see 'mnguardctl help')"},
		{name: "flag without value", args: []string{"terminals", "list", "-o"}, want: "bad command line: flag needs an argument: -o (see 'mnguardctl help')"},
		{name: "flag of another command", args: []string{"terminals", "list", "--ttl", "1h"}, want: "terminals list: flag --ttl does not apply to this command (see 'mnguardctl help terminals list')"},
		{name: "missing ID", args: []string{"terminals", "show"}, want: "terminals show: missing ID (usage: mnguardctl terminals show ID)"},
		{name: "extra argument", args: []string{"terminals", "revoke", "a", "b"}, want: `terminals revoke: unexpected argument "b" (usage: mnguardctl terminals revoke ID [--reason TEXT])`},
		{name: "bad output", args: []string{"terminals", "list", "-o", "yaml"}, want: `invalid output format "yaml" from --output: want table, json or csv`},
		{name: "bad output env", env: map[string]string{"MNGUARD_OUTPUT": "xml"}, args: []string{"whoami"}, want: `invalid output format "xml" from MNGUARD_OUTPUT: want table, json or csv`},
		{name: "no server", unset: []string{"MNGUARD_SERVER"}, args: []string{"terminals", "list"}, want: "missing server address: set --server HOST:PORT or MNGUARD_SERVER"},
		{name: "server without port", args: []string{"whoami", "--server", "collector.test"}, want: `invalid server address "collector.test" from --server: want HOST:PORT`},
		{name: "no token", unset: []string{"MNGUARD_TOKEN"}, args: []string{"whoami"}, want: "missing API token: set --token-file PATH, --token TOKEN or MNGUARD_TOKEN"},
		{name: "both token flags", args: []string{"whoami", "--token", "a", "--token-file", "f"}, want: "conflicting flags: give --token or --token-file, not both"},
		{name: "both token env", env: map[string]string{"MNGUARD_TOKEN_FILE": "f"}, args: []string{"whoami"}, want: "conflicting environment: set MNGUARD_TOKEN or MNGUARD_TOKEN_FILE, not both"},
		{name: "token with space", args: []string{"whoami", "--token", "two words"}, want: "invalid API token from --token: it must be one word of printable ASCII"},
		{name: "no pin", unset: []string{"MNGUARD_CA_PIN"}, args: []string{"whoami"}, want: "missing CA pin: set --ca-pin sha256:HEX or MNGUARD_CA_PIN (on the collector, 'mnguardctl ca pin --data-dir DIR' prints it)"},
		{name: "bad pin env", env: map[string]string{"MNGUARD_CA_PIN": "sha256:abc"}, args: []string{"whoami"}, want: `invalid CA pin from MNGUARD_CA_PIN: parse CA pin "sha256:abc": fingerprint has 3 hex digits, want 64 (a SHA-256)`},
		{name: "bad timeout", args: []string{"whoami", "--timeout", "soon"}, want: `invalid timeout "soon" from --timeout: want a duration such as 10s or 1m`},
		{name: "zero timeout", env: map[string]string{"MNGUARD_TIMEOUT": "0s"}, args: []string{"whoami"}, want: `invalid timeout "0s" from MNGUARD_TIMEOUT: must be positive`},
		{name: "help on unknown", args: []string{"help", "frob"}, want: `help: unknown command "frob": run 'mnguardctl help' for the list`},
		{name: "limit zero", args: []string{"events", "list", "--limit", "0"}, want: `events list: invalid --limit "0": want a whole number from 1 to 10000000`},
		{name: "limit too big", args: []string{"events", "list", "--limit", "10000001"}, want: `events list: invalid --limit "10000001": want a whole number from 1 to 10000000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			for _, k := range tt.unset {
				delete(h.env, k)
			}
			for k, v := range tt.env {
				h.env[k] = v
			}
			r := h.run(t, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			if want := "mnguardctl: " + tt.want + "\n"; r.stderr != want {
				t.Errorf("stderr\n got %q\nwant %q", r.stderr, want)
			}
			if h.cfg != nil {
				t.Error("dialed despite a usage error")
			}
		})
	}
}

func TestTokenFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness()
	r := h.run(t, "whoami", "--token-file", empty)
	if r.code != 1 || r.stderr != "mnguardctl: token file "+empty+": empty\n" {
		t.Errorf("empty: exit %d, %q", r.code, r.stderr)
	}
	r = h.run(t, "whoami", "--token-file", filepath.Join(dir, "missing"))
	if r.code != 1 || !strings.HasPrefix(r.stderr, "mnguardctl: read token file: open ") {
		t.Errorf("missing: exit %d, %q", r.code, r.stderr)
	}
}

// TestTokenCreateValidation checks --ttl and --uses before anything is sent.
func TestTokenCreateValidation(t *testing.T) {
	tests := []struct {
		args    []string
		ttl     uint32
		uses    uint32
		wantErr string
	}{
		{args: nil, ttl: 86400, uses: 1},
		{args: []string{"--ttl", "90m", "--uses", "5"}, ttl: 5400, uses: 5},
		{args: []string{"--ttl", "8760h"}, ttl: 8760 * 3600, uses: 1},
		{args: []string{"--ttl", "1s"}, ttl: 1, uses: 1},
		{args: []string{"--uses", "4294967295"}, ttl: 86400, uses: 4294967295},
		{args: []string{"--ttl", "8760h1s"}, wantErr: `invalid --ttl "8760h1s": must be at most 8760h (a year)`},
		{args: []string{"--ttl", "0"}, wantErr: `invalid --ttl "0": must be positive`},
		{args: []string{"--ttl", "-1h"}, wantErr: `invalid --ttl "-1h": must be positive`},
		{args: []string{"--ttl", "500ms"}, wantErr: `invalid --ttl "500ms": must be at least 1s`},
		{args: []string{"--ttl", "24"}, wantErr: `invalid --ttl "24": want a duration such as 24h or 90m`},
		{args: []string{"--ttl", "1d"}, wantErr: `invalid --ttl "1d": want a duration such as 24h or 90m`},
		{args: []string{"--uses", "0"}, wantErr: `invalid --uses "0": want a whole number, at least 1`},
		{args: []string{"--uses", "-1"}, wantErr: `invalid --uses "-1": want a whole number, at least 1`},
		{args: []string{"--uses", "4294967296"}, wantErr: `invalid --uses "4294967296": want a whole number, at least 1`},
		{args: []string{"--uses", "two"}, wantErr: `invalid --uses "two": want a whole number, at least 1`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			h := newHarness()
			r := h.run(t, append([]string{"tokens", "create", "--note", "n"}, tt.args...)...)
			if tt.wantErr != "" {
				if want := "mnguardctl: tokens create: " + tt.wantErr + "\n"; r.code != 2 || r.stderr != want {
					t.Errorf("exit %d, stderr %q; want 2, %q", r.code, r.stderr, want)
				}
				if h.fake.lastCreate != nil {
					t.Error("request sent despite invalid flags")
				}
				return
			}
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			got := h.fake.lastCreate
			if got.GetTtlSeconds() != tt.ttl || got.GetUses() != tt.uses || got.GetNote() != "n" {
				t.Errorf("request %v, want ttl_seconds %d, uses %d", got, tt.ttl, tt.uses)
			}
		})
	}
}

func TestEventsRequest(t *testing.T) {
	h := newHarness()
	r := h.run(t, "events", "list", "--terminal", termID2, "--limit", "10000")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := h.fake.lastEvents; got.GetTerminalId() != termID2 || got.GetLimit() != 0 || got.GetPageSize() != 1000 {
		t.Errorf("request %v", got)
	}
	if strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("want a header and one event:\n%s", r.stdout)
	}
	r = h.run(t, "events", "list")
	if got := h.fake.lastEvents; got.GetTerminalId() != "" || got.GetLimit() != 0 {
		t.Errorf("default request %v", got)
	}
}

func TestRevokeReason(t *testing.T) {
	h := newHarness()
	r := h.run(t, "terminals", "revoke", "--reason", "stolen laptop", termID1)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := h.fake.lastRevoke; got.GetId() != termID1 || got.GetReason() != "stolen laptop" {
		t.Errorf("request %v", got)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"help", "tokens"}, {"tokens", "create", "-h"}, {"terminals", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			h := newHarness()
			h.env = nil // help needs no settings
			r := h.run(t, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "--ca-pin sha256:HEX") {
				t.Errorf("exit %d, stdout:\n%s", r.code, r.stdout)
			}
		})
	}
	r := newHarness().run(t, "help", "tokens", "create")
	if !strings.Contains(r.stdout, "mnguardctl tokens create [--ttl 24h] [--uses 1] [--note TEXT]") || strings.Contains(r.stdout, "tokens list") {
		t.Errorf("help tokens create:\n%s", r.stdout)
	}
	r = newHarness().run(t, "help", "reports")
	if !strings.Contains(r.stdout, "mnguardctl reports self-inspection [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--output html|csv|json] [--lang ja|en] [--out FILE]\n") ||
		!strings.Contains(r.stdout, "--output html|csv|json: the report's format (default html; MNGUARD_OUTPUT does not apply)") {
		t.Errorf("help reports:\n%s", r.stdout)
	}
	r = newHarness().run(t, "help")
	for _, want := range []string{
		"  terminals list [--state STATE] [--check NAME] [--search TEXT] [--sort KEY] [--desc] [--limit N] [--offset N] [--page-size N]\n",
		"  events list [--terminal ID] [--type TYPE] [--since TIME] [--until TIME] [--limit N] [--page-size N]\n",
		"  operators add NAME [--role ROLE] [--password-file PATH] [--qr FILE.png]\n",
		"  operators token NAME [--ttl DURATION] [--note TEXT]\n",
		"  audit list [--limit N] [--before-id N] [--since TIME] [--until TIME] [--action PREFIX] [--page-size N]\n",
		"  audit verify\n",
		"  mnguardctl reports self-inspection --from 2026-04-01 --to 2026-04-30 --lang en --out report.html\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	// Every command of the list is in the help.
	for _, c := range commands {
		if !strings.Contains(r.stdout, "\n  "+c.usage()+"\n      "+c.summary+"\n") {
			t.Errorf("help lacks %s", c.name)
		}
	}
}

func TestVersion(t *testing.T) {
	h := newHarness()
	h.env = nil
	r := h.run(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "mnguardctl ") {
		t.Errorf("exit %d, %q", r.code, r.stdout)
	}
}

// FuzzCommandLine runs arbitrary command lines against the fake: no panic,
// a known exit status, and the error contract of checkStderr.
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{
		"terminals\x00list\x00-o\x00json",
		"-o\x00csv\x00terminals\x00show\x00" + termID1,
		"tokens\x00create\x00--ttl\x001h\x00--uses\x003\x00--note\x00x",
		"events\x00list\x00--limit=5\x00--terminal\x00" + termID2,
		"terminals\x00revoke\x00--\x00-x",
		"help\x00tokens",
		"--server\x00h:1\x00whoami\x00--timeout\x001s",
		"terminals\x00list\x00--state\x00stale\x00--check\x00fresh\x00--sort\x00last_seen\x00--desc\x00--limit\x002\x00--offset\x001",
		"events\x00list\x00--type\x00media.\x00--since\x002026-04-01\x00--until\x002026-04-30T00:00:00Z",
		"operators\x00token\x00sato\x00--ttl\x001h\x00-o\x00json",
		"operators\x00set-role\x00sato\x00--role\x00auditor",
		"audit\x00list\x00--before-id\x003\x00--action\x00operator.",
		"audit\x00verify\x00-o\x00csv",
		"reports\x00self-inspection\x00--from\x002026-04-01\x00--to\x002026-04-30\x00-o\x00json",
		"policy\x00show\x00-o\x00json",
		"policy\x00set\x00--allow-network\x00198.51.100.0/24\x00--allow-network\x002001:db8::/32@tcp/443,udp/53,tcp/8000-8100\x00--allow-dns\x00198.51.100.53",
		"policy\x00set\x00--enforce-network\x00--expect-version\x00n-1a2b3c4d\x00--no-dns",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		for _, a := range args {
			if strings.Contains(a, "data-dir") || strings.Contains(a, "token-file") {
				t.Skip("reads files")
			}
			if strings.Contains(a, "qr") || strings.Contains(a, "-out") {
				t.Skip("writes files")
			}
		}
		r := newHarness().run(t, args...)
		if r.code < 0 || r.code > 2 {
			t.Errorf("exit %d", r.code)
		}
	})
}
