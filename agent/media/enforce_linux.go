//go:build linux

package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What Protect does when a filesystem cannot be remounted read-only because
// files on it are open for writing (Enforcer.OnBusy).
const (
	// OnBusyKill ends the writers (SIGTERM, then SIGKILL after the grace
	// period) and retries the remount; if that still fails, it detaches.
	OnBusyKill = "kill"
	// OnBusyDetach detaches the mount at once (umount2 MNT_DETACH), then
	// ends the writers, who would otherwise keep writing through their
	// open files, and makes the detached filesystem read-only.
	OnBusyDetach = "detach"
)

const (
	defaultGracePeriod = 2 * time.Second
	// killWait is how long a process gets to disappear after SIGKILL.
	killWait = 2 * time.Second
	// busyRounds bounds how often writers are looked for and ended before
	// Protect detaches the mount instead.
	busyRounds = 3
	// verifyPrefix names the file Protect tries to create on every mount;
	// on a read-only filesystem the create fails and nothing is written.
	verifyPrefix = ".mnguard-verify-"
)

// SetReadOnly sets (ro true) or clears the kernel's read-only flag of the
// block device devNode with BLKROSET. An error wraps ErrVanished when the
// node or the device behind it is gone.
func SetReadOnly(devNode string, ro bool) error {
	fd, _, err := openBlock(devNode)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return setRO(fd, devNode, ro)
}

// IsReadOnly reads the kernel's read-only flag of the block device devNode
// with BLKROGET. For a partition the kernel (since 5.12) answers true when
// the partition or its whole disk is read-only.
func IsReadOnly(devNode string) (bool, error) {
	fd, _, err := openBlock(devNode)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	return getRO(fd, devNode)
}

// openBlock opens a block device node for ioctls only: O_RDONLY, so that
// closing it makes no udev "change" event, and O_NONBLOCK, so that a drive
// without a medium opens too.
func openBlock(node string) (fd int, rdev uint64, err error) {
	fd, err = unix.Open(node, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, 0, nodeErr("open", node, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, nodeErr("stat", node, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("open %s: %w", node, unix.ENOTBLK)
	}
	return fd, st.Rdev, nil
}

// ioctlIntPtr passes a pointer to a C int, as BLKROGET and BLKROSET take
// (unix.IoctlGetInt reads a Go int, wrong on big-endian machines).
func ioctlIntPtr(fd int, req uint, v *int32) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(v)))
	if errno != 0 {
		return errno
	}
	return nil
}

func setRO(fd int, node string, ro bool) error {
	var v int32
	if ro {
		v = 1
	}
	if err := ioctlIntPtr(fd, unix.BLKROSET, &v); err != nil {
		return nodeErr("BLKROSET", node, err)
	}
	return nil
}

func getRO(fd int, node string) (bool, error) {
	var v int32
	if err := ioctlIntPtr(fd, unix.BLKROGET, &v); err != nil {
		return false, nodeErr("BLKROGET", node, err)
	}
	return v != 0, nil
}

// isVanished reports whether err means the device is gone: its node was
// removed, the driver let go of it, or the medium was taken out.
func isVanished(err error) bool {
	return errors.Is(err, ErrVanished) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOMEDIUM)
}

func nodeErr(op, node string, err error) error {
	if isVanished(err) && !errors.Is(err, ErrVanished) {
		return fmt.Errorf("%s %s: %w: %w", op, node, ErrVanished, err)
	}
	return fmt.Errorf("%s %s: %w", op, node, err)
}

