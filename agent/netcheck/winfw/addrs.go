package winfw

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ first, last netip.Addr }

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	first := p.Addr()
	bits := first.BitLen()
	b := first.AsSlice()
	for i := p.Bits(); i < bits; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return addrRange{first, last}
}

// mergeRanges sorts rs and joins overlapping and adjacent ranges.
func mergeRanges(rs []addrRange) []addrRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b addrRange) int {
		if c := a.first.Compare(b.first); c != 0 {
			return c
		}
		return a.last.Compare(b.last)
	})
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			prev := &out[n-1]
			if prev.last.Is4() == r.first.Is4() {
				next := prev.last.Next()
				if r.first.Compare(prev.last) <= 0 || (next.IsValid() && next == r.first) {
					if r.last.Compare(prev.last) > 0 {
						prev.last = r.last
					}
					continue
				}
			}
		}
		out = append(out, r)
	}
	return out
}

var (
	v4All = addrRange{netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})}
	v6All = addrRange{netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})}
)

// complement returns the addresses of both families that are in none of rs,
// as merged ranges.
func complement(rs []addrRange) []addrRange {
	rs = mergeRanges(rs)
	var out []addrRange
	for _, all := range []addrRange{v4All, v6All} {
		cur := all.first
		done := false
		for _, r := range rs {
			if r.first.Is4() != all.first.Is4() {
				continue
			}
			if r.first.Compare(cur) > 0 {
				out = append(out, addrRange{cur, r.first.Prev()})
			}
			if r.last == all.last {
				done = true
				break
			}
			cur = r.last.Next()
		}
		if !done {
			out = append(out, addrRange{cur, all.last})
		}
	}
	return out
}

// formatRanges writes rs the way a rule's RemoteAddresses takes them: a
// range that is a prefix in CIDR form (a host without a length), any other
// range as "first-last".
func formatRanges(rs []addrRange) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		parts = append(parts, formatRange(r))
	}
	return strings.Join(parts, ",")
}

func formatRange(r addrRange) string {
	if r.first == r.last {
		return r.first.String()
	}
	if bits, ok := rangePrefixLen(r); ok {
		return netip.PrefixFrom(r.first, bits).String()
	}
	return r.first.String() + "-" + r.last.String()
}

// rangePrefixLen says whether r is exactly one prefix, and its length:
// first and last differ in trailing bits only, all zero in first and all
// one in last.
func rangePrefixLen(r addrRange) (int, bool) {
	a, b := r.first.As16(), r.last.As16()
	host := 0 // trailing bits in which first is 0 and last is 1
	for i := 15; i >= 0; i-- {
		x := a[i] ^ b[i]
		if a[i]&x != 0 { // first has a one where they differ
			return 0, false
		}
		if x == 0xff {
			host += 8
			continue
		}
		for x&1 == 1 {
			host++
			x >>= 1
		}
		if x != 0 {
			return 0, false
		}
		for j := i - 1; j >= 0; j-- {
			if a[j] != b[j] {
				return 0, false
			}
		}
		break
	}
	return r.first.BitLen() - host, host <= r.first.BitLen()
}

// errAnyAddress is returned by parseAddresses for "*": every address.
var errAnyAddress = errors.New("every address (*)")

// parseAddresses reads a rule's RemoteAddresses as Windows Firewall returns
// it: comma-separated addresses, CIDR prefixes, address/dotted-mask
// subnets (how Windows gives IPv4 subnets back) and first-last ranges.
// "*" (any address) returns errAnyAddress; keywords (LocalSubnet, DNS, …)
// are refused: mnguard never writes them.
func parseAddresses(s string) ([]addrRange, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return nil, errAnyAddress
	}
	if s == "" {
		return nil, errors.New("no address")
	}
	var rs []addrRange
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		r, err := parseAddrToken(tok)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return mergeRanges(rs), nil
}

