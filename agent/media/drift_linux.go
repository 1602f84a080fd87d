//go:build linux

package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Guard makes the disk a block uevent is about read-only at once (the
// partition too, for a partition's event), on the goroutine that received
// it, when a quick look says the disk is removable (see Guarder). Only
// criteria the full classification (Sysfs.Disk) shares make it act, so
// that it never sets read-only a disk the manager would leave alone:
//
//   - the disk's name matches TreatAsRemovable;
//   - it is optical (srN);
//   - a directory of its DEVPATH is a USB, Firewire or MMC device (its
//     subsystem link);
//   - its removable attribute is 1.
//
// A disk without a medium (size 0: a detached loop device, an empty
// reader) and a disk that holds a system mount (systemMounts) are left
// alone, as Protect leaves them.
func (p *linuxPlatform) Guard(n Notification, skip func(disk string) bool) (string, error) {
	if n.Subsystem != "block" || (n.Action != "add" && n.Action != "change") || n.DevName == "" || n.DevPath == "" {
		return "", nil
	}
	name := path.Base(n.DevName)
	disk := name
	if n.DevType == "partition" {
		disk = path.Base(path.Dir(n.DevPath))
	}
	if checkName(disk) != nil || checkName(name) != nil || (skip != nil && skip(disk)) {
		return "", nil
	}
	if !p.quickRemovable(disk, n) {
		return "", nil
	}
	sys := filepath.Join(p.o.SysRoot, "class", "block", disk)
	if size, err := readAttr(filepath.Join(sys, "size")); err != nil || strings.TrimSpace(size) == "0" {
		return "", err
	}
	if p.systemDisk(disk) {
		return "", nil
	}
	nodes := []string{disk}
	if name != disk {
		nodes = append(nodes, name)
	}
	var done []string
	for _, node := range nodes {
		devNode := filepath.Join(p.o.DevDir, node)
		fd, _, err := openBlock(devNode)
		if err != nil {
			return strings.Join(done, " "), err
		}
		ro, err := getRO(fd, devNode)
		switch {
		case err != nil:
		case node != disk:
			// A partition reads back read-only through its disk; its
			// own flag keeps it so should the disk's alone be cleared.
			if err = setRO(fd, devNode, true); err == nil {
				done = append(done, node)
			}
		case !ro:
			if err = setRO(fd, devNode, true); err == nil {
				done = append(done, node)
			}
		}
		unix.Close(fd)
		if err != nil {
			return strings.Join(done, " "), err
		}
	}
	return strings.Join(done, " "), nil
}

// quickRemovable is Guard's look at a disk: a subset of what
// classifier.classify counts as removable, read with few system calls.
func (p *linuxPlatform) quickRemovable(disk string, n Notification) bool {
	for _, pat := range p.o.TreatAsRemovable {
		if m, err := path.Match(pat, disk); err == nil && m {
			return true
		}
	}
	if isOptical(disk) {
		return true
	}
	// The disk's ancestors in the device tree: DEVPATH is the kernel's,
	// below /sys/devices (ParseUevent refused "..").
	dir := path.Dir(n.DevPath)
	if n.DevType == "partition" {
		dir = path.Dir(dir)
	}
	for ; strings.HasPrefix(dir, "/devices/"); dir = path.Dir(dir) {
		t, err := os.Readlink(filepath.Join(p.o.SysRoot, filepath.FromSlash(dir), "subsystem"))
		if err != nil {
			continue
		}
		switch path.Base(filepath.ToSlash(t)) {
		case "usb", "firewire", "ieee1394", "mmc":
			return true
		}
	}
	v, err := readAttr(filepath.Join(p.o.SysRoot, "class", "block", disk, "removable"))
	return err == nil && strings.TrimSpace(v) == "1"
}

// systemDisk reports whether disk is (or is the disk of a partition that
// is) the device of a system mount. The system disks are found once;
// when they cannot be, every disk counts as one (Guard then does nothing
// and the full enforcement decides).
func (p *linuxPlatform) systemDisk(disk string) bool {
	p.sysOnce.Do(func() {
		p.sysDisks = map[string]bool{}
		for _, mp := range systemMounts {
			var st unix.Stat_t
			if unix.Stat(mp, &st) != nil {
				continue
			}
			link := filepath.Join(p.o.SysRoot, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)))
			real, err := filepath.EvalSymlinks(link)
			if errors.Is(err, os.ErrNotExist) {
				continue // not a block device (tmpfs, overlay, btrfs subvolume)
			}
			if err != nil {
				p.sysErr = err
				return
			}
			p.sysDisks[filepath.Base(real)] = true
			if exists(filepath.Join(real, "partition")) {
				p.sysDisks[filepath.Base(filepath.Dir(real))] = true
			}
		}
	})
	return p.sysErr != nil || p.sysDisks[disk]
}

// driftWatch announces drift on tracked devices: inotify on their nodes
// (BLKROSET needs the node opened, and closing it is announced: this
// kernel sends no uevent for BLKROSET, only for a driver's set_disk_ro)
// and the mount table's poll (a filesystem of theirs mounted or
// remounted).
type driftWatch struct {
	mu      sync.Mutex
	fd      int              // inotify, -1 until first needed
	wds     map[int32]string // watch descriptor to disk name
	byDisk  map[string][]int32
	setupEr error
}

func newDriftWatch() *driftWatch {
	return &driftWatch{fd: -1, wds: map[int32]string{}, byDisk: map[string][]int32{}}
}

// inotify returns the inotify descriptor, made at the first call.
func (w *driftWatch) inotify() (int, error) {
	if w.fd < 0 && w.setupEr == nil {
		w.fd, w.setupEr = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	}
	return w.fd, w.setupEr
}

