package netcheck

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mnguard/mnguard/internal/limitread"
	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Event types the Manager emits.
const (
	// EventFinding: a new finding (SEVERITY_ALERT; SEVERITY_WARNING for
	// kind "enforcement"). Attrs: kind, id, detail, and process, pid,
	// user, interface, address when known.
	EventFinding = "network.finding"
	// EventFindingCleared: the cause of a finding went away
	// (SEVERITY_INFO). Attrs: kind, id, detail.
	EventFindingCleared = "network.finding_cleared"
	// EventEnforcement: what enforcement did. Attrs: state (one of the
	// Enforcement constants), detail. SEVERITY_INFO when rules were put
	// in place or removed and USB adapters cut or restored,
	// SEVERITY_ALERT when drift was repaired or enforcement fails.
	EventEnforcement = "network.enforcement"
)

// States in the "state" attribute of EventEnforcement.
const (
	EnforcementInPlace     = "in_place"
	EnforcementRemoved     = "removed"
	EnforcementRepaired    = "repaired"
	EnforcementFailing     = "failing"
	EnforcementUSBCut      = "usb_cut"
	EnforcementUSBRestored = "usb_restored"
)

// AdapterDeauthorized is NetworkAdapter.state of a USB network adapter
// that enforcement cut off the bus.
const AdapterDeauthorized = "deauthorized"

// DefaultInterval is the full scan's period when Options.Interval is 0.
const DefaultInterval = 60 * time.Second

// Timings of the Manager (fields, so that tests can shorten them).
const (
	// defaultDebounce gathers a burst of notifications (netlink sends
	// several messages for one `ip route add`) into one scan.
	defaultDebounce = 50 * time.Millisecond
	// defaultWatchPoll is the network scan's period when the platform
	// cannot watch.
	defaultWatchPoll = 5 * time.Second
	// defaultEnforcePoll is the enforcement check's period when the
	// enforcer cannot watch.
	defaultEnforcePoll = 2 * time.Second
	// Enforcement that fails is retried after retryMin, doubling up to
	// retryMax.
	defaultRetryMin = time.Second
	defaultRetryMax = time.Minute
)

// NoMechanism is the enforcement detail (and the "enforcement" finding's)
// when enforcement is requested and the Manager has no Enforcer.
const NoMechanism = "no enforcement mechanism on this OS"

// Options configure a Manager.
type Options struct {
	// Platform is what the OS tells the scanner; required.
	Platform Platform
	// Enforcer keeps the agent's firewall rules; nil when the OS has no
	// mechanism (a policy that asks for enforcement then gets the
	// finding "enforcement": NoMechanism).
	Enforcer Enforcer
	// Emit records an event for the collector (the daemon's spool).
	Emit func(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string)
	// OnChange is called, without the Manager's locks held, when the
	// posture changed (findings, adapters, routes, DNS servers,
	// enforcement, scan errors, the policy version): report it now.
	OnChange func()
	Logger   *slog.Logger
	// Collector returns the addresses the agent reaches the collector at;
	// they are always allowed (added to the policy's collector
	// addresses at every scan).
	Collector func() []netip.Addr
	// Interval is the full scan's period (the daemon passes the report
	// interval); DefaultInterval when 0. Network changes the platform
	// announces are scanned at once, in between.
	Interval time.Duration
	Now      func() time.Time
	// StateFile keeps the USB network adapters enforcement cut off the
	// bus (their device directories, JSON, written atomically with mode
	// 0600) so that a Manager started later, by an agent restarted, still
	// authorizes them again when a policy turns enforcement off. It is
	// read by New; one that cannot be read as such is logged, renamed
	// with the suffix ".corrupt" and ignored. Empty: the list lives in
	// memory only.
	StateFile string
}

// Manager checks the terminal's segment isolation against the network
// policy: it scans adapters, routes, sockets and DNS servers at start,
// at once when the platform announces a network change, at every
// Interval and when the policy changes; it raises an event for each new
// finding and for each that goes away; and with enforcement on it keeps
// the Enforcer's rules in place (repairing drift as the Enforcer
// announces it, or as a 2 s poll finds it) and cuts USB network adapters
// off the bus.
//
// Stopping the Manager (Run returning) leaves the rules and the cut
// adapters as they are: the agent stopping must not open the segment.
// Only a policy without enforcement removes them (SetPolicy).
//
// Until SetPolicy is first called the Manager neither installs nor
// removes rules: the daemon passes the policy it holds (nil when none) as
// soon as it knows it, so that an agent restarting with enforcement on
// keeps the rules the last run left in place meanwhile.
type Manager struct {
	o        Options
	log      *slog.Logger
	interval time.Duration

	debounce, watchPoll, enforcePoll time.Duration
	retryMin, retryMax               time.Duration

	// scanReq asks Run for a full scan (SetPolicy).
	scanReq chan struct{}
	// newInterval hands Run a new full-scan period (SetInterval).
	newInterval chan time.Duration

	// op serializes scans and enforcement (Run, Scan, SetPolicy's scan).
	op sync.Mutex
	// Under op only:
	last    Scan               // the last data of each part gathered successfully
	gotPart map[string]bool    // parts gathered successfully at least once
	tracked map[string]*record // the findings in force, by ID
	enf     enfState
	cut     map[string]Adapter // USB device directory → the adapter cut off the bus
	cutErr  map[string]string  // USB device directory → why it could not be cut
	// cutDirty: cut changed since Options.StateFile was last written;
	// saveFailing: the last write failed (logged once until one works).
	cutDirty    bool
	saveFailing bool
	pending     []pendingEvent // events to send once the posture is stored

	mu        sync.Mutex
	base      *netpolicy.Policy // as SetPolicy was given it (a copy)
	policySet bool
	watchErr  string // the platform cannot watch
	enfWErr   string // the enforcer cannot watch
	posture   *mnguardv1.NetworkPosture
}

