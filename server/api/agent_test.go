package api

import (
	"math"
	"strings"
	"testing"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func agentEvent(seq uint64, typ string) *mnguardv1.Event {
	return &mnguardv1.Event{Seq: seq, Time: timestamppb.Now(), Type: typ, Severity: mnguardv1.Severity_SEVERITY_INFO, Message: typ}
}

// TestReportRefusesServerEventTypes: an agent cannot report an event under a
// type the collector records itself (a forged login verification or
// exemption issue would read as the collector's own), and nothing of such a
// report is stored.
func TestReportRefusesServerEventTypes(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	ctx := t.Context()
	for i, typ := range []string{"login.verify", "exemption.issued", "exemption.offline_issued", "exemption.delivered", "compliance.changed"} {
		t.Run(typ, func(t *testing.T) {
			_, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(uint64(2*i+1), "agent.start"), agentEvent(uint64(2*i+2), typ)}})
			wantCode(t, err, codes.InvalidArgument, typ)
			wantCode(t, err, codes.InvalidArgument, "reserved")
		})
	}
	evs, err := c.st.Events(ctx, term.GetTerminalId(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		t.Errorf("event %d (%s) of a refused report stored", e.Seq, e.Type)
	}
	// The agent's own exemption events (it reports revocations it applied)
	// stay allowed.
	if _, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(100, "exemption.revoked"), agentEvent(101, "media.exemption_used")}}); err != nil {
		t.Fatalf("agent exemption events: %v", err)
	}
}

// TestReportEventSeqBound: sequence numbers beyond what the store keeps
// (signed 64-bit) are the agent's error, InvalidArgument naming the field,
// not the collector's Unavailable; the largest storable one is stored.
func TestReportEventSeqBound(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	ctx := t.Context()
	for _, seq := range []uint64{math.MaxUint64, math.MaxInt64 + 1} {
		_, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(seq, "agent.start")}})
		wantCode(t, err, codes.InvalidArgument, "events[0].seq")
	}
	resp, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(math.MaxInt64, "agent.start")}})
	if err != nil {
		t.Fatalf("seq 2^63-1: %v", err)
	}
	if acked := resp.GetAckedSeqs(); len(acked) != 1 || acked[0] != math.MaxInt64 {
		t.Errorf("acked %v, want [%d]", acked, uint64(math.MaxInt64))
	}
	evs, err := c.st.Events(ctx, term.GetTerminalId(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Seq != math.MaxInt64 || !strings.HasPrefix(evs[0].Type, "agent.") {
		t.Errorf("stored %d events, want the one event of seq 2^63-1", len(evs))
	}
}
