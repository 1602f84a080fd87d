package posture

import (
	"bytes"
	"github.com/mnguard/mnguard/internal/snapshot"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func samplePosture() *mnguardv1.Posture {
	return &mnguardv1.Posture{
		CollectedAt:      timestamppb.New(time.Date(2025, 4, 1, 9, 0, 0, 0, time.UTC)),
		Host:             &mnguardv1.HostFacts{Hostname: "pc-0142", Os: "linux", MachineId: "3d1219c7-c4c5-404a-aa2d-6a48adfda4"},
		BootTime:         timestamppb.New(time.Date(2025, 4, 1, 8, 0, 0, 0, time.UTC)),
		UptimeSeconds:    3600,
		CpuCount:         4,
		MemoryTotalBytes: 8 << 30,
		Interfaces: []*mnguardv1.NetworkInterface{
			{Name: "eth0", HardwareAddr: "02:00:00:00:00:01", Addrs: []string{"192.0.2.10/24"}, Flags: []string{"up"}, Mtu: 1500},
			{Name: "lo", Addrs: []string{"127.0.0.1/8", "::1/128"}, Flags: []string{"loopback", "up"}, Mtu: 65536},
		},
		AgentVersion:  "1.0.0",
		PolicyVersion: "7",
		UsbDevices: []*mnguardv1.UsbDevice{
			{Bus: 1, Address: 1, VendorId: "1d6b", ProductId: "0002", DeviceClass: 9},
		},
	}
}

func TestFingerprint(t *testing.T) {
	base := snapshot.Fingerprint(samplePosture())
	if len(base) != 32 {
		t.Fatalf("fingerprint is %d bytes, want 32", len(base))
	}
	for _, tc := range []struct {
		name   string
		change func(p *mnguardv1.Posture)
		same   bool
	}{
		{"unchanged", func(*mnguardv1.Posture) {}, true},
		{"uptime", func(p *mnguardv1.Posture) { p.UptimeSeconds += 60 }, true},
		{"collected_at", func(p *mnguardv1.Posture) { p.CollectedAt = timestamppb.Now() }, true},
		{"collected_at unset", func(p *mnguardv1.Posture) { p.CollectedAt = nil }, true},
		{"interface address", func(p *mnguardv1.Posture) { p.Interfaces[0].Addrs = []string{"192.0.2.11/24"} }, false},
		{"interface added", func(p *mnguardv1.Posture) {
			p.Interfaces = append(p.Interfaces, &mnguardv1.NetworkInterface{Name: "wlan0"})
		}, false},
		{"interface down", func(p *mnguardv1.Posture) { p.Interfaces[0].Flags = nil }, false},
		{"usb attached", func(p *mnguardv1.Posture) {
			p.UsbDevices = append(p.UsbDevices, &mnguardv1.UsbDevice{Bus: 1, Address: 4, VendorId: "0781", ProductId: "5567"})
		}, false},
		{"usb serial", func(p *mnguardv1.Posture) { p.UsbDevices[0].Serial = "X" }, false},
		{"usb inventory error", func(p *mnguardv1.Posture) { p.UsbInventoryError = "libusb unavailable" }, false},
		{"reboot", func(p *mnguardv1.Posture) { p.BootTime = timestamppb.New(time.Date(2025, 4, 2, 8, 0, 0, 0, time.UTC)) }, false},
		{"policy", func(p *mnguardv1.Posture) { p.PolicyVersion = "8" }, false},
		{"hostname", func(p *mnguardv1.Posture) { p.Host.Hostname = "pc-0143" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := samplePosture()
			tc.change(p)
			before := proto.Clone(p)
			got := snapshot.Fingerprint(p)
			if same := bytes.Equal(got, base); same != tc.same {
				t.Errorf("fingerprint equal to base: %v, want %v", same, tc.same)
			}
			if !proto.Equal(p, before) {
				t.Error("Fingerprint modified its argument")
			}
		})
	}
}

func TestFingerprintDoesNotModify(t *testing.T) {
	p := samplePosture()
	snapshot.Fingerprint(p)
	if !proto.Equal(p, samplePosture()) {
		t.Error("Fingerprint modified its argument")
	}
}

func TestFingerprintCollected(t *testing.T) {
	// Two collections of this machine a moment apart are the same posture.
	c := &Collector{USB: fakeUSB{}}
	p1, err := c.Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	p2, err := c.Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshot.Fingerprint(p1), snapshot.Fingerprint(p2)) {
		p1.CollectedAt, p2.CollectedAt, p1.UptimeSeconds, p2.UptimeSeconds = nil, nil, 0, 0
		t.Errorf("fingerprints of consecutive snapshots differ:\n%v\n%v", p1, p2)
	}
}
