//go:build linux

package media

// Exemptions end to end on real loop devices: the manager over the Linux
// platform, loop devices matched by treat_as_removable, assertions with
// real writes. Needs what enforce_linux_test.go needs.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mnguard/mnguard/internal/testenv"
	"golang.org/x/sys/unix"
)

// exLoopID is the identity of a loop device treated as removable: its
// backing file's name is its serial.
func exLoopID(file string) string { return "0000:0000:" + file }

func exWaitFor(t testing.TB, what string, d time.Duration, f func() bool) {
	t.Helper()
	if !enfWaitFor(d, f) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// exStartManager runs a manager over the Linux platform, treating the
// named loop devices (only) as removable.
func exStartManager(t testing.TB, names []string, x *exemptions, w *warnings, grace time.Duration) (*Manager, *events) {
	t.Helper()
	level := slog.LevelWarn
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelError // not each of the many exemptions
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
	ev := &events{}
	m := &Manager{
		Platform: NewPlatform(Options{TreatAsRemovable: names, Logger: log}), Mode: ModeEnforce,
		ReconcileInterval: time.Hour, Logger: log, Emit: ev.emit,
		Exempt: x.exempt, Warn: w.warn,
		EndGrace: grace, EndRetry: 100 * time.Millisecond, ExemptPoll: 50 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not end after cancel")
		}
	})
	for _, n := range names {
		exWaitFor(t, n+" read-only", 5*time.Second, func() bool { return deviceState(m, n) == string(StateReadOnly) })
	}
	return m, ev
}

func exDD(node string) error {
	out, err := exec.Command("dd", "if=/dev/zero", "of="+node, "bs=4k", "count=1", "oflag=direct").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TestExemptionOnLoops: an exemption makes its device (and only it)
// writable within Refresh, reconciles leave it so, the first write is
// reported, and the end makes it read-only again.
func TestExemptionOnLoops(t *testing.T) {
	enfLockLoops(t)
	a := enfAttachLoopDisk(t, "exempt-a.img")
	b := enfAttachLoopDisk(t, "exempt-b.img")
	mpA := enfMount(t, a.part(0), "ext4")
	mpB := enfMount(t, b.part(0), "ext4")
	x, w := &exemptions{}, &warnings{}
	m, ev := exStartManager(t, []string{a.name, b.name}, x, w, time.Minute)
	ctx := context.Background()
	for _, mp := range []string{mpA, mpB} {
		if err := enfWrite(filepath.Join(mp, "before")); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("write to %s before the exemption: %v, want EROFS", mp, err)
		}
	}

	x.set(exLoopID("exempt-a.img"), "ex-loop-1")
	start := time.Now()
	m.Refresh(ctx)
	took := time.Since(start)
	t.Logf("exemption to writable: %v", took)
	if got := deviceState(m, a.name); got != string(StateExempted) {
		t.Fatalf("%s state = %q after Refresh, want exempted; detail %q", a.name, got, deviceDetail(m, a.name))
	}
	if took > time.Second {
		t.Errorf("Refresh took %v, want under 1 s", took)
	}
	applied := ev.of(EventExemptionApplied)
	if len(applied) != 1 || applied[0].attrs["exemption_id"] != "ex-loop-1" || applied[0].attrs["device_id"] != exLoopID("exempt-a.img") ||
		!strings.Contains(applied[0].attrs["actions"], "remount "+mpA+" read-write") {
		t.Fatalf("applied events = %+v", applied)
	}
	for _, n := range []string{a.dev, a.part(0), a.part(1)} {
		if got := enfGetRO(t, n); got != "0" {
			t.Errorf("blockdev --getro %s = %s under the exemption", n, got)
		}
	}
	// The other device stays read-only.
	if err := enfWrite(filepath.Join(mpB, "f")); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to the other device's %s: %v, want EROFS", mpB, err)
	}
	enfCheckBlockRO(t, b)
	if got := deviceState(m, b.name); got != string(StateReadOnly) {
		t.Errorf("the other device: %q", got)
	}

	// Nothing written yet: no "used", whatever the filesystem does by
	// itself.
	time.Sleep(300 * time.Millisecond)
	if n := ev.count(EventExemptionUsed); n != 0 {
		t.Errorf("%d used events before any write: %+v", n, ev.of(EventExemptionUsed))
	}
	if err := enfWrite(filepath.Join(mpA, "f")); err != nil {
		t.Fatalf("write to the exempted %s: %v", mpA, err)
	}
	if err := exDD(a.part(1)); err != nil {
		t.Errorf("dd to the exempted %s: %v", a.part(1), err)
	}
	exWaitFor(t, "used event", 2*time.Second, func() bool { return ev.count(EventExemptionUsed) == 1 })

	// Reconciles do not fight it; a read-only flag set behind its back
	// (the udev hook at a "change" event) is cleared by the next poll.
	before := ev.len()
	m.Reconcile(ctx)
	if got := deviceState(m, a.name); got != string(StateExempted) {
		t.Errorf("state after a reconcile = %q", got)
	}
	if err := enfWrite(filepath.Join(mpA, "g")); err != nil {
		t.Errorf("write after a reconcile: %v", err)
	}
	enfRun(t, "blockdev", "--setro", a.dev)
	exWaitFor(t, "writable again", 2*time.Second, func() bool { return enfGetRO(t, a.dev) == "0" })
	if evs := ev.since(before); slices.Contains(evs, EventDriftRepaired) || slices.Contains(evs, EventReadOnlySet) || slices.Contains(evs, EventExemptionApplied) {
		t.Errorf("events while exempted: %v", evs)
	}
	if n := ev.count(EventExemptionUsed); n != 1 {
		t.Errorf("%d used events, want 1", n)
	}

	// The end, nobody writing: read-only at once.
	x.set(exLoopID("exempt-a.img"), "")
	start = time.Now()
	m.Refresh(ctx)
	t.Logf("end to read-only: %v", time.Since(start))
	if got := deviceState(m, a.name); got != string(StateReadOnly) {
		t.Fatalf("state after the end = %q; detail %q", got, deviceDetail(m, a.name))
	}
	ended := ev.of(EventExemptionEnded)
	if len(ended) != 1 || ended[0].attrs["exemption_id"] != "ex-loop-1" || ended[0].attrs["forced"] != "false" ||
		!strings.Contains(ended[0].attrs["actions"], "syncfs "+mpA) {
		t.Errorf("ended events = %+v", ended)
	}
	if err := enfWrite(filepath.Join(mpA, "after")); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write after the end: %v, want EROFS", err)
	}
	enfCheckBlockRO(t, a)
	if b, err := os.ReadFile(filepath.Join(mpA, "f")); err != nil || string(b) != "data" {
		t.Errorf("the file written under the exemption: %q, %v", b, err)
	}
	if len(w.get()) != 0 {
		t.Errorf("warned without writers: %q", w.get())
	}
	if p := m.Posture(); !p.GetHealthy() {
		t.Errorf("posture: %s", p.GetUnhealthyReason())
	}
}

