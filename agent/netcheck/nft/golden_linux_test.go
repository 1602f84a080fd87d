//go:build linux

package nft

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/lab.nft")

// TestGoldenTable: the table for the lab's policy, as nft(8) lists it, is
// testdata/lab.nft (counters zeroed). go test -run TestGoldenTable -update
// rewrites it.
func TestGoldenTable(t *testing.T) {
	requireTools(t)
	term := newNetns(t, "golden")
	e := New(Options{NetNS: term.fd})
	if err := e.Apply(t.Context(), labPolicy(t)); err != nil {
		t.Fatal(err)
	}
	got := term.nft(t, "list", "table", "inet", DefaultTable)
	got = regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(got, "counter packets 0 bytes 0")
	path := filepath.Join("testdata", "lab.nft")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("nft list table inet mnguard:\n%s\nwant (%s):\n%s", got, path, want)
	}
}
