package daemon

import (
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/offlinecode"
)

// Offline login challenges: when the collector cannot answer, the login
// prompt shows a challenge, the helpdesk answers it with a one-time code
// (offlinecode.LoginCode under the terminal's offline key), and the agent
// checks that code here. Challenges live in memory only: a restart forgets
// them, and a code for a forgotten challenge is refused (fail closed).
const (
	// challengeTTL is how long a challenge can be answered. The helpdesk's
	// code stays valid for one to two hours, so the challenge decides.
	challengeTTL = 30 * time.Minute
	// maxOfflineTries is how many wrong codes a challenge takes before it
	// is void and the user needs a new one.
	maxOfflineTries = 5
	// maxChallenges bounds the users with a pending challenge; the oldest
	// goes when a new one would exceed it.
	maxChallenges = 256
)

// challenge is one user's pending offline challenge.
type challenge struct {
	value   string // ChallengeDigits digits
	created time.Time
	wrong   int // wrong codes so far
}

// challenges holds the pending challenges by user. It is safe for
// concurrent use.
type challenges struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]*challenge
}

func newChallenges(now func() time.Time) *challenges {
	if now == nil {
		now = time.Now
	}
	return &challenges{now: now, m: make(map[string]*challenge)}
}

// pendingLocked returns user's unexpired challenge, dropping an expired one.
func (c *challenges) pendingLocked(user string, now time.Time) *challenge {
	ch := c.m[user]
	if ch == nil {
		return nil
	}
	if now.Sub(ch.created) >= challengeTTL || now.Before(ch.created.Add(-time.Minute)) {
		// Expired, or the clock went back: either way not trusted.
		delete(c.m, user)
		return nil
	}
	return ch
}

// pending returns user's unexpired challenge, if any.
func (c *challenges) pending(user string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.pendingLocked(user, c.now()); ch != nil {
		return ch.value, true
	}
	return "", false
}

// ensure returns user's pending challenge, creating one when there is none;
// fresh says it was created now. evicted names the user whose challenge
// made room for it, if any.
func (c *challenges) ensure(user string) (value string, fresh bool, evicted string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if ch := c.pendingLocked(user, now); ch != nil {
		return ch.value, false, "", nil
	}
	v, err := offlinecode.NewChallenge()
	if err != nil {
		return "", false, "", err
	}
	if len(c.m) >= maxChallenges {
		for u := range c.m {
			c.pendingLocked(u, now) // drops the expired
		}
	}
	if len(c.m) >= maxChallenges {
		for u, ch := range c.m {
			if evicted == "" || ch.created.Before(c.m[evicted].created) {
				evicted = u
			}
		}
		delete(c.m, evicted)
	}
	c.m[user] = &challenge{value: v, created: now}
	return v, true, evicted, nil
}

// offlineOutcome is what checking a code against a challenge gave.
type offlineOutcome int

const (
	noChallenge     offlineOutcome = iota // no pending challenge: not an offline code
	offlineAccepted                       // the code answers it; the challenge is used up
	offlineWrong                          // wrong code; tries left
	offlineVoid                           // wrong code, and the last try: the challenge is gone
)

// check decides code against user's pending challenge with verify(challenge),
// atomically: of two concurrent uses of one code only one succeeds. It
// returns the outcome, the challenge and the tries left.
func (c *challenges) check(user string, verify func(challenge string, now time.Time) bool) (offlineOutcome, string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	ch := c.pendingLocked(user, now)
	if ch == nil {
		return noChallenge, "", 0
	}
	if verify(ch.value, now) {
		delete(c.m, user)
		return offlineAccepted, ch.value, 0
	}
	ch.wrong++
	if ch.wrong >= maxOfflineTries {
		delete(c.m, user)
		return offlineVoid, ch.value, 0
	}
	return offlineWrong, ch.value, maxOfflineTries - ch.wrong
}
