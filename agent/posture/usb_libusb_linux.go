//go:build linux && cgo

package posture

// #include <malloc.h>
import "C"

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/gousb"
	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func newPlatformUSBLister() USBLister {
	return &libusbLister{root: sysfsUSBRoot, strings: map[libusbKey]usbStrings{}}
}

// libusbLister lists USB devices through libusb (gousb). Descriptors come
// from libusb's cached copies without opening anything. Manufacturer,
// product and serial strings need the device opened (which wakes a
// suspended device and needs root), so they are read once per attached
// device and cached until it goes away; a device that cannot be opened
// simply has no strings.
//
// libusb is initialised only when the set of devices changed: the kernel's
// sysfs directory of USB devices (names and device numbers, a new number
// at every attach) is compared with the one of the last enumeration, and
// an unchanged set is answered from that enumeration. An idle agent so
// starts no libusb thread, and the C heap libusb used is given back to the
// system after each enumeration (malloc_trim).
type libusbLister struct {
	root string // sysfs USB devices, for the change check

	mu      sync.Mutex
	strings map[libusbKey]usbStrings
	// set and last are the sysfs device set of the last enumeration
	// without error, and its result.
	set  string
	last []*mnguardv1.UsbDevice
	// enumerations counts libusb initialisations (tests).
	enumerations int
}

// libusbKey identifies one attachment of a device: the kernel gives a newly
// attached device a new address.
type libusbKey struct {
	bus, address    int
	vendor, product gousb.ID
}

type usbStrings struct {
	manufacturer, product, serial string
}

func keyOf(d *gousb.DeviceDesc) libusbKey {
	return libusbKey{bus: d.Bus, address: d.Address, vendor: d.Vendor, product: d.Product}
}

// newUSBContext initialises libusb. gousb panics when libusb_init fails
// (no usbfs, no permission to read it), which must not take the agent down.
func newUSBContext() (c *gousb.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("libusb unavailable: %v", r)
		}
	}()
	return gousb.NewContext(), nil
}

// deviceSet is the sysfs set of USB devices: each device's name and
// device number. A device unplugged while it is read still changes it.
func deviceSet(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, e := range entries {
		if strings.Contains(e.Name(), ":") {
			continue // an interface
		}
		n, _ := os.ReadFile(filepath.Join(root, e.Name(), "devnum"))
		b.WriteString(e.Name())
		b.WriteByte('=')
		b.Write(n)
	}
	return b.String()
}

func (l *libusbLister) ListUSB(ctx context.Context) ([]*mnguardv1.UsbDevice, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	set := deviceSet(l.root)
	if l.last != nil && set == l.set {
		return cloneUSB(l.last), nil
	}
	out, err := l.enumerate(ctx)
	if err == nil {
		l.set, l.last = set, cloneUSB(out)
	} else {
		l.set, l.last = "", nil
	}
	return out, err
}

// enumerate lists the devices through a libusb context of its own.
func (l *libusbLister) enumerate(ctx context.Context) ([]*mnguardv1.UsbDevice, error) {
	l.enumerations++
	uc, err := newUSBContext()
	if err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
	defer C.malloc_trim(0)
	defer uc.Close()

	var descs []*gousb.DeviceDesc
	_, enumErr := uc.OpenDevices(func(d *gousb.DeviceDesc) bool {
		descs = append(descs, d)
		return false
	})
	if enumErr != nil {
		// The list is incomplete; report what was seen with the error.
		enumErr = fmt.Errorf("usb: enumerate: %w", enumErr)
	}

	present := make(map[libusbKey]bool, len(descs))
	need := map[libusbKey]bool{}
	for _, d := range descs {
		k := keyOf(d)
		present[k] = true
		if _, ok := l.strings[k]; !ok {
			need[k] = true
		}
	}
	for k := range l.strings {
		if !present[k] {
			delete(l.strings, k)
		}
	}
	if len(need) > 0 {
		l.readStrings(ctx, uc, need)
	}

	out := make([]*mnguardv1.UsbDevice, 0, len(descs))
	for _, d := range descs {
		out = append(out, usbDeviceFromDesc(d, l.strings[keyOf(d)]))
	}
	return out, enumErr
}

// readStrings opens the devices in need and caches their strings. Open and
// read errors (permission, device gone, stalled descriptor request) leave
// strings empty: they are descriptive, not what identifies a device.
func (l *libusbLister) readStrings(ctx context.Context, uc *gousb.Context, need map[libusbKey]bool) {
	devs, _ := uc.OpenDevices(func(d *gousb.DeviceDesc) bool {
		return need[keyOf(d)]
	})
	for _, dev := range devs {
		k := keyOf(dev.Desc)
		var s usbStrings
		if ctx.Err() == nil {
			s.manufacturer, _ = dev.Manufacturer()
			s.product, _ = dev.Product()
			s.serial, _ = dev.SerialNumber()
			l.strings[k] = s
		}
		dev.Close()
	}
	if ctx.Err() != nil {
		return
	}
	// Remember devices that could not be opened, so we do not retry
	// every snapshot; they get another chance when they are re-attached.
	for k := range need {
		if _, ok := l.strings[k]; !ok {
			l.strings[k] = usbStrings{}
		}
	}
}

// usbDeviceFromDesc is the inventory entry of a device, with the
// interfaces of every configuration (most devices have one).
func usbDeviceFromDesc(d *gousb.DeviceDesc, s usbStrings) *mnguardv1.UsbDevice {
	out := &mnguardv1.UsbDevice{
		Bus:          uint32(max(d.Bus, 0)),
		Address:      uint32(max(d.Address, 0)),
		VendorId:     fmt.Sprintf("%04x", uint16(d.Vendor)),
		ProductId:    fmt.Sprintf("%04x", uint16(d.Product)),
		Serial:       s.serial,
		Manufacturer: s.manufacturer,
		Product:      s.product,
		DeviceClass:  uint32(d.Class),
	}
	for _, cfg := range d.Configs {
		for _, in := range cfg.Interfaces {
			for _, alt := range in.AltSettings {
				out.Interfaces = append(out.Interfaces, &mnguardv1.UsbInterface{
					Number:   uint32(max(alt.Number, 0)),
					Class:    uint32(alt.Class),
					Subclass: uint32(alt.SubClass),
					Protocol: uint32(alt.Protocol),
				})
			}
		}
	}
	// Collect names the classes, sorts and deduplicates the interfaces.
	return out
}

// cloneUSB copies a list, so that callers may change what they get.
func cloneUSB(ds []*mnguardv1.UsbDevice) []*mnguardv1.UsbDevice {
	out := make([]*mnguardv1.UsbDevice, len(ds))
	for i, d := range ds {
		out[i] = proto.Clone(d).(*mnguardv1.UsbDevice)
	}
	return out
}
