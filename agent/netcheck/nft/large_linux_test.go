//go:build linux

package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// TestLargestPolicy applies and checks the largest policy netpolicy lets
// through: MaxNetworks networks, none touching another, each with
// MaxPortRanges port ranges of its own — 65,536 elements in ports_v4.
func TestLargestPolicy(t *testing.T) {
	requireTools(t)
	term := newNetns(t, "large")
	e := New(Options{NetNS: term.fd})
	p := &netpolicy.Policy{Enforce: true}
	for i := range netpolicy.MaxNetworks {
		n := netpolicy.Network{Prefix: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/25", i/256, i%256))}
		for j := range netpolicy.MaxPortRanges {
			proto := "tcp"
			if j%2 == 1 {
				proto = "udp"
			}
			first := uint16(1 + i + 1000*j)
			n.Ports = append(n.Ports, netpolicy.PortRange{Proto: proto, First: first, Last: first + uint16(j%3)})
		}
		p.Networks = append(p.Networks, n)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.Apply(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply: %v", time.Since(start))
	start = time.Now()
	if ok, detail, err := e.Check(t.Context(), p); err != nil || !ok {
		t.Fatalf("Check = %v, %q, %v", ok, detail, err)
	}
	t.Logf("Check: %v", time.Since(start))
	rs, _ := build(e.table, p)
	for _, s := range rs.sets {
		if s.set.Name == setPorts4 && len(s.boxes) != netpolicy.MaxNetworks*netpolicy.MaxPortRanges {
			t.Errorf("ports_v4 has %d elements, want %d", len(s.boxes), netpolicy.MaxNetworks*netpolicy.MaxPortRanges)
		}
	}
}
