//go:build linux

package netcheck

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mnguard/mnguard/agent/netcheck/nft"
	"github.com/mnguard/mnguard/internal/netpolicy"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// These tests run the Manager with the real Linux platform in a network
// namespace they create (through netlink, as root); the namespace goes
// with its last handle at the end of the test.

// mgrTerminal is a terminal namespace: a veth pair mn0/mn1 (this kernel
// has no dummy driver), mn0 holding 198.51.100.5/24 and 2001:db8:1::5/64
// (the allowed networks), lo up, and a resolv.conf naming the allowed DNS
// server.
type mgrTerminal struct {
	ns     netns.NsHandle
	h      *netlink.Handle
	link   netlink.Link
	resolv string
	sysfs  string // "": the real /sys
	// stateFile is the Managers' Options.StateFile ("": none).
	stateFile string
}

func newMgrTerminal(t testing.TB) *mgrTerminal {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces")
	ns := newNS(t) // the thread that made it is back in its namespace
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink in the namespace: %v", err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo: %v", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("lo up: %v", err)
	}
	link := addVeth(t, h, "mn0", "mn1")
	for _, cidr := range []string{"198.51.100.5/24", "2001:db8:1::5/64"} {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		a.Flags = unix.IFA_F_NODAD
		if err := h.AddrAdd(link, a); err != nil {
			t.Fatalf("address %s on mn0: %v", cidr, err)
		}
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 198.51.100.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &mgrTerminal{ns: ns, h: h, link: link, resolv: resolv}
}

// addVeth adds the veth pair name/peer, both up, and returns name.
func addVeth(t testing.TB, h *netlink.Handle, name, peer string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	var link netlink.Link
	for _, n := range []string{peer, name} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("%s up: %v", n, err)
		}
		link = l
	}
	return link
}

// platform returns the real Linux platform bound to the namespace.
func (tm *mgrTerminal) platform(t testing.TB) Platform {
	t.Helper()
	var pl Platform
	// On a thread inside the namespace, returned to its own after (back).
	inNS(t, tm.ns, func() {
		pl = NewPlatform(PlatformOptions{SysfsRoot: tm.sysfs, ResolvConf: []string{tm.resolv}, Logger: slog.New(slog.DiscardHandler)})
	})
	if c, ok := pl.(interface{ close() }); ok {
		t.Cleanup(c.close)
	}
	return pl
}

