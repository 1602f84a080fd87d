package netpolicy

import (
	"net/netip"
	"strings"
	"testing"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func TestParseNetwork(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "198.51.100.0/24", want: "198.51.100.0/24"},
		{in: " 2001:db8::/32 ", want: "2001:db8::/32"},
		{in: "198.51.100.7/32", want: "198.51.100.7/32"},
		{in: "198.51.100.0/24@udp/53,tcp/8000-8100,tcp/443", want: "198.51.100.0/24@tcp/443,tcp/8000-8100,udp/53"},
		{in: "2001:db8::/32@tcp/22", want: "2001:db8::/32@tcp/22"},
		{in: "198.51.100.0/33", err: "not a CIDR"},
		{in: "198.51.100.1/24", err: "host bits set; the network is 198.51.100.0/24"},
		{in: "bogus", err: "not a CIDR"},
		{in: "", err: "empty network"},
		{in: "198.51.100.7", err: "write 198.51.100.7/32"},
		{in: "0.0.0.0/0", err: "no isolation"},
		{in: "::/0", err: "no isolation"},
		{in: "fe80::/10%eth0", err: "not a CIDR"},
		{in: "::ffff:198.51.100.0/120", err: "IPv4-mapped"},
		{in: "198.51.100.0/24@", err: "no ports after @"},
		{in: "198.51.100.0/24@icmp/1", err: "want tcp/PORT"},
		{in: "198.51.100.0/24@tcp/0", err: "not a port number"},
		{in: "198.51.100.0/24@tcp/70000", err: "not a port number"},
		{in: "198.51.100.0/24@tcp/90-80", err: "runs backwards"},
		{in: "198.51.100.0/24@tcp/80-90,tcp/85", err: "overlap"},
	} {
		n, err := ParseNetwork(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseNetwork(%q) = %v, %v; want error containing %q", tc.in, n, err, tc.err)
			}
			continue
		}
		if err != nil || n.String() != tc.want {
			t.Errorf("ParseNetwork(%q) = %q, %v; want %q", tc.in, n, err, tc.want)
		}
		// The canonical form reads back as itself.
		if again, err := ParseNetwork(n.String()); err != nil || again.String() != n.String() {
			t.Errorf("round trip of %q: %q, %v", n, again, err)
		}
	}
}

func TestParseDNS(t *testing.T) {
	for in, ok := range map[string]bool{"198.51.100.53": true, "2001:db8::53": true, "300.1.1.1": false, "dns.example": false,
		"0.0.0.0": false, "224.0.0.251": false, "198.51.100.53:53": false, "": false, "fe80::1%eth0": false} {
		_, err := ParseDNS(in)
		if (err == nil) != ok {
			t.Errorf("ParseDNS(%q) error %v, want ok=%t", in, err, ok)
		}
	}
}

func policy(t *testing.T, nets []string, dns []string, enforce bool) *mnguardv1.NetworkPolicy {
	t.Helper()
	m := &mnguardv1.NetworkPolicy{Enforce: enforce, DnsServers: dns}
	for _, s := range nets {
		n, err := ParseNetwork(s)
		if err != nil {
			t.Fatal(err)
		}
		wn := &mnguardv1.AllowedNetwork{Cidr: n.Prefix.String()}
		for _, r := range n.Ports {
			wn.Ports = append(wn.Ports, &mnguardv1.PortRange{Protocol: r.Proto, First: uint32(r.First), Last: uint32(r.Last)})
		}
		m.Networks = append(m.Networks, wn)
	}
	return m
}

func TestFromProtoRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		m       *mnguardv1.NetworkPolicy
		wantErr string
	}{
		{"enforce without networks", &mnguardv1.NetworkPolicy{Enforce: true}, "allow at least one network"},
		{"duplicate", policy(t, []string{"198.51.100.0/24", "198.51.100.0/24@tcp/443"}, nil, false), "listed twice"},
		{"inside", policy(t, []string{"198.51.100.0/24", "198.51.100.128/25@tcp/22"}, nil, false), "inside 198.51.100.0/24"},
		{"dns twice", policy(t, nil, []string{"198.51.100.53", "198.51.100.53"}, false), "listed twice"},
		{"bad dns", policy(t, nil, []string{"300.1.1.1"}, false), "not an IPv4 or IPv6"},
		{"host bits", &mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.1/24"}}}, "host bits"},
		{"port beyond", &mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 70000}}}}}, "beyond 65535"},
		{"bad proto", &mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24", Ports: []*mnguardv1.PortRange{{Protocol: "sctp", First: 1}}}}}, "want tcp or udp"},
		{"version mismatch", &mnguardv1.NetworkPolicy{Version: "n-00000000", Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24"}}}, "does not match"},
		{"collector", &mnguardv1.NetworkPolicy{CollectorAddrs: []string{"0.0.0.0"}}, "collector address"},
	} {
		if p, err := FromProto(tc.m); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: FromProto = %+v, %v; want error containing %q", tc.name, p, err, tc.wantErr)
		}
	}
	// A bigger network with ports restricted may hold a smaller one with
	// other ports.
	if _, err := FromProto(policy(t, []string{"198.51.100.0/24@tcp/443", "198.51.100.128/25@tcp/22"}, nil, true)); err != nil {
		t.Errorf("nested networks with their own ports: %v", err)
	}
}

