package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Modes of enforcement.
const (
	ModeEnforce = "enforce"
	ModeMonitor = "monitor"
)

// Event types the manager emits.
const (
	EventAttached          = "media.attached"
	EventDetached          = "media.detached"
	EventReadOnlySet       = "media.read_only_set"
	EventEnforcementFailed = "media.enforcement_failed"
	EventDriftRepaired     = "media.drift_repaired"
	EventWatchFailed       = "media.watch_failed"

	// EventExemptionApplied: a device was made writable for an
	// exemption. Attrs: exemption_id, device_id (VID:PID:SERIAL),
	// actions, and the device's.
	EventExemptionApplied = "media.exemption_applied"
	// EventExemptionUsed: the first write to an exempted device was seen
	// (once per application; where the platform counts writes). Attrs:
	// exemption_id, device_id, writes (seen so far).
	EventExemptionUsed = "media.exemption_used"
	// EventExemptionEndBusy: an exemption ended while files on the device
	// were open for writing; the users were warned, and the writers get
	// EndGrace. Attrs: exemption_id, device_id, writers, pids, grace,
	// actions.
	EventExemptionEndBusy = "media.exemption_end_busy"
	// EventExemptionEnded: the device of an ended exemption is read-only
	// again. Attrs: exemption_id, device_id, actions, forced ("true" when
	// the writers were ended or the mount detached after EndGrace).
	EventExemptionEnded = "media.exemption_ended"
	// EventExemptionFailed: an exemption could not be applied; the device
	// stays read-only. Attrs: exemption_id, device_id, reason.
	EventExemptionFailed = "media.exemption_failed"
)

// Defaults of the exemption timings (Manager).
const (
	DefaultEndGrace   = 60 * time.Second
	DefaultEndRetry   = 3 * time.Second
	DefaultExemptPoll = time.Second
)

// Looker is implemented by platforms that can classify one device by name
// (a disk or one of its partitions), which is much faster than a full Scan
// when the kernel announces a single device.
type Looker interface {
	// Lookup returns the removable whole disk that name is or belongs to;
	// ok is false when it is not removable.
	Lookup(ctx context.Context, name string) (d Device, ok bool, err error)
}

// Guarder is implemented by platforms that can make a device the kernel
// just announced read-only at once, on the goroutine that received the
// notification, before the manager's full classification, enforcement and
// verification of it (which follow as before): a removable stick is then
// read-only within a fraction of a millisecond of its uevent, sooner than
// udevd gets to run a rule for it.
type Guarder interface {
	// Guard sets the disk n is about (and the partition, for a
	// partition) read-only when a quick look at sysfs says the disk is
	// removable by a criterion the full classification shares, it has a
	// medium, and it holds no system mount. skip is asked about the disk
	// first: true (an exempted device) leaves it alone. Guard reports
	// what it set read-only (empty when nothing); it must not block.
	Guard(n Notification, skip func(disk string) bool) (string, error)
}

// ActionDrift is the Action of a Notification a DriftWatcher sends when
// the protection of a tracked device may have been undone: its read-only
// flag touched (DevName is the disk), or the mount table changed (DevName
// is empty: every tracked device is looked at).
const ActionDrift = "drift"

// DriftWatcher is implemented by platforms that can announce drift on the
// devices the manager protects, so that it is repaired at once rather
// than at the next reconcile. The announcements arrive through Watch, as
// Notifications with Action ActionDrift.
type DriftWatcher interface {
	// Track watches the device (its nodes and filesystems) from now on;
	// calling it again for the same device adds what is new (partitions).
	Track(d Device)
	// Untrack stops watching the disk name.
	Untrack(name string)
	// Drifted reports, without opening the device (which itself would be
	// announced), whether the protection of d may have been undone: a
	// node not read-only, or a filesystem of it mounted writable. When it
	// cannot tell, it reports true.
	Drifted(d Device) bool
}

// PolicyEnsurer is implemented by platforms that keep OS-wide write
// policies besides per-disk flags (Windows' Removable Storage Access
// policy for CD/DVD, WPD, floppy and tape): the manager applies it at every
// reconcile, devices present or not.
type PolicyEnsurer interface {
	// EnsurePolicy sets what is not in place and says what it did; no
	// actions when all was in place.
	EnsurePolicy(ctx context.Context) ([]Action, error)
}

