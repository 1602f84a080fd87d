package netcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// scanPlatform is a Platform whose scan data the test sets: the Manager's
// evaluation and event logic is pure and needs no OS to be proved (the
// real Linux platform drives it in manager_linux_test.go).
type scanPlatform struct {
	mu      sync.Mutex
	scan    Scan
	errs    map[string]error
	calls   map[string]int
	cut     []string
	restore []string
	cutErr  error
	// watch: notify sends one change; watchErr makes Watch fail at once.
	notify   chan string
	watchErr error
}

func newScanPlatform() *scanPlatform {
	return &scanPlatform{errs: make(map[string]error), calls: make(map[string]int), notify: make(chan string, 16)}
}

func (p *scanPlatform) set(f func(s *Scan)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.scan)
}

func (p *scanPlatform) fail(part string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs[part] = err
}

func (p *scanPlatform) count(part string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[part]
}

func fakePart[T any](p *scanPlatform, name string, get func(Scan) []T) ([]T, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[name]++
	if err := p.errs[name]; err != nil {
		return nil, err
	}
	return slices.Clone(get(p.scan)), nil
}

func (p *scanPlatform) Adapters(context.Context) ([]Adapter, error) {
	return fakePart(p, PartAdapters, func(s Scan) []Adapter { return s.Adapters })
}
func (p *scanPlatform) Routes(context.Context) ([]Route, error) {
	return fakePart(p, PartRoutes, func(s Scan) []Route { return s.Routes })
}
func (p *scanPlatform) Sockets(context.Context) ([]Socket, error) {
	return fakePart(p, PartSockets, func(s Scan) []Socket { return s.Sockets })
}
func (p *scanPlatform) DNS(context.Context) ([]DNSServer, error) {
	return fakePart(p, PartDNS, func(s Scan) []DNSServer { return s.DNS })
}

func (p *scanPlatform) Watch(ctx context.Context, changed func(string)) error {
	if p.watchErr != nil {
		return p.watchErr
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case what := <-p.notify:
			changed(what)
		}
	}
}

func (p *scanPlatform) CutUSB(a Adapter) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cutErr != nil {
		return p.cutErr
	}
	p.cut = append(p.cut, a.USBDevice)
	return nil
}

func (p *scanPlatform) RestoreUSB(dir string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.restore = append(p.restore, dir)
	return nil
}

// recEnforcer is an Enforcer that records what the Manager asks of it and
// holds "rules" as one policy key; drift() makes them vanish.
type recEnforcer struct {
	mu       sync.Mutex
	calls    []string
	rules    string // the policy key installed; "" none
	applyErr error
	checkErr error
	// checkErrOnce fails the next Check only.
	checkErrOnce error
	// neverInPlace: Check never agrees with what Apply installed.
	neverInPlace bool
	changed      chan struct{}
	watchErr     error
}

func newRecEnforcer() *recEnforcer { return &recEnforcer{changed: make(chan struct{}, 16)} }

func (e *recEnforcer) Mechanism() string { return "test rules" }

func (e *recEnforcer) Apply(_ context.Context, p *netpolicy.Policy) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, "apply "+p.ComputeVersion())
	if e.applyErr != nil {
		return e.applyErr
	}
	if !p.Enforce {
		return errors.New("apply called for a policy without enforcement")
	}
	e.rules = policyKey(p)
	return nil
}

func (e *recEnforcer) Check(_ context.Context, p *netpolicy.Policy) (bool, string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, "check")
	if err := e.checkErrOnce; err != nil {
		e.checkErrOnce = nil
		return false, "", err
	}
	if e.checkErr != nil {
		return false, "", e.checkErr
	}
	if e.neverInPlace {
		return false, "rule 3 differs", nil
	}
	if e.rules == "" {
		return false, "table missing", nil
	}
	if e.rules != policyKey(p) {
		return false, "rules of another policy", nil
	}
	return true, "", nil
}

func (e *recEnforcer) Remove(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, "remove")
	e.rules = ""
	return nil
}

func (e *recEnforcer) Watch(ctx context.Context, changed func()) error {
	if e.watchErr != nil {
		return e.watchErr
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.changed:
			changed()
		}
	}
}

// drift removes the rules behind the Manager's back and announces it.
func (e *recEnforcer) drift() {
	e.mu.Lock()
	e.rules = ""
	e.mu.Unlock()
	e.changed <- struct{}{}
}

// took returns the calls since the last took.
func (e *recEnforcer) took() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.calls
	e.calls = nil
	return c
}

func (e *recEnforcer) set(f func(e *recEnforcer)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

type mgrEvent struct {
	typ   string
	sev   mnguardv1.Severity
	msg   string
	attrs map[string]string
	at    time.Time // when it was emitted
}

// events records what the Manager emits.
type mgrEvents struct {
	mu     sync.Mutex
	all    []mgrEvent
	signal chan struct{}
}

func newEvents() *mgrEvents { return &mgrEvents{signal: make(chan struct{}, 1)} }

func (r *mgrEvents) emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	r.mu.Lock()
	r.all = append(r.all, mgrEvent{typ, sev, msg, attrs, time.Now()})
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// took returns the events since the last took.
func (r *mgrEvents) took() []mgrEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.all
	r.all = nil
	return e
}

// wait waits up to d for an event that matches, and returns it.
func (r *mgrEvents) wait(t *testing.T, d time.Duration, match func(mgrEvent) bool) mgrEvent {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		for i, e := range r.all {
			if match(e) {
				r.all = slices.Delete(r.all, 0, i+1)
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			r.mu.Lock()
			var seen []string
			for _, e := range r.all {
				seen = append(seen, e.typ+" "+e.attrs["kind"]+e.attrs["state"]+": "+e.msg)
			}
			r.mu.Unlock()
			t.Fatalf("no matching event within %v; events since the last match: %q", d, seen)
		}
		select {
		case <-r.signal:
		case <-time.After(min(left, 50*time.Millisecond)):
		}
	}
}

