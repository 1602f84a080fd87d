package media

// The Windows platform, written against winOS so that it builds and is
// tested with a fake on every OS; media_windows.go has the real winOS.
//
// Windows has no per-partition flag and no remount: the read-only disk
// attribute (IOCTL_DISK_SET_DISK_ATTRIBUTES) is held by the partition
// manager below the volumes, so it covers every partition of the disk.
// Optical drives and portable devices (phones, cameras: WPD) are not disks;
// they are write-blocked by the Removable Storage Access policy values,
// which apply to a whole device class.

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/agent/usbid"
)

// STORAGE_BUS_TYPE values (ntddstor.h) that make a disk removable.
const (
	winBus1394 = 0x4
	winBusUSB  = 0x7
	winBusSD   = 0xc
	winBusMMC  = 0xd
)

// winDisk is what Windows says about one disk: a present device with the
// disk interface, GUID_DEVINTERFACE_DISK.
type winDisk struct {
	Number int // N of \\.\PhysicalDriveN
	// Path is the disk's interface path, e.g.
	// \\?\usbstor#disk&ven_sandisk&prod_cruzer_blade&rev_1.00#4c530001230809116354&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}.
	// It opens this device or nothing, where \\.\PhysicalDriveN opens
	// whichever disk has number N now: a stick pulled and another plugged
	// in may get the same number.
	Path string
	// InstanceID is the device instance ID, e.g.
	// USBSTOR\DISK&VEN_SANDISK&PROD_CRUZER_BLADE&REV_1.00\4C530001230809116354&0.
	InstanceID string
	// Ancestors are the instance IDs of the device's parent, its parent's
	// parent and so on, without the root, e.g.
	// USB\VID_0781&PID_5567\4C530001230809116354, USB\ROOT_HUB30\4&1d1e4c8&0&0,
	// PCI\VEN_8086&DEV_A36D&SUBSYS_...
	Ancestors []string
	BusType   uint32 // STORAGE_BUS_TYPE from STORAGE_DEVICE_DESCRIPTOR
	Removable bool   // RemovableMedia from STORAGE_DEVICE_DESCRIPTOR
	Vendor    string // from STORAGE_DEVICE_DESCRIPTOR, trimmed
	Product   string
	Size      uint64 // bytes; 0 when unknown or without media
}

// winOS is what the Windows platform needs from the system.
type winOS interface {
	// Disks lists the present disks. The disks returned are valid also
	// when the error is not nil; a disk that vanishes while it is being
	// read is left out without an error.
	Disks(ctx context.Context) ([]winDisk, error)
	// ReadOnly reports whether the disk at path has the read-only
	// attribute. The error wraps ErrVanished when the disk is gone.
	ReadOnly(path string) (bool, error)
	// SetReadOnly sets or clears the disk's read-only attribute until the
	// disk is removed or the system restarts (not persisted). The error
	// wraps ErrVanished when the disk is gone.
	SetReadOnly(path string, ro bool) error
	// PolicyValue reads the Deny_Write value of the Removable Storage
	// Access policy for a device class ("{53f56308-...}"); ok is false when
	// it is absent or not a REG_DWORD.
	PolicyValue(class string) (v uint32, ok bool, err error)
	// SetPolicyValue writes the class's Deny_Write value as a REG_DWORD.
	SetPolicyValue(class string, v uint32) error
}

// winPolicyClasses are the device setup classes whose Removable Storage
// Access policy value Deny_Write the platform keeps at 1: the classes that
// are not disks, and so not covered by the disk attribute. Not the
// "Removable Disks" class {53f5630d-...}: it would block every removable
// disk, also one the helpdesk exempted. Not
// StorageDevicePolicies\WriteProtect either: Windows honours it only for
// some drivers and only for disks that arrive after it is set.
var winPolicyClasses = []struct{ Name, GUID string }{
	{"CD and DVD", "{53f56308-b6bf-11d0-94f2-00a0c91efb8b}"},
	{"WPD", "{6AC27878-A6FA-4155-BA85-F98F491D4F33}"},
	{"WPD", "{F33FDC04-D1AC-4E8E-9A30-19BBD4B108AE}"},
	{"floppy", "{53f56311-b6bf-11d0-94f2-00a0c91efb8b}"},
	{"tape", "{53f5630b-b6bf-11d0-94f2-00a0c91efb8b}"},
}

