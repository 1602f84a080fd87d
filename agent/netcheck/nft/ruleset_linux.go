//go:build linux

package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// Chain and set names in the table.
const (
	chainInput   = "input"
	chainOutput  = "output"
	chainForward = "forward"
	// chainTo returns for a packet whose destination the policy allows
	// and drops the rest; chainFrom does the same by the source.
	chainTo   = "to_allowed"
	chainFrom = "from_allowed"

	setAllowed4   = "allowed_v4"
	setAllowed6   = "allowed_v6"
	setCollector4 = "collector_v4"
	setCollector6 = "collector_v6"
	setDNS4       = "dns_v4"
	setDNS6       = "dns_v6"
	setPorts4     = "ports_v4"
	setPorts6     = "ports_v6"
)

// setSpec is one set and what it holds: ranges for an interval set of
// networks, addrs for a set of single addresses, boxes for a set of
// address . protocol . port ranges.
type setSpec struct {
	set    *nftables.Set
	ranges []addrRange
	addrs  []netip.Addr
	boxes  []box
}

// elements are the set's elements as written to the kernel.
func (s *setSpec) elements() []nftables.SetElement {
	if s.set.Concatenation {
		out := make([]nftables.SetElement, len(s.boxes))
		for i, b := range s.boxes {
			k, ke := boxKeys(b)
			out[i] = nftables.SetElement{Key: k, KeyEnd: ke}
		}
		return out
	}
	if s.set.Interval {
		es := intervalElems(s.ranges)
		out := make([]nftables.SetElement, len(es))
		for i, e := range es {
			out[i] = nftables.SetElement{Key: e.key, IntervalEnd: e.end}
		}
		return out
	}
	out := make([]nftables.SetElement, len(s.addrs))
	for i, a := range s.addrs {
		out[i] = nftables.SetElement{Key: a.AsSlice()}
	}
	return out
}

type chainSpec struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// ruleset is everything Apply writes for one policy, in the order it is
// written: sets, chains, then the rules of each chain.
type ruleset struct {
	table  *nftables.Table
	sets   []*setSpec
	chains []*chainSpec
}