// TestExemptionEndBusyOnLoops: the exemption ends while a process holds a
// file open for writing: the device is "ending" (block devices read-only
// at once, the filesystem not), the users are warned, the writer is left
// alone for the grace, then ended, and the device is read-only.
func TestExemptionEndBusyOnLoops(t *testing.T) {
	const grace = 1500 * time.Millisecond
	enfLockLoops(t)
	l := enfAttachLoopDisk(t, "exempt-busy.img")
	mp := enfMount(t, l.part(0), "ext4")
	x, w := &exemptions{}, &warnings{}
	m, ev := exStartManager(t, []string{l.name}, x, w, grace)
	id := exLoopID("exempt-busy.img")
	x.set(id, "ex-busy")
	m.Refresh(context.Background())
	if got := deviceState(m, l.name); got != string(StateExempted) {
		t.Fatalf("state = %q, want exempted", got)
	}
	held := filepath.Join(mp, "report.txt")
	if err := enfWrite(held); err != nil {
		t.Fatal(err)
	}
	cmd := enfStartHolder(t, `exec 3>>"$1"`, held)
	pid := strconv.Itoa(cmd.Process.Pid)

	x.set(id, "")
	start := time.Now()
	m.Refresh(context.Background())
	if got := deviceState(m, l.name); got != string(StateEnding) {
		t.Fatalf("state with a writer = %q, want ending; detail %q", got, deviceDetail(m, l.name))
	}
	busy := ev.of(EventExemptionEndBusy)
	if len(busy) != 1 || busy[0].attrs["pids"] != pid || !strings.Contains(busy[0].attrs["writers"], "writing "+held) || busy[0].attrs["exemption_id"] != "ex-busy" {
		t.Fatalf("end_busy events = %+v, want one naming pid %s", busy, pid)
	}
	exWaitFor(t, "users warned", time.Second, func() bool { return len(w.get()) == 1 })
	if msg := w.get()[0]; !strings.Contains(msg, mp) || !strings.Contains(msg, "pid "+pid) {
		t.Errorf("warning = %q", msg)
	}
	if !strings.Contains(deviceDetail(m, l.name), "still writable while pid "+pid) || !m.Posture().GetHealthy() {
		t.Errorf("during the grace: detail %q, posture %v", deviceDetail(m, l.name), m.Posture())
	}
	// New writes to the block devices fail at once.
	for _, n := range []string{l.dev, l.part(0), l.part(1)} {
		if got := enfGetRO(t, n); got != "1" {
			t.Errorf("blockdev --getro %s = %s while ending", n, got)
		}
	}
	if err := exDD(l.part(1)); err == nil {
		t.Errorf("dd to %s succeeded while ending", l.part(1))
	}

	// Half-way: still ending, the writer still there, warned once.
	time.Sleep(grace / 2)
	if got := deviceState(m, l.name); got != string(StateEnding) {
		t.Errorf("half-way through the grace: %q", got)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the writer was ended before the grace: %v", err)
	}
	if n := ev.count(EventExemptionEndBusy); n != 1 {
		t.Errorf("%d end_busy events, want 1", n)
	}

	// After the grace: the writer is ended, the device read-only.
	exWaitFor(t, "read-only after the grace", grace+10*time.Second, func() bool { return deviceState(m, l.name) == string(StateReadOnly) })
	took := time.Since(start)
	t.Logf("read-only %v after the end (grace %v)", took, grace)
	if took < grace {
		t.Errorf("read-only after %v, before the grace", took)
	}
	enfEnded(t, cmd)
	ended := ev.of(EventExemptionEnded)
	if len(ended) != 1 || ended[0].attrs["forced"] != "true" || !strings.Contains(ended[0].attrs["actions"], "ended pid "+pid) {
		t.Errorf("ended events = %+v", ended)
	}
	if err := enfWrite(filepath.Join(mp, "after")); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write after the end: %v, want EROFS", err)
	}
	enfCheckBlockRO(t, l)
	exWaitFor(t, "the second warning", time.Second, func() bool { return len(w.get()) == 2 })
	if p := m.Posture(); !p.GetHealthy() {
		t.Errorf("posture after the end: %s", p.GetUnhealthyReason())
	}
}

