package winfw

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// testPolicy: a network open on every port, an IPv6 network open on some
// ports, a DNS server inside the first and one outside every network, and
// the collector's address outside every network.
func testPolicy(t testing.TB, nets ...string) *netpolicy.Policy {
	t.Helper()
	if len(nets) == 0 {
		nets = []string{"198.51.100.0/24", "2001:db8::/32@tcp/443,udp/53,tcp/8000-8100"}
	}
	p := &netpolicy.Policy{Enforce: true}
	for _, s := range nets {
		n, err := netpolicy.ParseNetwork(s)
		if err != nil {
			t.Fatal(err)
		}
		p.Networks = append(p.Networks, n)
	}
	for _, s := range []string{"198.51.100.53", "203.0.113.53"} {
		a, err := netpolicy.ParseDNS(s)
		if err != nil {
			t.Fatal(err)
		}
		p.DNS = append(p.DNS, a)
	}
	p.Collector = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Version = p.ComputeVersion()
	return p
}

func TestMakePlanRules(t *testing.T) {
	p := testPolicy(t)
	plan, err := MakePlan(p)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Defaults != Enforced {
		t.Errorf("defaults %s, want %s", plan.Defaults, Enforced)
	}
	var names []string
	seen := map[string]bool{}
	for _, r := range plan.Rules {
		if seen[r.Name] {
			t.Errorf("rule name %q twice", r.Name)
		}
		seen[r.Name] = true
		if r.Grouping != Group || !r.Enabled || r.Profiles != ProfilesAll || !strings.Contains(r.Description, p.Version) {
			t.Errorf("rule %+v: want group %q, enabled, every profile, the version in its description", r, Group)
		}
		if r.Protocol == ProtoAny && r.RemotePorts != "" {
			t.Errorf("rule %q: ports on a rule for any protocol (Windows refuses it)", r.Name)
		}
		names = append(names, strings.TrimPrefix(r.Name, "mnguard "+p.Version+" "))
	}
	want := []string{
		"out allow networks", "in allow networks",
		"out allow networks tcp ports 1", "in allow networks tcp ports 1",
		"out allow networks udp ports 1", "in allow networks udp ports 1",
		"out allow collector", "in allow collector",
		"out allow dns tcp", "in allow dns tcp", "out allow dns udp", "in allow dns udp",
		"out allow implicit", "in allow implicit",
		"out allow dhcp",
		"out block other segments", "in block other segments",
	}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range plan.Rules {
		switch {
		case strings.HasSuffix(r.Name, "allow networks tcp ports 1"):
			if r.Protocol != ProtoTCP || r.RemotePorts != "443,8000-8100" || r.RemoteAddresses != "2001:db8::/32" {
				t.Errorf("%+v", r)
			}
		case strings.HasSuffix(r.Name, "block other segments"):
			if r.Action != Block || r.Protocol != ProtoAny {
				t.Errorf("%+v", r)
			}
		}
	}
}

func TestMakePlanRefuses(t *testing.T) {
	if _, err := MakePlan(nil); err == nil {
		t.Error("MakePlan(nil) succeeded")
	}
	p := testPolicy(t)
	p.Networks = nil
	if _, err := MakePlan(p); err == nil || !strings.Contains(err.Error(), "no allowed network") {
		t.Errorf("MakePlan with no network: %v", err)
	}
	p = testPolicy(t)
	p.Collector = append(p.Collector, netip.Addr{})
	if _, err := MakePlan(p); err == nil || !strings.Contains(err.Error(), "collector") {
		t.Errorf("MakePlan with an invalid collector address: %v", err)
	}
	p = testPolicy(t)
	p.Version = "n-1|2"
	if _, err := MakePlan(p); err == nil {
		t.Error("MakePlan with a version holding | succeeded")
	}
	p = testPolicy(t)
	p.Networks = append(p.Networks, p.Networks[0])
	if _, err := MakePlan(p); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("MakePlan of an invalid policy: %v", err)
	}
}

