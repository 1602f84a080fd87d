package media

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mnguard/mnguard/internal/testenv"
)

// startWatch runs watchUevents until the test ends and returns what it
// passes on. It returns once the socket is bound.
func startWatch(t *testing.T, test ueventTest, block <-chan struct{}) <-chan Notification {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	notes := make(chan Notification, 4096)
	ready := make(chan struct{})
	done := make(chan error, 1)
	test.ready = func() { close(ready) }
	go func() {
		done <- watchUevents(ctx, func(n Notification) {
			if block != nil {
				<-block
			}
			select {
			case notes <- n:
			default:
				t.Errorf("test cannot keep up with the notifications")
			}
		}, nil, test)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("WatchUevents: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchUevents after cancel: %v, want nil", err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("WatchUevents still running 2s after cancel")
		}
	})
	return notes
}

// attachLoop attaches a 16 MiB file to a free loop device, detaching it
// when the test ends, and returns the device's name and when losetup
// started and returned.
func attachLoop(t *testing.T, img string) (name string, detach func() time.Time, start, returned time.Time) {
	t.Helper()
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	returned = time.Now()
	if err != nil {
		t.Fatalf("losetup --find --show: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	attached := true
	detach = func() time.Time {
		if !attached {
			return time.Time{}
		}
		attached = false
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
		return time.Now()
	}
	t.Cleanup(func() { detach() })
	return filepath.Base(dev), detach, start, returned
}

func requireLoops(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "loop devices")
	if _, err := exec.LookPath("losetup"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("losetup missing (make deps installs util-linux)")
		}
		t.Skip("needs losetup (util-linux)")
	}
	testenv.LockLoops(t)
}

// waitFor returns the first notification for the block device name with
// one of actions, failing after 2 s.
func waitUevent(t *testing.T, notes <-chan Notification, name string, actions ...string) Notification {
	t.Helper()
	timeout := time.After(2 * time.Second)
	for {
		select {
		case n := <-notes:
			if n.DevName == "mnguard-forged" {
				t.Fatalf("a uevent not sent by the kernel was passed on: %+v", n)
			}
			if n.Subsystem == "block" && n.DevName == name && strings.Contains(" "+strings.Join(actions, " ")+" ", " "+n.Action+" ") {
				return n
			}
		case <-timeout:
			t.Fatalf("no %v uevent for %s within 2s", actions, name)
		}
	}
}

// TestWatchUeventsLoop attaches and detaches a real loop device (root,
// losetup) and expects its uevents.
func TestWatchUeventsLoop(t *testing.T) {
	requireLoops(t)
	notes := startWatch(t, ueventTest{}, nil)
	img := filepath.Join(t.TempDir(), "stick-uevent.img")
	name, detach, start, returned := attachLoop(t, img)

	n := waitUevent(t, notes, name, "add", "change")
	t.Logf("%s %s: uevent received %v after losetup started, %v after it returned (negative: before)",
		n.Action, name, n.Received.Sub(start), n.Received.Sub(returned))
	if n.DevPath != "/devices/virtual/block/"+name || n.DevType != "disk" {
		t.Errorf("attach uevent: %+v", n)
	}
	if n.Received.Before(start) || n.Received.After(time.Now()) {
		t.Errorf("Received %v is not between losetup starting (%v) and now", n.Received, start)
	}

	// The real kernel's sysfs agrees with the test trees on loop devices.
	d, ok, err := Sysfs{Root: "/sys", TreatAsRemovable: []string{"loop*"}}.Disk(name)
	if err != nil || !ok {
		t.Fatalf("Disk(%s) in /sys: ok %v, err %v", name, ok, err)
	}
	if d.Bus != BusTest || d.Serial != "stick-uevent.img" || d.ID() != "0000:0000:stick-uevent.img" ||
		d.SizeBytes != 16<<20 || d.SysPath != "devices/virtual/block/"+name {
		t.Errorf("Disk(%s) in /sys = %+v", name, d)
	}
	if _, ok, err := (Sysfs{Root: "/sys"}).Disk(name); ok || err != nil {
		t.Errorf("Disk(%s) in /sys without treat_as_removable: ok %v, err %v; want not removable", name, ok, err)
	}

	// A message that is not the kernel's is dropped; the kernel's next
	// one (a synthetic change) still comes through.
	forge(t)
	written := time.Now()
	if err := os.WriteFile("/sys/class/block/"+name+"/uevent", []byte("change"), 0); err != nil {
		t.Fatalf("synthetic uevent: %v", err)
	}
	n = waitUevent(t, notes, name, "change")
	// The kernel sends a synthetic uevent during the write: this is the
	// listener's own latency.
	t.Logf("synthetic change %s: uevent received %v after the write to its uevent file began", name, n.Received.Sub(written))

	detached := detach()
	n = waitUevent(t, notes, name, "remove", "change")
	t.Logf("detach %s: %s uevent received %v after losetup -d returned", name, n.Action, n.Received.Sub(detached))
}

// forge sends a block uevent to the kernel's multicast group from user
// space, as only a process with CAP_NET_ADMIN can.
func forge(t *testing.T) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("forge: %v", err)
	}
	defer unix.Close(fd)
	msg := "add@/devices/virtual/block/mnguard-forged\x00ACTION=add\x00DEVPATH=/devices/virtual/block/mnguard-forged\x00" +
		"SUBSYSTEM=block\x00DEVNAME=mnguard-forged\x00DEVTYPE=disk\x00SEQNUM=1\x00"
	if err := unix.Sendto(fd, []byte(msg), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		t.Fatalf("forge: %v", err)
	}
}

// TestWatchUeventsOverflow lets the socket's queue overflow while f is
// busy: the caller must hear of it.
func TestWatchUeventsOverflow(t *testing.T) {
	requireLoops(t)
	block := make(chan struct{})
	notes := startWatch(t, ueventTest{rcvBuf: 4096}, block)
	name, _, _, _ := attachLoop(t, filepath.Join(t.TempDir(), "stick-overflow.img"))
	// f is blocked on the first uevent; these fill the queue behind it.
	for i := 0; i < 200; i++ {
		if err := os.WriteFile("/sys/class/block/"+name+"/uevent", []byte("change"), 0); err != nil {
			t.Fatalf("synthetic uevent: %v", err)
		}
	}
	close(block)
	timeout := time.After(2 * time.Second)
	for {
		select {
		case n := <-notes:
			if n.Action == ActionOverflow {
				if n.Received.IsZero() || n.DevPath != "" || n.Subsystem != "" {
					t.Errorf("overflow notification: %+v", n)
				}
				return
			}
		case <-timeout:
			t.Fatal("no overflow notification within 2s")
		}
	}
}

func TestWatchUeventsCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- WatchUevents(ctx, func(Notification) {}, nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchUevents with an ended context: %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("WatchUevents with an ended context still running after 2s")
	}
	// And with one that ends later, while it waits.
	startWatch(t, ueventTest{}, nil)
}