// winPollInterval is how often Watch lists the disks.
const winPollInterval = 2 * time.Second

// windowsPlatform is the Platform of Windows.
//
// Watch polls: it lists the disks every PollInterval and reports the
// difference, so a new disk stays writable for up to one interval (plus
// the time to protect it); Explorer may mount it and a fast writer get
// through in that window. CM_Register_Notification (or
// RegisterDeviceNotification) would report an arrival within milliseconds
// and should replace polling as the trigger: it was left for now because
// its callback runs on a system thread pool and must be made with
// windows.NewCallback, whose callbacks are never freed and limited in
// number, and RegisterDeviceNotification needs a window with a message
// loop or the service's control handler, which the service package owns,
// not this one. Polling needs neither, cannot lose an event (the next poll
// sees what a lost one would have said), and also sees what no
// notification reports: a disk made writable again.
type windowsPlatform struct {
	sys          winOS
	log          *slog.Logger
	PollInterval time.Duration
}

func newWindowsPlatform(sys winOS, log *slog.Logger) *windowsPlatform {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &windowsPlatform{sys: sys, log: log, PollInterval: winPollInterval}
}

// winDiskName is the name a disk goes by: PhysicalDriveN.
func winDiskName(number int) string { return "PhysicalDrive" + strconv.Itoa(number) }

// Scan lists the removable disks. The devices returned are valid also when
// the error is not nil (a disk could not be read).
func (p *windowsPlatform) Scan(ctx context.Context) ([]Device, error) {
	disks, err := p.sys.Disks(ctx)
	if err != nil {
		err = fmt.Errorf("list disks: %w", err)
	}
	var devs []Device
	for _, d := range disks {
		if dev, ok := classifyWinDisk(d); ok {
			devs = append(devs, dev)
		}
	}
	slices.SortFunc(devs, func(a, b Device) int { return cmp.Compare(a.Name, b.Name) })
	return devs, err
}

// Lookup classifies one disk by name (PhysicalDriveN); it implements Looker.
func (p *windowsPlatform) Lookup(ctx context.Context, name string) (Device, bool, error) {
	disks, err := p.sys.Disks(ctx)
	for _, d := range disks {
		if winDiskName(d.Number) == name {
			dev, ok := classifyWinDisk(d)
			return dev, ok, nil
		}
	}
	if err != nil {
		return Device{}, false, fmt.Errorf("look up %s: %w", name, err)
	}
	return Device{}, false, fmt.Errorf("look up %s: %w", name, ErrVanished)
}

