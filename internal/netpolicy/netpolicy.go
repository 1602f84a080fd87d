// Package netpolicy parses, validates and applies the network policy of
// segment isolation (Art. 6(3)(a)): the networks a My Number terminal may
// talk to, its DNS servers, and whether the agent enforces them. The
// collector validates an operator's policy with it before storing it; the
// agent validates what the collector pushes and asks it which addresses,
// routes and resolvers are allowed.
package netpolicy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Limits of one policy.
const (
	MaxNetworks      = 1024
	MaxDNS           = 64
	MaxPortRanges    = 64
	MaxCollector     = 64
	maxNetworkString = 512
)

// PortRange is an inclusive range of remote ports of one protocol.
type PortRange struct {
	// Proto is "tcp" or "udp".
	Proto       string
	First, Last uint16
}

func (r PortRange) String() string {
	if r.First == r.Last {
		return r.Proto + "/" + strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%s/%d-%d", r.Proto, r.First, r.Last)
}

func (r PortRange) contains(proto string, port uint16) bool {
	return r.Proto == proto && r.First <= port && port <= r.Last
}

// Network is one allowed network; no Ports means every port.
type Network struct {
	Prefix netip.Prefix
	Ports  []PortRange
}

// String is the form ParseNetwork reads: "198.51.100.0/24" or
// "2001:db8::/32@tcp/443,udp/53,tcp/8000-8100".
func (n Network) String() string {
	if len(n.Ports) == 0 {
		return n.Prefix.String()
	}
	ps := make([]string, len(n.Ports))
	for i, p := range n.Ports {
		ps[i] = p.String()
	}
	return n.Prefix.String() + "@" + strings.Join(ps, ",")
}

// allPorts says the network allows every port.
func (n Network) allPorts() bool { return len(n.Ports) == 0 }

// Policy is a validated network policy.
type Policy struct {
	// Version is NetworkPolicy.version (ComputeVersion).
	Version  string
	Networks []Network
	DNS      []netip.Addr
	Enforce  bool
	// Collector holds the collector's addresses: always allowed, every
	// port.
	Collector []netip.Addr
}

// ParseNetwork reads "CIDR" or "CIDR@PORTS" (PORTS: comma-separated
// tcp/N, udp/N or tcp/N-M). The prefix must have its host bits zero.
func ParseNetwork(s string) (Network, error) {
	if len(s) > maxNetworkString {
		return Network{}, fmt.Errorf("network %.40q…: longer than %d bytes", s, maxNetworkString)
	}
	cidr, ports, hasPorts := strings.Cut(strings.TrimSpace(s), "@")
	pfx, err := parsePrefix(cidr)
	if err != nil {
		return Network{}, err
	}
	n := Network{Prefix: pfx}
	if hasPorts {
		if ports == "" {
			return Network{}, fmt.Errorf("network %q: no ports after @ (leave out @ to allow every port)", s)
		}
		for p := range strings.SplitSeq(ports, ",") {
			r, err := parsePortRange(strings.TrimSpace(p))
			if err != nil {
				return Network{}, fmt.Errorf("network %q: %w", s, err)
			}
			n.Ports = append(n.Ports, r)
		}
	}
	if err := n.normalize(); err != nil {
		return Network{}, fmt.Errorf("network %q: %w", s, err)
	}
	return n, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty network: want CIDR like 198.51.100.0/24 or 2001:db8::/32")
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			bits := 32
			if a.Is6() {
				bits = 128
			}
			return netip.Prefix{}, fmt.Errorf("network %q: no prefix length: write %s/%d for one host", s, s, bits)
		}
		return netip.Prefix{}, fmt.Errorf("network %q: not a CIDR like 198.51.100.0/24 or 2001:db8::/32", s)
	}
	if pfx.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("network %q: zones are not allowed", s)
	}
	if pfx.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("network %q: IPv4-mapped IPv6; write the IPv4 network", s)
	}
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, fmt.Errorf("network %q: host bits set; the network is %s", s, m)
	}
	if pfx.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("network %q: allows every address, which is no isolation", s)
	}
	return pfx, nil
}

