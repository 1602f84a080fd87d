package nft

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ first, last netip.Addr }

func (r addrRange) String() string {
	if r.first == r.last {
		return r.first.String()
	}
	// Print a range that is exactly one prefix as the prefix.
	for bits := 0; bits <= r.first.BitLen(); bits++ {
		p := netip.PrefixFrom(r.first, bits)
		if p.Masked() == p && prefixRange(p).last == r.last {
			return p.String()
		}
	}
	return r.first.String() + "-" + r.last.String()
}

// prefixRange is the range of addresses a prefix covers.
func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return addrRange{first: first, last: last}
}

// mergeRanges sorts rs and merges the ranges that overlap or touch.
// All ranges must be of one family.
func mergeRanges(rs []addrRange) []addrRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b addrRange) int {
		return cmp.Or(a.first.Compare(b.first), a.last.Compare(b.last))
	})
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			prev := &out[n-1]
			next := prev.last.Next() // invalid when prev ends at the highest address
			if !next.IsValid() || r.first.Compare(next) <= 0 {
				if r.last.Compare(prev.last) > 0 {
					prev.last = r.last
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// elem is one element of an nftables interval set: a range starts at a
// key without the end flag and ends before the next key with it. A range
// running to the family's highest address has no end element.
type elem struct {
	key []byte
	end bool
}

// intervalElems turns merged ranges into interval set elements.
func intervalElems(rs []addrRange) []elem {
	out := make([]elem, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, elem{key: r.first.AsSlice()})
		if next := r.last.Next(); next.IsValid() {
			out = append(out, elem{key: next.AsSlice(), end: true})
		}
	}
	return out
}

// rangesFromElems reads the elements of an interval set of addresses of
// keyLen bytes (4 or 16) as the kernel lists them (in any order) back into
// ranges. An end element at the zero address that starts nothing (nft
// writes one before a first range that does not start at zero) is
// skipped. Elements that do not alternate start, end, start... are an
// error: no set this package writes looks like that.
func rangesFromElems(elems []elem, keyLen int) ([]addrRange, error) {
	if keyLen != 4 && keyLen != 16 {
		return nil, fmt.Errorf("interval set: key length %d, want 4 or 16", keyLen)
	}
	es := slices.Clone(elems)
	for _, e := range es {
		if len(e.key) != keyLen {
			return nil, fmt.Errorf("interval set: element of %d bytes, want %d", len(e.key), keyLen)
		}
	}
	// By key; at one key an end (closing the range before) comes first.
	slices.SortFunc(es, func(a, b elem) int {
		if c := strings.Compare(string(a.key), string(b.key)); c != 0 {
			return c
		}
		switch {
		case a.end == b.end:
			return 0
		case a.end:
			return -1
		}
		return 1
	})
	var out []addrRange
	var open netip.Addr // valid while a range is open
	for i, e := range es {
		a, _ := netip.AddrFromSlice(e.key)
		if !e.end {
			if open.IsValid() {
				return nil, fmt.Errorf("interval set: range at %s starts inside the range from %s", a, open)
			}
			open = a
			continue
		}
		if !open.IsValid() {
			if i == 0 && a.IsUnspecified() {
				continue // nft's leading end marker
			}
			return nil, fmt.Errorf("interval set: range end at %s without a start", a)
		}
		last := a.Prev()
		if !last.IsValid() || last.Less(open) {
			return nil, fmt.Errorf("interval set: empty range from %s to before %s", open, a)
		}
		out = append(out, addrRange{first: open, last: last})
		open = netip.Addr{}
	}
	if open.IsValid() {
		hi := make([]byte, keyLen)
		for i := range hi {
			hi[i] = 0xff
		}
		last, _ := netip.AddrFromSlice(hi)
		out = append(out, addrRange{first: open, last: last})
	}
	return out, nil
}

// diffRanges says how got differs from want, both merged, in a few words.
func diffRanges(got, want []addrRange) string {
	return diffSets(got, want, addrRange.String)
}

// diffSets names the items missing from got and those got has beyond
// want, the first few of each, in want's and got's order.
func diffSets[T comparable](got, want []T, str func(T) string) string {
	if slices.Equal(got, want) {
		return ""
	}
	in := func(xs []T) map[T]bool {
		m := make(map[T]bool, len(xs))
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	inGot, inWant := in(got), in(want)
	var missing, extra []string
	for _, w := range want {
		if !inGot[w] {
			missing = append(missing, str(w))
		}
	}
	for _, g := range got {
		if !inWant[g] {
			extra = append(extra, str(g))
		}
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+abbrev(missing))
	}
	if len(extra) > 0 {
		parts = append(parts, "unexpected "+abbrev(extra))
	}
	if len(parts) == 0 {
		return "elements repeated"
	}
	return strings.Join(parts, ", ")
}

// abbrev joins the first few items and counts the rest.
func abbrev(items []string) string {
	const show = 3
	if len(items) <= show {
		return strings.Join(items, " ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:show], " "), len(items)-show)
}
