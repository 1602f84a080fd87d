package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"golang.org/x/sys/unix"
)

// BenchmarkAttachToReadOnly measures what a user of a stick sees, from
// user space, side by side for the agent and for the one-line udev rule it
// must beat: from the attach (the clock starts when LOOP_CONFIGURE
// returns, as losetup would) of a partitioned stick whose partition the
// benchmark mounts at once (as an automounter would), to /sys/block/loopN/ro
// and /sys/block/loopN/loopNp1/ro both reading 1, polled after the attach.
// For the agent it also times the mounted filesystem to read-only (statfs
// ST_RDONLY); the udev rule cannot remount, and the figure fs_rw_left says
// on how many attaches it left the filesystem mounted read-write. Also
// reported: the disk alone read-only (disk_p50_ms, disk_p99_ms), and when
// the partition was first seen (part_seen_p50_ms: a floor neither side can
// beat, since the partition is read-only only once it exists).
//
//   - udev-rule: systemd-udevd (started when not running) with a rule in
//     /run/udev/rules.d running "blockdev --setro $devnode" for the
//     benchmark's loop device and its partition; no agent.
//   - agent: the Manager over the Linux platform with loop* treated as
//     removable and the production reconcile interval; udevd keeps running
//     (as on a terminal), without the rule.
//
// On a kernel without partition table parsers (CONFIG_MSDOS_PARTITION
// off, as on the build machines) the benchmark adds the partition with
// BLKPG right after the attach, as partx does. MNGUARD_BENCH_ATTACHES sets
// the attaches per side (default 200). Run with -benchtime 1x.
func BenchmarkAttachToReadOnly(b *testing.B) {
	testenv.RequireRoot(b, "loop devices and udevd")
	enfNeedTools(b, "sfdisk", "mkfs.ext4", "blockdev", "udevadm")
	testenv.LockLoops(b)
	attaches := 200
	if v, err := strconv.Atoi(os.Getenv("MNGUARD_BENCH_ATTACHES")); err == nil && v > 0 {
		attaches = v
	}
	s := newBenchStick(b)
	benchUdevd(b)

	b.Run("udev-rule", func(b *testing.B) {
		blockdev, _ := exec.LookPath("blockdev")
		rule := filepath.Join("/run/udev/rules.d", fmt.Sprintf("60-mnguard-bench-%d.rules", os.Getpid()))
		if err := os.MkdirAll(filepath.Dir(rule), 0o755); err != nil {
			b.Fatal(err)
		}
		text := fmt.Sprintf("ACTION==\"add|change\", SUBSYSTEM==\"block\", KERNEL==\"loop*\", ATTRS{loop/backing_file}==\"%s\", RUN+=\"%s --setro $devnode\"\n", s.img, blockdev)
		if err := os.WriteFile(rule, []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			os.Remove(rule)
			exec.Command("udevadm", "control", "--reload").Run()
		})
		enfRun(b, "udevadm", "control", "--reload")
		settle := func(string) { exec.Command("udevadm", "settle", "--timeout=10").Run() }
		s.run(b, "udev rule", attaches, false, settle)
	})

	b.Run("agent", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		detached := make(chan string, 64)
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		if os.Getenv("MNGUARD_BENCH_LOG") != "" {
			quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		m := &Manager{
			Platform: NewPlatform(Options{TreatAsRemovable: []string{"loop*"}, Logger: quiet}), Mode: ModeEnforce,
			Logger: quiet,
			Emit: func(typ string, _ mnguardv1.Severity, _ string, attrs map[string]string) {
				if typ == EventDetached {
					detached <- attrs["device"]
				}
			},
		}
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		if !enfWaitFor(5*time.Second, func() bool { return m.Posture().LastReconcile != nil }) {
			b.Fatal("the agent did not scan within 5s")
		}
		time.Sleep(100 * time.Millisecond) // the listener up
		// The agent is done with the detach when the device is gone (its
		// size 0), the agent does not track it, and it has reported no
		// detach for a while (a device detached before the agent got to
		// its attach is never tracked, and some are reported twice).
		settle := func(name string) {
			deadline := time.Now().Add(5 * time.Second)
			quietSince := time.Now()
			for {
				select {
				case <-detached:
					quietSince = time.Now()
					continue
				case <-time.After(5 * time.Millisecond):
				}
				size, _ := os.ReadFile("/sys/block/" + name + "/size")
				gone := strings.TrimSpace(string(size)) == "0" &&
					!slices.ContainsFunc(m.Posture().Devices, func(d *mnguardv1.RemovableDevice) bool { return d.Name == name })
				if !gone {
					quietSince = time.Now()
				}
				switch {
				case gone && time.Since(quietSince) > 50*time.Millisecond:
					return
				case time.Now().After(deadline):
					b.Fatalf("%s not detached, or still tracked by the agent, 5s after its detach", name)
				}
			}
		}
		s.run(b, "agent", attaches, true, settle)
	})
}