func eventKinds(es []mgrEvent) []string {
	var out []string
	for _, e := range es {
		s := e.typ
		if k := e.attrs["kind"]; k != "" {
			s += " " + k
		}
		if st := e.attrs["state"]; st != "" {
			s += " " + st
		}
		out = append(out, s)
	}
	return out
}

type mgrRig struct {
	pl      *scanPlatform
	enf     *recEnforcer
	ev      *mgrEvents
	clock   *fakeclock.Clock
	m       *Manager
	mu      sync.Mutex
	changes int
	col     []netip.Addr
}

func newRig(t *testing.T, withEnforcer bool) *mgrRig {
	t.Helper()
	r := &mgrRig{pl: newScanPlatform(), ev: newEvents(), clock: fakeclock.New(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))}
	o := Options{
		Platform: r.pl,
		Emit:     r.ev.emit,
		OnChange: func() { r.mu.Lock(); r.changes++; r.mu.Unlock() },
		Collector: func() []netip.Addr {
			r.mu.Lock()
			defer r.mu.Unlock()
			return slices.Clone(r.col)
		},
		Now:    r.clock.Now,
		Logger: slog.New(slog.DiscardHandler),
	}
	if withEnforcer {
		r.enf = newRecEnforcer()
		o.Enforcer = r.enf
	}
	r.m = New(o)
	return r
}

func (r *mgrRig) changeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes
}

func (r *mgrRig) scan(t *testing.T) *mnguardv1.NetworkPosture {
	t.Helper()
	if err := r.m.Scan(context.Background()); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return r.m.Posture()
}

func findingKinds(np *mnguardv1.NetworkPosture) []string {
	var out []string
	for _, f := range np.GetFindings() {
		out = append(out, f.GetKind())
	}
	return out
}

var badConn = Socket{Proto: "tcp", Local: netip.MustParseAddrPort("198.51.100.5:50000"), Remote: netip.MustParseAddrPort("203.0.113.7:443"), State: "ESTABLISHED", PID: 4242, Process: "curl", User: "alice"}

func TestManagerFindingLifecycle(t *testing.T) {
	r := newRig(t, false)
	r.pl.set(func(s *Scan) {
		s.Adapters = []Adapter{{Name: "eth0", Kind: KindEthernet, Up: true, Addrs: tPrefixes("198.51.100.5/24")}}
		s.Routes = []Route{{Dst: tPrefix("198.51.100.0/24"), Interface: "eth0", Table: "main"}}
		s.Sockets = []Socket{badConn}
	})
	r.m.SetPolicy(testPolicy(t, false))
	np := r.scan(t)
	es := r.ev.took()
	if len(es) != 1 || es[0].typ != EventFinding || es[0].sev != mnguardv1.Severity_SEVERITY_ALERT {
		t.Fatalf("events %v: want one network.finding ALERT", eventKinds(es))
	}
	a := es[0].attrs
	for k, v := range map[string]string{"kind": FindingSocket, "process": "curl", "pid": "4242", "user": "alice", "interface": "eth0", "address": "203.0.113.7:443"} {
		if a[k] != v {
			t.Errorf("attr %s = %q, want %q", k, a[k], v)
		}
	}
	if !strings.Contains(a["detail"], "tcp 198.51.100.5:50000 → 203.0.113.7:443 established") || a["id"] == "" {
		t.Errorf("attrs %v", a)
	}
	if len(np.GetFindings()) != 1 || np.GetFindings()[0].GetId() != a["id"] || np.GetFindings()[0].GetPid() != 4242 {
		t.Fatalf("posture findings %v", np.GetFindings())
	}
	first := np.GetFindings()[0].GetFirstSeen().AsTime()
	if !first.Equal(r.clock.Now()) {
		t.Errorf("first_seen %v, want %v", first, r.clock.Now())
	}
	if np.GetPolicyVersion() != testPolicy(t, false).Version || np.GetSocketsTotal() != 1 || len(np.GetRoutes()) != 1 || len(np.GetAdapters()) != 1 {
		t.Errorf("posture %v", np)
	}
	changes := r.changeCount()

	// The cause persists, in another state: no event, first_seen kept.
	r.clock.Add(time.Minute)
	r.pl.set(func(s *Scan) { s.Sockets[0].State = "CLOSE_WAIT" })
	np = r.scan(t)
	if es := r.ev.took(); len(es) != 0 {
		t.Errorf("persisting finding raised %v", eventKinds(es))
	}
	if got := np.GetFindings()[0].GetFirstSeen().AsTime(); !got.Equal(first) {
		t.Errorf("first_seen moved from %v to %v", first, got)
	}
	if !strings.Contains(np.GetFindings()[0].GetDetail(), "close_wait") {
		t.Errorf("detail not updated: %q", np.GetFindings()[0].GetDetail())
	}
	if !np.GetLastScan().AsTime().Equal(r.clock.Now()) {
		t.Errorf("last_scan %v", np.GetLastScan().AsTime())
	}
	changes2 := r.changeCount()
	if changes2 != changes+1 {
		t.Errorf("OnChange called %d times for a changed detail, want 1", changes2-changes)
	}
	// Nothing changed but the time and the socket count: no OnChange.
	r.pl.set(func(s *Scan) {
		s.Sockets = append(s.Sockets, Socket{Proto: "tcp", Local: netip.MustParseAddrPort("198.51.100.5:50001"), Remote: netip.MustParseAddrPort("198.51.100.7:22"), State: "ESTABLISHED", PID: 7})
	})
	r.clock.Add(time.Minute)
	r.scan(t)
	if got := r.changeCount(); got != changes2 {
		t.Errorf("OnChange called %d times for an unchanged posture", got-changes2)
	}

	// The cause goes away: one cleared event.
	r.pl.set(func(s *Scan) { s.Sockets = s.Sockets[1:] })
	np = r.scan(t)
	es = r.ev.took()
	if len(es) != 1 || es[0].typ != EventFindingCleared || es[0].sev != mnguardv1.Severity_SEVERITY_INFO || es[0].attrs["id"] != a["id"] || es[0].attrs["kind"] != FindingSocket {
		t.Fatalf("events %v %v: want one network.finding_cleared of %s", eventKinds(es), es, a["id"])
	}
	if len(np.GetFindings()) != 0 {
		t.Errorf("findings left: %v", np.GetFindings())
	}
	if r.changeCount() != changes2+1 {
		t.Error("OnChange not called when the finding cleared")
	}

	// The same cause again is a new finding with a new first_seen.
	r.clock.Add(time.Minute)
	r.pl.set(func(s *Scan) { s.Sockets = append(s.Sockets, badConn) })
	np = r.scan(t)
	if es := r.ev.took(); len(es) != 1 || es[0].attrs["id"] != a["id"] {
		t.Fatalf("events %v", eventKinds(es))
	}
	if got := np.GetFindings()[0].GetFirstSeen().AsTime(); !got.Equal(r.clock.Now()) {
		t.Errorf("first_seen %v, want %v", got, r.clock.Now())
	}
}

