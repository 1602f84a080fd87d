package posture

// These tests call the real Windows APIs: SetupAPI for USB, and gopsutil's
// Windows readers (registry, IP Helper, WMI) for the rest of the posture.
// make wine-test runs them under Wine (scripts/wine/), where SetupAPI has no
// USB device nodes at all.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/mnguard/mnguard/internal/testenv"
)

func TestSetupAPILister(t *testing.T) {
	wine := testenv.WineVersion()
	l := newPlatformUSBLister()
	if _, ok := l.(setupAPILister); !ok {
		t.Fatalf("platform lister is %T, want setupAPILister", l)
	}
	devs, err := l.ListUSB(t.Context())
	if err != nil {
		t.Fatalf("ListUSB: %v", err)
	}
	t.Logf("%d USB devices (Wine %q)", len(devs), wine)
	if wine != "" && len(devs) != 0 {
		// Wine's SetupAPI knows no USB enumerator: SetupDiEnumDeviceInfo
		// answers ERROR_NO_MORE_ITEMS at index 0, an empty inventory.
		t.Errorf("ListUSB under Wine = %v, want no devices", devs)
	}
	for _, d := range devs {
		if !isHexID(d.GetVendorId(), 4) || !isHexID(d.GetProductId(), 4) {
			t.Errorf("device %v: want 4-digit hex vendor and product ids", d)
		}
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.ListUSB(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("ListUSB with a canceled context: %v, want context.Canceled", err)
	}
}

// failedSources is a slog handler that records the sources Collect reports
// as failed.
type failedSources struct{ buf bytes.Buffer }

func (f *failedSources) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&f.buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func (f *failedSources) sources(t *testing.T) map[string]string {
	t.Helper()
	got := map[string]string{}
	dec := json.NewDecoder(&f.buf)
	for dec.More() {
		var rec struct{ Msg, Source, Error string }
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("log record: %v", err)
		}
		if rec.Msg == "posture: source failed" {
			got[rec.Source] = rec.Error
		}
	}
	return got
}

func TestCollectWindows(t *testing.T) {
	wine := testenv.WineVersion()
	var failed failedSources
	c := &Collector{AgentVersion: "test", Logger: failed.logger()}
	p, err := c.Collect(t.Context())
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	t.Logf("Wine %q: host %v; %d CPUs %q; %d bytes; %d interfaces", wine, p.GetHost(), p.GetCpuCount(), p.GetCpuModel(), p.GetMemoryTotalBytes(), len(p.GetInterfaces()))

	// Every source reads, except under Wine the CPU model: gopsutil reads
	// it through WMI (Win32_Processor via the WbemScripting IDispatch
	// interface), and Wine 8.0's wbemdisp answers E_NOTIMPL for every
	// property read that way, which the wmi package reports as
	// "cannot load field "MaxClockSpeed" ... no such struct field".
	wantFailed := []string{}
	if wine != "" {
		wantFailed = []string{"cpu model"}
	}
	got := failed.sources(t)
	if !slices.Equal(slices.Sorted(maps.Keys(got)), wantFailed) {
		t.Errorf("failed sources = %v, want %q", got, wantFailed)
	}
	if wine == "" && p.GetCpuModel() == "" {
		t.Error("cpu model empty")
	}

	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	h := p.GetHost()
	if h.GetHostname() != hostname || h.GetOs() != "windows" || h.GetAgentVersion() != "test" {
		t.Errorf("host = %v, want hostname %q, os windows, agent version test", h, hostname)
	}
	if h.GetPlatform() == "" || h.GetKernelVersion() == "" || h.GetArch() != "x86_64" || h.GetMachineId() == "" {
		t.Errorf("host = %v, want platform, kernel version, arch x86_64 and machine id (MachineGuid)", h)
	}
	if p.GetCpuCount() == 0 || p.GetMemoryTotalBytes() == 0 || p.GetBootTime() == nil {
		t.Errorf("cpu count %d, memory %d, boot time %v: want all set", p.GetCpuCount(), p.GetMemoryTotalBytes(), p.GetBootTime())
	}
	if p.GetUsbInventoryError() != "" {
		t.Errorf("usb_inventory_error = %q, want empty", p.GetUsbInventoryError())
	}

	// Windows lists its loopback as "Loopback Pseudo-Interface 1", Wine
	// as the host's "lo"; both flag it and give it 127.0.0.1/8.
	var loopback bool
	for _, ni := range p.GetInterfaces() {
		if slices.Contains(ni.GetFlags(), "loopback") && slices.Contains(ni.GetAddrs(), "127.0.0.1/8") {
			loopback = true
		}
	}
	if !loopback {
		t.Errorf("interfaces = %v, want a loopback one with 127.0.0.1/8", p.GetInterfaces())
	}
}
