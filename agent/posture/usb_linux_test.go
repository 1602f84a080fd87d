//go:build linux && cgo

package posture

import (
	"testing"
)

// TestLibusbLister runs the real libusb lister. The build machines have no
// USB bus: libusb initialises and finds nothing, which must not be an error.
func TestLibusbLister(t *testing.T) {
	l := newPlatformUSBLister()
	for range 2 { // the second call runs on the string cache
		devs, err := l.ListUSB(t.Context())
		if err != nil {
			t.Fatalf("ListUSB: %v", err)
		}
		t.Logf("%d USB devices", len(devs))
		for _, d := range devs {
			if !isHexID(d.GetVendorId(), 4) || d.GetVendorId() == "" || d.GetBus() == 0 {
				t.Errorf("device %v: want bus and vendor id set", d)
			}
		}
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
