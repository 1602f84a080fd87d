package media

import (
	"strings"
	"testing"
)

// realUevents are kernel uevents as received from NETLINK_KOBJECT_UEVENT.
// The block ones were captured on a build machine (Linux 6.18) with
// losetup, partx and a write to a uevent file; the usb ones are a USB
// stick's, in the same kernel format (the build machines have no USB bus).
var realUevents = []struct {
	name string
	msg  string
	want Notification
}{
	{
		"loop attach (change, not add)",
		"change@/devices/virtual/block/loop1\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop1\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=1\x00DEVNAME=loop1\x00DEVTYPE=disk\x00DISKSEQ=14\x00SEQNUM=880\x00",
		Notification{Action: "change", Subsystem: "block", DevPath: "/devices/virtual/block/loop1", DevName: "loop1", DevType: "disk"},
	},
	{
		"loop detach, media change",
		"change@/devices/virtual/block/loop1\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop1\x00SUBSYSTEM=block\x00DISK_MEDIA_CHANGE=1\x00MAJOR=7\x00MINOR=1\x00DEVNAME=loop1\x00DEVTYPE=disk\x00DISKSEQ=14\x00SEQNUM=882\x00",
		Notification{Action: "change", Subsystem: "block", DevPath: "/devices/virtual/block/loop1", DevName: "loop1", DevType: "disk"},
	},
	{
		"new loop device from loop-control",
		"add@/devices/virtual/block/loop12\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop12\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=12\x00DEVNAME=loop12\x00DEVTYPE=disk\x00DISKSEQ=18\x00SEQNUM=887\x00",
		Notification{Action: "add", Subsystem: "block", DevPath: "/devices/virtual/block/loop12", DevName: "loop12", DevType: "disk"},
	},
	{
		"its backing device info",
		"add@/devices/virtual/bdi/7:12\x00ACTION=add\x00DEVPATH=/devices/virtual/bdi/7:12\x00SUBSYSTEM=bdi\x00SEQNUM=886\x00",
		Notification{Action: "add", Subsystem: "bdi", DevPath: "/devices/virtual/bdi/7:12"},
	},
	{
		"partition added",
		"add@/devices/virtual/block/loop1/loop1p1\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop1/loop1p1\x00SUBSYSTEM=block\x00MAJOR=259\x00MINOR=2\x00DEVNAME=loop1p1\x00DEVTYPE=partition\x00DISKSEQ=25\x00PARTN=1\x00SEQNUM=899\x00",
		Notification{Action: "add", Subsystem: "block", DevPath: "/devices/virtual/block/loop1/loop1p1", DevName: "loop1p1", DevType: "partition"},
	},
	{
		"partition removed",
		"remove@/devices/virtual/block/loop0/loop0p2\x00ACTION=remove\x00DEVPATH=/devices/virtual/block/loop0/loop0p2\x00SUBSYSTEM=block\x00MAJOR=259\x00MINOR=1\x00DEVNAME=loop0p2\x00DEVTYPE=partition\x00DISKSEQ=27\x00PARTN=2\x00SEQNUM=906\x00",
		Notification{Action: "remove", Subsystem: "block", DevPath: "/devices/virtual/block/loop0/loop0p2", DevName: "loop0p2", DevType: "partition"},
	},
	{
		"synthetic, from a write to the uevent file",
		"change@/devices/virtual/block/loop1\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop1\x00SUBSYSTEM=block\x00SYNTH_UUID=3f4e1c2a-0d6b-4d1e-9a51-0c2b7b0a7e11\x00SYNTH_ARG_TEST=1\x00MAJOR=7\x00MINOR=1\x00DEVNAME=loop1\x00DEVTYPE=disk\x00DISKSEQ=23\x00SEQNUM=895\x00",
		Notification{Action: "change", Subsystem: "block", DevPath: "/devices/virtual/block/loop1", DevName: "loop1", DevType: "disk"},
	},
	{
		"usb device",
		"add@/devices/pci0000:00/0000:00:14.0/usb2/2-1\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1\x00SUBSYSTEM=usb\x00MAJOR=189\x00MINOR=130\x00DEVNAME=bus/usb/002/003\x00DEVTYPE=usb_device\x00PRODUCT=781/5567/100\x00TYPE=0/0/0\x00BUSNUM=002\x00DEVNUM=003\x00SEQNUM=4711\x00",
		Notification{Action: "add", Subsystem: "usb", DevPath: "/devices/pci0000:00/0000:00:14.0/usb2/2-1", DevName: "bus/usb/002/003", DevType: "usb_device"},
	},
	{
		"usb interface bound to usb-storage",
		"bind@/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0\x00ACTION=bind\x00DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0\x00SUBSYSTEM=usb\x00DEVTYPE=usb_interface\x00DRIVER=usb-storage\x00PRODUCT=781/5567/100\x00TYPE=0/0/0\x00INTERFACE=8/6/80\x00MODALIAS=usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00\x00SEQNUM=4714\x00",
		Notification{Action: "bind", Subsystem: "usb", DevPath: "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0", DevType: "usb_interface"},
	},
	{
		"the stick's disk",
		"add@/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb\x00SUBSYSTEM=block\x00MAJOR=8\x00MINOR=16\x00DEVNAME=sdb\x00DEVTYPE=disk\x00DISKSEQ=9\x00SEQNUM=4730\x00",
		Notification{Action: "add", Subsystem: "block", DevPath: "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb", DevName: "sdb", DevType: "disk"},
	},
}

