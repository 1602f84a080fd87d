//go:build !linux && !windows

package posture

import (
	"errors"
	"testing"
)

func TestUnsupportedUSB(t *testing.T) {
	_, err := DefaultUSBLister().ListUSB(t.Context())
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ListUSB error = %v, want one wrapping errors.ErrUnsupported", err)
	}
	p, err := (&Collector{}).Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if p.GetUsbInventoryError() == "" {
		t.Error("usb_inventory_error empty, want the reason there is no inventory")
	}
}
