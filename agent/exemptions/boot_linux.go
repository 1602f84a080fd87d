package exemptions

import (
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BootClock returns the kernel's boot ID and CLOCK_BOOTTIME (time since
// boot, suspend included, not moved by setting the wall clock).
func BootClock() (string, time.Duration) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", 0
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return "", 0
	}
	return strings.TrimSpace(string(b)), time.Duration(ts.Nano())
}
