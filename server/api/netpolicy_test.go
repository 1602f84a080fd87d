package api

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// testCollectorAddrs are the collector's own addresses in these tests.
var testCollectorAddrs = []netip.Addr{netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("198.51.100.10")}

// segmentPolicy is a network policy of the My Number segment.
func segmentPolicy() *mnguardv1.NetworkPolicy {
	return &mnguardv1.NetworkPolicy{
		Networks: []*mnguardv1.AllowedNetwork{
			{Cidr: "2001:db8::/32", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 443, Last: 443}, {Protocol: "udp", First: 53, Last: 53}}},
			{Cidr: "198.51.100.0/24"},
		},
		DnsServers: []string{"198.51.100.53"},
	}
}

// nextPolicy returns the next policy pushed, skipping exemption sets and
// heartbeats.
func (p *pushes) nextPolicy(t *testing.T, within time.Duration) *mnguardv1.Policy {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if pol := p.next(t, time.Until(deadline)).GetPolicy(); pol != nil {
			return pol
		}
	}
}

// quietPolicy fails if a policy arrives within d.
func (p *pushes) quietPolicy(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-p.msgs:
			if m.GetPolicy() != nil {
				t.Fatalf("unexpected policy push %v", m.GetPolicy())
			}
		case err := <-p.err:
			t.Fatalf("stream ended: %v", err)
		case <-deadline:
			return
		}
	}
}

func withCollectorAddrs(cfg *Config) { cfg.CollectorAddrs = testCollectorAddrs }

