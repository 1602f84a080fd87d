package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/exemptions"
	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// The chaos tests (chaos_test.go, chaos_linux_test.go) break the path of
// events from a real agent to the collector's store while events flow, and
// then compare the store, event by event, with what the agents generated.
//
// The flow is a real trigger, not a test build: every tick asks the running
// agent for an offline exemption challenge over its control socket (what
// 'mnguard-agent exemption challenge' does), for a device whose serial
// numbers the tick. The agent records each challenge as an
// exemption.offline_challenge event in its spool before it answers, so an
// answer means the event is durable; its device and challenge text are the
// content the store must hold, once.

// chaosEventType is the type of the events the flow makes the agent emit.
const chaosEventType = exemptions.EventOfflineChallenge

// generated is one event the flow made an agent emit.
type generated struct {
	n         int    // the flow's own count, from 1
	device    string // VID:PID:SERIAL, unique per flow and tick
	challenge string // the challenge text the agent answered, without the dash
	// certain: the agent answered, so the event is in its spool. An
	// uncertain one was asked for but the answer never came (the agent
	// was killed meanwhile): the store may hold it once, or not at all.
	certain bool
}

// chaosFlow drives an agent's event flow at a steady rate.
type chaosFlow struct {
	a      *agent
	tag    string
	every  time.Duration
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	gen     []generated
	notRun  int // ticks when the agent was not running (no event)
	refused []string
}

// startFlow makes agent a emit one event every interval until stop. tag
// tells this flow's devices apart from any other's (four hex digits, the
// device's product ID).
func startFlow(t testing.TB, a *agent, tag string, every time.Duration) *chaosFlow {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &chaosFlow{a: a, tag: tag, every: every, cancel: cancel, done: make(chan struct{})}
	go f.run(ctx)
	t.Cleanup(f.stop)
	return f
}

func (f *chaosFlow) run(ctx context.Context) {
	defer close(f.done)
	sock := exemptions.ControlAddress(f.a.stateDir)
	tick := time.NewTicker(f.every)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n++
		dev := fmt.Sprintf("c4a0:%s:CHAOS-%s-%06d", f.tag, f.tag, n)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := exemptions.Call(cctx, sock, exemptions.Request{Op: exemptions.OpChallenge, Device: dev, DurationSeconds: 900})
		cancel()
		f.mu.Lock()
		switch {
		case err == nil:
			f.gen = append(f.gen, generated{n: n, device: dev, challenge: strings.ReplaceAll(resp.Challenge.Challenge, "-", ""), certain: true})
		case errors.Is(err, exemptions.ErrNotRunning):
			f.notRun++
		case resp.Error != "":
			// The agent refused before emitting anything.
			f.refused = append(f.refused, fmt.Sprintf("%s: %s", dev, resp.Error))
		default:
			f.gen = append(f.gen, generated{n: n, device: dev})
		}
		f.mu.Unlock()
	}
}

// stop ends the flow and waits for its last call.
func (f *chaosFlow) stop() {
	f.cancel()
	<-f.done
}

// generated returns a copy of what the flow generated so far.
func (f *chaosFlow) generated() []generated {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.gen)
}

// certain is how many events the agent confirmed so far.
func (f *chaosFlow) certain() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, g := range f.gen {
		if g.certain {
			n++
		}
	}
	return n
}

// waitMore waits until the flow has n more confirmed events than now.
func (f *chaosFlow) waitMore(t testing.TB, n int, within time.Duration) {
	t.Helper()
	want := f.certain() + n
	eventually(t, within, func() error {
		if got := f.certain(); got < want {
			return fmt.Errorf("flow %s: %d events confirmed, waiting for %d", f.tag, got, want)
		}
		return nil
	})
}

