package daemon

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// mountSmallExt4 mounts a fresh ext4 filesystem of sizeMiB on a real loop
// device and returns its mount point; all of it is undone at cleanup.
func mountSmallExt4(t *testing.T, sizeMiB int) string {
	t.Helper()
	testenv.RequireRoot(t, "a loop-mounted filesystem")
	testenv.LockLoops(t)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(sizeMiB)<<20); err != nil {
		t.Fatal(err)
	}
	run("mkfs.ext4", "-q", "-F", "-m", "0", img)
	// A loop device keeps the read-only flag of its last use (agents under
	// test enforce on loop devices): clear it before attaching.
	dev := run("losetup", "--find")
	run("blockdev", "--setrw", dev)
	run("losetup", dev, img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt := t.TempDir()
	run("mount", "-t", "ext4", dev, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	return mnt
}

// fillDisk writes a file until the filesystem refuses more.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for size := len(buf); size > 0; {
		if _, err := f.Write(buf[:size]); errors.Is(err, syscall.ENOSPC) {
			size /= 2
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpoolDiskFull: the agent's spool on a real 4 MiB ext4 that fills up.
// Events emitted meanwhile are refused by the spool (logged, counted; the
// agent goes on), the events stored before are still delivered to a real
// collector over mutual TLS, nothing leaves the spool that the collector
// did not acknowledge, and once space is back the loss reaches the
// collector as a spool.events_dropped event with the exact count.
func TestSpoolDiskFull(t *testing.T) {
	mnt := mountSmallExt4(t, 4)
	p := newTestPKI(t)
	st := &sharedStore{stored: map[uint64]string{}, delivered: map[uint64]int{}, events: map[uint64]*mnguardv1.Event{}}
	a := startReplica(t, "A", p, st)
	logs := &lockedWriter{}
	d := testDaemonAt(t, p, []string{a.addr}, logs, filepath.Join(mnt, "spool.db"))
	ctx := context.Background()

	for range 10 {
		d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, "before the disk filled", nil)
	}
	stored := d.spool.LastSeq()
	fillDisk(t, filepath.Join(mnt, "filler"))
	refused := 0
	for range 400 {
		before := d.spool.Stats().WriteFailed
		d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, strings.Repeat("while full ", 100), nil)
		if d.spool.Stats().WriteFailed > before {
			refused++
		}
		if refused >= 7 {
			break
		}
	}
	if refused < 7 {
		t.Fatalf("the full disk refused %d appends", refused)
	}
	if !strings.Contains(logs.String(), "event lost: spool append failed") {
		t.Errorf("no log of the refused events:\n%s", logs.String())
	}
	// What was stored before is delivered while the disk is full.
	if err := d.send(ctx, nil, 0); err != nil {
		t.Fatalf("report while the disk is full: %v", err)
	}
	st.mu.Lock()
	for seq := uint64(1); seq <= stored; seq++ {
		if st.stored[seq] == "" {
			t.Errorf("event %d, stored in the spool before the disk filled, not delivered", seq)
		}
	}
	st.mu.Unlock()
	// Nothing left the spool unacknowledged: whatever is still in it was
	// either not acknowledged (the delete failed on the full disk) or is
	// stored at the collector.
	pending, err := d.spool.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disk full: %d appends refused, %d events delivered, %d still spooled", refused, stored, len(pending))

	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	d.reportLoss()
	if err := d.send(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.spool.Len(); n != 0 {
		t.Errorf("%d events left in the spool after a report with space back", n)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for seq := uint64(1); seq <= d.spool.LastSeq(); seq++ {
		if st.stored[seq] == "" {
			t.Errorf("event %d never stored", seq)
		}
	}
	var lost uint64
	for _, e := range st.events {
		if e.GetType() == spool.EventDropped && e.GetAttributes()["reason"] == "write_failed" {
			n, _ := strconv.ParseUint(e.GetAttributes()["count"], 10, 64)
			lost += n
		}
	}
	if lost != uint64(refused) {
		t.Errorf("the collector was told of %d events lost, %d were refused", lost, refused)
	}
	if got := strconv.FormatUint(d.spool.Stats().Unreported, 10); got != "0" {
		t.Errorf("write failures not yet reported: %s", got)
	}
}