// benchStick is a 16 MiB image with a DOS label and one ext4 partition
// (this kernel has no vfat).
type benchStick struct {
	img        string
	backing    *os.File
	ctl        *os.File
	mnt        string
	partStart  int64
	partLength int64
}

func newBenchStick(b *testing.B) *benchStick {
	b.Helper()
	dir := b.TempDir()
	s := &benchStick{img: filepath.Join(dir, "bench-stick.img"), mnt: filepath.Join(dir, "mnt"), partStart: 1 << 20, partLength: 15 << 20}
	if err := os.Mkdir(s.mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(s.img, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(s.img, 16<<20); err != nil {
		b.Fatal(err)
	}
	sf := exec.Command("sfdisk", "-q", s.img)
	sf.Stdin = strings.NewReader("label: dos\nstart=2048, type=83\n")
	if out, err := sf.CombinedOutput(); err != nil {
		b.Fatalf("sfdisk: %v\n%s", err, out)
	}
	// The filesystem goes straight into the partition's place in the file.
	enfRun(b, "mkfs.ext4", "-q", "-F", "-E", "offset="+strconv.FormatInt(s.partStart, 10)+",lazy_itable_init=0,lazy_journal_init=0",
		s.img, strconv.FormatInt(s.partLength>>10, 10)+"k")
	var err error
	if s.backing, err = os.OpenFile(s.img, os.O_RDWR, 0); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.backing.Close() })
	if s.ctl, err = os.OpenFile("/dev/loop-control", os.O_RDWR, 0); err != nil {
		enfMissing(b, "/dev/loop-control: %v", err)
	}
	b.Cleanup(func() { s.ctl.Close() })
	return s
}

// attach attaches the image to a free loop device, writable, and returns
// the time LOOP_CONFIGURE returned, then adds the partition unless the
// kernel's partition scan did.
func (s *benchStick) attach(b *testing.B) (name string, fd int, t0 time.Time) {
	b.Helper()
	for try := 0; try < 100; try++ {
		n, err := unix.IoctlRetInt(int(s.ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			b.Fatalf("LOOP_CTL_GET_FREE: %v", err)
		}
		node := fmt.Sprintf("/dev/loop%d", n)
		enfWaitFor(time.Second, enfExists(node))
		fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatalf("open %s: %v", node, err)
		}
		// The kernel keeps the flag of a detached loop device into its
		// next attach: start writable.
		if err := setRO(fd, node, false); err != nil {
			b.Fatal(err)
		}
		name = filepath.Base(node)
		if ro := benchSysRO(name, ""); ro != "0" {
			b.Fatalf("%s is read-only (%q) before the attach", name, ro)
		}
		err = unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(s.backing.Fd()), Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_PARTSCAN}})
		t0 = time.Now()
		if errors.Is(err, unix.EBUSY) {
			unix.Close(fd) // taken by someone else meanwhile
			continue
		}
		if err != nil {
			unix.Close(fd)
			b.Fatalf("LOOP_CONFIGURE %s: %v", node, err)
		}
		return name, fd, t0
	}
	b.Fatal("no free loop device")
	return "", -1, time.Time{}
}

