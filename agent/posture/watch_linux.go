//go:build linux

package posture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// inotifyMask: a file written, replaced (created or moved in over it),
// removed, renamed away or changed in mode or owner; the directory itself
// removed or renamed.
const inotifyMask = unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

type platformWatcher struct {
	notify func(string)
	ino    *os.File // inotify instance
	route  *os.File // rtnetlink: links and addresses
	uevent *os.File // kernel uevents

	mu    sync.Mutex
	wds   map[int32]dirWatch // inotify watch descriptor → what it watches
	byDir map[string]int32
}

type dirWatch struct {
	dir   string
	names []string // the names in dir that matter, sorted
}

func newPlatformWatcher(notify func(string)) (*platformWatcher, error) {
	w := &platformWatcher{notify: notify, wds: map[int32]dirWatch{}, byDir: map[string]int32{}}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("posture: inotify: %w", err)
	}
	w.ino = os.NewFile(uintptr(fd), "inotify")
	if w.route, err = netlinkSocket(unix.NETLINK_ROUTE, unix.SOCK_RAW, unix.RTMGRP_LINK|unix.RTMGRP_IPV4_IFADDR|unix.RTMGRP_IPV6_IFADDR, "rtnetlink"); err != nil {
		w.ino.Close()
		return nil, err
	}
	// Group 1 is the kernel's own uevents (udev's are group 2).
	if w.uevent, err = netlinkSocket(unix.NETLINK_KOBJECT_UEVENT, unix.SOCK_DGRAM, 1, "uevent"); err != nil {
		w.ino.Close()
		w.route.Close()
		return nil, err
	}
	return w, nil
}

func netlinkSocket(proto, typ int, groups uint32, name string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, fmt.Errorf("posture: %s socket: %w", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("posture: %s socket: bind: %w", name, err)
	}
	// Non-blocking, so reads wait in the runtime's poller and Close ends them.
	return os.NewFile(uintptr(fd), name), nil
}

func (w *platformWatcher) run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() { errs <- w.readInotify() })
	wg.Go(func() {
		errs <- recvLoop(w.route, func(msg []byte, _ unix.Sockaddr) {
			if routeChanged(msg) {
				w.notify("network")
			}
		}, func() { w.notify("network") })
	})
	wg.Go(func() {
		errs <- recvLoop(w.uevent, func(msg []byte, from unix.Sockaddr) {
			// Only the kernel (port 0) sends real uevents.
			if nl, ok := from.(*unix.SockaddrNetlink); ok && nl.Pid == 0 && string(ueventSubsystem(msg)) == "usb" {
				w.notify("usb")
			}
		}, func() { w.notify("usb") })
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs: // a socket failed: stop, the caller polls
	}
	w.ino.Close()
	w.route.Close()
	w.uevent.Close()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// recvLoop receives datagrams until f is closed; overrun is called when
// the kernel dropped some (the socket's buffer was full).
func recvLoop(f *os.File, handle func(msg []byte, from unix.Sockaddr), overrun func()) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 16<<10)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN && rerr != unix.EINTR
		})
		switch {
		case err != nil:
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("posture: %s: %w", f.Name(), err)
		case rerr == unix.ENOBUFS:
			overrun()
		case rerr != nil:
			return fmt.Errorf("posture: %s: %w", f.Name(), rerr)
		default:
			handle(buf[:n], from)
		}
	}
}

func (w *platformWatcher) readInotify() error {
	buf := make([]byte, 16<<10)
	for {
		n, err := w.ino.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("posture: inotify: %w", err)
		}
		w.mu.Lock()
		changed := false
		for _, ev := range parseInotify(buf[:n]) {
			dw, known := w.wds[ev.wd]
			switch {
			case ev.mask&unix.IN_Q_OVERFLOW != 0:
				changed = true
			case !known:
			case ev.mask&unix.IN_IGNORED != 0:
				// The directory is gone (or was unwatched): the next
				// collection watches again what is there.
				delete(w.wds, ev.wd)
				if w.byDir[dw.dir] == ev.wd {
					delete(w.byDir, dw.dir)
				}
				changed = true
			case ev.mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0:
				changed = true
			case slices.Contains(dw.names, ev.name):
				changed = true
			}
		}
		w.mu.Unlock()
		if changed {
			w.notify("files")
		}
	}
}

