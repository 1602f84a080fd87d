package nft_test

import (
	"github.com/mnguard/mnguard/agent/netcheck"
	"github.com/mnguard/mnguard/agent/netcheck/nft"
)

// The enforcer is the manager's, on Linux; elsewhere a stub of the same shape.
var _ netcheck.Enforcer = (*nft.Enforcer)(nil)
