//go:build linux

package posture

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
)

// TestSysfsUSBLister runs the real lister on the machine's /sys. The build
// machines have no USB bus (/sys/bus/usb/devices is missing): that is no
// devices, not an error.
func TestSysfsUSBLister(t *testing.T) {
	devs, err := sysfsUSB{root: sysfsUSBRoot}.ListUSB(t.Context())
	if err != nil {
		t.Fatalf("ListUSB: %v", err)
	}
	t.Logf("%d USB devices", len(devs))
	for _, d := range devs {
		if !isHexID(d.GetVendorId(), 4) || d.GetBus() == 0 {
			t.Errorf("device %v: want bus and vendor id set", d)
		}
	}
}

// writeTree writes path → content under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSysfsUSBTree reads a copy of what the kernel shows in
// /sys/bus/usb/devices for a root hub and a USB stick (attribute values as
// the kernel formats them, from a real machine): devices with their
// strings, interfaces of the active configuration, interface entries
// skipped as devices, and a device whose attributes are damaged reported
// as an error while the others are kept.
func TestSysfsUSBTree(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"usb1/busnum": "1\n", "usb1/devnum": "1\n", "usb1/idVendor": "1d6b\n", "usb1/idProduct": "0002\n",
		"usb1/bDeviceClass": "09\n", "usb1/manufacturer": "Linux 6.1.0-28-amd64 xhci-hcd\n", "usb1/product": "xHCI Host Controller\n",
		"usb1/serial":                   "0000:00:14.0\n",
		"usb1/1-0:1.0/bInterfaceNumber": "00\n", "usb1/1-0:1.0/bInterfaceClass": "09\n",
		"usb1/1-0:1.0/bInterfaceSubClass": "00\n", "usb1/1-0:1.0/bInterfaceProtocol": "00\n",
		"1-0:1.0/bInterfaceClass": "09\n", // the interface's own entry in devices/
		"1-2/busnum":              "1\n", "1-2/devnum": "5\n", "1-2/idVendor": "0781\n", "1-2/idProduct": "5567\n",
		"1-2/bDeviceClass": "00\n", "1-2/manufacturer": " SanDisk\n", "1-2/product": "Cruzer Blade\n",
		"1-2/serial":                   "4C530001230809116354\n",
		"1-2/1-2:1.0/bInterfaceNumber": "00\n", "1-2/1-2:1.0/bInterfaceClass": "08\n",
		"1-2/1-2:1.0/bInterfaceSubClass": "06\n", "1-2/1-2:1.0/bInterfaceProtocol": "50\n",
		"1-3/busnum": "1\n", "1-3/devnum": "6\n", "1-3/idVendor": "zzzz\n", "1-3/idProduct": "0001\n", "1-3/bDeviceClass": "00\n",
	})
	devs, err := sysfsUSB{root: root}.ListUSB(t.Context())
	if err == nil {
		t.Error("a device with a vendor id of zzzz gave no error")
	}
	slices.SortFunc(devs, compareUSBDevice)
	want := []*mnguardv1.UsbDevice{
		{Bus: 1, Address: 1, VendorId: "1d6b", ProductId: "0002", DeviceClass: 9, Serial: "0000:00:14.0",
			Manufacturer: "Linux 6.1.0-28-amd64 xhci-hcd", Product: "xHCI Host Controller",
			Interfaces: []*mnguardv1.UsbInterface{{Class: 9}}},
		{Bus: 1, Address: 5, VendorId: "0781", ProductId: "5567", Serial: "4C530001230809116354",
			Manufacturer: " SanDisk", Product: "Cruzer Blade",
			Interfaces: []*mnguardv1.UsbInterface{{Class: 8, Subclass: 6, Protocol: 0x50}}},
	}
	if len(devs) != len(want) {
		t.Fatalf("got %d devices, want %d: %v", len(devs), len(want), devs)
	}
	for i := range want {
		if !proto.Equal(devs[i], want[i]) {
			t.Errorf("device %d:\n got %v\nwant %v", i, devs[i], want[i])
		}
	}

	devs, err = sysfsUSB{root: filepath.Join(root, "missing")}.ListUSB(t.Context())
	if err != nil || len(devs) != 0 {
		t.Errorf("no USB bus: %v, %v; want nothing and no error", devs, err)
	}
}

func TestCollectDefaultUSB(t *testing.T) {
	p, err := (&Collector{}).Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if p.GetUsbInventoryError() != "" {
		t.Errorf("usb_inventory_error = %q, want empty", p.GetUsbInventoryError())
	}
}

func FuzzSysfsUint(f *testing.F) {
	for _, s := range []string{"0781", "12", " 3", "", "zz", "ffff", "10000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := sysfsUint(s, 16, 16)
		if err == nil && v > 0xffff {
			t.Fatalf("%q: %d does not fit 16 bits", s, v)
		}
	})
}