// TestNetworkPolicyPushedAtOnce: an admin's SetNetworkPolicy reaches every
// live Subscribe stream within a second, with the collector's addresses
// and a new Policy.version; Report answers with that version; GetNetworkPolicy
// reads back what was set; the change is audited with a readable summary;
// setting the same policy again is audited but pushes nothing.
func TestNetworkPolicyPushedAtOnce(t *testing.T) {
	c := startCollectorWith(t, false, withCollectorAddrs)
	admin, actx := c.admin(store.RoleAdmin)
	agent1, term1 := c.terminal()
	agent2, _ := c.terminal()
	s1, s2 := c.subscribe(agent1), c.subscribe(agent2)
	first := s1.nextPolicy(t, 5*time.Second)
	s2.nextPolicy(t, 5*time.Second)
	if first.GetNetwork() != nil {
		t.Fatalf("network policy pushed before any was set: %v", first.GetNetwork())
	}
	if term1.GetPolicy().GetVersion() != first.GetVersion() || first.GetReportIntervalSeconds() != 60 {
		t.Fatalf("enrollment policy %v, stream's %v", term1.GetPolicy(), first)
	}
	if v := c.svc.NetworkPolicyVersion(); v != "" {
		t.Fatalf("NetworkPolicyVersion %q before any set", v)
	}
	got, err := admin.GetNetworkPolicy(actx, &mnguardv1.GetNetworkPolicyRequest{})
	if err != nil || got.GetPolicy() != nil || got.GetPolicyVersion() != first.GetVersion() {
		t.Fatalf("get before any set: %v, %v", got, err)
	}

	start := time.Now()
	res, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	pushed := s1.nextPolicy(t, time.Second)
	latency := time.Since(start)
	pushed2 := s2.nextPolicy(t, time.Second)
	t.Logf("SetNetworkPolicy to the policy on the stream: %s", latency)
	if latency > time.Second {
		t.Errorf("policy reached the stream after %s, want within 1s", latency)
	}
	np := res.GetPolicy()
	if !strings.HasPrefix(np.GetVersion(), "n-") || len(np.GetVersion()) != 10 {
		t.Fatalf("network policy version %q, want n- and 8 hex digits", np.GetVersion())
	}
	// Canonical order, the collector's addresses filled in.
	want := &mnguardv1.NetworkPolicy{
		Version: np.GetVersion(),
		Networks: []*mnguardv1.AllowedNetwork{
			{Cidr: "198.51.100.0/24"},
			{Cidr: "2001:db8::/32", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 443, Last: 443}, {Protocol: "udp", First: 53, Last: 53}}},
		},
		DnsServers:     []string{"198.51.100.53"},
		CollectorAddrs: []string{"198.51.100.10", "2001:db8::10"},
	}
	if !proto.Equal(np, want) {
		t.Errorf("set returned %v, want %v", np, want)
	}
	for i, p := range []*mnguardv1.Policy{pushed, pushed2} {
		if !proto.Equal(p.GetNetwork(), np) || p.GetVersion() != res.GetPolicyVersion() || p.GetReportIntervalSeconds() != 60 {
			t.Errorf("stream %d got %v, want the network policy %v in Policy %s", i+1, p, np, res.GetPolicyVersion())
		}
	}
	if res.GetPolicyVersion() == first.GetVersion() {
		t.Error("Policy.version did not change with the network policy")
	}
	// The agents' validation accepts what is pushed, version included.
	if _, err := netpolicy.FromProto(pushed.GetNetwork()); err != nil {
		t.Errorf("pushed policy fails the agents' validation: %v", err)
	}
	if v := c.svc.NetworkPolicyVersion(); v != np.GetVersion() {
		t.Errorf("NetworkPolicyVersion %q, want %q", v, np.GetVersion())
	}
	rep, err := agent1.Report(t.Context(), &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(1, "agent.start")}})
	if err != nil || rep.GetPolicyVersion() != res.GetPolicyVersion() {
		t.Errorf("report answered policy version %q (%v), want %q", rep.GetPolicyVersion(), err, res.GetPolicyVersion())
	}

	// Read back, by every role.
	for _, role := range allRoles {
		cl, ctx := c.admin(role)
		got, err := cl.GetNetworkPolicy(ctx, &mnguardv1.GetNetworkPolicyRequest{})
		if err != nil {
			t.Fatalf("%s: get: %v", role, err)
		}
		if at := got.GetUpdatedAt().AsTime(); !proto.Equal(got.GetPolicy(), np) || got.GetPolicyVersion() != res.GetPolicyVersion() ||
			got.GetUpdatedBy() != "admin-op" || at.Before(start.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("%s: get %v", role, got)
		}
	}

	es := c.audited(AuditNetworkPolicySet)
	if len(es) != 1 {
		t.Fatalf("%d audit entries %s, want 1", len(es), AuditNetworkPolicySet)
	}
	wantDetail := "networks: 198.51.100.0/24, 2001:db8::/32@tcp/443,udp/53; dns: 198.51.100.53; enforcement: off; version none → " + np.GetVersion()
	if es[0].Detail != wantDetail || es[0].Target != np.GetVersion() || !strings.HasPrefix(es[0].Actor, "admin-op (admin, ") {
		t.Errorf("audit entry %+v, want detail %q", es[0], wantDetail)
	}

	// The same policy again (in another order): audited, nothing pushed.
	again := segmentPolicy()
	again.Networks[0], again.Networks[1] = again.Networks[1], again.Networks[0]
	res2, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: again, ExpectedVersion: np.GetVersion()})
	if err != nil || res2.GetPolicyVersion() != res.GetPolicyVersion() {
		t.Fatalf("same policy again: %v, %v", res2, err)
	}
	s1.quietPolicy(t, 300*time.Millisecond)
	if es := c.audited(AuditNetworkPolicySet); len(es) != 2 || !strings.HasSuffix(es[0].Detail, np.GetVersion()+" → "+np.GetVersion()+" (unchanged)") {
		t.Errorf("audit after the no-op set: %+v", es)
	}

	// Enforcement on: pushed again, a new version.
	on := segmentPolicy()
	on.Enforce = true
	res3, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: on, ExpectedVersion: np.GetVersion()})
	if err != nil {
		t.Fatal(err)
	}
	if p := s1.nextPolicy(t, time.Second); !p.GetNetwork().GetEnforce() || p.GetVersion() != res3.GetPolicyVersion() || res3.GetPolicy().GetVersion() == np.GetVersion() {
		t.Errorf("enforcement on: pushed %v, set returned %v", p, res3)
	}
	// A new enrollment gets the policy in force.
	_, term3 := c.terminal()
	if !proto.Equal(term3.GetPolicy().GetNetwork(), res3.GetPolicy()) {
		t.Errorf("enrollment got %v, want %v", term3.GetPolicy().GetNetwork(), res3.GetPolicy())
	}
}

