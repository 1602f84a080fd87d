//go:build linux

package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func (o *Options) defaults() {
	if o.SysRoot == "" {
		o.SysRoot = "/sys"
	}
	if o.DevDir == "" {
		o.DevDir = "/dev"
	}
	if o.ProcDir == "" {
		o.ProcDir = "/proc"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// linuxPlatform finds removable disks in sysfs, hears of new ones through
// kernel uevents, and protects them with BLKROSET and read-only remounts;
// phones and cameras (MTP/PTP) are deauthorized on the USB bus.
type linuxPlatform struct {
	o     Options
	sys   Sysfs
	enf   *Enforcer
	drift *driftWatch

	// The disks of the system mounts, for Guard; found once.
	sysOnce  sync.Once
	sysDisks map[string]bool
	sysErr   error
}

// NewPlatform returns the Linux platform.
func NewPlatform(o Options) Platform {
	o.defaults()
	return &linuxPlatform{
		o:     o,
		sys:   Sysfs{Root: o.SysRoot, TreatAsRemovable: o.TreatAsRemovable},
		enf:   &Enforcer{DevDir: o.DevDir, ProcDir: o.ProcDir, OnBusy: o.OnBusy, Logger: o.Logger},
		drift: newDriftWatch(),
	}
}

// PlatformLayers reports whether the udev and udisks rules are installed.
func PlatformLayers() (udev, udisks bool) { return InstalledLayers(RuleDirs) }

// Scan returns the devices it could classify together with an error for
// the rest: the manager protects what it found and reports the error.
func (p *linuxPlatform) Scan(ctx context.Context) ([]Device, error) {
	disks, err1 := p.sys.Disks()
	mtp, err2 := p.sys.MTPDevices()
	var out []Device
	for _, d := range disks {
		if hasMedium(d) {
			out = append(out, d)
		}
	}
	return append(out, mtp...), errors.Join(err1, err2)
}

// hasMedium is false for a drive with nothing in it (an empty card reader
// or optical drive, a loop device with no file attached): there is nothing
// to write to, and opening it fails with ENOMEDIUM. Its medium arrives with
// a "change" event.
func hasMedium(d Device) bool { return d.MTP || d.SizeBytes > 0 }

// parentDisk returns the whole disk a kernel block name belongs to: itself
// for a disk, the parent for a partition.
func parentDisk(sysRoot, name string) (string, error) {
	dir := filepath.Join(sysRoot, "class", "block", name)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s: %w", name, ErrVanished)
		}
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
		return name, nil
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, ErrVanished)
	}
	return filepath.Base(filepath.Dir(real)), nil
}

func (p *linuxPlatform) Lookup(ctx context.Context, name string) (Device, bool, error) {
	disk, err := parentDisk(p.o.SysRoot, name)
	if err != nil {
		return Device{}, false, err
	}
	d, ok, err := p.sys.Disk(disk)
	return d, ok && hasMedium(d), err
}

// systemMounts are the mount points whose disks must never be made
// read-only: the running system would stop.
var systemMounts = []string{"/", "/usr", "/var", "/boot", "/boot/efi"}

// holdsSystem returns the system mount point that d (or one of its
// partitions) holds, comparing the device numbers of its nodes in devDir
// with those of the system's mount points.
func holdsSystem(devDir string, d Device) (string, bool) {
	sys := map[uint64]string{}
	for _, mp := range systemMounts {
		var st unix.Stat_t
		if unix.Stat(mp, &st) == nil {
			if _, seen := sys[st.Dev]; !seen {
				sys[st.Dev] = mp
			}
		}
	}
	for _, n := range append([]string{d.Name}, d.Partitions...) {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(devDir, n), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			if mp, ok := sys[st.Rdev]; ok {
				return mp, true
			}
		}
	}
	return "", false
}

// errSystemDisk refuses to make the running system's disk read-only.
func errSystemDisk(d Device, mp string) error {
	return fmt.Errorf("%s holds the running system (%s): left writable, since read-only would stop the terminal; a terminal must not run from removable media", d.Name, mp)
}

func (p *linuxPlatform) Protect(ctx context.Context, d Device) (Result, error) {
	if d.MTP {
		return p.deauthorize(d)
	}
	if mp, ok := holdsSystem(p.o.DevDir, d); ok {
		err := errSystemDisk(d, mp)
		return Result{Device: d, State: StateWritable, Actions: []Action{{What: "left " + d.Name + " writable", Err: err}}}, err
	}
	res, err := p.enf.Protect(ctx, d)
	if err != nil || !(d.Bus == BusOptical || isOptical(d.Name)) {
		return res, err
	}
	if err := restrictOptical(opticalNodes(p.o.SysRoot, p.o.DevDir, d.Name), &res); err != nil {
		res.State = StateWritable
		return res, fmt.Errorf("optical drive %s: %w", d.Name, err)
	}
	return res, nil
}

// errNotExemptable refuses an exemption the platform cannot carry out; the
// device stays read-only.
var errNotExemptable = errors.New("cannot be made writable for an exemption")

// Release makes an exempted disk writable (Enforcer.Release). Phones and
// cameras (MTP/PTP) and optical drives are refused (the error wraps
// errors.ErrUnsupported) and left read-only: re-authorizing a USB device
// and allowing disc burning are not implemented.
func (p *linuxPlatform) Release(ctx context.Context, d Device) (Result, error) {
	switch {
	case d.MTP:
		return Result{Device: d, State: StateDeauthorized}, fmt.Errorf("release %s: an MTP/PTP device %w: %w", d.Name, errNotExemptable, errors.ErrUnsupported)
	case d.Bus == BusOptical || isOptical(d.Name):
		return Result{Device: d, State: StateReadOnly}, fmt.Errorf("release %s: an optical drive %w: %w", d.Name, errNotExemptable, errors.ErrUnsupported)
	}
	return p.enf.Release(ctx, d)
}