// Enforcer makes removable disks read-only on Linux: the kernel flag on the
// disk and its partitions, then every mounted filesystem of them, then a
// check that writes fail. The zero value works with the defaults below.
type Enforcer struct {
	DevDir  string // "/dev" when empty
	ProcDir string // "/proc" when empty
	// OnBusy is OnBusyKill (the default) or OnBusyDetach.
	OnBusy string
	// GracePeriod is how long writers get between SIGTERM and SIGKILL;
	// 2 s when zero.
	GracePeriod time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

func (e *Enforcer) devDir() string {
	if e.DevDir == "" {
		return "/dev"
	}
	return e.DevDir
}

func (e *Enforcer) procDir() string {
	if e.ProcDir == "" {
		return "/proc"
	}
	return e.ProcDir
}

func (e *Enforcer) grace() time.Duration {
	if e.GracePeriod <= 0 {
		return defaultGracePeriod
	}
	return e.GracePeriod
}

func (e *Enforcer) log() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

func (e *Enforcer) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

// blockNode is the disk or one of its partitions.
type blockNode struct {
	name, path string
	dev        uint64 // st_rdev
	disk       bool
}

// enforceRun is one Protect or Release of one device.
type enforceRun struct {
	e   *Enforcer
	ctx context.Context
	res Result
	// nodes are the disk first, then its partitions.
	nodes []blockNode
	// changed is set when this run changed anything (a flag, a mount):
	// only then does the verification open the disk for writing, because
	// closing it makes udev's inotify watch synthesize a "change" event,
	// which must not start another round of writes.
	changed bool
	// failed are the checks that did not pass; State is StateReadOnly only
	// when there are none.
	failed []error
	// gentle is set by ProtectGently: a filesystem with writers is left
	// writable (its superblock's device number in busy) instead of its
	// writers being ended.
	gentle bool
	busy   map[uint64]bool
}

func (r *enforceRun) act(what, target string, err error) {
	r.res.Actions = append(r.res.Actions, Action{What: what, Err: err, Target: target})
	if err != nil && r.gentle && errors.Is(err, unix.EBUSY) {
		// Expected while an exemption ends; the caller reports the writers.
		r.e.log().Info("media enforcement step left for later: busy", "device", r.res.Device.Name, "action", what, "target", target)
		return
	}
	if err != nil {
		r.e.log().Warn("media enforcement step failed", "device", r.res.Device.Name, "action", what, "target", target, "err", err)
		return
	}
	r.e.log().Info("media enforcement step", "device", r.res.Device.Name, "action", what, "target", target)
}

func (r *enforceRun) fail(err error) {
	r.failed = append(r.failed, err)
	r.e.log().Error("media check failed", "device", r.res.Device.Name, "err", err)
}

// finish turns the run into Protect's return values.
func (r *enforceRun) finish(op string, okState State, abort error) (Result, error) {
	if abort != nil {
		r.res.State = StateWritable
		return r.res, fmt.Errorf("%s %s: %w", op, r.res.Device.Name, abort)
	}
	if len(r.failed) > 0 {
		r.res.State = StateWritable
		return r.res, fmt.Errorf("%s %s: %w", op, r.res.Device.Name, errors.Join(r.failed...))
	}
	r.res.State = okState
	return r.res, nil
}

func (e *Enforcer) newRun(ctx context.Context, d Device) (*enforceRun, error) {
	r := &enforceRun{e: e, ctx: ctx, res: Result{Device: d}}
	if d.MTP {
		return r, errors.New("an MTP/PTP device has no block device: deauthorize it instead")
	}
	names := append([]string{d.Name}, d.Partitions...)
	for i, name := range names {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return r, fmt.Errorf("bad device name %q", name)
		}
		r.nodes = append(r.nodes, blockNode{name: name, path: filepath.Join(e.devDir(), name), disk: i == 0})
	}
	return r, nil
}