// TestNetworkPolicyRoles: every role reads the policy; only admins set it.
func TestNetworkPolicyRoles(t *testing.T) {
	c := startCollector(t, false)
	for _, role := range allRoles {
		cl, ctx := c.admin(role)
		if _, err := cl.GetNetworkPolicy(ctx, &mnguardv1.GetNetworkPolicyRequest{}); err != nil {
			t.Errorf("%s: get: %v", role, err)
		}
		_, err := cl.SetNetworkPolicy(ctx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy()})
		if role == store.RoleAdmin {
			if err != nil {
				t.Errorf("admin: set: %v", err)
			}
			continue
		}
		wantCode(t, err, codes.PermissionDenied, "")
	}
	if es := c.audited(AuditNetworkPolicySet); len(es) != 1 || !strings.HasPrefix(es[0].Actor, "admin-op") {
		t.Errorf("audit entries %+v, want the admin's one", es)
	}
	// Without credentials, nothing.
	_, err := mnguardv1.NewAdminServiceClient(c.dial(nil)).GetNetworkPolicy(t.Context(), &mnguardv1.GetNetworkPolicyRequest{})
	wantCode(t, err, codes.Unauthenticated, "")
}

// TestNetworkPolicyValidation: malformed or senseless policies are refused
// with InvalidArgument saying what is wrong, and nothing is stored, pushed
// or audited.
func TestNetworkPolicyValidation(t *testing.T) {
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	agent, _ := c.terminal()
	s := c.subscribe(agent)
	s.nextPolicy(t, 5*time.Second)
	nets := func(cidrs ...string) []*mnguardv1.AllowedNetwork {
		var out []*mnguardv1.AllowedNetwork
		for _, c := range cidrs {
			out = append(out, &mnguardv1.AllowedNetwork{Cidr: c})
		}
		return out
	}
	for _, tt := range []struct {
		name string
		p    *mnguardv1.NetworkPolicy
		want string
	}{
		{"missing", nil, "policy missing"},
		{"prefix too long", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.0/33")}, `network "198.51.100.0/33": not a CIDR`},
		{"host bits", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.1/24")}, `network "198.51.100.1/24": host bits set; the network is 198.51.100.0/24`},
		{"bogus", &mnguardv1.NetworkPolicy{Networks: nets("bogus")}, `network "bogus": not a CIDR`},
		{"empty cidr", &mnguardv1.NetworkPolicy{Networks: nets("")}, "empty network"},
		{"address without length", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.7")}, "no prefix length: write 198.51.100.7/32"},
		{"every v6 address", &mnguardv1.NetworkPolicy{Networks: nets("::/0")}, `network "::/0": allows every address`},
		{"every v4 address", &mnguardv1.NetworkPolicy{Networks: nets("0.0.0.0/0")}, `network "0.0.0.0/0": allows every address`},
		{"duplicate", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.0/24", "198.51.100.0/24")}, "listed twice"},
		{"inside another", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.0/24", "198.51.100.128/25")}, "198.51.100.128/25 is inside 198.51.100.0/24"},
		{"bad dns", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.0/24"), DnsServers: []string{"300.1.1.1"}}, `DNS server "300.1.1.1": not an IPv4 or IPv6 address`},
		{"dns name", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.0/24"), DnsServers: []string{"dns.example"}}, `DNS server "dns.example": not an IPv4 or IPv6 address`},
		{"dns twice", &mnguardv1.NetworkPolicy{Networks: nets("198.51.100.0/24"), DnsServers: []string{"198.51.100.53", "198.51.100.53"}}, "listed twice"},
		{"enforce without networks", &mnguardv1.NetworkPolicy{Enforce: true}, "enforcement on with no allowed network"},
		{"bad port protocol", &mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24", Ports: []*mnguardv1.PortRange{{Protocol: "icmp", First: 1}}}}}, "198.51.100.0/24"},
		{"port beyond 65535", &mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 70000}}}}}, "beyond 65535"},
		{"too many networks", &mnguardv1.NetworkPolicy{Networks: func() []*mnguardv1.AllowedNetwork {
			var out []*mnguardv1.AllowedNetwork
			for i := range netpolicy.MaxNetworks + 1 {
				out = append(out, &mnguardv1.AllowedNetwork{Cidr: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24).String()})
			}
			return out
		}()}, "at most 1024"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: tt.p})
			wantCode(t, err, codes.InvalidArgument, tt.want)
		})
	}
	// A version or collector addresses sent along are ignored, not trusted.
	p := segmentPolicy()
	p.Version, p.CollectorAddrs = "n-forged00", []string{"203.0.113.66"}
	res, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetPolicy().GetVersion() == "n-forged00" || len(res.GetPolicy().GetCollectorAddrs()) != 0 {
		t.Errorf("the request's version or collector addresses were kept: %v", res.GetPolicy())
	}
	// Only that last one was stored, pushed and audited.
	if got := s.nextPolicy(t, time.Second); got.GetNetwork().GetVersion() != res.GetPolicy().GetVersion() {
		t.Errorf("pushed %v", got)
	}
	if es := c.audited(AuditNetworkPolicySet); len(es) != 1 {
		t.Errorf("%d audit entries, want 1 (the valid set)", len(es))
	}
	if sp, err := c.st.NetworkPolicy(t.Context()); err != nil || sp.Version != res.GetPolicy().GetVersion() {
		t.Errorf("stored %+v, %v", sp, err)
	}
}