// addPartition adds partition 1 with BLKPG when the kernel found none.
func (s *benchStick) addPartition(fd int, name string) error {
	if _, err := os.Stat("/sys/block/" + name + "/" + name + "p1"); err == nil {
		return nil
	}
	p := unix.BlkpgPartition{Start: s.partStart, Length: s.partLength, Pno: 1}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_ADD_PARTITION, Datalen: int32(unsafe.Sizeof(p)), Data: (*byte)(unsafe.Pointer(&p))}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return fmt.Errorf("BLKPG add %sp1: %w", name, errno)
	}
	return nil
}

// mountResult is what the mounter saw: whether the read-write mount
// succeeded (the device was still writable) and when it was done.
type mountResult struct {
	rw      bool
	rereads int // times the partition was gone and added again
	err     error
}

// mount mounts partition 1 read-write, or read-only when the device
// already is, as an automounter would. When the partition went away before
// it was mounted, it is added again: the agent's check that the disk takes
// no write opens it for writing, and at the close udevd re-reads the
// partition table (BLKRRPART), which a kernel with a partition parser
// answers by creating the partition anew and this one by dropping it.
func (s *benchStick) mount(fd int, name string) mountResult {
	node := "/dev/" + name + "p1"
	var err error
	rereads := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if err = s.addPartition(fd, name); err != nil && !errors.Is(err, unix.EBUSY) {
			return mountResult{err: err}
		}
		if !enfWaitFor(time.Second, enfExists(node)) {
			err = fmt.Errorf("%s did not appear", node)
			continue
		}
		err = unix.Mount(node, s.mnt, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "")
		if err == nil {
			return mountResult{rw: true, rereads: rereads}
		}
		if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
			err = unix.Mount(node, s.mnt, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_RDONLY, "")
		}
		if err == nil {
			return mountResult{rereads: rereads}
		}
		if !errors.Is(err, unix.ENXIO) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			break
		}
		rereads++
	}
	return mountResult{err: fmt.Errorf("mount %s: %w", node, err)}
}

func benchSysRO(disk, part string) string {
	p := "/sys/block/" + disk
	if part != "" {
		p += "/" + part
	}
	v, err := os.ReadFile(p + "/ro")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(v))
}

func benchMountRO(mp string) bool {
	var st unix.Statfs_t
	return unix.Statfs(mp, &st) == nil && st.Flags&unix.ST_RDONLY != 0
}

