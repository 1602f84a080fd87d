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
)

// Looker is implemented by platforms that can classify one device by name
// (a disk or one of its partitions), which is much faster than a full Scan
// when the kernel announces a single device.
type Looker interface {
	// Lookup returns the removable whole disk that name is or belongs to;
	// ok is false when it is not removable.
	Lookup(ctx context.Context, name string) (d Device, ok bool, err error)
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

// EmitFunc records an event for the collector.
type EmitFunc func(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string)

// Manager keeps every removable device read-only: it protects devices as
// the kernel announces them, rescans every ReconcileInterval to repair
// drift, and reports the state as posture and events. Run drives it.
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

// Run protects devices until ctx ends; ending ctx is a clean exit.
func (m *Manager) Run(ctx context.Context) error {
	if m.ReconcileInterval <= 0 {
		m.ReconcileInterval = 10 * time.Second
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
		err := m.Platform.Watch(ctx, func(n Notification) {
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

	m.Reconcile(ctx)
	t := time.NewTicker(m.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.Reconcile(ctx)
		case <-rescan:
			m.Reconcile(ctx)
		case n := <-notes:
			m.handle(ctx, n)
		}
	}
}

// handle acts on one kernel notification.
func (m *Manager) handle(ctx context.Context, n Notification) {
	name := n.DevName
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	switch {
	case n.Action == ActionOverflow:
		// Notifications were lost: only a rescan can tell what changed.
		m.Reconcile(ctx)
	case n.Subsystem == "block" && n.Action == "remove" && n.DevType != "partition":
		m.detach(name)
	case n.Subsystem == "block" && (n.Action == "add" || n.Action == "change"):
		lk, ok := m.Platform.(Looker)
		if !ok || name == "" {
			m.Reconcile(ctx)
			return
		}
		d, removable, err := lk.Lookup(ctx, name)
		switch {
		case errors.Is(err, ErrVanished):
			m.detach(name)
		case err != nil:
			// Cannot tell: a full rescan decides, failing closed there.
			m.log().Warn("classify device", "device", name, "err", err)
			m.Reconcile(ctx)
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
		m.Reconcile(ctx)
	}
}

// Reconcile scans for removable devices, protects each (repairing drift)
// and forgets the ones that are gone.
func (m *Manager) Reconcile(ctx context.Context) {
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

// protect enforces one device and reports what changed; it returns true
// when the device ends protected.
func (m *Manager) protect(ctx context.Context, d Device) bool {
	m.mu.Lock()
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
	m.log().Info("removable device detached", "device", name)
	m.emit(EventDetached, mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("%s %s detached", t.dev.Bus, name), attrs(t.dev))
	m.changed()
}

// Posture reports the enforcement state.
func (m *Manager) Posture() *mnguardv1.MediaPosture {
	var udev, udisks bool
	if m.Layers != nil {
		udev, udisks = m.Layers()
	}
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
	}
	p.Healthy = len(problems) == 0
	p.UnhealthyReason = strings.Join(problems, "; ")
	return p
}