// classifyWinDisk says whether a disk is removable and what identifies it.
func classifyWinDisk(d winDisk) (Device, bool) {
	var bus Bus
	var reason string
	switch d.BusType {
	case winBusUSB:
		bus, reason = BusUSB, "bus type usb"
	case winBusSD:
		bus, reason = BusMMC, "bus type sd"
	case winBusMMC:
		bus, reason = BusMMC, "bus type mmc"
	case winBus1394:
		bus, reason = BusFirewire, "bus type 1394"
	}
	// A USB-attached SCSI (UAS) or bridged disk may say SCSI or SATA;
	// where it hangs in the device tree does not lie.
	for _, a := range d.Ancestors {
		if bus != "" {
			break
		}
		enum, _, _ := strings.Cut(a, `\`)
		switch strings.ToUpper(enum) {
		case "USB":
			bus, reason = BusUSB, "usb ancestor "+a
		case "1394", "SBP2":
			bus, reason = BusFirewire, "1394 ancestor "+a
		}
	}
	if bus == "" && d.Removable {
		bus, reason = BusOther, "removable media"
	}
	if bus == "" {
		return Device{}, false
	}
	dev := Device{
		Name:      winDiskName(d.Number),
		SysPath:   d.Path,
		Bus:       bus,
		Reason:    reason,
		Model:     strings.TrimSpace(d.Vendor + " " + d.Product),
		SizeBytes: d.Size,
	}
	if id, ok := usbid.DeviceOf(d.Ancestors); ok {
		dev.VendorID, dev.ProductID, dev.Serial = id.VendorID, id.ProductID, id.Serial
	}
	return dev, true
}

// Protect sets the disk's read-only attribute and reads it back, then
// keeps the Removable Storage Access policy in place for the classes that
// are not disks (see EnsurePolicy); policy actions are reported in the
// result, a policy failure only there: the disk's state is what the error
// and State describe. Repaired is true when the disk was writable.
func (p *windowsPlatform) Protect(ctx context.Context, d Device) (Result, error) {
	res := Result{Device: d, State: StateWritable}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("protect %s: %w", d.Name, err)
	}
	err := p.protectDisk(ctx, &res)
	acts, _ := p.EnsurePolicy(ctx)
	res.Actions = append(res.Actions, acts...)
	return res, err
}

// diskPath returns the interface path of the disk d: its SysPath, or the
// path of the disk now named d.Name.
func (p *windowsPlatform) diskPath(ctx context.Context, d Device) (string, error) {
	if d.SysPath != "" {
		return d.SysPath, nil
	}
	disks, err := p.sys.Disks(ctx)
	for _, w := range disks {
		if winDiskName(w.Number) == d.Name {
			return w.Path, nil
		}
	}
	if err == nil {
		err = ErrVanished
	}
	return "", fmt.Errorf("find disk: %w", err)
}

func (p *windowsPlatform) protectDisk(ctx context.Context, res *Result) error {
	d := res.Device
	path, err := p.diskPath(ctx, d)
	if err != nil {
		return fmt.Errorf("protect %s: %w", d.Name, err)
	}
	ro, err := p.sys.ReadOnly(path)
	if err != nil {
		return fmt.Errorf("protect %s: read disk attributes: %w", d.Name, err)
	}
	if ro {
		res.State = StateReadOnly
		return nil
	}
	act := Action{What: "set read-only disk attribute on " + d.Name, Target: d.Name}
	act.Err = p.sys.SetReadOnly(path, true)
	if act.Err == nil {
		ro, err := p.sys.ReadOnly(path)
		switch {
		case err != nil:
			act.Err = fmt.Errorf("verify: %w", err)
		case !ro:
			act.Err = errors.New("verify: the disk is still writable")
		}
	}
	res.Actions = append(res.Actions, act)
	if act.Err != nil {
		return fmt.Errorf("protect %s: %w", d.Name, act.Err)
	}
	res.State, res.Repaired = StateReadOnly, true
	return nil
}

// Release clears the read-only attribute of an exempted disk and reads it
// back: State is StateExempted when the disk is writable. It is
// idempotent (no actions, Repaired false, when the disk was writable). On
// failure State is StateReadOnly, or StateWritable when the attribute
// reads back clear all the same; the caller protects it again.
//
// Windows keeps a volume that was mounted while its disk was read-only
// read-only until it is mounted again: a file system that Explorer mounted
// before the exemption may need the disk plugged in again (the attribute
// is not persisted, so the disk comes back read-only and the manager
// releases it again while the exemption lasts). Dismounting the disk's
// volumes (FSCTL_DISMOUNT_VOLUME) would spare that and is not done yet.
func (p *windowsPlatform) Release(ctx context.Context, d Device) (Result, error) {
	res := Result{Device: d, State: StateReadOnly}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("release %s: %w", d.Name, err)
	}
	path, err := p.diskPath(ctx, d)
	if err != nil {
		return res, fmt.Errorf("release %s: %w", d.Name, err)
	}
	ro, err := p.sys.ReadOnly(path)
	if err != nil {
		return res, fmt.Errorf("release %s: read disk attributes: %w", d.Name, err)
	}
	if !ro {
		res.State = StateExempted
		return res, nil
	}
	act := Action{What: "clear read-only disk attribute on " + d.Name, Target: d.Name}
	act.Err = p.sys.SetReadOnly(path, false)
	if act.Err == nil {
		ro, err := p.sys.ReadOnly(path)
		switch {
		case err != nil:
			act.Err = fmt.Errorf("verify: %w", err)
		case ro:
			act.Err = errors.New("verify: the disk is still read-only")
		}
	}
	res.Actions = append(res.Actions, act)
	res.Repaired = true
	if act.Err != nil {
		if ro, err := p.sys.ReadOnly(path); err == nil && !ro {
			res.State = StateWritable
		}
		return res, fmt.Errorf("release %s: %w", d.Name, act.Err)
	}
	res.State = StateExempted
	return res, nil
}

// ProtectGently is Protect: the disk attribute holds below the volumes
// and takes effect at once, so no file system is left busy to wait for;
// programs with files open there see their next writes fail. (Which
// programs those are is not looked up on Windows.)
func (p *windowsPlatform) ProtectGently(ctx context.Context, d Device) (Result, error) {
	return p.Protect(ctx, d)
}

// EnsurePolicy sets the Removable Storage Access policy value Deny_Write
// to 1 for CD/DVD, WPD (phones, cameras), floppy and tape devices where it
// is not, reads each value it wrote back, and says what it did: no actions
// when the policy was in place. It is called by Protect, and should be
// called at start and at every reconcile so that the policy holds also when
// no removable disk is present. Windows applies the values to devices that
// arrive or are opened afterwards.
func (p *windowsPlatform) EnsurePolicy(ctx context.Context) ([]Action, error) {
	var acts []Action
	var errs []error
	for _, c := range winPolicyClasses {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		v, ok, err := p.sys.PolicyValue(c.GUID)
		if err == nil && ok && v == 1 {
			continue
		}
		was := "absent"
		switch {
		case err != nil:
			was = "unreadable: " + err.Error()
		case ok:
			was = strconv.FormatUint(uint64(v), 10)
		}
		act := Action{What: fmt.Sprintf("set %s policy Deny_Write=1 (was %s)", c.Name, was), Target: c.GUID}
		act.Err = p.sys.SetPolicyValue(c.GUID, 1)
		if act.Err == nil {
			switch v, ok, err := p.sys.PolicyValue(c.GUID); {
			case err != nil:
				act.Err = fmt.Errorf("verify: %w", err)
			case !ok || v != 1:
				act.Err = errors.New("verify: Deny_Write is not 1")
			}
		}
		if act.Err != nil {
			errs = append(errs, fmt.Errorf("%s Deny_Write %s: %w", c.Name, c.GUID, act.Err))
		}
		acts = append(acts, act)
	}
	if err := errors.Join(errs...); err != nil {
		return acts, fmt.Errorf("removable storage policy: %w", err)
	}
	return acts, nil
}

// watchedDisk is what Watch remembers of a disk between polls.
type watchedDisk struct {
	name, path string
	// ro is whether the last poll found a removable disk read-only.
	ro bool
}

// Watch lists the disks every PollInterval and reports, as "block"
// notifications for "disk" devices named PhysicalDriveN with the interface
// path as DevPath: "remove" for a disk gone, "add" for a new one, and
// "change" for a removable disk that was read-only at the last poll and is
// writable now (drift, or a stick pulled and put back between two polls).
// Disks present at the first poll are not reported; Scan finds them. It
// returns nil when ctx ends.
func (p *windowsPlatform) Watch(ctx context.Context, f func(Notification)) error {
	interval := p.PollInterval
	if interval <= 0 {
		interval = winPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var known map[string]watchedDisk // by path; nil until a poll succeeds
	var lastErr string
	for {
		disks, err := p.sys.Disks(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil && err.Error() != lastErr:
			p.log.Warn("media: list disks", "err", err)
			lastErr = err.Error()
		case err == nil && lastErr != "":
			p.log.Info("media: listing disks works again")
			lastErr = ""
		}
		if known != nil || err == nil {
			known = p.diff(known, disks, err == nil, f)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// diff reports the difference between the disks of the last poll and the
// disks now, and returns what to remember. With complete false the list may
// lack disks that are still there, and no removal is reported. With known
// nil (the first poll) nothing is reported. Removals come first: the
// number of a disk pulled may already be another's.
func (p *windowsPlatform) diff(known map[string]watchedDisk, disks []winDisk, complete bool, f func(Notification)) map[string]watchedDisk {
	note := func(action string, w watchedDisk) {
		f(Notification{Action: action, Subsystem: "block", DevPath: w.path, DevName: w.name, DevType: "disk", Received: time.Now()})
	}
	now := make(map[string]watchedDisk, len(disks))
	for _, d := range disks {
		now[strings.ToLower(d.Path)] = watchedDisk{name: winDiskName(d.Number), path: d.Path}
	}
	for _, key := range slices.Sorted(maps.Keys(known)) {
		if _, ok := now[key]; ok {
			continue
		}
		if complete {
			note("remove", known[key])
		} else {
			now[key] = known[key]
		}
	}
	for _, d := range disks {
		key := strings.ToLower(d.Path)
		w := now[key]
		prev, seen := known[key]
		if _, removable := classifyWinDisk(d); removable {
			ro, err := p.sys.ReadOnly(d.Path)
			if err != nil {
				ro = prev.ro // cannot tell; say nothing
			}
			w.ro = ro
			now[key] = w
		}
		switch {
		case known == nil:
		case !seen:
			note("add", w)
		case prev.ro && !w.ro:
			note("change", w)
		}
	}
	return now
}

// The structures of the disk ioctls, as bytes: little-endian, laid out as
// in ntddstor.h and ntdddisk.h on 386, amd64 and arm64 alike.

// diskAttributeReadOnly is DISK_ATTRIBUTE_READ_ONLY.
const diskAttributeReadOnly = 0x2

// setDiskAttributes returns the SET_DISK_ATTRIBUTES input that sets (ro)
// or clears DISK_ATTRIBUTE_READ_ONLY without persisting it: Version (its
// size, 40), Persist, Reserved1[3], Attributes, AttributesMask,
// Reserved2[4].
func setDiskAttributes(ro bool) []byte {
	b := make([]byte, 40)
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	b[4] = 0 // Persist: FALSE
	if ro {
		binary.LittleEndian.PutUint64(b[8:], diskAttributeReadOnly)
	}
	binary.LittleEndian.PutUint64(b[16:], diskAttributeReadOnly)
	return b
}

// getDiskAttributesSize is the size of GET_DISK_ATTRIBUTES: Version,
// Reserved1, Attributes.
const getDiskAttributesSize = 16

// parseGetDiskAttributes reports whether GET_DISK_ATTRIBUTES says
// DISK_ATTRIBUTE_READ_ONLY.
func parseGetDiskAttributes(b []byte) (bool, error) {
	if len(b) < getDiskAttributesSize {
		return false, fmt.Errorf("GET_DISK_ATTRIBUTES: %d bytes, want %d", len(b), getDiskAttributesSize)
	}
	return binary.LittleEndian.Uint64(b[8:])&diskAttributeReadOnly != 0, nil
}

// storageDescriptor is what STORAGE_DEVICE_DESCRIPTOR says.
type storageDescriptor struct {
	Removable       bool
	BusType         uint32
	Vendor, Product string
}

// storageDescriptorHeaderSize is where the strings of a
// STORAGE_DEVICE_DESCRIPTOR may start: after Version, Size, DeviceType,
// DeviceTypeModifier, RemovableMedia, CommandQueueing, VendorIdOffset,
// ProductIdOffset, ProductRevisionOffset, SerialNumberOffset, BusType and
// RawPropertiesLength.
const storageDescriptorHeaderSize = 36

// parseStorageDeviceDescriptor parses a STORAGE_DEVICE_DESCRIPTOR as
// IOCTL_STORAGE_QUERY_PROPERTY returns it. Strings are NUL-terminated at
// offsets into the descriptor, 0 for none; an offset outside it counts as
// none.
func parseStorageDeviceDescriptor(b []byte) (storageDescriptor, error) {
	if len(b) < storageDescriptorHeaderSize {
		return storageDescriptor{}, fmt.Errorf("STORAGE_DEVICE_DESCRIPTOR: %d bytes, want at least %d", len(b), storageDescriptorHeaderSize)
	}
	if size := binary.LittleEndian.Uint32(b[4:]); size >= storageDescriptorHeaderSize && uint64(size) < uint64(len(b)) {
		b = b[:size]
	}
	str := func(at int) string {
		off := binary.LittleEndian.Uint32(b[at:])
		if off < storageDescriptorHeaderSize || uint64(off) >= uint64(len(b)) {
			return ""
		}
		s := b[off:]
		if i := slices.Index(s, 0); i >= 0 {
			s = s[:i]
		}
		return strings.TrimSpace(strings.ToValidUTF8(string(s), ""))
	}
	return storageDescriptor{
		Removable: b[10] != 0,
		BusType:   binary.LittleEndian.Uint32(b[28:]),
		Vendor:    str(12),
		Product:   str(16),
	}, nil
}
