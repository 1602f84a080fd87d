package media

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// fakePlatform is a Platform whose devices and answers a test sets.
type fakePlatform struct {
	mu       sync.Mutex
	devices  map[string]Device
	ro       map[string]bool
	failing  map[string]error
	scanErr  error
	watch    chan Notification
	protects int

	// Exemptions: what Release fails with, the writers that keep a
	// device busy for ProtectGently (Protect ends them), the write
	// counters, and how often Release ran.
	releaseErr map[string]error
	busy       map[string][]Writer
	writes     map[string]uint64
	releases   int
}

func newFake() *fakePlatform {
	return &fakePlatform{devices: map[string]Device{}, ro: map[string]bool{}, failing: map[string]error{}, watch: make(chan Notification, 16),
		releaseErr: map[string]error{}, busy: map[string][]Writer{}, writes: map[string]uint64{}}
}

func (f *fakePlatform) attach(d Device) {
	f.mu.Lock()
	f.devices[d.Name] = d
	f.mu.Unlock()
}

func (f *fakePlatform) Scan(context.Context) ([]Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.scanErr != nil {
		return nil, f.scanErr
	}
	var out []Device
	for _, d := range f.devices {
		out = append(out, d)
	}
	return out, nil
}

func (f *fakePlatform) Lookup(_ context.Context, name string) (Device, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[name]
	if !ok {
		return Device{}, false, ErrVanished
	}
	return d, true, nil
}

func (f *fakePlatform) Protect(_ context.Context, d Device) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.protects++
	if _, ok := f.devices[d.Name]; !ok {
		return Result{}, ErrVanished
	}
	if err := f.failing[d.Name]; err != nil {
		return Result{Device: d, State: StateWritable, Actions: []Action{{What: "BLKROSET " + d.Name, Err: err}}}, err
	}
	res := Result{Device: d, State: StateReadOnly}
	if !f.ro[d.Name] {
		res.Repaired = true
		res.Actions = []Action{{What: "BLKROSET " + d.Name}}
		f.ro[d.Name] = true
	}
	for _, w := range f.busy[d.Name] {
		res.Actions = append(res.Actions, Action{What: "ended " + w.String()})
	}
	delete(f.busy, d.Name)
	return res, nil
}

func (f *fakePlatform) Release(_ context.Context, d Device) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases++
	if _, ok := f.devices[d.Name]; !ok {
		return Result{}, ErrVanished
	}
	if err := f.releaseErr[d.Name]; err != nil {
		return Result{Device: d, State: StateReadOnly, Actions: []Action{{What: "BLKROSET 0 " + d.Name, Err: err}}}, err
	}
	res := Result{Device: d, State: StateExempted}
	if f.ro[d.Name] {
		res.Repaired = true
		res.Actions = []Action{{What: "BLKROSET 0 " + d.Name}}
		f.ro[d.Name] = false
	}
	return res, nil
}

func (f *fakePlatform) ProtectGently(_ context.Context, d Device) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[d.Name]; !ok {
		return Result{}, ErrVanished
	}
	res := Result{Device: d, State: StateReadOnly, Actions: []Action{{What: "BLKFLSBUF " + d.Name}}}
	if !f.ro[d.Name] {
		res.Actions = append(res.Actions, Action{What: "BLKROSET " + d.Name})
		f.ro[d.Name] = true
	}
	if ws := f.busy[d.Name]; len(ws) > 0 {
		res.State, res.Busy = StateEnding, ws
	}
	return res, nil
}

func (f *fakePlatform) Writes(d Device) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes[d.Name], nil
}

// with runs fn with the fake's lock held.
func (f *fakePlatform) with(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakePlatform) Watch(ctx context.Context, fn func(Notification)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-f.watch:
			fn(n)
		}
	}
}

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) emit(typ string, _ mnguardv1.Severity, _ string, _ map[string]string) {
	r.mu.Lock()
	r.events = append(r.events, typ)
	r.mu.Unlock()
}

func (r *recorder) has(typ string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e == typ {
			return true
		}
	}
	return false
}

