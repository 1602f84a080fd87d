package exemptions

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	testTerminal = "3f2a9c1e-7b4d-4e0f-9a55-0c1d2e3f4a5b"
	testVID      = "0781"
	testPID      = "5581"
	testSerial   = "4C530001230815117432"
	testDevice   = testVID + ":" + testPID + ":" + testSerial
)

var testOfflineKey = []byte("0123456789abcdef0123456789abcdef")

// clock is an injected wall clock and monotonic clock. pass advances both;
// setWall moves only the wall clock, as an operator setting it does.
type clock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

func newClock() *clock {
	return &clock{wall: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), mono: time.Hour}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *clock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *clock) pass(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall, c.mono = c.wall.Add(d), c.mono+d
}

func (c *clock) setWall(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = t
}

// events records what the manager emits.
type events struct {
	mu  sync.Mutex
	all []*mnguardv1.Event
}

func (e *events) emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, &mnguardv1.Event{Type: typ, Severity: sev, Message: msg, Attributes: attrs})
}

func (e *events) of(typ string) []*mnguardv1.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*mnguardv1.Event
	for _, ev := range e.all {
		if ev.GetType() == typ {
			out = append(out, ev)
		}
	}
	return out
}

// env is one terminal's state directory, keys and clocks.
type env struct {
	t      *testing.T
	dir    string
	pub    ed25519.PublicKey
	priv   ed25519.PrivateKey
	clock  *clock
	events *events
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvAt(t, t.TempDir())
}

// newEnvAt is newEnv with the state directory dir.
func newEnvAt(t *testing.T, dir string) *env {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, pub: pub, priv: priv, clock: newClock(), events: &events{}}
}

