package media

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The trees under testdata/sysfs reproduce the sysfs layouts of real
// devices; testdata/sysfs/README.md says which.

const sector = 512

// sysfsCase is one tree and everything Sysfs must find in it.
type sysfsCase struct {
	tree             string
	treatAsRemovable []string
	disks            []Device
	fixed            []string // whole disks and partitions that are not removable
	mtp              []Device
}

var sysfsCases = []sysfsCase{
	{
		tree: "sandisk-usb-stick",
		disks: []Device{{
			Name:       "sdb",
			SysPath:    "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
			Bus:        BusUSB,
			Reason:     "usb ancestor 2-1",
			VendorID:   "0781",
			ProductID:  "5567",
			Serial:     "4C530001230809116354",
			Model:      "Cruzer Blade",
			SizeBytes:  31266816 * sector,
			Interfaces: []USBInterface{{Class: 0x08, Subclass: 0x06, Protocol: 0x50}},
			Partitions: []string{"sdb1"},
		}},
		fixed: []string{"sda", "sda1", "sda2", "sdb1"},
	},
	{
		tree: "usb-sd-reader",
		disks: []Device{{
			Name:       "sdc",
			SysPath:    "devices/pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0/host7/target7:0:0/7:0:0:0/block/sdc",
			Bus:        BusUSB,
			Reason:     "usb ancestor 1-3 (no serial)",
			VendorID:   "05e3",
			ProductID:  "0751",
			Model:      "STORAGE DEVICE",
			SizeBytes:  62333952 * sector,
			Interfaces: []USBInterface{{Class: 0x08, Subclass: 0x06, Protocol: 0x50}},
			Partitions: []string{"sdc1"},
		}},
		fixed: []string{"sda", "sda1", "sdc1"},
	},
	{
		tree: "laptop-sd-slot",
		disks: []Device{{
			Name:       "mmcblk0",
			SysPath:    "devices/pci0000:00/0000:00:1c.0/0000:3b:00.0/rtsx_pci_sdmmc.0/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
			Bus:        BusMMC,
			Reason:     "mmc ancestor mmc0:aaaa",
			Serial:     "0x1234abcd",
			Model:      "SC32G",
			SizeBytes:  62333952 * sector,
			Partitions: []string{"mmcblk0p1"},
		}},
		fixed: []string{"nvme0n1", "nvme0n1p1", "nvme0n1p2", "mmcblk0p1"},
	},
	{
		tree:  "phone-camera",
		fixed: []string{"sda"},
		mtp: []Device{{
			Name:       "1-2",
			SysPath:    "devices/pci0000:00/0000:00:14.0/usb1/1-2",
			Bus:        BusUSB,
			Reason:     "usb mtp interface 1-2:1.0",
			VendorID:   "18d1",
			ProductID:  "4ee1",
			Serial:     "28031FDH2005ZY",
			Model:      "Pixel 7",
			Interfaces: []USBInterface{{Class: 0xff, Subclass: 0xff, Protocol: 0x00}},
			MTP:        true,
		}, {
			Name:       "1-3",
			SysPath:    "devices/pci0000:00/0000:00:14.0/usb1/1-3",
			Bus:        BusUSB,
			Reason:     "usb still-image interface 1-3:1.0",
			VendorID:   "04a9",
			ProductID:  "32d1",
			Serial:     "8D3A5C0E1F2B4A6C9E7D1B3F5A2C4E6B",
			Model:      "Canon Digital Camera",
			Interfaces: []USBInterface{{Class: 0x06, Subclass: 0x01, Protocol: 0x01}},
			MTP:        true,
		}},
	},
	{
		tree: "optical",
		disks: []Device{{
			Name:    "sr0",
			SysPath: "devices/pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/block/sr0",
			Bus:     BusOptical,
			Reason:  "optical",
			Model:   "DVD+-RW GU90N",
		}, {
			Name:       "sr1",
			SysPath:    "devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host9/target9:0:0/9:0:0:0/block/sr1",
			Bus:        BusUSB,
			Reason:     "usb ancestor 1-4, optical",
			VendorID:   "0e8d",
			ProductID:  "1806",
			Serial:     "R8RS6YAB802H0X",
			Model:      "CDDVDW SE-208GB",
			SizeBytes:  9180416 * sector,
			Interfaces: []USBInterface{{Class: 0x08, Subclass: 0x02, Protocol: 0x50}},
		}},
		fixed: []string{"sda"},
	},
	{
		tree:  "vm-loop",
		fixed: []string{"vda", "vda1", "loop0", "loop0p1", "loop1", "loop2"},
	},
	{
		tree:             "vm-loop",
		treatAsRemovable: []string{"nbd*", "loop*"},
		disks: []Device{{
			Name:       "loop0",
			SysPath:    "devices/virtual/block/loop0",
			Bus:        BusTest,
			Reason:     "matches treat_as_removable loop*",
			VendorID:   "0000",
			ProductID:  "0000",
			Serial:     "stick-a.img",
			SizeBytes:  32768 * sector,
			Partitions: []string{"loop0p1"},
		}, {
			Name:      "loop1",
			SysPath:   "devices/virtual/block/loop1",
			Bus:       BusTest,
			Reason:    "matches treat_as_removable loop* (no backing file)",
			VendorID:  "0000",
			ProductID: "0000",
		}, {
			Name:      "loop2",
			SysPath:   "devices/virtual/block/loop2",
			Bus:       BusTest,
			Reason:    "matches treat_as_removable loop* (backing file deleted)",
			VendorID:  "0000",
			ProductID: "0000",
			Serial:    "stick-b.img",
			SizeBytes: 32768 * sector,
		}},
		fixed: []string{"vda", "vda1", "loop0p1"},
	},
	{
		tree: "firewire-disk",
		disks: []Device{{
			Name:       "sdd",
			SysPath:    "devices/pci0000:00/0000:00:1c.2/0000:05:00.0/fw1/fw1.0/host8/target8:0:0/8:0:0:0/block/sdd",
			Bus:        BusFirewire,
			Reason:     "firewire ancestor fw1",
			Serial:     "0x0030e00200a1b2c3",
			Model:      "00BEVT-22A0RT0",
			SizeBytes:  976773168 * sector,
			Partitions: []string{"sdd1"},
		}},
		fixed: []string{"sda", "sdd1"},
	},
	{
		tree: "thunderbolt-nvme",
		disks: []Device{{
			Name:       "nvme1n1",
			SysPath:    "devices/pci0000:00/0000:00:07.0/0000:2a:00.0/0000:2b:01.0/0000:2c:00.0/nvme/nvme1/nvme1n1",
			Bus:        BusOther,
			Reason:     "removable pci ancestor 0000:2c:00.0",
			Serial:     "S4EWNX0R123456B",
			Model:      "Samsung SSD 970 EVO Plus 1TB",
			SizeBytes:  1953525168 * sector,
			Partitions: []string{"nvme1n1p1"},
		}},
		fixed: []string{"nvme0n1", "nvme1n1p1"},
	},
}