// ProtectGently ends an exemption without ending anyone
// (Enforcer.ProtectGently); for what Release refuses it is Protect.
func (p *linuxPlatform) ProtectGently(ctx context.Context, d Device) (Result, error) {
	if d.MTP || d.Bus == BusOptical || isOptical(d.Name) {
		return p.Protect(ctx, d)
	}
	if mp, ok := holdsSystem(p.o.DevDir, d); ok {
		err := errSystemDisk(d, mp)
		return Result{Device: d, State: StateWritable, Actions: []Action{{What: "left " + d.Name + " writable", Err: err}}}, err
	}
	return p.enf.ProtectGently(ctx, d)
}

// Writes reads the number of write requests the disk (partitions
// included) has completed since it appeared: the fifth field of
// SysRoot/class/block/NAME/stat (Documentation/block/stat.rst).
func (p *linuxPlatform) Writes(d Device) (uint64, error) {
	if d.MTP {
		return 0, fmt.Errorf("%s: an MTP/PTP device has no block statistics: %w", d.Name, errors.ErrUnsupported)
	}
	return blockWrites(p.o.SysRoot, d.Name)
}

func blockWrites(sysRoot, name string) (uint64, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return 0, fmt.Errorf("bad device name %q", name)
	}
	b, err := os.ReadFile(filepath.Join(sysRoot, "class", "block", name, "stat"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", name, ErrVanished)
	}
	if err != nil {
		return 0, err
	}
	return parseBlockStatWrites(string(b))
}

// parseBlockStatWrites returns the write I/Os (the fifth field) of a block
// device's stat file.
func parseBlockStatWrites(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) < 5 {
		return 0, fmt.Errorf("block stat: %d fields, want at least 5", len(f))
	}
	n, err := strconv.ParseUint(f[4], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("block stat: write I/Os: %w", err)
	}
	return n, nil
}

// deauthorize cuts an MTP/PTP device off the USB bus: with authorized=0
// the kernel unbinds its drivers, so no program can send it files.
func (p *linuxPlatform) deauthorize(d Device) (Result, error) {
	res := Result{Device: d}
	authorized, err := p.sys.Authorized(d.Name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("%s: %w", d.Name, ErrVanished)
		}
		res.State = StateWritable
		return res, err
	}
	if authorized {
		path := filepath.Join(p.o.SysRoot, "bus", "usb", "devices", d.Name, "authorized")
		err := os.WriteFile(path, []byte("0"), 0)
		res.Actions = append(res.Actions, Action{What: "deauthorize USB device " + d.Name, Err: err, Target: path})
		if err != nil {
			res.State = StateWritable
			return res, fmt.Errorf("deauthorize %s: %w", d.Name, err)
		}
		res.Repaired = true
	}
	if authorized, err = p.sys.Authorized(d.Name); err != nil || authorized {
		res.State = StateWritable
		return res, fmt.Errorf("deauthorize %s: still authorized (%v)", d.Name, err)
	}
	res.State = StateDeauthorized
	return res, nil
}

// Watch announces the kernel's uevents and, for the devices the manager
// tracks, drift (ActionDrift). Without the drift watch (no inotify, no
// epoll) uevents still arrive and the manager's rescan repairs drift; the
// failure is logged.
func (p *linuxPlatform) Watch(ctx context.Context, f func(Notification)) error {
	p.systemDisk("") // found now, not at the first uevent
	dctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.watchDrift(dctx, f); err != nil && dctx.Err() == nil {
			p.o.Logger.Error("drift watch failed: drift is repaired at the next rescan only", "err", err)
		}
	}()
	defer wg.Wait()
	defer cancel()
	return WatchUevents(ctx, f, p.o.Logger)
}

// Hook is what the udev rule runs for a new or changed block device:
// when it (or the disk it is a partition of) is removable, set it
// read-only, whole disk and partitions. It must be quick and must not
// wait on anything udev is busy with. It returns what it did, for udev's
// log.
func Hook(o Options, name string) (string, error) {
	o.defaults()
	start := time.Now()
	disk, err := parentDisk(o.SysRoot, name)
	if err != nil {
		return "", err
	}
	d, removable, err := (Sysfs{Root: o.SysRoot, TreatAsRemovable: o.TreatAsRemovable}).Disk(disk)
	if err != nil {
		return "", err
	}
	if !removable || d.MTP {
		return name + ": not removable, left alone", nil
	}
	if !hasMedium(d) {
		return name + ": no medium", nil
	}
	if mp, ok := holdsSystem(o.DevDir, d); ok {
		return "", errSystemDisk(d, mp)
	}
	var done []string
	for _, n := range append([]string{d.Name}, d.Partitions...) {
		if err := SetReadOnly(filepath.Join(o.DevDir, n), true); err != nil {
			if errors.Is(err, ErrVanished) && n != d.Name {
				continue // partition not created yet; its own event follows
			}
			return strings.Join(done, " "), fmt.Errorf("set %s read-only: %w", n, err)
		}
		done = append(done, n)
	}
	return fmt.Sprintf("%s (%s): set read-only: %s in %s", d.Name, d.ID(), strings.Join(done, " "), time.Since(start).Round(time.Microsecond)), nil
}
