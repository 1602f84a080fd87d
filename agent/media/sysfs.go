package media

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mnguard/mnguard/internal/limitread"
)

// Sysfs classifies disks and USB devices by reading a sysfs tree. It only
// reads files, so it builds on every OS and tests point it at trees under
// testdata that reproduce real device layouts.
//
// Classification never fails because an attribute is missing or odd: the
// field stays empty and a note in parentheses at the end of Device.Reason
// says why, e.g. "usb ancestor 2-1 (idVendor not 4 hex digits: "zzzz")".
type Sysfs struct {
	// Root is where sysfs is mounted: "/sys" in production.
	Root string
	// TreatAsRemovable lists kernel-name patterns (path.Match syntax, e.g.
	// "loop*") of disks to treat as removable although nothing in sysfs
	// says they are. Test-only: agent config media.treat_as_removable.
	TreatAsRemovable []string
}

// maxAttr bounds an attribute read: sysfs attributes are at most a page.
const maxAttr = 4096

// Disk classifies the whole disk with kernel name name (an entry of
// Root/class/block). A disk is removable when it hangs off a USB,
// Firewire or MMC device, is optical (sr*, SCSI type 5), sits below a PCI
// device the kernel marks removable (Thunderbolt, USB4), has removable=1,
// or its name matches TreatAsRemovable; the first of these that holds
// sets Bus and Reason. A USB optical drive is BusUSB, its Reason ending
// in ", optical". A disk matched by TreatAsRemovable alone is BusTest,
// vendor and product "0000" and, for a loop device, the serial is the
// base name of its backing file.
//
// SizeBytes 0 means no medium: an empty card reader or optical drive, a
// loop device without a backing file.
//
// ok is false when the disk is not removable, and for partitions. The
// error wraps ErrVanished when the disk's sysfs directory does not exist
// (any more); other errors mean the tree could not be read at all, never
// that an attribute was odd.
func (s Sysfs) Disk(name string) (d Device, ok bool, err error) {
	if err := checkName(name); err != nil {
		return Device{}, false, fmt.Errorf("disk %q: %w", name, err)
	}
	root, err := filepath.EvalSymlinks(s.Root)
	if err != nil {
		return Device{}, false, fmt.Errorf("sysfs root: %w", err)
	}
	dir, rel, err := resolve(root, filepath.Join(root, "class", "block", name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Device{}, false, fmt.Errorf("disk %s: %w", name, ErrVanished)
		}
		return Device{}, false, fmt.Errorf("disk %s: %w", name, err)
	}
	if exists(filepath.Join(dir, "partition")) {
		return Device{}, false, nil
	}
	c := classifier{name: name, dir: dir}
	d, ok = c.classify(s, root)
	// The files read above may have gone with the device: an empty field
	// must not pass for a real one, nor a missing ancestor for a fixed disk.
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return Device{}, false, fmt.Errorf("disk %s: %w", name, ErrVanished)
	}
	if !ok {
		return Device{}, false, nil
	}
	d.Name = name
	d.SysPath = rel
	return d, true, nil
}