// Exempter is implemented by platforms that can make one device writable
// for an exemption and, when it ends, read-only again without ending
// anyone who is still writing.
type Exempter interface {
	// Release makes the device (its partitions and mounted filesystems)
	// writable and verifies it; State is StateExempted then. It is
	// idempotent: Repaired is false and there are no actions when the
	// device was writable.
	Release(ctx context.Context, d Device) (Result, error)
	// ProtectGently is Protect without ending anyone: it flushes, sets the
	// device read-only, and leaves a filesystem with writers writable,
	// with State StateEnding and the writers in Result.Busy. Protect
	// ends them.
	ProtectGently(ctx context.Context, d Device) (Result, error)
}

// WriteCounter is implemented by platforms that count the write requests
// a device has completed, which tells when an exempted device is first
// written to.
type WriteCounter interface {
	Writes(d Device) (uint64, error)
}

// EmitFunc records an event for the collector.
type EmitFunc func(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string)

// DefaultReconcileInterval is the backstop rescan's period when
// Manager.ReconcileInterval is zero. Devices are protected as the kernel
// announces them and drift is repaired as the platform announces it
// (DriftWatcher); the rescan catches what no announcement covers.
const DefaultReconcileInterval = 60 * time.Second

// Manager keeps every removable device read-only: it protects devices as
// the kernel announces them, repairs drift as the platform announces it,
// rescans every ReconcileInterval as a backstop, and reports the state as
// posture and events. Run drives it.
type Manager struct {
	Platform          Platform
	Mode              string
	ReconcileInterval time.Duration
	// TreatAsRemovable is reported in the posture (the platform applies it).
	TreatAsRemovable []string
	Emit             EmitFunc
	Logger           *slog.Logger
	// Layers reports whether the fail-closed udev and udisks rules are
	// installed; nil reports neither.
	Layers func() (udev, udisks bool)
	// OnChange is called (without locks held) when the media posture
	// changed, so the agent can report at once.
	OnChange func()
	// Observe, when set, receives for each device the kernel announced
	// the time from receiving the uevent to its verified protection
	// (benchmarks).
	Observe func(device string, latency time.Duration)
	Now     func() time.Time

	// Exempt says whether an exemption makes d writable now, and which
	// (its ID, for events and the posture). The manager asks it whenever
	// it looks at a device, with its operation lock held: Exempt must
	// answer from memory and must not call the Manager. nil: no device is
	// ever exempted. A platform that is not an Exempter cannot carry out
	// an exemption: the device stays read-only and an
	// EventExemptionFailed says why.
	Exempt func(d Device) (id string, ok bool)
	// EndGrace is how long, once an exemption has ended, the processes
	// still writing to the device get to close their files before the
	// platform's on_busy policy ends them or detaches the mount;
	// DefaultEndGrace when zero.
	EndGrace time.Duration
	// EndRetry is how often the read-only remount is tried again while
	// an exemption is ending; DefaultEndRetry when zero.
	EndRetry time.Duration
	// ExemptPoll is how often Run looks at exempted devices between
	// reconciles (for the first write, and to keep them writable) and at
	// ending ones (to retry); DefaultExemptPoll when zero.
	ExemptPoll time.Duration
	// Warn tells the users logged in at the terminal about an ending
	// exemption; WarnUsers when nil.
	Warn func(ctx context.Context, msg string) error

	// op serializes the work on devices: Run's, Reconcile and Refresh.
	op sync.Mutex
	// bg counts the warnings being sent.
	bg sync.WaitGroup
	// kick wakes Run to look at the exemption poll after Refresh.
	kickOnce sync.Once
	kick     chan struct{}

	mu            sync.Mutex
	devices       map[string]*tracked
	scanErr       error
	watchErr      error
	policyErr     error
	policySet     bool
	lastReconcile time.Time
}

type tracked struct {
	dev        Device
	state      State
	detail     string
	attachedAt time.Time

	// exemption is the ID of the exemption the device is writable under
	// (StateExempted) or whose end is under way (StateEnding).
	exemption string
	// failedExemption could not be applied; it is not tried again until
	// Refresh or the device is attached again.
	failedExemption string
	// writes is the write counter when the exemption was applied;
	// writesKnown is false where the platform cannot count them; used is
	// set once a write was seen.
	writes      uint64
	writesKnown bool
	used        bool
	// endingSince is when the exemption's end began, nextTry when to try
	// again; warned is set once users were warned of busy writers,
	// forced once they were warned that the grace is over, alerted once
	// a failure past the grace was reported.
	endingSince, nextTry time.Time
	writers              string
	warned, forced       bool
	alerted              bool
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) log() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