func TestManagerNoPolicyYet(t *testing.T) {
	r := newRig(t, true)
	r.pl.set(func(s *Scan) {
		s.Adapters = []Adapter{{Name: "wlan0", Kind: KindWireless}}
		s.Routes = []Route{{Dst: tPrefix("0.0.0.0/0"), Interface: "wlan0"}}
		s.Sockets = []Socket{badConn}
	})
	np := r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingWireless}) {
		t.Errorf("findings without a policy %v, want only wireless", got)
	}
	if calls := r.enf.took(); len(calls) != 0 {
		t.Errorf("enforcer called before the policy was known: %v", calls)
	}
	if np.GetPolicyVersion() != "" || np.GetEnforcement().GetRequested() || np.GetEnforcement().GetMechanism() != "test rules" {
		t.Errorf("posture %v", np)
	}
	// A policy: the rest is judged now.
	r.m.SetPolicy(testPolicy(t, false))
	np = r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingDefaultRoute, FindingSocket, FindingWireless}) {
		t.Errorf("findings %v", got)
	}
	// No enforcement: the rules a former run may have left are removed
	// (silently: this run installed none).
	if calls := r.enf.took(); !slices.Equal(calls, []string{"remove"}) {
		t.Errorf("enforcer calls %v, want [remove]", calls)
	}
	for _, e := range r.ev.took() {
		if e.typ == EventEnforcement {
			t.Errorf("unexpected %v", e)
		}
	}
	r.scan(t)
	if calls := r.enf.took(); len(calls) != 0 {
		t.Errorf("enforcer calls %v on a second scan without enforcement", calls)
	}
}

func TestManagerScanPartFails(t *testing.T) {
	r := newRig(t, false)
	r.pl.set(func(s *Scan) {
		s.Routes = []Route{{Dst: tPrefix("198.51.100.0/24"), Interface: "eth0"}}
		s.Sockets = []Socket{badConn}
		s.DNS = []DNSServer{{Addr: tAddr("198.51.100.53")}}
	})
	r.m.SetPolicy(testPolicy(t, false))
	r.scan(t)
	r.ev.took()
	// Sockets fail, and a default route appears: the route is still
	// judged, the socket finding stands (it cannot be seen to be gone).
	r.pl.fail(PartSockets, errors.New("permission denied"))
	r.pl.set(func(s *Scan) {
		s.Routes = append(s.Routes, Route{Dst: tPrefix("0.0.0.0/0"), Gateway: tAddr("198.51.100.1"), Interface: "eth0"})
		s.Sockets = nil
	})
	np := r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingDefaultRoute, FindingScanError, FindingSocket}) {
		t.Errorf("findings %v", got)
	}
	if got := np.GetScanErrors(); !slices.Equal(got, []string{"sockets: permission denied"}) {
		t.Errorf("scan_errors %q", got)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.finding default_route", "network.finding scan_error"}) {
		t.Errorf("events %v", got)
	}
	// Back: the socket is gone now, and so is the scan error.
	r.pl.fail(PartSockets, nil)
	np = r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingDefaultRoute}) {
		t.Errorf("findings %v", got)
	}
	if len(np.GetScanErrors()) != 0 {
		t.Errorf("scan_errors %q", np.GetScanErrors())
	}
	got := eventKinds(r.ev.took())
	slices.Sort(got)
	if !slices.Equal(got, []string{"network.finding_cleared scan_error", "network.finding_cleared socket"}) {
		t.Errorf("events %v", got)
	}
}

