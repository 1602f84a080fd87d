//go:build linux && cgo

package posture

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/gousb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func newPlatformUSBLister() USBLister {
	return &libusbLister{strings: map[libusbKey]usbStrings{}}
}

// libusbLister lists USB devices through libusb. Descriptors come from
// libusb's cached copies without opening anything. Manufacturer, product and
// serial strings need the device opened (which wakes a suspended device and
// needs root), so they are read once per attached device and cached until
// it goes away; a device that cannot be opened simply has no strings.
type libusbLister struct {
	mu      sync.Mutex
	strings map[libusbKey]usbStrings
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

func (l *libusbLister) ListUSB(ctx context.Context) ([]*mnguardv1.UsbDevice, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	uc, err := newUSBContext()
	if err != nil {
		return nil, fmt.Errorf("usb: %w", err)
	}
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
					Number:    uint32(max(alt.Number, 0)),
					Class:     uint32(alt.Class),
					Subclass:  uint32(alt.SubClass),
					Protocol:  uint32(alt.Protocol),
					ClassName: USBClassName(uint32(alt.Class)),
				})
			}
		}
	}
	// Collect sorts and deduplicates the interfaces.
	return out
}
