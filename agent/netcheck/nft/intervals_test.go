package nft

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

func TestPrefixRange(t *testing.T) {
	for _, c := range []struct{ prefix, first, last string }{
		{"198.51.100.0/24", "198.51.100.0", "198.51.100.255"},
		{"198.51.100.7/32", "198.51.100.7", "198.51.100.7"},
		{"203.0.113.128/25", "203.0.113.128", "203.0.113.255"},
		{"128.0.0.0/1", "128.0.0.0", "255.255.255.255"},
		{"2001:db8:a::/64", "2001:db8:a::", "2001:db8:a:0:ffff:ffff:ffff:ffff"},
		{"fe80::/10", "fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	} {
		r := prefixRange(netip.MustParsePrefix(c.prefix))
		if r.first.String() != c.first || r.last.String() != c.last {
			t.Errorf("prefixRange(%s) = %s-%s, want %s-%s", c.prefix, r.first, r.last, c.first, c.last)
		}
		if r.String() != c.prefix && !(r.first == r.last && r.String() == c.first) {
			t.Errorf("String of %s = %s", c.prefix, r)
		}
	}
}

func ranges(t testing.TB, ss ...string) []addrRange {
	t.Helper()
	var out []addrRange
	for _, s := range ss {
		out = append(out, prefixRange(netip.MustParsePrefix(s)))
	}
	return out
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges(ranges(t, "10.0.1.0/24", "10.0.0.0/25", "10.0.0.128/25", "192.0.2.0/24", "10.0.0.0/16", "255.255.255.255/32", "255.255.255.0/24"))
	want := ranges(t, "10.0.0.0/16", "192.0.2.0/24", "255.255.255.0/24")
	if !slices.Equal(got, want) {
		t.Errorf("mergeRanges = %v, want %v", got, want)
	}
	// Touching ranges merge into one.
	got = mergeRanges(ranges(t, "10.0.0.0/25", "10.0.0.128/25"))
	if len(got) != 1 || got[0].String() != "10.0.0.0/24" {
		t.Errorf("touching ranges merged into %v", got)
	}
}

func TestIntervalElemsRoundTrip(t *testing.T) {
	for _, c := range [][]string{
		nil,
		{"198.51.100.0/24"},
		{"198.51.100.0/24", "203.0.113.128/25", "255.255.255.0/24"},
		{"0.0.0.0/8", "10.0.0.0/8"},
		{"2001:db8:a::/64", "ffff::/16"},
	} {
		want := mergeRanges(ranges(t, c...))
		es := intervalElems(want)
		keyLen := 4
		if len(c) > 0 && netip.MustParsePrefix(c[0]).Addr().Is6() {
			keyLen = 16
		}
		// The kernel lists them in reverse; nft adds a leading zero end.
		slices.Reverse(es)
		if len(c) > 0 && !prefixRange(netip.MustParsePrefix(c[0])).first.IsUnspecified() {
			es = append(es, elem{key: make([]byte, keyLen), end: true})
		}
		got, err := rangesFromElems(es, keyLen)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%v: round trip gave %v, want %v", c, got, want)
		}
	}
	// A range to the highest address has no end element.
	es := intervalElems(ranges(t, "255.255.255.0/24"))
	if len(es) != 1 || es[0].end || !bytes.Equal(es[0].key, []byte{255, 255, 255, 0}) {
		t.Errorf("elements of 255.255.255.0/24: %v", es)
	}
}

func TestRangesFromElemsRefuses(t *testing.T) {
	k := func(b ...byte) []byte { return b }
	for name, c := range map[string]struct {
		es     []elem
		keyLen int
	}{
		"key length":    {[]elem{{key: k(1, 2, 3)}}, 4},
		"set key len":   {nil, 5},
		"two starts":    {[]elem{{key: k(10, 0, 0, 0)}, {key: k(10, 0, 0, 5)}, {key: k(10, 0, 1, 0), end: true}}, 4},
		"end alone":     {[]elem{{key: k(10, 0, 0, 0), end: true}}, 4},
		"empty range":   {[]elem{{key: k(10, 0, 0, 0)}, {key: k(10, 0, 0, 0), end: true}}, 4},
		"two ends":      {[]elem{{key: k(10, 0, 0, 0)}, {key: k(10, 0, 1, 0), end: true}, {key: k(10, 0, 2, 0), end: true}}, 4},
		"mixed lengths": {[]elem{{key: k(10, 0, 0, 0)}, {key: make([]byte, 16), end: true}}, 4},
	} {
		if got, err := rangesFromElems(c.es, c.keyLen); err == nil {
			t.Errorf("%s: took it: %v", name, got)
		}
	}
}

func TestDiffRanges(t *testing.T) {
	want := ranges(t, "198.51.100.0/24", "192.0.2.0/24")
	if d := diffRanges(want, want); d != "" {
		t.Errorf("equal: %q", d)
	}
	got := ranges(t, "198.51.100.0/24", "203.0.113.0/24")
	if d := diffRanges(got, want); d != "missing 192.0.2.0/24, unexpected 203.0.113.0/24" {
		t.Errorf("diff: %q", d)
	}
	many := ranges(t, "10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24")
	if d := diffRanges(nil, many); d != "missing 10.0.0.0/24 10.0.1.0/24 10.0.2.0/24 and 2 more" {
		t.Errorf("diff: %q", d)
	}
}

// FuzzRangesFromElems feeds the decoder of the kernel's interval set
// listings arbitrary elements: it must not panic, and whatever it accepts
// must be ranges that write back to elements it reads as the same.
func FuzzRangesFromElems(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 0, 10, 0, 1, 0, 1}, 4)
	f.Add([]byte{0, 0, 0, 0, 1, 198, 51, 100, 0, 0, 198, 51, 101, 0, 1}, 4)
	f.Add(make([]byte, 17), 16)
	f.Fuzz(func(t *testing.T, data []byte, keyLen int) {
		// data: elements of keyLen bytes, each followed by a flag byte.
		var es []elem
		if keyLen > 0 && keyLen <= 16 {
			for len(data) >= keyLen+1 {
				es = append(es, elem{key: data[:keyLen], end: data[keyLen]&1 == 1})
				data = data[keyLen+1:]
			}
		}
		rs, err := rangesFromElems(es, keyLen)
		if err != nil {
			return
		}
		for i, r := range rs {
			if r.last.Less(r.first) || (i > 0 && !rs[i-1].last.Less(r.first)) {
				t.Fatalf("ranges out of order: %v", rs)
			}
		}
		merged := mergeRanges(rs)
		back, err := rangesFromElems(intervalElems(merged), keyLen)
		if err != nil || !slices.Equal(back, merged) {
			t.Fatalf("%v: written back and read as %v, %v", merged, back, err)
		}
	})
}