func parsePortRange(s string) (PortRange, error) {
	proto, ports, ok := strings.Cut(s, "/")
	if !ok || (proto != "tcp" && proto != "udp") {
		return PortRange{}, fmt.Errorf("port %q: want tcp/PORT, udp/PORT or tcp/FIRST-LAST", s)
	}
	first, last, isRange := strings.Cut(ports, "-")
	f, err := parsePort(first)
	if err != nil {
		return PortRange{}, fmt.Errorf("port %q: %w", s, err)
	}
	l := f
	if isRange {
		if l, err = parsePort(last); err != nil {
			return PortRange{}, fmt.Errorf("port %q: %w", s, err)
		}
	}
	r := PortRange{Proto: proto, First: f, Last: l}
	if err := r.validate(); err != nil {
		return PortRange{}, fmt.Errorf("port %q: %w", s, err)
	}
	return r, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number 1-65535", s)
	}
	return uint16(n), nil
}

func (r PortRange) validate() error {
	switch {
	case r.Proto != "tcp" && r.Proto != "udp":
		return fmt.Errorf("protocol %q: want tcp or udp", r.Proto)
	case r.First == 0 || r.Last == 0:
		return errors.New("port 0 is not a port")
	case r.First > r.Last:
		return fmt.Errorf("range %d-%d runs backwards", r.First, r.Last)
	}
	return nil
}

// normalize sorts the port ranges and refuses duplicates and overlaps.
func (n *Network) normalize() error {
	if len(n.Ports) > MaxPortRanges {
		return fmt.Errorf("%d port ranges, at most %d", len(n.Ports), MaxPortRanges)
	}
	slices.SortFunc(n.Ports, func(a, b PortRange) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
	})
	for i := 1; i < len(n.Ports); i++ {
		a, b := n.Ports[i-1], n.Ports[i]
		if a.Proto == b.Proto && b.First <= a.Last {
			return fmt.Errorf("ports %s and %s overlap", a, b)
		}
	}
	return nil
}

// ParseDNS reads one DNS server address (no prefix, no port).
func ParseDNS(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("DNS server %q: not an IPv4 or IPv6 address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("DNS server %q: zones are not allowed", s)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("DNS server %q: IPv4-mapped IPv6; write the IPv4 address", s)
	}
	if a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("DNS server %q: not a unicast address", s)
	}
	return a, nil
}

// FromProto validates a policy from the wire. A nil policy is none (nil,
// nil). Version is recomputed; a version on the wire that differs is an
// error (the policy was changed on the way).
func FromProto(m *mnguardv1.NetworkPolicy) (*Policy, error) {
	if m == nil {
		return nil, nil
	}
	if len(m.GetNetworks()) > MaxNetworks {
		return nil, fmt.Errorf("network policy: %d networks, at most %d", len(m.GetNetworks()), MaxNetworks)
	}
	if len(m.GetDnsServers()) > MaxDNS {
		return nil, fmt.Errorf("network policy: %d DNS servers, at most %d", len(m.GetDnsServers()), MaxDNS)
	}
	if len(m.GetCollectorAddrs()) > MaxCollector {
		return nil, fmt.Errorf("network policy: %d collector addresses, at most %d", len(m.GetCollectorAddrs()), MaxCollector)
	}
	p := &Policy{Enforce: m.GetEnforce()}
	for _, wn := range m.GetNetworks() {
		pfx, err := parsePrefix(wn.GetCidr())
		if err != nil {
			return nil, err
		}
		n := Network{Prefix: pfx}
		if len(wn.GetPorts()) > MaxPortRanges {
			return nil, fmt.Errorf("network %s: %d port ranges, at most %d", pfx, len(wn.GetPorts()), MaxPortRanges)
		}
		for _, wp := range wn.GetPorts() {
			if wp.GetFirst() > 65535 || wp.GetLast() > 65535 {
				return nil, fmt.Errorf("network %s: port %d-%d beyond 65535", pfx, wp.GetFirst(), wp.GetLast())
			}
			r := PortRange{Proto: wp.GetProtocol(), First: uint16(wp.GetFirst()), Last: uint16(wp.GetLast())}
			if r.Last == 0 {
				r.Last = r.First
			}
			if err := r.validate(); err != nil {
				return nil, fmt.Errorf("network %s: %w", pfx, err)
			}
			n.Ports = append(n.Ports, r)
		}
		if err := n.normalize(); err != nil {
			return nil, fmt.Errorf("network %s: %w", pfx, err)
		}
		p.Networks = append(p.Networks, n)
	}
	for _, s := range m.GetDnsServers() {
		a, err := ParseDNS(s)
		if err != nil {
			return nil, err
		}
		p.DNS = append(p.DNS, a)
	}
	for _, s := range m.GetCollectorAddrs() {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("network policy: collector address %q is not a unicast IP address", s)
		}
		p.Collector = append(p.Collector, a.Unmap())
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	v := p.ComputeVersion()
	if m.GetVersion() != "" && m.GetVersion() != v {
		return nil, fmt.Errorf("network policy: version %q does not match its content (%s)", m.GetVersion(), v)
	}
	p.Version = v
	return p, nil
}