// build computes the table for p. The policy is checked again here (it
// comes from the network): an address or prefix it cannot express is an
// error, never a rule left out.
func build(table string, p *netpolicy.Policy) (*ruleset, error) {
	if p == nil {
		return nil, fmt.Errorf("no network policy")
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	rs := &ruleset{table: t}

	var any4, any6 []addrRange
	var ported4, ported6 []portedNet
	for _, n := range p.Networks {
		pfx := n.Prefix
		if !pfx.IsValid() || pfx.Addr().Zone() != "" || pfx.Addr().Is4In6() || pfx.Masked() != pfx || pfx.Bits() == 0 {
			return nil, fmt.Errorf("network %s: not a network with host bits zero", pfx)
		}
		pn := portedNet{prefix: pfx}
		for _, r := range n.Ports {
			if (r.Proto != "tcp" && r.Proto != "udp") || r.First == 0 || r.First > r.Last {
				return nil, fmt.Errorf("network %s: bad port range %s", pfx, r)
			}
			proto := uint8(protoTCP)
			if r.Proto == "udp" {
				proto = protoUDP
			}
			pn.ports = append(pn.ports, portRange{proto, r.First, r.Last})
		}
		switch {
		case len(n.Ports) > 0 && pfx.Addr().Is4():
			ported4 = append(ported4, pn)
		case len(n.Ports) > 0:
			ported6 = append(ported6, pn)
		case pfx.Addr().Is4():
			any4 = append(any4, prefixRange(pfx))
		default:
			any6 = append(any6, prefixRange(pfx))
		}
	}
	col4, col6, err := splitAddrs("collector address", p.Collector)
	if err != nil {
		return nil, err
	}
	dns4, dns6, err := splitAddrs("DNS server", p.DNS)
	if err != nil {
		return nil, err
	}

	addSet := func(name string, six, interval bool) *setSpec {
		key := nftables.TypeIPAddr
		if six {
			key = nftables.TypeIP6Addr
		}
		s := &setSpec{set: &nftables.Set{
			Table: t, Name: name, KeyType: key, Interval: interval,
			ID: uint32(len(rs.sets) + 1), // IDs name sets inside one batch only
		}}
		if strings.HasPrefix(name, "ports_") {
			s.set.KeyType = nftables.MustConcatSetType(key, nftables.TypeInetProto, nftables.TypeInetService)
			s.set.Concatenation = true
		}
		rs.sets = append(rs.sets, s)
		return s
	}
	addSet(setAllowed4, false, true).ranges = mergeRanges(any4)
	addSet(setAllowed6, true, true).ranges = mergeRanges(any6)
	addSet(setCollector4, false, false).addrs = col4
	addSet(setCollector6, true, false).addrs = col6
	addSet(setDNS4, false, false).addrs = dns4
	addSet(setDNS6, true, false).addrs = dns6
	addSet(setPorts4, false, true).boxes = portBoxes(ported4)
	addSet(setPorts6, true, true).boxes = portBoxes(ported6)
	set := func(name string) *nftables.Set {
		for _, s := range rs.sets {
			if s.set.Name == name {
				return s.set
			}
		}
		panic("nft: no set " + name)
	}

	drop := nftables.ChainPolicyDrop
	base := func(name string, hook *nftables.ChainHook) *chainSpec {
		c := &chainSpec{chain: &nftables.Chain{
			Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFilter, Policy: &drop,
		}}
		rs.chains = append(rs.chains, c)
		return c
	}
	regular := func(name string) *chainSpec {
		c := &chainSpec{chain: &nftables.Chain{Name: name, Table: t}}
		rs.chains = append(rs.chains, c)
		return c
	}

	// The base chains drop by policy: flushed, they cut everything off
	// until the agent repairs them, rather than open the segment.
	// Loopback is interface 1 in every namespace (LOOPBACK_IFINDEX).
	in := base(chainInput, nftables.ChainHookInput)
	in.rules = [][]expr.Any{
		cat(ifIndex(expr.MetaKeyIIF, 1), verdict(expr.VerdictAccept)),
		jump(chainFrom),
		verdict(expr.VerdictAccept),
	}
	out := base(chainOutput, nftables.ChainHookOutput)
	out.rules = [][]expr.Any{
		cat(ifIndex(expr.MetaKeyOIF, 1), verdict(expr.VerdictAccept)),
		jump(chainTo),
		verdict(expr.VerdictAccept),
	}
	fwd := base(chainForward, nftables.ChainHookForward)
	fwd.rules = [][]expr.Any{
		jump(chainFrom),
		jump(chainTo),
		verdict(expr.VerdictAccept),
	}

	for _, d := range []direction{toDir, fromDir} {
		c := regular(d.chain)
		ret := verdict(expr.VerdictReturn)
		for _, pfx := range implicitPrefixes {
			c.rules = append(c.rules, cat(d.prefix(pfx), ret))
		}
		// ICMPv6 MLD (130-132), router and neighbour discovery (133-136),
		// MLDv2 reports (143).
		icmp6 := cat(nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6), load(expr.PayloadBaseTransportHeader, 0, 1))
		c.rules = append(c.rules,
			cat(icmp6, []expr.Any{&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{136}}}, ret),
			cat(icmp6, eq([]byte{143}), ret),
		)
		// DHCPv4: client port 68, server port 67.
		local, remote := uint16(68), uint16(67)
		c.rules = append(c.rules, cat(nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_UDP),
			load(expr.PayloadBaseTransportHeader, d.localPortOff(), 2), eq(be16(local)),
			load(expr.PayloadBaseTransportHeader, d.portOff, 2), eq(be16(remote)), ret))
		c.rules = append(c.rules,
			cat(d.lookup(false, set(setCollector4)), ret),
			cat(d.lookup(true, set(setCollector6)), ret),
		)
		for _, six := range []bool{false, true} {
			s := set(setDNS4)
			if six {
				s = set(setDNS6)
			}
			for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
				c.rules = append(c.rules, cat(d.lookup(six, s), l4proto(proto),
					load(expr.PayloadBaseTransportHeader, d.portOff, 2), eq(be16(53)), ret))
			}
		}
		c.rules = append(c.rules,
			cat(d.lookup(false, set(setAllowed4)), ret),
			cat(d.lookup(true, set(setAllowed6)), ret),
		)
		c.rules = append(c.rules,
			cat(d.ports(false, set(setPorts4)), ret),
			cat(d.ports(true, set(setPorts6)), ret),
		)
		c.rules = append(c.rules, []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}})
	}
	return rs, nil
}

