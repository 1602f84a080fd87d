package media

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// driftFake is a fakePlatform that announces drift (DriftWatcher) and
// guards uevents (Guarder); a device has drifted when it is not read-only.
type driftFake struct {
	*fakePlatform
	dmu     sync.Mutex
	tracked map[string]bool
	guarded []string
}

func (f *driftFake) Track(d Device) {
	f.dmu.Lock()
	f.tracked[d.Name] = true
	f.dmu.Unlock()
}

func (f *driftFake) Untrack(name string) {
	f.dmu.Lock()
	delete(f.tracked, name)
	f.dmu.Unlock()
}

func (f *driftFake) isTracked(name string) bool {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return f.tracked[name]
}

func (f *driftFake) Drifted(d Device) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.ro[d.Name]
}

func (f *driftFake) Guard(n Notification, skip func(string) bool) (string, error) {
	if skip(n.DevName) {
		return "", nil
	}
	f.dmu.Lock()
	f.guarded = append(f.guarded, n.DevName)
	f.dmu.Unlock()
	return n.DevName, nil
}

func (f *driftFake) wasGuarded(name string) bool {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return slices.Contains(f.guarded, name)
}

// TestManagerDriftAnnounced: a drift announcement makes the manager
// protect the device again at once (the rescan is an hour away), a named
// one or every tracked one; an announcement of nothing changes nothing;
// exempted devices are left to the exemption; devices are tracked while
// attached and no longer after; block uevents are guarded first, except
// for exempted devices.
func TestManagerDriftAnnounced(t *testing.T) {
	f := &driftFake{fakePlatform: newFake(), tracked: map[string]bool{}}
	sdb := Device{Name: "sdb", Bus: BusUSB, VendorID: "0781", ProductID: "5567", Serial: "A"}
	sdc := Device{Name: "sdc", Bus: BusUSB, VendorID: "0781", ProductID: "5567", Serial: "B"}
	f.attach(sdb)
	x := &exemptions{}
	rec := &recorder{}
	m := &Manager{Platform: f, Mode: ModeEnforce, ReconcileInterval: time.Hour, Emit: rec.emit, Exempt: x.exempt, ExemptPoll: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	ro := func(name string) func() bool {
		return func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.ro[name]
		}
	}
	waitFor(t, "sdb read-only", ro("sdb"))
	if !f.isTracked("sdb") {
		t.Fatal("sdb protected but not tracked")
	}
	repaired := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, e := range rec.events {
			if e == EventDriftRepaired {
				n++
			}
		}
		return n
	}

	for i, note := range []Notification{{Action: ActionDrift, DevName: "sdb"}, {Action: ActionDrift}} {
		f.with(func() { f.ro["sdb"] = false })
		f.watch <- note
		waitFor(t, "sdb read-only again", ro("sdb"))
		waitFor(t, "a drift_repaired event", func() bool { return repaired() == i+1 })
	}

	// Nothing drifted: no Protect.
	var before int
	f.with(func() { before = f.protects })
	f.watch <- Notification{Action: ActionDrift, DevName: "sdb"}
	f.watch <- Notification{Action: ActionDrift}
	time.Sleep(50 * time.Millisecond)
	f.with(func() {
		if f.protects != before {
			t.Errorf("%d Protect calls for a drift announcement of nothing", f.protects-before)
		}
	})

	// A new stick: guarded on its uevent, then protected and tracked.
	f.attach(sdc)
	f.watch <- Notification{Action: "add", Subsystem: "block", DevName: "sdc", DevType: "disk"}
	waitFor(t, "sdc read-only", ro("sdc"))
	if !f.wasGuarded("sdc") {
		t.Error("sdc's uevent was not guarded")
	}

	// Exempted: released, then neither guarded nor protected on drift.
	x.set(sdb.ID(), "ex-1")
	m.Refresh(ctx)
	if ro("sdb")() {
		t.Fatal("exempted sdb still read-only")
	}
	f.dmu.Lock()
	f.guarded = nil
	f.dmu.Unlock()
	f.watch <- Notification{Action: "change", Subsystem: "block", DevName: "sdb", DevType: "disk"}
	f.watch <- Notification{Action: ActionDrift, DevName: "sdb"}
	time.Sleep(50 * time.Millisecond)
	if f.wasGuarded("sdb") || ro("sdb")() {
		t.Errorf("exempted sdb guarded %v, read-only %v", f.wasGuarded("sdb"), ro("sdb")())
	}

	// Detached: no longer tracked.
	f.with(func() { delete(f.devices, "sdc") })
	f.watch <- Notification{Action: "remove", Subsystem: "block", DevName: "sdc", DevType: "disk"}
	waitFor(t, "sdc untracked", func() bool { return !f.isTracked("sdc") })
}

// TestManagerMonitorNoGuard: in monitor mode nothing is guarded nor
// repaired.
func TestManagerMonitorNoGuard(t *testing.T) {
	f := &driftFake{fakePlatform: newFake(), tracked: map[string]bool{}}
	sdb := Device{Name: "sdb", Bus: BusUSB, VendorID: "0781", ProductID: "5567", Serial: "A"}
	f.attach(sdb)
	m := &Manager{Platform: f, Mode: ModeMonitor, ReconcileInterval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	f.watch <- Notification{Action: "change", Subsystem: "block", DevName: "sdb", DevType: "disk"}
	f.watch <- Notification{Action: ActionDrift}
	time.Sleep(50 * time.Millisecond)
	f.with(func() {
		if f.ro["sdb"] || f.protects != 0 {
			t.Errorf("monitor mode: read-only %v, %d Protect calls", f.ro["sdb"], f.protects)
		}
	})
	if f.wasGuarded("sdb") {
		t.Error("monitor mode guarded a uevent")
	}
}
