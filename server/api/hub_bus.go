package api

import (
	"context"
	"errors"

	"github.com/mnguard/mnguard/server/bus"
	"github.com/mnguard/mnguard/server/store"
)

// Publisher announces the hub's pushes to the collector's other replicas
// (bus.Postgres). Publish must not block.
type Publisher interface {
	Publish(bus.Message)
	// Origin is this replica's name on the bus.
	Origin() string
}

// SetBus makes every push of the hub (exemptions issued or revoked, a
// terminal revoked, certificates retired, a new network policy) also go
// to the other replicas through p, and BusHandler act on theirs. Without
// it (one collector, SQLite) pushes stay in the process. Call it before
// serving.
func (s *Services) SetBus(p Publisher) {
	if p == nil {
		s.hub.pub.Store(nil)
		return
	}
	s.hub.pub.Store(&p)
}

// BusHandler returns the handler of the other replicas' messages: it does
// on this replica what the other one's hub did on its own, from the state
// in the store, never from the message beyond the terminal it names.
func (s *Services) BusHandler() bus.Handler { return busHandler{s} }

type busHandler struct{ s *Services }

// Handle implements bus.Handler.
func (h busHandler) Handle(ctx context.Context, m bus.Message) {
	s := h.s
	switch m.Kind {
	case bus.Exemptions:
		// The streams read the set in force themselves.
		sent := s.hub.exemptionsChangedLocal(m.Terminal)
		if m.Seq != 0 && len(sent) > 0 {
			go h.answerSent(ctx, m, sent)
		}
	case bus.Sent:
		if p := s.hub.pub.Load(); p != nil && m.To == (*p).Origin() {
			s.hub.remoteSent(m.Seq, m.Terminal)
		}
	case bus.Policy:
		h.reloadPolicy(ctx)
	case bus.Revoked:
		h.kickIfRevoked(ctx, m.Terminal)
	case bus.Retired:
		h.retireIfRetired(ctx, m.Terminal, m.Serials)
	}
}

// Reconcile implements bus.Handler: after the listening connection was
// (re)established, everything a lost notification could have changed is
// read again: the network policy, and for every terminal with a stream
// here its exemptions (each stream sends the set in force), whether it was
// revoked and whether its streams' certificates were retired.
func (h busHandler) Reconcile(ctx context.Context) {
	s := h.s
	h.reloadPolicy(ctx)
	for id, serials := range s.hub.terminals() {
		if ctx.Err() != nil {
			return
		}
		s.hub.exemptionsChangedLocal(id)
		if h.kickIfRevoked(ctx, id) {
			continue
		}
		h.retireIfRetired(ctx, id, serials)
	}
}

// reloadPolicy loads the network policy in force from the store; a new
// version goes to this replica's streams and its compliance evaluation.
func (h busHandler) reloadPolicy(ctx context.Context) {
	s := h.s
	before := s.NetworkPolicyVersion()
	if err := s.LoadNetworkPolicy(ctx); err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Error("bus: network policy changed on another replica, not loaded", "err", err)
		}
		return
	}
	if s.NetworkPolicyVersion() != before && s.cfg.NetworkPolicyChanged != nil {
		s.cfg.NetworkPolicyChanged()
	}
}

// kickIfRevoked ends the terminal's streams here when the store says it
// is revoked, and reports whether it did.
func (h busHandler) kickIfRevoked(ctx context.Context, terminalID string) bool {
	s := h.s
	t, err := s.cfg.Store.Terminal(ctx, terminalID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Deleted: nothing may stay connected in its name.
	case err != nil:
		if ctx.Err() == nil {
			s.cfg.Logger.Error("bus: terminal state not read; its streams stay until the next reconcile", "terminal", terminalID, "err", err)
		}
		return false
	case t.State != store.StateRevoked && t.RevokedAt.IsZero():
		return false
	}
	s.hub.kickLocal(terminalID)
	s.changed(terminalID)
	return true
}

// retireIfRetired ends the terminal's streams here that were opened with
// one of serials, for those the store says are retired (or revoked, or
// unknown).
func (h busHandler) retireIfRetired(ctx context.Context, terminalID string, serials []string) {
	s := h.s
	var gone []string
	for _, serial := range serials {
		c, err := s.cfg.Store.Certificate(ctx, serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			if ctx.Err() == nil {
				s.cfg.Logger.Error("bus: certificate state not read", "terminal", terminalID, "serial", serial, "err", err)
			}
			continue
		case c.TerminalID != terminalID:
			continue
		case c.RetiredAt.IsZero() && c.RevokedAt.IsZero():
			continue
		}
		gone = append(gone, serial)
	}
	if len(gone) > 0 {
		s.hub.retireLocal(terminalID, gone)
	}
}

// answerSent tells the replica that announced m, once one of this
// replica's streams of the terminal has sent the set (within deliveryWait),
// so that its IssueExemption can say the exemption was pushed.
func (h busHandler) answerSent(ctx context.Context, m bus.Message, sent []chan struct{}) {
	if waitSent(ctx, sent) {
		h.s.hub.publish(bus.Message{Kind: bus.Sent, Terminal: m.Terminal, Seq: m.Seq, To: m.Origin})
	}
}
