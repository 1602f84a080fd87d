//go:build !mnguard_testclock

package main

import (
	"log/slog"
	"time"
)

// testClock is nil (the real clock) in every build but the end-to-end
// tests' (see testclock_on.go).
func testClock(*slog.Logger, func(string) string) func() time.Time { return nil }
