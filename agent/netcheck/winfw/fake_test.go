package winfw

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// memFirewall is Windows Firewall as the tests need it: profiles, rules in
// insertion order (names may repeat, as on Windows), IPv4 subnets given
// back with a dotted mask as Windows does, and the saved-defaults value.
type memFirewall struct {
	defaults Defaults
	rules    []Rule
	saved    *Defaults
	log      []string // "add NAME", "remove NAME", "defaults D"
	failAdd  string   // Add of this rule name fails
}

func newMemFirewall() *memFirewall {
	return &memFirewall{
		// Windows' own defaults: on, inbound blocked, outbound allowed;
		// this machine has the domain profile off.
		defaults: Defaults{
			{Enabled: false, Inbound: Block, Outbound: Allow},
			{Enabled: true, Inbound: Block, Outbound: Allow},
			{Enabled: true, Inbound: Block, Outbound: Allow},
		},
		rules: []Rule{
			{Name: "Core Networking - DNS (UDP-Out)", Grouping: "@FirewallAPI.dll,-25000", Direction: Out, Action: Allow, Protocol: ProtoUDP, RemoteAddresses: "*", RemotePorts: "53", Enabled: true, Profiles: ProfilesAll},
			{Name: "Some game", Grouping: "", Direction: In, Action: Allow, Protocol: ProtoAny, RemoteAddresses: "*", Enabled: true, Profiles: ProfilesAll},
		},
	}
}

func (m *memFirewall) Defaults() (Defaults, error) { return m.defaults, nil }

func (m *memFirewall) SetDefaults(d Defaults) error {
	m.defaults = d
	m.log = append(m.log, "defaults "+d.String())
	return nil
}

func (m *memFirewall) Rules(group string) ([]Rule, error) {
	var out []Rule
	for _, r := range m.rules {
		if r.Grouping == group {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *memFirewall) Add(rs []Rule) error {
	for _, r := range rs {
		if r.Name == m.failAdd {
			return errors.New("add: access denied")
		}
		if r.Protocol == ProtoAny && r.RemotePorts != "" {
			return fmt.Errorf("rule %q: ports on a rule for any protocol", r.Name)
		}
		r.RemoteAddresses = windowsForm(r.RemoteAddresses)
		if r.RemotePorts == "" {
			r.RemotePorts = "*"
		}
		m.rules = append(m.rules, r)
		m.log = append(m.log, "add "+r.Name)
	}
	return nil
}

func (m *memFirewall) Remove(group string, names []string) error {
	for _, name := range names {
		kept := m.rules[:0]
		for _, r := range m.rules {
			if r.Grouping == group && r.Name == name {
				continue
			}
			kept = append(kept, r)
		}
		m.rules = kept
		m.log = append(m.log, "remove "+name)
	}
	return nil
}

func (m *memFirewall) Saved() (Defaults, bool, error) {
	if m.saved == nil {
		return Defaults{}, false, nil
	}
	return *m.saved, true, nil
}

func (m *memFirewall) Save(d Defaults) error {
	// Kept in its string form, as in the registry.
	back, err := ParseDefaults(d.String())
	if err != nil {
		return err
	}
	m.saved = &back
	return nil
}

func (m *memFirewall) Forget() error { m.saved = nil; return nil }

// windowsForm rewrites IPv4 CIDR subnets as Windows gives them back.
func windowsForm(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		pfx, err := netip.ParsePrefix(p)
		if err != nil || !pfx.Addr().Is4() {
			continue
		}
		mask := ^uint32(0) << (32 - pfx.Bits())
		if pfx.Bits() == 0 {
			mask = 0
		}
		parts[i] = fmt.Sprintf("%s/%d.%d.%d.%d", pfx.Addr(), mask>>24, mask>>16&0xff, mask>>8&0xff, mask&0xff)
	}
	return strings.Join(parts, ",")
}

// verdict evaluates outbound (or inbound) traffic to a remote address,
// protocol and port the way Windows Firewall does with the rules and
// defaults given: an enabled block rule that matches wins; else an enabled
// allow rule that matches allows; else the profile's default action.
func verdict(rules []Rule, def ProfileState, dir Direction, a netip.Addr, proto string, port uint16) (bool, error) {
	num := int32(ProtoTCP)
	if proto == "udp" {
		num = ProtoUDP
	}
	allowed := false
	for _, r := range rules {
		if !r.Enabled || r.Direction != dir {
			continue
		}
		if r.Protocol != ProtoAny && r.Protocol != num {
			continue
		}
		if r.RemoteAddresses != "*" {
			rs, err := parseAddresses(r.RemoteAddresses)
			if err != nil {
				return false, fmt.Errorf("rule %q: %w", r.Name, err)
			}
			if !inRanges(rs, a) {
				continue
			}
		}
		ps, err := parsePorts(r.RemotePorts)
		if err != nil {
			return false, fmt.Errorf("rule %q: %w", r.Name, err)
		}
		if ps != nil && !inPorts(ps, port) {
			continue
		}
		if r.Action == Block {
			return false, nil
		}
		allowed = true
	}
	if allowed {
		return true, nil
	}
	if !def.Enabled {
		return true, nil
	}
	if dir == Out {
		return def.Outbound == Allow, nil
	}
	return def.Inbound == Allow, nil
}

func inRanges(rs []addrRange, a netip.Addr) bool {
	a = a.Unmap()
	for _, r := range rs {
		if r.first.Is4() == a.Is4() && r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0 {
			return true
		}
	}
	return false
}

func inPorts(ps []portRange, p uint16) bool {
	for _, r := range ps {
		if r.first <= p && p <= r.last {
			return true
		}
	}
	return false
}
