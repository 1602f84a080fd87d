package winfw

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// Group is the Grouping of every rule mnguard makes; the rules of this group
// are mnguard's and nobody else's.
const Group = "mnguard"

// Direction is NET_FW_RULE_DIRECTION.
type Direction int32

// Rule directions.
const (
	In  Direction = 1 // NET_FW_RULE_DIR_IN
	Out Direction = 2 // NET_FW_RULE_DIR_OUT
)

func (d Direction) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	}
	return fmt.Sprintf("direction(%d)", int32(d))
}

// Action is NET_FW_ACTION.
type Action int32

// Rule and default actions.
const (
	Block Action = 0 // NET_FW_ACTION_BLOCK
	Allow Action = 1 // NET_FW_ACTION_ALLOW
)

func (a Action) String() string {
	switch a {
	case Block:
		return "block"
	case Allow:
		return "allow"
	}
	return fmt.Sprintf("action(%d)", int32(a))
}

// IP protocol numbers a rule names (NET_FW_IP_PROTOCOL).
const (
	ProtoTCP = 6
	ProtoUDP = 17
	ProtoAny = 256 // NET_FW_IP_PROTOCOL_ANY
)

// ProfilesAll is NET_FW_PROFILE2_ALL: a rule in force on every profile.
const ProfilesAll = 0x7fffffff

// Rule is one Windows Firewall rule as mnguard writes it and reads it back.
type Rule struct {
	Name        string
	Description string
	Direction   Direction
	Action      Action
	Protocol    int32
	// RemoteAddresses as the rule holds it ("*": any).
	RemoteAddresses string
	// RemotePorts; "" or "*" for every port (and always for ProtoAny).
	RemotePorts string
	Enabled     bool
	Profiles    int32
	Grouping    string
}

// implicitPrefixes are always reachable, as netpolicy.Implicit says:
// loopback, link-local unicast and multicast, interface-local multicast;
// the unspecified addresses too (netpolicy allows them).
// IPv6 multicast scopes 1 and 2 count whatever the flags nibble (ffX1::,
// ffX2::), as net/netip says.
var implicitPrefixes = func() []netip.Prefix {
	ps := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("224.0.0.0/24"),
		netip.MustParsePrefix("0.0.0.0/32"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("fe80::/10"),
	}
	for flags := range byte(16) {
		for _, scope := range []byte{1, 2} {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xff, flags<<4 | scope}), 16))
		}
	}
	return ps
}()

// dhcpBroadcast is where a DHCPv4 client sends DISCOVER and REQUEST: a
// terminal that gets its address by DHCP must keep reaching it (the server
// answering is in the segment, which the policy allows).
var dhcpBroadcast = netip.MustParsePrefix("255.255.255.255/32")

// Plan is what Apply makes of a policy: the rules of group Group and every
// profile's defaults.
type Plan struct {
	Rules    []Rule
	Defaults Defaults
}

// Enforced is the state of every profile while mnguard enforces: the
// firewall on, inbound and outbound blocked unless a rule allows.
var Enforced = Defaults{
	{Enabled: true, Inbound: Block, Outbound: Block},
	{Enabled: true, Inbound: Block, Outbound: Block},
	{Enabled: true, Inbound: Block, Outbound: Block},
}