// run attaches the stick n times, each time mounting it at once and
// polling until the disk and its partition read back read-only; with
// wantFS, also until the mounted filesystem is read-only. settle waits
// until whoever protects has seen the detach.
func (s *benchStick) run(b *testing.B, who string, n int, wantFS bool, settle func(name string)) {
	var lat, diskLat, partLat, fsLat []time.Duration
	rwMounts, rwLeft, rereads := 0, 0, 0
	attached := -1
	b.Cleanup(func() {
		if attached >= 0 {
			unix.Unmount(s.mnt, unix.MNT_DETACH)
			unix.IoctlSetInt(attached, unix.LOOP_CLR_FD, 0)
			unix.Close(attached)
		}
	})
	b.ResetTimer()
	for i := range n {
		name, fd, t0 := s.attach(b)
		attached = fd
		part := name + "p1"
		mounted := make(chan mountResult, 1)
		go func() { mounted <- s.mount(fd, name) }()
		var done, diskDone, partSeen time.Duration
		var mr mountResult
		gotMount := false
		for {
			diskRO, partRO := benchSysRO(name, "") == "1", benchSysRO(name, part)
			now := time.Since(t0)
			if diskRO && diskDone == 0 {
				diskDone = now
			}
			if partRO != "" && partSeen == 0 {
				partSeen = now
			}
			if diskRO && partRO == "1" {
				done = now
				break
			}
			if !gotMount {
				select {
				case mr = <-mounted:
					gotMount = true
					if mr.err != nil {
						b.Fatalf("%s: attach %d: %v", who, i, mr.err)
					}
				default:
				}
			}
			if time.Since(t0) > 5*time.Second {
				b.Fatalf("%s: attach %d: %s (disk ro %q, %s ro %q) not read-only within 5s", who, i, name, benchSysRO(name, ""), part, benchSysRO(name, part))
			}
			time.Sleep(20 * time.Microsecond)
		}
		lat = append(lat, done)
		diskLat = append(diskLat, diskDone)
		partLat = append(partLat, partSeen)
		if !gotMount {
			mr = <-mounted
		}
		if mr.err != nil {
			b.Fatalf("%s: attach %d: %v", who, i, mr.err)
		}
		if mr.rw {
			rwMounts++
		}
		rereads += mr.rereads
		if wantFS {
			for !benchMountRO(s.mnt) {
				// Longer than the agent's backstop rescan used to be (10 s).
				if time.Since(t0) > 15*time.Second {
					b.Fatalf("%s: attach %d: %s still mounted read-write after 15s", who, i, part)
				}
				time.Sleep(20 * time.Microsecond)
			}
			fsLat = append(fsLat, time.Since(t0))
			if ro, err := IsReadOnly("/dev/" + name); err != nil || !ro {
				b.Fatalf("%s: attach %d: BLKROGET on %s says %v (%v)", who, i, name, ro, err)
			}
		} else if !benchMountRO(s.mnt) {
			rwLeft++
		}
		if err := unix.Unmount(s.mnt, 0); err != nil {
			unix.Unmount(s.mnt, unix.MNT_DETACH)
		}
		if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil {
			b.Fatalf("LOOP_CLR_FD %s: %v", name, err)
		}
		unix.Close(fd)
		attached = -1
		settle(name)
	}
	b.StopTimer()
	p50, p99, max := benchPct(lat)
	b.ReportMetric(ms(p50), "p50_ms")
	b.ReportMetric(ms(p99), "p99_ms")
	d50, d99, _ := benchPct(diskLat)
	b.ReportMetric(ms(d50), "disk_p50_ms")
	b.ReportMetric(ms(d99), "disk_p99_ms")
	e50, e99, _ := benchPct(partLat)
	b.ReportMetric(ms(e50), "part_seen_p50_ms")
	b.ReportMetric(float64(rwMounts), "rw_mounts")
	b.ReportMetric(float64(rereads), "part_rereads")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("attach-to-read-only, %s: %d attaches of a partitioned stick, LOOP_CONFIGURE returned to disk and partition ro in sysfs: p50 %s, p99 %s, max %s; mounted read-write first %d times; partition re-added after a re-read %d times\n",
		who, len(lat), p50, p99, max, rwMounts, rereads)
	fmt.Printf("attach-to-read-only, %s: the disk alone read-only: p50 %s, p99 %s; the partition there (added, not yet read-only): p50 %s, p99 %s\n", who, d50, d99, e50, e99)
	if wantFS {
		p50, p99, max := benchPct(fsLat)
		b.ReportMetric(ms(p50), "fs_p50_ms")
		b.ReportMetric(ms(p99), "fs_p99_ms")
		fmt.Printf("attach-to-read-only, %s: mounted filesystem read-only: p50 %s, p99 %s, max %s\n", who, p50, p99, max)
	} else {
		b.ReportMetric(float64(rwLeft), "fs_rw_left")
		fmt.Printf("attach-to-read-only, %s: filesystem left mounted read-write %d times\n", who, rwLeft)
	}
}

func benchPct(lat []time.Duration) (p50, p99, max time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)].Round(time.Microsecond) }
	return pct(0.5), pct(0.99), lat[len(lat)-1].Round(time.Microsecond)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchUdevd starts systemd-udevd when it is not running, and stops it at
// cleanup (as e2e's udev test does).
func benchUdevd(b *testing.B) {
	b.Helper()
	if exec.Command("udevadm", "control", "--ping").Run() == nil {
		return
	}
	udevd := "/lib/systemd/systemd-udevd"
	if _, err := os.Stat(udevd); err != nil {
		enfMissing(b, "%s: %v", udevd, err)
	}
	enfRun(b, udevd, "--daemon")
	b.Cleanup(func() { exec.Command("udevadm", "control", "--exit").Run() })
	if !enfWaitFor(10*time.Second, func() bool { return exec.Command("udevadm", "control", "--ping").Run() == nil }) {
		b.Fatal("systemd-udevd did not answer within 10s")
	}
}