// manager starts a manager on the env's directory, as the agent does at
// every start.
func (e *env) manager(mods ...func(*Options)) *Manager {
	e.t.Helper()
	o := Options{
		StateDir: e.dir, TerminalID: testTerminal, VerifyKey: e.pub, OfflineKey: testOfflineKey,
		Emit: e.events.emit, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: e.clock.Now, Mono: e.clock.Mono,
	}
	for _, mod := range mods {
		mod(&o)
	}
	m, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// exemptionFor is a valid exemption for the test device from now for d.
func (e *env) exemptionFor(id string, d time.Duration) *mnguardv1.Exemption {
	now := e.clock.Now()
	return &mnguardv1.Exemption{
		Id: id, TerminalId: testTerminal,
		Device:    &mnguardv1.DeviceIdentity{VendorId: testVID, ProductId: testPID, Serial: testSerial},
		NotBefore: timestamppb.New(now), NotAfter: timestamppb.New(now.Add(d)), DurationSeconds: uint32(d / time.Second),
		Issuer: "helpdesk-suzuki", Reason: "export of the tax ledger to the auditor", Ticket: "HD-2026-1142",
		IssuedAt: timestamppb.New(now),
	}
}

func (e *env) sign(ex *mnguardv1.Exemption) *mnguardv1.SignedExemption {
	e.t.Helper()
	se, err := exemption.Sign(e.priv, ex)
	if err != nil {
		e.t.Fatal(err)
	}
	return se
}

// signRaw signs any payload as the collector does, without validation.
func signRaw(priv ed25519.PrivateKey, ex *mnguardv1.Exemption) *mnguardv1.SignedExemption {
	payload, _ := proto.MarshalOptions{Deterministic: true}.Marshal(ex)
	return &mnguardv1.SignedExemption{Payload: payload, Signature: ed25519.Sign(priv, append([]byte("mnguard exemption v1\x00"), payload...))}
}

func set(ses ...*mnguardv1.SignedExemption) *mnguardv1.ExemptionSet {
	return &mnguardv1.ExemptionSet{Exemptions: ses}
}

func allowed(m *Manager) bool {
	_, ok := m.Allows(testVID, testPID, testSerial)
	return ok
}

func stateOf(t *testing.T, m *Manager, id string, devs ...*mnguardv1.RemovableDevice) Info {
	t.Helper()
	for _, i := range m.States(devs) {
		if i.ID == id {
			return i
		}
	}
	t.Fatalf("exemption %s not held", id)
	return Info{}
}

// stickManager starts a manager on the env whose media side is the test
// stick: Apply makes it writable when Allows says so, and Attached reports
// it exempted or read-only accordingly.
func (e *env) stickManager() *Manager {
	e.t.Helper()
	var mu sync.Mutex
	writable := false
	m := e.manager(func(o *Options) {
		o.Apply = func(context.Context) {}
		o.Attached = func() []*mnguardv1.RemovableDevice {
			mu.Lock()
			defer mu.Unlock()
			if writable {
				return []*mnguardv1.RemovableDevice{stick("exempted")}
			}
			return []*mnguardv1.RemovableDevice{stick("read-only")}
		}
	})
	m.opts.Apply = func(context.Context) {
		_, ok := m.Allows(testVID, testPID, testSerial)
		mu.Lock()
		writable = ok
		mu.Unlock()
	}
	return m
}

func stick(state string) *mnguardv1.RemovableDevice {
	return &mnguardv1.RemovableDevice{Name: "sdb", VendorId: testVID, ProductId: testPID, Serial: testSerial, State: state}
}

// TestValidTokenApplied: a token for this terminal and device comes into
// force for that device only, and says so.
func TestValidTokenApplied(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))

	if id, ok := m.Allows(testVID, testPID, testSerial); !ok || id != "ex-1" {
		t.Fatalf("Allows(test device) = %q, %v; want ex-1", id, ok)
	}
	for _, d := range [][3]string{{testVID, testPID, "OTHER"}, {testVID, "5583", testSerial}, {"0951", testPID, testSerial}, {testVID, testPID, ""}} {
		if _, ok := m.Allows(d[0], d[1], d[2]); ok {
			t.Errorf("Allows(%v) = true; only %s is exempted", d, testDevice)
		}
	}
	if _, ok := m.Allows("0781", "5581", strings.ToLower(testSerial)); ok {
		t.Error("serials are compared exactly; a lowercase twin is another device")
	}
	rec := e.events.of(EventReceived)
	if len(rec) != 1 || rec[0].GetAttributes()["id"] != "ex-1" || rec[0].GetAttributes()["device"] != testDevice ||
		rec[0].GetAttributes()["ticket"] != "HD-2026-1142" || rec[0].GetAttributes()["source"] != SourceServer {
		t.Fatalf("received events = %v", rec)
	}
	if i := stateOf(t, m, "ex-1"); i.State != StateWaiting || i.Detail != "no matching device attached" || i.RemainingSeconds != 3600 {
		t.Errorf("without the device: %+v", i)
	}
	if i := stateOf(t, m, "ex-1", stick("exempted")); i.State != StateApplied || len(i.Devices) != 1 || i.Devices[0] != "sdb" {
		t.Errorf("with sdb exempted: %+v", i)
	}
	p := m.Posture([]*mnguardv1.RemovableDevice{stick("exempted")})
	if len(p) != 1 || p[0].GetState() != StateApplied || p[0].GetSource() != SourceServer ||
		p[0].GetDevice().GetSerial() != testSerial || !p[0].GetNotAfter().AsTime().Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("posture = %v", p)
	}
	// The same set again (every issue or revoke resends it): nothing new.
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	if n := len(e.events.of(EventReceived)); n != 1 {
		t.Errorf("%d received events after the set came again, want 1", n)
	}
	fi, err := os.Stat(m.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", m.Path(), fi.Mode(), err)
	}
}