// Protect makes the disk d, its partitions and every filesystem mounted from
// them read-only, then verifies that writes fail:
//
//  1. BLKROSET on the whole disk, then on every partition (the kernel
//     propagates the disk's flag to its partitions since 5.12; older
//     kernels need each).
//  2. Every mount of the disk or a partition (matched by device number in
//     ProcDir/self/mountinfo, or by its source naming the node) whose
//     superblock is writable is reconfigured read-only, which covers every
//     mount of that superblock in every mount namespace; each mount we can
//     reach is then also flagged read-only. The kernel flag alone does not
//     stop a filesystem mounted read-write before it was set.
//  3. When the remount fails because files are open for writing (EBUSY),
//     the writers are ended (OnBusyKill) and the remount retried; if it
//     still fails, or with OnBusyDetach, the mount is detached, the writers
//     are ended all the same (their open files would keep writing to the
//     detached filesystem), and the detached superblock is made read-only.
//  4. Verify: BLKROGET says read-only for every node, a fresh mountinfo says
//     read-only for every mount of the device, creating a file on each
//     reachable mount fails with EROFS, and (when this call changed
//     something) a zero-byte write to the whole disk fails.
//
// Result.State is StateReadOnly only when every check passed; otherwise it
// is StateWritable, the error says which checks failed, and the Actions say
// what was done and what failed. Repaired is true when anything was
// writable before (the caller tells a first protection from drift). A
// device that disappears midway yields an error wrapping ErrVanished.
// Protect on a device already read-only changes nothing and reports no
// actions. Cancelling ctx shortens the grace period of writers; it does
// not stop the enforcement.
func (e *Enforcer) Protect(ctx context.Context, d Device) (Result, error) {
	r, err := e.newRun(ctx, d)
	if err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	if e.OnBusy != "" && e.OnBusy != OnBusyKill && e.OnBusy != OnBusyDetach {
		e.log().Warn("unknown media on_busy policy, ending writers", "on_busy", e.OnBusy)
	}
	if err := r.protectNodes(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	if err := r.protectMounts(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	if err := r.verify(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	return r.finish("protect", StateReadOnly, nil)
}

// ProtectGently is Protect for the end of an exemption, when a user may
// still be writing: it ends no one.
//
//  1. Flush: syncfs on every reachable mount of the device, then
//     BLKFLSBUF on the disk and its partitions, so that what was written
//     reaches the medium before the kernel flag goes up.
//  2. BLKROSET on the disk and partitions, as Protect: new writes to the
//     block devices fail from here on.
//  3. Every filesystem is remounted read-only, as Protect; one that is
//     busy (EBUSY: files open for writing) is left writable, and the
//     processes writing there are listed in Result.Busy.
//  4. Verify as Protect, except for the filesystems left busy.
//
// State is StateReadOnly when everything is read-only, StateEnding (and
// no error) when only busy filesystems are left writable, and
// StateWritable with an error when a check failed. Calling it again
// retries; Protect then ends the writers per OnBusy.
func (e *Enforcer) ProtectGently(ctx context.Context, d Device) (Result, error) {
	r, err := e.newRun(ctx, d)
	if err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	r.gentle = true
	if err := r.flush(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	if err := r.protectNodes(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	if err := r.protectMounts(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	if err := r.verify(); err != nil {
		return r.finish("protect", StateReadOnly, err)
	}
	res, err := r.finish("protect", StateReadOnly, nil)
	if err == nil && len(r.busy) > 0 {
		res.State = StateEnding
	}
	return res, err
}

// flush writes out what is cached for the device: syncfs on each of its
// reachable mounts (each superblock once), then BLKFLSBUF on each node.
// Only a vanished device is an error; failures are actions.
func (r *enforceRun) flush() error {
	fds := make([]int, len(r.nodes))
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	for i := range r.nodes {
		n := &r.nodes[i]
		fd, rdev, err := openBlock(n.path)
		fds[i] = fd
		if err != nil {
			if isVanished(err) {
				return err
			}
			r.act("BLKFLSBUF "+n.name, n.path, err)
			continue
		}
		n.dev = rdev
	}
	mounts, err := r.deviceMounts()
	if err != nil {
		r.act("read mountinfo", filepath.Join(r.e.procDir(), "self", "mountinfo"), err)
	}
	synced := map[uint64]bool{}
	for _, m := range mounts {
		sb := unix.Mkdev(m.Major, m.Minor)
		if synced[sb] || m.superReadOnly() {
			continue
		}
		pfd, err := openMount(m)
		if err != nil {
			continue // another mount of it may be reachable
		}
		// syncfs takes no O_PATH descriptor: reopen the mount's root.
		fd, err := unix.Open(r.fdPath(pfd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		unix.Close(pfd)
		if err == nil {
			err = unix.Syncfs(fd)
			unix.Close(fd)
		}
		synced[sb] = err == nil
		r.act("syncfs "+m.MountPoint, m.MountPoint, err)
	}
	for i, n := range r.nodes {
		if fds[i] < 0 {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fds[i]), unix.BLKFLSBUF, 0)
		var err error
		if errno != 0 {
			err = nodeErr("BLKFLSBUF", n.path, errno)
			if isVanished(err) {
				return err
			}
		}
		r.act("BLKFLSBUF "+n.name, n.path, err)
	}
	return nil
}

// protectNodes sets the kernel flag on the disk, then on each partition.
// Only a vanished device is returned as an error; other failures are
// actions and left for the verification to count.
func (r *enforceRun) protectNodes() error {
	for i := range r.nodes {
		n := &r.nodes[i]
		fd, rdev, err := openBlock(n.path)
		if err != nil {
			if isVanished(err) {
				return err
			}
			r.act("BLKROSET "+n.name, n.path, err)
			continue
		}
		n.dev = rdev
		ro, err := getRO(fd, n.path)
		switch {
		case err != nil:
			r.act("BLKROSET "+n.name, n.path, err)
		case !ro:
			err = setRO(fd, n.path, true)
			r.res.Repaired = true
			r.changed = true
			r.act("BLKROSET "+n.name, n.path, err)
		case !n.disk:
			// Reads back read-only through its disk; set the partition's
			// own flag as well, so that it holds on kernels before 5.12
			// and while someone sets only the disk writable again.
			// Changes nothing visible: no action.
			err = setRO(fd, n.path, true)
		}
		unix.Close(fd)
		if err != nil && isVanished(err) {
			return err
		}
	}
	return nil
}

// mnt is a mount of the device, opened by its mount point when it is
// reachable there (not hidden below another mount, nor in another mount
// namespace).
type mnt struct {
	Mount
	fd       int // O_PATH on the mount's root, -1 when not reachable
	detached bool
}

func (m *mnt) reachable() bool { return m.fd >= 0 }

// fdPath names the mount through our open descriptor, for the calls that
// take a path.
func (r *enforceRun) fdPath(fd int) string {
	return filepath.Join(r.e.procDir(), "self", "fd", strconv.Itoa(fd))
}

// deviceMounts reads ProcDir/self/mountinfo afresh and returns the mounts
// of the device's nodes: those whose device number is a node's, and those
// whose source is a node (FUSE and btrfs filesystems have anonymous device
// numbers). Only lines that can be such a mount are parsed: this runs
// twice in every Protect, and mountinfo can be long.
func (r *enforceRun) deviceMounts() ([]Mount, error) {
	b, err := os.ReadFile(filepath.Join(r.e.procDir(), "self", "mountinfo"))
	if err != nil {
		return nil, err
	}
	devs := make(map[uint64]bool, len(r.nodes))
	paths := make(map[string]bool, len(r.nodes))
	fields := make(map[string]bool, len(r.nodes))
	for _, n := range r.nodes {
		if n.dev != 0 {
			devs[n.dev] = true
			fields[fmt.Sprintf("%d:%d", unix.Major(n.dev), unix.Minor(n.dev))] = true
		}
		paths[n.path] = true
	}
	devPrefix := " " + r.e.devDir() + "/"
	var ours []Mount
	rest := string(b)
	for n := 1; rest != ""; n++ {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		// The third field is major:minor.
		_, after, _ := strings.Cut(line, " ")
		_, after, _ = strings.Cut(after, " ")
		dev, _, _ := strings.Cut(after, " ")
		if !fields[dev] && !strings.Contains(line, devPrefix) {
			continue
		}
		m, err := parseMountinfoLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		if devs[unix.Mkdev(m.Major, m.Minor)] || paths[m.Source] {
			ours = append(ours, m)
			continue
		}
		// A source such as /dev/disk/by-uuid/... names a node by a link.
		if strings.HasPrefix(m.Source, r.e.devDir()+"/") {
			var st unix.Stat_t
			if unix.Stat(m.Source, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && devs[st.Rdev] {
				ours = append(ours, m)
			}
		}
	}
	return ours, nil
}

// openMount opens the mount's root at its mount point and checks that the
// path leads to this very mount (by mount ID), so that nothing done
// through the descriptor can hit a mount stacked on top of it.
func openMount(m Mount) (int, error) {
	fd, err := unix.Open(m.MountPoint, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, err
	}
	var stx unix.Statx_t
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx)
	if err == nil && stx.Mask&unix.STATX_MNT_ID != 0 && stx.Mnt_id != uint64(m.ID) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s leads to mount %d, not %d: hidden below another mount", m.MountPoint, stx.Mnt_id, m.ID)
	}
	return fd, nil
}

// superGroups groups mounts by superblock (their st_dev), in mountinfo
// order: the first mount of a group is the earliest mounted.
func superGroups(ms []*mnt) [][]*mnt {
	var keys []uint64
	groups := map[uint64][]*mnt{}
	for _, m := range ms {
		k := unix.Mkdev(m.Major, m.Minor)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], m)
	}
	out := make([][]*mnt, 0, len(keys))
	for _, k := range keys {
		out = append(out, groups[k])
	}
	return out
}

// protectMounts makes every filesystem of the device read-only.
func (r *enforceRun) protectMounts() error {
	mounts, err := r.deviceMounts()
	if err != nil {
		r.act("read mountinfo", filepath.Join(r.e.procDir(), "self", "mountinfo"), err)
		r.fail(fmt.Errorf("mounts unknown: %w", err))
		return nil
	}
	var ms []*mnt
	for _, m := range mounts {
		fd, err := openMount(m)
		if err != nil {
			r.e.log().Debug("mount not reachable by its path", "device", r.res.Device.Name, "mount", m.MountPoint, "err", err)
		}
		ms = append(ms, &mnt{Mount: m, fd: fd})
	}
	defer func() {
		for _, m := range ms {
			if m.fd >= 0 {
				unix.Close(m.fd)
			}
		}
	}()
	for _, g := range superGroups(ms) {
		r.protectSuper(g)
	}
	return nil
}

// protectSuper makes one superblock and its mounts read-only.
func (r *enforceRun) protectSuper(g []*mnt) {
	var target *mnt // the mount the superblock was remounted through
	if !g[0].superReadOnly() {
		r.res.Repaired = true
		r.changed = true
		i := slices.IndexFunc(g, (*mnt).reachable)
		if i < 0 {
			r.act(fmt.Sprintf("remount %s (%s) read-only", g[0].MountPoint, g[0].Source), g[0].MountPoint,
				errors.New("no mount of this filesystem is reachable by its path"))
			return // the verification fails on the writable mountinfo entries
		}
		target = g[i]
		err := r.remountSuper(target, true)
		if err != nil && r.gentle && errors.Is(err, unix.EBUSY) && len(r.e.findHolders(r.fsRef(g), false)) == 0 {
			// A file closed a moment ago may still be in the middle of
			// its final release.
			time.Sleep(20 * time.Millisecond)
			err = r.remountSuper(target, true)
		}
		r.act("remount "+target.MountPoint+" read-only", target.MountPoint, err)
		switch {
		case err != nil && r.gentle:
			r.leaveBusy(g, target, err)
			return
		case err != nil:
			r.handleBusy(g, target, err)
		}
	}
	for _, m := range g {
		if !m.reachable() || m.detached || slices.Contains(m.Options, "ro") {
			continue
		}
		// Writes already fail through the read-only superblock; the
		// per-mount flag keeps them failing should the superblock be made
		// writable again. On the mount just remounted it completes that
		// step: no action of its own.
		r.changed = true
		err := r.setMountFlag(m, true)
		if m != target || err != nil {
			r.act("set mount "+m.MountPoint+" read-only", m.MountPoint, err)
		}
	}
}

// leaveBusy, for ProtectGently, leaves a superblock that would not go
// read-only as it is and says who keeps it writable. Only EBUSY is being
// busy: another failure is left for the verification to count.
func (r *enforceRun) leaveBusy(g []*mnt, target *mnt, err error) {
	if !errors.Is(err, unix.EBUSY) {
		return
	}
	if r.busy == nil {
		r.busy = map[uint64]bool{}
	}
	r.busy[unix.Mkdev(g[0].Major, g[0].Minor)] = true
	for _, h := range r.e.findHolders(r.fsRef(g), false) {
		r.res.Busy = append(r.res.Busy, Writer{PID: h.pid, Command: h.comm, What: h.what, Mount: target.MountPoint})
	}
	if len(r.res.Busy) == 0 {
		// Busy, but no writer found (one in another PID namespace, or a
		// file just closed): the caller retries all the same.
		r.res.Busy = append(r.res.Busy, Writer{What: "unknown writer", Mount: target.MountPoint})
	}
}

// handleBusy deals with a superblock that would not go read-only.
func (r *enforceRun) handleBusy(g []*mnt, target *mnt, err error) {
	ref := r.fsRef(g)
	if r.e.OnBusy != OnBusyDetach {
		for round := 0; round < busyRounds && errors.Is(err, unix.EBUSY); round++ {
			hs := r.e.findHolders(ref, false)
			if len(hs) == 0 {
				// A file closed a moment ago may still be in the
				// middle of its final release.
				time.Sleep(20 * time.Millisecond)
			}
			r.end(hs)
			err = r.remountSuper(target, true)
			r.act("remount "+target.MountPoint+" read-only (retry)", target.MountPoint, err)
		}
		if err == nil {
			return
		}
	}
	// Detach every mount we can reach, deepest first (detaching a mount
	// detaches those below it too); our descriptors keep the detached
	// filesystem at hand, so that it can still be made read-only.
	deepest := slices.Clone(g)
	slices.SortStableFunc(deepest, func(a, b *mnt) int { return len(b.MountPoint) - len(a.MountPoint) })
	for _, m := range deepest {
		if !m.reachable() {
			continue
		}
		derr := unix.Unmount(r.fdPath(m.fd), unix.MNT_DETACH)
		m.detached = derr == nil
		r.act("detach "+m.MountPoint, m.MountPoint, derr)
	}
	for round := 0; round < busyRounds; round++ {
		// First the writers; then, if the filesystem still cannot go
		// read-only, everyone using it (a working directory or any open
		// file there is enough to create files on a writable one).
		hs := r.e.findHolders(ref, round > 0)
		for i := range hs {
			// Paths in a detached mount read from its root.
			if h := &hs[i]; strings.HasPrefix(h.path, "/") && !ref.under(h.path) {
				h.what = strings.Replace(h.what, h.path, target.MountPoint+h.path, 1)
				h.path = target.MountPoint + h.path
			}
		}
		r.end(hs)
		err = r.remountSuper(target, true)
		r.act("remount detached "+target.MountPoint+" read-only", target.MountPoint, err)
		if err == nil {
			return
		}
	}
	var sfs unix.Statfs_t
	if ferr := unix.Fstatfs(target.fd, &sfs); ferr != nil || sfs.Flags&unix.ST_RDONLY == 0 {
		r.fail(fmt.Errorf("filesystem %s (%s) stays writable: %w", target.MountPoint, target.Source, err))
	}
}

// fsRef identifies files on the superblock of g.
func (r *enforceRun) fsRef(g []*mnt) fsRef {
	ref := fsRef{devs: map[uint64]bool{unix.Mkdev(g[0].Major, g[0].Minor): true}}
	for _, m := range g {
		if m.reachable() {
			ref.prefixes = append(ref.prefixes, m.MountPoint)
		}
	}
	return ref
}

// remountSuper reconfigures the superblock behind m read-only (or
// read-write). The new mount API changes only the superblock's flag,
// unlike mount(2) with MS_REMOUNT, which would also reset the mount's
// nosuid, nodev and noexec flags unless they are all passed back.
func (r *enforceRun) remountSuper(m *mnt, ro bool) error {
	flag := "rw"
	if ro {
		flag = "ro"
	}
	sfd, err := unix.Fspick(m.fd, "", unix.FSPICK_CLOEXEC|unix.FSPICK_EMPTY_PATH)
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.2.
		flags := mountFlags(m.Options) | unix.MS_REMOUNT
		if ro {
			flags |= unix.MS_RDONLY
		}
		return unix.Mount("", r.fdPath(m.fd), "", flags, "")
	}
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	if err := unix.FsconfigSetFlag(sfd, flag); err != nil {
		return err
	}
	return unix.FsconfigReconfigure(sfd)
}

// setMountFlag sets (or clears) the per-mount read-only flag of m.
func (r *enforceRun) setMountFlag(m *mnt, ro bool) error {
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if !ro {
		attr = unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
	}
	err := unix.MountSetattr(m.fd, "", unix.AT_EMPTY_PATH, &attr)
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.12: a bind remount replaces all the per-mount
		// flags, so pass the current ones back.
		flags := mountFlags(m.Options) | unix.MS_REMOUNT | unix.MS_BIND
		if ro {
			flags |= unix.MS_RDONLY
		} else {
			flags &^= unix.MS_RDONLY
		}
		return unix.Mount("", r.fdPath(m.fd), "", flags, "")
	}
	return err
}

// mountFlags maps per-mount options back to mount(2) flags.
func mountFlags(opts []string) uintptr {
	var f uintptr
	for _, o := range opts {
		switch o {
		case "ro":
			f |= unix.MS_RDONLY
		case "nosuid":
			f |= unix.MS_NOSUID
		case "nodev":
			f |= unix.MS_NODEV
		case "noexec":
			f |= unix.MS_NOEXEC
		case "noatime":
			f |= unix.MS_NOATIME
		case "nodiratime":
			f |= unix.MS_NODIRATIME
		case "relatime":
			f |= unix.MS_RELATIME
		case "nosymfollow":
			f |= unix.MS_NOSYMFOLLOW
		}
	}
	return f
}

// verify checks, after the fact, that nothing can write to the device.
func (r *enforceRun) verify() error {
	for _, n := range r.nodes {
		ro, err := IsReadOnly(n.path)
		switch {
		case err != nil && isVanished(err):
			return err
		case err != nil:
			r.fail(fmt.Errorf("verify %s: %w", n.name, err))
		case !ro:
			r.fail(fmt.Errorf("verify %s: still writable after BLKROSET", n.name))
		}
	}
	mounts, err := r.deviceMounts()
	if err != nil {
		r.fail(fmt.Errorf("verify mounts: %w", err))
	}
	for _, m := range mounts {
		if r.busy[unix.Mkdev(m.Major, m.Minor)] {
			continue // left writable on purpose (ProtectGently)
		}
		if !m.ReadOnly() {
			r.fail(fmt.Errorf("verify %s: mounted read-write", m.MountPoint))
			continue
		}
		if err := r.probeMount(m); err != nil {
			r.fail(err)
		}
	}
	if r.changed && len(r.nodes) > 0 {
		if err := probeBlock(r.nodes[0].path); err != nil {
			if isVanished(err) {
				return err
			}
			r.fail(err)
		}
	}
	return nil
}

// probeMount tries to create a file on the mount, which must fail with
// EROFS. Mounts hidden below others are covered by the mountinfo check.
func (r *enforceRun) probeMount(m Mount) error {
	fd, err := openMount(m)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	name := verifyPrefix + strconv.FormatUint(rand.Uint64(), 36)
	f, err := unix.Openat(fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, unix.ENOTDIR) {
		// A bind-mounted file: opening it for writing must fail.
		name = ""
		f, err = unix.Open(r.fdPath(fd), unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	}
	switch {
	case errors.Is(err, unix.EROFS):
		return nil
	case err != nil:
		return fmt.Errorf("verify %s: a write failed, but not as read-only: %w", m.MountPoint, err)
	}
	unix.Close(f)
	if name != "" {
		unix.Unlinkat(fd, name, 0)
	}
	return fmt.Errorf("verify %s: a file could be created", m.MountPoint)
}

// probeBlock checks that the whole disk takes no write. The kernel lets a
// read-only block device be opened for writing (Linux 6.x) and fails each
// write(2) with EPERM; a zero-byte write reaches that check without
// writing anything even if the device were writable. Older kernels fail
// the open with EACCES or EROFS.
func probeBlock(node string) error {
	fd, err := unix.Open(node, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return nil
	case err != nil:
		return nodeErr("verify write to", node, err)
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, nil)
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES):
		return nil
	case err != nil:
		return nodeErr("verify write to", node, err)
	}
	return fmt.Errorf("verify %s: the disk accepts writes", node)
}

// Release undoes Protect for an exempted device: it clears the read-only
// flag of the disk and its partitions and makes every mounted filesystem
// of them read-write (including one that was mounted read-only before
// Protect). State is StateExempted when everything reads back writable.
// It is idempotent: on a device already writable it changes nothing,
// reports no actions, and Repaired is false; otherwise Repaired is true.
// On failure State is StateReadOnly when the disk still reads back
// read-only and StateWritable otherwise; the caller protects it again.
func (e *Enforcer) Release(ctx context.Context, d Device) (Result, error) {
	r, err := e.newRun(ctx, d)
	if err != nil {
		return r.finish("release", StateExempted, err)
	}
	for i := range r.nodes {
		n := &r.nodes[i]
		fd, rdev, err := openBlock(n.path)
		if err != nil {
			if isVanished(err) {
				return r.finish("release", StateExempted, err)
			}
			r.act("BLKROSET 0 "+n.name, n.path, err)
			r.fail(err)
			continue
		}
		n.dev = rdev
		// The disk comes first: once its flag is clear, a partition reads
		// back read-only only through its own flag (set by Protect).
		ro, err := getRO(fd, n.path)
		if err == nil && !ro {
			unix.Close(fd)
			continue
		}
		if err == nil {
			err = setRO(fd, n.path, false)
			r.res.Repaired = true
		}
		unix.Close(fd)
		if err != nil && isVanished(err) {
			return r.finish("release", StateExempted, err)
		}
		r.act("BLKROSET 0 "+n.name, n.path, err)
	}
	mounts, err := r.deviceMounts()
	if err != nil {
		r.fail(fmt.Errorf("read mounts: %w", err))
		return r.finish("release", StateExempted, nil)
	}
	var ms []*mnt
	for _, m := range mounts {
		fd, err := openMount(m)
		if err != nil {
			r.act("remount "+m.MountPoint+" read-write", m.MountPoint, err)
			continue // the read-back below fails on it
		}
		ms = append(ms, &mnt{Mount: m, fd: fd})
	}
	for _, g := range superGroups(ms) {
		if g[0].superReadOnly() {
			err := r.remountSuper(g[0], false)
			r.res.Repaired = true
			r.act("remount "+g[0].MountPoint+" read-write", g[0].MountPoint, err)
		}
		for _, m := range g {
			if slices.Contains(m.Options, "ro") {
				err := r.setMountFlag(m, false)
				r.res.Repaired = true
				r.act("set mount "+m.MountPoint+" read-write", m.MountPoint, err)
			}
		}
	}
	for _, m := range ms {
		unix.Close(m.fd)
	}
	// Read back.
	for _, n := range r.nodes {
		ro, err := IsReadOnly(n.path)
		if err != nil {
			if isVanished(err) {
				return r.finish("release", StateExempted, err)
			}
			r.fail(err)
		} else if ro {
			r.fail(fmt.Errorf("%s still read-only", n.name))
		}
	}
	mounts, err = r.deviceMounts()
	if err != nil {
		r.fail(fmt.Errorf("read mounts: %w", err))
	}
	for _, m := range mounts {
		if m.ReadOnly() {
			r.fail(fmt.Errorf("%s still mounted read-only", m.MountPoint))
		}
	}
	res, err := r.finish("release", StateExempted, nil)
	if err != nil {
		res.State = StateReadOnly
		if ro, rerr := IsReadOnly(r.nodes[0].path); rerr == nil && !ro {
			res.State = StateWritable
		}
	}
	return res, err
}
