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

// The manager's exemption state machine on the fake platform; the same on
// real loop devices is in exempt_linux_test.go.

// event is one emitted event with its attributes.
type event struct {
	typ   string
	sev   mnguardv1.Severity
	msg   string
	attrs map[string]string
}

// events records the manager's events in full.
type events struct {
	mu  sync.Mutex
	all []event
}

func (e *events) emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, event{typ, sev, msg, attrs})
}

func (e *events) of(typ string) []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []event
	for _, ev := range e.all {
		if ev.typ == typ {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) count(typ string) int { return len(e.of(typ)) }

func (e *events) since(n int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.all[n:] {
		out = append(out, ev.typ)
	}
	return out
}

func (e *events) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.all)
}

// exemptions is what the exemption logic would hold: device ID to
// exemption ID.
type exemptions struct {
	mu sync.Mutex
	by map[string]string
}

func (x *exemptions) set(deviceID, id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.by == nil {
		x.by = map[string]string{}
	}
	if id == "" {
		delete(x.by, deviceID)
		return
	}
	x.by[deviceID] = id
}

func (x *exemptions) exempt(d Device) (string, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	id, ok := x.by[d.ID()]
	return id, ok
}

// warnings records what the users were told.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) warn(_ context.Context, msg string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
	return nil
}

func (w *warnings) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

func deviceDetail(m *Manager, name string) string {
	for _, d := range m.Posture().GetDevices() {
		if d.GetName() == name {
			return d.GetDetail()
		}
	}
	return ""
}

// startExemptManager runs a manager over p with short exemption timings.
func startExemptManager(t *testing.T, p Platform, x *exemptions, w *warnings, grace time.Duration) (*Manager, *events) {
	t.Helper()
	ev := &events{}
	m := &Manager{
		Platform: p, Mode: ModeEnforce, ReconcileInterval: time.Hour, Emit: ev.emit,
		Exempt: x.exempt, Warn: w.warn,
		EndGrace: grace, EndRetry: 20 * time.Millisecond, ExemptPoll: 10 * time.Millisecond,
	}
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
	return m, ev
}