// TestBadTokensRefused: a token that does not verify is refused with a
// clear reason, once, and nothing becomes writable.
func TestBadTokensRefused(t *testing.T) {
	e := newEnv(t)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	tests := []struct {
		name   string
		token  func() *mnguardv1.SignedExemption
		reason string
		want   string
	}{
		{"another key", func() *mnguardv1.SignedExemption {
			se, _ := exemption.Sign(otherKey, e.exemptionFor("ex-other-key", time.Hour))
			return se
		}, "bad_signature", "signature does not verify"},
		{"another terminal", func() *mnguardv1.SignedExemption {
			ex := e.exemptionFor("ex-other-terminal", time.Hour)
			ex.TerminalId = "0b6d8f3c-0000-4000-8000-000000000000"
			return e.sign(ex)
		}, "wrong_terminal", "issued for another terminal"},
		{"altered field", func() *mnguardv1.SignedExemption {
			se := e.sign(e.exemptionFor("ex-altered", time.Hour))
			ex := &mnguardv1.Exemption{}
			proto.Unmarshal(se.Payload, ex)
			ex.NotAfter = timestamppb.New(ex.GetNotAfter().AsTime().Add(7 * time.Hour))
			ex.DurationSeconds += 7 * 3600
			se.Payload, _ = proto.MarshalOptions{Deterministic: true}.Marshal(ex)
			return se
		}, "bad_signature", "signature does not verify"},
		{"expired", func() *mnguardv1.SignedExemption {
			ex := e.exemptionFor("ex-expired", time.Hour)
			ex.NotBefore = timestamppb.New(e.clock.Now().Add(-2 * time.Hour))
			ex.NotAfter = timestamppb.New(e.clock.Now().Add(-time.Hour))
			return e.sign(ex)
		}, "expired", "expired"},
		{"unknown device format", func() *mnguardv1.SignedExemption {
			ex := e.exemptionFor("ex-bad-device", time.Hour)
			ex.Device.VendorId = "USB-0781"
			return signRaw(e.priv, ex)
		}, "malformed", "vendor ID"},
		{"no serial without override", func() *mnguardv1.SignedExemption {
			ex := e.exemptionFor("ex-no-serial", time.Hour)
			ex.Device.Serial = ""
			return signRaw(e.priv, ex)
		}, "malformed", "no recorded override"},
		{"garbage", func() *mnguardv1.SignedExemption {
			return &mnguardv1.SignedExemption{Payload: []byte("not a token"), Signature: make([]byte, 64)}
		}, "bad_signature", "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.events = &events{}
			m := e.manager()
			tok := tt.token()
			m.ApplySet(set(tok))
			m.ApplySet(set(tok)) // pushed again: reported once
			if allowed(m) {
				t.Fatal("a refused token made the device writable")
			}
			if _, ok := m.Allows(testVID, testPID, ""); ok {
				t.Fatal("a refused token made a serial-less twin writable")
			}
			ref := e.events.of(EventRefused)
			if len(ref) != 1 {
				t.Fatalf("%d refused events, want 1: %v", len(ref), e.events.all)
			}
			a := ref[0].GetAttributes()
			if a["reason"] != tt.reason || !strings.Contains(a["error"], tt.want) || ref[0].GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT ||
				!strings.Contains(ref[0].GetMessage(), "stays read-only") {
				t.Errorf("refused event: %s %v, want reason %s and error containing %q", ref[0].GetMessage(), a, tt.reason, tt.want)
			}
			if n := len(e.events.of(EventReceived)); n != 0 {
				t.Errorf("%d received events for a refused token", n)
			}
			for _, i := range m.List() {
				if i.State != StateEnded {
					t.Errorf("refused token held: %+v", i)
				}
			}
		})
	}
}

// TestRevokedBySet: a server exemption missing from the next set ends at
// once; others, and offline ones, stay.
func TestRevokedBySet(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	other := e.exemptionFor("ex-2", time.Hour)
	other.Device.Serial = "AA0000000000000B"
	a, b := e.sign(e.exemptionFor("ex-1", time.Hour)), e.sign(other)
	m.ApplySet(set(a, b))
	off := enterOffline(t, e, m, "0951:1666:E0D55EA573F1E5C1", time.Hour)
	if !allowed(m) {
		t.Fatal("ex-1 not in force")
	}
	e.clock.pass(10 * time.Second)
	m.ApplySet(set(b))
	if allowed(m) {
		t.Fatal("ex-1 still allowed after a set without it")
	}
	if _, ok := m.Allows(testVID, testPID, "AA0000000000000B"); !ok {
		t.Error("ex-2, still in the set, was ended")
	}
	if _, ok := m.Allows("0951", "1666", "E0D55EA573F1E5C1"); !ok {
		t.Errorf("offline exemption %s ended by the collector's set", off.ID)
	}
	rev := e.events.of(EventRevoked)
	if len(rev) != 1 || rev[0].GetAttributes()["id"] != "ex-1" || rev[0].GetAttributes()["reason"] != EndRevoked {
		t.Fatalf("revoked events = %v", rev)
	}
	// Pushed again later (a stale replica): an ID once ended stays ended.
	m.ApplySet(set(a, b))
	if allowed(m) {
		t.Error("a revoked exemption came back when its token was pushed again")
	}
	if i := stateOf(t, m, "ex-1", stick("read-only")); i.State != StateEnded || !strings.Contains(i.Detail, EndRevoked) {
		t.Errorf("revoked state: %+v", i)
	}
	if i := stateOf(t, m, "ex-1", stick("exempted")); i.State != StateEnding {
		t.Errorf("revoked, device still writable: %+v, want ending", i)
	}
	// An empty set revokes every server exemption.
	m.ApplySet(set())
	if _, ok := m.Allows(testVID, testPID, "AA0000000000000B"); ok {
		t.Error("ex-2 survived an empty set")
	}
}

