//go:build linux && cgo

package posture

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLibusbLister runs the real libusb lister (gousb). The build machines
// have no USB bus: libusb initialises and finds nothing, which must not be
// an error. libusb is initialised again only when the kernel's set of USB
// devices changed.
func TestLibusbLister(t *testing.T) {
	root := t.TempDir()
	l := newPlatformUSBLister().(*libusbLister)
	l.root = root
	list := func() {
		t.Helper()
		devs, err := l.ListUSB(t.Context())
		if err != nil {
			t.Fatalf("ListUSB: %v", err)
		}
		for _, d := range devs {
			if !isHexID(d.GetVendorId(), 4) || d.GetBus() == 0 {
				t.Errorf("device %v: want bus and vendor id set", d)
			}
		}
	}
	list()
	list()
	if l.enumerations != 1 {
		t.Errorf("%d libusb enumerations for an unchanged device set, want 1", l.enumerations)
	}
	// A device attached (sysfs "1-1", device number 5), then the same
	// port re-attached (a new number): each is a new enumeration.
	dev := filepath.Join(root, "1-1")
	if err := os.MkdirAll(filepath.Join(dev, "1-1:1.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "devnum"), []byte("5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	list()
	if err := os.WriteFile(filepath.Join(dev, "devnum"), []byte("6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	list()
	list()
	if l.enumerations != 3 {
		t.Errorf("%d libusb enumerations after two attaches, want 3", l.enumerations)
	}
}