// implicitPrefixes are link-local unicast and multicast and
// interface-local multicast: netpolicy.Implicit's addresses that can leave
// the host (loopback is allowed by interface). They never cross a router.
var implicitPrefixes = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/24"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff01::/16"),
	netip.MustParsePrefix("ff02::/16"),
}

// direction says which header fields one of the regular chains matches:
// the destination address and port (packets out) or the source (in).
type direction struct {
	chain      string
	off4, off6 uint32 // address offset in the IPv4 / IPv6 header
	portOff    uint32 // the peer's port in the transport header
}

var (
	toDir   = direction{chain: chainTo, off4: 16, off6: 24, portOff: 2}
	fromDir = direction{chain: chainFrom, off4: 12, off6: 8, portOff: 0}
)

// localPortOff is the offset of this host's port.
func (d direction) localPortOff() uint32 { return 2 - d.portOff }

// prefix matches the peer's address against p.
func (d direction) prefix(p netip.Prefix) []expr.Any {
	addr := p.Addr().AsSlice()
	fam, off := byte(unix.NFPROTO_IPV4), d.off4
	if p.Addr().Is6() {
		fam, off = unix.NFPROTO_IPV6, d.off6
	}
	e := cat(nfproto(fam), load(expr.PayloadBaseNetworkHeader, off, uint32(len(addr))))
	if p.Bits() < len(addr)*8 {
		mask := make([]byte, len(addr))
		for i := range p.Bits() {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))})
	}
	return append(e, eq(addr)...)
}

// lookup matches the peer's address against a set.
func (d direction) lookup(six bool, s *nftables.Set) []expr.Any {
	fam, off, n := byte(unix.NFPROTO_IPV4), d.off4, uint32(4)
	if six {
		fam, off, n = unix.NFPROTO_IPV6, d.off6, 16
	}
	return cat(nfproto(fam), load(expr.PayloadBaseNetworkHeader, off, n),
		[]expr.Any{&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}})
}

// ports matches peer address . IP protocol . peer port against a set of
// boxes. The fields of a concatenation sit in consecutive 4-byte
// registers: the address from register 1 on, then the protocol, then the
// port. Registers are written as the kernel lists them back: a 4-byte
// register that starts a 16-byte one by the latter's number.
func (d direction) ports(six bool, s *nftables.Set) []expr.Any {
	fam, off, n := byte(unix.NFPROTO_IPV4), d.off4, uint32(4)
	protoReg, portReg := uint32(unix.NFT_REG32_01), uint32(unix.NFT_REG32_02)
	if six {
		fam, off, n = unix.NFPROTO_IPV6, d.off6, 16
		protoReg, portReg = unix.NFT_REG_2, unix.NFT_REG32_05 // NFT_REG_2 is NFT_REG32_04
	}
	return cat(nfproto(fam), load(expr.PayloadBaseNetworkHeader, off, n),
		[]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: d.portOff, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		})
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func eq(data []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}}
}

func nfproto(f byte) []expr.Any {
	return cat([]expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}}, eq([]byte{f}))
}

func l4proto(p byte) []expr.Any {
	return cat([]expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}}, eq([]byte{p}))
}

func ifIndex(key expr.MetaKey, index uint32) []expr.Any {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, index)
	return cat([]expr.Any{&expr.Meta{Key: key, Register: 1}}, eq(b))
}

func load(base expr.PayloadBase, off, n uint32) []expr.Any {
	return []expr.Any{&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: base, Offset: off, Len: n}}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// splitAddrs sorts addresses into IPv4 and IPv6, without duplicates.
func splitAddrs(what string, addrs []netip.Addr) (v4, v6 []netip.Addr, err error) {
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, nil, fmt.Errorf("%s %q: not a unicast address", what, a)
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	slices.SortFunc(v6, netip.Addr.Compare)
	return v4, v6, nil
}