func TestSysfsTrees(t *testing.T) {
	for _, tc := range sysfsCases {
		t.Run(tc.tree+strings.Join(tc.treatAsRemovable, ","), func(t *testing.T) {
			s := Sysfs{Root: filepath.Join("testdata", "sysfs", tc.tree), TreatAsRemovable: tc.treatAsRemovable}
			got, err := s.Disks()
			if err != nil {
				t.Fatalf("Disks: %v", err)
			}
			checkDevices(t, "Disks", got, tc.disks)
			for _, want := range tc.disks {
				d, ok, err := s.Disk(want.Name)
				if err != nil || !ok {
					t.Errorf("Disk(%s) = ok %v, err %v; want removable", want.Name, ok, err)
					continue
				}
				checkDevices(t, "Disk("+want.Name+")", []Device{d}, []Device{want})
			}
			for _, name := range tc.fixed {
				if d, ok, err := s.Disk(name); ok || err != nil {
					t.Errorf("Disk(%s) = %+v, ok %v, err %v; want not removable", name, d, ok, err)
				}
			}
			mtp, err := s.MTPDevices()
			if err != nil {
				t.Fatalf("MTPDevices: %v", err)
			}
			checkDevices(t, "MTPDevices", mtp, tc.mtp)
			for _, d := range tc.mtp {
				if ok, err := s.Authorized(d.Name); !ok || err != nil {
					t.Errorf("Authorized(%s) = %v, %v; want true", d.Name, ok, err)
				}
			}
		})
	}
}

func checkDevices(t *testing.T, what string, got, want []Device) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d devices, want %d:\n%s", what, len(got), len(want), dump(got))
		return
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("%s[%d]:\n got %s\nwant %s", what, i, dump(got[i:i+1]), dump(want[i:i+1]))
		}
	}
}

func dump(ds []Device) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%+v\n", d)
	}
	return b.String()
}

