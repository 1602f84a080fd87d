// Package testenv holds what tests need from the machine they run on: root,
// and exclusive use of loop devices.
package testenv

import (
	"os"
	"testing"
)

// RequireRoot skips the test when not root, except under CI (CI=true),
// where every component is there and a skip would hide a missing one.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s needs root, and CI runs as root", why)
	}
	t.Skipf("%s needs root", why)
}