// MakePlan turns p into the rules that enforce it:
//
//   - allow rules, in and out, for every allowed network (per protocol with
//     its remote ports where the policy names ports), the collector's
//     addresses (any protocol and port), the DNS servers (TCP and UDP 53),
//     the implicit addresses (loopback, link-local) and DHCPv4's broadcast
//     (UDP 67);
//   - block rules, in and out, for every other address of both families:
//     Windows Firewall lets a block rule win over any allow rule, so the
//     allow rules that Windows and applications keep in other groups (Core
//     Networking, a game's inbound rule) cannot open another segment;
//   - every profile on, blocking by default in both directions.
//
// The rule names carry the policy's version, so a new policy's rules are
// added beside the old ones before the old ones go.
func MakePlan(p *netpolicy.Policy) (Plan, error) {
	if p == nil {
		return Plan{}, fmt.Errorf("winfw: no policy to enforce")
	}
	p = p.Clone() // Validate sorts in place; the caller's policy is shared
	if err := p.Validate(); err != nil {
		return Plan{}, fmt.Errorf("winfw: %w", err)
	}
	if len(p.Networks) == 0 {
		return Plan{}, fmt.Errorf("winfw: enforcement with no allowed network would cut the terminal off")
	}
	version := p.Version
	if version == "" {
		version = p.ComputeVersion()
	}
	if strings.ContainsAny(version, "|\r\n") || len(version) > 64 {
		return Plan{}, fmt.Errorf("winfw: policy version %q unusable in a rule name", version)
	}
	desc := "mnguard network policy " + version + ": managed by the mnguard agent, do not edit"
	var rules []Rule
	add := func(name string, dir Direction, action Action, proto int32, addrs []addrRange, ports []portRange) {
		r := Rule{
			Name:            "mnguard " + version + " " + dir.String() + " " + name,
			Description:     desc,
			Direction:       dir,
			Action:          action,
			Protocol:        proto,
			RemoteAddresses: formatRanges(addrs),
			RemotePorts:     formatPorts(ports),
			Enabled:         true,
			Profiles:        ProfilesAll,
			Grouping:        Group,
		}
		rules = append(rules, r)
	}
	both := func(name string, action Action, proto int32, addrs []addrRange, ports []portRange) {
		add(name, Out, action, proto, addrs, ports)
		add(name, In, action, proto, addrs, ports)
	}

	// Networks share rules: one for those open on every port, one per
	// protocol and set of ports for the others (a rule holds many
	// addresses; each rule is a COM call or more).
	var reachable, open []addrRange
	type portSet struct {
		proto int32
		ports string
	}
	restricted := map[portSet][]addrRange{}
	for _, n := range p.Networks {
		r := prefixRange(n.Prefix)
		reachable = append(reachable, r)
		if len(n.Ports) == 0 {
			open = append(open, r)
			continue
		}
		byProto := map[string][]portRange{}
		for _, pr := range n.Ports {
			byProto[pr.Proto] = append(byProto[pr.Proto], portRange{pr.First, pr.Last})
		}
		for proto, ports := range byProto {
			var num int32
			switch proto {
			case "tcp":
				num = ProtoTCP
			case "udp":
				num = ProtoUDP
			default:
				return Plan{}, fmt.Errorf("winfw: network %s: protocol %q is neither tcp nor udp", n.Prefix, proto)
			}
			k := portSet{num, formatPorts(mergePorts(ports))}
			restricted[k] = append(restricted[k], r)
		}
	}
	if len(open) > 0 {
		both("allow networks", Allow, ProtoAny, mergeRanges(open), nil)
	}
	sets := slices.SortedFunc(maps.Keys(restricted), func(a, b portSet) int {
		if a.proto != b.proto {
			return int(a.proto - b.proto)
		}
		return strings.Compare(a.ports, b.ports)
	})
	count := map[int32]int{}
	for _, k := range sets {
		ports, _ := parsePorts(k.ports)
		count[k.proto]++
		name := fmt.Sprintf("allow networks %s ports %d", map[int32]string{ProtoTCP: "tcp", ProtoUDP: "udp"}[k.proto], count[k.proto])
		both(name, Allow, k.proto, mergeRanges(restricted[k]), ports)
	}
	if len(p.Collector) > 0 {
		var rs []addrRange
		for _, a := range p.Collector {
			a = a.Unmap().WithZone("")
			if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
				return Plan{}, fmt.Errorf("winfw: collector address %q is not a unicast address", a)
			}
			rs = append(rs, prefixRange(netip.PrefixFrom(a, a.BitLen())))
		}
		rs = mergeRanges(rs)
		reachable = append(reachable, rs...)
		both("allow collector", Allow, ProtoAny, rs, nil)
	}
	if len(p.DNS) > 0 {
		var rs []addrRange
		for _, a := range p.DNS {
			rs = append(rs, prefixRange(netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())))
		}
		rs = mergeRanges(rs)
		reachable = append(reachable, rs...)
		dns := []portRange{{53, 53}}
		both("allow dns tcp", Allow, ProtoTCP, rs, dns)
		both("allow dns udp", Allow, ProtoUDP, rs, dns)
	}
	var implicit []addrRange
	for _, pfx := range implicitPrefixes {
		implicit = append(implicit, prefixRange(pfx))
	}
	implicit = mergeRanges(implicit)
	reachable = append(reachable, implicit...)
	both("allow implicit", Allow, ProtoAny, implicit, nil)
	bcast := []addrRange{prefixRange(dhcpBroadcast)}
	reachable = append(reachable, bcast...)
	add("allow dhcp", Out, Allow, ProtoUDP, bcast, []portRange{{67, 67}})

	both("block other segments", Block, ProtoAny, complement(reachable), nil)
	return Plan{Rules: rules, Defaults: Enforced}, nil
}

// sameRule says how got differs from want ("" when it does not), comparing
// addresses and ports as sets: Windows writes subnets back in its own form.
func sameRule(want, got Rule) string {
	var diffs []string
	if got.Direction != want.Direction {
		diffs = append(diffs, fmt.Sprintf("direction %s, want %s", got.Direction, want.Direction))
	}
	if got.Action != want.Action {
		diffs = append(diffs, fmt.Sprintf("action %s, want %s", got.Action, want.Action))
	}
	if got.Protocol != want.Protocol {
		diffs = append(diffs, fmt.Sprintf("protocol %d, want %d", got.Protocol, want.Protocol))
	}
	if !got.Enabled {
		diffs = append(diffs, "disabled")
	}
	if got.Profiles&ProfilesAll != ProfilesAll {
		diffs = append(diffs, fmt.Sprintf("profiles %#x, want all", got.Profiles))
	}
	if got.Description != want.Description {
		diffs = append(diffs, "description changed")
	}
	if d := sameAddrs(want.RemoteAddresses, got.RemoteAddresses); d != "" {
		diffs = append(diffs, d)
	}
	if d := samePorts(want.RemotePorts, got.RemotePorts); d != "" {
		diffs = append(diffs, d)
	}
	return strings.Join(diffs, "; ")
}

func sameAddrs(want, got string) string {
	w, err := parseAddresses(want)
	if err != nil {
		return fmt.Sprintf("planned remote addresses unreadable: %v", err)
	}
	g, err := parseAddresses(got)
	if err != nil {
		return fmt.Sprintf("remote addresses %q: %v", shorten(got), err)
	}
	if !slices.Equal(w, g) {
		return fmt.Sprintf("remote addresses %q, want %q", shorten(formatRanges(g)), shorten(formatRanges(w)))
	}
	return ""
}

func samePorts(want, got string) string {
	w, err := parsePorts(want)
	if err != nil {
		return fmt.Sprintf("planned remote ports unreadable: %v", err)
	}
	g, err := parsePorts(got)
	if err != nil {
		return fmt.Sprintf("remote ports: %v", err)
	}
	if !slices.Equal(w, g) {
		return fmt.Sprintf("remote ports %q, want %q", formatPorts(g), formatPorts(w))
	}
	return ""
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
