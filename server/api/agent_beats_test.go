package api

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// TestBeatsWheel: one goroutine gives every registered stream a heartbeat
// once per interval, ends the streams whose certificates expire (those
// expiring within an interval on time, by their own timer), and stops when
// the last stream is gone.
func TestBeatsWheel(t *testing.T) {
	const every = 100 * time.Millisecond
	b := newBeats(every, time.Now)
	far := time.Now().Add(time.Hour)
	entries := make([]*beat, 1000)
	for i := range entries {
		entries[i] = b.add(far)
	}
	soon := b.add(time.Now().Add(3 * every / 2))
	gone := b.add(time.Now().Add(-time.Second))
	select {
	case <-gone.expired:
	default:
		t.Error("a stream of an expired certificate was not ended at once")
	}
	// Twice: every stream has its heartbeat within one interval (and a
	// tick), and again in the next.
	for round := range 2 {
		time.Sleep(3 * every)
		for i, e := range entries {
			select {
			case <-e.c:
			default:
				t.Fatalf("round %d: stream %d had no heartbeat in %s", round, i, 3*every)
			}
		}
	}
	select {
	case <-soon.expired:
	case <-time.After(time.Second):
		t.Fatal("a certificate that expired was not noticed")
	}
	for _, e := range append(entries, soon) {
		b.remove(e)
	}
	if n := b.count(); n != 0 {
		t.Errorf("%d streams left", n)
	}
	for end := time.Now().Add(time.Second); ; {
		b.mu.Lock()
		running := b.running
		b.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the wheel still runs without streams")
		}
		time.Sleep(every / 4)
	}
}

// TestSubscribeHeartbeatAndExpiry: an idle stream carries heartbeats at
// the configured interval, and ends with Unauthenticated when its
// certificate expires.
func TestSubscribeHeartbeatAndExpiry(t *testing.T) {
	const validity = 4 * time.Second
	c := startCollectorWith(t, false, func(cfg *Config) {
		cfg.Heartbeat = 200 * time.Millisecond
		cfg.CertValidity = validity
	})
	start := time.Now()
	agent, _ := c.terminal()
	p := c.subscribe(agent)
	p.next(t, 5*time.Second) // exemptions
	p.next(t, 5*time.Second) // policy
	for i := range 3 {
		if m := p.next(t, 2*time.Second); m.GetHeartbeat() == nil {
			t.Fatalf("push %d: %v, want a heartbeat", i, m)
		}
	}
	for {
		select {
		case <-p.msgs:
			continue
		case err := <-p.err:
			wantCode(t, err, codes.Unauthenticated, "expired")
			// The certificate's not_after is the enrollment's time plus
			// the validity.
			if took := time.Since(start); took < validity-time.Second || took > validity+3*time.Second {
				t.Errorf("stream ended %s after enrollment, want about %s", took, validity)
			}
			return
		case <-time.After(2 * validity):
			t.Fatal("stream of an expired certificate still open")
		}
	}
}
