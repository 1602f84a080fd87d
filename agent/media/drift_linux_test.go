package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// driftSysRO reads a node's read-only flag from sysfs (0 or 1).
func driftSysRO(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("/sys/class/block/" + name + "/ro")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestDriftRepairedAtOnce: with the backstop rescan an hour away, drift on
// a protected, mounted stick is repaired as it happens — the disk's flag
// cleared with blockdev --setrw, the partitions' and the disk's, all
// cleared with the filesystem remounted read-write at once, and flags
// cleared through private device nodes then the filesystem remounted
// read-write — because the agent hears of it (inotify on the nodes, the
// mount table's poll), not because it rescans.
func TestDriftRepairedAtOnce(t *testing.T) {
	enfLockLoops(t)
	l := enfAttachLoopDisk(t, "drift.img")
	mp := enfMount(t, l.part(0), "ext4")
	m, ev := exStartManager(t, []string{l.name}, &exemptions{}, &warnings{}, time.Minute)
	exWaitFor(t, mp+" read-only", 5*time.Second, func() bool { return benchMountRO(mp) })
	before := ev.count(EventDriftRepaired)
	protected := func() bool {
		return driftSysRO(t, l.name) == "1" && driftSysRO(t, l.parts[0]) == "1" && driftSysRO(t, l.parts[1]) == "1" && benchMountRO(mp)
	}
	steps := []struct {
		name string
		undo func() error
	}{
		{"blockdev --setrw disk", func() error { return exec.Command("blockdev", "--setrw", l.dev).Run() }},
		// A partition reads back read-only through its disk: clear both.
		{"blockdev --setrw partitions and disk", func() error {
			return exec.Command("blockdev", "--setrw", l.part(0), l.part(1), l.dev).Run()
		}},
		{"setrw all and remount read-write", func() error {
			// As one would by hand, as fast as a shell runs it; whether
			// the remount wins the race or not, the end must be read-only.
			exec.Command("sh", "-c", fmt.Sprintf("blockdev --setrw %s %s %s; mount -o remount,rw %s", l.dev, l.part(0), l.part(1), mp)).Run()
			return nil
		}},
		// Through nodes of its own (no inotify watch sees them closed),
		// then a remount read-write, which succeeds: the mount table's
		// change is what the agent hears of.
		{"setrw through private nodes and remount read-write", func() error {
			dir := t.TempDir()
			nodes := map[string]string{}
			for _, n := range []string{l.name, l.parts[0]} {
				var st unix.Stat_t
				if err := unix.Stat("/dev/"+n, &st); err != nil {
					return err
				}
				nodes[n] = dir + "/" + n
				if err := unix.Mknod(nodes[n], unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
					return err
				}
			}
			// The agent may still be answering the last step (or hear
			// of this one some other way) and set the flags again before
			// the remount: then the remount is refused (EACCES, EROFS) and
			// the step is tried again, so that the remount's change of the
			// mount table is what the agent finally hears of.
			for try := 1; ; try++ {
				for _, node := range nodes {
					if err := SetReadOnly(node, false); err != nil {
						return err
					}
				}
				// mount(2) itself: mount(8) would open the node to ask
				// whether it is read-only, and the agent would hear of
				// that.
				err := unix.Mount("", mp, "", unix.MS_REMOUNT, "")
				if err == nil {
					return nil
				}
				if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EROFS) || try == 20 {
					return fmt.Errorf("remount read-write (try %d): %w", try, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}},
	}
	for _, s := range steps {
		if err := s.undo(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		start := time.Now()
		if !enfWaitFor(3*time.Second, protected) {
			t.Fatalf("%s: not repaired within 3s (rescan in %v): disk ro %s, %s ro %s, %s ro %s, %s read-only %v",
				s.name, m.ReconcileInterval, driftSysRO(t, l.name), l.parts[0], driftSysRO(t, l.parts[0]), l.parts[1], driftSysRO(t, l.parts[1]), mp, benchMountRO(mp))
		}
		t.Logf("%s: read-only again %v after the change returned", s.name, time.Since(start).Round(time.Microsecond))
	}
	if ev.count(EventDriftRepaired) == before {
		t.Error("no media.drift_repaired event")
	}
	if err := enfWrite(mp + "/f"); err == nil {
		t.Error("a file could be written after the repair")
	}
}

// BenchmarkDriftRepair measures how long a protected, mounted stick stays
// writable after someone runs blockdev --setrw on it: from the BLKROSET
// that clears the disk's flag returning to /sys/block/loopN/ro reading 1
// again, with the manager at its default rescan interval. MNGUARD_BENCH_DRIFTS
// sets the count (default 10; each may take a whole rescan interval when
// drift is found only by rescanning). Run with -benchtime 1x.
func BenchmarkDriftRepair(b *testing.B) {
	n := 10
	if v, err := strconv.Atoi(os.Getenv("MNGUARD_BENCH_DRIFTS")); err == nil && v > 0 {
		n = v
	}
	enfLockLoops(b)
	l := enfAttachLoopDisk(b, "bench-drift.img")
	mp := enfMount(b, l.part(0), "ext4")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := &Manager{
		Platform: NewPlatform(Options{TreatAsRemovable: []string{l.name}, Logger: quiet}), Mode: ModeEnforce, Logger: quiet,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if !enfWaitFor(10*time.Second, func() bool { return driftSysRO(b, l.name) == "1" && benchMountRO(mp) }) {
		b.Fatal("not protected within 10s")
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range n {
		time.Sleep(100 * time.Millisecond)
		fd, _, err := openBlock(l.dev)
		if err != nil {
			b.Fatal(err)
		}
		err = setRO(fd, l.dev, false)
		start := time.Now()
		unix.Close(fd)
		if err != nil {
			b.Fatal(err)
		}
		for driftSysRO(b, l.name) != "1" {
			if time.Since(start) > 2*m.ReconcileInterval+5*time.Second {
				b.Fatalf("drift %d: not repaired within %v", i, time.Since(start))
			}
			time.Sleep(50 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	b.ReportMetric(ms(pct(0.5)), "p50_ms")
	b.ReportMetric(ms(pct(0.99)), "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("drift repair: %d x blockdev --setrw on a mounted stick, rescan every %v: writable for p50 %s, p99 %s, max %s\n",
		len(lat), m.ReconcileInterval, pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}
