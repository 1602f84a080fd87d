//go:build !linux && !windows

package daemon

import (
	"log/slog"
	"runtime"

	"github.com/mnguard/mnguard/agent/netcheck"
)

// newEnforcer: no enforcement on this OS.
func newEnforcer(*slog.Logger) (netcheck.Enforcer, string) {
	return nil, "no network enforcement on " + runtime.GOOS
}