// record is a finding in force.
type record struct {
	f     Finding
	first time.Time
}

// enfState is the enforcement's state (under op; copied into the posture).
type enfState struct {
	requested, inPlace bool
	detail             string
	repairs            uint32
	lastRepair         time.Time
	// applied is the key (policyKey) of the policy whose rules Apply
	// installed; "" when none.
	applied string
	// dirty: rules may be there that must go when enforcement is off
	// (true at start: a former run may have left them).
	dirty bool
	// failing since the last success; the next attempt is due at next,
	// or at once for another policy than the one that failed (tried).
	failing bool
	tried   string
	backoff time.Duration
	next    time.Time
}

// New returns a Manager; Run drives it.
func New(o Options) *Manager {
	m := &Manager{
		o:           o,
		log:         o.Logger,
		interval:    o.Interval,
		debounce:    defaultDebounce,
		watchPoll:   defaultWatchPoll,
		enforcePoll: defaultEnforcePoll,
		retryMin:    defaultRetryMin,
		retryMax:    defaultRetryMax,
		scanReq:     make(chan struct{}, 1),
		newInterval: make(chan time.Duration, 1),
		gotPart:     make(map[string]bool),
		tracked:     make(map[string]*record),
		cut:         make(map[string]Adapter),
		cutErr:      make(map[string]string),
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.interval <= 0 {
		m.interval = DefaultInterval
	}
	m.enf.dirty = true
	m.enf.detail = "waiting for the network policy"
	m.loadCut()
	return m
}

func (m *Manager) now() time.Time {
	if m.o.Now != nil {
		return m.o.Now()
	}
	return time.Now()
}

// emit queues an event; evaluate sends the queue once the posture that
// shows its cause is stored, so that whoever reacts to an event reads a
// posture that has it.
func (m *Manager) emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	m.pending = append(m.pending, pendingEvent{typ, sev, msg, attrs})
}

// flush sends the queued events, in order (under op).
func (m *Manager) flush() {
	for _, e := range m.pending {
		if m.o.Emit != nil {
			m.o.Emit(e.typ, e.sev, e.msg, e.attrs)
		}
	}
	clear(m.pending)
	m.pending = m.pending[:0]
}

type pendingEvent struct {
	typ   string
	sev   mnguardv1.Severity
	msg   string
	attrs map[string]string
}

// SetInterval changes the full scan's period (the collector pushed
// another report interval); d <= 0 means DefaultInterval. Run takes it at
// once; the latest call wins.
func (m *Manager) SetInterval(d time.Duration) {
	if d <= 0 {
		d = DefaultInterval
	}
	for {
		select {
		case m.newInterval <- d:
			return
		default:
		}
		// A value Run has not taken yet: replace it.
		select {
		case <-m.newInterval:
		default:
		}
	}
}

// SetPolicy puts p in force (nil: the collector holds none): enforcement
// is applied or removed and the terminal scanned again, at once by Run
// (or by the next Scan when Run is not running). The Manager keeps a
// copy; the caller's policy is not changed.
func (m *Manager) SetPolicy(p *netpolicy.Policy) {
	m.mu.Lock()
	m.base = p.Clone()
	m.policySet = true
	m.mu.Unlock()
	select {
	case m.scanReq <- struct{}{}:
	default:
	}
}

// policy returns the policy in force with the collector's addresses added
// (nil when none), and whether SetPolicy was called.
func (m *Manager) policy() (*netpolicy.Policy, bool) {
	m.mu.Lock()
	base, set := m.base, m.policySet
	m.mu.Unlock()
	if base == nil {
		return nil, set
	}
	var col []netip.Addr
	if m.o.Collector != nil {
		col = m.o.Collector()
	}
	return base.WithCollector(col...), set
}

// policyKey identifies what Apply installed for p.
func policyKey(p *netpolicy.Policy) string {
	var b strings.Builder
	b.WriteString(p.ComputeVersion())
	for _, a := range p.Collector {
		b.WriteByte(' ')
		b.WriteString(a.String())
	}
	return b.String()
}