func TestManagerExemption(t *testing.T) {
	f := newFake()
	a, b := stick("sdb", "A1"), stick("sdc", "B2")
	f.attach(a)
	f.attach(b)
	x, w := &exemptions{}, &warnings{}
	m, ev := startExemptManager(t, f, x, w, time.Minute)
	waitFor(t, "both read-only", func() bool {
		return deviceState(m, "sdb") == string(StateReadOnly) && deviceState(m, "sdc") == string(StateReadOnly)
	})
	ctx := context.Background()

	// Applied: only the named device is released.
	x.set(a.ID(), "ex-1")
	m.Refresh(ctx)
	if got := deviceState(m, "sdb"); got != string(StateExempted) {
		t.Fatalf("sdb state after Refresh = %q, want exempted", got)
	}
	f.with(func() {
		if f.ro["sdb"] || !f.ro["sdc"] {
			t.Errorf("read-only flags after the exemption: sdb %v, sdc %v; want false, true", f.ro["sdb"], f.ro["sdc"])
		}
	})
	applied := ev.of(EventExemptionApplied)
	if len(applied) != 1 {
		t.Fatalf("%d applied events, want 1", len(applied))
	}
	if at := applied[0].attrs; at["exemption_id"] != "ex-1" || at["device_id"] != "0781:5567:A1" || at["device"] != "sdb" || !strings.Contains(at["actions"], "BLKROSET 0 sdb") {
		t.Errorf("applied attrs = %v", at)
	}
	if p := m.Posture(); !p.GetHealthy() || !strings.Contains(deviceDetail(m, "sdb"), "ex-1") {
		t.Errorf("posture with an exempted device: healthy %v (%s), sdb detail %q", p.GetHealthy(), p.GetUnhealthyReason(), deviceDetail(m, "sdb"))
	}

	// Drift repair does not fight it, and quiet rounds say nothing.
	before := ev.len()
	m.Reconcile(ctx)
	m.Reconcile(ctx)
	time.Sleep(50 * time.Millisecond) // a few polls
	if got := deviceState(m, "sdb"); got != string(StateExempted) {
		t.Errorf("sdb state after reconciles = %q", got)
	}
	f.with(func() {
		if f.ro["sdb"] {
			t.Error("a reconcile made the exempted sdb read-only")
		}
	})
	if evs := ev.since(before); len(evs) != 0 {
		t.Errorf("reconciles of an exempted device emitted %v", evs)
	}

	// Something sets it read-only (the udev hook at a "change" event): it
	// is writable again at the next poll, without another applied event.
	f.with(func() { f.ro["sdb"] = true })
	waitFor(t, "sdb writable again", func() bool {
		var ro bool
		f.with(func() { ro = f.ro["sdb"] })
		return !ro
	})
	// Wait for that poll to finish (Reconcile waits its turn): writes
	// during the repair itself count as the repair's (a remount writes).
	m.Reconcile(ctx)
	if n := ev.count(EventExemptionApplied); n != 1 {
		t.Errorf("%d applied events after a repair, want 1", n)
	}

	// Used: the first write is reported once.
	if n := ev.count(EventExemptionUsed); n != 0 {
		t.Fatalf("used event before any write")
	}
	f.with(func() { f.writes["sdb"] += 3 })
	waitFor(t, "used event", func() bool { return ev.count(EventExemptionUsed) == 1 })
	f.with(func() { f.writes["sdb"] += 5 })
	time.Sleep(50 * time.Millisecond)
	m.Reconcile(ctx)
	used := ev.of(EventExemptionUsed)
	if len(used) != 1 || used[0].attrs["exemption_id"] != "ex-1" || used[0].attrs["writes"] != "3" {
		t.Errorf("used events = %+v, want one for ex-1 with 3 writes", used)
	}

	// Ended, nobody writing: read-only at once, no warning.
	x.set(a.ID(), "")
	m.Refresh(ctx)
	if got := deviceState(m, "sdb"); got != string(StateReadOnly) {
		t.Fatalf("sdb state after the end = %q", got)
	}
	f.with(func() {
		if !f.ro["sdb"] {
			t.Error("sdb writable after the exemption ended")
		}
	})
	ended := ev.of(EventExemptionEnded)
	if len(ended) != 1 || ended[0].attrs["exemption_id"] != "ex-1" || ended[0].attrs["forced"] != "false" || !strings.Contains(ended[0].attrs["actions"], "BLKROSET sdb") {
		t.Errorf("ended events = %+v", ended)
	}
	if ev.count(EventExemptionEndBusy) != 0 || len(w.get()) != 0 {
		t.Errorf("an end without writers warned: %v %v", ev.of(EventExemptionEndBusy), w.get())
	}
	before = ev.len()
	m.Reconcile(ctx)
	if evs := ev.since(before); len(evs) != 0 {
		t.Errorf("a reconcile after the end emitted %v", evs)
	}

	// A new exemption is a new application: applied and used again.
	x.set(a.ID(), "ex-2")
	m.Refresh(ctx)
	f.with(func() { f.writes["sdb"]++ })
	waitFor(t, "used under ex-2", func() bool { return ev.count(EventExemptionUsed) == 2 })
	if got := ev.of(EventExemptionApplied); len(got) != 2 || got[1].attrs["exemption_id"] != "ex-2" {
		t.Errorf("applied events = %+v", got)
	}

	// Detached while exempted: an ordinary detach, naming the exemption;
	// attached again while the exemption lasts: released again.
	f.with(func() { delete(f.devices, "sdb") })
	f.watch <- Notification{Action: "remove", Subsystem: "block", DevName: "sdb", DevType: "disk"}
	waitFor(t, "sdb gone", func() bool { return deviceState(m, "sdb") == "" })
	if det := ev.of(EventDetached); len(det) != 1 || det[0].attrs["exemption_id"] != "ex-2" {
		t.Errorf("detached events = %+v", det)
	}
	f.with(func() { f.ro["sdb"] = true }) // a new stick comes read-only (udev hook)
	f.attach(a)
	f.watch <- Notification{Action: "add", Subsystem: "block", DevName: "sdb", DevType: "disk"}
	waitFor(t, "sdb exempted again", func() bool { return deviceState(m, "sdb") == string(StateExempted) })
	if n := ev.count(EventExemptionApplied); n != 3 {
		t.Errorf("%d applied events, want 3", n)
	}
	if ev.count(EventExemptionEnded) != 1 {
		t.Errorf("detach emitted an ended event: %v", ev.of(EventExemptionEnded))
	}
}