func TestVersionAndRoundTrip(t *testing.T) {
	a, err := FromProto(policy(t, []string{"2001:db8:a::/64", "198.51.100.0/24@tcp/443"}, []string{"198.51.100.53"}, true))
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromProto(policy(t, []string{"198.51.100.0/24@tcp/443", "2001:db8:a::/64"}, []string{"198.51.100.53"}, true))
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != b.Version || !strings.HasPrefix(a.Version, "n-") || len(a.Version) != 10 {
		t.Fatalf("versions %q and %q: the order of the input must not matter", a.Version, b.Version)
	}
	c, err := FromProto(policy(t, []string{"198.51.100.0/24@tcp/443", "2001:db8:a::/64"}, []string{"198.51.100.53"}, false))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version == a.Version {
		t.Fatal("turning enforcement off kept the version")
	}
	w := a.WithCollector(netip.MustParseAddr("192.0.2.1")).Proto()
	back, err := FromProto(w)
	if err != nil {
		t.Fatalf("FromProto(Proto()) = %v", err)
	}
	if back.Version != a.Version || len(back.Collector) != 1 || len(a.Collector) != 0 {
		t.Fatalf("round trip: %+v (collector must not change the version nor the original)", back)
	}
}

func TestAllows(t *testing.T) {
	p, err := FromProto(policy(t, []string{"198.51.100.0/24", "2001:db8:a::/64", "203.0.113.0/28@tcp/443,udp/123"}, []string{"192.0.2.53"}, false))
	if err != nil {
		t.Fatal(err)
	}
	p = p.WithCollector(netip.MustParseAddr("192.0.2.1"))
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		addr  string
		proto string
		port  uint16
		want  bool
	}{
		{"198.51.100.1", "tcp", 22, true},
		{"::ffff:198.51.100.1", "tcp", 22, true},
		{"198.51.101.1", "tcp", 22, false},
		{"2001:db8:a::1", "udp", 5000, true},
		{"2001:db8:d::1", "tcp", 80, false},
		{"203.0.113.5", "tcp", 443, true},
		{"203.0.113.5", "tcp", 22, false},
		{"203.0.113.5", "udp", 123, true},
		{"203.0.113.17", "tcp", 443, false},
		{"192.0.2.1", "tcp", 8443, true},
		{"192.0.2.53", "udp", 53, true},
		{"192.0.2.53", "tcp", 22, false},
		{"127.0.0.1", "tcp", 1, true},
		{"::1", "tcp", 1, true},
		{"fe80::1", "udp", 546, true},
	} {
		if got := p.Allows(ip(tc.addr), tc.proto, tc.port); got != tc.want {
			t.Errorf("Allows(%s, %s/%d) = %t, want %t", tc.addr, tc.proto, tc.port, got, tc.want)
		}
	}
	if !p.AllowsAddr(ip("203.0.113.5")) || p.AllowsAddr(ip("203.0.113.17")) {
		t.Error("AllowsAddr: a network with ports allows its addresses on some port")
	}
	for dst, want := range map[string]bool{
		"0.0.0.0/0": false, "::/0": false, "198.51.100.0/24": true, "198.51.100.128/25": true, "198.51.0.0/16": false,
		"203.0.113.0/24": false, "192.0.2.1/32": true, "192.0.2.0/24": false, "fe80::/64": true, "ff00::/8": true,
		"127.0.0.0/8": true, "169.254.0.0/16": true, "169.254.0.0/15": false, "2001:db8:a::/64": true, "2001:db8::/32": false,
	} {
		if got := p.AllowsRoute(netip.MustParsePrefix(dst)); got != want {
			t.Errorf("AllowsRoute(%s) = %t, want %t", dst, got, want)
		}
	}
	if !p.AllowsDNS(ip("192.0.2.53")) || p.AllowsDNS(ip("203.0.113.53")) || !p.AllowsDNS(ip("127.0.0.53")) {
		t.Error("AllowsDNS")
	}
	var none *Policy
	if none.Allows(ip("198.51.100.1"), "tcp", 1) || !none.Allows(ip("127.0.0.1"), "tcp", 1) || none.AllowsRoute(netip.MustParsePrefix("198.51.100.0/24")) {
		t.Error("a nil policy allows only the implicit addresses")
	}
}

func FuzzParseNetwork(f *testing.F) {
	for _, s := range []string{"198.51.100.0/24", "2001:db8::/32@tcp/443,udp/53,tcp/8000-8100", "1.2.3.4/32@", "::/0", "a@b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNetwork(s)
		if err != nil {
			return
		}
		again, err := ParseNetwork(n.String())
		if err != nil || again.String() != n.String() {
			t.Fatalf("%q parsed as %q, which reads back as %q, %v", s, n, again, err)
		}
		p := &Policy{Networks: []Network{n}}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q parsed but does not validate: %v", s, err)
		}
		if _, err := FromProto(p.Proto()); err != nil {
			t.Fatalf("%q: FromProto(Proto()) = %v", s, err)
		}
	})
}