func TestParseUevent(t *testing.T) {
	for _, tc := range realUevents {
		t.Run(tc.name, func(t *testing.T) {
			n, env, err := ParseUevent([]byte(tc.msg))
			if err != nil {
				t.Fatalf("ParseUevent: %v", err)
			}
			if n != tc.want {
				t.Errorf("got %+v\nwant %+v", n, tc.want)
			}
			if env["ACTION"] != tc.want.Action || env["SEQNUM"] == "" {
				t.Errorf("env = %v", env)
			}
			// Without the final NUL it is the same message.
			if n2, _, err := ParseUevent([]byte(strings.TrimSuffix(tc.msg, "\x00"))); err != nil || n2 != n {
				t.Errorf("without the final NUL: %+v, %v", n2, err)
			}
		})
	}
	// A value may hold '='.
	_, env, err := ParseUevent([]byte("add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=block\x00X=a=b\x00"))
	if err != nil || env["X"] != "a=b" {
		t.Errorf("X = %q, %v; want a=b", env["X"], err)
	}
}

func TestParseUeventMalformed(t *testing.T) {
	const ok = "ACTION=add\x00DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00"
	for _, tc := range []struct {
		name, msg, err string
	}{
		{"empty", "", "empty message"},
		{"oversized", "add@/devices/virtual/block/loop0\x00" + ok + "X=" + strings.Repeat("x", 8<<10), "longer than 8192"},
		{"udev monitor", "libudev\x00\xfe\xed\xca\xfe\x28\x00\x00\x00", "libudev"},
		{"no header", ok, "not ACTION@DEVPATH"},
		{"action mismatch", "remove@/devices/virtual/block/loop0\x00" + ok, `header action "remove" but ACTION="add"`},
		{"path mismatch", "add@/devices/virtual/block/loop1\x00" + ok, "header path"},
		{"no ACTION", "add@/d\x00DEVPATH=/d\x00SUBSYSTEM=block\x00", "no ACTION"},
		{"no DEVPATH", "add@/d\x00ACTION=add\x00SUBSYSTEM=block\x00", "no DEVPATH"},
		{"no SUBSYSTEM", "add@/d\x00ACTION=add\x00DEVPATH=/d\x00", "no SUBSYSTEM"},
		{"empty SUBSYSTEM", "add@/d\x00ACTION=add\x00DEVPATH=/d\x00SUBSYSTEM=\x00", "no SUBSYSTEM"},
		{"key without =", "add@/devices/virtual/block/loop0\x00" + ok + "GARBAGE\x00", `field "GARBAGE" has no '='`},
		{"empty key", "add@/devices/virtual/block/loop0\x00" + ok + "=x\x00", "empty key"},
		{"empty field", "add@/devices/virtual/block/loop0\x00\x00" + ok, "field 1 is empty"},
		{"ACTION twice", "add@/devices/virtual/block/loop0\x00" + ok + "ACTION=remove\x00", "ACTION given twice"},
		{"relative DEVPATH", "add@devices/x\x00ACTION=add\x00DEVPATH=devices/x\x00SUBSYSTEM=block\x00", "not a path below /sys"},
		{"DEVPATH escapes", "add@/devices/../../etc\x00ACTION=add\x00DEVPATH=/devices/../../etc\x00SUBSYSTEM=block\x00", "not a path below /sys"},
		{"DEVNAME escapes", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=block\x00DEVNAME=../etc/shadow\x00", "not a name below /dev"},
		{"DEVNAME absolute", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=block\x00DEVNAME=/dev/sda\x00", "not a name below /dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, env, err := ParseUevent([]byte(tc.msg))
			if err == nil {
				t.Fatalf("ParseUevent = %+v, %v; want an error", n, env)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %q does not say %q", err, tc.err)
			}
			if n != (Notification{}) || env != nil {
				t.Errorf("with the error: %+v, %v", n, env)
			}
		})
	}
}

func FuzzParseUevent(f *testing.F) {
	for _, tc := range realUevents {
		f.Add([]byte(tc.msg))
	}
	f.Add([]byte("libudev\x00\xfe\xed\xca\xfe"))
	f.Add([]byte("add@/x\x00ACTION=add\x00DEVPATH=/x\x00SUBSYSTEM=usb\x00DEVNAME=bus/usb/001/002\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, env, err := ParseUevent(b)
		if err != nil {
			return
		}
		if n.Action == "" || n.DevPath == "" || n.Subsystem == "" {
			t.Fatalf("accepted %q with an empty field: %+v", b, n)
		}
		if env["ACTION"] != n.Action || env["DEVPATH"] != n.DevPath || env["SUBSYSTEM"] != n.Subsystem ||
			env["DEVNAME"] != n.DevName || env["DEVTYPE"] != n.DevType {
			t.Fatalf("notification %+v disagrees with the variables %v", n, env)
		}
		if !strings.HasPrefix(n.DevPath, "/") || dotDot(n.DevPath) || dotDot(n.DevName) || !n.Received.IsZero() {
			t.Fatalf("accepted %q: %+v", b, n)
		}
	})
}