func TestManagerEnforcementSequence(t *testing.T) {
	r := newRig(t, true)
	r.col = []netip.Addr{tAddr("192.0.2.99")}
	r.pl.set(func(s *Scan) {
		s.Sockets = []Socket{
			{Proto: "tcp", Local: netip.MustParseAddrPort("0.0.0.0:22"), State: "LISTEN", PID: 1, Process: "sshd"},
			{Proto: "tcp", Local: netip.MustParseAddrPort("198.51.100.5:50000"), Remote: netip.MustParseAddrPort("192.0.2.99:9443"), State: "ESTABLISHED", PID: 2, Process: "mnguard-agent"},
		}
	})
	pol := testPolicy(t, true)
	r.m.SetPolicy(pol)
	if len(pol.Collector) != 1 {
		t.Fatalf("SetPolicy changed the caller's policy: collector %v", pol.Collector)
	}
	np := r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"apply " + pol.Version}) {
		t.Fatalf("calls %v, want apply", got)
	}
	r.enf.mu.Lock()
	rules := r.enf.rules
	r.enf.mu.Unlock()
	if !strings.Contains(rules, "192.0.2.99") || !strings.Contains(rules, "192.0.2.10") {
		t.Errorf("applied policy %q lacks the collector addresses", rules)
	}
	e := np.GetEnforcement()
	if !e.GetRequested() || !e.GetInPlace() || e.GetMechanism() != "test rules" || e.GetRepairs() != 0 {
		t.Errorf("enforcement %v", e)
	}
	// The listener is no finding under enforcement; the collector
	// connection none at all.
	if len(np.GetFindings()) != 0 {
		t.Errorf("findings %v", np.GetFindings())
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement in_place"}) {
		t.Errorf("events %v", got)
	}

	// Every scan checks.
	r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"check"}) {
		t.Errorf("calls %v, want check", got)
	}
	if es := r.ev.took(); len(es) != 0 {
		t.Errorf("events %v", eventKinds(es))
	}

	// Drift: the check finds the table gone; repaired at once.
	r.enf.set(func(e *recEnforcer) { e.rules = "" })
	r.clock.Add(time.Minute)
	np = r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"check", "apply " + pol.Version, "check"}) {
		t.Errorf("calls %v, want check, apply, check", got)
	}
	es := r.ev.took()
	if got := eventKinds(es); !slices.Equal(got, []string{"network.enforcement repaired"}) || es[0].sev != mnguardv1.Severity_SEVERITY_ALERT || es[0].attrs["detail"] != "table missing" {
		t.Errorf("events %v %v", got, es)
	}
	e = np.GetEnforcement()
	if !e.GetInPlace() || e.GetRepairs() != 1 || !e.GetLastRepair().AsTime().Equal(r.clock.Now()) || !strings.Contains(e.GetDetail(), "table missing") {
		t.Errorf("enforcement after repair %v", e)
	}

	// Another collector address: applied again.
	r.mu.Lock()
	r.col = append(r.col, tAddr("2001:db8:ffff::1"))
	r.mu.Unlock()
	r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"apply " + pol.Version}) {
		t.Errorf("calls %v, want apply for the new collector address", got)
	}
	r.ev.took()

	// Enforcement off: removed once; the listener is a finding again.
	r.m.SetPolicy(testPolicy(t, false))
	np = r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"remove"}) {
		t.Errorf("calls %v, want remove", got)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement removed", "network.finding listener"}) {
		t.Errorf("events %v", got)
	}
	if e := np.GetEnforcement(); e.GetRequested() || e.GetInPlace() || e.GetRepairs() != 1 {
		t.Errorf("enforcement %v", e)
	}
	r.scan(t)
	if got := r.enf.took(); len(got) != 0 {
		t.Errorf("calls %v after removal", got)
	}
	// Policy gone (nil): nothing more to remove.
	r.m.SetPolicy(nil)
	np = r.scan(t)
	if got := r.enf.took(); len(got) != 0 {
		t.Errorf("calls %v", got)
	}
	if np.GetPolicyVersion() != "" {
		t.Errorf("policy version %q without a policy", np.GetPolicyVersion())
	}
}

func TestManagerEnforcementFailsAndRetries(t *testing.T) {
	r := newRig(t, true)
	r.m.retryMin, r.m.retryMax = 10*time.Second, 40*time.Second
	r.enf.set(func(e *recEnforcer) { e.applyErr = errors.New("netlink: operation not permitted") })
	pol := testPolicy(t, true)
	r.m.SetPolicy(pol)
	np := r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingEnforcement}) {
		t.Fatalf("findings %v", got)
	}
	if f := np.GetFindings()[0]; !strings.Contains(f.GetDetail(), "operation not permitted") {
		t.Errorf("finding detail %q", f.GetDetail())
	}
	if e := np.GetEnforcement(); !e.GetRequested() || e.GetInPlace() || !strings.Contains(e.GetDetail(), "apply rules: netlink: operation not permitted") {
		t.Errorf("enforcement %v", e)
	}
	es := r.ev.took()
	if got := eventKinds(es); !slices.Equal(got, []string{"network.enforcement failing", "network.finding enforcement"}) {
		t.Fatalf("events %v", got)
	}
	if es[0].sev != mnguardv1.Severity_SEVERITY_ALERT || es[1].sev != mnguardv1.Severity_SEVERITY_WARNING {
		t.Errorf("severities %v %v", es[0].sev, es[1].sev)
	}
	r.enf.took()
	// Within the backoff: not tried again.
	r.clock.Add(5 * time.Second)
	r.scan(t)
	if got := r.enf.took(); len(got) != 0 {
		t.Errorf("tried within the backoff: %v", got)
	}
	if due, ok := r.m.retryDue(); !ok || !due.Equal(r.clock.Now().Add(5*time.Second)) {
		t.Errorf("retry due %v %v", due, ok)
	}
	// Due: tried, fails again (no second failing event), backoff doubles.
	r.clock.Add(5 * time.Second)
	r.scan(t)
	if got := r.enf.took(); len(got) != 1 {
		t.Errorf("calls %v, want one apply", got)
	}
	if es := r.ev.took(); len(es) != 0 {
		t.Errorf("events %v", eventKinds(es))
	}
	if due, _ := r.m.retryDue(); !due.Equal(r.clock.Now().Add(20 * time.Second)) {
		t.Errorf("retry due %v, want in 20 s", due)
	}
	// Fixed: the next due attempt puts it in place; the finding clears.
	r.enf.set(func(e *recEnforcer) { e.applyErr = nil })
	r.clock.Add(20 * time.Second)
	np = r.scan(t)
	if !np.GetEnforcement().GetInPlace() || len(np.GetFindings()) != 0 {
		t.Errorf("posture %v", np)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement in_place", "network.finding_cleared enforcement"}) {
		t.Errorf("events %v", got)
	}
	if _, ok := r.m.retryDue(); ok {
		t.Error("retry still pending")
	}

	// A check that fails once (the table deleted while it was read):
	// the second check sees the drift, which is repaired and counted.
	r.enf.took()
	r.enf.set(func(e *recEnforcer) {
		e.rules, e.checkErrOnce = "", errors.New("list elements: no such file or directory")
	})
	np = r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"check", "check", "apply " + pol.Version, "check"}) {
		t.Errorf("calls %v", got)
	}
	if e := np.GetEnforcement(); !e.GetInPlace() || e.GetRepairs() != 1 {
		t.Errorf("enforcement %v", e)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement repaired"}) {
		t.Errorf("events %v", got)
	}

	// A check that keeps failing: applied again (fail closed) but not
	// in place, and not again before the backoff.
	r.enf.set(func(e *recEnforcer) { e.checkErr = errors.New("dump failed") })
	np = r.scan(t)
	if got := r.enf.took(); !slices.Equal(got, []string{"check", "check", "apply " + pol.Version}) {
		t.Errorf("calls %v", got)
	}
	if e := np.GetEnforcement(); e.GetInPlace() || !strings.Contains(e.GetDetail(), "check rules: dump failed (applied again, unverified)") {
		t.Errorf("enforcement %v", e)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement failing", "network.finding enforcement"}) {
		t.Errorf("events %v", got)
	}
	r.scan(t)
	if got := r.enf.took(); len(got) != 0 {
		t.Errorf("calls %v within the backoff", got)
	}
}

