package web

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// hub tells live pages that a terminal changed.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

func newHub() *hub { return &hub{subs: map[string]map[chan struct{}]struct{}{}} }

// subscribe returns a channel signalled (at most one pending signal) when
// the terminal changes, and a func that ends the subscription.
func (h *hub) subscribe(terminalID string) (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	h.mu.Lock()
	m := h.subs[terminalID]
	if m == nil {
		m = map[chan struct{}]struct{}{}
		h.subs[terminalID] = m
	}
	m[c] = struct{}{}
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		delete(h.subs[terminalID], c)
		if len(h.subs[terminalID]) == 0 {
			delete(h.subs, terminalID)
		}
		h.mu.Unlock()
	}
}

func (h *hub) notify(terminalID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs[terminalID] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// Live streams: heartbeat comments keep proxies from closing an idle
// stream; a stream lives at most liveMax, then the browser reconnects (and
// the session is checked again).
const (
	liveHeartbeat = 15 * time.Second
	liveMax       = 5 * time.Minute
	// livePoll re-renders even without a notification, in case one was
	// missed (another collector replica stored the event).
	livePoll = 2 * time.Second
)

// stream serves a Server-Sent Events stream of the HTML fragment render
// returns, sending it whenever it changes: at once, on every change of the
// terminal, and at least every livePoll. done reports, after each send,
// whether nothing will change any more (the stream then ends).
func (s *Server) stream(w http.ResponseWriter, r *http.Request, terminalID string, render func() (html string, done bool, err error)) error {
	rc := http.NewResponseController(w)
	changed, cancel := s.live.subscribe(terminalID)
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var last string
	beat := time.NewTicker(liveHeartbeat)
	defer beat.Stop()
	poll := time.NewTicker(livePoll)
	defer poll.Stop()
	end := time.NewTimer(liveMax)
	defer end.Stop()
	send := func() (bool, error) {
		html, done, err := render()
		if err != nil {
			return true, err
		}
		if html != last {
			last = html
			var b strings.Builder
			b.WriteString("event: status\n")
			for _, line := range strings.Split(html, "\n") {
				fmt.Fprintf(&b, "data: %s\n", line)
			}
			b.WriteString("\n")
			if _, err := w.Write([]byte(b.String())); err != nil {
				return true, nil
			}
			if err := rc.Flush(); err != nil {
				return true, nil
			}
		}
		return done, nil
	}
	for {
		done, err := send()
		if err != nil || done {
			// The page's script stops listening at "done"; without it,
			// the browser would reconnect.
			_, _ = w.Write([]byte("event: done\ndata: \n\n"))
			_ = rc.Flush()
			return err
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-end.C:
			return nil
		case <-beat.C:
			if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		case <-changed:
		case <-poll.C:
		}
	}
}
