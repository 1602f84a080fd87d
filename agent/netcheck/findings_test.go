package netcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// testPolicy allows 198.51.100.0/24 on every port, 192.0.2.0/24 on tcp/443
// only, 2001:db8:1::/48 on tcp/443 and udp/53-54, two DNS servers, and a
// collector at 192.0.2.10.
func testPolicy(t testing.TB, enforce bool) *netpolicy.Policy {
	t.Helper()
	p, err := netpolicy.FromProto(&mnguardv1.NetworkPolicy{
		Networks: []*mnguardv1.AllowedNetwork{
			{Cidr: "198.51.100.0/24"},
			{Cidr: "192.0.2.0/24", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 443, Last: 443}}},
			{Cidr: "2001:db8:1::/48", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 443}, {Protocol: "udp", First: 53, Last: 54}}},
		},
		DnsServers:     []string{"198.51.100.53", "2001:db8:1::53"},
		Enforce:        enforce,
		CollectorAddrs: []string{"192.0.2.10"},
	})
	if err != nil {
		t.Fatalf("test policy: %v", err)
	}
	return p
}

func tPrefix(s string) netip.Prefix     { return netip.MustParsePrefix(s) }
func tAddr(s string) netip.Addr         { return netip.MustParseAddr(s) }
func tAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func tPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, tPrefix(s))
	}
	return out
}

// want is one expected finding: its kind and words of its detail.
type wantFinding struct {
	kind   string
	detail string
}