// Posture returns the latest scan's result (a copy); safe for concurrent
// use.
func (m *Manager) Posture() *mnguardv1.NetworkPosture {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.posture == nil {
		return &mnguardv1.NetworkPosture{}
	}
	return proto.Clone(m.posture).(*mnguardv1.NetworkPosture)
}

// Scan scans the terminal now (every part), applies or checks
// enforcement, and raises the events of what changed. Safe to call while
// Run runs (the work is serialized).
func (m *Manager) Scan(ctx context.Context) error {
	m.scan(ctx, true)
	return ctx.Err()
}

// scan gathers the parts (all of them when full; otherwise the sockets
// of the last full scan are kept: a network change is about adapters,
// routes and resolvers), puts enforcement in order and evaluates.
func (m *Manager) scan(ctx context.Context, full bool) {
	m.op.Lock()
	p, set := m.policy()
	// Without a policy no socket is a finding: listing them (the costly
	// part of a scan) would be work for nothing at every interval.
	s := m.gather(ctx, full, p != nil)
	m.enforce(ctx, p, set, s.Adapters)
	changed := m.evaluate(p, s)
	m.op.Unlock()
	if changed && m.o.OnChange != nil {
		m.o.OnChange()
	}
}

// recheck puts enforcement in order and evaluates the last scan again
// (drift announced, a retry due): no new scan of the terminal.
func (m *Manager) recheck(ctx context.Context) {
	m.op.Lock()
	p, set := m.policy()
	m.enforce(ctx, p, set, m.last.Adapters)
	changed := m.evaluate(p, m.last)
	m.op.Unlock()
	if changed && m.o.OnChange != nil {
		m.o.OnChange()
	}
}

// gather asks the platform for each part at once. A part that fails
// keeps its last good data (its findings stand: what cannot be seen
// again is not cleared) and is recorded as an error. Sockets are listed
// only when wanted (a policy is in force); otherwise there are none.
func (m *Manager) gather(ctx context.Context, full, wantSockets bool) Scan {
	var (
		wg                     sync.WaitGroup
		adapters               []Adapter
		routes                 []Route
		sockets                []Socket
		dns                    []DNSServer
		aErr, rErr, sErr, dErr error
		pl                     = m.o.Platform
	)
	wg.Add(3)
	go func() { defer wg.Done(); adapters, aErr = pl.Adapters(ctx) }()
	go func() { defer wg.Done(); routes, rErr = pl.Routes(ctx) }()
	go func() { defer wg.Done(); dns, dErr = pl.DNS(ctx) }()
	listSockets := wantSockets && (full || !m.gotPart[PartSockets])
	if listSockets {
		sockets, sErr = pl.Sockets(ctx)
	}
	wg.Wait()

	var errs []PartError
	prev := m.last.Errors
	take := func(part string, err error, ok func()) {
		if err == nil {
			ok()
			m.gotPart[part] = true
			return
		}
		errs = append(errs, PartError{Part: part, Err: err})
	}
	take(PartAdapters, aErr, func() { m.last.Adapters = adapters })
	take(PartRoutes, rErr, func() { m.last.Routes = routes })
	switch {
	case !wantSockets:
		// Listed again, whole, once a policy comes (SetPolicy scans).
		m.last.Sockets = nil
		delete(m.gotPart, PartSockets)
	case listSockets:
		take(PartSockets, sErr, func() { m.last.Sockets = sockets })
	default:
		// Not asked this time: the last full scan's outcome stands.
		for _, e := range prev {
			if e.Part == PartSockets {
				errs = append(errs, e)
			}
		}
	}
	take(PartDNS, dErr, func() { m.last.DNS = dns })
	slices.SortFunc(errs, func(a, b PartError) int { return cmp.Compare(a.Part, b.Part) })
	m.last.Errors = errs
	return m.last
}

// enforce puts enforcement in order for p: rules applied, checked (and
// repaired) or removed, USB network adapters cut or restored. Failures are
// retried with a backoff (Run's timer, or the next scan). set is false
// until SetPolicy was first called: nothing is touched then.
func (m *Manager) enforce(ctx context.Context, p *netpolicy.Policy, set bool, adapters []Adapter) {
	m.enforceRules(ctx, p, set, adapters)
	if m.cutDirty {
		m.saveCut()
	}
}

