package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/mnguard/mnguard/agent/spool"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// TestReportLoss: when the spool drops events for room, the collector
// hears of it once, from the spool's own spool.events_dropped event with
// the count; the agent's loss check adds no second report of it.
func TestReportLoss(t *testing.T) {
	sp, err := spool.OpenWithOptions(filepath.Join(t.TempDir(), "spool.db"), spool.Options{MaxEvents: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	d := &Daemon{spool: sp, log: slog.New(slog.NewTextHandler(io.Discard, nil)), wake: make(chan struct{}, 1)}
	d.reportLoss()
	for range 5 {
		d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, "x", nil)
	}
	d.reportLoss()
	d.reportLoss()
	evs, err := sp.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	var lost []*mnguardv1.Event
	for _, e := range evs {
		switch e.GetType() {
		case spool.EventDropped, "agent.events_lost":
			lost = append(lost, e)
		}
	}
	if len(lost) != 1 || lost[0].GetType() != spool.EventDropped || lost[0].GetAttributes()["count"] != "3" || lost[0].GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT {
		t.Fatalf("loss events = %v, want one %s with count 3", lost, spool.EventDropped)
	}
}

// TestFingerprintIgnoresRemaining: an exemption's remaining time, which
// changes every second, does not make the posture "changed"; its state
// does.
func TestFingerprintIgnoresRemaining(t *testing.T) {
	p := func(remaining uint32, st string) *mnguardv1.Posture {
		return &mnguardv1.Posture{Media: &mnguardv1.MediaPosture{Mode: "enforce", Exemptions: []*mnguardv1.ExemptionState{
			{Id: "ex-1", State: st, RemainingSeconds: remaining},
		}}}
	}
	a := p(3600, "applied")
	if !bytes.Equal(fingerprint(a), fingerprint(p(3595, "applied"))) {
		t.Error("the remaining time changed the fingerprint")
	}
	if bytes.Equal(fingerprint(a), fingerprint(p(3595, "ended"))) {
		t.Error("a new state did not change the fingerprint")
	}
	if a.GetMedia().GetExemptions()[0].GetRemainingSeconds() != 3600 {
		t.Error("fingerprint changed the posture it was given")
	}
}
