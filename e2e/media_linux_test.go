package e2e

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mnguard/mnguard/agent/media"
)

// driftRemount makes the disk and the partition writable through device
// nodes of its own (no watch on /dev sees them opened) and remounts mnt
// read-write with mount(2).
func driftRemount(t *testing.T, mnt string, names ...string) error {
	dir := t.TempDir()
	for _, n := range names {
		var st syscall.Stat_t
		if err := syscall.Stat("/dev/"+n, &st); err != nil {
			return err
		}
		node := filepath.Join(dir, n)
		if err := syscall.Mknod(node, syscall.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return err
		}
		if err := media.SetReadOnly(node, false); err != nil {
			return err
		}
	}
	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT, ""); err != nil {
		return fmt.Errorf("remount %s read-write: %w", mnt, err)
	}
	return nil
}