func (m *Manager) enforceRules(ctx context.Context, p *netpolicy.Policy, set bool, adapters []Adapter) {
	e := &m.enf
	if !set {
		return
	}
	now := m.now()
	want := p != nil && p.Enforce
	if !want {
		e.requested, e.inPlace = false, false
		if !e.dirty && len(m.cut) == 0 {
			return
		}
		if e.failing && now.Before(e.next) && e.tried == "" {
			return
		}
		e.tried = ""
		var errs []error
		if e.dirty && m.o.Enforcer != nil {
			if err := m.o.Enforcer.Remove(ctx); err != nil {
				errs = append(errs, fmt.Errorf("remove rules: %w", err))
			} else {
				if e.applied != "" {
					m.log.Info("network enforcement removed", "mechanism", m.o.Enforcer.Mechanism())
					m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_INFO, "network enforcement removed: "+m.o.Enforcer.Mechanism(),
						map[string]string{"state": EnforcementRemoved, "detail": "rules removed (" + m.o.Enforcer.Mechanism() + ")"})
				}
				e.dirty, e.applied = false, ""
			}
		} else if m.o.Enforcer == nil {
			e.dirty, e.applied = false, ""
		}
		for _, dir := range slices.Sorted(maps.Keys(m.cut)) {
			a := m.cut[dir]
			if err := m.o.Platform.RestoreUSB(dir); err != nil {
				errs = append(errs, fmt.Errorf("restore USB adapter %s (%s): %w", a.Name, dir, err))
				continue
			}
			delete(m.cut, dir)
			m.cutDirty = true
			m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_INFO, "USB network adapter "+a.Name+" authorized again",
				map[string]string{"state": EnforcementUSBRestored, "detail": usbDetail(a), "interface": a.Name})
		}
		clear(m.cutErr)
		if err := errors.Join(errs...); err != nil {
			m.fail(now, err)
			return
		}
		m.succeed()
		e.detail = "not requested by the policy"
		return
	}

	e.requested = true
	m.cutUSB(adapters)
	if m.o.Enforcer == nil {
		e.inPlace, e.detail = false, NoMechanism
		return
	}
	key := policyKey(p)
	if e.failing && now.Before(e.next) && key == e.tried {
		return
	}
	e.tried = key
	mech := m.o.Enforcer.Mechanism()
	if key != e.applied {
		if err := m.o.Enforcer.Apply(ctx, p); err != nil {
			m.fail(now, fmt.Errorf("apply rules: %w", err))
			return
		}
		e.applied, e.dirty, e.inPlace = key, true, true
		e.detail = "rules in place (" + mech + ")"
		m.succeed()
		m.log.Info("network enforcement in place", "mechanism", mech, "policy", p.Version)
		m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_INFO, "network enforcement in place: "+mech,
			map[string]string{"state": EnforcementInPlace, "detail": e.detail + " for policy " + versionOf(p)})
		return
	}
	ok, why, err := m.o.Enforcer.Check(ctx, p)
	if err != nil {
		// A check that raced with a change (the table deleted while it
		// was read) fails once; the second sees the result.
		ok, why, err = m.o.Enforcer.Check(ctx, p)
	}
	switch {
	case err != nil:
		// Cannot tell: install again (idempotent, fail closed), but
		// unverified rules are not "in place"; the backoff keeps the
		// Apply's own announcements from looping back here.
		if aerr := m.o.Enforcer.Apply(ctx, p); aerr != nil {
			m.fail(now, fmt.Errorf("check rules: %w; apply rules: %w", err, aerr))
			return
		}
		m.fail(now, fmt.Errorf("check rules: %w (applied again, unverified)", err))
	case !ok:
		if why == "" {
			why = "rules differ from the policy"
		}
		if aerr := m.o.Enforcer.Apply(ctx, p); aerr != nil {
			m.fail(now, fmt.Errorf("drift (%s), repair failed: %w", why, aerr))
			return
		}
		// Verified: rules that never check out (a mechanism at odds with
		// itself) must fail with a backoff, not loop through the repair's
		// own announcements.
		if ok2, why2, err2 := m.o.Enforcer.Check(ctx, p); err2 != nil || !ok2 {
			if err2 == nil {
				err2 = errors.New(cmp.Or(why2, "rules differ from the policy"))
			}
			m.fail(now, fmt.Errorf("drift (%s), rules applied again but still not in place: %w", why, err2))
			return
		}
		e.inPlace = true
		e.repairs++
		e.lastRepair = now
		e.detail = "rules in place (" + mech + "); repaired after drift: " + why
		m.succeed()
		m.log.Warn("network enforcement repaired after drift", "mechanism", mech, "drift", why)
		m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_ALERT, "network rules repaired after drift: "+why,
			map[string]string{"state": EnforcementRepaired, "detail": why})
	default:
		if !e.inPlace {
			e.detail = "rules in place (" + mech + ")"
		}
		e.inPlace = true
		m.succeed()
	}
}