func (m *Manager) emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	if m.Emit != nil {
		m.Emit(typ, sev, msg, attrs)
	}
}

func (m *Manager) changed() {
	if m.OnChange != nil {
		m.OnChange()
	}
}

func (m *Manager) endGrace() time.Duration {
	if m.EndGrace > 0 {
		return m.EndGrace
	}
	return DefaultEndGrace
}

func (m *Manager) endRetry() time.Duration {
	if m.EndRetry > 0 {
		return m.EndRetry
	}
	return DefaultEndRetry
}

func (m *Manager) exemptPoll() time.Duration {
	if m.ExemptPoll > 0 {
		return m.ExemptPoll
	}
	return DefaultExemptPoll
}

func (m *Manager) kicker() chan struct{} {
	m.kickOnce.Do(func() { m.kick = make(chan struct{}, 1) })
	return m.kick
}

// exempting reports whether a tracked device is exempted or its exemption
// is ending: only then does Run poll.
func (m *Manager) exempting() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.devices {
		if t.exemption != "" {
			return true
		}
	}
	return false
}

// exempted reports whether the tracked disk name is exempted (or its
// exemption ending): the guard leaves it alone.
func (m *Manager) exempted(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.devices[name]
	return ok && t.exemption != ""
}

// Run protects devices until ctx ends; ending ctx is a clean exit.
func (m *Manager) Run(ctx context.Context) error {
	if m.ReconcileInterval <= 0 {
		m.ReconcileInterval = DefaultReconcileInterval
	}
	m.mu.Lock()
	if m.devices == nil {
		m.devices = make(map[string]*tracked)
	}
	m.mu.Unlock()
	if len(m.TreatAsRemovable) > 0 {
		m.log().Warn("TEST MODE: treating these kernel devices as removable (media.treat_as_removable)", "patterns", m.TreatAsRemovable)
	}
	if m.Mode != ModeEnforce {
		m.log().Warn("removable media NOT enforced: media.mode is " + m.Mode)
	}
	notes := make(chan Notification, 1024)
	rescan := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		guard, _ := m.Platform.(Guarder)
		err := m.Platform.Watch(ctx, func(n Notification) {
			if guard != nil && m.Mode == ModeEnforce && n.Subsystem == "block" && (n.Action == "add" || n.Action == "change") {
				if did, err := guard.Guard(n, m.exempted); err != nil {
					// The full enforcement follows and reports.
					m.log().Debug("guard", "device", n.DevName, "err", err)
				} else if did != "" {
					m.log().Debug("guard: set read-only at the uevent", "nodes", did)
				}
			}
			select {
			case notes <- n:
			default: // queue full: a rescan catches up
				select {
				case rescan <- struct{}{}:
				default:
				}
			}
		})
		if err != nil && ctx.Err() == nil {
			m.mu.Lock()
			m.watchErr = err
			m.mu.Unlock()
			m.log().Error("device watch failed; relying on the periodic rescan", "err", err)
			m.emit(EventWatchFailed, mnguardv1.Severity_SEVERITY_ALERT, "device watch failed: "+err.Error(), nil)
			m.changed()
		}
	}()
	defer wg.Wait()
	defer m.bg.Wait()

	m.Reconcile(ctx)
	t := time.NewTicker(m.ReconcileInterval)
	defer t.Stop()
	// The exemption poll runs only while a device is exempted or its
	// exemption ends: an idle agent does not wake for it.
	poll := time.NewTicker(m.exemptPoll())
	defer poll.Stop()
	polling := true
	kick := m.kicker()
	for {
		switch want := m.exempting(); {
		case want && !polling:
			poll.Reset(m.exemptPoll())
			polling = true
		case !want && polling:
			poll.Stop()
			polling = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.Reconcile(ctx)
		case <-rescan:
			m.Reconcile(ctx)
		case <-poll.C:
			m.pollExemptions(ctx)
		case <-kick:
		case n := <-notes:
			m.handle(ctx, n)
		}
	}
}

