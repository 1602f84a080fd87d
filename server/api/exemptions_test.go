package api

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var (
	stick    = &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432"}
	stick2   = &mnguardv1.DeviceIdentity{VendorId: "0951", ProductId: "1666", Serial: "E0D55EA573F6"}
	noSerDev = &mnguardv1.DeviceIdentity{VendorId: "058f", ProductId: "6387"}
)

// pushes reads a Subscribe stream in the background.
type pushes struct {
	msgs chan *mnguardv1.SubscribeResponse
	err  chan error
}

// subscribe opens a Subscribe stream of the agent; it ends with the test.
func (c *collector) subscribe(agent mnguardv1.AgentServiceClient) *pushes {
	c.t.Helper()
	ctx, cancel := context.WithCancel(c.t.Context())
	c.t.Cleanup(cancel)
	st, err := agent.Subscribe(ctx, &mnguardv1.SubscribeRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	p := &pushes{msgs: make(chan *mnguardv1.SubscribeResponse, 64), err: make(chan error, 1)}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				p.err <- err
				return
			}
			select {
			case p.msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

// next returns the next message.
func (p *pushes) next(t *testing.T, within time.Duration) *mnguardv1.SubscribeResponse {
	t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case err := <-p.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(within):
		t.Fatalf("no message within %s", within)
	}
	return nil
}

// nextSet returns the next exemption set, skipping policy and heartbeats.
func (p *pushes) nextSet(t *testing.T, within time.Duration) *mnguardv1.ExemptionSet {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m := p.next(t, time.Until(deadline))
		if set := m.GetExemptions(); set != nil {
			return set
		}
	}
}

// quiet fails if an exemption set arrives within d.
func (p *pushes) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-p.msgs:
			if m.GetExemptions() != nil {
				t.Fatalf("unexpected exemption set %v", m.GetExemptions())
			}
		case err := <-p.err:
			t.Fatalf("stream ended: %v", err)
		case <-deadline:
			return
		}
	}
}

// verified checks every token of the set with the public key the terminal
// got at enrollment and returns the exemptions by ID.
func verified(t *testing.T, term *mnguardv1.EnrollResponse, set *mnguardv1.ExemptionSet) map[string]*mnguardv1.Exemption {
	t.Helper()
	out := map[string]*mnguardv1.Exemption{}
	for _, se := range set.GetExemptions() {
		e, err := exemption.Verify(ed25519.PublicKey(term.GetExemptionPublicKey()), se, term.GetTerminalId(), time.Now())
		if err != nil {
			t.Fatalf("token of the set: %v", err)
		}
		out[e.GetId()] = e
	}
	return out
}

func keys(m map[string]*mnguardv1.Exemption) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// serverEvents returns the terminal's server events of the type.
func (c *collector) serverEvents(terminalID, typ string) []*mnguardv1.Event {
	c.t.Helper()
	evs, err := c.st.Events(c.t.Context(), terminalID, 1000)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []*mnguardv1.Event
	for _, e := range evs {
		if e.Source != "server" || e.Type != typ {
			continue
		}
		pe := &mnguardv1.Event{}
		if err := proto.Unmarshal(e.Data, pe); err != nil {
			c.t.Fatal(err)
		}
		out = append(out, pe)
	}
	return out
}