// copyTree copies a testdata tree, symlinks as symlinks, so that a test can
// break it.
func copyTree(t *testing.T, tree string) string {
	t.Helper()
	src := filepath.Join("testdata", "sysfs", tree)
	dst := filepath.Join(t.TempDir(), tree)
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case e.IsDir():
			return os.MkdirAll(to, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, 0o644)
		}
	})
	if err != nil {
		t.Fatalf("copy %s: %v", tree, err)
	}
	return dst
}

const (
	stickUSB  = "devices/pci0000:00/0000:00:14.0/usb2/2-1"
	stickDisk = stickUSB + "/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
)

// TestSysfsOddAttributes breaks one attribute of a removable disk at a time:
// the disk must still be classified removable, the field left empty, and
// the reason must say what was odd.
func TestSysfsOddAttributes(t *testing.T) {
	stick := sysfsCases[0].disks[0]
	write := func(file, content string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, file), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(files ...string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			for _, f := range files {
				if err := os.Remove(filepath.Join(root, f)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// asDir replaces an attribute with a directory: reading it fails.
	asDir := func(file string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			p := filepath.Join(root, file)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(p, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// loop makes a symlink point at itself: everything below it is
	// unreadable, even for root.
	loop := func(link string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			p := filepath.Join(root, link)
			os.RemoveAll(p)
			if err := os.Symlink(filepath.Base(p), p); err != nil {
				t.Fatal(err)
			}
		}
	}
	edit := func(f func(*Device)) Device {
		d := stick
		d.Interfaces = append([]USBInterface(nil), stick.Interfaces...)
		f(&d)
		return d
	}
	const eloop = "too many levels of symbolic links"
	cases := []struct {
		name   string
		tree   string
		disk   string
		treat  []string
		breakf func(t *testing.T, root string)
		want   Device
	}{
		{"idVendor missing", "", "", nil, remove(stickUSB + "/idVendor"), edit(func(d *Device) {
			d.VendorID = ""
			d.Reason += " (idVendor missing)"
		})},
		{"idVendor not hex", "", "", nil, write(stickUSB+"/idVendor", "zzzz\n"), edit(func(d *Device) {
			d.VendorID = ""
			d.Reason += ` (idVendor not 4 hex digits: "zzzz")`
		})},
		{"idVendor empty", "", "", nil, write(stickUSB+"/idVendor", "\n"), edit(func(d *Device) {
			d.VendorID = ""
			d.Reason += ` (idVendor not 4 hex digits: "")`
		})},
		{"idProduct too long", "", "", nil, write(stickUSB+"/idProduct", "55670\n"), edit(func(d *Device) {
			d.ProductID = ""
			d.Reason += ` (idProduct not 4 hex digits: "55670")`
		})},
		{"idVendor upper case", "", "", nil, write(stickUSB+"/idVendor", "0A5C\n"), edit(func(d *Device) {
			d.VendorID = "0a5c"
		})},
		{"usb device stripped bare", "", "", nil, remove(stickUSB+"/idVendor", stickUSB+"/idProduct", stickUSB+"/serial", stickUSB+"/product", stickUSB+"/subsystem"), edit(func(d *Device) {
			d.VendorID, d.ProductID, d.Serial = "", "", ""
			d.Reason += " (idVendor missing; idProduct missing; no serial)"
		})},
		{"serial unreadable", "", "", nil, asDir(stickUSB + "/serial"), edit(func(d *Device) {
			d.Serial = ""
			d.Reason += " (serial unreadable: is a directory)"
		})},
		{"size empty", "", "", nil, write(stickDisk+"/size", ""), edit(func(d *Device) {
			d.SizeBytes = 0
			d.Reason += ` (size not a number of sectors: "")`
		})},
		{"size garbage", "", "", nil, write(stickDisk+"/size", "12abc\n"), edit(func(d *Device) {
			d.SizeBytes = 0
			d.Reason += ` (size not a number of sectors: "12abc")`
		})},
		{"size overflows", "", "", nil, write(stickDisk+"/size", "18446744073709551615\n"), edit(func(d *Device) {
			d.SizeBytes = 0
			d.Reason += ` (size not a number of sectors: "18446744073709551615")`
		})},
		{"size missing", "", "", nil, remove(stickDisk + "/size"), edit(func(d *Device) {
			d.SizeBytes = 0
			d.Reason += " (size missing)"
		})},
		{"model longer than a page", "", "", nil, write(stickDisk+"/../../model", strings.Repeat("x", 5000)), edit(func(d *Device) {
			d.Reason += " (device/model unreadable: longer than 4096 bytes)"
		})},
		{"device link unreadable", "", "", nil, loop(stickDisk + "/device"), edit(func(d *Device) {
			d.Reason += " (device/type unreadable: " + eloop + "; device/model unreadable: " + eloop + ")"
		})},
		{"interface class unreadable", "", "", nil, asDir(stickUSB + "/2-1:1.0/bInterfaceClass"), edit(func(d *Device) {
			d.Interfaces = nil
			d.Reason += " (interface 2-1:1.0 bInterfaceClass unreadable: is a directory)"
		})},
		{"interface class not hex", "", "", nil, write(stickUSB+"/2-1:1.0/bInterfaceProtocol", "P\n"), edit(func(d *Device) {
			d.Interfaces = nil
			d.Reason += ` (interface 2-1:1.0 bInterfaceProtocol not hex: "P")`
		})},
		{"removable garbage", "", "", nil, write(stickDisk+"/removable", "\x00\xff"), stick},
		{"partition entry is a dangling link", "", "", nil, func(t *testing.T, root string) {
			os.RemoveAll(filepath.Join(root, stickDisk, "sdb1"))
			if err := os.Symlink("gone", filepath.Join(root, stickDisk, "sdb1")); err != nil {
				t.Fatal(err)
			}
		}, edit(func(d *Device) { d.Partitions = nil })},
		{"mmc card without subsystem link or serial", "laptop-sd-slot", "mmcblk0", nil,
			remove("devices/pci0000:00/0000:00:1c.0/0000:3b:00.0/rtsx_pci_sdmmc.0/mmc_host/mmc0/mmc0:aaaa/subsystem",
				"devices/pci0000:00/0000:00:1c.0/0000:3b:00.0/rtsx_pci_sdmmc.0/mmc_host/mmc0/mmc0:aaaa/serial"),
			func() Device {
				d := sysfsCases[2].disks[0]
				d.Serial = ""
				d.Reason += " (serial missing)"
				return d
			}()},
		{"emmc", "laptop-sd-slot", "mmcblk0", nil,
			write("devices/pci0000:00/0000:00:1c.0/0000:3b:00.0/rtsx_pci_sdmmc.0/mmc_host/mmc0/mmc0:aaaa/type", "MMC\n"),
			func() Device {
				d := sysfsCases[2].disks[0]
				d.Reason += " (type MMC: may be soldered eMMC)"
				return d
			}()},
		{"loop backing_file missing", "vm-loop", "loop0", []string{"loop*"},
			remove("devices/virtual/block/loop0/loop/backing_file"),
			func() Device {
				d := sysfsCases[6].disks[0]
				d.Serial = ""
				d.Reason += " (no backing file)"
				return d
			}()},
		{"loop backing_file empty", "vm-loop", "loop0", []string{"loop*"},
			write("devices/virtual/block/loop0/loop/backing_file", "\n"),
			func() Device {
				d := sysfsCases[6].disks[0]
				d.Serial = ""
				d.Reason += " (backing_file empty)"
				return d
			}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tree, disk := tc.tree, tc.disk
			if tree == "" {
				tree, disk = "sandisk-usb-stick", "sdb"
			}
			root := copyTree(t, tree)
			tc.breakf(t, root)
			s := Sysfs{Root: root, TreatAsRemovable: tc.treat}
			d, ok, err := s.Disk(disk)
			if err != nil || !ok {
				t.Fatalf("Disk(%s) = ok %v, err %v; want removable", disk, ok, err)
			}
			checkDevices(t, "Disk", []Device{d}, []Device{tc.want})
			all, err := s.Disks()
			if err != nil {
				t.Fatalf("Disks: %v", err)
			}
			if !slices.ContainsFunc(all, func(d Device) bool { return reflect.DeepEqual(d, tc.want) }) {
				t.Errorf("Disks = %s, want it to hold %s", dump(all), disk)
			}
		})
	}
}

func TestSysfsVanished(t *testing.T) {
	root := copyTree(t, "sandisk-usb-stick")
	s := Sysfs{Root: root}
	// The stick is pulled: its directory goes, the class/block link stays
	// a moment longer.
	if err := os.RemoveAll(filepath.Join(root, stickDisk)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sdb", "sdz"} {
		if _, ok, err := s.Disk(name); ok || !errors.Is(err, ErrVanished) {
			t.Errorf("Disk(%s) = ok %v, err %v; want ErrVanished", name, ok, err)
		}
	}
	devs, err := s.Disks()
	if err != nil || len(devs) != 0 {
		t.Errorf("Disks = %s, %v; want none, no error", dump(devs), err)
	}
	if err := os.RemoveAll(filepath.Join(root, stickUSB)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authorized("2-1"); !errors.Is(err, ErrVanished) {
		t.Errorf("Authorized(2-1) after unplug: err %v, want ErrVanished", err)
	}
	if devs, err := s.MTPDevices(); err != nil || len(devs) != 0 {
		t.Errorf("MTPDevices after unplug = %s, %v; want none", dump(devs), err)
	}
}

func TestSysfsBadInput(t *testing.T) {
	s := Sysfs{Root: filepath.Join("testdata", "sysfs", "sandisk-usb-stick")}
	for _, name := range []string{"", ".", "..", "../sdb", "block/sdb", "sdb\x00"} {
		if _, ok, err := s.Disk(name); ok || err == nil || errors.Is(err, ErrVanished) {
			t.Errorf("Disk(%q) = ok %v, err %v; want an invalid-name error", name, ok, err)
		}
		if _, err := s.Authorized(name); err == nil || errors.Is(err, ErrVanished) {
			t.Errorf("Authorized(%q): err %v; want an invalid-name error", name, err)
		}
	}
	if _, err := (Sysfs{Root: filepath.Join(t.TempDir(), "none")}).Disks(); err == nil {
		t.Error("Disks on a missing root: no error")
	}
	if devs, err := (Sysfs{Root: filepath.Join("testdata", "sysfs", "vm-loop")}).MTPDevices(); err != nil || devs != nil {
		t.Errorf("MTPDevices without a usb bus = %v, %v; want none, no error", devs, err)
	}

	// A link out of the tree is not followed.
	root := copyTree(t, "sandisk-usb-stick")
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "removable"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "class", "block", "sdx")); err != nil {
		t.Fatal(err)
	}
	s = Sysfs{Root: root}
	if _, ok, err := s.Disk("sdx"); ok || err == nil {
		t.Errorf("Disk(sdx) outside the root: ok %v, err %v; want an error", ok, err)
	}
	devs, err := s.Disks()
	if err == nil || len(devs) != 1 || devs[0].Name != "sdb" {
		t.Errorf("Disks with one bad entry = %s, %v; want sdb and an error", dump(devs), err)
	}
}

func TestSysfsAuthorized(t *testing.T) {
	root := copyTree(t, "phone-camera")
	s := Sysfs{Root: root}
	auth := filepath.Join(root, "devices/pci0000:00/0000:00:14.0/usb1/1-2/authorized")
	for _, tc := range []struct {
		content string
		want    bool
		ok      bool
	}{{"1\n", true, true}, {"0\n", false, true}, {"2\n", false, false}, {"", false, false}} {
		if err := os.WriteFile(auth, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := s.Authorized("1-2")
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("authorized %q: got %v, %v", tc.content, got, err)
		}
	}
}

func TestNatCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"sdb2", "sdb10", -1}, {"sdb10", "sdb2", 1}, {"sdb1", "sdb1", 0},
		{"1-2:1.2", "1-2:1.10", -1}, {"nvme0n1p9", "nvme0n1p10", -1},
		{"sdb01", "sdb1", 1}, {"a", "ab", -1}, {"sda", "sdb", -1},
	} {
		got := natCompare(tc.a, tc.b)
		if (got < 0) != (tc.want < 0) || (got > 0) != (tc.want > 0) {
			t.Errorf("natCompare(%q, %q) = %d, want sign of %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestSysfsMTPOdd: a phone or camera with odd attributes is still found.
func TestSysfsMTPOdd(t *testing.T) {
	const phone = "devices/pci0000:00/0000:00:14.0/usb1/1-2"
	const camera = "devices/pci0000:00/0000:00:14.0/usb1/1-3"
	root := copyTree(t, "phone-camera")
	// The phone's class is unreadable, but its interface is named MTP.
	if err := os.Remove(filepath.Join(root, phone, "1-2:1.0", "bInterfaceClass")); err != nil {
		t.Fatal(err)
	}
	// The camera's IDs are garbage and its serial is gone.
	if err := os.WriteFile(filepath.Join(root, camera, "idVendor"), []byte("\xff\xfe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, camera, "serial")); err != nil {
		t.Fatal(err)
	}
	devs, err := Sysfs{Root: root}.MTPDevices()
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(sysfsCases[3].mtp)
	want[0].Interfaces = nil
	want[0].Reason += " (interface 1-2:1.0 bInterfaceClass missing)"
	want[1].VendorID, want[1].Serial = "", ""
	want[1].Reason += ` (idVendor not 4 hex digits: "\xff\xfe"; no serial)`
	checkDevices(t, "MTPDevices", devs, want)
}
