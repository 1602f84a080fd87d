//go:build linux

package daemon

import (
	"log/slog"

	"github.com/mnguard/mnguard/agent/netcheck"
	"github.com/mnguard/mnguard/agent/netcheck/nft"
)

// newEnforcer is the agent's own nftables table (inet mnguard), talked to
// over netlink in the agent's network namespace.
func newEnforcer(log *slog.Logger) (netcheck.Enforcer, string) {
	return nft.New(nft.Options{Logger: log}), ""
}
