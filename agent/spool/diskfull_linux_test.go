package spool

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mnguard/mnguard/internal/testenv"
)

// smallFS mounts a fresh ext4 filesystem of sizeMiB on a real loop device
// and returns its mount point; all of it is undone at cleanup.
func smallFS(t *testing.T, sizeMiB int) string {
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
	// A loop device keeps the read-only flag of its last use (other
	// tests' agents enforce on loop devices): clear it before attaching.
	// LockLoops keeps other tests from taking the device in between.
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

// fill writes a file until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for size := len(buf); size > 0; {
		_, err := f.Write(buf[:size])
		if errors.Is(err, syscall.ENOSPC) {
			size /= 2 // the last blocks, as finely as they come
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	f.Sync()
}

// TestDiskFull fills a real 4 MiB ext4 filesystem under the spool: appends
// fail with the error (nothing half-stored), the events stored before stay
// deliverable, and once space returns the spool works again and a
// spool.events_dropped event counts exactly the events that could not be
// written. The file is never taken for damaged.
func TestDiskFull(t *testing.T) {
	mnt := smallFS(t, 4)
	path := filepath.Join(mnt, "spool.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	before := appendN(t, s, 50, "before")
	fill(t, filepath.Join(mnt, "filler"))

	// bbolt may still have free pages in its file: append until writes fail.
	var stored []uint64
	failed := 0
	for i := 0; failed < 20; i++ {
		if i > 20000 {
			t.Fatal("the full filesystem never refused an append")
		}
		e := event(fmt.Sprintf("full%d", i))
		e.Attributes["pad"] = strings.Repeat("x", 2000)
		seq, err := s.Append(e)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Logf("append error (not ENOSPC): %v", err)
			}
			failed++
			if e.Seq != 0 {
				t.Fatalf("failed Append set seq %d", e.Seq)
			}
			continue
		}
		stored = append(stored, seq)
	}
	t.Logf("disk full: %d appends stored in free pages, then %d refused", len(stored), failed)
	if st := s.Stats(); st.Unreported != uint64(failed) || st.WriteFailed != uint64(failed) {
		t.Errorf("Stats = %+v, want %d write failures unreported", st, failed)
	}
	// What was stored is still delivered while the disk is full.
	got := pendingSeqs(t, s, 0)
	want := append(append([]uint64{}, before...), stored...)
	if len(got) != len(want) {
		t.Fatalf("Pending while full: %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Pending while full[%d] = %d, want %d", i, got[i], want[i])
		}
	}
	if err := s.FlushLoss(); err == nil {
		t.Log("FlushLoss succeeded while full (bbolt found a free page)")
	}

	// Space returns.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushLoss(); err != nil {
		t.Fatalf("FlushLoss with space back: %v", err)
	}
	after := appendN(t, s, 5, "after")
	evs, err := s.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	var lost uint64
	for _, e := range evs {
		if e.GetType() == EventDropped && e.GetAttributes()["reason"] == "write_failed" {
			n, _ := strconv.ParseUint(e.GetAttributes()["count"], 10, 64)
			lost += n
		}
	}
	if lost != uint64(failed) {
		t.Errorf("write_failed loss events count %d, want %d", lost, failed)
	}
	if st := s.Stats(); st.Unreported != 0 {
		t.Errorf("Stats.Unreported = %d after the loss event was stored", st.Unreported)
	}
	// Acknowledging works, and the file reopens whole.
	if err := s.Ack(before); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if a := s.SetAsideFile(); a.Path != "" {
		t.Fatalf("spool set aside after a full disk: %+v", a)
	}
	if got := pendingSeqs(t, s, 0); len(got) != len(stored)+len(after)+1 {
		t.Errorf("Pending after reopen: %d events, want %d stored while full, %d after and the loss event", len(got), len(stored), len(after))
	}
}
