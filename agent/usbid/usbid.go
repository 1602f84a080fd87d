// Package usbid parses the USB device, interface and hardware IDs that
// Windows uses, e.g. USB\VID_0781&PID_5567\4C530001230809116354.
package usbid

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ID is what a Windows device instance ID, hardware ID or compatible ID of
// the USB enumerator says, e.g. "USB\VID_0781&PID_5567\4C530001230809116354",
// "USB\VID_0781&PID_5567&REV_0100" or "USB\Class_08&SubClass_06&Prot_50".
type ID struct {
	VendorID  string // four lowercase hex digits; "" when absent
	ProductID string // four lowercase hex digits; "" when absent
	Revision  string // bcdDevice, four lowercase hex digits; "" when absent
	// Interface is the interface (function) number of an interface of a
	// composite device, "MI_xx"; -1 for a device.
	Interface int

	// Class, SubClass and Protocol are -1 when absent. DevClass says the
	// class came from "DevClass_", that is from the device descriptor of a
	// composite device, rather than from an interface.
	Class, SubClass, Protocol int
	DevClass                  bool

	RootHub   bool // ROOT_HUB, ROOT_HUB20, ROOT_HUB30
	Composite bool // the "USB\COMPOSITE" compatible ID

	// Instance is the instance part of an instance ID ("" for hardware and
	// compatible IDs). Serial is Instance when Windows took it from the
	// device's serial number, that is for a device (not an interface or a
	// root hub) whose instance has no '&'; for a device without a serial
	// number Windows makes one up, such as "5&2F3A6B0&0&2", and Serial is "".
	Instance string
	Serial   string
}

// ParseInstanceID parses a device instance ID of the USB enumerator:
// "USB\<device ID>\<instance>". On error it returns the zero ID.
func ParseInstanceID(s string) (ID, error) {
	parts := strings.Split(s, `\`)
	if len(parts) != 3 {
		return ID{}, fmt.Errorf("usb instance id %q: want 3 parts separated by backslashes, have %d", s, len(parts))
	}
	id, err := parseDeviceID(parts[0], parts[1])
	if err != nil {
		return ID{}, fmt.Errorf("usb instance id %q: %w", s, err)
	}
	inst := parts[2]
	if inst == "" {
		return ID{}, fmt.Errorf("usb instance id %q: empty instance", s)
	}
	id.Instance = inst
	if id.Interface < 0 && !id.RootHub && !strings.Contains(inst, "&") {
		id.Serial = inst
	}
	return id, nil
}

// ParseHardwareID parses a hardware or compatible ID of the USB
// enumerator: "USB\<device ID>". On error it returns the zero ID.
func ParseHardwareID(s string) (ID, error) {
	parts := strings.Split(s, `\`)
	if len(parts) != 2 {
		return ID{}, fmt.Errorf("usb hardware id %q: want 2 parts separated by a backslash, have %d", s, len(parts))
	}
	id, err := parseDeviceID(parts[0], parts[1])
	if err != nil {
		return ID{}, fmt.Errorf("usb hardware id %q: %w", s, err)
	}
	return id, nil
}

// DeviceOf returns the USB device that a device node belongs to, given the
// instance IDs of the node's ancestors, nearest first: the nearest one of
// the USB enumerator that names a vendor and product and is a device, not
// an interface of one or a root hub. When there is only an interface, the
// nearest interface is returned (Interface >= 0, no Serial). Other IDs are
// skipped.
func DeviceOf(ancestors []string) (ID, bool) {
	var iface ID
	found := false
	for _, a := range ancestors {
		id, err := ParseInstanceID(a)
		switch {
		case err != nil || id.VendorID == "" || id.ProductID == "" || id.RootHub:
			continue
		case id.Interface < 0:
			return id, true
		case !found:
			iface, found = id, true
		}
	}
	return iface, found
}

// parseDeviceID parses the '&'-separated middle part of a USB ID. Keys
// are case-insensitive; unknown keys are ignored, known keys with bad
// values or given twice are errors.
func parseDeviceID(enum, dev string) (ID, error) {
	id := ID{Interface: -1, Class: -1, SubClass: -1, Protocol: -1}
	if !strings.EqualFold(enum, "USB") {
		return ID{}, fmt.Errorf("enumerator %q is not USB", enum)
	}
	if dev == "" {
		return ID{}, errors.New("empty device id")
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
			return ID{}, fmt.Errorf("%s: %w", key, err)
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
