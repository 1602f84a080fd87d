package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/media"
)

// driftRemount makes the disk and the partition writable through device
// nodes of its own (no watch on /dev sees them opened) and remounts mnt
// read-write with mount(2).
func driftRemount(t *testing.T, mnt string, names ...string) error {
	dir := t.TempDir()
	var nodes []string
	for _, n := range names {
		var st syscall.Stat_t
		if err := syscall.Stat("/dev/"+n, &st); err != nil {
			return err
		}
		node := filepath.Join(dir, n)
		if err := syscall.Mknod(node, syscall.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return err
		}
		nodes = append(nodes, node)
	}
	// The agent may set the flags again before the remount (it is still
	// answering an earlier change): the remount is then refused (EACCES,
	// EROFS) and tried again, so that the remount's change of the mount
	// table is what the agent finally hears of.
	for try := 1; ; try++ {
		for _, node := range nodes {
			if err := media.SetReadOnly(node, false); err != nil {
				return err
			}
		}
		err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EROFS) || try == 20 {
			return fmt.Errorf("remount %s read-write (try %d): %w", mnt, try, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