// cutUSB cuts every USB network adapter present off the bus (again: it is
// idempotent, and an adapter that is back was authorized by someone).
func (m *Manager) cutUSB(adapters []Adapter) {
	for _, a := range adapters {
		if a.Kind != KindUSB || a.USBDevice == "" {
			continue
		}
		if err := m.o.Platform.CutUSB(a); err != nil {
			msg := err.Error()
			if m.cutErr[a.USBDevice] != msg {
				m.cutErr[a.USBDevice] = msg
				m.log.Error("cut USB network adapter off the bus", "interface", a.Name, "device", a.USBDevice, "err", err)
				m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_ALERT, "cannot cut USB network adapter "+a.Name+" off the bus: "+msg,
					map[string]string{"state": EnforcementFailing, "detail": usbDetail(a) + ": " + msg, "interface": a.Name})
			}
			continue
		}
		delete(m.cutErr, a.USBDevice)
		if _, ok := m.cut[a.USBDevice]; ok {
			m.cut[a.USBDevice] = a
			continue
		}
		m.cut[a.USBDevice] = a
		m.cutDirty = true
		m.log.Warn("USB network adapter cut off the bus", "interface", a.Name, "device", a.USBDevice)
		m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_INFO, "USB network adapter "+a.Name+" cut off the bus",
			map[string]string{"state": EnforcementUSBCut, "detail": usbDetail(a), "interface": a.Name})
	}
}

func usbDetail(a Adapter) string {
	d := a.Name
	if a.VendorID != "" || a.ProductID != "" {
		d += " " + a.VendorID + ":" + a.ProductID
	}
	return d + " (" + a.USBDevice + ")"
}

func (m *Manager) fail(now time.Time, err error) {
	e := &m.enf
	e.inPlace = false
	e.detail = err.Error()
	if !e.failing {
		e.failing = true
		e.backoff = m.retryMin
		m.log.Error("network enforcement failing", "err", err)
		m.emit(EventEnforcement, mnguardv1.Severity_SEVERITY_ALERT, "network enforcement failing: "+err.Error(),
			map[string]string{"state": EnforcementFailing, "detail": err.Error()})
	} else {
		e.backoff = min(2*e.backoff, m.retryMax)
	}
	e.next = now.Add(e.backoff)
}

func (m *Manager) succeed() {
	m.enf.failing = false
	m.enf.backoff = 0
}

// retryDue says when a failed enforcement is tried again (ok false: no
// retry pending).
func (m *Manager) retryDue() (time.Time, bool) {
	m.op.Lock()
	defer m.op.Unlock()
	return m.enf.next, m.enf.failing
}

// enforcing says whether enforcement is requested.
func (m *Manager) enforcing() bool {
	m.op.Lock()
	defer m.op.Unlock()
	return m.enf.requested
}

func versionOf(p *netpolicy.Policy) string {
	if p == nil {
		return ""
	}
	if p.Version != "" {
		return p.Version
	}
	return p.ComputeVersion()
}

// evaluate turns scan s into findings, raises the events of what
// changed, and builds the posture; it reports whether the posture changed
// (beyond the scan's time and socket count).
func (m *Manager) evaluate(p *netpolicy.Policy, s Scan) bool {
	now := m.now()
	e := m.enf
	fs := Evaluate(s, p, e.requested && e.inPlace)
	if e.requested && !e.inPlace {
		fs = append(fs, Finding{
			ID:     findingID(FindingEnforcement),
			Kind:   FindingEnforcement,
			Detail: "enforcement requested but not in place: " + e.detail,
		})
	}
	cutByName := make(map[string]bool)
	for _, a := range s.Adapters {
		if _, ok := m.cut[a.USBDevice]; ok && a.USBDevice != "" {
			cutByName[a.Name] = true
		}
	}
	for i := range fs {
		if fs[i].Kind == FindingUSBAdapter && cutByName[fs[i].Interface] {
			fs[i].Detail += ", cut off the bus (authorized=0)"
		}
	}

	// The events: new findings, then those gone.
	seen := make(map[string]bool, len(fs))
	for _, f := range fs {
		seen[f.ID] = true
		if r, ok := m.tracked[f.ID]; ok {
			r.f = f
			continue
		}
		m.tracked[f.ID] = &record{f: f, first: now}
		sev := mnguardv1.Severity_SEVERITY_ALERT
		if f.Kind == FindingEnforcement {
			sev = mnguardv1.Severity_SEVERITY_WARNING
		}
		m.log.Warn("network finding", "kind", f.Kind, "id", f.ID, "detail", f.Detail, "process", f.Process, "pid", f.PID)
		m.emit(EventFinding, sev, findingTitle(f.Kind)+": "+f.Detail, findingAttrs(f))
	}
	for _, id := range slices.Sorted(maps.Keys(m.tracked)) {
		if seen[id] {
			continue
		}
		r := m.tracked[id]
		delete(m.tracked, id)
		m.log.Info("network finding cleared", "kind", r.f.Kind, "id", id)
		m.emit(EventFindingCleared, mnguardv1.Severity_SEVERITY_INFO, "cleared: "+findingTitle(r.f.Kind)+": "+r.f.Detail,
			map[string]string{"kind": r.f.Kind, "id": id, "detail": r.f.Detail})
	}

	np := m.build(p, s, fs, now)
	m.mu.Lock()
	changed := m.posture == nil || !samePosture(m.posture, np)
	m.posture = np
	m.mu.Unlock()
	m.flush()
	return changed
}

