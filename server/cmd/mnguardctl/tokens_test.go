package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/seeds"
)

// TestImportLimitsMatchCollector: mnguardctl refuses what the collector
// would, in the same words.
func TestImportLimitsMatchCollector(t *testing.T) {
	if maxImportBytes != api.MaxImportBytes || importChunk != api.MaxImportChunk || maxImportTokens != seeds.MaxSeeds {
		t.Fatalf("mnguardctl limits %d bytes, %d-byte chunks, %d tokens; the collector's %d, %d, %d",
			maxImportBytes, importChunk, maxImportTokens, api.MaxImportBytes, api.MaxImportChunk, seeds.MaxSeeds)
	}
	for _, n := range []uint64{maxImportBytes + 1, 1 << 40} {
		if got, want := tooLargeMessage(n), api.TooLargeMessage(n); got != want {
			t.Errorf("tooLargeMessage(%d) = %q, collector says %q", n, got, want)
		}
	}
}

// TestUsersImportRefusedLocally: a file over the limit, an empty one and
// a bad --assign file are refused before anything is sent.
func TestUsersImportRefusedLocally(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.xml")
	if err := os.WriteFile(big, []byte("<x/>"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, maxImportBytes+1); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.csv")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.csv")
	if err := os.WriteFile(small, []byte("serial,user,seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badMap := filepath.Join(dir, "map.csv")
	if err := os.WriteFile(badMap, []byte("serial,user\nSN1,alice\nSN1,bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"users", "import", big}, "import users: the seed file is 256.0 MiB (268435457 bytes); the collector imports files of at most 256.0 MiB (268435456 bytes) and 100000 tokens at once: split it into several files"},
		{[]string{"users", "import", empty}, "the file is empty"},
		{[]string{"users", "import", small, "--assign", badMap}, "assignment file " + badMap + ": line 3: serial \"SN1\" assigned again (first on line 2)"},
		{[]string{"users", "import", small, "--assign", filepath.Join(dir, "missing.csv")}, "no such file"},
	} {
		h := newHarness()
		r := h.run(t, tt.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", tt.args, r.code, r.stderr, tt.want)
		}
		if h.cfg != nil {
			t.Errorf("%v: connected to the collector; want the file refused before", tt.args)
		}
	}
}

func TestParseAssignments(t *testing.T) {
	got, err := parseAssignments(strings.NewReader("serial,user\nSN1, alice\n\n\"SN,2\",bob\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].GetSerial() != "SN1" || got[0].GetUser() != "alice" || got[1].GetSerial() != "SN,2" {
		t.Fatalf("parseAssignments = %v", got)
	}
	for _, tt := range []struct{ in, want string }{
		{"SN1\n", "line 1: 1 fields, want 2"},
		{"SN1,alice,x\n", "line 1: 3 fields"},
		{"SN1,\n", "line 1: empty serial or user"},
		{"SN1,al\x01ice\n", "control character"},
		{"SN1,alice\nSN1,bob\n", `line 2: serial "SN1" assigned again (first on line 1)`},
		{"\"SN1,alice\n", "line 1"},
		{strings.Repeat("x", 129) + ",alice\n", "longer than 128 bytes"},
	} {
		if _, err := parseAssignments(strings.NewReader(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseAssignments(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
}

// FuzzParseAssignments: any --assign file gives assignments that are 1
// to 128 bytes without control characters, each serial once, or an error.
func FuzzParseAssignments(f *testing.F) {
	f.Add("serial,user\nSN1,alice\n")
	f.Add("\"SN\"\"1\",bob\nSN2,carol\n")
	f.Add("SN1,alice\nSN1,bob\n")
	f.Fuzz(func(t *testing.T, in string) {
		as, err := parseAssignments(strings.NewReader(in))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, a := range as {
			for _, v := range []string{a.GetSerial(), a.GetUser()} {
				if v == "" || len(v) > 128 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
					t.Fatalf("bad value %q", v)
				}
			}
			if seen[a.GetSerial()] {
				t.Fatalf("serial %q twice", a.GetSerial())
			}
			seen[a.GetSerial()] = true
		}
	})
}
