package winfw

import (
	"fmt"
	"strings"
)

// Profile is NET_FW_PROFILE_TYPE2.
type Profile int32

// The three firewall profiles, in the order Defaults holds them.
const (
	Domain  Profile = 1
	Private Profile = 2
	Public  Profile = 4
)

// Profiles lists the profiles in Defaults order.
var Profiles = [3]Profile{Domain, Private, Public}

func (p Profile) String() string {
	switch p {
	case Domain:
		return "domain"
	case Private:
		return "private"
	case Public:
		return "public"
	}
	return fmt.Sprintf("profile(%d)", int32(p))
}

// ProfileState is what mnguard sets and restores on one profile.
type ProfileState struct {
	Enabled           bool
	Inbound, Outbound Action
}

// Defaults is the state of the domain, private and public profiles.
type Defaults [3]ProfileState

// String is the form the saved defaults are kept in (registry value
// FirewallDefaults): "domain:on:block:allow private:… public:…", one
// profile:enabled:inbound:outbound per profile.
func (d Defaults) String() string {
	parts := make([]string, 0, len(d))
	for i, s := range d {
		on := "off"
		if s.Enabled {
			on = "on"
		}
		parts = append(parts, Profiles[i].String()+":"+on+":"+s.Inbound.String()+":"+s.Outbound.String())
	}
	return strings.Join(parts, " ")
}

// ParseDefaults reads what Defaults.String wrote: exactly the three
// profiles, in order.
func ParseDefaults(s string) (Defaults, error) {
	var d Defaults
	fields := strings.Split(s, " ")
	if len(fields) != len(d) {
		return Defaults{}, fmt.Errorf("saved firewall defaults %q: want %d profiles", shorten(s), len(d))
	}
	for i, f := range fields {
		parts := strings.Split(f, ":")
		if len(parts) != 4 || parts[0] != Profiles[i].String() {
			return Defaults{}, fmt.Errorf("saved firewall defaults %q: field %d is not %s:on|off:allow|block:allow|block", shorten(s), i+1, Profiles[i])
		}
		switch parts[1] {
		case "on":
			d[i].Enabled = true
		case "off":
		default:
			return Defaults{}, fmt.Errorf("saved firewall defaults: %s: %q is neither on nor off", Profiles[i], parts[1])
		}
		var err error
		if d[i].Inbound, err = parseAction(parts[2]); err != nil {
			return Defaults{}, fmt.Errorf("saved firewall defaults: %s inbound: %w", Profiles[i], err)
		}
		if d[i].Outbound, err = parseAction(parts[3]); err != nil {
			return Defaults{}, fmt.Errorf("saved firewall defaults: %s outbound: %w", Profiles[i], err)
		}
	}
	return d, nil
}

func parseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "block":
		return Block, nil
	}
	return 0, fmt.Errorf("%q is neither allow nor block", s)
}

// diff says how got differs from d (wanted), profile by profile.
func (d Defaults) diff(got Defaults) string {
	var diffs []string
	for i := range d {
		w, g := d[i], got[i]
		if g == w {
			continue
		}
		var d []string
		if g.Enabled != w.Enabled {
			if g.Enabled {
				d = append(d, "firewall on")
			} else {
				d = append(d, "firewall off")
			}
		}
		if g.Inbound != w.Inbound {
			d = append(d, "inbound "+g.Inbound.String())
		}
		if g.Outbound != w.Outbound {
			d = append(d, "outbound "+g.Outbound.String())
		}
		diffs = append(diffs, Profiles[i].String()+" profile: "+strings.Join(d, ", "))
	}
	return strings.Join(diffs, "; ")
}