// audited returns the audit entries with the action.
func (c *collector) audited(action string) []store.AuditEntry {
	c.t.Helper()
	es, err := c.st.AuditLog(c.t.Context(), 1000)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []store.AuditEntry
	for _, e := range es {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

func issueReq(terminalID string, d *mnguardv1.DeviceIdentity) *mnguardv1.IssueExemptionRequest {
	return &mnguardv1.IssueExemptionRequest{TerminalId: terminalID, Device: d, Reason: "copy the council minutes", Ticket: "INC-4711"}
}

// TestExemptionPushedAtOnce: an issued exemption reaches the live stream
// within a second as a token the enrollment's key verifies; every push is
// the whole set; a new stream starts with the set in force; a revocation
// reaches the stream within a second.
func TestExemptionPushedAtOnce(t *testing.T) {
	c := startCollector(t, false)
	help, hctx := c.admin(store.RoleHelpdesk)
	agent, term := c.terminal()
	tid := term.GetTerminalId()

	s1 := c.subscribe(agent)
	first := s1.next(t, 5*time.Second)
	if set := first.GetExemptions(); set == nil || len(set.GetExemptions()) != 0 {
		t.Fatalf("first message %v, want an empty exemption set", first)
	}
	if m := s1.next(t, 5*time.Second); m.GetPolicy() == nil {
		t.Fatalf("second message %v, want the policy", m)
	}

	start := time.Now()
	res, err := help.IssueExemption(hctx, issueReq(tid, stick))
	if err != nil {
		t.Fatal(err)
	}
	set := s1.nextSet(t, time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("issue to push took %s, want under 1s", took)
	}
	got := verified(t, term, set)
	rec := res.GetExemption()
	id := rec.GetExemption().GetId()
	e := got[id]
	if len(got) != 1 || e == nil {
		t.Fatalf("pushed set %v, want exemption %s", keys(got), id)
	}
	if !exemption.SameDevice(e.GetDevice(), stick) || e.GetDurationSeconds() != 3600 || e.GetIssuer() != "helpdesk-op (helpdesk)" ||
		e.GetReason() != "copy the council minutes" || e.GetTicket() != "INC-4711" || e.GetAllowNoSerial() ||
		e.GetNotAfter().AsTime().Sub(e.GetNotBefore().AsTime()) != time.Hour || !proto.Equal(e, rec.GetExemption()) {
		t.Errorf("pushed exemption %v\nrecord %v", e, rec.GetExemption())
	}
	if !res.GetDelivered() || rec.GetState() != "active" || rec.GetSource() != "online" || rec.GetDeliveredAt() == nil {
		t.Errorf("IssueExemption = %v", res)
	}

	// A second exemption: the push carries both.
	res2, err := help.IssueExemption(hctx, issueReq(tid, stick2))
	if err != nil {
		t.Fatal(err)
	}
	id2 := res2.GetExemption().GetExemption().GetId()
	if got := keys(verified(t, term, s1.nextSet(t, time.Second))); !slices.Equal(got, keys(map[string]*mnguardv1.Exemption{id: nil, id2: nil})) {
		t.Fatalf("second push %v, want %s and %s", got, id, id2)
	}

	// A new stream starts with the set in force.
	s2 := c.subscribe(agent)
	m := s2.next(t, 5*time.Second)
	if m.GetExemptions() == nil || len(verified(t, term, m.GetExemptions())) != 2 {
		t.Fatalf("reconnect: first message %v, want the set of 2", m)
	}

	// Revocation: both streams get the set without it within a second.
	start = time.Now()
	rv, err := help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: id, Reason: "copy done"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*pushes{s1, s2} {
		got := verified(t, term, s.nextSet(t, time.Second))
		if _, still := got[id]; still || len(got) != 1 {
			t.Errorf("after revoke: set %v, want only %s", keys(got), id2)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("revoke to push took %s, want under 1s", took)
	}
	if r := rv.GetExemption(); r.GetState() != "revoked" || r.GetRevokedBy() != "helpdesk-op (helpdesk)" || r.GetRevokeReason() != "copy done" || r.GetRevokedAt() == nil {
		t.Errorf("RevokeExemption = %v", r)
	}
	_, err = help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: id})
	wantCode(t, err, codes.FailedPrecondition, "revoked already")
	_, err = help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: uuid.NewString()})
	wantCode(t, err, codes.NotFound, "not found")
	_, err = help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: "ex-1"})
	wantCode(t, err, codes.InvalidArgument, "not an exemption ID")
	_, err = help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: id2, Reason: "a\nb"})
	wantCode(t, err, codes.InvalidArgument, "reason: contains control character")

	// Server events: each exemption delivered once, whatever the streams.
	if evs := c.serverEvents(tid, EventExemptionIssued); len(evs) != 2 {
		t.Errorf("%d issued events, want 2", len(evs))
	} else {
		a := evs[1].GetAttributes() // oldest last
		if a["id"] != id || a["device"] != exemption.FormatDevice(stick) || a["duration"] != "1h0m0s" || a["ticket"] != "INC-4711" ||
			a["source"] != "online" || a["issuer"] != "helpdesk-op (helpdesk)" {
			t.Errorf("issued event attributes %v", a)
		}
	}
	if evs := c.serverEvents(tid, EventExemptionDelivered); len(evs) != 2 {
		t.Errorf("%d delivered events, want 2 (one per exemption)", len(evs))
	}
	if evs := c.serverEvents(tid, EventExemptionRevoked); len(evs) != 1 || evs[0].GetAttributes()["id"] != id ||
		evs[0].GetAttributes()["revoke_reason"] != "copy done" || evs[0].GetAttributes()["ticket"] != "INC-4711" {
		t.Errorf("revoked events %v", evs)
	}
	if es := c.audited("exemption.issue"); len(es) != 2 || !strings.Contains(es[0].Actor, "helpdesk-op (helpdesk, token tok-helpdesk)") ||
		!strings.Contains(es[1].Detail, `ticket "INC-4711"`) || es[1].Target != id {
		t.Errorf("issue audit entries %+v", es)
	}
	if es := c.audited("exemption.revoke"); len(es) != 1 || es[0].Target != id || !strings.Contains(es[0].Detail, "copy done") {
		t.Errorf("revoke audit entries %+v", es)
	}
}