// driftMask: any close of the node (whoever changed the flag opened it),
// and its removal.
const driftMask = unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE | unix.IN_ATTRIB

// Track watches the nodes of d (disk and partitions).
func (p *linuxPlatform) Track(d Device) {
	if d.MTP {
		return
	}
	w := p.drift
	w.mu.Lock()
	defer w.mu.Unlock()
	fd, err := w.inotify()
	if err != nil {
		return
	}
	for _, n := range append([]string{d.Name}, d.Partitions...) {
		if checkName(n) != nil {
			continue
		}
		wd, err := unix.InotifyAddWatch(fd, filepath.Join(p.o.DevDir, n), driftMask)
		if err != nil {
			continue // gone; the full enforcement notices
		}
		if _, seen := w.wds[int32(wd)]; !seen {
			w.wds[int32(wd)] = d.Name
			w.byDisk[d.Name] = append(w.byDisk[d.Name], int32(wd))
		}
	}
}

// Untrack stops watching the nodes of the disk name.
func (p *linuxPlatform) Untrack(name string) {
	w := p.drift
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wd := range w.byDisk[name] {
		if w.fd >= 0 {
			unix.InotifyRmWatch(w.fd, uint32(wd))
		}
		delete(w.wds, wd)
	}
	delete(w.byDisk, name)
}

// Drifted reads the read-only flags of d's nodes from sysfs and the mount
// table: nothing it does opens a node.
func (p *linuxPlatform) Drifted(d Device) bool {
	if d.MTP {
		a, err := p.sys.Authorized(d.Name)
		return err != nil || a
	}
	devs := map[string]bool{}
	for _, n := range append([]string{d.Name}, d.Partitions...) {
		dir := filepath.Join(p.o.SysRoot, "class", "block", n)
		ro, err := readAttr(filepath.Join(dir, "ro"))
		if err != nil || strings.TrimSpace(ro) != "1" {
			return true
		}
		dev, err := readAttr(filepath.Join(dir, "dev"))
		if err != nil {
			return true
		}
		devs[strings.TrimSpace(dev)] = true
	}
	b, err := os.ReadFile(filepath.Join(p.o.ProcDir, "self", "mountinfo"))
	if err != nil {
		return true
	}
	devPrefix := " " + p.o.DevDir + "/"
	for line := range strings.Lines(string(b)) {
		_, after, _ := strings.Cut(line, " ")
		_, after, _ = strings.Cut(after, " ")
		dev, _, _ := strings.Cut(after, " ")
		if !devs[dev] && !strings.Contains(line, devPrefix) {
			continue
		}
		m, err := parseMountinfoLine(strings.TrimSuffix(line, "\n"))
		if err != nil {
			return true
		}
		ours := devs[fmt.Sprintf("%d:%d", m.Major, m.Minor)]
		for _, n := range append([]string{d.Name}, d.Partitions...) {
			ours = ours || m.Source == filepath.Join(p.o.DevDir, n)
		}
		if ours && !m.ReadOnly() {
			return true
		}
	}
	return false
}

// watchDrift announces drift through f until ctx ends: ActionDrift with
// the disk's name when a tracked node was closed or its attributes
// changed, without a name when the mount table changed.
func (p *linuxPlatform) watchDrift(ctx context.Context, f func(Notification)) error {
	w := p.drift
	w.mu.Lock()
	ifd, err := w.inotify()
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	mi, err := unix.Open(filepath.Join(p.o.ProcDir, "self", "mountinfo"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mountinfo: %w", err)
	}
	defer unix.Close(mi)
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	defer unix.Close(stop)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer unix.Close(ep)
	for _, r := range []struct {
		fd     int
		events uint32
	}{{ifd, unix.EPOLLIN}, {mi, unix.EPOLLPRI}, {stop, unix.EPOLLIN}} {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, r.fd, &unix.EpollEvent{Events: r.events, Fd: int32(r.fd)}); err != nil {
			return fmt.Errorf("epoll add: %w", err)
		}
	}
	defer context.AfterFunc(ctx, func() { unix.Write(stop, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })()
	evs := make([]unix.EpollEvent, 4)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := unix.EpollWait(ep, evs, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll wait: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		received := time.Now()
		mounts := false
		disks := map[string]bool{}
		for _, ev := range evs[:n] {
			switch int(ev.Fd) {
			case mi:
				mounts = true
			case ifd:
				p.readInotify(ifd, buf, disks)
			}
		}
		if mounts && p.tracking() {
			f(Notification{Action: ActionDrift, Received: received})
			continue // every device is looked at
		}
		for disk := range disks {
			f(Notification{Action: ActionDrift, DevName: disk, Received: received})
		}
	}
}

// tracking reports whether any device is tracked: a mount table change
// matters only then.
func (p *linuxPlatform) tracking() bool {
	p.drift.mu.Lock()
	defer p.drift.mu.Unlock()
	return len(p.drift.byDisk) > 0
}

// readInotify drains the inotify descriptor into the names of the disks
// whose nodes were touched.
func (p *linuxPlatform) readInotify(fd int, buf []byte, disks map[string]bool) {
	w := p.drift
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			return
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if disk, ok := w.wds[ev.Wd]; ok {
				if ev.Mask&unix.IN_IGNORED != 0 {
					delete(w.wds, ev.Wd)
					w.byDisk[disk] = removeWd(w.byDisk[disk], ev.Wd)
				} else {
					disks[disk] = true
				}
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		w.mu.Unlock()
	}
}

func removeWd(wds []int32, wd int32) []int32 {
	out := wds[:0]
	for _, w := range wds {
		if w != wd {
			out = append(out, w)
		}
	}
	return out
}