func TestManagerExemptionEndBusy(t *testing.T) {
	const grace = 300 * time.Millisecond
	f := newFake()
	a := stick("sdb", "A1")
	a.Model = "Cruzer Blade"
	f.attach(a)
	x, w := &exemptions{}, &warnings{}
	x.set(a.ID(), "ex-1")
	m, ev := startExemptManager(t, f, x, w, grace)
	waitFor(t, "sdb exempted", func() bool { return deviceState(m, "sdb") == string(StateExempted) })

	f.with(func() {
		f.busy["sdb"] = []Writer{{PID: 4321, Command: "soffice.bin", What: "writing /media/u/STICK/report.odt", Mount: "/media/u/STICK"}}
	})
	x.set(a.ID(), "")
	start := time.Now()
	m.Refresh(context.Background())
	if got := deviceState(m, "sdb"); got != string(StateEnding) {
		t.Fatalf("state with a writer = %q, want ending", got)
	}
	busy := ev.of(EventExemptionEndBusy)
	if len(busy) != 1 {
		t.Fatalf("%d end_busy events, want 1", len(busy))
	}
	if at := busy[0].attrs; at["pids"] != "4321" || !strings.Contains(at["writers"], "soffice.bin") || at["exemption_id"] != "ex-1" || at["grace"] != grace.String() {
		t.Errorf("end_busy attrs = %v", at)
	}
	waitFor(t, "users warned", func() bool { return len(w.get()) == 1 })
	if msg := w.get()[0]; !strings.Contains(msg, "Cruzer Blade") || !strings.Contains(msg, "/media/u/STICK") || !strings.Contains(msg, "pid 4321") || !strings.Contains(msg, "書き込み") {
		t.Errorf("warning = %q", msg)
	}
	// During the grace: ending, healthy, said so, retried without ending
	// anyone, and warned only once.
	if p := m.Posture(); !p.GetHealthy() || !strings.Contains(deviceDetail(m, "sdb"), "still writable while pid 4321") {
		t.Errorf("posture during the grace: healthy %v, detail %q", p.GetHealthy(), deviceDetail(m, "sdb"))
	}
	time.Sleep(grace / 2)
	if got := deviceState(m, "sdb"); got != string(StateEnding) || ev.count(EventExemptionEndBusy) != 1 {
		t.Errorf("half-way through the grace: state %q, %d end_busy events", got, ev.count(EventExemptionEndBusy))
	}
	// After the grace: Protect ends the writer.
	waitFor(t, "read-only after the grace", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
	if took := time.Since(start); took < grace {
		t.Errorf("read-only after %v, before the grace of %v", took, grace)
	}
	ended := ev.of(EventExemptionEnded)
	if len(ended) != 1 || ended[0].attrs["forced"] != "true" || !strings.Contains(ended[0].attrs["actions"], "ended pid 4321") {
		t.Errorf("ended events = %+v", ended)
	}
	waitFor(t, "the second warning", func() bool { return len(w.get()) == 2 })
	if msg := w.get()[1]; !strings.Contains(msg, "grace period is over") {
		t.Errorf("second warning = %q", msg)
	}
	if p := m.Posture(); !p.GetHealthy() {
		t.Errorf("posture after the end: %s", p.GetUnhealthyReason())
	}
}

// TestManagerExemptionEndFails: a device that cannot be made read-only
// after the grace stays "ending", the posture says unhealthy, the failure
// is alerted once, and it is retried until it works.
func TestManagerExemptionEndFails(t *testing.T) {
	const grace = 100 * time.Millisecond
	f := newFake()
	a := stick("sdb", "A1")
	f.attach(a)
	x, w := &exemptions{}, &warnings{}
	x.set(a.ID(), "ex-1")
	m, ev := startExemptManager(t, f, x, w, grace)
	waitFor(t, "sdb exempted", func() bool { return deviceState(m, "sdb") == string(StateExempted) })
	f.with(func() {
		f.busy["sdb"] = []Writer{{PID: 4321, Command: "cp", What: "writing /m/f", Mount: "/m"}}
		f.failing["sdb"] = errors.New("remount: device or resource busy")
	})
	x.set(a.ID(), "")
	m.Refresh(context.Background())
	waitFor(t, "unhealthy past the grace", func() bool { return !m.Posture().GetHealthy() })
	if got := deviceState(m, "sdb"); got != string(StateEnding) {
		t.Errorf("state = %q, want ending", got)
	}
	if p := m.Posture(); !strings.Contains(p.GetUnhealthyReason(), "still writable after its exemption ended") {
		t.Errorf("unhealthy reason = %q", p.GetUnhealthyReason())
	}
	time.Sleep(100 * time.Millisecond) // several retries
	if n := ev.count(EventEnforcementFailed); n != 1 {
		t.Errorf("%d enforcement_failed events, want 1", n)
	}
	f.with(func() { delete(f.failing, "sdb") })
	waitFor(t, "read-only once it works", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
	if !m.Posture().GetHealthy() || ev.count(EventExemptionEnded) != 1 {
		t.Errorf("after the fault cleared: %v, ended events %d", m.Posture(), ev.count(EventExemptionEnded))
	}
}

// TestManagerExemptionFailsClosed: a platform that cannot release, and a
// release that fails, leave the device read-only and say so once per
// exemption (again after Refresh, which retries).
func TestManagerExemptionFailsClosed(t *testing.T) {
	t.Run("platform without Release", func(t *testing.T) {
		f := newFake()
		a := stick("sdb", "A1")
		f.attach(a)
		x := &exemptions{}
		x.set(a.ID(), "ex-1")
		m, ev := startExemptManager(t, struct{ Platform }{f}, x, &warnings{}, time.Minute)
		waitFor(t, "sdb read-only", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
		waitFor(t, "exemption_failed", func() bool { return ev.count(EventExemptionFailed) == 1 })
		failed := ev.of(EventExemptionFailed)[0]
		if !strings.Contains(failed.attrs["reason"], "unsupported") || failed.attrs["exemption_id"] != "ex-1" {
			t.Errorf("exemption_failed attrs = %v", failed.attrs)
		}
		m.Reconcile(context.Background())
		time.Sleep(30 * time.Millisecond)
		if n := ev.count(EventExemptionFailed); n != 1 {
			t.Errorf("%d exemption_failed events after a reconcile, want 1", n)
		}
		m.Refresh(context.Background())
		if n := ev.count(EventExemptionFailed); n != 2 {
			t.Errorf("%d exemption_failed events after Refresh, want 2", n)
		}
		f.with(func() {
			if !f.ro["sdb"] {
				t.Error("sdb writable")
			}
		})
		if ev.count(EventExemptionApplied) != 0 || !m.Posture().GetHealthy() {
			t.Errorf("applied %d, posture %v", ev.count(EventExemptionApplied), m.Posture())
		}
	})
	t.Run("Release fails", func(t *testing.T) {
		f := newFake()
		a := stick("sdb", "A1")
		f.attach(a)
		f.releaseErr["sdb"] = errors.New("BLKROSET: permission denied")
		x := &exemptions{}
		m, ev := startExemptManager(t, f, x, &warnings{}, time.Minute)
		waitFor(t, "sdb read-only", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
		x.set(a.ID(), "ex-1")
		m.Refresh(context.Background())
		if got := deviceState(m, "sdb"); got != string(StateReadOnly) || ev.count(EventExemptionFailed) != 1 {
			t.Errorf("state %q, %d exemption_failed events", got, ev.count(EventExemptionFailed))
		}
		f.with(func() {
			f.releases = 0
			delete(f.releaseErr, "sdb")
		})
		m.Reconcile(context.Background())
		f.with(func() {
			if f.releases != 0 {
				t.Errorf("a failed exemption was retried by a reconcile")
			}
		})
		m.Refresh(context.Background())
		if got := deviceState(m, "sdb"); got != string(StateExempted) {
			t.Errorf("after Refresh with the fault cleared: %q", got)
		}
	})
}

// TestManagerRefreshConcurrent runs Refresh, Reconcile, kernel events and
// Run's polls at once (for the race detector) and ends consistent.
func TestManagerRefreshConcurrent(t *testing.T) {
	f := newFake()
	a := stick("sdb", "A1")
	f.attach(a)
	f.attach(stick("sdc", "B2"))
	x := &exemptions{}
	m, ev := startExemptManager(t, f, x, &warnings{}, time.Minute)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if (i+j)%2 == 0 {
					x.set(a.ID(), "ex-1")
				} else {
					x.set(a.ID(), "")
				}
				m.Refresh(ctx)
				if j%5 == 0 {
					m.Reconcile(ctx)
					f.watch <- Notification{Action: "change", Subsystem: "block", DevName: "sdb", DevType: "disk"}
				}
				_ = m.Posture()
			}
		}()
	}
	wg.Wait()
	x.set(a.ID(), "")
	m.Refresh(ctx)
	waitFor(t, "sdb read-only", func() bool { return deviceState(m, "sdb") == string(StateReadOnly) })
	if applied, ended := ev.count(EventExemptionApplied), ev.count(EventExemptionEnded); applied != ended || applied == 0 {
		t.Errorf("%d applied, %d ended; want equal and some", applied, ended)
	}
}