// TestNetworkPolicyRefusedStoresNothing: a refused policy leaves the store
// without one.
func TestNetworkPolicyRefusedStoresNothing(t *testing.T) {
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	for _, cidr := range []string{"198.51.100.0/33", "198.51.100.1/24", "bogus", "::/0"} {
		_, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: &mnguardv1.NetworkPolicy{
			Networks: []*mnguardv1.AllowedNetwork{{Cidr: cidr}},
		}})
		wantCode(t, err, codes.InvalidArgument, cidr)
	}
	if _, err := c.st.NetworkPolicy(t.Context()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("store holds a policy after refused sets: %v", err)
	}
	if es := c.audited(AuditNetworkPolicySet); len(es) != 0 {
		t.Errorf("refused sets audited: %+v", es)
	}
}

// TestNetworkPolicyExpectedVersion: a set that expects a version no longer
// in force is refused with FailedPrecondition naming the one in force, and
// changes nothing.
func TestNetworkPolicyExpectedVersion(t *testing.T) {
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	_, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy(), ExpectedVersion: "n-00000000"})
	wantCode(t, err, codes.FailedPrecondition, "no network policy is set, not the expected n-00000000")
	v1, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	// Two operators read v1; the first to set wins.
	a := segmentPolicy()
	a.DnsServers = append(a.DnsServers, "198.51.100.54")
	va, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: a, ExpectedVersion: v1.GetPolicy().GetVersion()})
	if err != nil {
		t.Fatal(err)
	}
	b := segmentPolicy()
	b.Enforce = true
	_, err = admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: b, ExpectedVersion: v1.GetPolicy().GetVersion()})
	wantCode(t, err, codes.FailedPrecondition, "version "+va.GetPolicy().GetVersion()+" is in force, not the expected "+v1.GetPolicy().GetVersion())
	got, err := admin.GetNetworkPolicy(actx, &mnguardv1.GetNetworkPolicyRequest{})
	if err != nil || got.GetPolicy().GetVersion() != va.GetPolicy().GetVersion() || got.GetPolicy().GetEnforce() {
		t.Errorf("after the refused set: %v, %v", got, err)
	}
	_, err = admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: b, ExpectedVersion: strings.Repeat("n", 65)})
	wantCode(t, err, codes.InvalidArgument, "expected_version")
}

// TestNetworkPolicyReloaded: a collector started on the store of another
// pushes the stored policy from the first message of a stream on.
func TestNetworkPolicyReloaded(t *testing.T) {
	c := startCollectorWith(t, false, withCollectorAddrs)
	admin, actx := c.admin(store.RoleAdmin)
	set, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	// Another Services on the same store, as after a restart.
	cfg := c.svc.cfg
	svc := New(cfg)
	if svc.NetworkPolicyVersion() != "" {
		t.Fatal("a policy before LoadNetworkPolicy")
	}
	if err := svc.LoadNetworkPolicy(t.Context()); err != nil {
		t.Fatal(err)
	}
	if svc.NetworkPolicyVersion() != set.GetPolicy().GetVersion() || svc.currentPolicy().GetVersion() != set.GetPolicyVersion() {
		t.Errorf("reloaded %q in Policy %q, want %q in %q", svc.NetworkPolicyVersion(), svc.currentPolicy().GetVersion(),
			set.GetPolicy().GetVersion(), set.GetPolicyVersion())
	}
	if !proto.Equal(svc.currentPolicy().GetNetwork(), set.GetPolicy()) {
		t.Errorf("reloaded %v, want %v", svc.currentPolicy().GetNetwork(), set.GetPolicy())
	}
	got, err := svc.Admin.GetNetworkPolicy(WithOperator(t.Context(), &Operator{Name: "u", Role: store.RoleAuditor}), &mnguardv1.GetNetworkPolicyRequest{})
	if err != nil || got.GetUpdatedBy() != "admin-op" || got.GetUpdatedAt() == nil {
		t.Errorf("reloaded get: %v, %v", got, err)
	}

	// A stored policy that does not validate stops the start.
	bad, _ := proto.Marshal(&mnguardv1.NetworkPolicy{Version: "n-00000001", Networks: []*mnguardv1.AllowedNetwork{{Cidr: "bogus"}}})
	if _, _, err := c.st.SetNetworkPolicy(t.Context(), store.NetworkPolicy{Policy: bad, Version: "n-00000001", UpdatedAt: time.Now(), UpdatedBy: "x"}, "",
		func(store.NetworkPolicy, bool) store.AuditEntry { return testAudit }); err != nil {
		t.Fatal(err)
	}
	if err := New(cfg).LoadNetworkPolicy(t.Context()); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("load of an invalid stored policy: %v", err)
	}
}

