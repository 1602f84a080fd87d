package api

import (
	"sync"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// hub tracks the agents' live Subscribe streams, so the collector can push
// to a terminal and end a revoked terminal's streams at once.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{}
}

type subscriber struct {
	push chan *mnguardv1.SubscribeResponse
	// kicked is closed when the terminal is revoked.
	kicked chan struct{}
	once   sync.Once
}

func newHub() *hub { return &hub{subs: make(map[string]map[*subscriber]struct{})} }

func (h *hub) add(terminalID string) *subscriber {
	s := &subscriber{push: make(chan *mnguardv1.SubscribeResponse, 16), kicked: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[terminalID]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[terminalID] = m
	}
	m[s] = struct{}{}
	return s
}

func (h *hub) remove(terminalID string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[terminalID], s)
	if len(h.subs[terminalID]) == 0 {
		delete(h.subs, terminalID)
	}
}

// kick ends every stream of the terminal.
func (h *hub) kick(terminalID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[terminalID] {
		s.once.Do(func() { close(s.kicked) })
	}
}

// count is the number of connected streams.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}
