// Package retry is the agent's wait between failed attempts to reach its
// collector, shared with the load generator that simulates agents.
package retry

import (
	"math/rand/v2"
	"time"
)

// FullJitter returns the wait after the attempt-th consecutive failure
// (0 for the first): a uniformly random time in [0, min(max, base·2^attempt)].
// Full jitter spreads a fleet that lost its collector at one moment over
// the whole window, instead of bringing it back in waves.
func FullJitter(attempt int, base, max time.Duration) time.Duration {
	ceil := base << min(max0(attempt), 16)
	if ceil > max || ceil <= 0 {
		ceil = max
	}
	return rand.N(ceil + 1)
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