// TestExemptionDeliveredOnConnect: issued while the terminal is away, an
// exemption is the first thing its next stream carries.
func TestExemptionDeliveredOnConnect(t *testing.T) {
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	agent, term := c.terminal()
	res, err := admin.IssueExemption(actx, issueReq(term.GetTerminalId(), stick))
	if err != nil {
		t.Fatal(err)
	}
	if res.GetDelivered() || res.GetExemption().GetDeliveredAt() != nil {
		t.Errorf("no stream, yet delivered: %v", res)
	}
	if n := len(c.serverEvents(term.GetTerminalId(), EventExemptionDelivered)); n != 0 {
		t.Errorf("%d delivered events before any stream", n)
	}
	s := c.subscribe(agent)
	m := s.next(t, 5*time.Second)
	if got := verified(t, term, m.GetExemptions()); m.GetExemptions() == nil || got[res.GetExemption().GetExemption().GetId()] == nil {
		t.Fatalf("first message %v, want the set with the exemption", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(c.serverEvents(term.GetTerminalId(), EventExemptionDelivered)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no exemption.delivered event")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec, err := c.st.Exemption(t.Context(), res.GetExemption().GetExemption().GetId())
	if err != nil || rec.DeliveredAt.IsZero() {
		t.Errorf("delivered_at not recorded: %+v, %v", rec, err)
	}
}

// TestExemptionConcurrentIssues: however issues race, the last set a
// stream gets holds every exemption.
func TestExemptionConcurrentIssues(t *testing.T) {
	c := startCollector(t, false)
	help, hctx := c.admin(store.RoleHelpdesk)
	agent, term := c.terminal()
	s := c.subscribe(agent)
	s.nextSet(t, 5*time.Second)
	const n = 8
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids []string
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: fmt.Sprintf("SN%04d", i)}
			res, err := help.IssueExemption(hctx, issueReq(term.GetTerminalId(), d))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids = append(ids, res.GetExemption().GetExemption().GetId())
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(ids)
	var last []string
	deadline := time.Now().Add(2 * time.Second)
	for !slices.Equal(last, ids) {
		last = keys(verified(t, term, s.nextSet(t, time.Until(deadline))))
	}
	// A stream signalled twice may send the set once more, never less.
	settle := time.After(200 * time.Millisecond)
	for {
		select {
		case m := <-s.msgs:
			if set := m.GetExemptions(); set != nil {
				if got := keys(verified(t, term, set)); !slices.Equal(got, ids) {
					t.Fatalf("a later set %v lost exemptions of %v", got, ids)
				}
			}
		case err := <-s.err:
			t.Fatalf("stream ended: %v", err)
		case <-settle:
			return
		}
	}
}

// TestExemptionRoles: the helpdesk and admins issue and revoke; auditors
// only list.
func TestExemptionRoles(t *testing.T) {
	c := startCollector(t, false)
	_, term := c.terminal()
	tid := term.GetTerminalId()
	calls := []struct {
		name    string
		allowed []string
		call    func(mnguardv1.AdminServiceClient, context.Context) error
	}{
		{"IssueExemption", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.IssueExemption(ctx, issueReq(tid, stick))
			return err
		}},
		{"RevokeExemption", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.RevokeExemption(ctx, &mnguardv1.RevokeExemptionRequest{Id: uuid.NewString()})
			return err
		}},
		{"IssueOfflineExemptionCode", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.IssueOfflineExemptionCode(ctx, &mnguardv1.IssueOfflineExemptionCodeRequest{TerminalId: tid, Challenge: "ABCDE-FGHJK", Device: stick, Reason: "r", Ticket: "t"})
			return err
		}},
		{"ListExemptions", allRoles, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.ListExemptions(ctx, &mnguardv1.ListExemptionsRequest{})
			return err
		}},
	}
	for _, role := range allRoles {
		client, ctx := c.admin(role)
		for _, call := range calls {
			t.Run(role+"/"+call.name, func(t *testing.T) {
				err := call.call(client, ctx)
				allowed := slices.Contains(call.allowed, role)
				if got := status.Code(err) == codes.PermissionDenied; got == allowed {
					t.Errorf("%s as %s: %v (allowed %v)", call.name, role, err, allowed)
				}
			})
		}
	}
	_, err := mnguardv1.NewAdminServiceClient(c.dial(nil)).IssueExemption(t.Context(), issueReq(tid, stick))
	wantCode(t, err, codes.Unauthenticated, "API token required")
	// Only the helpdesk's and the admin's exemptions were stored.
	if es, err := c.st.Exemptions(t.Context(), "", time.Time{}, 0); err != nil || len(es) != 2 {
		t.Errorf("%d exemptions stored (%v), want 2", len(es), err)
	}
}