// build makes the posture of scan s and findings fs.
func (m *Manager) build(p *netpolicy.Policy, s Scan, fs []Finding, now time.Time) *mnguardv1.NetworkPosture {
	np := &mnguardv1.NetworkPosture{
		PolicyVersion: versionOf(p),
		LastScan:      timestamppb.New(now),
		SocketsTotal:  uint32(min(len(s.Sockets), 1<<32-1)),
	}
	present := make(map[string]bool)
	for _, a := range s.Adapters {
		na := adapterProto(a)
		if _, ok := m.cut[a.USBDevice]; ok && a.USBDevice != "" {
			na.State = AdapterDeauthorized
			present[a.USBDevice] = true
		}
		np.Adapters = append(np.Adapters, na)
	}
	for dir, a := range m.cut {
		if !present[dir] {
			na := adapterProto(a)
			na.State = AdapterDeauthorized
			na.Up = false
			na.Addrs = nil
			np.Adapters = append(np.Adapters, na)
		}
	}
	slices.SortFunc(np.Adapters, func(a, b *mnguardv1.NetworkAdapter) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.State, b.State))
	})
	for _, r := range s.Routes {
		nr := &mnguardv1.NetworkRoute{Interface: r.Interface, Table: r.Table}
		if r.Dst.IsValid() {
			nr.Destination = r.Dst.String()
		}
		if r.Gateway.IsValid() {
			nr.Gateway = r.Gateway.String()
		}
		np.Routes = append(np.Routes, nr)
	}
	slices.SortFunc(np.Routes, func(a, b *mnguardv1.NetworkRoute) int {
		return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Interface, b.Interface), cmp.Compare(a.Gateway, b.Gateway))
	})
	for _, d := range s.DNS {
		nd := &mnguardv1.DnsServer{Source: d.Source}
		if d.Addr.IsValid() {
			nd.Address = d.Addr.String()
		}
		np.DnsServers = append(np.DnsServers, nd)
	}
	for _, f := range fs {
		np.Findings = append(np.Findings, &mnguardv1.NetworkFinding{
			Id:        f.ID,
			Kind:      f.Kind,
			Detail:    f.Detail,
			Process:   f.Process,
			Pid:       uint32(max(f.PID, 0)),
			User:      f.User,
			Interface: f.Interface,
			Address:   f.Address,
			FirstSeen: timestamppb.New(m.tracked[f.ID].first),
		})
	}
	e := m.enf
	np.Enforcement = &mnguardv1.NetworkEnforcement{
		Requested: e.requested,
		InPlace:   e.requested && e.inPlace,
		Detail:    e.detail,
		Repairs:   e.repairs,
	}
	if m.o.Enforcer != nil {
		np.Enforcement.Mechanism = m.o.Enforcer.Mechanism()
	}
	if !e.lastRepair.IsZero() {
		np.Enforcement.LastRepair = timestamppb.New(e.lastRepair)
	}
	for _, pe := range s.Errors {
		np.ScanErrors = append(np.ScanErrors, pe.String())
	}
	m.mu.Lock()
	if m.watchErr != "" {
		np.ScanErrors = append(np.ScanErrors, "watch: "+m.watchErr+"; scanning every "+m.watchPoll.String())
	}
	if m.enfWErr != "" {
		np.ScanErrors = append(np.ScanErrors, "enforcement watch: "+m.enfWErr+"; checking every "+m.enforcePoll.String())
	}
	m.mu.Unlock()
	return np
}

func adapterProto(a Adapter) *mnguardv1.NetworkAdapter {
	na := &mnguardv1.NetworkAdapter{
		Name:         a.Name,
		Kind:         a.Kind,
		Reason:       a.Reason,
		HardwareAddr: a.HardwareAddr,
		Up:           a.Up,
		Driver:       a.Driver,
		VendorId:     a.VendorID,
		ProductId:    a.ProductID,
	}
	if na.Kind == "" {
		na.Kind = KindUnknown
	}
	for _, pf := range a.Addrs {
		na.Addrs = append(na.Addrs, pf.String())
	}
	return na
}

// samePosture compares a and b but for the scan's time and socket count,
// which change with every scan.
func samePosture(a, b *mnguardv1.NetworkPosture) bool {
	at, as := a.LastScan, a.SocketsTotal
	bt, bs := b.LastScan, b.SocketsTotal
	a.LastScan, a.SocketsTotal, b.LastScan, b.SocketsTotal = nil, 0, nil, 0
	eq := proto.Equal(a, b)
	a.LastScan, a.SocketsTotal, b.LastScan, b.SocketsTotal = at, as, bt, bs
	return eq
}