func parseAddrToken(tok string) (addrRange, error) {
	if first, last, ok := strings.Cut(tok, "-"); ok {
		a, err := parsePlainAddr(first)
		if err != nil {
			return addrRange{}, fmt.Errorf("range %q: %w", tok, err)
		}
		b, err := parsePlainAddr(last)
		if err != nil {
			return addrRange{}, fmt.Errorf("range %q: %w", tok, err)
		}
		if a.Is4() != b.Is4() || a.Compare(b) > 0 {
			return addrRange{}, fmt.Errorf("range %q: not an ascending range of one family", tok)
		}
		return addrRange{a, b}, nil
	}
	if addr, mask, ok := strings.Cut(tok, "/"); ok {
		a, err := parsePlainAddr(addr)
		if err != nil {
			return addrRange{}, fmt.Errorf("subnet %q: %w", tok, err)
		}
		bits, err := maskBits(a, mask)
		if err != nil {
			return addrRange{}, fmt.Errorf("subnet %q: %w", tok, err)
		}
		return prefixRange(netip.PrefixFrom(a, bits)), nil
	}
	a, err := parsePlainAddr(tok)
	if err != nil {
		return addrRange{}, err
	}
	return addrRange{a, a}, nil
}

func parsePlainAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q: not an IP address (keywords are not written by mnguard)", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q: has a zone", s)
	}
	return a.Unmap(), nil
}

// maskBits reads a prefix length or, for IPv4, a contiguous dotted mask.
func maskBits(a netip.Addr, mask string) (int, error) {
	if n, err := strconv.Atoi(mask); err == nil && !strings.HasPrefix(mask, "+") {
		if n < 0 || n > a.BitLen() {
			return 0, fmt.Errorf("prefix length %d out of range", n)
		}
		return n, nil
	}
	m, err := netip.ParseAddr(mask)
	if err != nil || !m.Is4() || !a.Is4() {
		return 0, fmt.Errorf("mask %q: neither a length nor an IPv4 mask", mask)
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for ones < 32 && v&(1<<(31-ones)) != 0 {
		ones++
	}
	if ones < 32 && v<<ones != 0 {
		return 0, fmt.Errorf("mask %q: not contiguous", mask)
	}
	return ones, nil
}

// portRange is an inclusive range of ports.
type portRange struct{ first, last uint16 }

func mergePorts(ps []portRange) []portRange {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b portRange) int {
		if a.first != b.first {
			return int(a.first) - int(b.first)
		}
		return int(a.last) - int(b.last)
	})
	var out []portRange
	for _, p := range ps {
		if n := len(out); n > 0 && uint32(p.first) <= uint32(out[n-1].last)+1 {
			out[n-1].last = max(out[n-1].last, p.last)
			continue
		}
		out = append(out, p)
	}
	return out
}

func formatPorts(ps []portRange) string {
	parts := make([]string, 0, len(ps))
	for _, p := range ps {
		if p.first == p.last {
			parts = append(parts, strconv.Itoa(int(p.first)))
		} else {
			parts = append(parts, strconv.Itoa(int(p.first))+"-"+strconv.Itoa(int(p.last)))
		}
	}
	return strings.Join(parts, ",")
}

// parsePorts reads a rule's RemotePorts: "*" or "" (every port, returned as
// nil) or comma-separated ports and first-last ranges. Keywords (RPC,
// IPHTTPS, …) are refused: mnguard never writes them.
func parsePorts(s string) ([]portRange, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return nil, nil
	}
	var ps []portRange
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		first, last, isRange := strings.Cut(tok, "-")
		a, err := parsePort(first)
		if err != nil {
			return nil, fmt.Errorf("ports %q: %w", tok, err)
		}
		b := a
		if isRange {
			if b, err = parsePort(last); err != nil {
				return nil, fmt.Errorf("ports %q: %w", tok, err)
			}
			if a > b {
				return nil, fmt.Errorf("ports %q: descending range", tok)
			}
		}
		ps = append(ps, portRange{a, b})
	}
	return mergePorts(ps), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	return uint16(n), nil
}
