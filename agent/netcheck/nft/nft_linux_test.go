//go:build linux

package nft

import (
	"context"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// lab is a terminal namespace linked to three peers:
//
//	allowed     198.51.100.2/24  2001:db8:a::2/64  (policy: every port)
//	disallowed  203.0.113.2/24   2001:db8:d::2/64  (not in the policy), also
//	            203.0.113.53     (the DNS server: port 53 only)
//	            203.0.113.200    (in 203.0.113.128/25@tcp/443)
//	collector   192.0.2.2/24     (the collector: every port)
//
// The terminal is .1 / ::1 on each link. Every peer echoes on tcp and udp
// ports 53, 443 and 8080, and so does the terminal on 8080.
type lab struct {
	term, allowed, disallowed, collector *netns
}

func newLab(t testing.TB) *lab {
	t.Helper()
	requireTools(t)
	l := &lab{
		term:       newNetns(t, "term"),
		allowed:    newNetns(t, "allow"),
		disallowed: newNetns(t, "deny"),
		collector:  newNetns(t, "coll"),
	}
	veth(t, l.term, "to-allow", []string{"198.51.100.1/24", "2001:db8:a::1/64"},
		l.allowed, "from-term", []string{"198.51.100.2/24", "2001:db8:a::2/64"})
	veth(t, l.term, "to-deny", []string{"203.0.113.1/24", "2001:db8:d::1/64"},
		l.disallowed, "from-term", []string{"203.0.113.2/24", "203.0.113.53/24", "203.0.113.200/24", "2001:db8:d::2/64"})
	veth(t, l.term, "to-coll", []string{"192.0.2.1/24"},
		l.collector, "from-term", []string{"192.0.2.2/24"})
	for _, port := range []int{53, 443, 8080} {
		echo(t, l.allowed, port)
		echo(t, l.collector, port)
		echo(t, l.disallowed, port, "203.0.113.2", "203.0.113.53", "203.0.113.200", "2001:db8:d::2")
	}
	echo(t, l.term, 8080)
	return l
}

// labPolicy allows the allowed peer's networks, 203.0.113.128/25 on tcp/443
// only, the DNS server 203.0.113.53 and the collector 192.0.2.2.
func labPolicy(t testing.TB) *netpolicy.Policy {
	t.Helper()
	p := &netpolicy.Policy{Enforce: true, Collector: []netip.Addr{netip.MustParseAddr("192.0.2.2")}}
	for _, s := range []string{"198.51.100.0/24", "2001:db8:a::/64", "203.0.113.128/25@tcp/443"} {
		n, err := netpolicy.ParseNetwork(s)
		if err != nil {
			t.Fatal(err)
		}
		p.Networks = append(p.Networks, n)
	}
	p.DNS = []netip.Addr{netip.MustParseAddr("203.0.113.53")}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Version = p.ComputeVersion()
	return p
}

type reachCase struct {
	from          *netns
	network, addr string
	allowed       bool // with the policy applied
}

func (l *lab) cases() []reachCase {
	return []reachCase{
		{l.term, "tcp", "198.51.100.2:8080", true},
		{l.term, "udp", "198.51.100.2:8080", true},
		{l.term, "tcp", "[2001:db8:a::2]:8080", true},
		{l.term, "tcp", "192.0.2.2:8080", true},
		{l.term, "udp", "192.0.2.2:53", true},
		{l.term, "tcp", "203.0.113.2:8080", false},
		{l.term, "udp", "203.0.113.2:8080", false},
		{l.term, "tcp", "[2001:db8:d::2]:8080", false},
		{l.term, "tcp", "203.0.113.200:443", true},
		{l.term, "tcp", "203.0.113.200:8080", false},
		{l.term, "udp", "203.0.113.200:443", false},
		{l.term, "tcp", "203.0.113.53:53", true},
		{l.term, "udp", "203.0.113.53:53", true},
		{l.term, "tcp", "203.0.113.53:8080", false},
		{l.term, "udp", "203.0.113.2:53", false},
		// Inbound: the terminal's own listener.
		{l.allowed, "tcp", "198.51.100.1:8080", true},
		{l.allowed, "tcp", "[2001:db8:a::1]:8080", true},
		{l.disallowed, "tcp", "203.0.113.1:8080", false},
		{l.disallowed, "tcp", "[2001:db8:d::1]:8080", false},
	}
}

// expectReach tries every case at once; enforced: whether the policy's
// table is in place (without it everything passes).
func (l *lab) expectReach(t *testing.T, enforced bool) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range l.cases() {
		wg.Go(func() {
			want := c.allowed || !enforced
			timeout := 3 * time.Second
			if !want {
				timeout = time.Second // a drop shows as a timeout
			}
			err := c.from.reach(c.network, c.addr, timeout)
			if want && err != nil {
				t.Errorf("%s %s from %s: want through, got %v", c.network, c.addr, c.from.name, err)
			}
			if !want && err == nil {
				t.Errorf("%s %s from %s: got through, want dropped", c.network, c.addr, c.from.name)
			}
		})
	}
	wg.Wait()
}