// TestExpiryWallClock: an exemption ends at its wall-clock end.
func TestExpiryWallClock(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	e.clock.pass(59*time.Minute + 59*time.Second)
	if next := m.tick(); !allowed(m) || next > time.Second+time.Millisecond {
		t.Fatalf("one second before the end: allowed %v, next tick in %v", allowed(m), next)
	}
	e.clock.pass(time.Second)
	if allowed(m) {
		t.Fatal("allowed at its end, before the tick")
	}
	m.tick()
	exp := e.events.of(EventExpired)
	if len(exp) != 1 || exp[0].GetAttributes()["reason"] != EndExpired {
		t.Fatalf("expired events = %v", exp)
	}
	if i := stateOf(t, m, "ex-1"); i.State != StateEnded || i.RemainingSeconds != 0 {
		t.Errorf("state after expiry: %+v", i)
	}
}

// TestExpiryClockSetBack: with the wall clock set back, the exemption still
// ends when its duration since receipt is used up.
func TestExpiryClockSetBack(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	start := e.clock.Now()
	e.clock.pass(30 * time.Minute)
	m.tick()
	e.clock.setWall(start.Add(time.Minute)) // set back 29 min; the wall end is 59 min away
	e.clock.pass(29 * time.Minute)
	m.tick()
	if !allowed(m) {
		t.Fatal("ended a minute early")
	}
	if i := stateOf(t, m, "ex-1"); i.RemainingSeconds != 60 {
		t.Errorf("remaining %ds, want 60 (by the agent's own clock)", i.RemainingSeconds)
	}
	e.clock.pass(time.Minute)
	if allowed(m) {
		t.Fatal("still allowed after its duration since receipt, with the wall clock set back")
	}
	m.tick()
	if exp := e.events.of(EventExpired); len(exp) != 1 || exp[0].GetAttributes()["reason"] != EndDurationUsed {
		t.Fatalf("expired events = %v", exp)
	}
}

// TestPersistedAcrossRestart: a new manager on the same directory holds the
// exemption, with the downtime counted.
func TestPersistedAcrossRestart(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	e.clock.pass(10 * time.Minute)
	m.tick()
	// Down for 5 minutes; a reboot resets the monotonic clock.
	e.clock.pass(5 * time.Minute)
	e.clock.mono = 3 * time.Second
	m2 := e.manager()
	if !allowed(m2) {
		t.Fatal("not in force after the restart")
	}
	if i := stateOf(t, m2, "ex-1"); i.RemainingSeconds != 45*60 {
		t.Errorf("remaining %ds after restart, want %d", i.RemainingSeconds, 45*60)
	}
	e.clock.pass(45 * time.Minute)
	m2.tick()
	if allowed(m2) || len(e.events.of(EventExpired)) != 1 {
		t.Fatalf("after the restart: allowed %v, expired events %v", allowed(m2), e.events.of(EventExpired))
	}
}

// TestExpiredWhileDown: an exemption that ended while the agent was down
// is ended at load.
func TestExpiredWhileDown(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	m.tick()
	e.clock.pass(2 * time.Hour)
	m2 := e.manager()
	if allowed(m2) {
		t.Fatal("in force after it expired while the agent was down")
	}
	if exp := e.events.of(EventExpired); len(exp) != 1 || exp[0].GetAttributes()["reason"] != EndExpired {
		t.Fatalf("expired events = %v", exp)
	}
}

// TestClockSetBackAcrossRestart: a wall clock earlier than the last one
// seen at start ends everything (fail closed), offline ones too.
func TestClockSetBackAcrossRestart(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", 2*time.Hour))))
	enterOffline(t, e, m, "0951:1666:E0D55EA573F1E5C1", time.Hour)
	e.clock.pass(20 * time.Minute)
	m.tick()
	e.clock.setWall(e.clock.Now().Add(-time.Hour))
	m2 := e.manager()
	if allowed(m2) {
		t.Fatal("in force after the clock was set back across a restart")
	}
	if _, ok := m2.Allows("0951", "1666", "E0D55EA573F1E5C1"); ok {
		t.Fatal("offline exemption in force after the clock was set back")
	}
	ended := e.events.of(EventExpired)
	if len(ended) != 2 {
		t.Fatalf("%d end events, want 2: %v", len(ended), e.events.all)
	}
	for _, ev := range ended {
		if ev.GetAttributes()["reason"] != EndClockBack || ev.GetSeverity() != mnguardv1.Severity_SEVERITY_WARNING {
			t.Errorf("end event %v, want reason %s", ev.GetAttributes(), EndClockBack)
		}
	}
	// The collector pushes the same set again: still ended.
	m2.ApplySet(set(e.sign(e.exemptionFor("ex-1", 2*time.Hour))))
	if allowed(m2) {
		t.Error("an exemption ended for a clock set back came back with the next set")
	}
}

