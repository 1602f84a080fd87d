//go:build !windows

package winfw

import (
	"errors"
	"fmt"
	"runtime"
)

// New fails: Windows Firewall exists on Windows only.
func New() (*Enforcer, error) {
	return nil, fmt.Errorf("winfw: Windows Firewall on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