// TestManagerRepairNeverChecksOut: an enforcer whose check never agrees
// with its own rules fails with a backoff instead of repairing in a loop
// (each repair announces itself and would start the next).
func TestManagerRepairNeverChecksOut(t *testing.T) {
	r := newRig(t, true)
	r.m.o.Now = nil
	r.m.retryMin = time.Hour
	r.m.SetPolicy(testPolicy(t, true))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	r.ev.wait(t, 5*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementInPlace })
	r.enf.set(func(e *recEnforcer) { e.neverInPlace = true })
	for range 3 {
		r.enf.changed <- struct{}{} // announced changes, as the repair's own would be
	}
	f := r.ev.wait(t, time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementFailing })
	if !strings.Contains(f.attrs["detail"], "rules applied again but still not in place: rule 3 differs") {
		t.Errorf("failing event %v", f)
	}
	time.Sleep(300 * time.Millisecond)
	r.enf.changed <- struct{}{}
	time.Sleep(300 * time.Millisecond)
	applies := 0
	for _, c := range r.enf.took() {
		if strings.HasPrefix(c, "apply") {
			applies++
		}
	}
	if applies != 2 { // the first install and one repair
		t.Errorf("%d applies, want 2 (no repair loop)", applies)
	}
	if np := r.m.Posture(); np.GetEnforcement().GetInPlace() || np.GetEnforcement().GetRepairs() != 0 {
		t.Errorf("enforcement %v", np.GetEnforcement())
	}
	cancel()
	<-done
}

func TestManagerNoMechanism(t *testing.T) {
	r := newRig(t, false)
	r.m.SetPolicy(testPolicy(t, true))
	np := r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingEnforcement}) || !strings.Contains(np.GetFindings()[0].GetDetail(), NoMechanism) {
		t.Errorf("findings %v", np.GetFindings())
	}
	if e := np.GetEnforcement(); !e.GetRequested() || e.GetInPlace() || e.GetMechanism() != "" || e.GetDetail() != NoMechanism {
		t.Errorf("enforcement %v", e)
	}
	r.m.SetPolicy(testPolicy(t, false))
	np = r.scan(t)
	if len(np.GetFindings()) != 0 || np.GetEnforcement().GetRequested() {
		t.Errorf("posture %v", np)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.finding enforcement", "network.finding_cleared enforcement"}) {
		t.Errorf("events %v", got)
	}
}

