//go:build windows

package daemon

import (
	"log/slog"

	"github.com/mnguard/mnguard/agent/netcheck"
	"github.com/mnguard/mnguard/agent/netcheck/winfw"
)

// newEnforcer is the agent's own Windows Firewall rules, through the
// firewall's COM API; nil and why when the firewall cannot be reached.
func newEnforcer(*slog.Logger) (netcheck.Enforcer, string) {
	e, err := winfw.New()
	if err != nil {
		return nil, err.Error()
	}
	return e, ""
}