// TestMakePlanMatchesPolicy evaluates the plan's rules the way Windows
// Firewall does (a matching block rule wins over any allow rule, then
// allow rules, then the profile's default) for addresses at the edges of
// every network and random ones, and compares with netpolicy.Allows — also
// with a foreign rule that allows everything, as applications install.
func TestMakePlanMatchesPolicy(t *testing.T) {
	for name, p := range map[string]*netpolicy.Policy{
		"two networks": testPolicy(t),
		// Networks that share a set of ports share a rule; others do not.
		"five networks": testPolicy(t, "198.51.100.0/24", "2001:db8::/32@tcp/443,udp/53,tcp/8000-8100",
			"203.0.113.0/25@tcp/22,udp/123", "198.18.0.0/15@tcp/8000-8100,udp/53,tcp/443", "10.0.0.0/8", "2001:db8:ffff::/48@tcp/22"),
	} {
		t.Run(name, func(t *testing.T) { planMatchesPolicy(t, p) })
	}
}

func planMatchesPolicy(t *testing.T, p *netpolicy.Policy) {
	plan, err := MakePlan(p)
	if err != nil {
		t.Fatal(err)
	}
	var probes []netip.Addr
	edge := func(pfx netip.Prefix) {
		r := prefixRange(pfx)
		for _, a := range []netip.Addr{r.first, r.last, r.first.Prev(), r.last.Next(), r.first.Next()} {
			if a.IsValid() {
				probes = append(probes, a)
			}
		}
	}
	for _, n := range p.Networks {
		edge(n.Prefix)
	}
	for _, a := range append(append([]netip.Addr{}, p.DNS...), p.Collector...) {
		edge(netip.PrefixFrom(a, a.BitLen()))
	}
	for _, pfx := range implicitPrefixes {
		edge(pfx)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		var b4 [4]byte
		var b16 [16]byte
		for i := range b4 {
			b4[i] = byte(rng.Uint32())
		}
		for i := range b16 {
			b16[i] = byte(rng.Uint32())
		}
		probes = append(probes, netip.AddrFrom4(b4), netip.AddrFrom16(b16))
		// And near the allowed IPv6 network.
		b16[0], b16[1], b16[2], b16[3] = 0x20, 0x01, 0x0d, 0xb8
		probes = append(probes, netip.AddrFrom16(b16))
	}
	foreign := Rule{Name: "allow all", Direction: Out, Action: Allow, Protocol: ProtoAny, RemoteAddresses: "*", Enabled: true}
	for _, a := range probes {
		for _, pp := range []struct {
			proto string
			port  uint16
		}{{"tcp", 443}, {"tcp", 22}, {"udp", 53}, {"tcp", 53}, {"tcp", 8050}, {"udp", 67}, {"udp", 123}} {
			want := p.Allows(a, pp.proto, pp.port)
			if a == netip.MustParseAddr("255.255.255.255") && pp.proto == "udp" && pp.port == 67 {
				want = true // DHCP
			}
			got, err := verdict(plan.Rules, plan.Defaults[2], Out, a, pp.proto, pp.port)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("out %s %s/%d: firewall allows %v, policy %v", a, pp.proto, pp.port, got, want)
			}
			// A foreign allow-everything rule opens no other segment.
			got, err = verdict(append([]Rule{foreign}, plan.Rules...), plan.Defaults[2], Out, a, pp.proto, pp.port)
			if err != nil {
				t.Fatal(err)
			}
			if got && !p.AllowsAddr(a) && a != netip.MustParseAddr("255.255.255.255") {
				t.Errorf("out %s %s/%d: allowed through a foreign rule, outside the policy", a, pp.proto, pp.port)
			}
		}
	}
}

// TestImplicitPrefixes: the prefixes the plan always allows are exactly
// what netpolicy.Implicit says, at their edges.
func TestImplicitPrefixes(t *testing.T) {
	for _, pfx := range implicitPrefixes {
		r := prefixRange(pfx)
		for _, a := range []netip.Addr{r.first, r.last} {
			if !netpolicy.Implicit(a) {
				t.Errorf("%s (in %s) is not netpolicy.Implicit", a, pfx)
			}
		}
		for _, a := range []netip.Addr{r.first.Prev(), r.last.Next()} {
			if a.IsValid() && netpolicy.Implicit(a) && !inRanges(mergeRanges(rangesOf(implicitPrefixes)), a) {
				t.Errorf("%s next to %s is netpolicy.Implicit but not in the plan", a, pfx)
			}
		}
	}
}