func (r *recorder) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e == typ {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func stick(name, serial string) Device {
	return Device{Name: name, Bus: BusUSB, VendorID: "0781", ProductID: "5567", Serial: serial, Reason: "usb ancestor 2-1"}
}

func startManager(t *testing.T, f *fakePlatform, mode string) (*Manager, *recorder) {
	t.Helper()
	rec := &recorder{}
	m := &Manager{Platform: f, Mode: mode, ReconcileInterval: time.Hour, Emit: rec.emit}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("Run did not end after cancel")
		}
	})
	return m, rec
}

func deviceState(m *Manager, name string) string {
	for _, d := range m.Posture().GetDevices() {
		if d.GetName() == name {
			return d.GetState()
		}
	}
	return ""
}

func TestManagerProtectsAndReports(t *testing.T) {
	f := newFake()
	f.attach(stick("sdb", "A1"))
	m, rec := startManager(t, f, ModeEnforce)
	waitFor(t, "sdb read-only", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
	if !rec.has(EventAttached) || !rec.has(EventReadOnlySet) {
		t.Errorf("events %v, want attached and read_only_set", rec.events)
	}
	p := m.Posture()
	if !p.GetHealthy() || p.GetMode() != ModeEnforce || p.GetLastReconcile() == nil {
		t.Errorf("posture = %v", p)
	}

	// A device the kernel announces is protected without waiting for the
	// rescan.
	f.attach(stick("sdc", "B2"))
	f.watch <- Notification{Action: "add", Subsystem: "block", DevName: "sdc", DevType: "disk"}
	waitFor(t, "sdc read-only", func() bool { return deviceState(m, "sdc") == string(StateReadOnly) })

	// Drift: the device became writable; the next reconcile repairs it.
	f.mu.Lock()
	f.ro["sdb"] = false
	f.mu.Unlock()
	m.Reconcile(context.Background())
	if !rec.has(EventDriftRepaired) {
		t.Errorf("events %v, want drift_repaired", rec.events)
	}

	// Detach.
	f.mu.Lock()
	delete(f.devices, "sdc")
	f.mu.Unlock()
	f.watch <- Notification{Action: "remove", Subsystem: "block", DevName: "sdc", DevType: "disk"}
	waitFor(t, "sdc gone", func() bool { return deviceState(m, "sdc") == "" })
	if !rec.has(EventDetached) {
		t.Errorf("events %v, want detached", rec.events)
	}
	// Another medium under the same name is a new attach.
	f.attach(stick("sdb", "OTHER"))
	f.watch <- Notification{Action: "change", Subsystem: "block", DevName: "sdb", DevType: "disk"}
	waitFor(t, "new medium in sdb", func() bool {
		for _, d := range m.Posture().GetDevices() {
			if d.GetName() == "sdb" && d.GetSerial() == "OTHER" {
				return true
			}
		}
		return false
	})
	if n := rec.count(EventAttached); n != 3 {
		t.Errorf("%d attached events, want 3 (sdb, sdc, sdb's new medium)", n)
	}
	// An unchanged read-only device emits nothing more on rescans.
	before := len(rec.events)
	m.Reconcile(context.Background())
	m.Reconcile(context.Background())
	if len(rec.events) != before {
		t.Errorf("quiet reconciles emitted %v", rec.events[before:])
	}
}

func TestManagerFailsLoudly(t *testing.T) {
	f := newFake()
	f.attach(stick("sdb", "A1"))
	f.failing["sdb"] = errors.New("permission denied")
	m, rec := startManager(t, f, ModeEnforce)
	waitFor(t, "sdb writable", func() bool { return deviceState(m, "sdb") == string(StateWritable) })
	if !rec.has(EventEnforcementFailed) {
		t.Errorf("events %v, want enforcement_failed", rec.events)
	}
	p := m.Posture()
	if p.GetHealthy() || !strings.Contains(p.GetUnhealthyReason(), "sdb is writable") {
		t.Errorf("posture healthy=%v reason=%q", p.GetHealthy(), p.GetUnhealthyReason())
	}
	// The failure is repeated at every reconcile until it is fixed.
	delete(f.failing, "sdb")
	m.Reconcile(context.Background())
	if deviceState(m, "sdb") != string(StateReadOnly) || !m.Posture().GetHealthy() {
		t.Errorf("after the fault cleared: %v", m.Posture())
	}
}

func TestManagerScanFailureIsUnhealthy(t *testing.T) {
	f := newFake()
	f.scanErr = errors.New("sysfs unreadable")
	m, rec := startManager(t, f, ModeEnforce)
	waitFor(t, "a reconcile", func() bool { return m.Posture().GetLastReconcile() != nil })
	p := m.Posture()
	if p.GetHealthy() || !strings.Contains(p.GetUnhealthyReason(), "sysfs unreadable") {
		t.Errorf("posture = %v", p)
	}
	m.Reconcile(context.Background())
	if n := rec.count(EventEnforcementFailed); n != 1 {
		t.Errorf("%d enforcement_failed events for one lasting fault, want 1", n)
	}
}

func TestManagerVanishedDevice(t *testing.T) {
	f := newFake()
	m, rec := startManager(t, f, ModeEnforce)
	// Announced, but gone before it could be looked at.
	f.watch <- Notification{Action: "add", Subsystem: "block", DevName: "sdz", DevType: "disk"}
	f.attach(stick("sdb", "A1"))
	f.watch <- Notification{Action: "add", Subsystem: "block", DevName: "sdb", DevType: "disk"}
	waitFor(t, "sdb read-only", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
	if deviceState(m, "sdz") != "" || rec.has(EventEnforcementFailed) {
		t.Errorf("vanished device left state or failure events: %v %v", m.Posture(), rec.events)
	}
}

func TestManagerMonitorMode(t *testing.T) {
	f := newFake()
	f.attach(stick("sdb", "A1"))
	m, _ := startManager(t, f, ModeMonitor)
	waitFor(t, "sdb seen", func() bool { return deviceState(m, "sdb") == string(StateWritable) })
	if f.protects != 0 {
		t.Errorf("monitor mode called Protect %d times", f.protects)
	}
	if p := m.Posture(); p.GetHealthy() || !strings.Contains(p.GetUnhealthyReason(), "monitor") {
		t.Errorf("monitor mode posture = %v", p)
	}
}

// policyFake adds an OS-wide policy to the fake platform.
type policyFake struct {
	*fakePlatform
	set  bool
	fail error
}

func (p *policyFake) EnsurePolicy(context.Context) ([]Action, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return []Action{{What: "set CD/DVD Deny_Write=1", Err: p.fail}}, p.fail
	}
	if p.set {
		return nil, nil
	}
	p.set = true
	return []Action{{What: "set CD/DVD Deny_Write=1 (was absent)"}}, nil
}

func TestManagerAppliesPolicy(t *testing.T) {
	p := &policyFake{fakePlatform: newFake()}
	rec := &recorder{}
	m := &Manager{Platform: p, Mode: ModeEnforce, Emit: rec.emit}
	m.devices = map[string]*tracked{}
	m.Reconcile(context.Background())
	if !rec.has(EventReadOnlySet) || !m.Posture().GetHealthy() {
		t.Fatalf("first policy: events %v, posture %v", rec.events, m.Posture())
	}
	p.mu.Lock()
	p.set = false // someone deleted the value
	p.mu.Unlock()
	m.Reconcile(context.Background())
	if !rec.has(EventDriftRepaired) {
		t.Errorf("policy drift: events %v", rec.events)
	}
	p.mu.Lock()
	p.fail = errors.New("access denied")
	p.mu.Unlock()
	m.Reconcile(context.Background())
	if pp := m.Posture(); pp.GetHealthy() || !strings.Contains(pp.GetUnhealthyReason(), "access denied") || !rec.has(EventEnforcementFailed) {
		t.Errorf("policy failure: posture %v, events %v", pp, rec.events)
	}
}
