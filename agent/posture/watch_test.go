package posture

import (
	"testing"
)

func TestUeventSubsystem(t *testing.T) {
	for msg, want := range map[string]string{
		"add@/devices/pci0000:00/0000:00:14.0/usb1/1-2\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2\x00SUBSYSTEM=usb\x00DEVTYPE=usb_device\x00SEQNUM=4321\x00": "usb",
		"change@/devices/virtual/block/loop3\x00ACTION=change\x00SUBSYSTEM=block\x00":                                                                                                "block",
		"add@/devices/x\x00ACTION=add\x00":             "",
		"libudev\x00\xfe\xed\xca\xfeSUBSYSTEM=usb\x00": "", // udev's, not the kernel's
		"":                                   "",
		"add@/x":                             "",
		"remove@/devices/x\x00SUBSYSTEM=usb": "usb", // last field without its NUL
		"bind@/devices/x\x00SUBSYSTEMX=usb\x00SUBSYSTEM=\x00": "",
	} {
		if got := string(ueventSubsystem([]byte(msg))); got != want {
			t.Errorf("ueventSubsystem(%q) = %q, want %q", msg, got, want)
		}
	}
}

func FuzzUeventSubsystem(f *testing.F) {
	f.Add([]byte("add@/devices/usb1/1-2\x00ACTION=add\x00SUBSYSTEM=usb\x00"))
	f.Add([]byte("libudev\x00SUBSYSTEM=usb\x00"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		s := ueventSubsystem(msg)
		if len(s) > len(msg) {
			t.Fatalf("subsystem %q longer than the message", s)
		}
	})
}

func TestUeventSubsystemAllocs(t *testing.T) {
	msg := []byte("change@/devices/virtual/block/loop3\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop3\x00SUBSYSTEM=block\x00")
	if n := testing.AllocsPerRun(100, func() { _ = string(ueventSubsystem(msg)) == "usb" }); n != 0 {
		t.Errorf("%v allocations per uevent", n)
	}
}
