package winfw

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func groupNames(t *testing.T, fw *memFirewall) []string {
	t.Helper()
	rs, _ := fw.Rules(Group)
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	return names
}

func TestEnforcerApplyCheckRemove(t *testing.T) {
	ctx := context.Background()
	fw := newMemFirewall()
	before := fw.defaults
	foreign := slices.Clone(fw.rules)
	e := &Enforcer{fw: fw}
	p := testPolicy(t)
	plan, err := MakePlan(p)
	if err != nil {
		t.Fatal(err)
	}

	if ok, detail, err := e.Check(ctx, p); err != nil || ok || !strings.Contains(detail, "all 17 rules") || !strings.Contains(detail, "public profile: outbound allow") {
		t.Errorf("Check before Apply = %v, %q, %v; want not in place, every rule missing, public outbound allow", ok, detail, err)
	}
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
		t.Fatalf("Check after Apply = %v, %q, %v", ok, detail, err)
	}
	if fw.defaults != Enforced {
		t.Errorf("defaults after Apply %s, want %s", fw.defaults, Enforced)
	}
	if fw.saved == nil || *fw.saved != before {
		t.Errorf("saved defaults %v, want %s", fw.saved, before)
	}
	if got := len(groupNames(t, fw)); got != len(plan.Rules) {
		t.Errorf("%d rules in group, want %d", got, len(plan.Rules))
	}

	// Idempotent: a second Apply changes no rule.
	fw.log = nil
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, op := range fw.log {
		if !strings.HasPrefix(op, "defaults ") {
			t.Errorf("second Apply did %q", op)
		}
	}

	if err := e.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if names := groupNames(t, fw); len(names) != 0 {
		t.Errorf("rules left after Remove: %q", names)
	}
	if fw.defaults != before {
		t.Errorf("defaults after Remove %s, want %s", fw.defaults, before)
	}
	if fw.saved != nil {
		t.Errorf("saved defaults kept after Remove: %s", fw.saved)
	}
	if !slices.EqualFunc(fw.rules, foreign, func(a, b Rule) bool { return a == b }) {
		t.Errorf("foreign rules changed: %+v", fw.rules)
	}
	// Nothing there: no error, nothing changes.
	fw.log = nil
	if err := e.Remove(ctx); err != nil || len(fw.log) != 0 {
		t.Errorf("second Remove = %v, did %q", err, fw.log)
	}
}

func TestEnforcerDrift(t *testing.T) {
	ctx := context.Background()
	p := testPolicy(t)
	for _, tc := range []struct {
		name   string
		drift  func(fw *memFirewall)
		detail string
	}{
		{"rule deleted", func(fw *memFirewall) {
			for i, r := range fw.rules {
				if strings.HasSuffix(r.Name, "out block other segments") {
					fw.rules = slices.Delete(fw.rules, i, i+1)
					return
				}
			}
		}, "out block other segments\" missing"},
		{"every rule deleted", func(fw *memFirewall) {
			fw.rules = slices.DeleteFunc(fw.rules, func(r Rule) bool { return r.Grouping == Group })
		}, "all 17 rules of group \"mnguard\" missing"},
		{"block rule narrowed", func(fw *memFirewall) {
			for i, r := range fw.rules {
				if strings.HasSuffix(r.Name, "out block other segments") {
					fw.rules[i].RemoteAddresses = "10.0.0.0/255.0.0.0"
				}
			}
		}, "remote addresses \"10.0.0.0/8\""},
		{"rule disabled", func(fw *memFirewall) {
			for i, r := range fw.rules {
				if strings.HasSuffix(r.Name, "in block other segments") {
					fw.rules[i].Enabled = false
				}
			}
		}, "in block other segments\" changed: disabled"},
		{"ports widened", func(fw *memFirewall) {
			for i, r := range fw.rules {
				if strings.HasSuffix(r.Name, "out allow networks tcp ports 1") {
					fw.rules[i].RemotePorts = "*"
				}
			}
		}, "remote ports \"\", want \"443,8000-8100\""},
		{"rule doubled", func(fw *memFirewall) {
			for _, r := range fw.rules {
				if strings.HasSuffix(r.Name, "out allow collector") {
					fw.rules = append(fw.rules, r)
					return
				}
			}
		}, "present 2 times"},
		{"rule added to the group", func(fw *memFirewall) {
			fw.rules = append(fw.rules, Rule{Name: "mnguard sneaky", Grouping: Group, Direction: Out, Action: Allow, Protocol: ProtoAny, RemoteAddresses: "*", Enabled: true, Profiles: ProfilesAll})
		}, "\"mnguard sneaky\" not in the policy"},
		{"profile opened", func(fw *memFirewall) {
			fw.defaults[2].Outbound = Allow
		}, "public profile: outbound allow"},
		{"firewall off", func(fw *memFirewall) {
			fw.defaults[0].Enabled = false
		}, "domain profile: firewall off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := newMemFirewall()
			e := &Enforcer{fw: fw}
			if err := e.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			saved := *fw.saved
			tc.drift(fw)
			ok, detail, err := e.Check(ctx, p)
			if err != nil || ok || !strings.Contains(detail, tc.detail) {
				t.Fatalf("Check after drift = %v, %q, %v; want not in place, %q", ok, detail, err, tc.detail)
			}
			if err := e.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
				t.Errorf("Check after repair = %v, %q, %v", ok, detail, err)
			}
			if *fw.saved != saved {
				t.Errorf("repair changed the saved defaults: %s, want %s", fw.saved, saved)
			}
		})
	}
}

