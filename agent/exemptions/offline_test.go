package exemptions

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// helpdeskCode is what 'mnguardctl exemptions offline-code' reads out for
// a challenge and device.
func helpdeskCode(t *testing.T, challenge, device string) string {
	t.Helper()
	d, err := exemption.ParseDevice(device)
	if err != nil {
		t.Fatal(err)
	}
	c, err := exemption.ResponseCode(testOfflineKey, testTerminal, challenge, d)
	if err != nil {
		t.Fatal(err)
	}
	return exemption.Format(c)
}

// enterOffline brings an offline exemption for device into force.
func enterOffline(t *testing.T, e *env, m *Manager, device string, d time.Duration) Info {
	t.Helper()
	c, err := m.Challenge(device, d)
	if err != nil {
		t.Fatal(err)
	}
	i, _, err := m.Enter(helpdeskCode(t, c.Challenge, device))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// wrongCode is a well-formed code that answers none of the challenges.
func wrongCode(t *testing.T, m *Manager) string {
	t.Helper()
	// Run may be pruning the challenges meanwhile.
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range []string{"00000-00000", "11111-11111", "22222-22222"} {
		ok := false
		for _, c := range m.st.Challenges {
			if v, _ := exemption.VerifyResponse(testOfflineKey, testTerminal, c.Text, c.dev, w); v {
				ok = true
			}
		}
		if !ok {
			return w
		}
	}
	t.Fatal("no wrong code")
	return ""
}

// TestOfflineChallengeEnter: the helpdesk's code for a challenge brings the
// device's exemption into force for the challenge's duration, once.
func TestOfflineChallengeEnter(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	c, err := m.Challenge(testDevice, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Challenge) != exemption.CodeChars+1 || c.Challenge[5] != '-' || c.Device != testDevice || c.DurationSeconds != 5400 ||
		!c.ExpiresAt.Equal(e.clock.Now().Add(ChallengeTTL)) {
		t.Fatalf("challenge = %+v", c)
	}
	if allowed(m) {
		t.Fatal("allowed before the code")
	}
	e.clock.pass(3 * time.Minute) // the phone call
	code := helpdeskCode(t, c.Challenge, testDevice)
	// Typed in lowercase with spaces, as people do.
	i, _, err := m.Enter(strings.ToLower(strings.ReplaceAll(code, "-", " ")))
	if err != nil {
		t.Fatal(err)
	}
	if i.Source != SourceOffline || i.Device != testDevice || i.RemainingSeconds != 5400 || !i.NotAfter.Equal(e.clock.Now().Add(90*time.Minute)) {
		t.Errorf("entered = %+v", i)
	}
	if id, ok := m.Allows(testVID, testPID, testSerial); !ok || id != i.ID {
		t.Fatalf("Allows = %q %v after the code", id, ok)
	}
	ent := e.events.of(EventOfflineEntered)
	if len(ent) != 1 || ent[0].GetAttributes()["challenge"] != strings.ReplaceAll(c.Challenge, "-", "") || ent[0].GetAttributes()["device"] != testDevice {
		t.Fatalf("entered events = %v", ent)
	}
	if n := len(e.events.of(EventOfflineChallenge)); n != 1 {
		t.Errorf("%d challenge events, want 1", n)
	}
	// Again, also after a restart: refused as used, and not counted as wrong.
	if _, _, err := m.Enter(code); !errors.Is(err, ErrUsedCode) {
		t.Fatalf("the same code again: %v, want %v", err, ErrUsedCode)
	}
	m2 := e.manager()
	if _, _, err := m2.Enter(code); !errors.Is(err, ErrUsedCode) {
		t.Fatalf("the same code after a restart: %v, want %v", err, ErrUsedCode)
	}
	if ref := e.events.of(EventOfflineRefused); len(ref) != 2 || ref[0].GetAttributes()["reason"] != "used" {
		t.Errorf("refused events = %v", ref)
	}
	if !allowed(m2) {
		t.Error("the offline exemption did not survive the restart")
	}
	e.clock.pass(90 * time.Minute)
	m2.tick()
	if allowed(m2) {
		t.Error("the offline exemption outlived its duration")
	}
	for _, ev := range e.events.all {
		for _, v := range ev.GetAttributes() {
			if strings.Contains(v, strings.ReplaceAll(code, "-", "")) || strings.Contains(ev.GetMessage(), code) {
				t.Errorf("event %s carries the response code", ev.GetType())
			}
		}
	}
}

// TestOfflineWrongCodesLockout: MaxWrongCodes wrong codes lock entry for
// Lockout, across a restart; the right code works after it.
func TestOfflineWrongCodesLockout(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	c, err := m.Challenge(testDevice, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	right := helpdeskCode(t, c.Challenge, testDevice)
	wrong := wrongCode(t, m)
	for n := 1; n < MaxWrongCodes; n++ {
		_, _, err := m.Enter(wrong)
		if !errors.Is(err, ErrWrongCode) || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "more wrong codes lock entry") {
			t.Fatalf("wrong code %d: %v", n, err)
		}
	}
	_, _, err = m.Enter(wrong)
	if !errors.Is(err, ErrWrongCode) || !errors.Is(err, ErrLocked) {
		t.Fatalf("wrong code %d: %v, want locked", MaxWrongCodes, err)
	}
	if _, _, err := m.Enter(right); !errors.Is(err, ErrLocked) || errors.Is(err, ErrWrongCode) {
		t.Fatalf("the right code while locked: %v, want locked", err)
	}
	// A restart does not lift the lock.
	e.clock.pass(14 * time.Minute)
	m2 := e.manager()
	if _, _, err := m2.Enter(right); !errors.Is(err, ErrLocked) {
		t.Fatalf("the right code after a restart while locked: %v", err)
	}
	if allowed(m2) {
		t.Fatal("allowed while locked")
	}
	e.clock.pass(time.Minute)
	if _, _, err := m2.Enter(right); err != nil {
		t.Fatalf("the right code after the lockout: %v", err)
	}
	ref := e.events.of(EventOfflineRefused)
	var wrongs, locked int
	for _, ev := range ref {
		switch ev.GetAttributes()["reason"] {
		case "wrong":
			wrongs++
		case "locked":
			locked++
		}
	}
	if wrongs != MaxWrongCodes || locked != 2 || ref[MaxWrongCodes-1].GetAttributes()["locked_until"] == "" {
		t.Errorf("refused events: %d wrong, %d locked: %v", wrongs, locked, ref)
	}
}

// TestOfflineChallengeExpired: a challenge not answered within ChallengeTTL
// is gone; its code is refused.
func TestOfflineChallengeExpired(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	c, err := m.Challenge(testDevice, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.pass(ChallengeTTL)
	if _, _, err := m.Enter(helpdeskCode(t, c.Challenge, testDevice)); !errors.Is(err, ErrNoChallenge) {
		t.Fatalf("code for an expired challenge: %v, want %v", err, ErrNoChallenge)
	}
	if allowed(m) {
		t.Fatal("allowed")
	}
}

func TestChallengeRefused(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	for _, tt := range []struct {
		device string
		d      time.Duration
		want   string
	}{
		{testVID + ":" + testPID, time.Hour, "no serial number"},
		{"sdb", time.Hour, "want VID:PID:SERIAL"},
		{testDevice, 10 * time.Minute, "multiple of 15m0s"},
		{testDevice, 9 * time.Hour, "up to 8h0m0s"},
	} {
		if _, err := m.Challenge(tt.device, tt.d); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Challenge(%q, %v) = %v, want %q", tt.device, tt.d, err, tt.want)
		}
	}
	if _, _, err := m.Enter("ABC"); !errors.Is(err, exemption.ErrMalformedCode) {
		t.Errorf("short code: %v", err)
	}
	if _, _, err := m.Enter("ABCDE-FGHJK"); !errors.Is(err, ErrNoChallenge) {
		t.Errorf("code without a challenge: %v", err)
	}
	if ev := e.events.of(EventOfflineRefused); len(ev) != 2 || ev[0].GetSeverity() != mnguardv1.Severity_SEVERITY_WARNING {
		t.Errorf("refused events = %v", ev)
	}
}

// TestPendingChallengesBounded: at most MaxPending challenges wait; the
// oldest goes.
func TestPendingChallengesBounded(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	var first ChallengeInfo
	for n := range MaxPending + 1 {
		c, err := m.Challenge(testDevice, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			first = c
		}
	}
	if len(m.st.Challenges) != MaxPending {
		t.Fatalf("%d challenges held, want %d", len(m.st.Challenges), MaxPending)
	}
	if _, _, err := m.Enter(helpdeskCode(t, first.Challenge, testDevice)); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("code for the evicted challenge: %v", err)
	}
}