// Validate sorts the policy into its canonical order and refuses what
// makes no sense: duplicates, a network inside another that already
// allows every port, a DNS server listed twice, and enforcement with no
// network allowed (it would cut the terminal off all but the collector).
func (p *Policy) Validate() error {
	if len(p.Networks) > MaxNetworks {
		return fmt.Errorf("network policy: %d networks, at most %d", len(p.Networks), MaxNetworks)
	}
	if len(p.DNS) > MaxDNS {
		return fmt.Errorf("network policy: %d DNS servers, at most %d", len(p.DNS), MaxDNS)
	}
	for i := range p.Networks {
		n := &p.Networks[i]
		if !n.Prefix.IsValid() || n.Prefix.Masked() != n.Prefix || n.Prefix.Bits() == 0 || n.Prefix.Addr().Zone() != "" {
			return fmt.Errorf("network policy: %q is not a network with host bits zero", n.Prefix)
		}
		for _, r := range n.Ports {
			if err := r.validate(); err != nil {
				return fmt.Errorf("network %s: %w", n.Prefix, err)
			}
		}
		if err := n.normalize(); err != nil {
			return fmt.Errorf("network %s: %w", n.Prefix, err)
		}
	}
	slices.SortFunc(p.Networks, func(a, b Network) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	for i, a := range p.Networks {
		for j, b := range p.Networks {
			if i == j {
				continue
			}
			if a.Prefix == b.Prefix {
				if i < j {
					return fmt.Errorf("network policy: network %s is listed twice (put all its ports in one entry: %s@…)", a.Prefix, a.Prefix)
				}
				continue
			}
			// b inside a, and a allows every port: b adds nothing.
			if a.allPorts() && a.Prefix.Bits() < b.Prefix.Bits() && a.Prefix.Contains(b.Prefix.Addr()) {
				return fmt.Errorf("network policy: network %s is inside %s, which already allows every port", b, a.Prefix)
			}
		}
	}
	slices.SortFunc(p.DNS, netip.Addr.Compare)
	for i := 1; i < len(p.DNS); i++ {
		if p.DNS[i] == p.DNS[i-1] {
			return fmt.Errorf("network policy: DNS server %s is listed twice", p.DNS[i])
		}
	}
	for i, a := range p.DNS {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return fmt.Errorf("network policy: DNS server %q is not a unicast address", a)
		}
		p.DNS[i] = a.Unmap()
	}
	if p.Enforce && len(p.Networks) == 0 {
		return errors.New("network policy: enforcement on with no allowed network would cut the terminal off everything but the collector; allow at least one network")
	}
	slices.SortFunc(p.Collector, netip.Addr.Compare)
	p.Collector = slices.Compact(p.Collector)
	return nil
}

// ComputeVersion is "n-" and 8 hex digits of a hash of the canonical form
// (networks, DNS servers, enforcement; not the collector's addresses).
// Call Validate first so that the order is canonical.
func (p *Policy) ComputeVersion() string {
	var b strings.Builder
	for _, n := range p.Networks {
		b.WriteString(n.String())
		b.WriteByte('\n')
	}
	b.WriteString("dns")
	for _, a := range p.DNS {
		b.WriteByte(' ')
		b.WriteString(a.String())
	}
	fmt.Fprintf(&b, "\nenforce %t\n", p.Enforce)
	sum := sha256.Sum256([]byte(b.String()))
	return "n-" + hex.EncodeToString(sum[:4])
}

