package api

import (
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func goodPosture(now time.Time) *mnguardv1.Posture {
	return &mnguardv1.Posture{
		CollectedAt: timestamppb.New(now),
		Host:        &mnguardv1.HostFacts{Hostname: "term-01", Os: "linux"},
		Interfaces:  []*mnguardv1.NetworkInterface{{Name: "eth0", Addrs: []string{"192.0.2.10/24", "fe80::1/64"}, Flags: []string{"up"}}},
		UsbDevices: []*mnguardv1.UsbDevice{{VendorId: "0781", ProductId: "5567", Serial: "4C53",
			Interfaces: []*mnguardv1.UsbInterface{{Class: 8, Subclass: 6, Protocol: 0x50, ClassName: "mass-storage"}}}},
	}
}

// goodNetwork is the network section of a terminal with a USB tethering
// phone and a connection outside the policy.
func goodNetwork(now time.Time) *mnguardv1.NetworkPosture {
	return &mnguardv1.NetworkPosture{
		PolicyVersion: "n-1a2b3c4d",
		Adapters: []*mnguardv1.NetworkAdapter{
			{Name: "eth0", Kind: "ethernet", Reason: "pci ancestor", HardwareAddr: "52:54:00:12:34:56", Addrs: []string{"198.51.100.10/24"}, Up: true, Driver: "e1000e"},
			{Name: "usb0", Kind: "usb", Reason: "usb ancestor 1-2, interface class e0/01/03 (RNDIS)", Addrs: []string{"192.0.2.129/25"}, Up: true,
				Driver: "rndis_host", VendorId: "04e8", ProductId: "6863", State: "deauthorized"},
		},
		Routes:     []*mnguardv1.NetworkRoute{{Destination: "0.0.0.0/0", Gateway: "192.0.2.130", Interface: "usb0", Table: "main"}},
		DnsServers: []*mnguardv1.DnsServer{{Address: "192.0.2.130", Source: "/etc/resolv.conf"}},
		Findings: []*mnguardv1.NetworkFinding{{Id: "socket:tcp:203.0.113.7:443", Kind: "socket", Detail: "tcp 198.51.100.10:50312 → 203.0.113.7:443 established",
			Process: "curl", Pid: 4242, User: "tanaka", Address: "203.0.113.7:443", FirstSeen: timestamppb.New(now)}},
		Enforcement:  &mnguardv1.NetworkEnforcement{Requested: true, InPlace: true, Mechanism: "nftables table inet mnguard", Repairs: 1, LastRepair: timestamppb.New(now)},
		LastScan:     timestamppb.New(now),
		SocketsTotal: 12,
	}
}

func TestValidatePosture(t *testing.T) {
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		mut  func(p *mnguardv1.Posture)
		want string // "" means valid
	}{
		{"valid", func(*mnguardv1.Posture) {}, ""},
		{"no time", func(p *mnguardv1.Posture) { p.CollectedAt = nil }, "posture.collected_at: missing"},
		{"invalid time", func(p *mnguardv1.Posture) { p.CollectedAt = &timestamppb.Timestamp{Nanos: -1} }, "posture.collected_at"},
		{"far future", func(p *mnguardv1.Posture) { p.CollectedAt = timestamppb.New(now.Add(48 * time.Hour)) }, "in the future"},
		{"no host", func(p *mnguardv1.Posture) { p.Host = nil }, "posture.host: missing"},
		{"empty hostname", func(p *mnguardv1.Posture) { p.Host.Hostname = "" }, "host.hostname: empty"},
		{"long hostname", func(p *mnguardv1.Posture) { p.Host.Hostname = strings.Repeat("h", 300) }, "longer than"},
		{"newline in platform", func(p *mnguardv1.Posture) { p.Host.Platform = "deb\nian" }, "control character"},
		{"bad cidr", func(p *mnguardv1.Posture) { p.Interfaces[0].Addrs[0] = "192.0.2.300/24" }, "CIDR"},
		{"too many interfaces", func(p *mnguardv1.Posture) {
			for range maxInterfaces {
				p.Interfaces = append(p.Interfaces, &mnguardv1.NetworkInterface{Name: "x"})
			}
		}, "interfaces"},
		{"upper-case vendor", func(p *mnguardv1.Posture) { p.UsbDevices[0].VendorId = "0A5C" }, "vendor_id"},
		{"class not a byte", func(p *mnguardv1.Posture) { p.UsbDevices[0].Interfaces[0].Class = 256 }, "bytes"},
		{"media ok", func(p *mnguardv1.Posture) {
			p.Media = &mnguardv1.MediaPosture{Mode: "enforce", Healthy: true, Devices: []*mnguardv1.RemovableDevice{
				{Name: "sdb", Bus: "usb", VendorId: "0781", ProductId: "5567", Serial: "4C53", State: "read-only", Partitions: []string{"sdb1"}},
				{Name: "loop3", Bus: "test", VendorId: "0000", ProductId: "0000", Serial: "stick-a.img", State: "read-only"},
				{Name: "sr0", Bus: "optical", State: "read-only"},
			}}
		}, ""},
		{"media bad mode", func(p *mnguardv1.Posture) { p.Media = &mnguardv1.MediaPosture{Mode: "off"} }, "posture.media.mode"},
		{"media bad state", func(p *mnguardv1.Posture) {
			p.Media = &mnguardv1.MediaPosture{Mode: "enforce", Devices: []*mnguardv1.RemovableDevice{{Name: "sdb", Bus: "usb", State: "fine"}}}
		}, "state"},
		{"media device without name", func(p *mnguardv1.Posture) {
			p.Media = &mnguardv1.MediaPosture{Mode: "enforce", Devices: []*mnguardv1.RemovableDevice{{Bus: "usb"}}}
		}, "name: empty"},
		{"media bad vendor", func(p *mnguardv1.Posture) {
			p.Media = &mnguardv1.MediaPosture{Mode: "enforce", Devices: []*mnguardv1.RemovableDevice{{Name: "sdb", Bus: "usb", VendorId: "XYZW"}}}
		}, "vendor_id"},
		{"long usb error", func(p *mnguardv1.Posture) { p.UsbInventoryError = strings.Repeat("e", 5000) }, "usb_inventory_error"},
		{"network ok", func(p *mnguardv1.Posture) { p.Network = goodNetwork(now) }, ""},
		{"network too many adapters", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			for range maxNetAdapters {
				p.Network.Adapters = append(p.Network.Adapters, &mnguardv1.NetworkAdapter{Name: "x", Kind: "virtual"})
			}
		}, "posture.network.adapters: 258 entries, at most 256"},
		{"network too many routes", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			for range maxNetRoutes {
				p.Network.Routes = append(p.Network.Routes, &mnguardv1.NetworkRoute{Destination: "198.51.100.0/24"})
			}
		}, "posture.network.routes: 4097 entries, at most 4096"},
		{"network too many findings", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			for range maxNetFindings {
				p.Network.Findings = append(p.Network.Findings, &mnguardv1.NetworkFinding{Kind: "socket"})
			}
		}, "posture.network.findings: 1025 entries, at most 1024"},
		{"network too many dns servers", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			for range maxNetDNSServers {
				p.Network.DnsServers = append(p.Network.DnsServers, &mnguardv1.DnsServer{Address: "192.0.2.53"})
			}
		}, "posture.network.dns_servers: 257 entries"},
		{"network long finding detail", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Findings[0].Detail = strings.Repeat("d", maxNetString+1)
		}, "posture.network.findings[0].detail: longer than 512 bytes"},
		{"network escape in process", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Findings[0].Process = "curl\x1b[2J"
		}, "posture.network.findings[0].process: contains control character"},
		{"network finding without kind", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Findings[0].Kind = ""
		}, "posture.network.findings[0].kind: empty"},
		{"network adapter without name", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Adapters[1].Name = ""
		}, "posture.network.adapters[1].name: empty"},
		{"network adapter bad vendor", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Adapters[1].VendorId = "04E8"
		}, "posture.network.adapters[1]: vendor_id"},
		{"network adapter too many addrs", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			for range maxAddrsPerIface + 1 {
				p.Network.Adapters[0].Addrs = append(p.Network.Adapters[0].Addrs, "192.0.2.1/24")
			}
		}, "posture.network.adapters[0].addrs"},
		{"network long route", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Routes[0].Interface = strings.Repeat("i", 600)
		}, "posture.network.routes[0].interface"},
		{"network bad first_seen", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Findings[0].FirstSeen = &timestamppb.Timestamp{Nanos: -1}
		}, "posture.network.findings[0].first_seen"},
		{"network long policy version", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.PolicyVersion = strings.Repeat("n", 65)
		}, "posture.network.policy_version"},
		{"network too many scan errors", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			for range maxNetScanErrors + 1 {
				p.Network.ScanErrors = append(p.Network.ScanErrors, "sockets: permission denied")
			}
		}, "posture.network.scan_errors"},
		{"network long enforcement detail", func(p *mnguardv1.Posture) {
			p.Network = goodNetwork(now)
			p.Network.Enforcement.Detail = strings.Repeat("e", 513)
		}, "posture.network.enforcement.detail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := goodPosture(now)
			tt.mut(p)
			err := ValidatePosture(p, now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid posture refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateEvents(t *testing.T) {
	now := time.Now()
	e := func(seq uint64, typ string) *mnguardv1.Event {
		return &mnguardv1.Event{Seq: seq, Time: timestamppb.New(now), Type: typ, Severity: mnguardv1.Severity_SEVERITY_INFO}
	}
	tests := []struct {
		name string
		evs  []*mnguardv1.Event
		want string
	}{
		{"valid", []*mnguardv1.Event{e(1, "agent.start"), e(2, "media.write_blocked")}, ""},
		{"seq zero", []*mnguardv1.Event{e(0, "agent.start")}, "at least 1"},
		{"seq twice", []*mnguardv1.Event{e(3, "a.b"), e(3, "a.c")}, "twice"},
		{"no time", []*mnguardv1.Event{{Seq: 1, Type: "a.b"}}, "time: missing"},
		{"upper type", []*mnguardv1.Event{e(1, "Agent.Start")}, "event type"},
		{"unknown severity", []*mnguardv1.Event{{Seq: 1, Time: timestamppb.New(now), Type: "a.b", Severity: 42}}, "severity"},
		{"too many", func() []*mnguardv1.Event {
			var evs []*mnguardv1.Event
			for i := range maxEventsPerReport + 1 {
				evs = append(evs, e(uint64(i+1), "a.b"))
			}
			return evs
		}(), "at most"},
		{"control char in attribute", []*mnguardv1.Event{{Seq: 1, Time: timestamppb.New(now), Type: "a.b", Attributes: map[string]string{"k": "v\x00"}}}, "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateEvents(tt.evs, now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid events refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// FuzzReport feeds arbitrary bytes through the path a Report takes before
// the store: unmarshal, validate. It must never panic, and whatever it
// accepts must marshal again (what the store keeps).
func FuzzReport(f *testing.F) {
	now := time.Now()
	good, _ := proto.Marshal(&mnguardv1.ReportRequest{Posture: goodPosture(now), Events: []*mnguardv1.Event{{Seq: 1, Time: timestamppb.New(now), Type: "agent.start"}}})
	f.Add(good)
	withNet := goodPosture(now)
	withNet.Network = goodNetwork(now)
	goodNet, _ := proto.Marshal(&mnguardv1.ReportRequest{Posture: withNet})
	f.Add(goodNet)
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req mnguardv1.ReportRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		if req.GetPosture() != nil {
			if err := ValidatePosture(req.GetPosture(), now); err != nil {
				return
			}
			if _, err := proto.Marshal(req.GetPosture()); err != nil {
				t.Fatalf("accepted posture does not marshal: %v", err)
			}
		}
		if err := ValidateEvents(req.GetEvents(), now); err != nil {
			return
		}
		for _, e := range req.GetEvents() {
			if e.GetSeq() == 0 || e.GetTime() == nil {
				t.Fatalf("accepted event without seq or time: %v", e)
			}
		}
	})
}