func TestEnforce(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	e := New(Options{NetNS: l.term.fd, Logger: testLogger(t)})
	p := labPolicy(t)

	l.expectReach(t, false)
	// Connections made before the table: one to the disallowed peer, one
	// to the allowed one.
	bad, err := l.term.dial("tcp", "203.0.113.2:8080", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	good, err := l.term.dial("tcp", "198.51.100.2:8080", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := roundTrip(bad, 3*time.Second); err != nil {
		t.Fatalf("before the table: %v", err)
	}

	if ok, detail, err := e.Check(ctx, p); err != nil || ok || !strings.Contains(detail, "missing") {
		t.Fatalf("Check before Apply = %v, %q, %v; want false, table missing", ok, detail, err)
	}
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Logf("nft list table:\n%s", l.term.nft(t, "list", "table", "inet", DefaultTable))
	if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
		t.Fatalf("Check after Apply = %v, %q, %v; want in place", ok, detail, err)
	}
	// Apply is idempotent.
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
		t.Fatalf("Check after a second Apply = %v, %q, %v; want in place", ok, detail, err)
	}

	// Neighbour discovery works through the table: with every neighbour
	// forgotten, the terminal solicits the allowed peer first (nothing
	// else runs meanwhile, so the peer cannot teach it by soliciting).
	for _, n := range []*netns{l.term, l.allowed} {
		n.ip(t, "neigh", "flush", "all")
	}
	if err := l.term.reach("tcp", "[2001:db8:a::2]:8080", 3*time.Second); err != nil {
		t.Errorf("IPv6 to the allowed peer after forgetting neighbours: %v", err)
	}
	l.expectReach(t, true)
	if err := roundTrip(bad, time.Second); err == nil {
		t.Error("a connection to the disallowed peer made before Apply still passes data")
	}
	if err := roundTrip(good, 3*time.Second); err != nil {
		t.Errorf("a connection to the allowed peer made before Apply: %v", err)
	}

	// Another policy is not in place.
	p2 := labPolicy(t)
	n, _ := netpolicy.ParseNetwork("203.0.113.0/25")
	p2.Networks = append(p2.Networks, n)
	if ok, detail, err := e.Check(ctx, p2); err != nil || ok || !strings.Contains(detail, "set allowed_v4 changed: missing 203.0.113.0/25") {
		t.Errorf("Check of another policy = %v, %q, %v", ok, detail, err)
	}

	if err := e.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctx); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	l.expectReach(t, false)
}

func TestApplyRefusesBadPolicy(t *testing.T) {
	requireTools(t)
	term := newNetns(t, "term")
	e := New(Options{NetNS: term.fd})
	for name, p := range map[string]*netpolicy.Policy{
		"nil":          nil,
		"host bits":    {Networks: []netpolicy.Network{{Prefix: netip.MustParsePrefix("198.51.100.1/24")}}},
		"every addr":   {Networks: []netpolicy.Network{{Prefix: netip.MustParsePrefix("0.0.0.0/0")}}},
		"bad port":     {Networks: []netpolicy.Network{{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Ports: []netpolicy.PortRange{{Proto: "sctp", First: 1, Last: 2}}}}},
		"reversed":     {Networks: []netpolicy.Network{{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Ports: []netpolicy.PortRange{{Proto: "tcp", First: 9, Last: 2}}}}},
		"invalid dns":  {DNS: []netip.Addr{{}}},
		"multicast co": {Collector: []netip.Addr{netip.MustParseAddr("224.0.0.1")}},
	} {
		if err := e.Apply(t.Context(), p); err == nil {
			t.Errorf("%s: Apply took it", name)
		}
	}
	if out := term.nft(t, "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Errorf("refused policies left a ruleset:\n%s", out)
	}
}