func TestIssueExemptionValidation(t *testing.T) {
	c := startCollectorWith(t, false, func(cfg *Config) {
		cfg.ExemptionMaxDuration, cfg.ExemptionDefaultDuration = 4*time.Hour, 2*time.Hour
	})
	admin, actx := c.admin(store.RoleAdmin)
	help, hctx := c.admin(store.RoleHelpdesk)
	_, term := c.terminal()
	_, gone := c.terminal()
	tid := term.GetTerminalId()
	if _, err := admin.RevokeTerminal(actx, &mnguardv1.RevokeTerminalRequest{Id: gone.GetTerminalId(), Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(r *mnguardv1.IssueExemptionRequest)) *mnguardv1.IssueExemptionRequest {
		r := issueReq(tid, proto.Clone(stick).(*mnguardv1.DeviceIdentity))
		f(r)
		return r
	}
	for _, tt := range []struct {
		name string
		req  *mnguardv1.IssueExemptionRequest
		code codes.Code
		want string
	}{
		{"no serial without override", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device = noSerDev }), codes.InvalidArgument,
			"device 058f:6387: has no serial number: it cannot be told apart from its twins"},
		{"over the maximum", edit(func(r *mnguardv1.IssueExemptionRequest) { r.DurationSeconds = 4*3600 + 1 }), codes.InvalidArgument,
			"duration_seconds: 14401 (4h0m1s) is outside 1m0s to 4h0m0s"},
		{"under a minute", edit(func(r *mnguardv1.IssueExemptionRequest) { r.DurationSeconds = 59 }), codes.InvalidArgument, "duration_seconds: 59"},
		{"unknown terminal", edit(func(r *mnguardv1.IssueExemptionRequest) { r.TerminalId = "9b5f7a4e-3c55-4a8e-9d7e-1f2a3b4c5d6e" }), codes.NotFound, "not found"},
		{"revoked terminal", edit(func(r *mnguardv1.IssueExemptionRequest) { r.TerminalId = gone.GetTerminalId() }), codes.FailedPrecondition, "is revoked"},
		{"bad terminal ID", edit(func(r *mnguardv1.IssueExemptionRequest) { r.TerminalId = "term-01" }), codes.InvalidArgument, "not a terminal ID"},
		{"no terminal", edit(func(r *mnguardv1.IssueExemptionRequest) { r.TerminalId = "" }), codes.InvalidArgument, "terminal ID missing"},
		{"no device", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device = nil }), codes.InvalidArgument, "device: missing"},
		{"uppercase vendor", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device.VendorId = "0BDA" }), codes.InvalidArgument,
			`device: vendor ID "0BDA": want four lowercase hex digits`},
		{"short product", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device.ProductId = "55" }), codes.InvalidArgument, "product ID"},
		{"serial with space", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device.Serial = "AB CD" }), codes.InvalidArgument, "printable ASCII without spaces"},
		{"long serial", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device.Serial = strings.Repeat("S", 127) }), codes.InvalidArgument, "serial is 127 bytes"},
		{"empty reason", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Reason = "" }), codes.InvalidArgument, "reason: required (--reason)"},
		{"blank reason", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Reason = "  " }), codes.InvalidArgument, "reason: required"},
		{"empty ticket", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Ticket = "" }), codes.InvalidArgument, "ticket: required (--ticket)"},
		{"control in reason", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Reason = "copy\x1b[31m" }), codes.InvalidArgument, "reason: contains control character U+001B"},
		{"newline in ticket", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Ticket = "INC-1\nINC-2" }), codes.InvalidArgument, "ticket: contains control character U+000A"},
		{"long reason", edit(func(r *mnguardv1.IssueExemptionRequest) { r.Reason = strings.Repeat("r", 513) }), codes.InvalidArgument, "reason: longer than 512 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := help.IssueExemption(hctx, tt.req)
			wantCode(t, err, tt.code, tt.want)
		})
	}
	if es, err := c.st.Exemptions(t.Context(), "", time.Time{}, 0); err != nil || len(es) != 0 {
		t.Fatalf("refused requests stored %d exemptions (%v)", len(es), err)
	}
	if n := len(c.audited("exemption.issue")) + len(c.serverEvents(tid, EventExemptionIssued)); n != 0 {
		t.Fatalf("refused requests left %d audit entries and events", n)
	}

	// Accepted: the default duration, exactly the maximum, 512 bytes of
	// reason, and a device without serial with the recorded override.
	res, err := help.IssueExemption(hctx, issueReq(tid, stick))
	if err != nil || res.GetExemption().GetExemption().GetDurationSeconds() != 2*3600 {
		t.Errorf("default duration: %v, %v; want 2h", res, err)
	}
	if _, err := help.IssueExemption(hctx, edit(func(r *mnguardv1.IssueExemptionRequest) {
		r.DurationSeconds, r.Reason = 4*3600, strings.Repeat("理", 170)
	})); err != nil {
		t.Errorf("the maximum: %v", err)
	}
	res, err = help.IssueExemption(hctx, edit(func(r *mnguardv1.IssueExemptionRequest) { r.Device, r.AllowNoSerial = noSerDev, true }))
	if err != nil {
		t.Fatal(err)
	}
	id := res.GetExemption().GetExemption().GetId()
	rec, err := c.st.Exemption(t.Context(), id)
	if err != nil || !rec.AllowNoSerial || !res.GetExemption().GetExemption().GetAllowNoSerial() {
		t.Errorf("override not recorded: %+v, %v", rec, err)
	}
	se := &mnguardv1.SignedExemption{}
	if err := proto.Unmarshal(rec.Token, se); err != nil {
		t.Fatal(err)
	}
	if e, err := exemption.Verify(ed25519.PublicKey(term.GetExemptionPublicKey()), se, tid, time.Now()); err != nil || !e.GetAllowNoSerial() {
		t.Errorf("token without the override: %v, %v", e, err)
	}
	if es := c.audited("exemption.issue"); len(es) != 3 || es[0].Target != id || !strings.Contains(es[0].Detail, "allow_no_serial") {
		t.Errorf("audit of the override: %+v", es)
	}
	if evs := c.serverEvents(tid, EventExemptionIssued); len(evs) != 3 || evs[0].GetAttributes()["allow_no_serial"] != "true" {
		t.Errorf("event of the override: %v", evs)
	}
	// The override with a serial number means nothing and is not recorded.
	res, err = help.IssueExemption(hctx, edit(func(r *mnguardv1.IssueExemptionRequest) { r.AllowNoSerial = true }))
	if err != nil || res.GetExemption().GetExemption().GetAllowNoSerial() {
		t.Errorf("override with a serial: %v, %v", res, err)
	}
}

