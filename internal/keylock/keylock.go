// Package keylock serializes work per key (a user or operator name): one
// holder at a time, waiters queue, and the map holds only keys in use.
package keylock

import (
	"context"
	"sync"
)

// Map serializes work per key. An entry lives only while someone holds or
// waits for it, so the map never grows beyond the requests in flight. The
// zero Map is ready to use.
type Map struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	sem  chan struct{} // capacity 1: full while held
	refs int           // holders and waiters
}

// Lock waits for the key's lock, or for ctx. The returned func releases
// it.
func (l *Map) Lock(ctx context.Context, name string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*entry)
	}
	ul := l.m[name]
	if ul == nil {
		ul = &entry{sem: make(chan struct{}, 1)}
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

// Len returns the number of keys held or waited for.
func (l *Map) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
