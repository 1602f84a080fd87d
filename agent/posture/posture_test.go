package posture

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// fakeUSB is a USBLister that returns fixed devices and error.
type fakeUSB struct {
	devs []*mnguardv1.UsbDevice
	err  error
}

func (f fakeUSB) ListUSB(context.Context) ([]*mnguardv1.UsbDevice, error) { return f.devs, f.err }

func TestCollectThisMachine(t *testing.T) {
	now := time.Date(2025, 4, 1, 9, 0, 0, 0, time.UTC)
	c := &Collector{
		AgentVersion:  "1.2.3",
		PolicyVersion: func() string { return "policy-7" },
		USB:           fakeUSB{},
		Now:           func() time.Time { return now },
	}
	p, err := c.Collect(t.Context())
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	want, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GetHost().GetHostname(); got != want {
		t.Errorf("hostname = %q, want %q", got, want)
	}
	if got := p.GetHost().GetOs(); got != runtime.GOOS {
		t.Errorf("os = %q, want %q", got, runtime.GOOS)
	}
	if p.GetHost().GetAgentVersion() != "1.2.3" || p.GetAgentVersion() != "1.2.3" {
		t.Errorf("agent version = %q / %q, want 1.2.3", p.GetHost().GetAgentVersion(), p.GetAgentVersion())
	}
	if p.GetPolicyVersion() != "policy-7" {
		t.Errorf("policy version = %q, want policy-7", p.GetPolicyVersion())
	}
	if !p.GetCollectedAt().AsTime().Equal(now) {
		t.Errorf("collected_at = %v, want %v", p.GetCollectedAt().AsTime(), now)
	}
	if p.GetCpuCount() == 0 {
		t.Error("cpu_count = 0")
	}
	if p.GetMemoryTotalBytes() == 0 {
		t.Error("memory_total_bytes = 0")
	}
	if p.GetBootTime() == nil || p.GetBootTime().AsTime().After(time.Now()) {
		t.Errorf("boot_time = %v, want a time in the past", p.GetBootTime())
	}
	if p.GetHost().GetKernelVersion() == "" || p.GetHost().GetArch() == "" {
		t.Errorf("kernel version %q, arch %q: want both set", p.GetHost().GetKernelVersion(), p.GetHost().GetArch())
	}
	t.Logf("host: %v; cpu %d × %q; boot %v; uptime %ds", p.GetHost(), p.GetCpuCount(), p.GetCpuModel(),
		p.GetBootTime().AsTime(), p.GetUptimeSeconds())

	loopback := false
	for _, ni := range p.GetInterfaces() {
		if slices.Contains(ni.GetAddrs(), "127.0.0.1/8") {
			loopback = true
			if !slices.Contains(ni.GetFlags(), "loopback") {
				t.Errorf("interface %s with 127.0.0.1/8 has flags %v, want loopback among them", ni.GetName(), ni.GetFlags())
			}
		}
		if !slices.IsSorted(ni.GetAddrs()) || !slices.IsSorted(ni.GetFlags()) {
			t.Errorf("interface %s: addrs %v or flags %v not sorted", ni.GetName(), ni.GetAddrs(), ni.GetFlags())
		}
	}
	if !loopback {
		t.Errorf("no interface has 127.0.0.1/8: %v", p.GetInterfaces())
	}
	if !slices.IsSortedFunc(p.GetInterfaces(), func(a, b *mnguardv1.NetworkInterface) int {
		return compareStrings(a.GetName(), b.GetName())
	}) {
		t.Errorf("interfaces not sorted by name: %v", p.GetInterfaces())
	}
	if p.GetUsbInventoryError() != "" {
		t.Errorf("usb_inventory_error = %q, want empty", p.GetUsbInventoryError())
	}
	if _, err := proto.Marshal(p); err != nil {
		t.Errorf("marshal snapshot: %v", err)
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestCollectSortsUSB(t *testing.T) {
	stick := &mnguardv1.UsbDevice{
		Bus: 2, Address: 5, VendorId: "0781", ProductId: "5567", Serial: "4C530001230809116354",
		Interfaces: []*mnguardv1.UsbInterface{{Number: 0, Class: 0x08, Subclass: 0x06, Protocol: 0x50}},
	}
	phone := &mnguardv1.UsbDevice{
		Bus: 1, Address: 9, VendorId: "04e8", ProductId: "6860",
		Interfaces: []*mnguardv1.UsbInterface{
			{Number: 2, Class: 0xff},
			nil,
			{Number: 0, Class: 0x06, Subclass: 0x01, Protocol: 0x01},
			{Number: 0, Class: 0x06, Subclass: 0x01, Protocol: 0x01}, // second alt setting
			{Number: 1, Class: 0x0a},
		},
	}
	hub := &mnguardv1.UsbDevice{Bus: 1, Address: 1, VendorId: "1d6b", ProductId: "0002", DeviceClass: 0x09}
	fake := fakeUSB{devs: []*mnguardv1.UsbDevice{stick, nil, phone, hub}}
	orig := proto.Clone(phone)

	p, err := (&Collector{USB: fake}).Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]uint32
	for _, d := range p.GetUsbDevices() {
		got = append(got, [2]uint32{d.GetBus(), d.GetAddress()})
	}
	if want := [][2]uint32{{1, 1}, {1, 9}, {2, 5}}; !slices.Equal(got, want) {
		t.Errorf("devices (bus, address) = %v, want %v", got, want)
	}
	ph := p.GetUsbDevices()[1]
	var ifs []string
	for _, in := range ph.GetInterfaces() {
		ifs = append(ifs, in.GetClassName())
	}
	if want := []string{"still-image", "cdc-data", "vendor-specific"}; !slices.Equal(ifs, want) {
		t.Errorf("phone interfaces = %v, want %v (sorted by number, duplicates removed)", ifs, want)
	}
	if got := p.GetUsbDevices()[2].GetInterfaces()[0].GetClassName(); got != "mass-storage" {
		t.Errorf("stick class name = %q, want mass-storage", got)
	}
	if !proto.Equal(phone, orig) {
		t.Error("Collect modified the lister's devices")
	}
	if p.GetUsbInventoryError() != "" {
		t.Errorf("usb_inventory_error = %q, want empty", p.GetUsbInventoryError())
	}
}

func TestCollectUSBFailure(t *testing.T) {
	partial := &mnguardv1.UsbDevice{Bus: 1, Address: 3, VendorId: "046d", ProductId: "c52b"}
	fake := fakeUSB{devs: []*mnguardv1.UsbDevice{partial}, err: errors.New("libusb unavailable: LIBUSB_ERROR_OTHER")}
	p, err := (&Collector{USB: fake}).Collect(t.Context())
	if err != nil {
		t.Fatalf("Collect: %v (a failed USB inventory must not fail the snapshot)", err)
	}
	if got, want := p.GetUsbInventoryError(), "libusb unavailable: LIBUSB_ERROR_OTHER"; got != want {
		t.Errorf("usb_inventory_error = %q, want %q", got, want)
	}
	if len(p.GetUsbDevices()) != 1 {
		t.Errorf("usb devices = %v, want the one listed before the failure", p.GetUsbDevices())
	}
	if p.GetHost().GetHostname() == "" {
		t.Error("hostname empty: the rest of the snapshot must still be collected")
	}
}

// flakyUSB fails while err is set.
type flakyUSB struct{ err error }

func (f *flakyUSB) ListUSB(context.Context) ([]*mnguardv1.UsbDevice, error) { return nil, f.err }

func TestCollectLogsFailureChanges(t *testing.T) {
	var buf bytes.Buffer
	usb := &flakyUSB{err: errors.New("libusb unavailable: boom")}
	c := &Collector{USB: usb, Logger: slog.New(slog.NewTextHandler(&buf, nil))}
	collect := func() string {
		t.Helper()
		buf.Reset()
		if _, err := c.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	if got := collect(); !strings.Contains(got, "source failed") || !strings.Contains(got, "boom") {
		t.Errorf("first failure not logged: %q", got)
	}
	if got := collect(); strings.Contains(got, "usb") {
		t.Errorf("same failure logged again: %q", got)
	}
	usb.err = errors.New("libusb unavailable: bang")
	if got := collect(); !strings.Contains(got, "bang") {
		t.Errorf("changed failure not logged: %q", got)
	}
	usb.err = nil
	if got := collect(); !strings.Contains(got, "source recovered") || !strings.Contains(got, "usb inventory") {
		t.Errorf("recovery not logged: %q", got)
	}
}

func TestCollectCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if p, err := (&Collector{USB: fakeUSB{}}).Collect(ctx); !errors.Is(err, context.Canceled) || p != nil {
		t.Errorf("Collect(cancelled) = %v, %v; want nil, context.Canceled", p, err)
	}
}

func TestCollectRepairsUTF8(t *testing.T) {
	fake := fakeUSB{devs: []*mnguardv1.UsbDevice{{
		VendorId: "abcd", ProductId: "0001", Serial: "SN\xff\xfe1", Product: "Stick\xc3",
	}}}
	p, err := (&Collector{USB: fake}).Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	d := p.GetUsbDevices()[0]
	if d.GetSerial() != "SN\uFFFD1" || d.GetProduct() != "Stick\uFFFD" {
		t.Errorf("serial %q, product %q: want invalid bytes replaced", d.GetSerial(), d.GetProduct())
	}
	if _, err := proto.Marshal(p); err != nil {
		t.Errorf("marshal: %v", err)
	}
}

func TestStableBootTime(t *testing.T) {
	var c Collector
	t0 := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		in, want time.Time
	}{
		{t0, t0},
		{t0.Add(time.Second), t0},              // jitter
		{t0.Add(-2 * time.Second), t0},         // jitter
		{t0.Add(time.Hour), t0.Add(time.Hour)}, // reboot
		{t0.Add(time.Hour - time.Second), t0.Add(time.Hour)},
	} {
		if got, ok := c.stableBootTime(tc.in); !ok || !got.Equal(tc.want) {
			t.Errorf("stableBootTime(%v) = %v, %v; want %v", tc.in, got, ok, tc.want)
		}
	}
	if _, ok := c.stableBootTime(time.Time{}); ok {
		t.Error("stableBootTime(zero) reported a boot time")
	}
}

func TestHostFacts(t *testing.T) {
	hf, err := HostFacts(t.Context(), "9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.Hostname()
	if hf.GetHostname() != want || hf.GetOs() != runtime.GOOS || hf.GetAgentVersion() != "9.9.9" {
		t.Errorf("HostFacts = %v; want hostname %q, os %q, agent version 9.9.9", hf, want, runtime.GOOS)
	}
	if runtime.GOOS == "linux" && hf.GetMachineId() != "" {
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil && strings.TrimSpace(string(b)) == hf.GetMachineId() {
			t.Errorf("machine id %q is the boot id", hf.GetMachineId())
		}
	}
}

func TestDefaultUSBListerShared(t *testing.T) {
	if DefaultUSBLister() != DefaultUSBLister() {
		t.Error("DefaultUSBLister returns a new lister each time; its string cache would be lost")
	}
}
