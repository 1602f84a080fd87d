package api

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/bus"
)

// DefaultMaxStreamsPerTerminal is how many Subscribe streams one terminal
// may hold open at once when Config names no limit. An agent holds one; a
// second covers a restart whose old connection is not yet found dead.
const DefaultMaxStreamsPerTerminal = 2

// hub tracks the agents' live Subscribe streams, so the collector can push
// to a terminal and end a revoked terminal's streams at once. A terminal
// holds at most max streams: a new one ends the oldest.
//
// With replicas (several collectors on one PostgreSQL), every push is also
// announced on the bus (pub, see hub_bus.go): kick, retire,
// exemptionsChanged and policyChanged act on this replica's streams and
// publish; the *Local variants, which the bus's messages call, only act.
type hub struct {
	max  int
	mu   sync.Mutex
	seq  uint64
	subs map[string]map[*subscriber]struct{}
	pub  atomic.Pointer[Publisher]
	// remote are the exemption changes announced on the bus whose Sent
	// answer is awaited, by the Seq asked with (under mu).
	rseq   uint64
	remote map[uint64]remoteWait
}

// remoteWait is an exemption change announced to the other replicas,
// waiting for one of them to answer that a stream of the terminal sent it.
type remoteWait struct {
	terminal string
	sent     chan struct{}
	at       time.Time
}

// remoteWaitMax is how long an unanswered remoteWait is kept: the caller
// (notifyExemptions) gives up after deliveryWait.
const remoteWaitMax = 10 * time.Second

type subscriber struct {
	// seq orders the terminal's streams by when they opened.
	seq  uint64
	push chan *mnguardv1.SubscribeResponse
	// kicked is closed when the terminal is revoked.
	kicked chan struct{}
	once   sync.Once
	// serial is the certificate the stream was opened with.
	serial string
	// replaced is closed when a newer stream of the terminal took this
	// one's place, retired when the first use of a renewed certificate
	// retired the stream's.
	replaced     chan struct{}
	replacedOnce sync.Once
	retired      chan struct{}
	retiredOnce  sync.Once
	// exemptions is signalled (it holds at most one token) when the
	// terminal's exemptions changed: the stream then reads the set in
	// force from the store and sends it. Sending sets read after the
	// change, rather than sets computed by whoever changed them, keeps
	// two changes at once from reaching the agent in the wrong order.
	exemptions chan struct{}
	// policy is signalled (it holds at most one token) when the policy
	// changed: the stream then sends the policy in force.
	policy chan struct{}
	mu     sync.Mutex
	// waiting are closed once the stream has sent a set read after they
	// were added.
	waiting []chan struct{}
}

func newHub(max int) *hub {
	if max <= 0 {
		max = DefaultMaxStreamsPerTerminal
	}
	return &hub{max: max, subs: make(map[string]map[*subscriber]struct{})}
}

// add registers a new stream of the terminal. When the terminal holds the
// most streams already, the oldest are dropped from the hub and their
// replaced channels closed, so they end; their number is returned.
func (h *hub) add(terminalID, serial string) (*subscriber, int) {
	s := &subscriber{
		serial:     serial,
		push:       make(chan *mnguardv1.SubscribeResponse, 16),
		kicked:     make(chan struct{}),
		replaced:   make(chan struct{}),
		retired:    make(chan struct{}),
		exemptions: make(chan struct{}, 1),
		policy:     make(chan struct{}, 1),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	s.seq = h.seq
	m := h.subs[terminalID]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[terminalID] = m
	}
	dropped := 0
	for len(m) >= h.max {
		var oldest *subscriber
		for o := range m {
			if oldest == nil || o.seq < oldest.seq {
				oldest = o
			}
		}
		delete(m, oldest)
		oldest.replacedOnce.Do(func() { close(oldest.replaced) })
		dropped++
	}
	m[s] = struct{}{}
	return s, dropped
}

func (h *hub) remove(terminalID string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[terminalID], s)
	if len(h.subs[terminalID]) == 0 {
		delete(h.subs, terminalID)
	}
}

// kick ends every stream of the terminal, on every replica. Call it after
// the revocation is stored.
func (h *hub) kick(terminalID string) {
	h.kickLocal(terminalID)
	h.publish(bus.Message{Kind: bus.Revoked, Terminal: terminalID})
}

