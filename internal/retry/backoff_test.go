package retry

import (
	"testing"
	"time"
)

func TestFullJitter(t *testing.T) {
	base, ceil := 500*time.Millisecond, 10*time.Second
	for attempt, want := range []time.Duration{base, 2 * base, 4 * base, 8 * base, 16 * base, ceil, ceil} {
		var most time.Duration
		for range 2000 {
			w := FullJitter(attempt, base, ceil)
			if w < 0 || w > want {
				t.Fatalf("attempt %d: wait %s outside [0, %s]", attempt, w, want)
			}
			most = max(most, w)
		}
		// The window is used: 2,000 draws come within 1 % of its top.
		if most < want*99/100 {
			t.Errorf("attempt %d: longest of 2,000 waits %s, want near %s", attempt, most, want)
		}
	}
	if w := FullJitter(1000, base, ceil); w > ceil {
		t.Errorf("attempt 1000: %s, more than %s", w, ceil)
	}
	if w := FullJitter(-1, base, ceil); w > base {
		t.Errorf("attempt -1: %s, more than %s", w, base)
	}
}