// Refresh looks at every tracked device again at once, to apply an
// exemption that began or end one that ended (the exemption logic calls it
// then; Exempt answers for each device). Exemptions that failed to apply
// are tried again. It is safe to call while Run runs (the work is
// serialized) and returns when every device is done.
func (m *Manager) Refresh(ctx context.Context) {
	m.op.Lock()
	defer m.op.Unlock()
	m.mu.Lock()
	devs := make([]Device, 0, len(m.devices))
	for _, t := range m.devices {
		t.failedExemption = ""
		devs = append(devs, t.dev)
	}
	m.mu.Unlock()
	for _, d := range devs {
		m.protect(ctx, d)
	}
	select {
	case m.kicker() <- struct{}{}:
	default:
	}
}

// pollExemptions looks at exempted devices (for their first write, and to
// keep them writable should something have set them read-only) and at
// ending ones whose retry is due.
func (m *Manager) pollExemptions(ctx context.Context) {
	m.op.Lock()
	defer m.op.Unlock()
	now := m.now()
	m.mu.Lock()
	var due []Device
	for _, t := range m.devices {
		if t.exemption == "" {
			continue
		}
		if t.state == StateExempted || !now.Before(t.nextTry) {
			due = append(due, t.dev)
		}
	}
	m.mu.Unlock()
	for _, d := range due {
		m.protect(ctx, d)
	}
}

// handle acts on one kernel notification.
func (m *Manager) handle(ctx context.Context, n Notification) {
	m.op.Lock()
	defer m.op.Unlock()
	name := n.DevName
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	switch {
	case n.Action == ActionOverflow:
		// Notifications were lost: only a rescan can tell what changed.
		m.reconcile(ctx)
	case n.Action == ActionDrift:
		m.repairDrift(ctx, name)
	case n.Subsystem == "block" && n.Action == "remove" && n.DevType != "partition":
		m.detach(name)
	case n.Subsystem == "block" && (n.Action == "add" || n.Action == "change"):
		lk, ok := m.Platform.(Looker)
		if !ok || name == "" {
			m.reconcile(ctx)
			return
		}
		d, removable, err := lk.Lookup(ctx, name)
		switch {
		case errors.Is(err, ErrVanished):
			m.detach(name)
		case err != nil:
			// Cannot tell: a full rescan decides, failing closed there.
			m.log().Warn("classify device", "device", name, "err", err)
			m.reconcile(ctx)
		case removable:
			if m.protect(ctx, d) && m.Observe != nil && !n.Received.IsZero() {
				m.Observe(d.Name, time.Since(n.Received))
			}
		default:
			// A "change" that leaves no removable medium (a loop device
			// detached, a card taken out) ends the old one.
			m.detach(name)
		}
	case n.Subsystem == "usb" && (n.Action == "add" || n.Action == "bind" || n.Action == "remove"):
		// Phones and cameras are USB devices, not disks.
		m.reconcile(ctx)
	}
}

// repairDrift protects again the tracked device name (every tracked
// device when name is empty) whose protection the platform says may have
// been undone. Exempted devices are left to the exemption poll; in
// monitor mode nothing is protected.
func (m *Manager) repairDrift(ctx context.Context, name string) {
	dw, ok := m.Platform.(DriftWatcher)
	if !ok || m.Mode != ModeEnforce {
		return
	}
	m.mu.Lock()
	var devs []Device
	for n, t := range m.devices {
		if (name == "" || n == name) && t.exemption == "" {
			devs = append(devs, t.dev)
		}
	}
	m.mu.Unlock()
	for _, d := range devs {
		if dw.Drifted(d) {
			m.protect(ctx, d)
		}
	}
}

// Reconcile scans for removable devices, protects each (repairing drift;
// exempted devices are kept writable instead) and forgets the ones that
// are gone.
func (m *Manager) Reconcile(ctx context.Context) {
	m.op.Lock()
	defer m.op.Unlock()
	m.reconcile(ctx)
}

func (m *Manager) reconcile(ctx context.Context) {
	if pe, ok := m.Platform.(PolicyEnsurer); ok && m.Mode == ModeEnforce {
		m.ensurePolicy(ctx, pe)
	}
	devs, err := m.Platform.Scan(ctx)
	m.mu.Lock()
	prevErr := m.scanErr
	m.scanErr = err
	m.lastReconcile = m.now()
	m.mu.Unlock()
	if err != nil {
		if prevErr == nil {
			m.log().Error("device scan failed", "err", err)
			m.emit(EventEnforcementFailed, mnguardv1.Severity_SEVERITY_ALERT, "device scan failed: "+err.Error(), nil)
		}
		m.changed()
	}
	// Protect what the scan found even when it could not read everything.
	present := make(map[string]bool, len(devs))
	for _, d := range devs {
		present[d.Name] = true
		m.protect(ctx, d)
	}
	if err != nil {
		return // an incomplete scan cannot tell what is gone
	}
	m.mu.Lock()
	var gone []string
	for name := range m.devices {
		if !present[name] {
			gone = append(gone, name)
		}
	}
	m.mu.Unlock()
	for _, name := range gone {
		m.detach(name)
	}
}

