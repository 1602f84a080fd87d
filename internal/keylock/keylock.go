package logins

import (
	"context"
	"sync"
)

// userLocks serializes attempts per user name. An entry lives only while
// someone holds or waits for it, so the map never grows beyond the
// requests in flight.
type userLocks struct {
	mu sync.Mutex
	m  map[string]*userLock
}

type userLock struct {
	sem  chan struct{} // capacity 1: full while held
	refs int           // holders and waiters
}

// lock waits for the user's lock, or for ctx. The returned func releases
// it.
func (l *userLocks) lock(ctx context.Context, name string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*userLock)
	}
	ul := l.m[name]
	if ul == nil {
		ul = &userLock{sem: make(chan struct{}, 1)}
		l.m[name] = ul
	}
	ul.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		ul.refs--
		if ul.refs == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
	select {
	case ul.sem <- struct{}{}:
		return func() { <-ul.sem; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// size returns the number of entries (tests).
func (l *userLocks) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