func TestManagerUSBCut(t *testing.T) {
	r := newRig(t, true)
	usb := Adapter{Name: "usb0", Kind: KindUSB, Up: true, VendorID: "18d1", ProductID: "4ee3", Driver: "rndis_host", USBDevice: "/sys/devices/usb1/1-2", Addrs: tPrefixes("192.168.42.129/24")}
	r.pl.set(func(s *Scan) { s.Adapters = []Adapter{usb} })
	// Without enforcement: a finding, nothing cut.
	r.m.SetPolicy(testPolicy(t, false))
	np := r.scan(t)
	if got := findingKinds(np); !slices.Equal(got, []string{FindingRoute, FindingUSBAdapter}) {
		t.Errorf("findings %v", got)
	}
	r.ev.took()

	r.m.SetPolicy(testPolicy(t, true))
	np = r.scan(t)
	r.pl.mu.Lock()
	cut := slices.Clone(r.pl.cut)
	r.pl.mu.Unlock()
	if !slices.Equal(cut, []string{usb.USBDevice}) {
		t.Errorf("cut %v", cut)
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement usb_cut", "network.enforcement in_place"}) {
		t.Errorf("events %v", got)
	}
	if a := np.GetAdapters()[0]; a.GetState() != AdapterDeauthorized {
		t.Errorf("adapter %v", a)
	}
	for _, f := range np.GetFindings() {
		if f.GetKind() == FindingUSBAdapter && !strings.Contains(f.GetDetail(), "cut off the bus") {
			t.Errorf("finding %v", f)
		}
	}
	// The kernel drops the interface: the finding clears, the posture
	// still shows the adapter, deauthorized.
	r.pl.set(func(s *Scan) { s.Adapters = nil })
	np = r.scan(t)
	if len(np.GetFindings()) != 0 {
		t.Errorf("findings %v", np.GetFindings())
	}
	if len(np.GetAdapters()) != 1 || np.GetAdapters()[0].GetState() != AdapterDeauthorized || np.GetAdapters()[0].GetUp() || np.GetAdapters()[0].GetName() != "usb0" {
		t.Errorf("adapters %v", np.GetAdapters())
	}
	got := eventKinds(r.ev.took())
	slices.Sort(got)
	if !slices.Equal(got, []string{"network.finding_cleared route", "network.finding_cleared usb_adapter"}) {
		t.Errorf("events %v", got)
	}
	// Enforcement off: authorized again.
	r.m.SetPolicy(testPolicy(t, false))
	np = r.scan(t)
	r.pl.mu.Lock()
	restored := slices.Clone(r.pl.restore)
	r.pl.mu.Unlock()
	if !slices.Equal(restored, []string{usb.USBDevice}) {
		t.Errorf("restored %v", restored)
	}
	if len(np.GetAdapters()) != 0 {
		t.Errorf("adapters %v", np.GetAdapters())
	}
	if got := eventKinds(r.ev.took()); !slices.Equal(got, []string{"network.enforcement removed", "network.enforcement usb_restored"}) {
		t.Errorf("events %v", got)
	}

	// A cut that fails is said once, and the finding stays.
	r.pl.mu.Lock()
	r.pl.cutErr = errors.New("write authorized: permission denied")
	r.pl.mu.Unlock()
	r.pl.set(func(s *Scan) { s.Adapters = []Adapter{usb} })
	r.m.SetPolicy(testPolicy(t, true))
	r.scan(t)
	np = r.scan(t)
	fails := 0
	for _, e := range r.ev.took() {
		if e.typ == EventEnforcement && e.attrs["state"] == EnforcementFailing {
			fails++
		}
	}
	if fails != 1 {
		t.Errorf("%d failing events for one failed cut, want 1", fails)
	}
	if got := findingKinds(np); !slices.Contains(got, FindingUSBAdapter) {
		t.Errorf("findings %v", got)
	}
}

