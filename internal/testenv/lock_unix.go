//go:build unix

package testenv

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// LockFile serializes tests that use loop devices or udev across the test
// binaries 'go test ./...' runs in parallel: an agent that treats loop*
// as removable must not grab another package's loop devices.
const LockFile = "/run/lock/mnguard-loop-tests.lock"

// LockLoops takes the machine-wide loop-device test lock until the test
// ends.
func LockLoops(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(LockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("loop test lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("loop test lock: %v", err)
	}
	t.Cleanup(func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	})
}