// TestWarnUsers runs the real wall(1) and checks that the warning reaches
// a logged-in user's terminal: the test opens a pseudo-terminal, records a
// login on it in utmp (as login(1) or sshd would; wall finds terminals
// there), and reads what wall wrote from the terminal's master side, its
// Japanese included. It fails if WarnUsers writes nothing there.
func TestWarnUsers(t *testing.T) {
	testenv.RequireRoot(t, "utmp")
	enfNeedTools(t, "wall")
	ptmx, pts := warnOpenPty(t)
	warnLogin(t, pts, "mnguard-test")
	msg := busyMessage(Device{Name: "sdb", Model: "Cruzer Blade", VendorID: "0781", ProductID: "5567", Serial: "A1"},
		[]Writer{{PID: 1234, Command: "soffice.bin", What: "writing /media/u/S/r.odt", Mount: "/media/u/S"}}, time.Minute)
	if err := WarnUsers(t.Context(), "(mnguard test, please ignore) "+msg); err != nil {
		t.Fatal(err)
	}
	// wall wraps the text at 79 columns and pads the lines: compare
	// without white space.
	got := warnRead(t, ptmx, "the disk detached.")
	for _, want := range []string{"(mnguard test, please ignore)", "リムーバブルディスク Cruzer Blade (0781:5567:A1)", "write access to the removable disk", "/media/u/S", "soffice.bin (pid 1234)", "the disk detached."} {
		if !strings.Contains(warnSqueeze(got), warnSqueeze(want)) {
			t.Errorf("the terminal got no %q; it got:\n%s", want, got)
		}
	}
}

// warnSqueeze removes white space.
func warnSqueeze(s string) string {
	return strings.Join(strings.Fields(s), "")
}

// warnOpenPty opens a pseudo-terminal's master and returns it with the
// terminal's name below /dev ("pts/N").
func warnOpenPty(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	ptmx := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	return ptmx, fmt.Sprintf("pts/%d", n)
}

// utmpFile is where glibc's getutxent, and so wall, reads logins.
const utmpFile = "/run/utmp"

// utmpRecord is glibc's struct utmp on 64-bit Linux (384 bytes).
type utmpRecord struct {
	Type    int16
	_       int16
	Pid     int32
	Line    [32]byte
	ID      [4]byte
	User    [32]byte
	Host    [256]byte
	Exit    [2]int16
	Session int32
	Sec     int32
	Usec    int32
	Addr    [4]int32
	_       [20]byte
}

