//go:build linux

package main

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user and system) this process used so far:
// a benchmark's cost that the machine's other load does not inflate.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