// mgrPolicy allows the terminal's networks and its DNS server.
func mgrPolicy(t testing.TB) *netpolicy.Policy {
	t.Helper()
	p, err := netpolicy.FromProto(&mnguardv1.NetworkPolicy{
		Networks:   []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24"}, {Cidr: "2001:db8:1::/48"}},
		DnsServers: []string{"198.51.100.53"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runMgr starts a Manager on the terminal's real platform and waits for
// its first scan.
func runMgr(t testing.TB, tm *mgrTerminal) (*Manager, *mgrEvents) {
	t.Helper()
	m, ev, stop := runMgrWith(t, tm, nil, mgrPolicy(t))
	t.Cleanup(stop)
	return m, ev
}

// runMgrWith starts a Manager with enforcer e (nil: none) and policy p,
// waits for its first scan, and returns stop, which ends Run and waits
// for it (once).
func runMgrWith(t testing.TB, tm *mgrTerminal, e Enforcer, p *netpolicy.Policy) (*Manager, *mgrEvents, func()) {
	t.Helper()
	ev := newEvents()
	// An hour's interval: whatever a test sees was announced (or polled),
	// never found by the periodic scan.
	m := New(Options{Platform: tm.platform(t), Enforcer: e, Emit: ev.emit, Logger: slog.New(slog.DiscardHandler),
		StateFile: tm.stateFile, Interval: time.Hour})
	m.SetPolicy(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not end with its context")
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(5 * time.Second)
	for m.Posture().GetLastScan() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no scan within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return m, ev, stop
}

// routeFindings returns the kinds and details of the posture's route
// findings (the process's own sockets are in the host's namespace and
// judged too: they are left out here).
func routeFindings(np *mnguardv1.NetworkPosture) []string {
	var out []string
	for _, f := range np.GetFindings() {
		switch f.GetKind() {
		case FindingDefaultRoute, FindingRoute, FindingDNS, FindingUnknownInterface, FindingScanError:
			out = append(out, f.GetKind()+" "+f.GetDetail())
		}
	}
	return out
}

// TestManagerLinuxRoutes: in a terminal namespace with the real platform,
// a default route added is a network.finding within 1 s (announced by
// netlink, not found by the interval), and its removal a
// network.finding_cleared; the same for an IPv6 default route and for a
// route to a network outside the policy.
func TestManagerLinuxRoutes(t *testing.T) {
	tm := newMgrTerminal(t)
	m, ev := runMgr(t, tm)
	np := m.Posture()
	if got := routeFindings(np); len(got) != 0 {
		t.Fatalf("isolated terminal has findings: %q", got)
	}
	if i := slices.IndexFunc(np.GetAdapters(), func(a *mnguardv1.NetworkAdapter) bool { return a.GetName() == "mn0" }); i < 0 || np.GetAdapters()[i].GetKind() != KindVirtual {
		t.Errorf("adapters %v: want mn0, virtual", np.GetAdapters())
	}
	if np.GetPolicyVersion() != mgrPolicy(t).Version {
		t.Errorf("policy version %q", np.GetPolicyVersion())
	}

	idx := tm.link.Attrs().Index
	routes := []struct {
		name  string
		route *netlink.Route
		kind  string
		addr  string
	}{
		{"IPv4 default route", &netlink.Route{LinkIndex: idx, Gw: net.ParseIP("198.51.100.1")}, FindingDefaultRoute, "198.51.100.1"},
		{"IPv6 default route", &netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: net.ParseIP("2001:db8:1::1")}, FindingDefaultRoute, "2001:db8:1::1"},
		{"route outside the policy", &netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: net.ParseIP("203.0.113.0").To4(), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("198.51.100.1")}, FindingRoute, "203.0.113.0/24"},
		{"default route in another table", &netlink.Route{LinkIndex: idx, Gw: net.ParseIP("198.51.100.1"), Table: 100}, FindingDefaultRoute, "198.51.100.1"},
	}
	for _, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			ev.took()
			start := time.Now()
			if err := tm.h.RouteAdd(rt.route); err != nil {
				t.Fatalf("add route: %v", err)
			}
			e := ev.wait(t, time.Second, func(e mgrEvent) bool { return e.typ == EventFinding && e.attrs["kind"] == rt.kind })
			t.Logf("route added → %s: %v", EventFinding, time.Since(start))
			if e.sev != mnguardv1.Severity_SEVERITY_ALERT || e.attrs["interface"] != "mn0" || e.attrs["address"] != rt.addr || e.attrs["id"] == "" {
				t.Errorf("event %v", e)
			}
			// The interval (60 s) did not find it: the posture has it now.
			if got := routeFindings(m.Posture()); len(got) != 1 {
				t.Errorf("findings %q, want the one route", got)
			}

			start = time.Now()
			if err := tm.h.RouteDel(rt.route); err != nil {
				t.Fatalf("delete route: %v", err)
			}
			c := ev.wait(t, time.Second, func(c mgrEvent) bool { return c.typ == EventFindingCleared && c.attrs["id"] == e.attrs["id"] })
			t.Logf("route deleted → %s: %v", EventFindingCleared, time.Since(start))
			if c.sev != mnguardv1.Severity_SEVERITY_INFO || c.attrs["kind"] != rt.kind {
				t.Errorf("cleared event %v", c)
			}
			if got := routeFindings(m.Posture()); len(got) != 0 {
				t.Errorf("findings %q after the route went", got)
			}
		})
	}
}

