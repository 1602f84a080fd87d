// Linux only: Wine cannot remove the temporary directory of a test that
// wrote a file in it (see scripts/wine).

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExemptionsLine(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&out, "%s: %s\n", label, fmt.Sprintf(format, args...))
	}

	exemptionsLine(line, filepath.Join(dir, "missing.json"), time.Now())
	if got := out.String(); got != "Exemptions: none\n" {
		t.Errorf("no file: %q", got)
	}
	out.Reset()
	damaged := filepath.Join(dir, "exemptions.json")
	if err := os.WriteFile(damaged, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	exemptionsLine(line, damaged, time.Now())
	if got := out.String(); !strings.Contains(got, "state unreadable") || !strings.Contains(got, "none is in force") {
		t.Errorf("damaged file: %q", got)
	}
}
