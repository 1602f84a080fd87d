package posture

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

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

// usbID is what a Windows device instance ID, hardware ID or compatible ID
// of the USB enumerator says, e.g. "USB\VID_0781&PID_5567\4C530001230809116354",
// "USB\VID_0781&PID_5567&REV_0100" or "USB\Class_08&SubClass_06&Prot_50".
type usbID struct {
	VendorID  string // four lowercase hex digits; "" when absent
	ProductID string // four lowercase hex digits; "" when absent
	Revision  string // bcdDevice, four lowercase hex digits; "" when absent
	Interface int    // MI_xx: the interface (function) number; -1 for a device

	// Class, SubClass and Protocol are -1 when absent. DevClass says the
	// class came from "DevClass_", that is from the device descriptor of a
	// composite device, rather than from an interface.
	Class, SubClass, Protocol int
	DevClass                  bool

	RootHub   bool // ROOT_HUB, ROOT_HUB20, ROOT_HUB30
	Composite bool // the "USB\COMPOSITE" compatible ID

	// Instance is the instance part of an instance ID ("" for hardware and
	// compatible IDs). Serial is Instance when Windows took it from the
	// device's serial number; instances that Windows generated for devices
	// without one contain '&' and give no serial.
	Instance string
	Serial   string
}

// parseUSBInstanceID parses a device instance ID of the USB enumerator:
// "USB\<device ID>\<instance>".
func parseUSBInstanceID(s string) (usbID, error) {
	parts := strings.Split(s, `\`)
	if len(parts) != 3 {
		return usbID{}, fmt.Errorf("usb instance id %q: want 3 parts separated by backslashes, have %d", s, len(parts))
	}
	id, err := parseUSBDeviceID(parts[0], parts[1])
	if err != nil {
		return usbID{}, fmt.Errorf("usb instance id %q: %w", s, err)
	}
	inst := parts[2]
	if inst == "" {
		return usbID{}, fmt.Errorf("usb instance id %q: empty instance", s)
	}
	id.Instance = inst
	if id.Interface < 0 && !id.RootHub && !strings.Contains(inst, "&") {
		id.Serial = inst
	}
	return id, nil
}

// parseUSBHardwareID parses a hardware or compatible ID of the USB
// enumerator: "USB\<device ID>".
func parseUSBHardwareID(s string) (usbID, error) {
	parts := strings.Split(s, `\`)
	if len(parts) != 2 {
		return usbID{}, fmt.Errorf("usb hardware id %q: want 2 parts separated by a backslash, have %d", s, len(parts))
	}
	id, err := parseUSBDeviceID(parts[0], parts[1])
	if err != nil {
		return usbID{}, fmt.Errorf("usb hardware id %q: %w", s, err)
	}
	return id, nil
}

// parseUSBDeviceID parses the '&'-separated middle part of a USB ID. Keys
// are case-insensitive; unknown keys are ignored, known keys with bad
// values or given twice are errors.
func parseUSBDeviceID(enum, dev string) (usbID, error) {
	id := usbID{Interface: -1, Class: -1, SubClass: -1, Protocol: -1}
	if !strings.EqualFold(enum, "USB") {
		return id, fmt.Errorf("enumerator %q is not USB", enum)
	}
	if dev == "" {
		return id, errors.New("empty device id")
	}
	seen := map[string]bool{}
	once := func(key string) error {
		if seen[key] {
			return fmt.Errorf("%s given twice", key)
		}
		seen[key] = true
		return nil
	}
	for tok := range strings.SplitSeq(dev, "&") {
		key, val, hasUnderscore := strings.Cut(tok, "_")
		key = strings.ToUpper(key)
		if !hasUnderscore {
			// Root hubs write "VID8086&PID9D2F&REV0021".
			for _, k := range []string{"VID", "PID", "REV"} {
				if len(tok) > len(k) && strings.EqualFold(tok[:len(k)], k) {
					key, val = k, tok[len(k):]
					break
				}
			}
		}
		var err error
		switch key {
		case "VID":
			if err = once(key); err == nil {
				id.VendorID, err = hexDigits(val, 4)
			}
		case "PID":
			if err = once(key); err == nil {
				id.ProductID, err = hexDigits(val, 4)
			}
		case "REV":
			if err = once(key); err == nil {
				id.Revision, err = hexDigits(val, 4)
			}
		case "MI":
			if err = once(key); err == nil {
				id.Interface, err = hexByte(val)
			}
		case "CLASS", "DEVCLASS":
			if err = once("CLASS"); err == nil {
				id.Class, err = hexByte(val)
				id.DevClass = key == "DEVCLASS"
			}
		case "SUBCLASS":
			if err = once(key); err == nil {
				id.SubClass, err = hexByte(val)
			}
		case "PROT":
			if err = once(key); err == nil {
				id.Protocol, err = hexByte(val)
			}
		case "ROOT":
			if strings.HasPrefix(strings.ToUpper(val), "HUB") {
				id.RootHub = true
			}
		case "COMPOSITE":
			id.Composite = true
		}
		if err != nil {
			return id, fmt.Errorf("%s: %w", key, err)
		}
	}
	return id, nil
}

// hexDigits returns s in lower case if it is exactly n hex digits.
func hexDigits(s string, n int) (string, error) {
	if len(s) != n {
		return "", fmt.Errorf("%q: want %d hex digits", s, n)
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return "", fmt.Errorf("%q: want %d hex digits", s, n)
		}
	}
	return strings.ToLower(s), nil
}

// hexByte parses exactly two hex digits.
func hexByte(s string) (int, error) {
	if len(s) != 2 || !isHex(s[0]) || !isHex(s[1]) {
		return 0, fmt.Errorf("%q: want 2 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 8)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return int(v), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
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
		id   usbID
	}
	var ifaces []iface

	for _, n := range nodes {
		id, err := parseUSBInstanceID(n.InstanceID)
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
				if hid, err := parseUSBHardwareID(h); err == nil && hid.VendorID != "" && hid.ProductID != "" {
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
func bestClass(ids []string, dev bool) (usbID, bool) {
	var best usbID
	bestScore := 0
	for _, s := range ids {
		id, err := parseUSBHardwareID(s)
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
