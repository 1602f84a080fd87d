//go:build linux

package posture

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	"golang.org/x/sys/unix"
)

// startWatcher runs a real Watcher; its announcements arrive on the
// returned channel.
func startWatcher(t *testing.T) (*Watcher, chan string) {
	t.Helper()
	ch := make(chan string, 1000)
	w, err := NewWatcher(func(what string) { ch <- what })
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w, ch
}

// expect waits up to 1 s for an announcement of what, skipping others.
func expect(t *testing.T, ch chan string, what, after string) {
	t.Helper()
	deadline := time.After(time.Second)
	for {
		select {
		case got := <-ch:
			if got == what {
				return
			}
		case <-deadline:
			t.Fatalf("no %q announced within 1 s of %s", what, after)
		}
	}
}

// quiet checks that nothing of what is announced for a while.
func quiet(t *testing.T, ch chan string, what, after string) {
	t.Helper()
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case got := <-ch:
			if got == what {
				t.Fatalf("%q announced after %s", what, after)
			}
		case <-deadline:
			return
		}
	}
}

func drain(ch chan string) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestWatcherFiles: real inotify on real files. A watched file written in
// place, replaced by a rename, changed in mode and removed, and a watched
// file created in a directory that did not exist, are each announced
// within 1 s; a file next to them that is not watched is not.
func TestWatcherFiles(t *testing.T) {
	dir := t.TempDir()
	login := filepath.Join(dir, "pam.d", "login")
	later := filepath.Join(dir, "lib", "pam.d", "sudo") // its directory does not exist yet
	if err := os.MkdirAll(filepath.Dir(login), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(login, []byte("auth required pam_unix.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, ch := startWatcher(t)
	if err := w.WatchFiles([]string{login, later}); err != nil {
		t.Fatal(err)
	}
	step := func(what string, do func() error) {
		t.Helper()
		drain(ch)
		if err := do(); err != nil {
			t.Fatal(err)
		}
		expect(t, ch, "files", what)
	}
	step("a write in place", func() error { return os.WriteFile(login, []byte("auth required pam_permit.so\n"), 0o644) })
	step("a rename over it", func() error {
		if err := os.WriteFile(login+".tmp", []byte("auth sufficient pam_permit.so\n"), 0o644); err != nil {
			return err
		}
		return os.Rename(login+".tmp", login)
	})
	step("a mode change", func() error { return os.Chmod(login, 0o600) })
	step("its removal", func() error { return os.Remove(login) })

	drain(ch)
	if err := os.WriteFile(filepath.Join(dir, "pam.d", "unrelated"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	quiet(t, ch, "files", "a write to a file not watched")

	// The missing directory is watched for in its parent, one level up.
	if err := os.MkdirAll(filepath.Join(dir, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.WatchFiles([]string{login, later}); err != nil {
		t.Fatal(err)
	}
	step("its directory created", func() error { return os.Mkdir(filepath.Dir(later), 0o755) })
	// After the announcement the caller watches again: now the directory.
	if err := w.WatchFiles([]string{login, later}); err != nil {
		t.Fatal(err)
	}
	step("a file created in it", func() error { return os.WriteFile(later, []byte("auth required pam_unix.so\n"), 0o644) })

	// Unwatched: nothing more.
	if err := w.WatchFiles(nil); err != nil {
		t.Fatal(err)
	}
	drain(ch)
	if err := os.WriteFile(later, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	quiet(t, ch, "files", "a write after WatchFiles(nil)")
}

// TestWatcherNetwork: a tap interface added, given an address and removed
// (iproute2, root) is announced through rtnetlink within 1 s each.
func TestWatcherNetwork(t *testing.T) {
	testenv.RequireRoot(t, "add a network interface")
	ifname := fmt.Sprintf("mnpw%d", os.Getpid()%100000)
	_, ch := startWatcher(t)
	ip := func(args ...string) {
		t.Helper()
		drain(ch)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		expect(t, ch, "network", fmt.Sprint("ip ", args))
	}
	ip("tuntap", "add", ifname, "mode", "tap")
	t.Cleanup(func() { exec.Command("ip", "link", "del", ifname).Run() })
	ip("addr", "add", "192.0.2.78/32", "dev", ifname)
	ip("link", "del", ifname)
}

// nlmsg builds one rtnetlink message.
func nlmsg(typ uint16, body []byte) []byte {
	l := unix.SizeofNlMsghdr + len(body)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(l))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	copy(b[unix.SizeofNlMsghdr:], body)
	return b
}

func rtattr(typ uint16, payload []byte) []byte {
	l := unix.SizeofRtAttr + len(payload)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(l))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[4:], payload)
	return b
}

func TestRouteChanged(t *testing.T) {
	ifinfo := make([]byte, unix.SizeofIfInfomsg)
	link := append(append([]byte{}, ifinfo...), rtattr(unix.IFLA_IFNAME, []byte("eth0\x00"))...)
	wireless := append(append([]byte{}, ifinfo...), rtattr(unix.IFLA_WIRELESS, []byte{1, 2, 3, 4})...)
	for _, c := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"new link", nlmsg(unix.RTM_NEWLINK, link), true},
		{"link removed", nlmsg(unix.RTM_DELLINK, link), true},
		{"new address", nlmsg(unix.RTM_NEWADDR, make([]byte, 8)), true},
		{"address removed", nlmsg(unix.RTM_DELADDR, make([]byte, 8)), true},
		{"wireless event", nlmsg(unix.RTM_NEWLINK, wireless), false},
		{"wireless event, then a new address", append(nlmsg(unix.RTM_NEWLINK, wireless), nlmsg(unix.RTM_NEWADDR, make([]byte, 8))...), true},
		{"a route", nlmsg(unix.RTM_NEWROUTE, make([]byte, 12)), false},
		{"truncated", nlmsg(unix.RTM_NEWADDR, make([]byte, 8))[:10], false},
		{"empty", nil, false},
	} {
		if got := routeChanged(c.msg); got != c.want {
			t.Errorf("%s: routeChanged = %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzRouteChanged(f *testing.F) {
	f.Add(nlmsg(unix.RTM_NEWLINK, append(make([]byte, unix.SizeofIfInfomsg), rtattr(unix.IFLA_WIRELESS, []byte{1})...)))
	f.Add(nlmsg(unix.RTM_NEWADDR, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, b []byte) { routeChanged(b) })
}

func inotifyRecord(wd int32, mask uint32, name string) []byte {
	n := 0
	if name != "" {
		n = (len(name) + 1 + 15) &^ 15
	}
	b := make([]byte, unix.SizeofInotifyEvent+n)
	binary.NativeEndian.PutUint32(b[0:4], uint32(wd))
	binary.NativeEndian.PutUint32(b[4:8], mask)
	binary.NativeEndian.PutUint32(b[12:16], uint32(n))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestParseInotify(t *testing.T) {
	b := append(inotifyRecord(1, unix.IN_CLOSE_WRITE, "login"), inotifyRecord(2, unix.IN_DELETE_SELF, "")...)
	evs := parseInotify(b)
	if len(evs) != 2 || evs[0] != (inotifyEvent{1, unix.IN_CLOSE_WRITE, "login"}) || evs[1] != (inotifyEvent{2, unix.IN_DELETE_SELF, ""}) {
		t.Errorf("parseInotify = %+v", evs)
	}
	if evs := parseInotify(b[:20]); len(evs) != 0 {
		t.Errorf("a truncated record gave %+v", evs)
	}
}

func FuzzParseInotify(f *testing.F) {
	f.Add(inotifyRecord(1, unix.IN_CLOSE_WRITE, "login"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ev := range parseInotify(b) {
			if len(ev.name) > len(b) {
				t.Fatalf("name %q longer than the input", ev.name)
			}
		}
	})
}

// TestWatchSet: files grouped by directory (Unix paths: the watcher is
// Linux only).
func TestWatchSet(t *testing.T) {
	got := watchSet([]string{"/etc/pam.d/login", "/etc/pam.d/common-auth", "/etc/pam.d/login", "/usr/lib/pam.d/login", "relative", "/"})
	if len(got) != 2 || len(got["/etc/pam.d"]) != 2 || got["/etc/pam.d"][0] != "common-auth" || len(got["/usr/lib/pam.d"]) != 1 {
		t.Errorf("watchSet = %v", got)
	}
}
