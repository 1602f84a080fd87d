package fakeclock

import (
	"sync"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	c := New(t0)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); c.Add(time.Second); _ = c.Now() }()
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("after ten seconds: %v", got)
	}
	c.Set(t0)
	c.Add(-time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(-time.Minute)) {
		t.Errorf("set and moved back: %v", got)
	}
}
