package api

import (
	"math"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	dto "github.com/prometheus/client_model/go"
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

// TestSubscribeStreamCap: one terminal holds at most MaxStreamsPerTerminal
// Subscribe streams; each new one ends the oldest with ResourceExhausted
// saying why, and another terminal's stream is not touched.
func TestSubscribeStreamCap(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	other, _ := c.terminal()
	otherStream := c.subscribe(other)
	otherStream.next(t, 5*time.Second)
	const n = 12
	streams := make([]*pushes, n)
	for i := range streams {
		streams[i] = c.subscribe(agent)
		// The first push: the stream is registered.
		streams[i].next(t, 5*time.Second)
		if got := c.svc.hub.count(); got > DefaultMaxStreamsPerTerminal+1 {
			t.Fatalf("after %d streams of one terminal: %d open, want at most %d (and the other terminal's)", i+1, got, DefaultMaxStreamsPerTerminal)
		}
	}
	for i, p := range streams[:n-DefaultMaxStreamsPerTerminal] {
		select {
		case err := <-p.err:
			wantCode(t, err, codes.ResourceExhausted, "replaced by a newer Subscribe stream of terminal "+term.GetTerminalId())
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d still open after %d newer ones", i+1, n-1-i)
		}
	}
	for i, p := range append(streams[n-DefaultMaxStreamsPerTerminal:], otherStream) {
		select {
		case err := <-p.err:
			t.Errorf("stream %d ended: %v", i, err)
		default:
		}
	}
	var m dto.Metric
	if err := c.metrics.streamsReplaced.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != n-DefaultMaxStreamsPerTerminal {
		t.Errorf("mnguard_agent_streams_replaced_total = %v, want %d", got, n-DefaultMaxStreamsPerTerminal)
	}
}
