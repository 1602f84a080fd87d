package main

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSourceIPs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		n       int
		first   string
		last    string
		wantErr string
	}{
		{in: "", n: 0},
		{in: "127.0.0.2-127.0.0.250", n: 249, first: "127.0.0.2", last: "127.0.0.250"},
		{in: "127.0.0.1", n: 1, first: "127.0.0.1", last: "127.0.0.1"},
		{in: " 127.0.1.1 , 127.0.2.1-127.0.2.9 ", n: 10, first: "127.0.1.1", last: "127.0.2.9"},
		{in: "127.0.0.255-127.0.1.1", n: 3, first: "127.0.0.255", last: "127.0.1.1"},
		{in: "::1", n: 1, first: "::1", last: "::1"},
		{in: "fd00::1-fd00::3", n: 3, first: "fd00::1", last: "fd00::3"},
		{in: "::ffff:127.0.0.5", n: 1, first: "127.0.0.5", last: "127.0.0.5"},
		{in: "127.0.0.9-127.0.0.2", wantErr: "ends before it starts"},
		{in: "127.0.0.1-::1", wantErr: "mixes IPv4 and IPv6"},
		{in: "127.0.0.1,", wantErr: "empty element"},
		{in: "localhost", wantErr: "not an IP address"},
		{in: "127.0.0.1-", wantErr: "not an IP address"},
		{in: "0.0.0.0", wantErr: "cannot be a source address"},
		{in: "224.0.0.1", wantErr: "cannot be a source address"},
		{in: "fe80::1%eth0", wantErr: "zoned"},
		{in: "223.255.255.254-240.0.0.1", wantErr: "multicast"},
		{in: "10.0.0.0-10.255.255.255", wantErr: "more than 65536 addresses"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSourceIPs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseSourceIPs(%q) = %v, %v; want error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.n {
				t.Fatalf("%d addresses, want %d", len(got), tc.n)
			}
			if tc.n > 0 && (got[0].String() != tc.first || got[len(got)-1].String() != tc.last) {
				t.Errorf("first %s last %s, want %s and %s", got[0], got[len(got)-1], tc.first, tc.last)
			}
		})
	}
}

// FuzzParseSourceIPs: any input is parsed or refused, never a panic; what
// is accepted is a bounded list of valid, dialable, unzoned addresses.
func FuzzParseSourceIPs(f *testing.F) {
	for _, s := range []string{"127.0.0.2-127.0.0.250", "::1", "1.2.3.4,5.6.7.8-5.6.7.9", "-", ",", "fd00::1-fd00::ffff", "255.255.255.254-255.255.255.255"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ips, err := parseSourceIPs(s)
		if err != nil {
			if ips != nil {
				t.Fatalf("error %v with addresses", err)
			}
			return
		}
		if len(ips) > maxSourceIPs {
			t.Fatalf("%d addresses", len(ips))
		}
		for _, ip := range ips {
			if !ip.IsValid() || ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() || ip != ip.Unmap() {
				t.Fatalf("accepted %v from %q", ip, s)
			}
			if _, err := netip.ParseAddr(ip.String()); err != nil {
				t.Fatal(err)
			}
		}
	})
}
