//go:build linux && !cgo

package posture

// Without cgo there is no libusb: the kernel's sysfs copy of the
// descriptors is the inventory.
func newPlatformUSBLister() USBLister { return sysfsUSB{root: sysfsUSBRoot} }