// TestIssueExemptionUnconfigured: without a signing key there are no
// exemptions to issue.
func TestIssueExemptionUnconfigured(t *testing.T) {
	c := startCollectorWith(t, false, func(cfg *Config) { cfg.ExemptionSigner = nil })
	admin, actx := c.admin(store.RoleAdmin)
	_, term := c.terminal()
	_, err := admin.IssueExemption(actx, issueReq(term.GetTerminalId(), stick))
	wantCode(t, err, codes.Unimplemented, "no exemption signing key")
}

// sameTag returns two devices of one model whose tags are equal.
func sameTag(t *testing.T) (a, b *mnguardv1.DeviceIdentity) {
	t.Helper()
	seen := map[uint16]*mnguardv1.DeviceIdentity{}
	for i := 0; i < 1<<20; i++ {
		d := &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5567", Serial: fmt.Sprintf("TWIN%d", i)}
		tag := exemption.DeviceTag(d)
		if o := seen[tag]; o != nil {
			return o, d
		}
		seen[tag] = d
	}
	t.Fatal("no two devices share a tag")
	return nil, nil
}

// otherTag returns a device whose tag differs from d's.
func otherTag(d *mnguardv1.DeviceIdentity) *mnguardv1.DeviceIdentity {
	for i := 0; ; i++ {
		o := &mnguardv1.DeviceIdentity{VendorId: d.GetVendorId(), ProductId: d.GetProductId(), Serial: fmt.Sprintf("OTHER%d", i)}
		if exemption.DeviceTag(o) != exemption.DeviceTag(d) {
			return o
		}
	}
}

// reportDevices reports a posture whose media section lists the devices.
func reportDevices(t *testing.T, agent mnguardv1.AgentServiceClient, devs ...*mnguardv1.DeviceIdentity) {
	t.Helper()
	p := goodPosture(time.Now())
	p.Media = &mnguardv1.MediaPosture{Mode: "enforce", Healthy: true}
	for i, d := range devs {
		p.Media.Devices = append(p.Media.Devices, &mnguardv1.RemovableDevice{
			Name: fmt.Sprintf("sd%c", 'b'+i), Bus: "usb", State: "read-only",
			VendorId: d.GetVendorId(), ProductId: d.GetProductId(), Serial: d.GetSerial(),
		})
	}
	// An optical drive without USB IDs is never a match.
	p.Media.Devices = append(p.Media.Devices, &mnguardv1.RemovableDevice{Name: "sr0", Bus: "optical", State: "read-only"})
	if _, err := agent.Report(t.Context(), &mnguardv1.ReportRequest{Posture: p}); err != nil {
		t.Fatal(err)
	}
}