// watchFiles watches each directory of set for its names; a directory that
// does not exist is watched for in its parent.
func (w *platformWatcher) watchFiles(set map[string][]string) error {
	want := map[string][]string{}
	for dir, names := range set {
		want[dir] = append(want[dir], names...)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			parent := filepath.Dir(dir)
			if parent != dir {
				want[parent] = append(want[parent], filepath.Base(dir))
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for dir, wd := range w.byDir {
		if _, ok := want[dir]; !ok {
			unix.InotifyRmWatch(int(w.ino.Fd()), uint32(wd))
			delete(w.byDir, dir)
			delete(w.wds, wd)
		}
	}
	var errs []error
	for dir, names := range want {
		slices.Sort(names)
		names = slices.Compact(names)
		wd, err := unix.InotifyAddWatch(int(w.ino.Fd()), dir, inotifyMask)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
				errs = append(errs, fmt.Errorf("posture: watch %s: %w", dir, err))
			}
			if old, ok := w.byDir[dir]; ok {
				delete(w.wds, old)
				delete(w.byDir, dir)
			}
			continue
		}
		if old, ok := w.byDir[dir]; ok && old != int32(wd) {
			delete(w.wds, old)
		}
		w.byDir[dir] = int32(wd)
		w.wds[int32(wd)] = dirWatch{dir: dir, names: names}
	}
	return errors.Join(errs...)
}

type inotifyEvent struct {
	wd   int32
	mask uint32
	name string
}

// parseInotify splits what a read of an inotify descriptor returned into
// events; a truncated event ends the list.
func parseInotify(b []byte) []inotifyEvent {
	var out []inotifyEvent
	for len(b) >= unix.SizeofInotifyEvent {
		ev := inotifyEvent{
			wd:   int32(binary.NativeEndian.Uint32(b[0:4])),
			mask: binary.NativeEndian.Uint32(b[4:8]),
		}
		n := binary.NativeEndian.Uint32(b[12:16])
		if uint64(n) > uint64(len(b)-unix.SizeofInotifyEvent) {
			break
		}
		name := b[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+int(n)]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		ev.name = string(name)
		out = append(out, ev)
		b = b[unix.SizeofInotifyEvent+int(n):]
	}
	return out
}

// routeChanged says whether a datagram of rtnetlink messages announces a
// change the posture shows: a link added, removed or changed, an address
// added or removed. Wireless events (RTM_NEWLINK carrying IFLA_WIRELESS),
// which a Wi-Fi card sends many times a minute, do not count.
func routeChanged(b []byte) bool {
	for len(b) >= unix.SizeofNlMsghdr {
		l := binary.NativeEndian.Uint32(b[0:4])
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.SizeofNlMsghdr || uint64(l) > uint64(len(b)) {
			return false
		}
		body := b[unix.SizeofNlMsghdr:l]
		switch typ {
		case unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR:
			return true
		case unix.RTM_NEWLINK:
			if !hasAttr(body, unix.SizeofIfInfomsg, unix.IFLA_WIRELESS) {
				return true
			}
		}
		// Messages are 4-byte aligned.
		next := (int(l) + 3) &^ 3
		if next >= len(b) {
			return false
		}
		b = b[next:]
	}
	return false
}

// hasAttr says whether the route attributes after a fixed header of hdr
// bytes hold one of type typ.
func hasAttr(body []byte, hdr int, typ uint16) bool {
	if len(body) < hdr {
		return false
	}
	b := body[hdr:]
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) &^ unix.NLA_F_NESTED
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		if t == typ {
			return true
		}
		next := (l + 3) &^ 3
		if next >= len(b) {
			return false
		}
		b = b[next:]
	}
	return false
}