func TestDrift(t *testing.T) {
	l := newLab(t)
	ctx := t.Context()
	e := New(Options{NetNS: l.term.fd, Logger: testLogger(t)})
	p := labPolicy(t)
	changes := watch(t, e)
	// Watch says when it listens (a change before that was not
	// announced), then announces the Apply.
	waitChange(t, changes, "subscription", time.Now())
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "apply", time.Now())

	handle := func(chain, contains string) string {
		out := l.term.nft(t, "-a", "list", "chain", "inet", DefaultTable, chain)
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, contains) {
				if m := regexp.MustCompile(`# handle (\d+)`).FindStringSubmatch(line); m != nil {
					return m[1]
				}
			}
		}
		t.Fatalf("no rule with %q in chain %s:\n%s", contains, chain, out)
		return ""
	}
	for _, c := range []struct {
		name   string
		drift  func() []string // the nft arguments
		detail string
	}{
		{"flush table", func() []string { return []string{"flush", "table", "inet", DefaultTable} }, "chain output flushed: 0 of 3 rules"},
		{"delete table", func() []string { return []string{"delete", "table", "inet", DefaultTable} }, "table inet mnguard missing"},
		{"delete rule", func() []string {
			return []string{"delete", "rule", "inet", DefaultTable, chainTo, "handle", handle(chainTo, "@allowed_v4")}
		}, "chain to_allowed"},
		{"insert accept", func() []string { return []string{"insert", "rule", "inet", DefaultTable, chainOutput, "accept"} }, "chain output rule 1 of 3 changed"},
		{"flush chain", func() []string { return []string{"flush", "chain", "inet", DefaultTable, chainFrom} }, "chain from_allowed flushed"},
		{"add element", func() []string {
			return []string{"add", "element", "inet", DefaultTable, setAllowed4, "{ 203.0.113.0/24 }"}
		}, "set allowed_v4 changed: unexpected 203.0.113.0/24"},
		{"delete element", func() []string {
			return []string{"delete", "element", "inet", DefaultTable, setCollector4, "{ 192.0.2.2 }"}
		}, "set collector_v4 changed: missing 192.0.2.2"},
		{"dormant", func() []string { return []string{"add", "table", "inet", DefaultTable, "{ flags dormant; }"} }, "dormant"},
		{"chain policy", func() []string {
			return []string{"add", "chain", "inet", DefaultTable, chainInput, "{ type filter hook input priority 0; policy accept; }"}
		}, "chain input changed: policy"},
		{"extra chain", func() []string { return []string{"add", "chain", "inet", DefaultTable, "sneaky"} }, "unexpected chain sneaky"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
				t.Fatalf("before: Check = %v, %q, %v", ok, detail, err)
			}
			drain(changes)
			args := c.drift()
			start := time.Now()
			l.term.nft(t, args...)
			lat := waitChange(t, changes, "nft "+strings.Join(args, " "), start)
			t.Logf("nft %s: Watch called after %v (including nft's start)", strings.Join(args, " "), lat)
			ok, detail, err := e.Check(ctx, p)
			if err != nil || ok || !strings.Contains(detail, c.detail) {
				t.Errorf("Check after drift = %v, %q, %v; want not in place, %q", ok, detail, err, c.detail)
			}
			if err := e.Apply(ctx, p); err != nil {
				t.Fatalf("repair: %v", err)
			}
			if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
				t.Fatalf("after repair: Check = %v, %q, %v", ok, detail, err)
			}
		})
	}
	// Repaired means enforced.
	if err := l.term.reach("tcp", "203.0.113.2:8080", time.Second); err == nil {
		t.Error("after the repairs the disallowed peer is reachable")
	}
	if err := l.term.reach("tcp", "198.51.100.2:8080", 3*time.Second); err != nil {
		t.Errorf("after the repairs the allowed peer: %v", err)
	}

	// Another table's changes do not call Watch.
	drain(changes)
	l.term.nft(t, "add", "table", "inet", "other")
	l.term.nft(t, "add", "chain", "inet", "other", "c")
	l.term.nft(t, "delete", "table", "inet", "other")
	select {
	case <-changes:
		t.Error("Watch called for a change of another table")
	case <-time.After(300 * time.Millisecond):
	}
}

