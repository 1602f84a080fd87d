package daemon

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injectable clock of offline challenges.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestChallengesConcurrentUse(t *testing.T) {
	c := newChallenges(nil)
	ch, fresh, _, err := c.ensure("alice")
	if err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 20 {
		wg.Go(func() {
			out, _, _ := c.check("alice", func(got string, _ time.Time) bool { return got == ch })
			if out == offlineAccepted {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if accepted != 1 {
		t.Errorf("one challenge accepted %d times", accepted)
	}
}

func TestChallengesBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	c := newChallenges(clock.Now)
	for i := range maxChallenges + 10 {
		clock.Advance(time.Second)
		if _, _, evicted, err := c.ensure(fmt.Sprint("user", i)); err != nil {
			t.Fatal(err)
		} else if want := fmt.Sprint("user", i-maxChallenges); i >= maxChallenges && evicted != want {
			t.Fatalf("user %d: evicted %q, want %q", i, evicted, want)
		}
	}
	if len(c.m) != maxChallenges {
		t.Errorf("%d challenges held, want %d", len(c.m), maxChallenges)
	}
	if _, ok := c.pending("user0"); ok {
		t.Error("the oldest challenge was kept")
	}
	// Expired ones go first.
	clock.Advance(challengeTTL)
	if _, _, evicted, _ := c.ensure("new"); evicted != "" || len(c.m) != 1 {
		t.Errorf("after expiry: evicted %q, %d held", evicted, len(c.m))
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"alice", 64, "alice"},
		{"田中太郎", 7, "田中…"},
		{"ab\xffc", 64, "ab?c"},
	} {
		if got := clip(tc.in, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
