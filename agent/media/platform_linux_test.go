//go:build linux

package media

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestHoldsSystem: a device whose node has the device number of the root
// filesystem is recognised as the system disk (and so never made
// read-only); any other is not. The node is made in a temporary directory;
// nothing is done to the real disk.
func TestHoldsSystem(t *testing.T) {
	testenv.RequireRoot(t, "mknod")
	var root unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		t.Fatal(err)
	}
	dev := t.TempDir()
	if err := unix.Mknod(filepath.Join(dev, "fakep1"), unix.S_IFBLK|0o600, int(root.Dev)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dev, "other"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Fatal(err)
	}
	mp, ok := holdsSystem(dev, Device{Name: "fake", Partitions: []string{"fakep1"}})
	if !ok || mp != "/" {
		t.Fatalf("holdsSystem = %q, %v; want the root filesystem recognised", mp, ok)
	}
	if err := errSystemDisk(Device{Name: "fake"}, mp); !strings.Contains(err.Error(), "left writable") {
		t.Errorf("error = %v", err)
	}
	if mp, ok := holdsSystem(dev, Device{Name: "other"}); ok {
		t.Errorf("an unrelated device holds %s", mp)
	}
}
