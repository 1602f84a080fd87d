//go:build linux

package daemon

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mnguard/mnguard/internal/netpolicy"
)

// TestSocketProbe: the probe sees a real connection to an address outside
// the policy, and a real listener on every address, as suspects; a
// loopback listener and a connection the policy allows are not; closing
// them changes the set.
func TestSocketProbe(t *testing.T) {
	l, err := newSocketLister()
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	// A listener on every address, and connections to it through
	// 127.0.0.2 (loopback: implicit) and through this host's non-loopback
	// address if it has one.
	wild, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	port := uint16(wild.Addr().(*net.TCPAddr).Port)
	lo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	loConn, err := net.Dial("tcp", lo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer loConn.Close()

	p, err := netpolicy.FromProto(nil)
	if err != nil || p != nil {
		t.Fatal(p, err)
	}
	socks, err := l.list()
	if err != nil {
		t.Fatal(err)
	}
	if got := suspects(socks, nil); len(got) != 0 {
		t.Errorf("without a policy: %d suspects, want none", len(got))
	}
	pol := &netpolicy.Policy{Networks: []netpolicy.Network{{Prefix: netip.MustParsePrefix("198.51.100.0/24")}}}
	set := suspects(socks, pol)
	var sawWild bool
	for s := range set {
		if s.Listening && s.Local.Port() == port {
			sawWild = true
		}
		if s.Local.Addr().IsLoopback() || (s.Remote.IsValid() && s.Remote.Addr().IsLoopback()) {
			t.Errorf("loopback socket %+v is a suspect", s)
		}
	}
	if !sawWild {
		t.Errorf("the listener on every address (port %d) is not a suspect: %v", port, set)
	}
	wild.Close()
	socks, err = l.list()
	if err != nil {
		t.Fatal(err)
	}
	if after := suspects(socks, pol); sameKeys(after, set) {
		t.Error("closing the listener did not change the suspects")
	}

	// A connected socket to a remote outside the policy (as the probe
	// gets it from sock_diag) is a suspect; inside it is not.
	in := probeSocket{Proto: "tcp", Local: netip.MustParseAddrPort("198.51.100.2:40000"), Remote: netip.MustParseAddrPort("198.51.100.1:443"), Inode: 7}
	out := probeSocket{Proto: "tcp", Local: netip.MustParseAddrPort("198.51.100.2:40001"), Remote: netip.MustParseAddrPort("[::ffff:203.0.113.1]:443"), Inode: 8}
	got := suspects([]probeSocket{in, out}, pol)
	if len(got) != 1 {
		t.Fatalf("suspects = %v, want only the one outside", got)
	}
	for s := range got {
		if s.Remote.Addr().String() != "203.0.113.1" {
			t.Errorf("suspect %v, want the v4-mapped remote unmapped", s)
		}
	}
}

// BenchmarkSocketProbe is one probe tick with about 2,000 sockets open
// (1,000 loopback connections, both ends): the sock_diag dump and the
// suspects.
func BenchmarkSocketProbe(b *testing.B) {
	l, err := newSocketLister()
	if err != nil {
		b.Fatal(err)
	}
	defer l.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for range 1000 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
	}
	pol := &netpolicy.Policy{Networks: []netpolicy.Network{{Prefix: netip.MustParsePrefix("198.51.100.0/24")}}}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		socks, err := l.list()
		if err != nil {
			b.Fatal(err)
		}
		n = len(socks)
		suspects(socks, pol)
	}
	b.ReportMetric(float64(n), "sockets")
}
