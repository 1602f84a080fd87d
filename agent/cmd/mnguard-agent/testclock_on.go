//go:build mnguard_testclock

package main

import (
	"log/slog"
	"os"
	"strings"
	"time"
)

// TestClockShiftFile names the file whose content (a Go duration such as
// "-20s") shifts the agent's wall clock of exemptions and offline codes.
const TestClockShiftFile = "MNGUARD_TEST_CLOCK_SHIFT_FILE"

// testClock exists only in binaries built with the mnguard_testclock tag,
// which the end-to-end tests build to set a running agent's clock back
// without touching the machine's. The file is read at every call; a
// missing file is no shift, an unreadable shift is reported and ignored.
func testClock(log *slog.Logger, getenv func(string) string) func() time.Time {
	path := getenv(TestClockShiftFile)
	if path == "" {
		return nil
	}
	log.Warn("TEST BUILD: the wall clock of exemptions follows a shift file", "file", path)
	return func() time.Time {
		now := time.Now().Round(0)
		b, err := os.ReadFile(path)
		if err != nil {
			return now
		}
		d, err := time.ParseDuration(strings.TrimSpace(string(b)))
		if err != nil {
			log.Error("test clock: bad shift", "file", path, "err", err)
			return now
		}
		return now.Add(d)
	}
}
