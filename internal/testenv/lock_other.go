//go:build !unix

package testenv

import "testing"

// LockLoops is a no-op where there are no loop devices.
func LockLoops(testing.TB) {}
