// Package media keeps removable media read-only: it finds removable disks,
// sets them and their partitions read-only, makes mounted filesystems on
// them read-only, and repairs drift; for an exemption it makes one device
// writable, and read-only again when the exemption ends.
package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options configure the OS's platform (NewPlatform).
type Options struct {
	// TreatAsRemovable are kernel name patterns treated as removable
	// (tests only; Linux).
	TreatAsRemovable []string
	// OnBusy is "kill" or "detach" (see config.Media; Linux).
	OnBusy string
	Logger *slog.Logger
	// SysRoot, DevDir and ProcDir default to /sys, /dev and /proc (Linux).
	SysRoot, DevDir, ProcDir string
}

// Bus is how a disk is attached.
type Bus string

// Buses that make a disk removable.
const (
	BusUSB      Bus = "usb"
	BusMMC      Bus = "mmc" // SD and MMC cards
	BusFirewire Bus = "firewire"
	BusOptical  Bus = "optical" // sr*: CD, DVD, Blu-ray drives
	BusOther    Bus = "other"   // removable=1 without a known bus
	BusTest     Bus = "test"    // matched by media.treat_as_removable
)

// USBInterface is one interface of the USB device a disk hangs off.
type USBInterface struct {
	Class, Subclass, Protocol uint8
}

// Device is one removable whole disk (or MTP/PTP device) and what identifies it.
type Device struct {
	// Name is the kernel name, e.g. "sdb", "mmcblk0", "sr0", "loop3"; for
	// an MTP/PTP device, the USB device's sysfs name, e.g. "1-2".
	Name string
	// SysPath is the device's path below the sysfs root, e.g.
	// "devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host0/target0:0:0/0:0:0:0/block/sdb".
	SysPath string
	Bus     Bus
	// Why the device counts as removable, e.g. "usb ancestor 1-2",
	// "removable=1", "optical", "matches treat_as_removable loop*".
	Reason    string
	VendorID  string // four lowercase hex digits, "" when unknown
	ProductID string
	Serial    string
	Model     string
	SizeBytes uint64
	// Interfaces of the USB device, when Bus is usb.
	Interfaces []USBInterface
	// Partitions are the kernel names of the disk's partitions, e.g. "sdb1".
	Partitions []string
	// MTP is true for phones and cameras (USB still-image class or an MTP
	// interface): they are not block devices and are deauthorized instead.
	MTP bool
}

// ID is the identity an exemption names: VID:PID:SERIAL.
func (d Device) ID() string { return d.VendorID + ":" + d.ProductID + ":" + d.Serial }

// State of a removable device.
type State string

// States.
const (
	StateReadOnly     State = "read-only"
	StateWritable     State = "writable" // enforcement failed
	StateExempted     State = "exempted"
	StateDeauthorized State = "deauthorized" // MTP/PTP
	// StateEnding is a device whose exemption ended while files on it were
	// still open for writing: the kernel flag is set again, but a
	// filesystem on it is still writable until its writers close their
	// files or the grace period runs out.
	StateEnding State = "ending"
)

// Writer is a process that keeps a filesystem from being made read-only.
type Writer struct {
	PID     int
	Command string // its comm, e.g. "vim"
	// What it does there, e.g. "writing /media/x/f".
	What string
	// Mount is the mount point of the busy filesystem.
	Mount string
}

func (w Writer) String() string { return fmt.Sprintf("pid %d (%s) %s", w.PID, w.Command, w.What) }

// Action is something enforcement did, for the event that reports it.
type Action struct {
	What   string // e.g. "BLKROSET sdb", "remount /media/x read-only", "ended pid 1234 (vim) writing /media/x/f"
	Err    error
	Target string
}

// Result is the outcome of protecting one device.
type Result struct {
	Device  Device
	State   State
	Actions []Action
	// Repaired is true when the device had drifted (writable again) and was
	// set back.
	Repaired bool
	// Busy lists, when State is StateEnding, the processes that keep a
	// filesystem of the device writable.
	Busy []Writer
}

// Notification is a kernel event about a device.
type Notification struct {
	Action    string // "add", "change", "remove", "bind", ...
	Subsystem string // "block", "usb"
	DevPath   string // below /sys, e.g. "/devices/virtual/block/loop0"
	DevName   string // e.g. "loop0"
	DevType   string // "disk", "partition", "usb_device", "usb_interface"
	Received  time.Time
}

// ErrVanished means the device disappeared while it was being handled.
var ErrVanished = errors.New("device vanished")

// Platform is what an OS provides: finding removable devices, watching for
// new ones, and making them read-only. media_linux.go and media_windows.go
// implement it; tests use fakes.
type Platform interface {
	// Scan lists the removable devices present now.
	Scan(ctx context.Context) ([]Device, error)
	// Protect makes the device read-only (and its partitions and mounted
	// filesystems), verifies it, and says what it did. It is idempotent:
	// on a device already read-only it changes nothing and reports no
	// repair.
	Protect(ctx context.Context, d Device) (Result, error)
	// Watch calls f for every kernel notification about block and USB
	// devices until ctx ends.
	Watch(ctx context.Context, f func(Notification)) error
}
