package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestReportGroupCommit: reports that arrive together are stored in one
// transaction, each acknowledged with its own events once it committed;
// the report of a terminal revoked after its certificate was cached fails
// alone in its batch, with PermissionDenied, and nothing of it is stored.
func TestReportGroupCommit(t *testing.T) {
	c := startCollectorWith(t, false, func(cfg *Config) { cfg.IngestLinger = 50 * time.Millisecond })
	const n = 16
	agents := make([]mnguardv1.AgentServiceClient, n)
	ids := make([]string, n)
	for i := range agents {
		var res *mnguardv1.EnrollResponse
		agents[i], res = c.terminal()
		ids[i] = res.GetTerminalId()
	}
	ctx := t.Context()
	// Every certificate used once (and so cached) before.
	for i, a := range agents {
		if _, err := a.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(1, "agent.start")}}); err != nil {
			t.Fatalf("agent %d: %v", i, err)
		}
	}
	admin, actx := c.admin(store.RoleAdmin)
	revoked := n - 1
	if _, err := admin.RevokeTerminal(actx, &mnguardv1.RevokeTerminalRequest{Id: ids[revoked], Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	before := c.batchCount(t)
	var wg sync.WaitGroup
	errs := make([]error, n)
	acks := make([][]uint64, n)
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := a.Report(ctx, &mnguardv1.ReportRequest{Posture: goodPosture(time.Now()),
				Events: []*mnguardv1.Event{agentEvent(2, "media.attached"), agentEvent(3, "media.write_blocked")}})
			errs[i], acks[i] = err, resp.GetAckedSeqs()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == revoked {
			wantCode(t, err, codes.PermissionDenied, "revoked")
			continue
		}
		if err != nil {
			t.Errorf("agent %d: %v", i, err)
		} else if fmt.Sprint(acks[i]) != "[2 3]" {
			t.Errorf("agent %d: acked %v, want [2 3]", i, acks[i])
		}
	}
	for i, id := range ids {
		evs, err := c.st.Events(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := 3
		if i == revoked {
			want = 1
		}
		if len(evs) != want {
			t.Errorf("agent %d: %d events stored, want %d", i, len(evs), want)
		}
	}
	// Fewer transactions than reports: the linger gathered them.
	batches, reports := c.batchCount(t), c.batchSum(t)
	if got := batches - before; got >= n || got < 1 {
		t.Errorf("%d reports in %d transactions, want them gathered in fewer", n, got)
	}
	if reports != float64(2*n) {
		t.Errorf("batches stored %v reports, want %d", reports, 2*n)
	}
}

// TestReportStoreUnavailable: a report the store could not take is refused
// with Unavailable and nothing of it acknowledged.
func TestReportStoreUnavailable(t *testing.T) {
	c := startCollector(t, false)
	agent, _ := c.terminal()
	ctx := t.Context()
	if _, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(1, "agent.start")}}); err != nil {
		t.Fatal(err)
	}
	if err := c.st.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(2, "agent.start")}})
	wantCode(t, err, codes.Unavailable, "")
	if len(resp.GetAckedSeqs()) != 0 {
		t.Errorf("acknowledged %v of a report not stored", resp.GetAckedSeqs())
	}
}

// TestReportError: what agents are told of a report that was not stored.
func TestReportError(t *testing.T) {
	term := &Terminal{ID: "t1", Serial: "0a"}
	for _, tt := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{fmt.Errorf("store: save report t1: %w", store.ErrUnavailable), codes.Unavailable, "cannot be reached"},
		{fmt.Errorf("terminal %w", store.ErrRevoked), codes.PermissionDenied, "revoked"},
		{fmt.Errorf("certificate 0a: %w", store.ErrRetired), codes.Unauthenticated, "replaced by a renewed certificate"},
		{fmt.Errorf("terminal %w", store.ErrNotFound), codes.Unauthenticated, "unknown"},
		{context.DeadlineExceeded, codes.DeadlineExceeded, ""},
		{context.Canceled, codes.Canceled, ""},
		{errors.New("disk I/O error"), codes.Unavailable, "disk I/O error"},
	} {
		wantCode(t, reportError(term, tt.err), tt.code, tt.msg)
	}
}

// TestIngesterCallerGivesUp: a report whose caller's context ended is
// answered with that and never stored after it; the reports after it are.
func TestIngesterCallerGivesUp(t *testing.T) {
	var mu sync.Mutex
	var stored []string
	release := make(chan struct{})
	g := &ingester{maxBatch: 4, parallel: 1, save: func(ctx context.Context, rs []store.BatchReport) ([]store.BatchResult, error) {
		<-release
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rs {
			stored = append(stored, r.TerminalID)
		}
		return make([]store.BatchResult, len(rs)), nil
	}}
	first := make(chan error, 1)
	go func() {
		_, err := g.submit(context.Background(), store.BatchReport{Report: store.Report{TerminalID: "first"}})
		first <- err
	}()
	// "first" holds the one runner; "gone" waits behind it and gives up.
	for {
		g.mu.Lock()
		busy := g.running == 1 && len(g.queue) == 0
		g.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := g.submit(ctx, store.BatchReport{Report: store.Report{TerminalID: "gone"}})
		gone <- err
	}()
	for {
		g.mu.Lock()
		n := len(g.queue)
		g.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("gone: %v, want context.Canceled", err)
	}
	last := make(chan error, 1)
	go func() {
		_, err := g.submit(context.Background(), store.BatchReport{Report: store.Report{TerminalID: "last"}})
		last <- err
	}()
	close(release)
	if err := <-first; err != nil {
		t.Error(err)
	}
	if err := <-last; err != nil {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(stored) != "[first last]" {
		t.Errorf("stored %v, want [first last]", stored)
	}
}

func (c *collector) batchCount(t *testing.T) uint64 {
	t.Helper()
	var m dto.Metric
	if err := c.metrics.batchReports.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func (c *collector) batchSum(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.metrics.batchReports.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleSum()
}

// TestPostureStored: the posture of a committed report is handed over
// (Config.PostureStored) with the receipt time the store holds, which is
// what lets the compliance evaluation skip reading it back; a report
// without posture, and one refused, hand nothing over.
func TestPostureStored(t *testing.T) {
	type handed struct {
		id string
		at time.Time
		p  *mnguardv1.Posture
	}
	var (
		mu  sync.Mutex
		got []handed
	)
	c := startCollectorWith(t, false, func(cfg *Config) {
		cfg.PostureStored = func(id string, at time.Time, p *mnguardv1.Posture) {
			mu.Lock()
			got = append(got, handed{id, at, p})
			mu.Unlock()
		}
	})
	a, res := c.terminal()
	id := res.GetTerminalId()
	ctx := t.Context()
	if _, err := a.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(1, "agent.start")}}); err != nil {
		t.Fatal(err)
	}
	bad := goodPosture(time.Now())
	bad.Interfaces = []*mnguardv1.NetworkInterface{{Name: strings.Repeat("x", 10000)}}
	if _, err := a.Report(ctx, &mnguardv1.ReportRequest{Posture: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid posture: %v", err)
	}
	p := goodPosture(time.Now())
	if _, err := a.Report(ctx, &mnguardv1.ReportRequest{Posture: p}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].id != id || !proto.Equal(got[0].p, p) {
		t.Fatalf("handed over %+v, want the one posture of %s", got, id)
	}
	_, at, err := c.st.LatestPosture(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !at.Equal(got[0].at) {
		t.Errorf("handed over as received at %s, stored at %s", got[0].at, at)
	}
}
