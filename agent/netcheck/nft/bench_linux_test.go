//go:build linux

package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// benchPolicy has n networks: half IPv4 /24s on every port, a quarter
// IPv6 /64s, a quarter IPv4 /24s on tcp/443 and udp/8000-8100, plus two DNS
// servers and a collector.
func benchPolicy(tb testing.TB, n int) *netpolicy.Policy {
	tb.Helper()
	p := &netpolicy.Policy{Enforce: true, Collector: []netip.Addr{netip.MustParseAddr("192.0.2.2")}}
	for i := range n {
		var s string
		switch {
		case i < n/2:
			s = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
		case i < 3*n/4:
			s = fmt.Sprintf("2001:db8:%x::/64", i)
		default:
			s = fmt.Sprintf("172.16.%d.0/24@tcp/443,udp/8000-8100", i%256)
		}
		nw, err := netpolicy.ParseNetwork(s)
		if err != nil {
			tb.Fatal(err)
		}
		p.Networks = append(p.Networks, nw)
	}
	p.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("2001:db8::53")}
	if err := p.Validate(); err != nil {
		tb.Fatal(err)
	}
	p.Version = p.ComputeVersion()
	return p
}

// BenchmarkApply replaces the whole table for a policy of 100 networks.
func BenchmarkApply(b *testing.B) {
	requireTools(b)
	term := newNetns(b, "bench")
	e := New(Options{NetNS: term.fd})
	p := benchPolicy(b, 100)
	rs, err := build(e.table, p)
	if err != nil {
		b.Fatal(err)
	}
	rules := 0
	for _, c := range rs.chains {
		rules += len(c.rules)
	}
	for b.Loop() {
		if err := e.Apply(b.Context(), p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rules), "rules")
}

// BenchmarkCheck lists and compares the table of BenchmarkApply: what the
// manager pays on every change it is told of.
func BenchmarkCheck(b *testing.B) {
	requireTools(b)
	term := newNetns(b, "bench")
	e := New(Options{NetNS: term.fd})
	p := benchPolicy(b, 100)
	if err := e.Apply(b.Context(), p); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ok, detail, err := e.Check(b.Context(), p)
		if err != nil || !ok {
			b.Fatalf("Check = %v, %q, %v", ok, detail, err)
		}
	}
}

// BenchmarkFlushToWatch times from a flush of the table (through netlink,
// from this process, so that no nft start is counted) to the Watch
// callback: mean-µs, p50-µs and p99-µs. ns/op also counts the flush's
// acknowledgement and the benchmark goroutine waking up.
func BenchmarkFlushToWatch(b *testing.B) {
	requireTools(b)
	term := newNetns(b, "bench")
	e := New(Options{NetNS: term.fd})
	p := benchPolicy(b, 100)
	changes := watch(b, e)
	select { // Watch listens
	case <-changes:
	case <-time.After(5 * time.Second):
		b.Fatal("Watch did not say it listens within 5 s")
	}
	if err := e.Apply(b.Context(), p); err != nil {
		b.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(time.Second):
		b.Fatal("Watch not called within 1 s of Apply")
	}
	drain(changes)
	c, err := e.conn()
	if err != nil {
		b.Fatal(err)
	}
	table := &nftables.Table{Name: e.table, Family: nftables.TableFamilyINet}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		c.FlushTable(table)
		if err := c.Flush(); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-changes:
			lat = append(lat, at.Sub(start))
		case <-time.After(time.Second):
			b.Fatal("Watch not called within 1 s of a flush")
		}
		b.StopTimer()
		if err := e.Apply(b.Context(), p); err != nil {
			b.Fatal(err)
		}
		select {
		case <-changes:
		case <-time.After(time.Second):
			b.Fatal("Watch not called within 1 s of Apply")
		}
		b.StartTimer()
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	slices.Sort(lat)
	b.ReportMetric(float64(sum.Microseconds())/float64(len(lat)), "mean-µs")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
