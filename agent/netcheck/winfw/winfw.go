// Package winfw enforces the network policy with Windows Firewall rules,
// made through the firewall's COM API (INetFwPolicy2).
//
// The package has three layers: the plan (plan.go: a policy becomes rule
// specifications and profile defaults; pure Go, tested on every OS), the
// enforcer (this file: apply, check, remove against a small firewall
// interface, tested against an in-memory firewall), and the COM and registry
// calls behind that interface (com_windows.go). Elsewhere New fails with
// errors.ErrUnsupported.
package winfw

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// firewall is what the enforcer needs of Windows Firewall and of the place
// the profiles' previous defaults are kept.
type firewall interface {
	Defaults() (Defaults, error)
	SetDefaults(Defaults) error
	// Rules lists the rules whose Grouping is group.
	Rules(group string) ([]Rule, error)
	// Add adds the rules in order; it stops at the first that fails.
	Add([]Rule) error
	// Remove deletes every rule of group with one of the names.
	Remove(group string, names []string) error

	// Saved returns the defaults kept by Save (ok false: none kept).
	Saved() (d Defaults, ok bool, err error)
	Save(Defaults) error
	Forget() error
}

// Enforcer keeps mnguard's Windows Firewall rules; it satisfies
// netcheck.Enforcer.
type Enforcer struct {
	fw firewall
}

// Mechanism names the enforcement.
func (*Enforcer) Mechanism() string { return "Windows Firewall" }

// Apply puts p in force: it records every profile's defaults the first time
// (Remove restores them), turns every profile on and blocking, adds the
// rules of the plan that are missing, and then deletes the rules of group
// Group that are not in the plan. New rules go in before old ones go, so a
// policy change never passes through a state with fewer block rules.
func (e *Enforcer) Apply(ctx context.Context, p *netpolicy.Policy) error {
	plan, err := MakePlan(p)
	if err != nil {
		return err
	}
	if _, ok, err := e.fw.Saved(); err != nil {
		return fmt.Errorf("winfw: apply: %w", err)
	} else if !ok {
		cur, err := e.fw.Defaults()
		if err != nil {
			return fmt.Errorf("winfw: apply: %w", err)
		}
		if err := e.fw.Save(cur); err != nil {
			return fmt.Errorf("winfw: apply: record the profiles' defaults: %w", err)
		}
	}
	if err := e.fw.SetDefaults(plan.Defaults); err != nil {
		return fmt.Errorf("winfw: apply: %w", err)
	}
	have, err := e.fw.Rules(Group)
	if err != nil {
		return fmt.Errorf("winfw: apply: %w", err)
	}
	byName := map[string][]Rule{}
	for _, r := range have {
		byName[r.Name] = append(byName[r.Name], r)
	}
	// Rules changed by hand (or doubled) go first, as they share their
	// names with what replaces them; then the missing ones are added;
	// then what is not in the plan goes.
	want := map[string]bool{}
	var changed []string
	var add []Rule
	for _, r := range plan.Rules {
		want[r.Name] = true
		got := byName[r.Name]
		if len(got) == 1 && sameRule(r, got[0]) == "" {
			continue
		}
		if len(got) > 0 {
			changed = append(changed, r.Name)
		}
		add = append(add, r)
	}
	var extra []string
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		if !want[name] {
			extra = append(extra, name)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("winfw: apply: %w", err)
	}
	if len(changed) > 0 {
		if err := e.fw.Remove(Group, changed); err != nil {
			return fmt.Errorf("winfw: apply: %w", err)
		}
	}
	if len(add) > 0 {
		if err := e.fw.Add(add); err != nil {
			return fmt.Errorf("winfw: apply: %w", err)
		}
	}
	if len(extra) > 0 {
		if err := e.fw.Remove(Group, extra); err != nil {
			return fmt.Errorf("winfw: apply: %w", err)
		}
	}
	return nil
}

// Check says whether exactly the rules and defaults Apply makes for p are
// in place; detail names every difference.
func (e *Enforcer) Check(ctx context.Context, p *netpolicy.Policy) (bool, string, error) {
	plan, err := MakePlan(p)
	if err != nil {
		return false, "", err
	}
	cur, err := e.fw.Defaults()
	if err != nil {
		return false, "", fmt.Errorf("winfw: check: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, "", fmt.Errorf("winfw: check: %w", err)
	}
	have, err := e.fw.Rules(Group)
	if err != nil {
		return false, "", fmt.Errorf("winfw: check: %w", err)
	}
	var diffs []string
	if d := plan.Defaults.diff(cur); d != "" {
		diffs = append(diffs, d)
	}
	byName := map[string][]Rule{}
	for _, r := range have {
		byName[r.Name] = append(byName[r.Name], r)
	}
	var missing []string
	for _, r := range plan.Rules {
		got := byName[r.Name]
		delete(byName, r.Name)
		switch {
		case len(got) == 0:
			missing = append(missing, fmt.Sprintf("rule %q missing", r.Name))
		case len(got) > 1:
			diffs = append(diffs, fmt.Sprintf("rule %q present %d times", r.Name, len(got)))
		default:
			if d := sameRule(r, got[0]); d != "" {
				diffs = append(diffs, fmt.Sprintf("rule %q changed: %s", r.Name, d))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		diffs = append(diffs, fmt.Sprintf("rule %q not in the policy", name))
	}
	if len(missing) == len(plan.Rules) {
		diffs = append(diffs, fmt.Sprintf("all %d rules of group %q missing", len(plan.Rules), Group))
	} else {
		diffs = append(diffs, missing...)
	}
	if len(diffs) == 0 {
		return true, fmt.Sprintf("%d rules of group %q, every profile on and blocking", len(plan.Rules), Group), nil
	}
	return false, strings.Join(diffs, "; "), nil
}

// Remove deletes every rule of group Group and gives every profile back
// the defaults recorded by the first Apply. With no rule and no record it
// does nothing.
func (e *Enforcer) Remove(ctx context.Context) error {
	have, err := e.fw.Rules(Group)
	if err != nil {
		return fmt.Errorf("winfw: remove: %w", err)
	}
	var names []string
	for _, r := range have {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	if len(names) > 0 {
		if err := e.fw.Remove(Group, names); err != nil {
			return fmt.Errorf("winfw: remove: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("winfw: remove: %w", err)
	}
	saved, ok, err := e.fw.Saved()
	if err != nil {
		return fmt.Errorf("winfw: remove: %w", err)
	}
	if !ok {
		return nil
	}
	if err := e.fw.SetDefaults(saved); err != nil {
		return fmt.Errorf("winfw: remove: restore the profiles' defaults: %w", err)
	}
	if err := e.fw.Forget(); err != nil {
		return fmt.Errorf("winfw: remove: %w", err)
	}
	return nil
}

// ErrNoWatch is what Watch returns: Windows Firewall has no change
// notification that this package subscribes to, so the manager polls Check.
var ErrNoWatch = errors.New("winfw: no firewall change notifications: polled")

// Watch returns ErrNoWatch at once.
func (*Enforcer) Watch(context.Context, func()) error { return ErrNoWatch }