// TestTamperedFile: an edited file cannot lengthen an exemption; a damaged
// one ends all (and is set aside).
func TestTamperedFile(t *testing.T) {
	edit := func(t *testing.T, path string, f func(map[string]any)) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		f(v)
		b, _ = json.Marshal(v)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lengthen := func(v map[string]any) {
		r := v["exemptions"].([]any)[0].(map[string]any)
		r["not_after"] = "2026-11-26T10:00:00Z"
		r["duration_seconds"] = 86400
	}
	t.Run("server", func(t *testing.T) {
		e := newEnv(t)
		m := e.manager()
		m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
		edit(t, m.Path(), lengthen)
		e.clock.pass(61 * time.Minute)
		m2 := e.manager()
		if allowed(m2) {
			t.Fatal("an edited file lengthened a server exemption")
		}
	})
	t.Run("offline", func(t *testing.T) {
		e := newEnv(t)
		m := e.manager()
		enterOffline(t, e, m, testDevice, time.Hour)
		edit(t, m.Path(), lengthen)
		m2 := e.manager()
		if allowed(m2) {
			t.Fatal("an edited offline record is in force")
		}
		if ev := e.events.of(EventExpired); len(ev) != 1 || ev[0].GetAttributes()["reason"] != EndUnverifiable {
			t.Errorf("end events %v, want one %s", ev, EndUnverifiable)
		}
	})
	t.Run("damaged", func(t *testing.T) {
		e := newEnv(t)
		m := e.manager()
		m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
		if err := os.WriteFile(m.Path(), []byte(`{"version": 1, "exemptions": [`), 0o600); err != nil {
			t.Fatal(err)
		}
		m2 := e.manager()
		if allowed(m2) || len(m2.List()) != 0 {
			t.Fatal("something in force from a damaged file")
		}
		if ev := e.events.of(EventStateDamaged); len(ev) != 1 || ev[0].GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT {
			t.Errorf("damaged events = %v", ev)
		}
		if _, err := os.Stat(m.Path() + ".damaged"); err != nil {
			t.Errorf("damaged file not set aside: %v", err)
		}
	})
}

// TestNotYetValid: a token from a collector whose clock runs ahead waits
// until its start, then applies.
func TestNotYetValid(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	ex := e.exemptionFor("ex-1", time.Hour)
	ex.NotBefore = timestamppb.New(e.clock.Now().Add(10 * time.Minute))
	ex.NotAfter = timestamppb.New(e.clock.Now().Add(70 * time.Minute))
	m.ApplySet(set(e.sign(ex)))
	if allowed(m) {
		t.Fatal("in force 10 minutes before its start")
	}
	if i := stateOf(t, m, "ex-1"); i.State != StateWaiting || !strings.Contains(i.Detail, "not valid before") {
		t.Errorf("state: %+v", i)
	}
	e.clock.pass(6 * time.Minute) // within the clock skew allowed
	if !allowed(m) {
		t.Fatal("not in force within the allowed skew of its start")
	}
}

