//go:build linux

package posture

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// sysfsUSBRoot is where the kernel lists USB devices.
const sysfsUSBRoot = "/sys/bus/usb/devices"

// sysfsUSB lists USB devices from sysfs, as lsusb does without libusb (the
// agent's lister in builds without cgo, and its change check with): the
// kernel read every descriptor and string when the device was enumerated,
// so listing opens no device (and wakes no suspended one), needs no cgo,
// no libusb threads and no root. Interfaces are those of the active
// configuration, in their current alternate settings.
type sysfsUSB struct{ root string }

func (l sysfsUSB) ListUSB(ctx context.Context) ([]*mnguardv1.UsbDevice, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
	entries, err := os.ReadDir(l.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no USB bus
	}
	if err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
	var out []*mnguardv1.UsbDevice
	var errs []error
	for _, e := range entries {
		// Devices are "usbN" (root hubs) and "B-P[.P...]"; interfaces
		// have a ':'.
		name := e.Name()
		if strings.Contains(name, ":") {
			continue
		}
		d, err := readUSBDevice(filepath.Join(l.root, name))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // unplugged while we looked
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, d)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("usb: %w", errors.Join(errs...))
	}
	return out, nil
}

func readUSBDevice(dir string) (*mnguardv1.UsbDevice, error) {
	name := filepath.Base(dir)
	attr := func(a string) string {
		b, err := os.ReadFile(filepath.Join(dir, a))
		if err != nil {
			return ""
		}
		return strings.TrimRight(string(b), "\n")
	}
	bus, err1 := sysfsUint(attr("busnum"), 10, 32)
	addr, err2 := sysfsUint(attr("devnum"), 10, 32)
	vendor, err3 := sysfsUint(attr("idVendor"), 16, 16)
	product, err4 := sysfsUint(attr("idProduct"), 16, 16)
	class, err5 := sysfsUint(attr("bDeviceClass"), 16, 8)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
			return nil, serr
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	d := &mnguardv1.UsbDevice{
		Bus: uint32(bus), Address: uint32(addr),
		VendorId: fmt.Sprintf("%04x", vendor), ProductId: fmt.Sprintf("%04x", product),
		Serial: attr("serial"), Manufacturer: attr("manufacturer"), Product: attr("product"),
		DeviceClass: uint32(class),
	}
	ifs, _ := os.ReadDir(dir)
	for _, e := range ifs {
		// "B-P:C.I" ("B-0:C.I" under root hub usbB): an interface of
		// the active configuration.
		if !e.IsDir() || !strings.Contains(e.Name(), ":") {
			continue
		}
		idir := filepath.Join(dir, e.Name())
		iattr := func(a string) uint64 {
			b, err := os.ReadFile(filepath.Join(idir, a))
			if err != nil {
				return 0
			}
			v, _ := sysfsUint(strings.TrimRight(string(b), "\n"), 16, 8)
			return v
		}
		d.Interfaces = append(d.Interfaces, &mnguardv1.UsbInterface{
			Number:   uint32(iattr("bInterfaceNumber")),
			Class:    uint32(iattr("bInterfaceClass")),
			Subclass: uint32(iattr("bInterfaceSubClass")),
			Protocol: uint32(iattr("bInterfaceProtocol")),
		})
	}
	// Collect names the classes, sorts and deduplicates the interfaces.
	return d, nil
}

// sysfsUint parses a numeric sysfs attribute ("0781", "12", " 3") of at
// most bits bits.
func sysfsUint(s string, base, bits int) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("attribute missing or empty")
	}
	return strconv.ParseUint(s, base, bits)
}
