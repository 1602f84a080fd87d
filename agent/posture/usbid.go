package posture

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mnguard/mnguard/agent/usbid"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// usbClassNames names the USB-IF base classes
// (https://www.usb.org/defined-class-codes).
var usbClassNames = map[uint32]string{
	0x01: "audio",
	0x02: "comm",
	0x03: "hid",
	0x05: "physical",
	0x06: "still-image",
	0x07: "printer",
	0x08: "mass-storage",
	0x09: "hub",
	0x0a: "cdc-data",
	0x0b: "smart-card",
	0x0d: "content-security",
	0x0e: "video",
	0x0f: "personal-healthcare",
	0x10: "audio-video",
	0x11: "billboard",
	0x12: "type-c-bridge",
	0xdc: "diagnostic",
	0xe0: "wireless",
	0xef: "misc",
	0xfe: "application",
	0xff: "vendor-specific",
}

// USBClassName returns the short name of a USB base class code, e.g.
// "mass-storage" for 0x08, or "" for class 0 (defined per interface) and
// codes it does not know.
func USBClassName(class uint32) string {
	return usbClassNames[class]
}

// winUSBNode is what SetupAPI reports about one device node of the USB
// enumerator: a device, or an interface (function) of a composite device.
type winUSBNode struct {
	InstanceID    string
	Parent        string // instance ID of the parent node; "" when unknown
	HardwareIDs   []string
	CompatibleIDs []string
	Description   string // bus-reported description, else the INF's
	Manufacturer  string // the INF's manufacturer
}

// usbDevicesFromWindows assembles devices from the device nodes of the USB
// enumerator: interface nodes (MI_xx) become interfaces of their parent
// device, and a device without interface nodes gets one interface, 0, from
// its compatible IDs. Bus and address stay 0: Windows does not expose the
// USB address. The error lists nodes that could not be understood; the
// devices returned are still valid.
func usbDevicesFromWindows(nodes []winUSBNode) ([]*mnguardv1.UsbDevice, error) {
	var errs []error
	type device struct {
		dev    *mnguardv1.UsbDevice
		inst   string
		compat []string
	}
	var devices []*device
	byInstance := map[string]*device{}
	type iface struct {
		node winUSBNode
		id   usbid.ID
	}
	var ifaces []iface

	for _, n := range nodes {
		id, err := usbid.ParseInstanceID(n.InstanceID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if id.Interface >= 0 {
			ifaces = append(ifaces, iface{n, id})
			continue
		}
		d := &mnguardv1.UsbDevice{
			VendorId:     id.VendorID,
			ProductId:    id.ProductID,
			Serial:       id.Serial,
			Manufacturer: n.Manufacturer,
			Product:      n.Description,
		}
		if d.VendorId == "" || d.ProductId == "" {
			// Root hubs carry vendor and product only in their hardware IDs.
			for _, h := range n.HardwareIDs {
				if hid, err := usbid.ParseHardwareID(h); err == nil && hid.VendorID != "" && hid.ProductID != "" {
					d.VendorId, d.ProductId = hid.VendorID, hid.ProductID
					break
				}
			}
		}
		if c, ok := bestClass(n.CompatibleIDs, true); ok {
			d.DeviceClass = uint32(c.Class)
		}
		dd := &device{dev: d, inst: strings.ToUpper(n.InstanceID), compat: n.CompatibleIDs}
		devices = append(devices, dd)
		byInstance[dd.inst] = dd
	}

	for _, in := range ifaces {
		parent := byInstance[strings.ToUpper(in.node.Parent)]
		if parent == nil {
			// Without the parent's instance ID, fall back to the only
			// device with the same vendor and product.
			var match []*device
			for _, d := range devices {
				if d.dev.VendorId == in.id.VendorID && d.dev.ProductId == in.id.ProductID {
					match = append(match, d)
				}
			}
			if len(match) != 1 {
				errs = append(errs, fmt.Errorf("usb interface %q: parent device not found", in.node.InstanceID))
				continue
			}
			parent = match[0]
		}
		parent.dev.Interfaces = append(parent.dev.Interfaces,
			usbInterfaceFromCompatibleIDs(uint32(in.id.Interface), in.node.CompatibleIDs))
	}

	for _, d := range devices {
		if len(d.dev.Interfaces) > 0 {
			continue
		}
		// A single-function device: its compatible IDs carry the class of
		// its one interface (or of the device, when that is not 0).
		if _, ok := bestClass(d.compat, false); ok {
			d.dev.Interfaces = []*mnguardv1.UsbInterface{usbInterfaceFromCompatibleIDs(0, d.compat)}
		}
	}
	out := make([]*mnguardv1.UsbDevice, 0, len(devices))
	for _, d := range devices {
		out = append(out, d.dev)
	}
	return out, errors.Join(errs...)
}

func usbInterfaceFromCompatibleIDs(number uint32, compat []string) *mnguardv1.UsbInterface {
	ui := &mnguardv1.UsbInterface{Number: number}
	if c, ok := bestClass(compat, false); ok {
		ui.Class = uint32(c.Class)
		ui.Subclass = uint32(max(c.SubClass, 0))
		ui.Protocol = uint32(max(c.Protocol, 0))
	}
	ui.ClassName = USBClassName(ui.Class)
	return ui
}

// bestClass returns the most specific class triple among compatible IDs:
// one with class, subclass and protocol over one with fewer. With dev it
// considers only DevClass_ IDs, otherwise only Class_ IDs.
func bestClass(ids []string, dev bool) (usbid.ID, bool) {
	var best usbid.ID
	bestScore := 0
	for _, s := range ids {
		id, err := usbid.ParseHardwareID(s)
		if err != nil || id.Class < 0 || id.DevClass != dev {
			continue
		}
		score := 1
		if id.SubClass >= 0 {
			score++
		}
		if id.Protocol >= 0 {
			score++
		}
		if score > bestScore {
			best, bestScore = id, score
		}
	}
	return best, bestScore > 0
}
