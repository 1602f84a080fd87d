package main

import (
	"fmt"
	"strconv"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// posture is a snapshot about the size of a real terminal's (~1 KB
// encoded): host facts, three network interfaces, a mouse and a USB stick.
func posture(host string, i int, uptime uint64, boot time.Time) *mnguardv1.Posture {
	p := &mnguardv1.Posture{
		CollectedAt: timestamppb.Now(),
		Host: &mnguardv1.HostFacts{Hostname: host, Os: "linux", Platform: "debian", PlatformVersion: "12.8",
			KernelVersion: "6.1.0-28-amd64", Arch: "x86_64", AgentVersion: "loadgen"},
		CpuCount:         4,
		UptimeSeconds:    uptime,
		CpuModel:         "Intel(R) Core(TM) i5-10310U CPU @ 1.70GHz",
		MemoryTotalBytes: 16 << 30,
		BootTime:         timestamppb.New(boot),
	}
	for n := range 3 {
		p.Interfaces = append(p.Interfaces, &mnguardv1.NetworkInterface{
			Name: fmt.Sprintf("eth%d", n), HardwareAddr: fmt.Sprintf("52:54:00:%02x:%02x:5%d", byte(i>>8), byte(i), n),
			Addrs: []string{fmt.Sprintf("10.%d.%d.%d/16", 20+n, byte(i>>8), byte(i)), "fe80::5054:ff:fe12:3456/64"},
			Flags: []string{"up", "broadcast", "multicast"}, Mtu: 1500,
		})
	}
	p.UsbDevices = []*mnguardv1.UsbDevice{
		{Bus: 1, Address: 2, VendorId: "046d", ProductId: "c077", Product: "USB Optical Mouse", Interfaces: []*mnguardv1.UsbInterface{{Class: 3, ClassName: "hid"}}},
		{Bus: 1, Address: 3, VendorId: "0781", ProductId: "5567", Serial: "4C53000" + strconv.Itoa(1000000+i), Product: "Cruzer Blade",
			Interfaces: []*mnguardv1.UsbInterface{{Class: 8, Subclass: 6, Protocol: 0x50, ClassName: "mass-storage"}}},
	}
	return p
}

// event is one event of a report: what a terminal sends most (a device
// seen, a write blocked), with a per-terminal sequence number.
func event(seq uint64) *mnguardv1.Event {
	return &mnguardv1.Event{Seq: seq, Time: timestamppb.Now(), Type: "media.write_blocked", Severity: mnguardv1.Severity_SEVERITY_INFO,
		Message: "write to removable disk blocked (loadgen)"}
}
