//go:build !linux

package exemptions

import "time"

// BootClock is unknown on this OS: downtime is measured by the wall clock
// alone.
func BootClock() (string, time.Duration) { return "", 0 }
