// Package retry is how the agent waits between failed attempts to reach its
// collector and for a connection to be ready, shared with the load
// generator that simulates agents.
package retry

import (
	"math/rand/v2"
	"time"
)

// FullJitter returns the wait after the attempt-th consecutive failure
// (0 for the first): a uniformly random time in [0, min(most, base·2^attempt)].
// Full jitter spreads a fleet that lost its collector at one moment over
// the whole window, instead of bringing it back in waves.
func FullJitter(attempt int, base, most time.Duration) time.Duration {
	ceil := base << min(max(attempt, 0), 16)
	if ceil > most || ceil <= 0 {
		ceil = most
	}
	return rand.N(ceil + 1)
}