func findingTitle(kind string) string {
	switch kind {
	case FindingDefaultRoute:
		return "default route"
	case FindingRoute:
		return "route outside the policy"
	case FindingSocket:
		return "connection outside the policy"
	case FindingListener:
		return "listening socket reachable from outside the policy"
	case FindingDNS:
		return "DNS server outside the policy"
	case FindingWireless:
		return "wireless adapter"
	case FindingUSBAdapter:
		return "USB network adapter"
	case FindingBluetoothAdapter:
		return "Bluetooth network adapter"
	case FindingUnknownInterface:
		return "undecided interface"
	case FindingEnforcement:
		return "network enforcement not in place"
	case FindingScanError:
		return "network scan incomplete"
	}
	return kind
}

func findingAttrs(f Finding) map[string]string {
	attrs := map[string]string{"kind": f.Kind, "id": f.ID, "detail": f.Detail}
	set := func(k, v string) {
		if v != "" {
			attrs[k] = v
		}
	}
	set("process", f.Process)
	if f.PID > 0 {
		attrs["pid"] = strconv.FormatInt(int64(f.PID), 10)
	}
	set("user", f.User)
	set("interface", f.Interface)
	set("address", f.Address)
	return attrs
}

// Run scans and enforces until ctx ends (a clean exit, nil): a full scan
// at start and at every Interval, a scan of adapters, routes and DNS
// servers as soon as the platform announces a route, address or link
// change (bursts debounced by 50 ms; every 5 s when the platform cannot
// watch; any other announcement, e.g. "resubscribed" or "socket", scans
// sockets too), a full
// scan after SetPolicy, an enforcement check as soon as the Enforcer
// announces a firewall change (every 2 s when it cannot watch) and when a
// failed attempt is due again. Returning leaves enforcement in place.
func (m *Manager) Run(ctx context.Context) error {
	if m.o.Platform == nil {
		return errors.New("netcheck: no platform")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	netCh := make(chan struct{}, 1)
	var netFull atomic.Bool
	netFailed := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := m.o.Platform.Watch(ctx, func(what string) {
			switch what {
			case "route", "addr", "link":
			default:
				// Anything else (a resubscription after lost
				// messages, sockets announced): scan everything.
				netFull.Store(true)
			}
			select {
			case netCh <- struct{}{}:
			default:
			}
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch ended")
		}
		m.log.Error("network watch failed; scanning periodically", "err", err, "every", m.watchPoll)
		m.mu.Lock()
		m.watchErr = err.Error()
		m.mu.Unlock()
		netFailed <- struct{}{}
	}()
	driftCh := make(chan struct{}, 1)
	driftFailed := make(chan struct{}, 1)
	if m.o.Enforcer != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.o.Enforcer.Watch(ctx, func() {
				select {
				case driftCh <- struct{}{}:
				default:
				}
			})
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("watch ended")
			}
			m.log.Error("firewall watch failed; checking enforcement periodically", "err", err, "every", m.enforcePoll)
			m.mu.Lock()
			m.enfWErr = err.Error()
			m.mu.Unlock()
			driftFailed <- struct{}{}
		}()
	}

	// Drain a SetPolicy that came before Run: the first scan covers it.
	select {
	case <-m.scanReq:
	default:
	}
	m.scan(ctx, true)

	full := time.NewTicker(m.interval)
	defer full.Stop()
	netT := stoppedTimer()
	driftT := stoppedTimer()
	retryT := stoppedTimer()
	var netPoll, enfPoll <-chan time.Time
	netArmed, driftArmed := false, false
	armRetry := func() {
		retryT.Stop()
		if next, ok := m.retryDue(); ok {
			retryT.Reset(max(next.Sub(m.now()), time.Millisecond))
		}
	}
	armRetry()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.scanReq:
			m.scan(ctx, true)
		case <-full.C:
			m.scan(ctx, true)
		case d := <-m.newInterval:
			if d != m.interval {
				m.interval = d
				full.Reset(d)
			}
		case <-netCh:
			if !netArmed {
				netArmed = true
				netT.Reset(m.debounce)
			}
			continue
		case <-netT.C:
			netArmed = false
			m.scan(ctx, netFull.Swap(false))
		case <-netPoll:
			m.scan(ctx, false)
		case <-driftCh:
			if !driftArmed {
				driftArmed = true
				driftT.Reset(m.debounce)
			}
			continue
		case <-driftT.C:
			driftArmed = false
			m.recheck(ctx)
		case <-enfPoll:
			if m.enforcing() {
				m.recheck(ctx)
			}
		case <-retryT.C:
			m.recheck(ctx)
		case <-netFailed:
			t := time.NewTicker(m.watchPoll)
			defer t.Stop()
			netPoll = t.C
			m.scan(ctx, false)
		case <-driftFailed:
			t := time.NewTicker(m.enforcePoll)
			defer t.Stop()
			enfPoll = t.C
			m.recheck(ctx)
		}
		armRetry()
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// cutState is Options.StateFile's content: the USB network adapters cut
// off the bus, by device directory (Linux: the sysfs directory; Windows:
// the PnP instance id).
type cutState struct {
	Version int        `json:"version"`
	Cut     []cutEntry `json:"cut"`
}