// Disks lists the removable whole disks under Root/class/block, sorted by
// name. Disks that vanish while they are read are left out. When some
// disks cannot be read, Disks returns the others together with an error
// naming the failures, so a caller can protect what it found.
func (s Sysfs) Disks() ([]Device, error) {
	entries, err := os.ReadDir(filepath.Join(s.Root, "class", "block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var devs []Device
	var errs []error
	for _, e := range entries {
		d, ok, err := s.Disk(e.Name())
		switch {
		case errors.Is(err, ErrVanished):
		case err != nil:
			errs = append(errs, err)
		case ok:
			devs = append(devs, d)
		}
	}
	slices.SortFunc(devs, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return devs, errors.Join(errs...)
}

// MTPDevices lists the USB devices under Root/bus/usb/devices that have a
// still-image (PTP) interface, class 6, or an interface whose name says
// MTP: phones and cameras. Root hubs and interfaces are skipped. A system
// without a USB bus has none. As with Disks, devices that could be read
// are returned together with an error naming the others.
func (s Sysfs) MTPDevices() ([]Device, error) {
	root, err := filepath.EvalSymlinks(s.Root)
	if err != nil {
		return nil, fmt.Errorf("sysfs root: %w", err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "bus", "usb", "devices"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list usb devices: %w", err)
	}
	var devs []Device
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if strings.Contains(name, ":") || strings.HasPrefix(name, "usb") {
			continue
		}
		dir, rel, err := resolve(root, filepath.Join(root, "bus", "usb", "devices", name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("usb device %s: %w", name, err))
			continue
		}
		c := classifier{name: name, dir: dir}
		ifaces := c.usbInterfaces(dir)
		why := ""
		for _, i := range ifaces {
			if i.hasClass && i.Class == 6 {
				why = "usb still-image interface " + i.name
				break
			}
			if strings.Contains(i.label, "MTP") {
				why = "usb mtp interface " + i.name
				break
			}
		}
		if why == "" {
			continue
		}
		d := Device{
			Name:       name,
			SysPath:    rel,
			Bus:        BusUSB,
			MTP:        true,
			Interfaces: classes(ifaces),
		}
		d.VendorID, d.ProductID, d.Serial = c.usbIdentity(dir)
		d.Model = c.optional(dir, "product")
		d.Reason = why + c.notes()
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b Device) int { return natCompare(a.Name, b.Name) })
	return devs, errors.Join(errs...)
}

// Authorized reports whether the USB device name (e.g. "1-2") is
// authorized, from Root/bus/usb/devices/NAME/authorized. The error wraps
// ErrVanished when the device is gone.
func (s Sysfs) Authorized(name string) (bool, error) {
	if err := checkName(name); err != nil {
		return false, fmt.Errorf("usb device %q: %w", name, err)
	}
	v, err := readAttr(filepath.Join(s.Root, "bus", "usb", "devices", name, "authorized"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("usb device %s: %w", name, ErrVanished)
	}
	if err != nil {
		return false, fmt.Errorf("usb device %s: %w", name, err)
	}
	switch strings.TrimSpace(v) {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("usb device %s: authorized is %s, want 0 or 1", name, clip(v))
}

// classifier gathers what one disk or USB device looks like, and notes on
// what could not be read.
type classifier struct {
	name  string
	dir   string // resolved device directory
	noted []string
}

func (c *classifier) note(format string, args ...any) {
	c.noted = append(c.noted, fmt.Sprintf(format, args...))
}

// notes returns the notes for the end of Device.Reason.
func (c *classifier) notes() string {
	if len(c.noted) == 0 {
		return ""
	}
	return " (" + strings.Join(c.noted, "; ") + ")"
}

// ancestor is one directory above the disk's in the device tree.
type ancestor struct {
	dir, name, subsystem string
}

func (c *classifier) classify(s Sysfs, root string) (Device, bool) {
	var ancestors []ancestor
	devices := filepath.Join(root, "devices")
	for dir := filepath.Dir(c.dir); strings.HasPrefix(dir, devices+string(filepath.Separator)); dir = filepath.Dir(dir) {
		a := ancestor{dir: dir, name: filepath.Base(dir)}
		if t, err := os.Readlink(filepath.Join(dir, "subsystem")); err == nil {
			a.subsystem = path.Base(filepath.ToSlash(t))
		}
		ancestors = append(ancestors, a)
	}

	// usbDev is the USB device the disk hangs off: the nearest USB
	// directory above it or, when that is an interface ("2-1:1.0"), the
	// interface's parent, whatever attributes it lacks.
	var usbDev, fw, fwGUID, mmc, pciRemovable *ancestor
	mmcHost := false
	for i := range ancestors {
		a := &ancestors[i]
		if usbDev == nil && (a.subsystem == "usb" || exists(filepath.Join(a.dir, "idVendor")) ||
			exists(filepath.Join(a.dir, "idProduct")) || exists(filepath.Join(a.dir, "bInterfaceClass"))) {
			usbDev = a
			if strings.Contains(a.name, ":") && i+1 < len(ancestors) {
				usbDev = &ancestors[i+1]
			}
		}
		if a.subsystem == "firewire" || a.subsystem == "ieee1394" {
			if fw == nil {
				fw = a
			}
			if fwGUID == nil && exists(filepath.Join(a.dir, "guid")) {
				fwGUID = a
			}
		}
		if a.name == "mmc_host" || a.subsystem == "mmc_host" {
			mmcHost = true
		}
		if mmc == nil && a.subsystem == "mmc" {
			mmc = a
		}
		if pciRemovable == nil && a.subsystem == "pci" {
			if v, err := readAttr(filepath.Join(a.dir, "removable")); err == nil && strings.TrimSpace(v) == "removable" {
				pciRemovable = a
			}
		}
	}
	devType := c.optional(c.dir, "device/type")
	if mmc == nil && (mmcHost || devType == "SD" || devType == "MMC" || devType == "SDIO") {
		// The card is the disk's device; without a subsystem link, take
		// the nearest directory named like a card, mmcN:RCA.
		for i := range ancestors {
			if strings.HasPrefix(ancestors[i].name, "mmc") && strings.Contains(ancestors[i].name, ":") {
				mmc = &ancestors[i]
				break
			}
		}
		if mmc == nil {
			mmc = &ancestor{name: "(card unknown)", dir: filepath.Join(c.dir, "device")}
		}
	}
	optical := isOptical(c.name) || devType == "5"
	removable := c.optional(c.dir, "removable") == "1"
	pattern := ""
	for _, p := range s.TreatAsRemovable {
		if m, err := path.Match(p, c.name); err == nil && m {
			pattern = p
			break
		}
	}

	var d Device
	switch {
	case usbDev != nil:
		d.Bus = BusUSB
		d.Reason = "usb ancestor " + usbDev.name
		d.VendorID, d.ProductID, d.Serial = c.usbIdentity(usbDev.dir)
		d.Interfaces = classes(c.usbInterfaces(usbDev.dir))
	case fw != nil:
		d.Bus = BusFirewire
		if fwGUID != nil {
			// The node (fw1) rather than the unit (fw1.0): it holds the GUID.
			d.Reason = "firewire ancestor " + fwGUID.name
			d.Serial, _ = c.required(fwGUID.dir, "guid")
		} else {
			d.Reason = "firewire ancestor " + fw.name
			c.note("guid missing")
		}
	case mmc != nil:
		d.Bus = BusMMC
		d.Reason = "mmc ancestor " + mmc.name
		d.Serial, _ = c.required(mmc.dir, "serial")
		if t := c.optional(mmc.dir, "type"); t == "MMC" {
			c.note("type MMC: may be soldered eMMC")
		}
	case optical:
		d.Bus = BusOptical
		d.Reason = "optical"
		d.Serial = c.optional(c.dir, "device/serial")
	case pciRemovable != nil:
		// Below an external-facing port: Thunderbolt, USB4, ExpressCard.
		d.Bus = BusOther
		d.Reason = "removable pci ancestor " + pciRemovable.name
		d.Serial = c.optional(c.dir, "device/serial")
	case removable:
		d.Bus = BusOther
		d.Reason = "removable=1"
		d.Serial = c.optional(c.dir, "device/serial")
	case pattern != "":
		d.Bus = BusTest
		d.Reason = "matches treat_as_removable " + pattern
		d.VendorID, d.ProductID = "0000", "0000"
		d.Serial = c.testSerial()
	default:
		return Device{}, false
	}
	if optical && d.Bus != BusOptical {
		d.Reason += ", optical"
	}

	d.Model = c.optional(c.dir, "device/model")
	if d.Model == "" && usbDev != nil {
		d.Model = c.optional(usbDev.dir, "product")
	}
	if d.Model == "" && mmc != nil && d.Bus == BusMMC {
		d.Model = c.optional(mmc.dir, "name")
	}
	d.SizeBytes = c.size()
	d.Partitions = c.partitions()
	d.Reason += c.notes()
	return d, true
}

// usbIdentity reads a USB device's vendor and product IDs and serial.
func (c *classifier) usbIdentity(dir string) (vendor, product, serial string) {
	vendor = c.hexID(dir, "idVendor")
	product = c.hexID(dir, "idProduct")
	serial, err := readAttr(filepath.Join(dir, "serial"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.note("no serial")
	case err != nil:
		c.note("serial unreadable: %s", cause(err))
	}
	return vendor, product, strings.TrimSpace(serial)
}

func (c *classifier) hexID(dir, attr string) string {
	v, ok := c.required(dir, attr)
	if !ok {
		return ""
	}
	if len(v) != 4 || strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
		c.note("%s not 4 hex digits: %s", attr, clip(v))
		return ""
	}
	return strings.ToLower(v)
}

// testSerial identifies a disk that only TreatAsRemovable makes removable:
// for a loop device, the base name of its backing file.
func (c *classifier) testSerial() string {
	if !strings.HasPrefix(c.name, "loop") {
		return c.optional(c.dir, "serial")
	}
	f, err := readAttr(filepath.Join(c.dir, "loop", "backing_file"))
	if errors.Is(err, fs.ErrNotExist) {
		c.note("no backing file")
		return ""
	}
	if err != nil {
		c.note("backing_file unreadable: %s", cause(err))
		return ""
	}
	f = strings.TrimRight(f, "\n")
	// The kernel prints a deleted backing file as "/tmp/x.img (deleted)".
	if g, ok := strings.CutSuffix(f, " (deleted)"); ok {
		f = g
		c.note("backing file deleted")
	}
	if f == "" {
		c.note("backing_file empty")
		return ""
	}
	return path.Base(f)
}

func (c *classifier) size() uint64 {
	v, ok := c.required(c.dir, "size")
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > (1<<64-1)/512 {
		c.note("size not a number of sectors: %s", clip(v))
		return 0
	}
	return n * 512
}

// partitions lists the disk's partitions: its subdirectories that hold a
// partition attribute.
func (c *classifier) partitions() []string {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		c.note("partitions unreadable: %s", cause(err))
		return nil
	}
	var parts []string
	for _, e := range entries {
		if e.IsDir() && exists(filepath.Join(c.dir, e.Name(), "partition")) {
			parts = append(parts, e.Name())
		}
	}
	slices.SortFunc(parts, natCompare)
	return parts
}

// usbInterface is an interface directory of a USB device, e.g. "1-2:1.0".
type usbInterface struct {
	USBInterface
	name     string
	hasClass bool
	label    string // the interface string, e.g. "MTP"
}

// usbInterfaces reads the interfaces of the USB device at dir, in
// interface order. An interface whose class cannot be read is kept
// without one, for its label.
func (c *classifier) usbInterfaces(dir string) []usbInterface {
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.note("interfaces unreadable: %s", cause(err))
		return nil
	}
	prefix := filepath.Base(dir) + ":"
	var ifaces []usbInterface
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		idir := filepath.Join(dir, e.Name())
		i := usbInterface{name: e.Name(), label: c.optional(idir, "interface")}
		var ok [3]bool
		i.Class, ok[0] = c.hexByte(idir, e.Name(), "bInterfaceClass")
		i.Subclass, ok[1] = c.hexByte(idir, e.Name(), "bInterfaceSubClass")
		i.Protocol, ok[2] = c.hexByte(idir, e.Name(), "bInterfaceProtocol")
		i.hasClass = ok == [3]bool{true, true, true}
		ifaces = append(ifaces, i)
	}
	slices.SortFunc(ifaces, func(a, b usbInterface) int { return natCompare(a.name, b.name) })
	return ifaces
}

func (c *classifier) hexByte(dir, iface, attr string) (uint8, bool) {
	v, err := readAttr(filepath.Join(dir, attr))
	if errors.Is(err, fs.ErrNotExist) {
		c.note("interface %s %s missing", iface, attr)
		return 0, false
	}
	if err != nil {
		c.note("interface %s %s unreadable: %s", iface, attr, cause(err))
		return 0, false
	}
	v = strings.TrimSpace(v)
	n, err := strconv.ParseUint(v, 16, 8)
	if err != nil {
		c.note("interface %s %s not hex: %s", iface, attr, clip(v))
		return 0, false
	}
	return uint8(n), true
}

// classes returns the interfaces whose class could be read.
func classes(ifaces []usbInterface) []USBInterface {
	var out []USBInterface
	for _, i := range ifaces {
		if i.hasClass {
			out = append(out, i.USBInterface)
		}
	}
	return out
}

// required reads an attribute that should exist, noting when it does not.
// ok is false when it could not be read.
func (c *classifier) required(dir, attr string) (v string, ok bool) {
	v, err := readAttr(filepath.Join(dir, attr))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.note("%s missing", attr)
	case err != nil:
		c.note("%s unreadable: %s", attr, cause(err))
	}
	return strings.TrimSpace(v), err == nil
}

