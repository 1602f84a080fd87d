package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// hub tells live pages that a terminal changed, and holds each session to
// MaxLiveStreams open streams.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	// sessions are each session's open streams, oldest first: each one's
	// channel is closed when a newer stream replaces it.
	sessions map[string][]chan struct{}
}

func newHub() *hub {
	return &hub{subs: map[string]map[chan struct{}]struct{}{}, sessions: map[string][]chan struct{}{}}
}

// MaxLiveStreams is how many live streams one console session may hold
// open: a few tabs. Each stream re-renders from the database every
// livePoll, so without a bound one signed-in browser could keep the
// collector busy; a new stream replaces the session's oldest, which ends
// with "done" (its page stops listening rather than reconnecting).
const MaxLiveStreams = 8

// admit counts a new stream of session and returns a channel closed when
// a newer stream replaces it, and a func that ends it.
func (h *hub) admit(session string) (<-chan struct{}, func()) {
	replaced := make(chan struct{})
	h.mu.Lock()
	l := append(h.sessions[session], replaced)
	if len(l) > MaxLiveStreams {
		close(l[0])
		l = l[1:]
	}
	h.sessions[session] = l
	h.mu.Unlock()
	return replaced, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		l := h.sessions[session]
		if i := slices.Index(l, replaced); i >= 0 {
			l = slices.Delete(l, i, i+1)
		}
		if len(l) == 0 {
			delete(h.sessions, session)
		} else {
			h.sessions[session] = l
		}
	}
}

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
// whether nothing will change any more (the stream then ends). A stream
// that a newer one of the same session replaces (MaxLiveStreams) ends.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, c *reqCtx, terminalID string, render func() (html string, done bool, err error)) error {
	rc := http.NewResponseController(w)
	replaced, release := s.live.admit(string(c.sesHash))
	defer release()
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
	done := func() {
		// The page's script stops listening at "done"; without it, the
		// browser would reconnect.
		_, _ = w.Write([]byte("event: done\ndata: \n\n"))
		_ = rc.Flush()
	}
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
		final, err := send()
		if err != nil || final {
			done()
			return err
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-replaced:
			done()
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