func challenge(t *testing.T, d *mnguardv1.DeviceIdentity, dur time.Duration) string {
	t.Helper()
	c, err := exemption.NewChallenge(d, dur)
	if err != nil {
		t.Fatal(err)
	}
	return exemption.Format(c.Text)
}

func TestOfflineExemptionCode(t *testing.T) {
	c := startCollectorWith(t, false, func(cfg *Config) { cfg.ExemptionMaxDuration = 4 * time.Hour })
	help, hctx := c.admin(store.RoleHelpdesk)
	agent, term := c.terminal()
	tid := term.GetTerminalId()
	twinA, twinB := sameTag(t)
	reportDevices(t, agent, stick, twinA, twinB, noSerDev, twinA)
	s := c.subscribe(agent)
	s.nextSet(t, 5*time.Second)

	req := func(ch string, d *mnguardv1.DeviceIdentity) *mnguardv1.IssueOfflineExemptionCodeRequest {
		return &mnguardv1.IssueOfflineExemptionCodeRequest{TerminalId: tid, Challenge: ch, Device: d, Reason: "minutes for the mayor", Ticket: "INC-99"}
	}
	var codesIssued []string

	// The device found from the posture by the challenge's tag; the code
	// is what the terminal computes with its own offline key.
	ch := challenge(t, stick, 90*time.Minute)
	res, err := help.IssueOfflineExemptionCode(hctx, req(strings.ToLower(strings.ReplaceAll(ch, "-", "")), nil))
	if err != nil {
		t.Fatal(err)
	}
	want, err := exemption.ResponseCode(term.GetOfflineKey(), tid, ch, stick)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetCode() != exemption.Format(want) {
		t.Errorf("code %s, want %s", res.GetCode(), exemption.Format(want))
	}
	if ok, err := exemption.VerifyResponse(term.GetOfflineKey(), tid, ch, stick, res.GetCode()); !ok || err != nil {
		t.Errorf("the agent's check of the code: %v, %v", ok, err)
	}
	codesIssued = append(codesIssued, res.GetCode(), want)
	rec := res.GetExemption()
	if rec.GetSource() != "offline" || rec.GetState() != "active" || !exemption.SameDevice(rec.GetExemption().GetDevice(), stick) ||
		rec.GetExemption().GetDurationSeconds() != 90*60 || rec.GetExemption().GetIssuer() != "helpdesk-op (helpdesk)" {
		t.Errorf("record %v", rec)
	}
	// Each challenge once, however it is typed.
	_, err = help.IssueOfflineExemptionCode(hctx, req(ch, nil))
	wantCode(t, err, codes.AlreadyExists, "answered already")
	_, err = help.IssueOfflineExemptionCode(hctx, req(ch, stick))
	wantCode(t, err, codes.AlreadyExists, "each code works once")

	// The device given, matching the tag: also a device the terminal never
	// reported.
	ch2 := challenge(t, stick2, 15*time.Minute)
	res2, err := help.IssueOfflineExemptionCode(hctx, req(ch2, stick2))
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := exemption.ResponseCode(term.GetOfflineKey(), tid, ch2, stick2); res2.GetCode() != exemption.Format(want) {
		t.Errorf("code for the given device %s, want %s", res2.GetCode(), exemption.Format(want))
	}
	codesIssued = append(codesIssued, res2.GetCode())

	// Twins by tag: give the device.
	chTwin := challenge(t, twinB, time.Hour)
	_, err = help.IssueOfflineExemptionCode(hctx, req(chTwin, nil))
	wantCode(t, err, codes.FailedPrecondition, "2 devices the terminal reported match the challenge")
	if res, err := help.IssueOfflineExemptionCode(hctx, req(chTwin, twinB)); err != nil {
		t.Errorf("twin given: %v", err)
	} else {
		codesIssued = append(codesIssued, res.GetCode())
	}

	for _, tt := range []struct {
		name string
		req  *mnguardv1.IssueOfflineExemptionCodeRequest
		code codes.Code
		want string
	}{
		{"tag not reported", req(challenge(t, stick2, time.Hour), nil), codes.FailedPrecondition,
			"the terminal has not reported a device with this tag: give --device"},
		{"device of another tag", req(challenge(t, stick, time.Hour), otherTag(stick)), codes.InvalidArgument,
			"is not the device the challenge names"},
		{"no serial reported, no override", req(challenge(t, noSerDev, time.Hour), nil), codes.InvalidArgument, "058f:6387: has no serial number"},
		{"no serial given, no override", req(challenge(t, noSerDev, time.Hour), noSerDev), codes.InvalidArgument, "allow_no_serial"},
		{"longer than the maximum", req(challenge(t, stick, 5*time.Hour), nil), codes.InvalidArgument,
			"it asks for 5h0m0s, more than the collector's maximum 4h0m0s"},
		{"malformed", req("ABCDE-FGHJ", nil), codes.InvalidArgument, "challenge: malformed code: 9 characters, want 10"},
		{"foreign characters", req("ABCDE-FGHJ!", nil), codes.InvalidArgument, "malformed code"},
		{"control characters", req("ABCDE\n-FGHJK", nil), codes.InvalidArgument, "challenge: contains control character"},
		{"bad device", req(challenge(t, stick, time.Hour), &mnguardv1.DeviceIdentity{VendorId: "781", ProductId: "5581", Serial: "x"}), codes.InvalidArgument, "vendor ID"},
		{"no reason", func() *mnguardv1.IssueOfflineExemptionCodeRequest {
			r := req(challenge(t, stick, time.Hour), nil)
			r.Reason = ""
			return r
		}(), codes.InvalidArgument, "reason: required"},
		{"no ticket", func() *mnguardv1.IssueOfflineExemptionCodeRequest {
			r := req(challenge(t, stick, time.Hour), nil)
			r.Ticket = ""
			return r
		}(), codes.InvalidArgument, "ticket: required"},
		{"unknown terminal", func() *mnguardv1.IssueOfflineExemptionCodeRequest {
			r := req(challenge(t, stick, time.Hour), nil)
			r.TerminalId = uuid.NewString()
			return r
		}(), codes.NotFound, "not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := help.IssueOfflineExemptionCode(hctx, tt.req)
			wantCode(t, err, tt.code, tt.want)
		})
	}

	// A device without serial, with the override: recorded.
	chNo := challenge(t, noSerDev, time.Hour)
	r := req(chNo, nil)
	r.AllowNoSerial = true
	resNo, err := help.IssueOfflineExemptionCode(hctx, r)
	if err != nil {
		t.Fatal(err)
	}
	codesIssued = append(codesIssued, resNo.GetCode())
	if !resNo.GetExemption().GetExemption().GetAllowNoSerial() {
		t.Errorf("override not recorded: %v", resNo.GetExemption())
	}

	es, err := c.st.Exemptions(t.Context(), tid, time.Time{}, 0)
	if err != nil || len(es) != 4 {
		t.Fatalf("%d exemptions stored (%v), want 4", len(es), err)
	}
	// Offline exemptions are never pushed, nor revoked from here.
	s.quiet(t, 100*time.Millisecond)
	_, err = help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: rec.GetExemption().GetId()})
	wantCode(t, err, codes.FailedPrecondition, "offline code")

	evs := c.serverEvents(tid, EventExemptionOfflineIssued)
	if len(evs) != 4 {
		t.Fatalf("%d offline_issued events, want 4", len(evs))
	}
	if a := evs[3].GetAttributes(); a["id"] != rec.GetExemption().GetId() || a["device"] != exemption.FormatDevice(stick) ||
		a["duration"] != "1h30m0s" || a["ticket"] != "INC-99" || a["source"] != "offline" || a["challenge"] != ch {
		t.Errorf("offline_issued attributes %v", a)
	}
	audit := c.audited("exemption.offline_code")
	if len(audit) != 4 || !strings.Contains(audit[3].Actor, "helpdesk-op") || audit[3].Target != rec.GetExemption().GetId() {
		t.Errorf("audit %+v", audit)
	}
	// The codes are in no audit entry, event or log line of the store.
	all, _ := c.st.AuditLog(t.Context(), 1000)
	stored, _ := c.st.Events(t.Context(), tid, 1000)
	for _, code := range codesIssued {
		for _, form := range []string{code, strings.ReplaceAll(code, "-", "")} {
			for _, e := range all {
				if strings.Contains(e.Actor+e.Target+e.Detail, form) {
					t.Errorf("audit entry %s holds a code", e.Action)
				}
			}
			for _, e := range stored {
				if strings.Contains(e.Message, form) || strings.Contains(string(e.Data), form) {
					t.Errorf("event %s holds a code", e.Type)
				}
			}
		}
	}
}