type cutEntry struct {
	Device       string `json:"device"`
	Interface    string `json:"interface,omitempty"`
	HardwareAddr string `json:"hardware_addr,omitempty"`
	Reason       string `json:"reason,omitempty"`
	Driver       string `json:"driver,omitempty"`
	VendorID     string `json:"vendor_id,omitempty"`
	ProductID    string `json:"product_id,omitempty"`
}

// Limits of the state file: far above what one terminal cuts, small
// enough that a damaged file cannot cost much.
const (
	cutStateVersion = 1
	maxCutState     = 1 << 20
	maxCutEntries   = 1024
	maxCutField     = 4096
)

// parseCutState reads and validates a state file's content.
func parseCutState(b []byte) ([]cutEntry, error) {
	if len(b) > maxCutState {
		return nil, fmt.Errorf("%d bytes, more than %d", len(b), maxCutState)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st cutState
	if err := dec.Decode(&st); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	if st.Version != cutStateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, cutStateVersion)
	}
	if len(st.Cut) > maxCutEntries {
		return nil, fmt.Errorf("%d devices, more than %d", len(st.Cut), maxCutEntries)
	}
	seen := make(map[string]bool, len(st.Cut))
	for i, c := range st.Cut {
		if c.Device == "" {
			return nil, fmt.Errorf("device %d: no device directory", i+1)
		}
		for _, f := range []string{c.Device, c.Interface, c.HardwareAddr, c.Reason, c.Driver, c.VendorID, c.ProductID} {
			if len(f) > maxCutField || strings.ContainsRune(f, 0) || !utf8.ValidString(f) {
				return nil, fmt.Errorf("device %d: a field is too long, holds a NUL or is not UTF-8", i+1)
			}
		}
		if seen[c.Device] {
			return nil, fmt.Errorf("device %q twice", c.Device)
		}
		seen[c.Device] = true
	}
	return st.Cut, nil
}

// loadCut reads Options.StateFile into cut (New). A file that does not
// parse is renamed aside (".corrupt") and ignored: never fatal.
func (m *Manager) loadCut() {
	path := m.o.StateFile
	if path == "" {
		return
	}
	b, err := limitread.File(path, maxCutState)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		m.log.Error("network state: cannot read the USB adapters cut off the bus; those cut before are not authorized again by this run", "file", path, "err", err)
		return
	}
	entries, err := parseCutState(b)
	if err != nil {
		aside := path + ".corrupt"
		if rerr := os.Rename(path, aside); rerr != nil {
			m.log.Error("network state damaged, ignored (and not renamed)", "file", path, "err", err, "rename_err", rerr)
		} else {
			m.log.Error("network state damaged, ignored and kept aside", "file", path, "kept_as", aside, "err", err)
		}
		return
	}
	for _, c := range entries {
		m.cut[c.Device] = Adapter{
			Name: c.Interface, Kind: KindUSB, USBDevice: c.Device, HardwareAddr: c.HardwareAddr,
			Reason: c.Reason, Driver: c.Driver, VendorID: c.VendorID, ProductID: c.ProductID,
		}
	}
	if len(entries) > 0 {
		m.log.Info("network state: USB network adapters cut off the bus by an earlier run", "file", path, "devices", len(entries))
	}
}

// saveCut writes cut to Options.StateFile (under op): a temporary file in
// the same directory, synced, renamed over the old one. A failure is
// logged (once until a write works) and tried again at the next
// enforcement pass.
func (m *Manager) saveCut() {
	path := m.o.StateFile
	if path == "" {
		m.cutDirty = false
		return
	}
	st := cutState{Version: cutStateVersion, Cut: []cutEntry{}}
	for _, dir := range slices.Sorted(maps.Keys(m.cut)) {
		a := m.cut[dir]
		st.Cut = append(st.Cut, cutEntry{
			Device: dir, Interface: a.Name, HardwareAddr: a.HardwareAddr, Reason: a.Reason,
			Driver: a.Driver, VendorID: a.VendorID, ProductID: a.ProductID,
		})
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		err = writeAtomic(path, append(b, '\n'))
	}
	if err != nil {
		if !m.saveFailing {
			m.saveFailing = true
			m.log.Error("network state: cannot record the USB adapters cut off the bus (tried again at each scan)", "file", path, "err", err)
		}
		return
	}
	if m.saveFailing {
		m.saveFailing = false
		m.log.Info("network state: recorded again", "file", path)
	}
	m.cutDirty = false
}

// writeAtomic replaces path with b (mode 0600): readers see the old
// content or the new, never a part.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself durable; best effort (not on Windows)
		d.Close()
	}
	return nil
}
