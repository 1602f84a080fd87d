package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// TestCertificateRenewal: with short-lived certificates the agent renews
// before expiry, without a new token, and keeps reporting past the first
// certificate's end.
func TestCertificateRenewal(t *testing.T) {
	c := newCollector(t, "--cert-validity", "12s", "--report-interval", "2s")
	a, id := enrolledAgent(t, c, "2s")
	a.start(t)
	first := c.waitReported(t, id, 5*time.Second)
	firstEnd := first.GetCertificateNotAfter().AsTime()
	// Past the first certificate's end, the terminal still reports, under a
	// newer certificate.
	eventually(t, 30*time.Second, func() error {
		term := c.terminal(t, id)
		if term.GetCertificateSerial() == first.GetCertificateSerial() {
			return fmt.Errorf("certificate %s not renewed", first.GetCertificateSerial())
		}
		if !term.GetLastSeenAt().AsTime().After(firstEnd.Add(time.Second)) {
			return fmt.Errorf("last seen %s, not yet past the first certificate's end %s", term.GetLastSeenAt().AsTime(), firstEnd)
		}
		return nil
	})
	var evs mnguardv1.ListEventsResponse
	c.ctlJSON(t, &evs, "events", "list", "--terminal", id)
	renewed := 0
	for _, e := range evs.GetEvents() {
		if e.GetEvent().GetType() == "agent.certificate_renewed" {
			renewed++
		}
	}
	if renewed == 0 {
		t.Errorf("no agent.certificate_renewed event: %v", &evs)
	}
}

// TestRevokeAndReenroll: a revoked terminal is refused from then on, says so
// in its status, and comes back only through a new enrollment.
func TestRevokeAndReenroll(t *testing.T) {
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	a.start(t)
	c.waitReported(t, id, 5*time.Second)
	out, errOut, code := c.ctl(t, "terminals", "revoke", id, "--reason", "decommissioned")
	if code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, id) {
		t.Errorf("revoke printed %q", out)
	}
	eventually(t, 5*time.Second, func() error {
		out, _, code := run(t, nil, "mnguard-agent", a.args("status")...)
		if code == 0 || !strings.Contains(out, "revoked") {
			return fmt.Errorf("status exit %d:\n%s", code, out)
		}
		return nil
	})
	a.proc.stop(t)

	// Re-enrollment needs a token and --force; then it is a new terminal.
	if _, errOut, code := a.enroll(t, c, c.token(t, "1h", 1), c.pin, "--force"); code != 0 {
		t.Fatalf("re-enroll: %s", errOut)
	}
	id2 := a.terminalID(t)
	if id2 == id {
		t.Fatal("re-enrollment kept the revoked terminal ID")
	}
	a.start(t)
	c.waitReported(t, id2, 5*time.Second)
	var audit mnguardv1.ListTerminalsResponse
	c.ctlJSON(t, &audit, "terminals", "list")
	states := map[string]mnguardv1.TerminalState{}
	for _, term := range audit.GetTerminals() {
		states[term.GetId()] = term.GetState()
	}
	if states[id] != mnguardv1.TerminalState_TERMINAL_STATE_REVOKED || states[id2] != mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE {
		t.Errorf("states = %v", states)
	}
}

// TestEventsSurviveCollectorOutage: events raised while the collector is
// down stay in the agent's spool and arrive, once each, when it is back.
func TestEventsSurviveCollectorOutage(t *testing.T) {
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	c.stop(t)
	// Two agent lifetimes while the collector is away: start and stop
	// events pile up in the spool.
	for range 2 {
		a.start(t)
		time.Sleep(time.Second)
		a.proc.stop(t)
	}
	c.start(t)
	a.start(t)
	eventually(t, 15*time.Second, func() error {
		var evs mnguardv1.ListEventsResponse
		c.ctlJSON(t, &evs, "events", "list", "--terminal", id)
		seqs := map[uint64]int{}
		starts := 0
		for _, e := range evs.GetEvents() {
			seqs[e.GetEvent().GetSeq()]++
			if e.GetEvent().GetType() == "agent.start" {
				starts++
			}
		}
		if starts < 3 {
			return fmt.Errorf("%d agent.start events, want 3: %v", starts, seqs)
		}
		for s, n := range seqs {
			if n != 1 {
				return fmt.Errorf("seq %d stored %d times", s, n)
			}
		}
		return nil
	})
}
