//go:build !linux

package main

import (
	"errors"
	"fmt"
	"time"
)

// readProc reads another process's memory and CPU time only on Linux.
func readProc(pid int) (int64, time.Duration, error) {
	return 0, 0, fmt.Errorf("read process %d: %w", pid, errors.ErrUnsupported)
}

func listenerPID(string) int { return 0 }