func TestEvaluate(t *testing.T) {
	eth0 := Adapter{Name: "eth0", Kind: KindEthernet, Up: true, HardwareAddr: "52:54:00:00:00:01", Addrs: tPrefixes("198.51.100.5/24", "2001:db8:1::5/64", "fe80::1/64")}
	lo := Adapter{Name: "lo", Kind: KindLoopback, Loopback: true, Up: true, Addrs: tPrefixes("127.0.0.1/8", "::1/128")}
	tests := []struct {
		name     string
		scan     Scan
		nilPol   bool
		enforced bool
		want     []wantFinding
	}{
		{name: "isolated terminal", scan: Scan{
			Adapters: []Adapter{lo, eth0},
			Routes: []Route{
				{Dst: tPrefix("198.51.100.0/24"), Interface: "eth0", Table: "main"},
				{Dst: tPrefix("198.51.100.128/25"), Gateway: tAddr("198.51.100.1"), Interface: "eth0", Table: "main"},
				{Dst: tPrefix("192.0.2.10/32"), Gateway: tAddr("198.51.100.1"), Interface: "eth0", Table: "main"},
				{Dst: tPrefix("2001:db8:1::/64"), Interface: "eth0", Table: "main"},
				{Dst: tPrefix("fe80::/64"), Interface: "eth0", Table: "main"},
				{Dst: tPrefix("169.254.0.0/16"), Interface: "eth0", Table: "main"},
				{Dst: tPrefix("ff00::/8"), Interface: "eth0", Table: "local"},
				{Dst: tPrefix("127.0.0.0/8"), Interface: "lo", Table: "local"},
				{Dst: tPrefix("198.51.100.5/32"), Interface: "eth0", Table: "local"},
				{Dst: tPrefix("198.51.100.255/32"), Interface: "eth0", Table: "local"},
				{Dst: tPrefix("255.255.255.255/32"), Interface: "eth0"},
			},
			Sockets: []Socket{
				{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort("198.51.100.7:22"), State: "ESTABLISHED", PID: 10},
				{Proto: "tcp", Local: tAddrPort("198.51.100.5:50001"), Remote: tAddrPort("192.0.2.7:443"), State: "SYN_SENT", PID: 10},
				{Proto: "tcp", Local: tAddrPort("198.51.100.5:50002"), Remote: tAddrPort("192.0.2.10:9443"), State: "ESTABLISHED", PID: 11},
				{Proto: "tcp", Local: tAddrPort("[2001:db8:1::5]:50003"), Remote: tAddrPort("[2001:db8:1::7]:443"), State: "ESTABLISHED", PID: 12},
				{Proto: "udp", Local: tAddrPort("198.51.100.5:40000"), Remote: tAddrPort("198.51.100.53:53"), PID: 13},
				{Proto: "udp", Local: tAddrPort("[2001:db8:1::5]:40001"), Remote: tAddrPort("[2001:db8:1::53]:53"), PID: 13},
				{Proto: "tcp", Local: tAddrPort("127.0.0.1:631"), State: "LISTEN", PID: 14},
				{Proto: "tcp", Local: tAddrPort("[::1]:25"), State: "LISTEN", PID: 15},
				{Proto: "udp", Local: tAddrPort("[fe80::1%eth0]:546"), PID: 16},
				{Proto: "tcp", Local: tAddrPort("127.0.0.1:50005"), Remote: tAddrPort("127.0.0.1:631"), State: "ESTABLISHED", PID: 17},
				{Proto: "tcp", Local: tAddrPort("198.51.100.5:0"), State: "CLOSE", PID: 18},
			},
			DNS: []DNSServer{{Addr: tAddr("198.51.100.53"), Source: "/etc/resolv.conf"}, {Addr: tAddr("127.0.0.53"), Source: "/etc/resolv.conf"}, {Addr: tAddr("2001:db8:1::53"), Source: "systemd-resolved"}},
		}},
		{name: "default route IPv4", scan: Scan{Routes: []Route{{Dst: tPrefix("0.0.0.0/0"), Gateway: tAddr("198.51.100.1"), Interface: "eth0", Table: "main"}}},
			want: []wantFinding{{FindingDefaultRoute, "default route 0.0.0.0/0 via 198.51.100.1 dev eth0 table main"}}},
		{name: "default route IPv6 in another table", scan: Scan{Routes: []Route{{Dst: tPrefix("::/0"), Gateway: tAddr("fe80::1"), Interface: "eth0", Table: "100"}}},
			want: []wantFinding{{FindingDefaultRoute, "::/0 via fe80::1 dev eth0 table 100"}}},
		{name: "default route in the local table", scan: Scan{Routes: []Route{{Dst: tPrefix("0.0.0.0/0"), Interface: "eth0", Table: "local"}}},
			want: []wantFinding{{FindingDefaultRoute, "table local"}}},
		{name: "route wider than the allowed network", scan: Scan{Routes: []Route{{Dst: tPrefix("198.51.0.0/16"), Gateway: tAddr("198.51.100.1"), Interface: "eth0", Table: "main"}}},
			want: []wantFinding{{FindingRoute, "route outside the policy to 198.51.0.0/16 via 198.51.100.1"}}},
		{name: "route to another network", scan: Scan{Routes: []Route{{Dst: tPrefix("203.0.113.0/24"), Interface: "eth1", Table: "main"}}},
			want: []wantFinding{{FindingRoute, "203.0.113.0/24 dev eth1"}}},
		{name: "IPv6 route to another network", scan: Scan{Routes: []Route{{Dst: tPrefix("2001:db8:1:5::/64"), Interface: "eth0"}, {Dst: tPrefix("2001:db9::/32"), Interface: "eth0"}}},
			want: []wantFinding{{FindingRoute, "2001:db9::/32"}}},
		{name: "IPv4-mapped routes and addresses", scan: Scan{
			Adapters: []Adapter{{Name: "eth0", Kind: KindEthernet, Addrs: tPrefixes("::ffff:198.51.100.5/120")}},
			Routes:   []Route{{Dst: tPrefix("::ffff:198.51.100.0/120"), Interface: "eth0"}, {Dst: tPrefix("::ffff:203.0.113.0/120"), Interface: "eth0"}},
		}, want: []wantFinding{{FindingRoute, "::ffff:203.0.113.0/120 dev eth0"}}},
		{name: "routes that drop traffic are no findings", scan: Scan{Routes: []Route{
			{Dst: tPrefix("0.0.0.0/0"), Table: "main", Type: RouteBlackhole},
			{Dst: tPrefix("::/0"), Table: "main", Type: RouteUnreachable},
			{Dst: tPrefix("0.0.0.0/0"), Table: "100", Type: RouteProhibit},
			{Dst: tPrefix("203.0.113.0/24"), Table: "main", Type: RouteBlackhole},
			{Dst: tPrefix("2001:db9::/32"), Table: "main", Type: RouteProhibit},
		}}},
		{name: "routes that send traffic out are findings, whatever their type", scan: Scan{Routes: []Route{
			{Dst: tPrefix("0.0.0.0/0"), Gateway: tAddr("198.51.100.1"), Interface: "eth0", Table: "main", Type: RouteUnicast},
			{Dst: tPrefix("::/0"), Interface: "eth0", Table: "100", Type: ""}, // Windows: no type, unicast
			{Dst: tPrefix("203.0.113.0/24"), Table: "200", Type: "throw"},     // the lookup goes on in the next table
		}}, want: []wantFinding{
			{FindingDefaultRoute, "default route 0.0.0.0/0 via 198.51.100.1 dev eth0 table main"},
			{FindingDefaultRoute, "default route ::/0 dev eth0 table 100"},
			{FindingRoute, "route outside the policy to 203.0.113.0/24 table 200"},
		}},
		{name: "a blackhole route does not hide an address outside the policy", scan: Scan{
			Adapters: []Adapter{{Name: "eth1", Kind: KindEthernet, Addrs: tPrefixes("203.0.113.5/24")}},
			Routes:   []Route{{Dst: tPrefix("203.0.113.0/24"), Table: "main", Type: RouteBlackhole}},
		}, want: []wantFinding{{FindingRoute, "address 203.0.113.5/24 on eth1 is in a network outside the policy"}}},
		{name: "route with an unreadable destination", scan: Scan{Routes: []Route{{Interface: "eth0", Table: "main"}}},
			want: []wantFinding{{FindingRoute, "unreadable destination"}}},
		{name: "address outside the policy without its route", scan: Scan{
			Adapters: []Adapter{eth0, {Name: "veth1", Kind: KindVirtual, Addrs: tPrefixes("203.0.113.5/24")}},
			Routes:   []Route{{Dst: tPrefix("203.0.113.5/32"), Interface: "veth1", Table: "local"}, {Dst: tPrefix("203.0.113.255/32"), Interface: "veth1", Table: "local"}},
		}, want: []wantFinding{{FindingRoute, "address 203.0.113.5/24 on veth1 is in a network outside the policy"}}},
		{name: "address outside the policy with its route: one finding", scan: Scan{
			Adapters: []Adapter{{Name: "eth1", Kind: KindEthernet, Addrs: tPrefixes("203.0.113.5/24", "2001:db9::5/64")}},
			Routes:   []Route{{Dst: tPrefix("203.0.113.0/24"), Interface: "eth1", Table: "main"}, {Dst: tPrefix("2001:db9::/64"), Interface: "eth1", Table: "main"}},
		}, want: []wantFinding{{FindingRoute, "203.0.113.0/24 dev eth1"}, {FindingRoute, "2001:db9::/64 dev eth1"}}},
		{name: "address wider than the allowed network", scan: Scan{
			Adapters: []Adapter{{Name: "eth0", Kind: KindEthernet, Addrs: tPrefixes("198.51.100.5/16")}},
		}, want: []wantFinding{{FindingRoute, "address 198.51.100.5/16 on eth0"}}},
		{name: "port outside the allowed ports", scan: Scan{
			Adapters: []Adapter{eth0},
			Sockets: []Socket{
				{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort("192.0.2.7:22"), State: "ESTABLISHED", PID: 42, Process: "ssh", User: "alice"},
				{Proto: "udp", Local: tAddrPort("198.51.100.5:40000"), Remote: tAddrPort("192.0.2.7:443"), PID: 43, Process: "quic"},
				{Proto: "tcp", Local: tAddrPort("[2001:db8:1::5]:50001"), Remote: tAddrPort("[2001:db8:1::7]:80"), State: "SYN_SENT", PID: 44},
				{Proto: "udp", Local: tAddrPort("[2001:db8:1::5]:50002"), Remote: tAddrPort("[2001:db8:1::7]:54"), PID: 44},
			},
		}, want: []wantFinding{
			{FindingSocket, "tcp 198.51.100.5:50000 → 192.0.2.7:22 established"},
			{FindingSocket, "udp 198.51.100.5:40000 → 192.0.2.7:443"},
			{FindingSocket, "tcp [2001:db8:1::5]:50001 → [2001:db8:1::7]:80 syn_sent"},
		}},
		{name: "connections outside the policy in every state", scan: Scan{Sockets: []Socket{
			{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort("203.0.113.7:443"), State: "ESTABLISHED", PID: 42},
			{Proto: "tcp", Local: tAddrPort("198.51.100.5:50001"), Remote: tAddrPort("203.0.113.7:443"), State: "SYN_RECV", PID: 42},
			{Proto: "tcp", Local: tAddrPort("198.51.100.5:50002"), Remote: tAddrPort("203.0.113.7:443"), State: "TIME_WAIT"},
			{Proto: "tcp", Local: tAddrPort("[::ffff:198.51.100.5]:50003"), Remote: tAddrPort("[::ffff:203.0.113.8]:80"), State: "CLOSE_WAIT", PID: 43},
			{Proto: "udp", Local: tAddrPort("198.51.100.5:40000"), Remote: tAddrPort("203.0.113.9:123"), PID: 44},
			{Proto: "udp", Local: tAddrPort("198.51.100.5:40001"), Remote: tAddrPort("8.8.8.8:53"), PID: 44},
		}}, want: []wantFinding{
			{FindingSocket, "198.51.100.5:50000 → 203.0.113.7:443 established"},
			{FindingSocket, "syn_recv"},
			{FindingSocket, "to 203.0.113.7 recently closed (sockets closing: 1"},
			{FindingSocket, "tcp 198.51.100.5:50003 → 203.0.113.8:80 close_wait"},
			{FindingSocket, "udp 198.51.100.5:40000 → 203.0.113.9:123"},
			{FindingSocket, "udp 198.51.100.5:40001 → 8.8.8.8:53"},
		}},
		{name: "listeners", scan: Scan{Sockets: []Socket{
			{Proto: "tcp", Local: tAddrPort("0.0.0.0:22"), State: "LISTEN", PID: 900, Process: "sshd"},
			{Proto: "tcp", Local: tAddrPort("0.0.0.0:22"), State: "LISTEN", PID: 800, Process: "sshd"},
			{Proto: "tcp", Local: tAddrPort("[::]:22"), State: "LISTEN", PID: 800, Process: "sshd"},
			{Proto: "tcp", Local: tAddrPort("198.51.100.5:8080"), State: "LISTEN", PID: 801},
			{Proto: "udp", Local: tAddrPort("0.0.0.0:68"), PID: 802, Process: "dhclient"},
			{Proto: "udp", Local: tAddrPort("[::]:5353"), Remote: netip.AddrPortFrom(netip.IPv6Unspecified(), 0), PID: 803},
			{Proto: "tcp", Local: tAddrPort("127.0.0.1:631"), State: "LISTEN", PID: 14},
		}}, want: []wantFinding{
			{FindingListener, "tcp listening on 0.0.0.0:22"},
			{FindingListener, "tcp listening on [::]:22"},
			{FindingListener, "tcp listening on 198.51.100.5:8080"},
			{FindingListener, "udp bound to 0.0.0.0:68"},
			{FindingListener, "udp bound to [::]:5353"},
		}},
		{name: "listeners with enforcement in place", enforced: true, scan: Scan{Sockets: []Socket{
			{Proto: "tcp", Local: tAddrPort("0.0.0.0:22"), State: "LISTEN", PID: 900},
			{Proto: "udp", Local: tAddrPort("0.0.0.0:68"), PID: 802},
			{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort("203.0.113.7:443"), State: "ESTABLISHED", PID: 42},
		}}, want: []wantFinding{{FindingSocket, "203.0.113.7:443"}}},
		{name: "DNS servers", scan: Scan{DNS: []DNSServer{
			{Addr: tAddr("8.8.8.8"), Source: "/etc/resolv.conf"},
			{Addr: tAddr("8.8.8.8"), Source: "systemd-resolved"},
			{Addr: tAddr("2001:4860:4860::8888"), Source: "adapter Ethernet0"},
			{Addr: tAddr("fe80::1%eth0"), Source: "systemd-resolved"},
			{Addr: tAddr("198.51.100.53"), Source: "/etc/resolv.conf"},
			{Addr: tAddr("127.0.0.53"), Source: "/etc/resolv.conf"},
			{Source: "/etc/resolv.conf"},
		}}, want: []wantFinding{
			{FindingDNS, "DNS server 8.8.8.8 outside the policy (from /etc/resolv.conf)"},
			{FindingDNS, "2001:4860:4860::8888 outside the policy (from adapter Ethernet0)"},
			{FindingDNS, "fe80::1%eth0"},
			{FindingDNS, "unreadable address"},
		}},
		{name: "adapters", scan: Scan{Adapters: []Adapter{
			lo, eth0,
			{Name: "veth0", Kind: KindVirtual},
			{Name: "wlan0", Kind: KindWireless, Reason: "sysfs wireless/", HardwareAddr: "02:00:00:00:00:02"},
			{Name: "usb0", Kind: KindUSB, Up: true, Reason: "usb ancestor 1-2, interface class e0/01/03 (RNDIS)", Driver: "rndis_host", VendorID: "18d1", ProductID: "4ee3", USBDevice: "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-2"},
			{Name: "bnep0", Kind: KindBluetooth, Up: true},
			{Name: "mystery0", Kind: KindUnknown, Reason: "no device"},
			{Name: "blank0"},
			{Name: "odd0", Kind: "infiniband"},
		}}, want: []wantFinding{
			{FindingWireless, "wireless adapter wlan0 (sysfs wireless/), down"},
			{FindingUSBAdapter, "USB network adapter usb0 18d1:4ee3 driver rndis_host (usb ancestor 1-2, interface class e0/01/03 (RNDIS))"},
			{FindingBluetoothAdapter, "Bluetooth network adapter bnep0"},
			{FindingUnknownInterface, "interface of undecided kind mystery0 (no device)"},
			{FindingUnknownInterface, "blank0"},
			{FindingUnknownInterface, `interface of unknown kind "infiniband" odd0`},
		}},
		{name: "scan errors", scan: Scan{
			Routes: []Route{{Dst: tPrefix("0.0.0.0/0"), Interface: "eth0"}},
			Errors: []PartError{{Part: PartSockets, Err: errors.New("permission denied")}, {Part: PartDNS, Err: errors.New("read /etc/resolv.conf: no such file")}},
		}, want: []wantFinding{
			{FindingDefaultRoute, "0.0.0.0/0"},
			{FindingScanError, "sockets: permission denied"},
			{FindingScanError, "dns: read /etc/resolv.conf"},
		}},
		{name: "no policy: only what needs none", nilPol: true, scan: Scan{
			Adapters: []Adapter{eth0, {Name: "wlan0", Kind: KindWireless}, {Name: "x0"}, {Name: "eth1", Kind: KindEthernet, Addrs: tPrefixes("203.0.113.5/24")}},
			Routes:   []Route{{Dst: tPrefix("0.0.0.0/0"), Interface: "eth0"}, {Dst: tPrefix("203.0.113.0/24"), Interface: "eth1"}},
			Sockets: []Socket{
				{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort("203.0.113.7:443"), State: "ESTABLISHED", PID: 42},
				{Proto: "tcp", Local: tAddrPort("0.0.0.0:22"), State: "LISTEN", PID: 900},
			},
			DNS:    []DNSServer{{Addr: tAddr("8.8.8.8")}},
			Errors: []PartError{{Part: PartRoutes, Err: errors.New("netlink: busy")}},
		}, want: []wantFinding{
			{FindingWireless, "wlan0"},
			{FindingUnknownInterface, "x0"},
			{FindingScanError, "routes: netlink: busy"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy(t, false)
			if tt.nilPol {
				p = nil
			}
			got := Evaluate(tt.scan, p, tt.enforced)
			checkFindings(t, got, tt.want)
			// Sorted, unique IDs of the form kind-hex, deterministic.
			if !slices.IsSortedFunc(got, func(a, b Finding) int { return strings.Compare(a.Kind+" "+a.ID, b.Kind+" "+b.ID) }) {
				t.Errorf("findings not sorted by kind and ID: %v", got)
			}
			again := Evaluate(tt.scan, p, tt.enforced)
			if !slices.Equal(got, again) {
				t.Errorf("Evaluate is not deterministic:\n%v\n%v", got, again)
			}
		})
	}
}

// checkFindings matches got against want, each want once, in any order.
func checkFindings(t *testing.T, got []Finding, wants []wantFinding) {
	t.Helper()
	used := make([]bool, len(got))
	ids := make(map[string]bool)
	for _, f := range got {
		if ids[f.ID] {
			t.Errorf("ID %s twice", f.ID)
		}
		ids[f.ID] = true
		if !strings.HasPrefix(f.ID, f.Kind+"-") || len(f.ID) != len(f.Kind)+13 {
			t.Errorf("ID %q is not kind-12hex", f.ID)
		}
	}
	for _, w := range wants {
		found := false
		for i, f := range got {
			if !used[i] && f.Kind == w.kind && strings.Contains(f.Detail, w.detail) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing finding %s %q", w.kind, w.detail)
		}
	}
	for i, f := range got {
		if !used[i] {
			t.Errorf("unexpected finding %s %q", f.Kind, f.Detail)
		}
	}
}

func TestEvaluateSocketFields(t *testing.T) {
	as := []Adapter{{Name: "eth0", Kind: KindEthernet, Addrs: tPrefixes("198.51.100.5/24")}}
	ss := []Socket{{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort("203.0.113.7:443"), State: "ESTABLISHED", PID: 4242, Process: "curl", User: "alice"}}
	got := Evaluate(Scan{Adapters: as, Sockets: ss}, testPolicy(t, false), false)
	if len(got) != 1 {
		t.Fatalf("findings: %v", got)
	}
	f := got[0]
	if f.Process != "curl" || f.PID != 4242 || f.User != "alice" || f.Interface != "eth0" || f.Address != "203.0.113.7:443" {
		t.Errorf("finding %+v: want process curl, pid 4242, user alice, interface eth0, address 203.0.113.7:443", f)
	}
	// The listener's process is the lowest PID that holds it.
	ls := []Socket{
		{Proto: "tcp", Local: tAddrPort("198.51.100.5:22"), State: "LISTEN", PID: 900, Process: "sshd-worker"},
		{Proto: "tcp", Local: tAddrPort("198.51.100.5:22"), State: "LISTEN", PID: 0},
		{Proto: "tcp", Local: tAddrPort("198.51.100.5:22"), State: "LISTEN", PID: 800, Process: "sshd", User: "root"},
	}
	got = Evaluate(Scan{Adapters: as, Sockets: ls}, testPolicy(t, false), false)
	if len(got) != 1 || got[0].PID != 800 || got[0].Process != "sshd" || got[0].User != "root" || got[0].Interface != "eth0" || got[0].Address != "198.51.100.5:22" {
		t.Errorf("listener findings %+v: want one, sshd pid 800 on eth0", got)
	}
}

// TestEvaluateClosedSockets: closing sockets no process holds are one
// finding per remote address, not one per local port; a closing socket a
// process still holds is its own finding, with that process.
func TestEvaluateClosedSockets(t *testing.T) {
	as := []Adapter{{Name: "eth0", Kind: KindEthernet, Addrs: tPrefixes("198.51.100.5/24")}}
	var ss []Socket
	for port := uint16(40000); port < 40200; port++ {
		ss = append(ss, Socket{Proto: "tcp", Local: netip.AddrPortFrom(tAddr("198.51.100.5"), port), Remote: tAddrPort("203.0.113.7:443"), State: "TIME_WAIT"})
	}
	ss = append(ss,
		Socket{Proto: "tcp", Local: tAddrPort("198.51.100.5:41000"), Remote: tAddrPort("203.0.113.8:80"), State: "FIN_WAIT2"},
		Socket{Proto: "tcp", Local: tAddrPort("198.51.100.5:41001"), Remote: tAddrPort("203.0.113.9:22"), State: "FIN_WAIT1", PID: 77, Process: "scp"},
		Socket{Proto: "tcp", Local: tAddrPort("198.51.100.5:41002"), Remote: tAddrPort("198.51.100.9:22"), State: "TIME_WAIT"},
	)
	got := Evaluate(Scan{Adapters: as, Sockets: ss}, testPolicy(t, false), false)
	if len(got) != 3 {
		t.Fatalf("findings %v: want 3 (two remotes closed, one held by scp)", got)
	}
	byAddr := map[string]Finding{}
	for _, f := range got {
		byAddr[f.Address] = f
	}
	if f := byAddr["203.0.113.7"]; f.Kind != FindingSocket || !strings.Contains(f.Detail, "sockets closing: 200") {
		t.Errorf("203.0.113.7: %+v, want one socket finding counting 200 sockets", f)
	}
	if f := byAddr["203.0.113.9:22"]; f.PID != 77 || f.Process != "scp" {
		t.Errorf("a closing socket its process holds: %+v, want its own finding with scp", f)
	}
	// More or fewer closing sockets to the same remote keep the ID.
	again := Evaluate(Scan{Adapters: as, Sockets: ss[150:]}, testPolicy(t, false), false)
	for _, f := range again {
		if f.Address == "203.0.113.7" && f.ID != byAddr["203.0.113.7"].ID {
			t.Errorf("the closed-sockets finding changed its ID with the count: %s → %s", byAddr["203.0.113.7"].ID, f.ID)
		}
	}
}

// TestEvaluateStableIDs: one cause keeps its ID across scans whatever its
// state does; another cause gets another ID.
func TestEvaluateStableIDs(t *testing.T) {
	p := testPolicy(t, false)
	id := func(s Scan) string {
		t.Helper()
		fs := Evaluate(s, p, false)
		if len(fs) != 1 {
			t.Fatalf("want one finding, got %v", fs)
		}
		return fs[0].ID
	}
	sock := func(state string, pid int32, remote string) Scan {
		return Scan{Sockets: []Socket{{Proto: "tcp", Local: tAddrPort("198.51.100.5:50000"), Remote: tAddrPort(remote), State: state, PID: pid, Process: "curl"}}}
	}
	base := id(sock("SYN_SENT", 42, "203.0.113.7:443"))
	if got := id(sock("ESTABLISHED", 42, "203.0.113.7:443")); got != base {
		t.Errorf("state change changed the ID: %s → %s", base, got)
	}
	s := sock("ESTABLISHED", 42, "203.0.113.7:443")
	s.Sockets[0].Process, s.Sockets[0].User = "", "" // the process exited before the lookup
	if got := id(s); got != base {
		t.Errorf("a lost process name changed the ID: %s → %s", base, got)
	}
	if got := id(sock("ESTABLISHED", 43, "203.0.113.7:443")); got == base {
		t.Error("another PID kept the ID")
	}
	if got := id(sock("ESTABLISHED", 42, "203.0.113.8:443")); got == base {
		t.Error("another remote kept the ID")
	}
	route := func(gw string) Scan {
		return Scan{Routes: []Route{{Dst: tPrefix("0.0.0.0/0"), Gateway: tAddr(gw), Interface: "eth0", Table: "main"}}}
	}
	if a, b := id(route("198.51.100.1")), id(route("198.51.100.1")); a != b {
		t.Errorf("the same route changed its ID: %s, %s", a, b)
	}
	if id(route("198.51.100.1")) == id(route("198.51.100.2")) {
		t.Error("another gateway kept the route's ID")
	}
	wl := func(up bool) Scan { return Scan{Adapters: []Adapter{{Name: "wlan0", Kind: KindWireless, Up: up}}} }
	if id(wl(false)) != id(wl(true)) {
		t.Error("a wireless adapter going up changed its ID")
	}
}

// FuzzEvaluate feeds Evaluate scans built from arbitrary text (what does
// not parse becomes a zero value, as a platform bug would give): it must
// not panic, must be deterministic, must return unique, sorted IDs, and
// without a policy only the kinds that need none.
func FuzzEvaluate(f *testing.F) {
	f.Add("0.0.0.0/0", "main", "eth0", "203.0.113.5/24", "wireless", "tcp", "198.51.100.5:1", "203.0.113.7:443", "ESTABLISHED", "8.8.8.8", true)
	f.Add("::ffff:203.0.113.0/120", "local", "", "::ffff:198.51.100.5/104", "", "udp", "[::]:53", "", "", "fe80::1%eth0", false)
	f.Add("198.51.100.0/24", "255", "veth0", "2001:db8:1::5/64", "usb", "TCP", "0.0.0.0:22", "0.0.0.0:0", "LISTEN", "127.0.0.53", false)
	pols := map[bool]*netpolicy.Policy{false: testPolicy(f, false), true: testPolicy(f, true)}
	f.Fuzz(func(t *testing.T, dst, table, dev, adAddr, kind, proto, local, remote, state, dns string, enforced bool) {
		d, _ := netip.ParsePrefix(dst)
		aa, _ := netip.ParsePrefix(adAddr)
		l, _ := netip.ParseAddrPort(local)
		r, _ := netip.ParseAddrPort(remote)
		ds, _ := netip.ParseAddr(dns)
		s := Scan{
			Adapters: []Adapter{{Name: dev, Kind: kind, Addrs: []netip.Prefix{aa}}},
			Routes:   []Route{{Dst: d, Interface: dev, Table: table}, {Dst: d, Gateway: ds, Interface: dev, Table: table}},
			Sockets:  []Socket{{Proto: proto, Local: l, Remote: r, State: state, PID: 1}, {Proto: proto, Local: l, State: state}},
			DNS:      []DNSServer{{Addr: ds, Source: table}},
		}
		for _, p := range []*netpolicy.Policy{pols[enforced], nil} {
			got := Evaluate(s, p, enforced)
			if !slices.Equal(got, Evaluate(s, p, enforced)) {
				t.Fatal("not deterministic")
			}
			seen := make(map[string]bool)
			for i, f := range got {
				if seen[f.ID] || !strings.HasPrefix(f.ID, f.Kind+"-") {
					t.Fatalf("bad or repeated ID %q (%s)", f.ID, f.Kind)
				}
				seen[f.ID] = true
				if i > 0 && got[i-1].Kind+" "+got[i-1].ID > f.Kind+" "+f.ID {
					t.Fatal("not sorted")
				}
				if p == nil {
					switch f.Kind {
					case FindingWireless, FindingUSBAdapter, FindingBluetoothAdapter, FindingUnknownInterface, FindingScanError:
					default:
						t.Fatalf("finding %s %q without a policy", f.Kind, f.Detail)
					}
				}
			}
		}
	})
}

// BenchmarkEvaluate judges a scan of 5,000 sockets, 50 routes and 10
// adapters: "isolated" (every socket inside the policy, listeners on
// loopback) and "half_outside" (2,500 connections outside the policy and
// 500 listeners: 3,000 findings).
func BenchmarkEvaluate(b *testing.B) {
	p := testPolicy(b, false)
	for _, outside := range []bool{false, true} {
		name := "isolated"
		if outside {
			name = "half_outside"
		}
		s := evalBenchScan(5000, outside)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n = len(Evaluate(s, p, false))
			}
			b.ReportMetric(float64(n), "findings")
		})
	}
}

// evalBenchScan is a scan of n sockets; with outside, half of them
// connect outside the policy and a tenth listen on the wildcard address.
func evalBenchScan(n int, outside bool) Scan {
	var s Scan
	for i := range 10 {
		s.Adapters = append(s.Adapters, Adapter{Name: fmt.Sprintf("eth%d", i), Kind: KindEthernet, Up: true,
			Addrs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), 24)}})
	}
	for i := range 50 {
		s.Routes = append(s.Routes, Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i * 4)}), 30), Interface: "eth0", Table: "main"})
	}
	for i := range n {
		local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i%10 + 1)}), uint16(30000+i))
		sk := Socket{Proto: "tcp", Local: local, State: "ESTABLISHED", PID: int32(1000 + i%200), Process: "proc", User: "user"}
		switch {
		case i%10 == 0 && outside:
			sk.State, sk.Local = "LISTEN", netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(1000+i))
		case i%10 == 0:
			sk.State, sk.Local = "LISTEN", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(1000+i))
		case i%2 == 0 || !outside:
			sk.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), 443)
		default:
			sk.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 250)}), 443)
		}
		s.Sockets = append(s.Sockets, sk)
	}
	return s
}
