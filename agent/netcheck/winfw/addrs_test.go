package winfw

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseAddresses(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: formatRanges of the result, or "error: substring"
	}{
		{"198.51.100.0/24", "198.51.100.0/24"},
		// Windows gives IPv4 subnets back with a dotted mask.
		{"198.51.100.0/255.255.255.0", "198.51.100.0/24"},
		{"192.0.2.7/255.255.255.255", "192.0.2.7"},
		{"192.0.2.7", "192.0.2.7"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:db8::1", "2001:db8::1"},
		{"192.0.2.1-192.0.2.9", "192.0.2.1-192.0.2.9"},
		{"192.0.2.0-192.0.2.255", "192.0.2.0/24"},
		// Order, overlap and adjacency do not matter: the sets are compared.
		{"198.51.100.128/25, 198.51.100.0/25,192.0.2.1", "192.0.2.1,198.51.100.0/24"},
		{"0.0.0.0-255.255.255.255", "0.0.0.0/0"},
		{"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"*", "error: every address"},
		{"", "error: no address"},
		{"LocalSubnet", "error: not an IP address"},
		{"192.0.2.1,DNS", "error: not an IP address"},
		{"192.0.2.0/255.0.255.0", "error: not contiguous"},
		{"192.0.2.0/33", "error: out of range"},
		{"2001:db8::/255.255.0.0", "error: neither a length"},
		{"192.0.2.9-192.0.2.1", "error: not an ascending range"},
		{"192.0.2.1-2001:db8::1", "error: not an ascending range"},
		{"fe80::1%eth0", "error: zone"},
		{"192.0.2.0/+8", "error: neither a length"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			rs, err := parseAddresses(tc.in)
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("parseAddresses(%q) = %v, %v; want an error with %q", tc.in, formatRanges(rs), err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseAddresses(%q): %v", tc.in, err)
			}
			if got := formatRanges(rs); got != tc.want {
				t.Errorf("parseAddresses(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestComplement(t *testing.T) {
	r := func(s string) addrRange { return prefixRange(netip.MustParsePrefix(s)) }
	for _, tc := range []struct {
		name string
		in   []addrRange
		want string
	}{
		{"nothing", nil, "0.0.0.0/0,::/0"},
		{"v4 all", []addrRange{v4All}, "::/0"},
		{"both all", []addrRange{v6All, v4All}, ""},
		{"one v4 network", []addrRange{r("198.51.100.0/24")}, "0.0.0.0-198.51.99.255,198.51.101.0-255.255.255.255,::/0"},
		{"edges", []addrRange{r("0.0.0.0/8"), r("255.0.0.0/8"), r("::/8")}, "1.0.0.0-254.255.255.255,100::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"adjacent halves", []addrRange{r("128.0.0.0/1"), r("0.0.0.0/1")}, "::/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatRanges(complement(tc.in)); got != tc.want {
				t.Errorf("complement = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"443", "443"},
		{"*", ""},
		{"", ""},
		{"8000-8100,443, 53", "53,443,8000-8100"},
		{"1-10,5-20,21", "1-21"},
		{"0-65535", "0-65535"},
		{"65536", "error: not a port"},
		{"RPC", "error: not a port"},
		{"10-1", "error: descending"},
		{"1,,2", "error: not a port"},
		{"-5", "error: not a port"},
		{"+5", "error: not a port"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			ps, err := parsePorts(tc.in)
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("parsePorts(%q) = %v, %v; want an error with %q", tc.in, ps, err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("parsePorts(%q): %v", tc.in, err)
			}
			if got := formatPorts(ps); got != tc.want {
				t.Errorf("parsePorts(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzParseAddresses: whatever parses formats into a string that parses to
// the same set, and the set's complement shares no address with it.
func FuzzParseAddresses(f *testing.F) {
	for _, s := range []string{"198.51.100.0/255.255.255.0", "2001:db8::/32,192.0.2.1-192.0.2.9", "*", "0.0.0.0/0", "::ffff:1.2.3.4/120", "1.2.3.4/0.0.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := parseAddresses(s)
		if err != nil {
			if errors.Is(err, errAnyAddress) && strings.TrimSpace(s) != "*" {
				t.Fatalf("%q: errAnyAddress", s)
			}
			return
		}
		again, err := parseAddresses(formatRanges(rs))
		if err != nil {
			t.Fatalf("%q → %q: %v", s, formatRanges(rs), err)
		}
		if !slices.Equal(rs, again) {
			t.Fatalf("%q → %q → %q", s, formatRanges(rs), formatRanges(again))
		}
		for _, c := range complement(rs) {
			for _, r := range rs {
				if r.first.Is4() == c.first.Is4() && r.first.Compare(c.last) <= 0 && c.first.Compare(r.last) <= 0 {
					t.Fatalf("%q: complement %s overlaps %s", s, formatRange(c), formatRange(r))
				}
			}
		}
	})
}

// FuzzParsePorts: whatever parses formats into a string that parses the
// same.
func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"443", "8000-8100,53", "*", "0-65535", "1,2,3-4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := parsePorts(s)
		if err != nil {
			return
		}
		again, err := parsePorts(formatPorts(ps))
		if err != nil || !slices.Equal(ps, again) {
			t.Fatalf("%q → %q → %v, %v", s, formatPorts(ps), again, err)
		}
	})
}