// warnLogin records user as logged in on the terminal line (USER_PROCESS,
// this process) in utmp, and as logged out (DEAD_PROCESS) when the test
// ends; a utmp file the test had to create is removed again.
func warnLogin(t *testing.T, line, user string) {
	t.Helper()
	if unsafe.Sizeof(utmpRecord{}) != 384 {
		t.Skipf("struct utmp is %d bytes here, not glibc's 384", unsafe.Sizeof(utmpRecord{}))
	}
	_, statErr := os.Stat(utmpFile)
	f, err := os.OpenFile(utmpFile, os.O_RDWR|os.O_CREATE, 0o664)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := int64(unsafe.Sizeof(utmpRecord{}))
	off := st.Size() / size * size
	now := time.Now()
	r := utmpRecord{Type: 7 /* USER_PROCESS */, Pid: int32(os.Getpid()), Sec: int32(now.Unix()), Usec: int32(now.Nanosecond() / 1000)}
	copy(r.Line[:], line)
	copy(r.ID[:], strings.TrimPrefix(line, "pts/"))
	copy(r.User[:], user)
	copy(r.Host[:], "mnguard-test")
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&r)), size)
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if errors.Is(statErr, os.ErrNotExist) {
			os.Remove(utmpFile)
			return
		}
		f, err := os.OpenFile(utmpFile, os.O_RDWR, 0)
		if err != nil {
			t.Errorf("log out of utmp: %v", err)
			return
		}
		defer f.Close()
		r.Type = 8 // DEAD_PROCESS
		r.User = [32]byte{}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Errorf("log out of utmp: %v", err)
		}
	})
}

// warnRead reads from the pseudo-terminal's master until what it read
// holds end or 10 s passed, and returns it.
func warnRead(t *testing.T, ptmx *os.File, end string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	ptmx.SetReadDeadline(deadline)
	for !strings.Contains(warnSqueeze(string(got)), warnSqueeze(end)) {
		n, err := ptmx.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if len(got) == 0 {
				t.Fatalf("nothing reached the logged-in terminal: %v", err)
			}
			break
		}
	}
	return strings.ReplaceAll(string(got), "\r\n", "\n")
}

// BenchmarkExemptToWritable measures what the exemption issue names: from
// the agent having the exemption (Refresh called) to the device writable,
// its mounted ext4 remounted read-write and verified, over many
// exemptions of a real loop device (the write that checks it is not
// timed); and, for each, the end back to read-only with nobody writing.
// MNGUARD_BENCH_EXEMPTS sets the count (default 100). Run with
// -benchtime=1x.
func BenchmarkExemptToWritable(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("MNGUARD_BENCH_EXEMPTS")); err == nil && v > 0 {
		n = v
	}
	enfLockLoops(b)
	l := enfAttachLoopDisk(b, "bench-exempt.img")
	mp := enfMount(b, l.part(0), "ext4")
	x, w := &exemptions{}, &warnings{}
	m, _ := exStartManager(b, []string{l.name}, x, w, time.Minute)
	id := exLoopID("bench-exempt.img")
	ctx := context.Background()
	var toWritable, toReadOnly []time.Duration
	b.ResetTimer()
	for i := range n {
		x.set(id, fmt.Sprintf("bench-%d", i))
		start := time.Now()
		m.Refresh(ctx)
		toWritable = append(toWritable, time.Since(start))
		if got := deviceState(m, l.name); got != string(StateExempted) {
			b.Fatalf("exemption %d: state %q; detail %q", i, got, deviceDetail(m, l.name))
		}
		if err := enfWrite(filepath.Join(mp, "f")); err != nil {
			b.Fatalf("exemption %d: write: %v", i, err)
		}
		x.set(id, "")
		start = time.Now()
		m.Refresh(ctx)
		toReadOnly = append(toReadOnly, time.Since(start))
		if got := deviceState(m, l.name); got != string(StateReadOnly) {
			b.Fatalf("end %d: state %q; detail %q", i, got, deviceDetail(m, l.name))
		}
		if err := enfWrite(filepath.Join(mp, "g")); !errors.Is(err, syscall.EROFS) {
			b.Fatalf("end %d: write: %v, want EROFS", i, err)
		}
	}
	b.StopTimer()
	pct := func(lat []time.Duration, p float64) time.Duration {
		s := slices.Clone(lat)
		slices.Sort(s)
		return s[int(float64(len(s)-1)*p)]
	}
	b.ReportMetric(float64(pct(toWritable, 0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(pct(toWritable, 0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(pct(toReadOnly, 0.99).Microseconds())/1000, "end_p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("exempt-to-writable: %d exemptions of a loop device with ext4 mounted, Refresh to verified writable: p50 %s, p99 %s, max %s; end to read-only: p50 %s, p99 %s\n",
		n, pct(toWritable, 0.5).Round(time.Microsecond), pct(toWritable, 0.99).Round(time.Microsecond), slices.Max(toWritable).Round(time.Microsecond),
		pct(toReadOnly, 0.5).Round(time.Microsecond), pct(toReadOnly, 0.99).Round(time.Microsecond))
}