// Proto is the wire form, canonical order, version filled.
func (p *Policy) Proto() *mnguardv1.NetworkPolicy {
	if p == nil {
		return nil
	}
	m := &mnguardv1.NetworkPolicy{Version: p.Version, Enforce: p.Enforce}
	if m.Version == "" {
		m.Version = p.ComputeVersion()
	}
	for _, n := range p.Networks {
		wn := &mnguardv1.AllowedNetwork{Cidr: n.Prefix.String()}
		for _, r := range n.Ports {
			wn.Ports = append(wn.Ports, &mnguardv1.PortRange{Protocol: r.Proto, First: uint32(r.First), Last: uint32(r.Last)})
		}
		m.Networks = append(m.Networks, wn)
	}
	for _, a := range p.DNS {
		m.DnsServers = append(m.DnsServers, a.String())
	}
	for _, a := range p.Collector {
		m.CollectorAddrs = append(m.CollectorAddrs, a.String())
	}
	return m
}

// Clone is a deep copy.
func (p *Policy) Clone() *Policy {
	if p == nil {
		return nil
	}
	c := *p
	c.Networks = make([]Network, len(p.Networks))
	for i, n := range p.Networks {
		c.Networks[i] = Network{Prefix: n.Prefix, Ports: slices.Clone(n.Ports)}
	}
	c.DNS = slices.Clone(p.DNS)
	c.Collector = slices.Clone(p.Collector)
	return &c
}

// WithCollector returns a copy of p whose collector addresses include
// addrs (the addresses the agent reaches the collector at).
func (p *Policy) WithCollector(addrs ...netip.Addr) *Policy {
	if p == nil {
		return nil
	}
	c := p.Clone()
	for _, a := range addrs {
		if a.IsValid() {
			c.Collector = append(c.Collector, a.Unmap().WithZone(""))
		}
	}
	slices.SortFunc(c.Collector, netip.Addr.Compare)
	c.Collector = slices.Compact(c.Collector)
	return c
}

// Implicit says a is always allowed: it never leaves the terminal or its
// link (loopback, link-local unicast and multicast, interface-local
// multicast, the unspecified address).
func Implicit(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsUnspecified()
}

// AllowsAddr says the terminal may talk to a on some port: a is in an
// allowed network, a collector address, a DNS server, or implicit.
func (p *Policy) AllowsAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if Implicit(a) {
		return true
	}
	if p == nil {
		return false
	}
	if slices.Contains(p.Collector, a) || slices.Contains(p.DNS, a) {
		return true
	}
	for _, n := range p.Networks {
		if n.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// Allows says the terminal may talk to a on proto ("tcp" or "udp") port:
// a network that contains a allows the port, a is a collector address, a
// DNS server on port 53, or implicit.
func (p *Policy) Allows(a netip.Addr, proto string, port uint16) bool {
	a = a.Unmap().WithZone("")
	if Implicit(a) {
		return true
	}
	if p == nil {
		return false
	}
	if slices.Contains(p.Collector, a) {
		return true
	}
	if port == 53 && (proto == "tcp" || proto == "udp") && slices.Contains(p.DNS, a) {
		return true
	}
	for _, n := range p.Networks {
		if !n.Prefix.Contains(a) {
			continue
		}
		if n.allPorts() {
			return true
		}
		for _, r := range n.Ports {
			if r.contains(proto, port) {
				return true
			}
		}
	}
	return false
}

// AllowsRoute says a route to dst stays inside the policy: dst lies in an
// allowed network, is a host route to a collector address or DNS server,
// or is implicit (loopback, link-local, multicast). A default route never
// does.
func (p *Policy) AllowsRoute(dst netip.Prefix) bool {
	if !dst.IsValid() || dst.Bits() == 0 {
		return false
	}
	dst = netip.PrefixFrom(dst.Addr().Unmap().WithZone(""), dst.Bits()).Masked()
	a := dst.Addr()
	if a.IsLoopback() || a.IsMulticast() || (a.IsLinkLocalUnicast() && dst.Bits() >= linkLocalBits(a)) {
		return true
	}
	if p == nil {
		return false
	}
	if dst.IsSingleIP() && (slices.Contains(p.Collector, a) || slices.Contains(p.DNS, a)) {
		return true
	}
	for _, n := range p.Networks {
		if n.Prefix.Bits() <= dst.Bits() && n.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// linkLocalBits is the prefix length of the link-local range of a's family.
func linkLocalBits(a netip.Addr) int {
	if a.Is4() {
		return 16
	}
	return 10
}

// AllowsDNS says a is an allowed DNS server (or a local stub resolver on
// loopback, which forwards to the servers it is given).
func (p *Policy) AllowsDNS(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if a.IsLoopback() {
		return true
	}
	return p != nil && slices.Contains(p.DNS, a)
}