// TestImplicitMulticast: every IPv6 multicast flags/scope pair, and IPv4's
// edges of 224.0.0.0/24, agree with netpolicy.Implicit.
func TestImplicitMulticast(t *testing.T) {
	all := mergeRanges(rangesOf(implicitPrefixes))
	var probes []netip.Addr
	for b := range 256 {
		probes = append(probes, netip.AddrFrom16([16]byte{0xff, byte(b), 15: 1}))
	}
	probes = append(probes, netip.MustParseAddr("224.0.0.255"), netip.MustParseAddr("224.0.1.0"), netip.MustParseAddr("239.255.255.250"))
	for _, a := range probes {
		if netpolicy.Implicit(a) != inRanges(all, a) {
			t.Errorf("%s: netpolicy.Implicit %v, plan %v", a, netpolicy.Implicit(a), inRanges(all, a))
		}
	}
}

func rangesOf(ps []netip.Prefix) []addrRange {
	var rs []addrRange
	for _, p := range ps {
		rs = append(rs, prefixRange(p))
	}
	return rs
}

func TestDefaultsString(t *testing.T) {
	d := Defaults{{false, Block, Allow}, {true, Block, Allow}, {true, Allow, Block}}
	s := d.String()
	if s != "domain:off:block:allow private:on:block:allow public:on:allow:block" {
		t.Errorf("String = %q", s)
	}
	back, err := ParseDefaults(s)
	if err != nil || back != d {
		t.Errorf("ParseDefaults(%q) = %v, %v", s, back, err)
	}
	for _, bad := range []string{
		"", "domain:on:block:allow", "private:on:block:allow domain:on:block:allow public:on:block:allow",
		"domain:yes:block:allow private:on:block:allow public:on:block:allow",
		"domain:on:deny:allow private:on:block:allow public:on:block:allow",
		"domain:on:block:allow private:on:block:allow public:on:block:allow:x",
		"domain:on:block:allow  private:on:block:allow public:on:block:allow",
	} {
		if _, err := ParseDefaults(bad); err == nil {
			t.Errorf("ParseDefaults(%q) succeeded", bad)
		}
	}
}

// FuzzParseDefaults: what parses is written back byte for byte.
func FuzzParseDefaults(f *testing.F) {
	f.Add("domain:off:block:allow private:on:block:allow public:on:allow:block")
	f.Add("domain:on:block:block private:on:block:block public:on:block:block")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDefaults(s)
		if err != nil {
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDefaults(%q).String() = %q", s, d.String())
		}
	})
}

// bigPolicy is a policy at netpolicy's limits: MaxNetworks networks (every
// other one with ports), MaxDNS DNS servers outside them.
func bigPolicy(t testing.TB) *netpolicy.Policy {
	t.Helper()
	p := &netpolicy.Policy{Enforce: true, Collector: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	for i := range netpolicy.MaxNetworks {
		s := fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
		if i%2 == 1 {
			s = fmt.Sprintf("2001:db8:%x::/48@tcp/443,tcp/8000-8100,udp/53", i)
		}
		n, err := netpolicy.ParseNetwork(s)
		if err != nil {
			t.Fatal(err)
		}
		p.Networks = append(p.Networks, n)
	}
	for i := range netpolicy.MaxDNS {
		p.DNS = append(p.DNS, netip.AddrFrom4([4]byte{172, 16, byte(i), 53}))
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Version = p.ComputeVersion()
	return p
}

// TestMakePlanAtLimits: a policy at every limit makes rules with unique
// names, and the block rule's address list stays within what one rule
// holds (Windows Firewall takes at most 10,000 entries per rule).
func TestMakePlanAtLimits(t *testing.T) {
	plan, err := MakePlan(bigPolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range plan.Rules {
		if names[r.Name] {
			t.Fatalf("rule name %q twice", r.Name)
		}
		names[r.Name] = true
		if n := strings.Count(r.RemoteAddresses, ",") + 1; n > 10000 {
			t.Errorf("rule %q: %d addresses", r.Name, n)
		}
		if strings.HasSuffix(r.Name, "out block other segments") {
			t.Logf("%d rules; the block rule holds %d ranges, %d bytes", len(plan.Rules), strings.Count(r.RemoteAddresses, ",")+1, len(r.RemoteAddresses))
		}
	}
}

func BenchmarkMakePlanAtLimits(b *testing.B) {
	p := bigPolicy(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MakePlan(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckAtLimits: Check of a policy at every limit against rules in
// place (in memory: the plan and the comparison, not COM).
func BenchmarkCheckAtLimits(b *testing.B) {
	p := bigPolicy(b)
	e := &Enforcer{fw: newMemFirewall()}
	ctx := context.Background()
	if err := e.Apply(ctx, p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
			b.Fatal(ok, detail, err)
		}
	}
}
