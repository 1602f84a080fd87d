package posture

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func TestUSBClassName(t *testing.T) {
	for class, want := range map[uint32]string{
		0x00: "", 0x01: "audio", 0x02: "comm", 0x03: "hid", 0x06: "still-image",
		0x07: "printer", 0x08: "mass-storage", 0x09: "hub", 0x0a: "cdc-data",
		0x0b: "smart-card", 0x0e: "video", 0xe0: "wireless", 0xef: "misc",
		0xfe: "application", 0xff: "vendor-specific", 0x42: "", 0x108: "",
	} {
		if got := USBClassName(class); got != want {
			t.Errorf("USBClassName(%#x) = %q, want %q", class, got, want)
		}
	}
}

// isHexID reports whether s is empty or n lowercase hex digits.
func isHexID(s string, n int) bool {
	if s == "" {
		return true
	}
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func TestUSBDevicesFromWindows(t *testing.T) {
	nodes := []winUSBNode{
		{ // root hub: vendor and product only in the hardware IDs
			InstanceID:   `USB\ROOT_HUB30\4&2D9A4E0&0&0`,
			HardwareIDs:  []string{`USB\ROOT_HUB30&VID8086&PID9D2F&REV0021`, `USB\ROOT_HUB30&VID8086&PID9D2F`, `USB\ROOT_HUB30`},
			Description:  "USB Root Hub (USB 3.0)",
			Manufacturer: "(Standard USB HUBs)",
		},
		{ // single-function mass storage with a serial
			InstanceID:    `USB\VID_0781&PID_5567\4C530001230809116354`,
			Parent:        `USB\ROOT_HUB30\4&2D9A4E0&0&0`,
			HardwareIDs:   []string{`USB\VID_0781&PID_5567&REV_0100`, `USB\VID_0781&PID_5567`},
			CompatibleIDs: []string{`USB\Class_08&SubClass_06&Prot_50`, `USB\Class_08&SubClass_06`, `USB\Class_08`},
			Description:   "Cruzer Blade",
			Manufacturer:  "Compatible USB storage device",
		},
		{ // composite receiver without a serial, and its two interfaces
			InstanceID:    `USB\VID_046D&PID_C52B\5&2B0C5B6&0&2`,
			CompatibleIDs: []string{`USB\DevClass_00&SubClass_00&Prot_00`, `USB\DevClass_00&SubClass_00`, `USB\DevClass_00`, `USB\COMPOSITE`},
			Description:   "USB Receiver",
		},
		{
			InstanceID:    `USB\VID_046D&PID_C52B&MI_01\6&3A8E4F5&0&0001`,
			Parent:        `usb\vid_046d&pid_c52b\5&2b0c5b6&0&2`,
			CompatibleIDs: []string{`USB\Class_03&SubClass_01&Prot_02`, `USB\Class_03&SubClass_01`, `USB\Class_03`},
		},
		{ // parent unknown: matched by vendor and product
			InstanceID:    `USB\VID_046D&PID_C52B&MI_00\6&3A8E4F5&0&0000`,
			CompatibleIDs: []string{`USB\Class_03`, `USB\Class_03&SubClass_01&Prot_01`},
		},
		{ // an interface whose parent is not there
			InstanceID: `USB\VID_1234&PID_0001&MI_00\7&1&0&0000`,
		},
		{InstanceID: `garbage`},
	}
	got, err := usbDevicesFromWindows(nodes)
	if err == nil || !strings.Contains(err.Error(), "garbage") || !strings.Contains(err.Error(), "VID_1234") {
		t.Errorf("err = %v, want it to name the unparseable node and the orphan interface", err)
	}
	want := []*mnguardv1.UsbDevice{
		{VendorId: "8086", ProductId: "9d2f", Manufacturer: "(Standard USB HUBs)", Product: "USB Root Hub (USB 3.0)"},
		{
			VendorId: "0781", ProductId: "5567", Serial: "4C530001230809116354",
			Manufacturer: "Compatible USB storage device", Product: "Cruzer Blade",
			Interfaces: []*mnguardv1.UsbInterface{{Number: 0, Class: 8, Subclass: 6, Protocol: 0x50, ClassName: "mass-storage"}},
		},
		{
			VendorId: "046d", ProductId: "c52b", Product: "USB Receiver",
			Interfaces: []*mnguardv1.UsbInterface{
				{Number: 1, Class: 3, Subclass: 1, Protocol: 2, ClassName: "hid"},
				{Number: 0, Class: 3, Subclass: 1, Protocol: 1, ClassName: "hid"},
			},
		},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d devices, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("device %d:\ngot  %v\nwant %v", i, prototext.Format(got[i]), prototext.Format(want[i]))
		}
	}
}
