package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sh runs a command and fails the test when it fails.
func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopDisk is a loop device standing in for a USB stick: an image file
// attached with partition scanning, optionally partitioned and formatted.
type loopDisk struct {
	name  string // loopN
	image string
	parts []string // loopNp1, ...
}

func (l *loopDisk) dev() string { return "/dev/" + l.name }

// newLoopDisk makes a sizeMiB image (callers hold testenv.LockLoops), partitions it with one partition per
// filesystem type given ("ext4", "vfat"), formats the partitions inside
// the image file, and only then attaches it, as a stick is plugged in
// ready-made (an agent may make it read-only at once). Cleanup unmounts
// whatever is mounted from it and detaches it.
func newLoopDisk(t testing.TB, sizeMiB int, fstypes ...string) *loopDisk {
	t.Helper()
	dir := t.TempDir()
	l := &loopDisk{image: filepath.Join(dir, fmt.Sprintf("stick-%d-%d.img", os.Getpid(), time.Now().UnixNano()%1e6))}
	if err := os.WriteFile(l.image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(l.image, int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	if len(fstypes) > 0 {
		var layout strings.Builder
		layout.WriteString("label: dos\n")
		each := (sizeMiB - 2) / len(fstypes)
		for range fstypes {
			fmt.Fprintf(&layout, ",%dM,83\n", each)
		}
		cmd := exec.Command("sfdisk", "--quiet", l.image)
		cmd.Stdin = strings.NewReader(layout.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		var table struct {
			PartitionTable struct {
				Partitions []struct{ Start, Size int64 }
			}
		}
		if err := json.Unmarshal([]byte(sh(t, "sfdisk", "--json", l.image)), &table); err != nil {
			t.Fatal(err)
		}
		img, err := os.OpenFile(l.image, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		for i, p := range table.PartitionTable.Partitions {
			part := filepath.Join(dir, fmt.Sprintf("part%d", i))
			if err := os.WriteFile(part, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(part, p.Size*512); err != nil {
				t.Fatal(err)
			}
			if fstypes[i] == "vfat" {
				sh(t, "mkfs.vfat", part)
			} else {
				sh(t, "mkfs.ext4", "-q", "-F", part)
			}
			data, err := os.ReadFile(part)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteAt(data, p.Start*512); err != nil {
				t.Fatal(err)
			}
			os.Remove(part)
		}
		if err := img.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// A loop device keeps the read-only flag of its last use across detach
	// and attach (unlike a real stick, which comes with a new device):
	// clear it before attaching, as a fresh stick would be. LockLoops keeps
	// other tests from taking the device in between.
	free := sh(t, "losetup", "--find")
	sh(t, "blockdev", "--setrw", free)
	sh(t, "losetup", "--partscan", free, l.image)
	l.name = filepath.Base(free)
	t.Cleanup(func() { l.detach(t) })
	for i := range fstypes {
		l.parts = append(l.parts, fmt.Sprintf("%sp%d", l.name, i+1))
	}
	if len(l.parts) == 0 {
		return l
	}
	// Partition nodes appear asynchronously after --partscan; kernels
	// built without partition-table parsers (this machine's) need partx.
	deadline := time.Now().Add(5 * time.Second)
	partx := time.Now().Add(300 * time.Millisecond)
	for _, p := range l.parts {
		for {
			if _, err := os.Stat("/dev/" + p); err == nil {
				break
			}
			if !partx.IsZero() && time.Now().After(partx) {
				sh(t, "partx", "--add", l.dev())
				partx = time.Time{}
			}
			if time.Now().After(deadline) {
				t.Fatalf("/dev/%s did not appear", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return l
}

// detach unmounts every mount of the disk and its partitions, then detaches
// it; safe to call twice.
func (l *loopDisk) detach(t testing.TB) {
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[0] == l.dev() || strings.HasPrefix(f[0], l.dev()+"p")) {
			exec.Command("umount", "-l", f[1]).Run()
		}
	}
	// Partitions added by partx outlive the detach unless deleted first.
	exec.Command("partx", "--delete", l.dev()).Run()
	if out, err := exec.Command("losetup", "-d", l.dev()).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such device") {
		// Already detached by the test is fine.
		if _, statErr := os.Stat("/sys/block/" + l.name + "/loop/backing_file"); statErr == nil {
			t.Logf("losetup -d %s: %v %s", l.name, err, out)
		}
	}
}

// mount mounts partition p read-write on a new directory and returns it.
// A vfat partition on a kernel without vfat (this machine's) is mounted
// through fusefat, a FUSE daemon that writes to the partition's node.
func (l *loopDisk) mount(t testing.TB, part string) string {
	t.Helper()
	dir := t.TempDir()
	fstype := sh(t, "blkid", "-o", "value", "-s", "TYPE", "/dev/"+part)
	kernelFS, _ := os.ReadFile("/proc/filesystems")
	if fstype == "vfat" && !strings.Contains(string(kernelFS), "\tvfat\n") {
		sh(t, "fusefat", "-o", "rw+,fsname=/dev/"+part, "/dev/"+part, dir)
	} else {
		sh(t, "mount", "-o", "rw", "/dev/"+part, dir)
	}
	// Runs before t.TempDir's removal, which must not recurse into a mount.
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func getro(t testing.TB, dev string) string {
	t.Helper()
	return sh(t, "blockdev", "--getro", "/dev/"+dev)
}