// TestOfflineExemptionNoPosture: a terminal that never reported must be
// told the device.
func TestOfflineExemptionNoPosture(t *testing.T) {
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	_, term := c.terminal()
	_, err := admin.IssueOfflineExemptionCode(actx, &mnguardv1.IssueOfflineExemptionCodeRequest{
		TerminalId: term.GetTerminalId(), Challenge: challenge(t, stick, time.Hour), Reason: "r", Ticket: "t",
	})
	wantCode(t, err, codes.FailedPrecondition, "give --device")
	// An empty device message is no device.
	_, err = admin.IssueOfflineExemptionCode(actx, &mnguardv1.IssueOfflineExemptionCodeRequest{
		TerminalId: term.GetTerminalId(), Challenge: challenge(t, stick, time.Hour), Device: &mnguardv1.DeviceIdentity{}, Reason: "r", Ticket: "t",
	})
	wantCode(t, err, codes.FailedPrecondition, "give --device")
	if _, err := admin.RevokeTerminal(actx, &mnguardv1.RevokeTerminalRequest{Id: term.GetTerminalId()}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.IssueOfflineExemptionCode(actx, &mnguardv1.IssueOfflineExemptionCodeRequest{
		TerminalId: term.GetTerminalId(), Challenge: challenge(t, stick, time.Hour), Device: stick, Reason: "r", Ticket: "t",
	})
	wantCode(t, err, codes.FailedPrecondition, "is revoked")
}

// TestListExemptions: filters and states; expired exemptions are listed
// but never pushed.
func TestListExemptions(t *testing.T) {
	c := startCollector(t, false)
	help, hctx := c.admin(store.RoleHelpdesk)
	auditor, audctx := c.admin(store.RoleAuditor)
	agent1, term1 := c.terminal()
	_, term2 := c.terminal()
	t1, t2 := term1.GetTerminalId(), term2.GetTerminalId()

	issue := func(tid string, d *mnguardv1.DeviceIdentity) string {
		t.Helper()
		res, err := help.IssueExemption(hctx, issueReq(tid, d))
		if err != nil {
			t.Fatal(err)
		}
		return res.GetExemption().GetExemption().GetId()
	}
	active := issue(t1, stick)
	revoked := issue(t1, stick2)
	other := issue(t2, stick)
	if _, err := help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: revoked, Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	// An exemption that ended an hour ago, with a valid token.
	past := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	expired := uuid.NewString()
	ex := &mnguardv1.Exemption{
		Id: expired, TerminalId: t1, Device: stick, NotBefore: timestamppb.New(past), NotAfter: timestamppb.New(past.Add(time.Hour)),
		DurationSeconds: 3600, Issuer: "helpdesk-op (helpdesk)", Reason: "old", Ticket: "INC-1", IssuedAt: timestamppb.New(past),
	}
	se, err := exemption.Sign(c.svc.cfg.ExemptionSigner, ex)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := proto.Marshal(se)
	if err := c.st.CreateExemption(t.Context(), store.Exemption{
		ID: expired, TerminalID: t1, VendorID: stick.GetVendorId(), ProductID: stick.GetProductId(), Serial: stick.GetSerial(),
		NotBefore: past, NotAfter: past.Add(time.Hour), Duration: time.Hour, Issuer: ex.GetIssuer(), Reason: "old", Ticket: "INC-1",
		Source: store.ExemptionOnline, Token: tok, IssuedAt: past,
	}, testAudit); err != nil {
		t.Fatal(err)
	}

	list := func(req *mnguardv1.ListExemptionsRequest) map[string]string {
		t.Helper()
		res, err := auditor.ListExemptions(audctx, req)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range res.GetExemptions() {
			out[r.GetExemption().GetId()] = r.GetState()
		}
		return out
	}
	for _, tt := range []struct {
		name string
		req  *mnguardv1.ListExemptionsRequest
		want map[string]string
	}{
		{"all", &mnguardv1.ListExemptionsRequest{}, map[string]string{active: "active", revoked: "revoked", other: "active", expired: "expired"}},
		{"terminal", &mnguardv1.ListExemptionsRequest{TerminalId: t1}, map[string]string{active: "active", revoked: "revoked", expired: "expired"}},
		{"active", &mnguardv1.ListExemptionsRequest{ActiveOnly: true}, map[string]string{active: "active", other: "active"}},
		{"terminal active", &mnguardv1.ListExemptionsRequest{TerminalId: t1, ActiveOnly: true}, map[string]string{active: "active"}},
		{"unknown terminal", &mnguardv1.ListExemptionsRequest{TerminalId: uuid.NewString()}, map[string]string{}},
	} {
		if got := list(tt.req); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	_, err = auditor.ListExemptions(audctx, &mnguardv1.ListExemptionsRequest{TerminalId: "term-01"})
	wantCode(t, err, codes.InvalidArgument, "not a terminal ID")
	_, err = help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: expired})
	wantCode(t, err, codes.FailedPrecondition, "expired at")

	// The stream carries only the exemption in force.
	s := c.subscribe(agent1)
	if got := keys(verified(t, term1, s.nextSet(t, 5*time.Second))); !slices.Equal(got, []string{active}) {
		t.Errorf("pushed set %v, want only %s", got, active)
	}
}
