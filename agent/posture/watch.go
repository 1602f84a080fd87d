package posture

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
)

// A Watcher announces what the operating system says may have changed the
// posture, so that the agent collects when something happened rather than
// on a short timer: network interfaces and their addresses (rtnetlink), USB
// devices (kernel uevents) and the files the posture was judged from, such
// as the PAM stacks (inotify on their directories). On Linux only; NewWatcher
// returns an error wrapping errors.ErrUnsupported elsewhere, where the agent
// keeps polling.
//
// Announcements are hints, never the truth: the posture is read again from
// the sources after one. A burst of events may give one call of Notify or
// several.
type Watcher struct {
	// Notify is called, from the watcher's goroutines, after each event
	// that may have changed the posture; what says which kind ("network",
	// "usb", "files"). It must not block.
	Notify func(what string)

	w *platformWatcher
}

// NewWatcher opens the notification sockets; Run delivers their events.
func NewWatcher(notify func(what string)) (*Watcher, error) {
	pw, err := newPlatformWatcher(notify)
	if err != nil {
		return nil, err
	}
	return &Watcher{Notify: notify, w: pw}, nil
}

// Run delivers events to Notify until ctx ends, then closes the watcher.
func (w *Watcher) Run(ctx context.Context) error { return w.w.run(ctx) }

// WatchFiles makes the watcher announce a change of any of the named files
// (absolute paths): written, replaced, created, removed, renamed or changed
// in mode or owner. Names of files that do not exist are watched for their
// creation. It replaces the previous set; it is safe to call while Run
// runs.
func (w *Watcher) WatchFiles(paths []string) error { return w.w.watchFiles(watchSet(paths)) }

// watchSet groups files by directory: the names to watch in each.
func watchSet(paths []string) map[string][]string {
	set := map[string][]string{}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			continue
		}
		p = filepath.Clean(p)
		dir, name := filepath.Dir(p), filepath.Base(p)
		if dir == p { // "/"
			continue
		}
		if !slices.Contains(set[dir], name) {
			set[dir] = append(set[dir], name)
		}
	}
	for d := range set {
		slices.Sort(set[d])
	}
	return set
}

// ueventSubsystem returns the SUBSYSTEM of a kernel uevent
// ("ACTION@DEVPATH\0KEY=VALUE\0..."), or nil when msg is not one or has
// none. It points into msg: no allocation for each of the many uevents
// that are not about USB.
func ueventSubsystem(msg []byte) []byte {
	head, rest, ok := bytes.Cut(msg, []byte{0})
	if !ok || !bytes.Contains(head, []byte("@")) {
		return nil
	}
	for len(rest) > 0 {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte{0})
		if v, ok := bytes.CutPrefix(kv, []byte("SUBSYSTEM=")); ok {
			return v
		}
	}
	return nil
}