// optional reads an attribute that may be absent, noting only when it
// exists but cannot be read.
func (c *classifier) optional(dir, attr string) string {
	v, err := readAttr(filepath.Join(dir, attr))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.note("%s unreadable: %s", attr, cause(err))
	}
	return strings.TrimSpace(v)
}

// resolve follows link into the device tree and returns the directory and
// its path below root, with forward slashes.
func resolve(root, link string) (dir, rel string, err error) {
	dir, err = filepath.EvalSymlinks(link)
	if err != nil {
		return "", "", err
	}
	rel, err = filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", "", fmt.Errorf("%s resolves outside the sysfs root", link)
	}
	return dir, filepath.ToSlash(rel), nil
}

// readAttr reads a sysfs attribute, without its trailing newline.
func readAttr(name string) (string, error) {
	b, err := limitread.File(name, maxAttr)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

func exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

// checkName rejects names that are not a single sysfs directory entry.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return errors.New("not a kernel device name")
	}
	return nil
}

func isOptical(name string) bool {
	n, ok := strings.CutPrefix(name, "sr")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 32)
	return err == nil
}

// cause is the innermost error of a file operation, without the path,
// e.g. "is a directory".
func cause(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// natCompare orders names with their digit runs compared as numbers, so
// "sdb2" comes before "sdb10" and "1-2:1.2" before "1-2:1.10".
func natCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := digits(a)
			nb, rb := digits(b)
			ta, tb := strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if c := len(ta) - len(tb); c != 0 {
				return c
			}
			if c := strings.Compare(ta, tb); c != 0 {
				return c
			}
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func digits(s string) (run, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}