// TestManagerLinuxAddressAndDNS: an address outside the policy on a new
// interface, and a DNS server outside it, are found on the announcement
// (the address) and on a rescan (resolv.conf is not announced), and clear.
func TestManagerLinuxAddressAndDNS(t *testing.T) {
	tm := newMgrTerminal(t)
	m, ev := runMgr(t, tm)

	other := addVeth(t, tm.h, "other0", "other1")
	a, _ := netlink.ParseAddr("203.0.113.5/24")
	if err := tm.h.AddrAdd(other, a); err != nil {
		t.Fatalf("address on other0: %v", err)
	}
	// The kernel adds the connected route 203.0.113.0/24 dev other0 with
	// the address: one finding for that network.
	e := ev.wait(t, time.Second, func(e mgrEvent) bool { return e.typ == EventFinding && e.attrs["kind"] == FindingRoute })
	if e.attrs["interface"] != "other0" {
		t.Errorf("event %v", e)
	}
	if err := tm.h.LinkDel(other); err != nil {
		t.Fatalf("delete other0: %v", err)
	}
	ev.wait(t, time.Second, func(c mgrEvent) bool { return c.typ == EventFindingCleared && c.attrs["kind"] == FindingRoute })
	deadline := time.Now().Add(time.Second)
	for len(routeFindings(m.Posture())) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("findings left after other0 went: %q", routeFindings(m.Posture()))
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := os.WriteFile(tm.resolv, []byte("nameserver 198.51.100.53\nnameserver 8.8.8.8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := ev.wait(t, time.Second, func(e mgrEvent) bool { return e.typ == EventFinding && e.attrs["kind"] == FindingDNS })
	if d.attrs["address"] != "8.8.8.8" {
		t.Errorf("dns event %v", d)
	}
	if err := os.WriteFile(tm.resolv, []byte("nameserver 198.51.100.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, time.Second, func(e mgrEvent) bool { return e.typ == EventFindingCleared && e.attrs["id"] == d.attrs["id"] })
}

// TestManagerLinuxEnforcement runs the Manager with the real nftables
// enforcer in the terminal's namespace: the table is put in place;
// flushed or deleted by hand (through netlink, as nft(8) does) it is
// repaired within 1 s; Run's end leaves it in place; a Manager that starts
// with a policy without enforcement removes it.
func TestManagerLinuxEnforcement(t *testing.T) {
	tm := newMgrTerminal(t)
	enf := nft.New(nft.Options{NetNS: int(tm.ns), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = enf.Remove(context.Background()) })
	pol := mgrPolicy(t)
	pol.Enforce = true
	m, ev, stop := runMgrWith(t, tm, enf, pol)
	ev.wait(t, 5*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementInPlace })
	if e := m.Posture().GetEnforcement(); !e.GetRequested() || !e.GetInPlace() || e.GetMechanism() != enf.Mechanism() {
		t.Fatalf("enforcement %v", e)
	}
	if !tableThere(t, tm) {
		t.Fatal("table inet mnguard not in the namespace")
	}

	conn, err := nftables.New(nftables.WithNetNSFd(int(tm.ns)))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: nft.DefaultTable, Family: nftables.TableFamilyINet}
	for i, drift := range []struct {
		name string
		do   func()
	}{
		{"flush table", func() { conn.FlushTable(table) }},
		{"delete table", func() { conn.DelTable(table) }},
	} {
		start := time.Now()
		drift.do()
		if err := conn.Flush(); err != nil {
			t.Fatalf("%s: %v", drift.name, err)
		}
		// Announced by the firewall watch and repaired at once: tens of
		// milliseconds here. The bound is for a loaded machine (two
		// cores shared with other test binaries under -race); it is far
		// below the Manager's interval (an hour), so a repair within it
		// came through the watch (or the 2 s poll without one).
		e := ev.wait(t, repairBound, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementRepaired })
		lat := e.at.Sub(start)
		t.Logf("%s → repaired: %v (%s)", drift.name, lat, e.attrs["detail"])
		if lat > time.Second {
			t.Logf("%s: repair took %v, slow (load?)", drift.name, lat)
		}
		if e.sev != mnguardv1.Severity_SEVERITY_ALERT {
			t.Errorf("repair event %v", e)
		}
		ok, detail, err := enf.Check(context.Background(), pol.WithCollector())
		if err != nil || !ok {
			t.Errorf("after the repair of %s: in place %v, %q, %v", drift.name, ok, detail, err)
		}
		if got := m.Posture().GetEnforcement(); got.GetRepairs() != uint32(i+1) || !got.GetInPlace() || got.GetLastRepair() == nil {
			t.Errorf("enforcement %v", got)
		}
	}

	// The agent stops: the rules stay.
	stop()
	if !tableThere(t, tm) {
		t.Fatal("Run's end removed the table")
	}
	// It starts again, with a policy without enforcement: removed.
	off := mgrPolicy(t)
	m2, _, stop2 := runMgrWith(t, tm, enf, off)
	defer stop2()
	deadline := time.Now().Add(2 * time.Second)
	for tableThere(t, tm) {
		if time.Now().After(deadline) {
			t.Fatal("table inet mnguard still there with enforcement off")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e := m2.Posture().GetEnforcement(); e.GetRequested() || e.GetInPlace() {
		t.Errorf("enforcement %v", e)
	}
}

// repairBound bounds drift → repair in the Linux enforcement tests.
const repairBound = 5 * time.Second

// lateEnforcer is an Enforcer whose Watch starts only once release is
// closed.
type lateEnforcer struct {
	Enforcer
	release chan struct{}
}

func (l lateEnforcer) Watch(ctx context.Context, changed func()) error {
	select {
	case <-l.release:
	case <-ctx.Done():
		return nil
	}
	return l.Enforcer.Watch(ctx, changed)
}

// TestManagerLinuxDriftBeforeFirewallWatch: the table flushed after the
// Manager put it in place but before the firewall watch listens (a gap
// that a loaded machine makes long enough for a test, or an admin, to
// fall into) is repaired as soon as the watch listens, not at the next
// interval (an hour here).
func TestManagerLinuxDriftBeforeFirewallWatch(t *testing.T) {
	tm := newMgrTerminal(t)
	settle(t, tm) // no address announced later scans (and repairs) by chance
	inner := nft.New(nft.Options{NetNS: int(tm.ns), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = inner.Remove(context.Background()) })
	enf := lateEnforcer{inner, make(chan struct{})}
	pol := mgrPolicy(t)
	pol.Enforce = true
	_, ev, _ := runMgrWith(t, tm, enf, pol)
	ev.wait(t, 5*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementInPlace })
	// The scans the network watch starts with are over.
	time.Sleep(300 * time.Millisecond)
	conn, err := nftables.New(nftables.WithNetNSFd(int(tm.ns)))
	if err != nil {
		t.Fatal(err)
	}
	conn.FlushTable(&nftables.Table{Name: nft.DefaultTable, Family: nftables.TableFamilyINet})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, e := range ev.took() {
		if e.attrs["state"] == EnforcementRepaired {
			t.Fatalf("repaired with no watch: %v (the test proves nothing)", e.attrs)
		}
	}
	start := time.Now()
	close(enf.release)
	e := ev.wait(t, repairBound, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementRepaired })
	t.Logf("firewall watch listening → repaired: %v (%s)", e.at.Sub(start), e.attrs["detail"])
	ok, detail, err := inner.Check(context.Background(), pol.WithCollector())
	if err != nil || !ok {
		t.Errorf("after the repair: in place %v, %q, %v", ok, detail, err)
	}
}

// TestManagerLinuxTethering: a phone in RNDIS mode (the sysfs tree of
// one, testdata/sysfs/phone-rndis, behind a real interface usb0) is a
// usb_adapter finding as soon as its link is announced; with enforcement
// on it is cut off the bus (authorized=0 written in the tree) and shown
// deauthorized, also once the kernel dropped its interface; enforcement
// off authorizes it again.
func TestManagerLinuxTethering(t *testing.T) {
	tm := newMgrTerminal(t)
	tm.sysfs = copyTree(t, "phone-rndis")
	authorized := filepath.Join(tm.sysfs, xhci+"1-2", "authorized")
	_, ev, stop := runMgrWith(t, tm, nil, mgrPolicy(t))

	start := time.Now()
	addVeth(t, tm.h, "usb0", "usb0p")
	e := ev.wait(t, time.Second, func(e mgrEvent) bool { return e.typ == EventFinding && e.attrs["kind"] == FindingUSBAdapter })
	t.Logf("usb0 added → %s: %v (%s)", EventFinding, e.at.Sub(start), e.attrs["detail"])
	if e.attrs["interface"] != "usb0" || !strings.Contains(e.attrs["detail"], "18d1:4ee3") {
		t.Errorf("event %v", e)
	}

	// The agent again, with a policy that enforces.
	stop()
	enf := nft.New(nft.Options{NetNS: int(tm.ns), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = enf.Remove(context.Background()) })
	on := mgrPolicy(t)
	on.Enforce = true
	m2, ev2, stop2 := runMgrWith(t, tm, enf, on)
	defer stop2()
	cut := ev2.wait(t, 2*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementUSBCut })
	if cut.attrs["interface"] != "usb0" {
		t.Errorf("cut event %v", cut)
	}
	if b, _ := os.ReadFile(authorized); string(b) != "0" {
		t.Fatalf("authorized = %q after the cut", b)
	}
	usb0 := func() *mnguardv1.NetworkAdapter {
		for _, a := range m2.Posture().GetAdapters() {
			if a.GetName() == "usb0" {
				return a
			}
		}
		return nil
	}
	if a := usb0(); a.GetState() != AdapterDeauthorized || a.GetKind() != KindUSB {
		t.Errorf("usb0 in the posture: %v", a)
	}
	// The kernel drops a deauthorized device's interface.
	if l, err := tm.h.LinkByName("usb0"); err != nil {
		t.Fatal(err)
	} else if err := tm.h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	ev2.wait(t, time.Second, func(e mgrEvent) bool { return e.typ == EventFindingCleared && e.attrs["kind"] == FindingUSBAdapter })
	if a := usb0(); a.GetState() != AdapterDeauthorized || a.GetUp() {
		t.Errorf("usb0 in the posture once gone: %v", a)
	}

	m2.SetPolicy(mgrPolicy(t))
	ev2.wait(t, 2*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementUSBRestored })
	if b, _ := os.ReadFile(authorized); string(b) != "1" {
		t.Fatalf("authorized = %q after enforcement off", b)
	}
	if a := usb0(); a != nil {
		t.Errorf("usb0 still in the posture: %v", a)
	}
}