// TestEnforcerPolicyChange: the new policy's rules go in before the old
// ones go; the defaults recorded before the first Apply stay recorded.
func TestEnforcerPolicyChange(t *testing.T) {
	ctx := context.Background()
	fw := newMemFirewall()
	before := fw.defaults
	e := &Enforcer{fw: fw}
	p1 := testPolicy(t)
	p2 := testPolicy(t, "198.51.100.0/25", "203.0.113.0/24@tcp/22")
	if err := e.Apply(ctx, p1); err != nil {
		t.Fatal(err)
	}
	old := groupNames(t, fw)
	fw.log = nil
	if err := e.Apply(ctx, p2); err != nil {
		t.Fatal(err)
	}
	lastAdd, firstRemove := -1, len(fw.log)
	for i, op := range fw.log {
		if strings.HasPrefix(op, "add ") {
			lastAdd = i
		}
		if strings.HasPrefix(op, "remove ") && i < firstRemove {
			firstRemove = i
		}
	}
	if lastAdd < 0 || firstRemove <= lastAdd {
		t.Errorf("operations %q: want every add before the first remove", fw.log)
	}
	if ok, detail, err := e.Check(ctx, p2); err != nil || !ok {
		t.Errorf("Check(p2) = %v, %q, %v", ok, detail, err)
	}
	if ok, _, _ := e.Check(ctx, p1); ok {
		t.Error("Check(p1) in place after Apply(p2)")
	}
	for _, n := range groupNames(t, fw) {
		if slices.Contains(old, n) {
			t.Errorf("rule %q of the old policy left", n)
		}
	}
	if *fw.saved != before {
		t.Errorf("saved defaults %s, want those before the first Apply %s", fw.saved, before)
	}
	if err := e.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if fw.defaults != before || len(groupNames(t, fw)) != 0 {
		t.Errorf("after Remove: defaults %s, rules %q", fw.defaults, groupNames(t, fw))
	}
}

// TestEnforcerApplyFails: an Add that fails is an error, and the profiles
// are already blocking (fail closed) with the defaults recorded.
func TestEnforcerApplyFails(t *testing.T) {
	ctx := context.Background()
	fw := newMemFirewall()
	before := fw.defaults
	e := &Enforcer{fw: fw}
	p := testPolicy(t)
	plan, _ := MakePlan(p)
	fw.failAdd = plan.Rules[3].Name
	err := e.Apply(ctx, p)
	if err == nil || !strings.Contains(err.Error(), "access denied") || !strings.Contains(err.Error(), "winfw: apply") {
		t.Fatalf("Apply = %v, want the Add's error", err)
	}
	if fw.defaults != Enforced || fw.saved == nil || *fw.saved != before {
		t.Errorf("after a failed Apply: defaults %s, saved %v", fw.defaults, fw.saved)
	}
	if ok, _, _ := e.Check(ctx, p); ok {
		t.Error("Check in place after a failed Apply")
	}
	fw.failAdd = ""
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, detail, _ := e.Check(ctx, p); !ok {
		t.Errorf("Check after a retried Apply: %s", detail)
	}

	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	fw2 := newMemFirewall()
	if err := (&Enforcer{fw: fw2}).Apply(ctx2, p); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a cancelled context = %v", err)
	}
}

func TestEnforcerWatch(t *testing.T) {
	e := &Enforcer{fw: newMemFirewall()}
	if err := e.Watch(context.Background(), func() {}); !errors.Is(err, ErrNoWatch) {
		t.Errorf("Watch = %v, want ErrNoWatch", err)
	}
	if e.Mechanism() != "Windows Firewall" {
		t.Errorf("Mechanism = %q", e.Mechanism())
	}
}