func attrs(d Device) map[string]string {
	a := map[string]string{"device": d.Name, "bus": string(d.Bus), "vendor_id": d.VendorID, "product_id": d.ProductID, "serial": d.Serial}
	if d.Model != "" {
		a["model"] = d.Model
	}
	return a
}

func describe(actions []Action) string {
	var parts []string
	for _, a := range actions {
		s := a.What
		if a.Err != nil {
			s += " (failed: " + a.Err.Error() + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// protect enforces one device (or its exemption) and reports what changed;
// it returns true when the device ends protected. The caller holds m.op.
func (m *Manager) protect(ctx context.Context, d Device) bool {
	m.mu.Lock()
	if m.devices == nil {
		m.devices = make(map[string]*tracked)
	}
	t, known := m.devices[d.Name]
	if known && t.dev.ID() != d.ID() {
		// Another medium under the same name (a card swapped in a reader,
		// a loop device re-attached): the old one is gone.
		m.mu.Unlock()
		m.detach(d.Name)
		m.mu.Lock()
		known = false
	}
	if !known {
		t = &tracked{dev: d, attachedAt: m.now()}
		m.devices[d.Name] = t
	}
	t.dev = d
	m.mu.Unlock()
	if dw, ok := m.Platform.(DriftWatcher); ok {
		dw.Track(d)
	}
	a := attrs(d)
	if !known {
		m.log().Info("removable device attached", "device", d.Name, "id", d.ID(), "bus", d.Bus, "reason", d.Reason)
		m.emit(EventAttached, mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s %s attached (%s)", d.Bus, d.Name, d.ID()), a)
	}
	if m.Mode != ModeEnforce {
		m.set(t, StateWritable, "not enforced: media.mode is "+m.Mode)
		if !known {
			m.changed()
		}
		return false
	}
	if id, ok := m.exemptionFor(d); ok {
		return m.release(ctx, t, d, id, known)
	}
	return m.endOrEnforce(ctx, t, d, known)
}

// enforce makes a device read-only, as a device without an exemption is.
func (m *Manager) enforce(ctx context.Context, t *tracked, d Device, known bool) bool {
	a := attrs(d)
	res, err := m.Platform.Protect(ctx, d)
	switch {
	case errors.Is(err, ErrVanished):
		m.detach(d.Name)
		return false
	case err != nil || res.State == StateWritable || res.State == "":
		reason := describe(res.Actions)
		if err != nil {
			reason = err.Error()
		}
		a["reason"] = reason
		m.log().Error("removable device NOT read-only", "device", d.Name, "id", d.ID(), "err", reason)
		m.emit(EventEnforcementFailed, mnguardv1.Severity_SEVERITY_ALERT, fmt.Sprintf("%s could not be made read-only: %s", d.Name, reason), a)
		m.set(t, StateWritable, "enforcement failed: "+reason)
		m.changed()
		return false
	}
	detail := describe(res.Actions)
	prev := m.set(t, res.State, detail)
	switch {
	case !known || prev != res.State:
		a["actions"] = detail
		m.log().Info("removable device protected", "device", d.Name, "state", res.State, "actions", detail)
		m.emit(EventReadOnlySet, mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s is %s: %s", d.Name, res.State, detail), a)
		m.changed()
	case res.Repaired:
		a["actions"] = detail
		m.log().Warn("drift repaired: removable device had become writable", "device", d.Name, "actions", detail)
		m.emit(EventDriftRepaired, mnguardv1.Severity_SEVERITY_WARNING, fmt.Sprintf("%s had become writable and is %s again: %s", d.Name, res.State, detail), a)
		m.changed()
	}
	return true
}

// ensurePolicy applies the platform's OS-wide policy and reports changes:
// the first setting as read_only_set, later ones as drift repaired.
func (m *Manager) ensurePolicy(ctx context.Context, pe PolicyEnsurer) {
	actions, err := pe.EnsurePolicy(ctx)
	m.mu.Lock()
	prevErr, first := m.policyErr, !m.policySet
	m.policyErr, m.policySet = err, true
	m.mu.Unlock()
	detail := describe(actions)
	switch {
	case err != nil:
		if prevErr == nil || prevErr.Error() != err.Error() {
			m.log().Error("removable storage policy not in place", "err", err)
			m.emit(EventEnforcementFailed, mnguardv1.Severity_SEVERITY_ALERT, "removable storage policy not in place: "+err.Error(), map[string]string{"actions": detail})
		}
		m.changed()
	case len(actions) > 0 && first:
		m.log().Info("removable storage policy set", "actions", detail)
		m.emit(EventReadOnlySet, mnguardv1.Severity_SEVERITY_INFO, "removable storage policy set: "+detail, nil)
	case len(actions) > 0:
		m.log().Warn("drift repaired: removable storage policy had changed", "actions", detail)
		m.emit(EventDriftRepaired, mnguardv1.Severity_SEVERITY_WARNING, "removable storage policy had changed and was set again: "+detail, nil)
	case prevErr != nil:
		m.changed()
	}
}

// set records a device's state and returns the previous one.
func (m *Manager) set(t *tracked, s State, detail string) State {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := t.state
	t.state, t.detail = s, detail
	return prev
}

func (m *Manager) detach(name string) {
	m.mu.Lock()
	t, ok := m.devices[name]
	delete(m.devices, name)
	m.mu.Unlock()
	if !ok {
		return
	}
	if dw, ok := m.Platform.(DriftWatcher); ok {
		dw.Untrack(name)
	}
	a := attrs(t.dev)
	if t.exemption != "" {
		a["exemption_id"] = t.exemption
	}
	m.log().Info("removable device detached", "device", name, "exemption", t.exemption)
	m.emit(EventDetached, mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s %s detached", t.dev.Bus, name), a)
	m.changed()
}

// Posture reports the enforcement state.
func (m *Manager) Posture() *mnguardv1.MediaPosture {
	var udev, udisks bool
	if m.Layers != nil {
		udev, udisks = m.Layers()
	}
	now := m.now()
	grace := m.endGrace()
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &mnguardv1.MediaPosture{
		Mode: m.Mode, UdevRuleInstalled: udev, UdisksRuleInstalled: udisks,
		TreatAsRemovable: m.TreatAsRemovable,
	}
	if !m.lastReconcile.IsZero() {
		p.LastReconcile = timestamppb.New(m.lastReconcile)
	}
	var problems []string
	if m.Mode != ModeEnforce {
		problems = append(problems, "media.mode is "+m.Mode+": removable media are not write-blocked")
	}
	if m.lastReconcile.IsZero() {
		problems = append(problems, "no device scan yet")
	}
	if m.scanErr != nil {
		problems = append(problems, "device scan failed: "+m.scanErr.Error())
	}
	if m.watchErr != nil {
		problems = append(problems, "device watch failed: "+m.watchErr.Error())
	}
	if m.policyErr != nil {
		problems = append(problems, "removable storage policy not in place: "+m.policyErr.Error())
	}
	names := make([]string, 0, len(m.devices))
	for n := range m.devices {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := m.devices[n]
		d := t.dev
		rd := &mnguardv1.RemovableDevice{
			Name: d.Name, Bus: string(d.Bus), VendorId: d.VendorID, ProductId: d.ProductID, Serial: d.Serial,
			Model: d.Model, SizeBytes: d.SizeBytes, Partitions: d.Partitions, State: string(t.state),
			Reason: d.Reason, Detail: t.detail, AttachedAt: timestamppb.New(t.attachedAt),
		}
		for _, i := range d.Interfaces {
			rd.Interfaces = append(rd.Interfaces, &mnguardv1.UsbInterface{Class: uint32(i.Class), Subclass: uint32(i.Subclass), Protocol: uint32(i.Protocol)})
		}
		p.Devices = append(p.Devices, rd)
		if t.state == StateWritable && m.Mode == ModeEnforce {
			problems = append(problems, d.Name+" is writable: "+t.detail)
		}
		// An exempted device is writable by sanction; one whose exemption
		// ended is expected to be read-only by the end of the grace.
		if t.state == StateEnding && !now.Before(t.endingSince.Add(grace)) {
			problems = append(problems, d.Name+" is still writable after its exemption ended: "+t.detail)
		}
	}
	p.Healthy = len(problems) == 0
	p.UnhealthyReason = strings.Join(problems, "; ")
	return p
}