// kickLocal ends every stream of the terminal on this replica.
func (h *hub) kickLocal(terminalID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[terminalID] {
		s.once.Do(func() { close(s.kicked) })
	}
}

// retire ends the terminal's streams opened with one of the certificates
// of serials, on every replica. Call it after the retirement is stored.
func (h *hub) retire(terminalID string, serials []string) {
	h.retireLocal(terminalID, serials)
	// A message holds a bounded number of serials; a renewal retires one
	// or two.
	for c := range slices.Chunk(serials, 16) {
		h.publish(bus.Message{Kind: bus.Retired, Terminal: terminalID, Serials: c})
	}
}

// retireLocal is retire on this replica only.
func (h *hub) retireLocal(terminalID string, serials []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[terminalID] {
		if slices.Contains(serials, s.serial) {
			s.retiredOnce.Do(func() { close(s.retired) })
		}
	}
}

// exemptionsChanged tells every stream of the terminal to send the set of
// exemptions in force. Call it after the change is stored. It returns, per
// stream of this replica, a channel that is closed once that stream has
// sent a set that includes the change; none when the terminal has no live
// stream here. The other replicas are told through the bus.
//
// With replicas, one more channel is closed when another replica answers
// that a stream of the terminal there has sent the new set (bus.Sent).
func (h *hub) exemptionsChanged(terminalID string) []chan struct{} {
	sent := h.exemptionsChangedLocal(terminalID)
	p := h.pub.Load()
	if p == nil {
		return sent
	}
	now := time.Now()
	c := make(chan struct{})
	h.mu.Lock()
	if h.remote == nil {
		h.remote = make(map[uint64]remoteWait)
	}
	for seq, w := range h.remote {
		if now.Sub(w.at) > remoteWaitMax {
			delete(h.remote, seq)
		}
	}
	h.rseq++
	seq := h.rseq
	h.remote[seq] = remoteWait{terminal: terminalID, sent: c, at: now}
	h.mu.Unlock()
	(*p).Publish(bus.Message{Kind: bus.Exemptions, Terminal: terminalID, Seq: seq})
	return append(sent, c)
}

// remoteSent closes the remoteWait of seq: another replica's stream of the
// terminal sent the set.
func (h *hub) remoteSent(seq uint64, terminalID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w, ok := h.remote[seq]; ok && w.terminal == terminalID {
		close(w.sent)
		delete(h.remote, seq)
	}
}

// exemptionsChangedLocal is exemptionsChanged on this replica only.
func (h *hub) exemptionsChangedLocal(terminalID string) []chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	var sent []chan struct{}
	for s := range h.subs[terminalID] {
		c := make(chan struct{})
		s.mu.Lock()
		s.waiting = append(s.waiting, c)
		s.mu.Unlock()
		sent = append(sent, c)
		select {
		case s.exemptions <- struct{}{}:
		default: // signalled already; the stream has not read the set yet
		}
	}
	return sent
}

// policyChanged tells every stream to send the policy in force, and the
// other replicas to load it. Call it after the new policy is in force.
func (h *hub) policyChanged() {
	h.policyChangedLocal()
	h.publish(bus.Message{Kind: bus.Policy})
}

// policyChangedLocal is policyChanged on this replica only.
func (h *hub) policyChangedLocal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			select {
			case s.policy <- struct{}{}:
			default: // signalled already; the stream has not sent it yet
			}
		}
	}
}

// takeWaiting returns the channels to close after the next set is sent.
// The stream calls it after it received the signal and before it reads
// the set: every change announced so far is stored by then.
func (s *subscriber) takeWaiting() []chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.waiting
	s.waiting = nil
	return w
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

// publish announces m on the bus, if there is one.
func (h *hub) publish(m bus.Message) {
	if p := h.pub.Load(); p != nil {
		(*p).Publish(m)
	}
}

// terminals returns the terminals with a stream on this replica, and the
// serials their streams were opened with.
func (h *hub) terminals() map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]string, len(h.subs))
	for id, m := range h.subs {
		for s := range m {
			if !slices.Contains(out[id], s.serial) {
				out[id] = append(out[id], s.serial)
			}
		}
	}
	return out
}