// tableThere says whether the namespace holds table inet mnguard.
func tableThere(t testing.TB, tm *mgrTerminal) bool {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(tm.ns)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	return slices.ContainsFunc(ts, func(x *nftables.Table) bool { return x.Name == nft.DefaultTable })
}

// BenchmarkRouteChangeToFinding times, through the whole Manager on the
// real platform in a namespace of its own, 100 route changes (50 adds and
// 50 deletions of a default route) from just before the netlink request
// to the network.finding or network.finding_cleared event (the 50 ms
// debounce and the scan of adapters, routes and DNS servers included),
// and reports p50 and p99.
func BenchmarkRouteChangeToFinding(b *testing.B) {
	const changes = 100
	var lat []time.Duration
	for b.Loop() {
		lat = append(lat, managerRouteChanges(b, changes)...)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	p50, p99, worst := pct(0.50), pct(0.99), lat[len(lat)-1]
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(p50), "p50_ms")
	b.ReportMetric(ms(p99), "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("route change to network event: %d changes: p50 %s, p99 %s, max %s\n", len(lat), p50, p99, worst)
}

func managerRouteChanges(b *testing.B, changes int) []time.Duration {
	tm := newMgrTerminal(b)
	_, ev := runMgr(b, tm)
	def := &netlink.Route{LinkIndex: tm.link.Attrs().Index, Gw: net.ParseIP("198.51.100.1")}
	lat := make([]time.Duration, 0, changes)
	for i := range changes {
		ev.took()
		start := time.Now()
		var err error
		want := EventFinding
		if i%2 == 0 {
			err = tm.h.RouteAdd(def)
		} else {
			err = tm.h.RouteDel(def)
			want = EventFindingCleared
		}
		if err != nil {
			b.Fatalf("change %d: %v", i, err)
		}
		deadline := time.Now().Add(2 * time.Second)
	wait:
		for {
			for _, e := range ev.took() {
				if e.typ == want && e.attrs["kind"] == FindingDefaultRoute {
					lat = append(lat, e.at.Sub(start))
					if d := e.at.Sub(start); d > 200*time.Millisecond {
						b.Logf("change %d (%s): %v", i, want, d)
					}
					break wait
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("change %d: no %s within 2 s", i, want)
			}
			select {
			case <-ev.signal:
			case <-time.After(time.Millisecond):
			}
		}
	}
	return lat
}

// lateWatch is the real platform whose Watch starts only once release is
// closed: the Manager's first scan comes before the subscription.
type lateWatch struct {
	Platform
	release chan struct{}
}

func (l lateWatch) Watch(ctx context.Context, changed func(string)) error {
	select {
	case <-l.release:
	case <-ctx.Done():
		return nil
	}
	return l.Platform.Watch(ctx, changed)
}

// TestManagerLinuxChangeBeforeSubscription: a default route added after
// the Manager's first scan but before the netlink subscription is in
// place is found at once (the platform says "subscribed", the Manager
// scans everything), not at the next interval (an hour here).
func TestManagerLinuxChangeBeforeSubscription(t *testing.T) {
	tm := newMgrTerminal(t)
	settle(t, tm)
	pl := lateWatch{tm.platform(t), make(chan struct{})}
	ev := newEvents()
	m := New(Options{Platform: pl, Emit: ev.emit, Logger: slog.New(slog.DiscardHandler), Interval: time.Hour})
	m.SetPolicy(mgrPolicy(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for m.Posture().GetLastScan() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no scan within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := routeFindings(m.Posture()); len(got) != 0 {
		t.Fatalf("isolated terminal has findings: %q", got)
	}
	// In the gap: nobody listens yet.
	if err := tm.h.RouteAdd(&netlink.Route{LinkIndex: tm.link.Attrs().Index, Gw: net.ParseIP("198.51.100.1")}); err != nil {
		t.Fatalf("add route: %v", err)
	}
	start := time.Now()
	close(pl.release)
	e := ev.wait(t, 2*time.Second, func(e mgrEvent) bool { return e.typ == EventFinding && e.attrs["kind"] == FindingDefaultRoute })
	t.Logf("subscription → %s for the route added before it: %v", EventFinding, e.at.Sub(start))
}

// TestWatchSaysSubscribed: the platform's Watch first says "subscribed",
// with no change made, once its subscriptions are in place; a change
// made right after is reported.
func TestWatchSaysSubscribed(t *testing.T) {
	tm := newMgrTerminal(t)
	settle(t, tm)
	pl := tm.platform(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan string, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- pl.Watch(ctx, func(what string) {
			select {
			case ch <- what:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	select {
	case w := <-ch:
		if w != "subscribed" {
			t.Fatalf("first report %q, want subscribed", w)
		}
	case err := <-errc:
		t.Fatalf("Watch: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not say subscribed within 2 s")
	}
	// Subscribed means listening: the next change is not missed.
	if err := tm.h.RouteAdd(&netlink.Route{LinkIndex: tm.link.Attrs().Index, Gw: net.ParseIP("198.51.100.1")}); err != nil {
		t.Fatalf("add route: %v", err)
	}
	select {
	case w := <-ch:
		if w != "route" {
			t.Fatalf("after the route: %q", w)
		}
	case <-time.After(time.Second):
		t.Fatal("the route was not reported")
	}
}

// settle waits until the new terminal's IPv6 link-local addresses are
// there and done with duplicate address detection (the kernel adds them
// and announces the end of it on its own, a second or so after the links
// are up), then until the namespace announces nothing for 300 ms: a test
// that must tell its own change from none then sees only its own.
func settle(t testing.TB, tm *mgrTerminal) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		addrs, err := tm.h.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("addresses: %v", err)
		}
		ready := map[int]bool{}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				ready[a.LinkIndex] = true
			}
		}
		links, err := tm.h.LinkList()
		if err != nil {
			t.Fatalf("links: %v", err)
		}
		done := true
		for _, l := range links {
			if l.Attrs().Flags&net.FlagLoopback == 0 && !ready[l.Attrs().Index] {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("link-local addresses not ready within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan string, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- tm.platform(t).Watch(ctx, func(what string) {
			select {
			case ch <- what:
			default:
			}
		})
	}()
quiet:
	for {
		select {
		case <-ch:
		case err := <-errc:
			t.Fatalf("watch: %v", err)
		case <-time.After(300 * time.Millisecond):
			break quiet
		}
		if time.Now().After(deadline) {
			t.Fatal("the namespace did not settle within 10 s")
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("watch: %v", err)
	}
	t.Logf("namespace settled after %v", time.Since(start))
}

// TestManagerLinuxDroppingRoutes: routes that drop traffic (`ip route add
// blackhole default`, unreachable, prohibit) are listed with their type
// and are no findings; a unicast route added after them is one (so the
// Manager did scan them).
func TestManagerLinuxDroppingRoutes(t *testing.T) {
	tm := newMgrTerminal(t)
	m, ev := runMgr(t, tm)
	cidr := func(s string) *net.IPNet {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	dropping := []struct {
		dst, typ string
		rtn      int
	}{
		{"0.0.0.0/0", RouteBlackhole, unix.RTN_BLACKHOLE},
		{"::/0", RouteUnreachable, unix.RTN_UNREACHABLE},
		{"203.0.113.0/24", RouteProhibit, unix.RTN_PROHIBIT},
		{"2001:db9::/32", RouteBlackhole, unix.RTN_BLACKHOLE},
	}
	for _, d := range dropping {
		if err := tm.h.RouteAdd(&netlink.Route{Dst: cidr(d.dst), Type: d.rtn}); err != nil {
			t.Fatalf("add %s route %s: %v", d.typ, d.dst, err)
		}
	}
	routes, err := tm.platform(t).Routes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dropping {
		if !slices.ContainsFunc(routes, func(r Route) bool { return r.Dst.String() == d.dst && r.Type == d.typ && r.Table == "main" }) {
			t.Errorf("%s route %s not listed: %s", d.typ, d.dst, fmtRoutes(routes))
		}
	}
	if !slices.ContainsFunc(routes, func(r Route) bool { return r.Dst.String() == "198.51.100.0/24" && r.Type == RouteUnicast }) {
		t.Errorf("the connected route is not unicast: %s", fmtRoutes(routes))
	}

	// A unicast route outside the policy, added last, is a finding: the
	// scan that found it saw the dropping ones, and raised nothing for them.
	if err := tm.h.RouteAdd(&netlink.Route{LinkIndex: tm.link.Attrs().Index, Dst: cidr("192.0.2.0/24"), Gw: net.ParseIP("198.51.100.1")}); err != nil {
		t.Fatalf("add route: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	var found bool
	for !found {
		for _, e := range ev.took() {
			if e.typ != EventFinding {
				continue
			}
			if e.attrs["kind"] == FindingRoute && e.attrs["address"] == "192.0.2.0/24" {
				found = true
				continue
			}
			t.Errorf("event %s %v", e.typ, e.attrs)
		}
		if time.Now().After(deadline) {
			t.Fatal("no finding for the unicast route within 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := routeFindings(m.Posture()); len(got) != 1 {
		t.Errorf("findings %q, want the unicast route's only", got)
	}
	var dsts []string
	for _, r := range m.Posture().GetRoutes() {
		dsts = append(dsts, r.GetDestination())
	}
	for _, d := range dropping {
		if !slices.Contains(dsts, d.dst) {
			t.Errorf("route %s not in the posture: %v", d.dst, dsts)
		}
	}
}

// TestManagerLinuxTetheringRestart: a phone (the RNDIS sysfs tree behind
// a real usb0) cut off the bus by one Manager is authorized again by the
// next one, started with the same state file and a policy without
// enforcement, although its interface is gone and that Manager never saw
// it. A device gone from sysfs needs no restoring: it is dropped from the
// state without an error.
func TestManagerLinuxTetheringRestart(t *testing.T) {
	tm := newMgrTerminal(t)
	tm.sysfs = copyTree(t, "phone-rndis")
	tm.stateFile = filepath.Join(t.TempDir(), "network-state.json")
	authorized := filepath.Join(tm.sysfs, xhci+"1-2", "authorized")
	addVeth(t, tm.h, "usb0", "usb0p")
	enf := nft.New(nft.Options{NetNS: int(tm.ns), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = enf.Remove(context.Background()) })
	on := mgrPolicy(t)
	on.Enforce = true
	_, ev, stop := runMgrWith(t, tm, enf, on)
	ev.wait(t, 2*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementUSBCut })
	if b, _ := os.ReadFile(authorized); string(b) != "0" {
		t.Fatalf("authorized = %q after the cut", b)
	}
	stop()
	fi, err := os.Stat(tm.stateFile)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode().Perm())
	}
	b, err := os.ReadFile(tm.stateFile)
	if err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(tm.sysfs, xhci+"1-2")
	if got, err := parseCutState(b); err != nil || len(got) != 1 || got[0].Device != dev {
		t.Fatalf("state %v, %v:\n%s", got, err, b)
	}
	// The kernel drops the deauthorized phone's interface; a second
	// device, recorded as cut, was unplugged meanwhile.
	if l, err := tm.h.LinkByName("usb0"); err != nil {
		t.Fatal(err)
	} else if err := tm.h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(tm.sysfs, xhci+"1-9")
	st := fmt.Sprintf(`{"version":1,"cut":[{"device":%q,"interface":"usb0"},{"device":%q,"interface":"usb1"}]}`, dev, gone)
	if err := os.WriteFile(tm.stateFile, []byte(st), 0o600); err != nil {
		t.Fatal(err)
	}

	// The agent again, after a restart, with enforcement off.
	_, ev2, stop2 := runMgrWith(t, tm, enf, mgrPolicy(t))
	defer stop2()
	e := ev2.wait(t, 2*time.Second, func(e mgrEvent) bool {
		return e.attrs["state"] == EnforcementUSBRestored && e.attrs["interface"] == "usb0"
	})
	t.Logf("restored: %s", e.msg)
	if b, _ := os.ReadFile(authorized); string(b) != "1" {
		t.Fatalf("authorized = %q after enforcement off in the next run", b)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, _ := os.ReadFile(tm.stateFile)
		got, err := parseCutState(b)
		if err == nil && len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state left: %v, %v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, e := range ev2.took() {
		if e.attrs["state"] == EnforcementFailing {
			t.Errorf("enforcement failing: %v", e.attrs)
		}
	}
}