// TestReportNetworkPosture: a posture with a network section is stored
// whole, the agents' network events are accepted, and an oversized network
// section refuses the whole report.
func TestReportNetworkPosture(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	ctx := t.Context()
	now := time.Now()
	p := goodPosture(now)
	p.Network = goodNetwork(now)
	evs := []*mnguardv1.Event{agentEvent(1, "network.finding"), agentEvent(2, "network.finding_cleared"), agentEvent(3, "network.enforcement")}
	if _, err := agent.Report(ctx, &mnguardv1.ReportRequest{Posture: p, Events: evs}); err != nil {
		t.Fatalf("report with a network section and network events: %v", err)
	}
	tm, err := c.st.Terminal(ctx, term.GetTerminalId())
	if err != nil {
		t.Fatal(err)
	}
	var stored mnguardv1.Posture
	if err := proto.Unmarshal(tm.Posture, &stored); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(stored.GetNetwork(), p.GetNetwork()) {
		t.Errorf("stored network section %v", stored.GetNetwork())
	}
	for _, tt := range []struct {
		name string
		mut  func(n *mnguardv1.NetworkPosture)
		want string
	}{
		{"routes", func(n *mnguardv1.NetworkPosture) {
			for range maxNetRoutes + 1 {
				n.Routes = append(n.Routes, &mnguardv1.NetworkRoute{Destination: "203.0.113.0/24", Interface: "usb0"})
			}
		}, "posture.network.routes"},
		{"findings", func(n *mnguardv1.NetworkPosture) {
			for range maxNetFindings + 1 {
				n.Findings = append(n.Findings, &mnguardv1.NetworkFinding{Kind: "socket", Detail: "tcp → 203.0.113.7:443"})
			}
		}, "posture.network.findings"},
		{"detail", func(n *mnguardv1.NetworkPosture) { n.Findings[0].Detail = strings.Repeat("x", 513) }, "posture.network.findings[0].detail"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			big := goodPosture(now)
			big.CollectedAt = timestamppb.New(now.Add(time.Second))
			big.Network = goodNetwork(now)
			tt.mut(big.Network)
			_, err := agent.Report(ctx, &mnguardv1.ReportRequest{Posture: big, Events: []*mnguardv1.Event{agentEvent(10, "network.finding")}})
			wantCode(t, err, codes.InvalidArgument, tt.want)
		})
	}
	evsStored, err := c.st.Events(ctx, term.GetTerminalId(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evsStored) != 3 {
		t.Errorf("%d events stored, want the 3 of the accepted report", len(evsStored))
	}
}

// TestNetworkPolicyPushFanOut: one SetNetworkPolicy reaches every one of
// many live streams within a second; the spread is logged.
func TestNetworkPolicyPushFanOut(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 20
	}
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	streams := make([]*pushes, n)
	for i := range streams {
		agent, _ := c.terminal()
		streams[i] = c.subscribe(agent)
	}
	for _, s := range streams {
		s.nextPolicy(t, 10*time.Second)
	}
	start := time.Now()
	res, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	lat := make([]time.Duration, n)
	for i, s := range streams {
		p := s.nextPolicy(t, time.Until(start.Add(time.Second)))
		lat[i] = time.Since(start)
		if p.GetVersion() != res.GetPolicyVersion() {
			t.Fatalf("stream %d got policy %s, want %s", i, p.GetVersion(), res.GetPolicyVersion())
		}
	}
	// Streams are read in order: a later one's time is at most when it
	// was read, so the order gives an upper bound on each.
	slices.Sort(lat)
	t.Logf("%d streams: SetNetworkPolicy to the policy read on each stream: p50 %s, p99 %s, max %s",
		n, lat[n/2], lat[n*99/100], lat[n-1])
	if lat[n-1] > time.Second {
		t.Errorf("the last stream got the policy after %s, want within 1s", lat[n-1])
	}
}