// TestRunAppliesPromptly: with real clocks, Run calls Apply at start, when
// a set changes what is in force, and within about a second of the end.
func TestRunAppliesPromptly(t *testing.T) {
	e := newEnv(t)
	applied := make(chan time.Time, 16)
	m := e.manager(func(o *Options) {
		o.Now, o.Mono = nil, nil
		o.Apply = func(context.Context) { applied <- time.Now() }
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	wait := func(what string) time.Time {
		t.Helper()
		select {
		case at := <-applied:
			return at
		case <-time.After(3 * time.Second):
			t.Fatalf("Apply not called: %s", what)
		}
		return time.Time{}
	}
	wait("at start")
	now := time.Now()
	ex := &mnguardv1.Exemption{
		Id: "ex-short", TerminalId: testTerminal,
		Device:    &mnguardv1.DeviceIdentity{VendorId: testVID, ProductId: testPID, Serial: testSerial},
		NotBefore: timestamppb.New(now), NotAfter: timestamppb.New(now.Add(2 * time.Second)), DurationSeconds: 2,
	}
	issued := time.Now()
	m.ApplySet(set(e.sign(ex)))
	if at := wait("after a new exemption"); at.Sub(issued) > time.Second {
		t.Errorf("applied %v after the set", at.Sub(issued))
	}
	if !allowed(m) {
		t.Fatal("not in force")
	}
	at := wait("at expiry")
	if late := at.Sub(now.Add(2 * time.Second)); late < 0 || late > time.Second {
		t.Errorf("expiry applied %v after the end, want within 1s", late)
	}
	if allowed(m) {
		t.Error("still allowed when Apply ran for its end")
	}
}

func TestReadFile(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	e.clock.pass(15 * time.Minute)
	infos, err := ReadFile(m.Path(), e.clock.Now())
	if err != nil || len(infos) != 1 || infos[0].State != StateWaiting || infos[0].RemainingSeconds != 45*60 {
		t.Fatalf("ReadFile = %+v, %v", infos, err)
	}
	infos, err = ReadFile(m.Path(), e.clock.Now().Add(time.Hour))
	if err != nil || len(infos) != 1 || infos[0].State != StateEnded {
		t.Fatalf("ReadFile an hour later = %+v, %v", infos, err)
	}
	if _, err := ReadFile(filepath.Join(e.dir, "missing.json"), e.clock.Now()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseFile(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	dir := f.TempDir()
	c := newClock()
	m, err := New(Options{StateDir: dir, TerminalID: testTerminal, VerifyKey: pub, OfflineKey: testOfflineKey,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: c.Now, Mono: c.Mono})
	if err != nil {
		f.Fatal(err)
	}
	now := c.Now()
	se, _ := exemption.Sign(priv, &mnguardv1.Exemption{Id: "ex-1", TerminalId: testTerminal,
		Device:    &mnguardv1.DeviceIdentity{VendorId: testVID, ProductId: testPID, Serial: testSerial},
		NotBefore: timestamppb.New(now), NotAfter: timestamppb.New(now.Add(time.Hour)), DurationSeconds: 3600})
	m.ApplySet(set(se))
	if _, err := m.Challenge(testDevice, time.Hour); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(m.Path())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1,"last_seen":"2026-11-25T10:00:00Z","exemptions":[],"challenges":[],"wrong_codes":0}`))
	f.Add([]byte(`{"version":1,"exemptions":[null]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fl, err := parseFile(data)
		if err != nil {
			return
		}
		// What parses must marshal and parse back the same.
		out, err := fl.marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseFile(out)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, out)
		}
		out2, _ := again.marshal()
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
		for _, r := range fl.Exemptions {
			if r.dev == nil || r.consumed < 0 {
				t.Fatalf("accepted record without a device or with negative use: %+v", r)
			}
		}
	})
}

// TestDowntimeByBootClock: the agent is down for 2 h while the wall clock
// is set back by 1 h 50 min (so it shows only 10 min passing, and is not
// earlier than before); within the same boot the time since boot still
// counts the 2 h, and a 1 h exemption has ended at the restart.
func TestDowntimeByBootClock(t *testing.T) {
	e := newEnv(t)
	boot := func() (string, time.Duration) { return "boot-1", e.clock.Mono() }
	m := e.manager(func(o *Options) { o.Boot = boot })
	m.ApplySet(set(e.sign(e.exemptionFor("ex-1", time.Hour))))
	if !allowed(m) {
		t.Fatal("not in force")
	}
	m.tick()
	e.clock.pass(2 * time.Hour)
	e.clock.setWall(e.clock.Now().Add(-(time.Hour + 50*time.Minute)))
	m2 := e.manager(func(o *Options) { o.Boot = boot })
	if allowed(m2) {
		t.Fatal("in force after 2 h of downtime that the wall clock hid")
	}
	// Another boot: the wall clock is all there is (10 min passed).
	e2 := newEnv(t)
	boots := "boot-1"
	bootB := func() (string, time.Duration) { return boots, e2.clock.Mono() }
	m3 := e2.manager(func(o *Options) { o.Boot = bootB })
	m3.ApplySet(set(e2.sign(e2.exemptionFor("ex-2", time.Hour))))
	m3.tick()
	e2.clock.pass(10 * time.Minute)
	boots = "boot-2"
	m4 := e2.manager(func(o *Options) { o.Boot = bootB })
	if !allowed(m4) {
		t.Fatal("ended after a reboot with 10 min passing")
	}
}