// TestRemoveRestoresRuleset: after Apply and Remove, the namespace's
// ruleset is what it was, another table with a rule included.
func TestRemoveRestoresRuleset(t *testing.T) {
	requireTools(t)
	term := newNetns(t, "term")
	term.nft(t, "add", "table", "inet", "filter")
	term.nft(t, "add", "chain", "inet", "filter", "output", "{ type filter hook output priority 0; policy accept; }")
	term.nft(t, "add", "rule", "inet", "filter", "output", "tcp", "dport", "9999", "counter", "drop")
	term.nft(t, "add", "table", "ip", "mnguard") // same name, another family
	before := term.nft(t, "list", "ruleset")

	e := New(Options{NetNS: term.fd})
	if err := e.Apply(t.Context(), labPolicy(t)); err != nil {
		t.Fatal(err)
	}
	if during := term.nft(t, "list", "ruleset"); !strings.Contains(during, "table inet mnguard") || !strings.Contains(during, "tcp dport 9999") {
		t.Fatalf("after Apply:\n%s", during)
	}
	if err := e.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after := term.nft(t, "list", "ruleset"); after != before {
		t.Errorf("ruleset after Remove:\n%s\nwant as before Apply:\n%s", after, before)
	}
}

// watch runs e.Watch until the test ends; each call sends its time.
func watch(t testing.TB, e *Enforcer) <-chan time.Time {
	t.Helper()
	ch := make(chan time.Time, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Watch(ctx, func() {
			select {
			case ch <- time.Now():
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Watch did not end with its context")
		}
	})
	return ch
}

func waitChange(t testing.TB, ch <-chan time.Time, what string, since time.Time) time.Duration {
	t.Helper()
	select {
	case at := <-ch:
		return at.Sub(since)
	case <-time.After(time.Second):
		t.Fatalf("%s: Watch not called within 1 s", what)
		return 0
	}
}

func drain(ch <-chan time.Time) {
	for {
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
			return
		}
	}
}

// TestUnusableNamespace: with a descriptor that is no network namespace,
// every method fails with an error (the manager then reports enforcement
// as failing, or polls), none pretends.
func TestUnusableNamespace(t *testing.T) {
	requireTools(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := New(Options{NetNS: int(f.Fd())})
	p := labPolicy(t)
	if err := e.Apply(t.Context(), p); err == nil {
		t.Error("Apply: no error")
	}
	if ok, _, err := e.Check(t.Context(), p); err == nil || ok {
		t.Errorf("Check: %v, %v", ok, err)
	}
	if err := e.Remove(t.Context()); err == nil {
		t.Error("Remove: no error")
	}
	if err := e.Watch(t.Context(), func() {}); err == nil {
		t.Error("Watch: no error")
	}
	ns := newNetns(t, "ctx")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := New(Options{NetNS: ns.fd}).Apply(ctx, p); err == nil {
		t.Error("Apply with a cancelled context: no error")
	}
	if out := ns.nft(t, "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Errorf("Apply with a cancelled context wrote:\n%s", out)
	}
}

// TestForward: with the terminal routing between its links, forwarded
// traffic passes between allowed addresses only.
func TestForward(t *testing.T) {
	l := newLab(t)
	run(t, "ip", "netns", "exec", l.term.name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	l.allowed.ip(t, "route", "add", "203.0.113.0/24", "via", "198.51.100.1")
	l.allowed.ip(t, "route", "add", "192.0.2.0/24", "via", "198.51.100.1")
	l.disallowed.ip(t, "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
	l.collector.ip(t, "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
	cases := []reachCase{
		{l.allowed, "tcp", "192.0.2.2:8080", true},
		{l.collector, "tcp", "198.51.100.2:8080", true},
		{l.allowed, "tcp", "203.0.113.2:8080", false},
		{l.disallowed, "tcp", "198.51.100.2:8080", false},
	}
	check := func(enforced bool) {
		t.Helper()
		for _, c := range cases {
			want := c.allowed || !enforced
			timeout := 3 * time.Second
			if !want {
				timeout = time.Second
			}
			err := c.from.reach(c.network, c.addr, timeout)
			if want != (err == nil) {
				t.Errorf("enforced %v: %s from %s: want through %v, got %v", enforced, c.addr, c.from.name, want, err)
			}
		}
	}
	check(false)
	e := New(Options{NetNS: l.term.fd})
	if err := e.Apply(t.Context(), labPolicy(t)); err != nil {
		t.Fatal(err)
	}
	check(true)
}
