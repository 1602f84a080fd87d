package daemon

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/state"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestFingerprintIgnoresScanClock: the network scan's time and socket
// count, which change at every scan, do not make the posture "changed"; a
// new finding or the enforcement's state does.
func TestFingerprintIgnoresScanClock(t *testing.T) {
	p := func(scan time.Time, sockets uint32, findings ...string) *mnguardv1.Posture {
		np := &mnguardv1.NetworkPosture{PolicyVersion: "n-1a2b3c4d", LastScan: timestamppb.New(scan), SocketsTotal: sockets,
			Enforcement: &mnguardv1.NetworkEnforcement{Requested: true, InPlace: true}}
		for _, f := range findings {
			np.Findings = append(np.Findings, &mnguardv1.NetworkFinding{Id: f, Kind: "socket"})
		}
		return &mnguardv1.Posture{AgentVersion: "v1", Network: np}
	}
	now := time.Now()
	a := p(now, 10, "socket:1")
	if !bytes.Equal(fingerprint(a), fingerprint(p(now.Add(time.Minute), 12, "socket:1"))) {
		t.Error("the scan's time or socket count changed the fingerprint")
	}
	if bytes.Equal(fingerprint(a), fingerprint(p(now, 10, "socket:1", "route:2"))) {
		t.Error("a new finding did not change the fingerprint")
	}
	b := p(now, 10, "socket:1")
	b.Network.Enforcement.InPlace = false
	if bytes.Equal(fingerprint(a), fingerprint(b)) {
		t.Error("enforcement no longer in place did not change the fingerprint")
	}
	if a.GetNetwork().GetLastScan() == nil || a.GetNetwork().GetSocketsTotal() != 10 {
		t.Error("fingerprint changed the posture it was given")
	}
}

func TestCollectorAddrs(t *testing.T) {
	var c collectorAddrs
	if got := c.get(); len(got) != 0 {
		t.Fatalf("empty: %v", got)
	}
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	if !c.setResolved([]netip.Addr{a2, a1, a1}) || c.setResolved([]netip.Addr{a1, a2}) {
		t.Error("setResolved did not say (only) the first time that the addresses changed")
	}
	if !c.setPeer(&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 8443}) {
		t.Error("a first peer is not new")
	}
	if c.setPeer(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 8443}) {
		t.Error("the same peer (v4-mapped before) is new")
	}
	if c.setPeer(&net.UnixAddr{Name: "/x", Net: "unix"}) {
		t.Error("a unix peer counted")
	}
	if got := c.get(); !slices.Equal(got, []netip.Addr{a1, a2}) {
		t.Errorf("addrs = %v, want %v %v once each", got, a1, a2)
	}
	if !c.setPeer(&net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 8443}) {
		t.Error("a new peer is not new")
	}
	if got := c.get(); len(got) != 3 {
		t.Errorf("addrs = %v, want the resolved two and the peer", got)
	}
	for _, tt := range []struct {
		in   string
		want string
		ok   bool
	}{{"192.0.2.1:8443", "192.0.2.1", true}, {"[2001:db8::1]:8443", "2001:db8::1", true}, {"[fe80::1%eth0]:8443", "fe80::1", true},
		{"collector.city.lg.jp:8443", "", false}, {"nonsense", "", false}} {
		a, ok := literalCollector(tt.in)
		if ok != tt.ok || (ok && a.String() != tt.want) {
			t.Errorf("literalCollector(%q) = %v, %v; want %s, %v", tt.in, a, ok, tt.want, tt.ok)
		}
	}
	if addrs, err := resolveCollector(t.Context(), "localhost:8443", 5*time.Second); err != nil || len(addrs) == 0 || !addrs[0].IsLoopback() {
		t.Errorf("resolve localhost = %v, %v", addrs, err)
	}
	if _, err := resolveCollector(t.Context(), "no-such-host.invalid:8443", 5*time.Second); err == nil {
		t.Error("an unresolvable collector resolved")
	}
}

func TestNetworkStatus(t *testing.T) {
	if st := networkStatus(nil, ""); st != nil {
		t.Errorf("no scan, no error: %+v", st)
	}
	if st := networkStatus(nil, "bad"); st == nil || st.PolicyError != "bad" {
		t.Errorf("no scan, an error: %+v", st)
	}
	np := &mnguardv1.NetworkPosture{PolicyVersion: "n-1", ScanErrors: []string{"sockets: x"},
		Enforcement: &mnguardv1.NetworkEnforcement{Requested: true, Detail: "nftables: operation not permitted", Repairs: 2}}
	for i := range 8 {
		np.Findings = append(np.Findings, &mnguardv1.NetworkFinding{Kind: "socket", Detail: "d", Process: "curl", Pid: uint32(i + 1), FirstSeen: timestamppb.Now()})
	}
	st := networkStatus(np, "")
	if st.PolicyVersion != "n-1" || !st.EnforceRequested || st.EnforceInPlace || st.EnforceDetail != "nftables: operation not permitted" || st.Repairs != 2 ||
		st.Findings != 8 || len(st.FirstFindings) != state.MaxStatusFindings || st.FirstFindings[0].PID != 1 || st.FirstFindings[0].FirstSeen.IsZero() ||
		len(st.ScanErrors) != 1 {
		t.Errorf("status = %+v", st)
	}
}

// TestResolveCollectors: every collector of the list is allowed, so that
// enforcement cannot block the failover to the second one; an address that
// does not resolve is named and the others still count.
func TestResolveCollectors(t *testing.T) {
	addrs, err := resolveCollectors(context.Background(),
		[]string{"192.0.2.1:8443", "[2001:db8::1]:8443", "192.0.2.1:9443", "nohostport"}, time.Second)
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	if !slices.Equal(addrs, want) {
		t.Errorf("addrs = %v, want %v", addrs, want)
	}
	if err == nil || !strings.Contains(err.Error(), "nohostport") {
		t.Errorf("err = %v, want one naming the bad address", err)
	}
	addrs, err = resolveCollectors(context.Background(), []string{"192.0.2.7:8443"}, time.Second)
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("single = %v, %v", addrs, err)
	}
}