// TestManagerRun drives Run: a network change announced is scanned at
// once, drift announced is repaired at once, a policy set is applied at
// once, and Run's end leaves the rules in place.
func TestManagerRun(t *testing.T) {
	r := newRig(t, true)
	r.m.o.Now = nil // Run's timers are real
	r.m.SetPolicy(testPolicy(t, true))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	r.ev.wait(t, 5*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementInPlace })

	r.pl.set(func(s *Scan) { s.Routes = []Route{{Dst: tPrefix("0.0.0.0/0"), Interface: "eth0"}} })
	start := time.Now()
	for range 5 { // a burst: one scan
		r.pl.notify <- "route"
	}
	r.ev.wait(t, time.Second, func(e mgrEvent) bool { return e.attrs["kind"] == FindingDefaultRoute })
	t.Logf("announced change to finding: %v", time.Since(start))
	time.Sleep(150 * time.Millisecond)
	if n := r.pl.count(PartRoutes); n > 3 {
		t.Errorf("%d route scans for a start and one burst", n)
	}
	if n := r.pl.count(PartSockets); n != 1 {
		t.Errorf("%d socket scans: a network change must not list sockets again", n)
	}
	// Any other announcement (the watch in place, lost messages, sockets)
	// scans everything.
	for i, what := range []string{"resubscribed", "subscribed"} {
		r.pl.notify <- what
		deadline := time.Now().Add(time.Second)
		for r.pl.count(PartSockets) != 2+i {
			if time.Now().After(deadline) {
				t.Fatalf("%d socket scans after %q, want %d", r.pl.count(PartSockets), what, 2+i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	start = time.Now()
	r.enf.drift()
	r.ev.wait(t, time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementRepaired })
	t.Logf("drift to repair: %v", time.Since(start))
	// The posture follows the event (the same recheck).
	waitPosture(t, r.m, func(np *mnguardv1.NetworkPosture) bool {
		return np.GetEnforcement().GetRepairs() == 1 && np.GetEnforcement().GetInPlace()
	})

	r.pl.set(func(s *Scan) { s.Sockets = []Socket{badConn} })
	r.m.SetPolicy(testPolicy(t, true).WithCollector(tAddr("192.0.2.77")))
	r.ev.wait(t, time.Second, func(e mgrEvent) bool { return e.attrs["kind"] == FindingSocket })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end with its context")
	}
	for _, c := range r.enf.took() {
		if c == "remove" {
			t.Error("Run removed the rules")
		}
	}
	r.enf.mu.Lock()
	defer r.enf.mu.Unlock()
	if r.enf.rules == "" {
		t.Error("rules gone after Run ended")
	}
}

// waitPosture waits up to a second for the posture to satisfy ok.
func waitPosture(t *testing.T, m *Manager, ok func(*mnguardv1.NetworkPosture) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		np := m.Posture()
		if ok(np) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("posture not as expected within 1 s: %v", np)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestManagerRunWithoutWatch: when neither the platform nor the enforcer
// can watch, Run says so in the posture and polls.
func TestManagerRunWithoutWatch(t *testing.T) {
	r := newRig(t, true)
	r.m.o.Now = nil
	r.m.watchPoll, r.m.enforcePoll = 100*time.Millisecond, 100*time.Millisecond
	r.pl.watchErr = errors.New("netlink: protocol not supported")
	r.enf.watchErr = errors.New("nftables: no multicast")
	r.m.SetPolicy(testPolicy(t, true))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	r.ev.wait(t, 5*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementInPlace })

	r.pl.set(func(s *Scan) { s.DNS = []DNSServer{{Addr: tAddr("8.8.8.8"), Source: "/etc/resolv.conf"}} })
	r.ev.wait(t, time.Second, func(e mgrEvent) bool { return e.attrs["kind"] == FindingDNS })
	r.enf.set(func(e *recEnforcer) { e.rules = "" })
	r.ev.wait(t, time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementRepaired })

	want := []string{
		"watch: netlink: protocol not supported; scanning every 100ms",
		"enforcement watch: nftables: no multicast; checking every 100ms",
	}
	waitPosture(t, r.m, func(np *mnguardv1.NetworkPosture) bool { return slices.Equal(np.GetScanErrors(), want) })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestManagerRetryTimer: Run tries failed enforcement again on its own.
func TestManagerRetryTimer(t *testing.T) {
	r := newRig(t, true)
	r.m.o.Now = nil
	r.m.retryMin = 50 * time.Millisecond
	r.enf.set(func(e *recEnforcer) { e.applyErr = errors.New("busy") })
	r.m.SetPolicy(testPolicy(t, true))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	r.ev.wait(t, 5*time.Second, func(e mgrEvent) bool { return e.attrs["kind"] == FindingEnforcement })
	r.enf.set(func(e *recEnforcer) { e.applyErr = nil })
	r.ev.wait(t, 2*time.Second, func(e mgrEvent) bool { return e.attrs["state"] == EnforcementInPlace })
	r.ev.wait(t, time.Second, func(e mgrEvent) bool {
		return e.typ == EventFindingCleared && e.attrs["kind"] == FindingEnforcement
	})
	cancel()
	<-done
}

// TestManagerConcurrent: Posture, SetPolicy and Scan from many goroutines
// while Run runs (for the race detector).
func TestManagerConcurrent(t *testing.T) {
	r := newRig(t, true)
	r.m.o.Now = nil
	r.pl.set(func(s *Scan) { s.Sockets = []Socket{badConn} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				switch (i + j) % 4 {
				case 0:
					r.m.SetPolicy(testPolicy(t, j%2 == 0))
				case 1:
					_ = r.m.Scan(ctx)
				case 2:
					_ = r.m.Posture()
				case 3:
					r.pl.notify <- fmt.Sprint("link", j)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// BenchmarkManagerScan is one full scan through the Manager of what a
// platform returned (5,000 sockets, as BenchmarkEvaluate/half_outside:
// 3,000 findings, the worst case): evaluation,
// the diff against the findings in force, the posture; the findings
// persist from one scan to the next, as they do on a terminal. The
// platform's own cost (listing the sockets) is BenchmarkScanSockets5000.
func BenchmarkManagerScan(b *testing.B) {
	pl := newScanPlatform()
	pl.set(func(s *Scan) { *s = evalBenchScan(5000, true) })
	m := New(Options{Platform: pl, Logger: slog.New(slog.DiscardHandler)})
	m.SetPolicy(testPolicy(b, false))
	ctx := context.Background()
	m.Scan(ctx)
	b.ReportAllocs()
	for b.Loop() {
		m.Scan(ctx)
	}
	b.ReportMetric(float64(len(m.Posture().GetFindings())), "findings")
}

// rigWithState is newRig whose Manager keeps its cut USB adapters in
// stateFile.
func rigWithState(t *testing.T, stateFile string, logs io.Writer) *mgrRig {
	t.Helper()
	r := newRig(t, true)
	o := r.m.o
	o.StateFile = stateFile
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	r.m = New(o)
	return r
}

// TestManagerCutStateFile: a USB adapter cut is recorded in the state
// file (mode 0600); a new Manager with the same file and a policy without
// enforcement authorizes it again, although it never saw it, shows it
// meanwhile as deauthorized, and records that none is left.
func TestManagerCutStateFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "network-state.json")
	usb := Adapter{Name: "usb0", Kind: KindUSB, Up: true, VendorID: "18d1", ProductID: "4ee3", Driver: "rndis_host", USBDevice: "/sys/devices/usb1/1-2", Addrs: tPrefixes("192.168.42.129/24")}
	r := rigWithState(t, state, nil)
	r.pl.set(func(s *Scan) { s.Adapters = []Adapter{usb} })
	r.m.SetPolicy(testPolicy(t, true))
	r.scan(t)
	if !slices.Equal(r.pl.cut, []string{usb.USBDevice}) {
		t.Fatalf("cut %v", r.pl.cut)
	}
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(state)); len(ents) != 1 {
		t.Errorf("files left next to the state: %v", ents)
	}

	// The agent restarts; the phone's interface is gone (the kernel drops
	// it with the device deauthorized); the policy no longer enforces.
	r2 := rigWithState(t, state, nil)
	r2.m.SetPolicy(testPolicy(t, true))
	np := r2.scan(t)
	if i := slices.IndexFunc(np.GetAdapters(), func(a *mnguardv1.NetworkAdapter) bool { return a.GetName() == "usb0" }); i < 0 ||
		np.GetAdapters()[i].GetState() != AdapterDeauthorized || np.GetAdapters()[i].GetVendorId() != "18d1" {
		t.Errorf("adapters after the restart: %v", np.GetAdapters())
	}
	if len(r2.pl.restore) != 0 {
		t.Fatalf("restored with enforcement on: %v", r2.pl.restore)
	}
	r2.m.SetPolicy(testPolicy(t, false))
	r2.scan(t)
	if !slices.Equal(r2.pl.restore, []string{usb.USBDevice}) {
		t.Fatalf("restored %v, want the phone cut by the earlier run", r2.pl.restore)
	}
	r2.ev.wait(t, time.Second, func(e mgrEvent) bool {
		return e.attrs["state"] == EnforcementUSBRestored && e.attrs["interface"] == "usb0"
	})
	// Nothing left for a third run.
	r3 := rigWithState(t, state, nil)
	r3.m.SetPolicy(testPolicy(t, false))
	r3.scan(t)
	if len(r3.pl.restore) != 0 {
		t.Errorf("a third run restored %v", r3.pl.restore)
	}
}

// TestManagerCutStateCorrupt: a damaged state file is logged, kept aside
// as .corrupt and ignored; the Manager runs, and writes a good one at its
// next cut.
func TestManagerCutStateCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not json":      "{\"version\":1,\"cut\":[{\"device\":",
		"wrong version": `{"version":2,"cut":[]}`,
		"empty device":  `{"version":1,"cut":[{"device":""}]}`,
		"unknown field": `{"version":1,"cut":[],"extra":true}`,
		"twice":         `{"version":1,"cut":[{"device":"/sys/devices/a"},{"device":"/sys/devices/a"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "network-state.json")
			if err := os.WriteFile(state, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs syncBuf
			r := rigWithState(t, state, &logs)
			if !strings.Contains(logs.String(), "network state damaged") {
				t.Errorf("not logged: %s", logs.String())
			}
			if b, err := os.ReadFile(state + ".corrupt"); err != nil || string(b) != content {
				t.Errorf("kept aside: %q, %v", b, err)
			}
			if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the damaged file is still in place: %v", err)
			}
			r.pl.set(func(s *Scan) {
				s.Adapters = []Adapter{{Name: "usb0", Kind: KindUSB, USBDevice: "/sys/devices/usb1/1-2"}}
			})
			r.m.SetPolicy(testPolicy(t, false))
			r.scan(t)
			if len(r.pl.restore) != 0 {
				t.Errorf("restored %v from a damaged file", r.pl.restore)
			}
			r.m.SetPolicy(testPolicy(t, true))
			r.scan(t)
			b, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := parseCutState(b); err != nil || len(got) != 1 || got[0].Device != "/sys/devices/usb1/1-2" {
				t.Errorf("state after the cut: %v, %v (%s)", got, err, b)
			}
		})
	}
}

// TestManagerCutStateUnwritable: a state file that cannot be written is
// logged; enforcement goes on (the adapter is cut all the same).
func TestManagerCutStateUnwritable(t *testing.T) {
	state := filepath.Join(t.TempDir(), "missing-dir", "network-state.json")
	var logs syncBuf
	r := rigWithState(t, state, &logs)
	r.pl.set(func(s *Scan) {
		s.Adapters = []Adapter{{Name: "usb0", Kind: KindUSB, USBDevice: "/sys/devices/usb1/1-2"}}
	})
	r.m.SetPolicy(testPolicy(t, true))
	r.scan(t)
	r.scan(t)
	if len(r.pl.cut) == 0 {
		t.Fatal("not cut")
	}
	if n := strings.Count(logs.String(), "cannot record the USB adapters"); n != 1 {
		t.Errorf("logged %d times, want once: %s", n, logs.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func FuzzParseCutState(f *testing.F) {
	f.Add([]byte(`{"version":1,"cut":[{"device":"/sys/devices/pci0000:00/usb1/1-2","interface":"usb0","vendor_id":"18d1"}]}`))
	f.Add([]byte(`{"version":1,"cut":[]}`))
	f.Add([]byte(`{"version":1,"cut":[{"device":"a"},{"device":"a"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseCutState(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range got {
			if c.Device == "" || seen[c.Device] || len(c.Device) > maxCutField {
				t.Fatalf("accepted %q", b)
			}
			seen[c.Device] = true
		}
		// What is accepted survives a round trip through saveCut's form.
		out, err := json.Marshal(cutState{Version: cutStateVersion, Cut: got})
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseCutState(out)
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("round trip: %v, %v", again, err)
		}
	})
}

// TestManagerSetInterval: a report interval pushed later reaches the
// running Manager's full scans (the daemon passes the collector's).
func TestManagerSetInterval(t *testing.T) {
	r := newRig(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor := func(n int, within time.Duration) bool {
		for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if r.pl.count("adapters") >= n {
				return true
			}
		}
		return false
	}
	if !waitFor(1, 5*time.Second) {
		t.Fatal("no first scan")
	}
	first := r.pl.count("adapters")
	// With the default minute nothing more would come within seconds.
	r.m.SetInterval(40 * time.Millisecond)
	r.m.SetInterval(30 * time.Millisecond) // the latest wins, without blocking
	if !waitFor(first+3, 3*time.Second) {
		t.Fatalf("full scans after SetInterval(30ms): %d, want at least %d within 3s", r.pl.count("adapters"), first+3)
	}
}

// TestManagerSocketsOnlyUnderPolicy: without a policy no socket is a
// finding, so scans do not list them; a policy has them listed at once.
func TestManagerSocketsOnlyUnderPolicy(t *testing.T) {
	r := newRig(t, false)
	ctx := context.Background()
	if err := r.m.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.pl.count(PartSockets); n != 0 {
		t.Fatalf("sockets listed %d times without a policy, want 0", n)
	}
	r.m.SetPolicy(testPolicy(t, false))
	if err := r.m.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.pl.count(PartSockets); n != 1 {
		t.Fatalf("sockets listed %d times under a policy, want 1", n)
	}
	r.m.SetPolicy(nil)
	if err := r.m.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if n, np := r.pl.count(PartSockets), r.m.Posture(); n != 1 || np.GetSocketsTotal() != 0 {
		t.Fatalf("policy gone: sockets listed %d times (want still 1), posture counts %d sockets (want 0)", n, np.GetSocketsTotal())
	}
}
