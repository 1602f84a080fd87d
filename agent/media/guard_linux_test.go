package media

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// guardNote is the uevent the kernel sends for the block device name of the
// sysfs tree at root.
func guardNote(t *testing.T, root, name string) Notification {
	t.Helper()
	real, err := filepath.EvalSymlinks(filepath.Join(root, "class", "block", name))
	if err != nil {
		t.Fatal(err)
	}
	absRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(absRoot, real)
	if err != nil {
		t.Fatal(err)
	}
	n := Notification{Action: "add", Subsystem: "block", DevPath: "/" + filepath.ToSlash(rel), DevName: name, DevType: "disk"}
	if exists(filepath.Join(real, "partition")) {
		n.DevType = "partition"
	}
	return n
}

// TestGuardAgreesWithClassification: the guard's quick look counts a disk
// removable only when the full classification does (it must never set
// read-only a disk the agent leaves alone), and it does catch the USB,
// MMC, Firewire, optical and removable=1 disks of every sysfs tree, for
// the disk's uevent and its partitions'.
func TestGuardAgreesWithClassification(t *testing.T) {
	trees, err := os.ReadDir(filepath.Join("testdata", "sysfs"))
	if err != nil {
		t.Fatal(err)
	}
	// What the quick look must catch; the rest is left to the full
	// enforcement (Thunderbolt's removable PCI port, treat_as_removable
	// without the pattern).
	want := map[string][]string{
		"sandisk-usb-stick": {"sdb", "sdb1"},
		"usb-sd-reader":     {"sdc", "sdc1"},
		"laptop-sd-slot":    {"mmcblk0", "mmcblk0p1"},
		"optical":           {"sr0", "sr1"},
		"firewire-disk":     {"sdd"},
	}
	checked := 0
	for _, tree := range trees {
		if !tree.IsDir() {
			continue
		}
		root := filepath.Join("testdata", "sysfs", tree.Name())
		for _, patterns := range [][]string{nil, {"loop*"}} {
			p := NewPlatform(Options{SysRoot: root, TreatAsRemovable: patterns}).(*linuxPlatform)
			entries, err := os.ReadDir(filepath.Join(root, "class", "block"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				n := guardNote(t, root, e.Name())
				disk := e.Name()
				if n.DevType == "partition" {
					disk = filepath.Base(filepath.Dir(n.DevPath))
				}
				quick := p.quickRemovable(disk, n)
				_, full, err := p.sys.Disk(disk)
				if err != nil {
					t.Fatalf("%s %s: %v", tree.Name(), disk, err)
				}
				if quick && !full {
					t.Errorf("%s (patterns %q): the guard counts %s removable, the classification does not", tree.Name(), patterns, e.Name())
				}
				if patterns == nil && slices.Contains(want[tree.Name()], e.Name()) && !quick {
					t.Errorf("%s: the guard misses %s", tree.Name(), e.Name())
				}
				if patterns != nil && strings.HasPrefix(disk, "loop") && !quick {
					t.Errorf("%s: the guard misses %s matched by loop*", tree.Name(), e.Name())
				}
				checked++
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d block devices looked at", checked)
	}
}

// TestGuardLoop runs the guard on a real loop device: it sets the disk and
// the partition of a partition's uevent read-only, leaves alone a device
// the skip function names (an exempted one), a disk that no pattern
// makes removable, and a loop device without a backing file.
func TestGuardLoop(t *testing.T) {
	l := enfNewLoopDisk(t)
	p := NewPlatform(Options{TreatAsRemovable: []string{l.name}}).(*linuxPlatform)
	devPath := "/devices/virtual/block/" + l.name
	diskNote := Notification{Action: "change", Subsystem: "block", DevPath: devPath, DevName: l.name, DevType: "disk"}
	partNote := Notification{Action: "add", Subsystem: "block", DevPath: devPath + "/" + l.parts[1], DevName: l.parts[1], DevType: "partition"}
	ro := func(name string) bool {
		t.Helper()
		v, err := IsReadOnly("/dev/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	clear := func() {
		t.Helper()
		for _, n := range append([]string{l.name}, l.parts...) {
			if err := SetReadOnly("/dev/"+n, false); err != nil {
				t.Fatal(err)
			}
		}
	}

	clear()
	if did, err := p.Guard(diskNote, func(string) bool { return true }); err != nil || did != "" || ro(l.name) {
		t.Fatalf("Guard of a skipped disk = %q, %v; read-only %v", did, err, ro(l.name))
	}
	other := NewPlatform(Options{TreatAsRemovable: []string{"nothing*"}}).(*linuxPlatform)
	if did, err := other.Guard(diskNote, nil); err != nil || did != "" || ro(l.name) {
		t.Fatalf("Guard of a disk no pattern matches = %q, %v; read-only %v", did, err, ro(l.name))
	}
	if did, err := p.Guard(Notification{Action: "remove", Subsystem: "block", DevPath: devPath, DevName: l.name, DevType: "disk"}, nil); err != nil || did != "" {
		t.Fatalf("Guard of a remove = %q, %v", did, err)
	}

	start := time.Now()
	did, err := p.Guard(diskNote, func(disk string) bool {
		if disk != l.name {
			t.Errorf("skip asked about %q, want %q", disk, l.name)
		}
		return false
	})
	took := time.Since(start)
	if err != nil || did != l.name || !ro(l.name) {
		t.Fatalf("Guard of the disk = %q, %v; read-only %v", did, err, ro(l.name))
	}
	t.Logf("Guard of %s took %v", l.name, took)
	if did, err := p.Guard(diskNote, nil); err != nil || did != "" {
		t.Errorf("Guard again = %q, %v; want nothing to do", did, err)
	}

	// A partition's uevent: the partition gets its own flag too, so that
	// it stays read-only when someone clears the disk's alone.
	clear()
	if did, err := p.Guard(partNote, nil); err != nil || did != l.name+" "+l.parts[1] {
		t.Fatalf("Guard of %s = %q, %v", l.parts[1], did, err)
	}
	if err := SetReadOnly(l.dev, false); err != nil {
		t.Fatal(err)
	}
	if !ro(l.parts[1]) {
		t.Errorf("%s writable once the disk's flag is cleared: the guard did not set its own", l.parts[1])
	}

	// Without a backing file (size 0): left alone, or the next attach of
	// this loop device would start read-only.
	clear()
	enfRun(t, "losetup", "-d", l.dev)
	l.detached = true
	if !enfWaitFor(2*time.Second, func() bool {
		b, _ := os.ReadFile("/sys/block/" + l.name + "/size")
		return strings.TrimSpace(string(b)) == "0"
	}) {
		t.Fatalf("%s not detached", l.name)
	}
	if did, err := p.Guard(diskNote, nil); err != nil || did != "" || ro(l.name) {
		t.Errorf("Guard of a detached loop device = %q, %v; read-only %v", did, err, ro(l.name))
	}
}