// storedEvents returns every event the agent reported for terminal id, as
// the collector's admin API lists them, page by page.
func storedEvents(t testing.TB, c *collector, id string) []*mnguardv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := chaosAdmin(t, c)
	var out []*mnguardv1.Event
	req := &mnguardv1.ListEventsRequest{TerminalId: id, Limit: 10000, PageSize: 1000}
	for pages := 0; ; pages++ {
		if pages == 100 {
			t.Fatalf("list the events of %s: more than 100 pages", id)
		}
		resp, err := cl.ListEvents(ctx, req)
		if err != nil {
			t.Fatalf("list the events of %s: %v", id, err)
		}
		for _, se := range resp.GetEvents() {
			if se.GetSource() != "" && se.GetSource() != "agent" {
				continue
			}
			out = append(out, se.GetEvent())
		}
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// chaosAdmins holds one admin client per collector: the polls reuse its
// connection (the collector limits the connections from one address).
var chaosAdmins sync.Map // *collector → mnguardv1.AdminServiceClient

func chaosAdmin(t testing.TB, c *collector) mnguardv1.AdminServiceClient {
	if cl, ok := chaosAdmins.Load(c); ok {
		return cl.(mnguardv1.AdminServiceClient)
	}
	cl := c.adminClient(t)
	t.Cleanup(func() { chaosAdmins.Delete(c) })
	chaosAdmins.Store(c, cl)
	return cl
}

// spoolContent is what a stopped agent's spool holds.
type spoolContent struct {
	lastSeq uint64
	pending map[uint64]*mnguardv1.Event
}

// readSpool opens the spool of an agent that is not running.
func readSpool(t testing.TB, a *agent) spoolContent {
	t.Helper()
	if a.proc != nil && a.proc.running() {
		t.Fatal("readSpool: the agent is still running")
	}
	sp, err := spool.Open(state.Dir(a.stateDir).Path(state.SpoolFile))
	if err != nil {
		t.Fatalf("open the agent's spool: %v", err)
	}
	defer sp.Close()
	evs, err := sp.Pending(0)
	if err != nil {
		t.Fatalf("read the agent's spool: %v", err)
	}
	sc := spoolContent{lastSeq: sp.LastSeq(), pending: map[uint64]*mnguardv1.Event{}}
	for _, e := range evs {
		sc.pending[e.GetSeq()] = e
	}
	return sc
}

// agentStatus reads the running agent's status.json.
func agentStatus(t testing.TB, a *agent) state.Status {
	t.Helper()
	st, err := state.Dir(a.stateDir).ReadStatus()
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	return st
}

// waitDelivered waits until the collector stores every event the flow
// confirmed and the agent's spool is empty.
func waitDelivered(t testing.TB, c *collector, a *agent, id string, f *chaosFlow, within time.Duration) {
	t.Helper()
	want := map[string]bool{}
	for _, g := range f.generated() {
		if g.certain {
			want[g.device] = true
		}
	}
	deadline := time.Now().Add(within)
	for {
		var missing []string
		seen := map[string]bool{}
		for _, e := range storedEvents(t, c, id) {
			if e.GetType() == chaosEventType {
				seen[e.GetAttributes()["device"]] = true
			}
		}
		for dev := range want {
			if !seen[dev] {
				missing = append(missing, dev)
			}
		}
		st := agentStatus(t, a)
		if len(missing) == 0 && st.PendingEvents == 0 {
			return
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			t.Fatalf("terminal %s: %d of %d generated events not stored within %s (e.g. %v); the agent's spool holds %d, its last error: %q",
				id, len(missing), len(want), within, missing[:min(len(missing), 5)], st.PendingEvents, st.LastError)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// chaosResult counts what verifyExactlyOnce compared.
type chaosResult struct {
	stored, generated, uncertain, uncertainStored, starts int
}

// verifyExactlyOnce compares the store with what the flow generated on a
// stopped agent (started starts times): every sequence number the agent's
// spool ever gave out is stored exactly once or is still in the spool,
// never acknowledged; no event is stored twice or out of nowhere; every
// confirmed event is stored once, with its content, in the order it was
// generated; an uncertain one at most once.
func verifyExactlyOnce(t testing.TB, c *collector, a *agent, id string, f *chaosFlow, starts int) chaosResult {
	t.Helper()
	sp := readSpool(t, a)
	stored := storedEvents(t, c, id)
	res := chaosResult{stored: len(stored)}
	bySeq := map[uint64]*mnguardv1.Event{}
	for _, e := range stored {
		if prev, dup := bySeq[e.GetSeq()]; dup {
			t.Errorf("terminal %s: seq %d stored twice: %v and %v", id, e.GetSeq(), prev, e)
			continue
		}
		bySeq[e.GetSeq()] = e
		if e.GetSeq() == 0 || e.GetSeq() > sp.lastSeq {
			t.Errorf("terminal %s: stored seq %d, but the agent's spool gave out 1 to %d", id, e.GetSeq(), sp.lastSeq)
		}
	}
	for seq := uint64(1); seq <= sp.lastSeq; seq++ {
		_, inStore := bySeq[seq]
		_, inSpool := sp.pending[seq]
		if !inStore && !inSpool {
			t.Errorf("terminal %s: event %d LOST: neither stored nor in the agent's spool", id, seq)
		}
	}
	if len(sp.pending) > 1 {
		// The collector is up at the end: at most the agent.stop event
		// may not have made it within the agent's last 2 s.
		t.Errorf("terminal %s: %d events left in the spool after a clean stop with the collector up", id, len(sp.pending))
	}
	for seq, e := range sp.pending {
		if e.GetType() != "agent.stop" {
			t.Errorf("terminal %s: event %d (%s) still in the spool after a clean stop", id, seq, e.GetType())
		}
	}

	// Content: the flow's events, by device.
	byDevice := map[string][]*mnguardv1.Event{}
	for _, e := range stored {
		switch e.GetType() {
		case chaosEventType:
			byDevice[e.GetAttributes()["device"]] = append(byDevice[e.GetAttributes()["device"]], e)
		case "agent.start":
			res.starts++
		}
	}
	known := map[string]bool{}
	var lastSeq uint64
	for _, g := range f.generated() {
		known[g.device] = true
		evs := byDevice[g.device]
		if !g.certain {
			res.uncertain++
			if len(evs) > 1 {
				t.Errorf("terminal %s: uncertain event %s stored %d times", id, g.device, len(evs))
			}
			res.uncertainStored += len(evs)
			continue
		}
		res.generated++
		if len(evs) != 1 {
			t.Errorf("terminal %s: generated event %d (%s) stored %d times, want once", id, g.n, g.device, len(evs))
			continue
		}
		e := evs[0]
		if got := e.GetAttributes()["challenge"]; got != g.challenge {
			t.Errorf("terminal %s: event %s: challenge %q stored, the agent answered %q", id, g.device, got, g.challenge)
		}
		if got := e.GetAttributes()["duration"]; got != "15m0s" {
			t.Errorf("terminal %s: event %s: duration %q stored, want 15m0s", id, g.device, got)
		}
		if !strings.Contains(e.GetMessage(), g.device) {
			t.Errorf("terminal %s: event %s: message %q does not name the device", id, g.device, e.GetMessage())
		}
		if e.GetSeq() <= lastSeq {
			t.Errorf("terminal %s: generated event %d has seq %d, not after the one before it (%d)", id, g.n, e.GetSeq(), lastSeq)
		}
		lastSeq = e.GetSeq()
	}
	for dev, evs := range byDevice {
		if !known[dev] && strings.Contains(dev, ":"+f.tag+":") {
			t.Errorf("terminal %s: %d stored events for %s, which the flow never asked for", id, len(evs), dev)
		}
	}
	if res.starts != starts {
		t.Errorf("terminal %s: %d agent.start events stored, the agent was started %d times", id, res.starts, starts)
	}
	if res.generated == 0 {
		t.Errorf("terminal %s: the flow generated nothing", id)
	}
	return res
}

// chaosAgent is a running agent with its event flow.
type chaosAgent struct {
	a      *agent
	id     string
	flow   *chaosFlow
	starts int
}

// chaosAgents enrolls and starts n agents with collector c, each with an
// event flow of one event every every; tags number them from base.
func chaosAgents(t *testing.T, c *collector, n, base int, every time.Duration) []*chaosAgent {
	t.Helper()
	var out []*chaosAgent
	for i := range n {
		a, id := enrolledAgent(t, c, "60s")
		a.start(t)
		c.waitReported(t, id, 20*time.Second)
		ca := &chaosAgent{a: a, id: id, starts: 1}
		ca.flow = startFlow(t, a, fmt.Sprintf("%04x", base+i), every)
		out = append(out, ca)
	}
	return out
}

// kill ends the agent with SIGKILL: no goodbye, no final report.
func (ca *chaosAgent) kill(t *testing.T) {
	t.Helper()
	if err := ca.a.proc.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill the agent: %v", err)
	}
	<-ca.a.proc.done
}

// restart starts the agent again on its state directory.
func (ca *chaosAgent) restart(t *testing.T) {
	t.Helper()
	ca.a.start(t)
	ca.starts++
}

// storedUnacked is how many events in the spool of the stopped agent the
// collector has stored: a report it committed whose answer the agent never
// read.
func storedUnacked(t *testing.T, c *collector, ca *chaosAgent) int {
	t.Helper()
	sp := readSpool(t, ca.a)
	n := 0
	for _, e := range storedEvents(t, c, ca.id) {
		if _, ok := sp.pending[e.GetSeq()]; ok {
			n++
		}
	}
	return n
}

// finishChaos stops the flows, waits until every confirmed event is stored,
// stops the agents cleanly and compares the store with what they
// generated.
func finishChaos(t *testing.T, c *collector, agents []*chaosAgent) {
	t.Helper()
	for _, ca := range agents {
		ca.flow.stop()
	}
	for _, ca := range agents {
		waitDelivered(t, c, ca.a, ca.id, ca.flow, 90*time.Second)
	}
	for _, ca := range agents {
		ca.a.proc.stop(t)
	}
	for _, ca := range agents {
		r := verifyExactlyOnce(t, c, ca.a, ca.id, ca.flow, ca.starts)
		ca.flow.mu.Lock()
		notRun, refused := ca.flow.notRun, ca.flow.refused
		ca.flow.mu.Unlock()
		t.Logf("terminal %s: %d events stored (%d agent starts), %d generated and confirmed, all stored once; %d asked while the agent died (%d of them stored); %d ticks while it was down",
			ca.id, r.stored, r.starts, r.generated, r.uncertain, r.uncertainStored, notRun)
		if len(refused) > 0 {
			t.Errorf("terminal %s: the agent refused %d challenges, e.g. %s", ca.id, len(refused), refused[0])
		}
	}
}
