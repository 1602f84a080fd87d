//go:build !linux

package e2e

import (
	"sync/atomic"
	"testing"
)

// countUevents: there are no uevents here.
func countUevents(*testing.B) (n *atomic.Int64, stop func()) { return new(atomic.Int64), func() {} }
