package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// mediaAgent is an enrolled agent that treats loop devices as removable
// (the test-only matcher) and rescans every second.
func mediaAgent(t *testing.T, c *collector) (*agent, string) {
	t.Helper()
	a, id := enrolledAgent(t, c, "60s")
	appendConfig(t, a, "media:\n  reconcile_interval: 1s\n  treat_as_removable: [\"loop*\"]\n")
	return a, id
}

// appendConfig adds YAML to the agent's configuration file.
func appendConfig(t testing.TB, a *agent, yaml string) {
	t.Helper()
	f, err := os.OpenFile(a.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(yaml); err != nil {
		t.Fatal(err)
	}
}

func writeFails(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		_, err = f.WriteString("leak\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			return fmt.Errorf("wrote %s", path)
		}
	}
	if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("write %s failed, but not as read-only: %v", path, err)
	}
	return nil
}

func ddFails(t *testing.T, dev string) {
	t.Helper()
	out, err := exec.Command("dd", "if=/dev/zero", "of=/dev/"+dev, "bs=4096", "count=1", "oflag=direct", "conv=notrunc").CombinedOutput()
	if err == nil {
		t.Errorf("dd to /dev/%s succeeded: %s", dev, out)
	}
}

func mediaDevice(term *mnguardv1.Terminal, name string) *mnguardv1.RemovableDevice {
	for _, d := range term.GetPosture().GetMedia().GetDevices() {
		if d.GetName() == name {
			return d
		}
	}
	return nil
}

func (c *collector) eventTypes(t *testing.T, id string) map[string]int {
	t.Helper()
	var evs mnguardv1.ListEventsResponse
	c.ctlJSON(t, &evs, "events", "list", "--terminal", id, "--limit", "1000")
	n := map[string]int{}
	for _, e := range evs.GetEvents() {
		n[e.GetEvent().GetType()]++
	}
	return n
}

// TestMediaEnforcement runs the real agent against real loop devices
// standing in for USB sticks: partitioned, formatted ext4 and vfat,
// mounted read-write before the agent starts, with a file held open for
// writing; then attached while it runs; drift; detach; restart.
func TestMediaEnforcement(t *testing.T) {
	testenv.RequireRoot(t, "loop devices and mounts")
	testenv.LockLoops(t)
	c := newCollector(t)
	a, id := mediaAgent(t, c)

	// Before the agent starts: a stick mounted read-write, a file held
	// open for writing on it.
	early := newLoopDisk(t, 64, "ext4", "vfat")
	mntExt4 := early.mount(t, early.parts[0])
	mntVfat := early.mount(t, early.parts[1])
	holder := exec.Command("sh", "-c", "exec 3>>"+filepath.Join(mntExt4, "held")+"; echo x >&3; sleep 600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	holderDone := make(chan error, 1)
	go func() { holderDone <- holder.Wait() }()
	t.Cleanup(func() { holder.Process.Kill() })
	if err := writeFails(filepath.Join(mntVfat, "before")); err == nil {
		t.Fatal("the vfat mount is not writable before the agent starts; the test proves nothing")
	}

	a.start(t)
	eventually(t, 10*time.Second, func() error {
		for _, dev := range append([]string{early.name}, early.parts...) {
			if getro(t, dev) != "1" {
				return fmt.Errorf("%s not read-only", dev)
			}
		}
		for _, m := range []string{mntExt4, mntVfat} {
			if err := writeFails(filepath.Join(m, "after")); err != nil {
				return err
			}
		}
		return nil
	})
	select {
	case <-holderDone:
	case <-time.After(5 * time.Second):
		t.Error("the process holding a file open for writing still runs")
	}
	ddFails(t, early.name)
	ddFails(t, early.parts[0])

	// Attached while the agent runs, not mounted.
	late := newLoopDisk(t, 32, "vfat")
	attached := time.Now()
	eventually(t, 5*time.Second, func() error {
		if getro(t, late.name) != "1" || getro(t, late.parts[0]) != "1" {
			return fmt.Errorf("%s not read-only yet", late.name)
		}
		return nil
	})
	t.Logf("attached %s read-only after %s (as seen by polling blockdev)", late.name, time.Since(attached).Round(time.Millisecond))
	ddFails(t, late.parts[0])

	// The collector sees both, identified by their backing files.
	eventually(t, 10*time.Second, func() error {
		term := c.terminal(t, id)
		m := term.GetPosture().GetMedia()
		if !m.GetHealthy() {
			return fmt.Errorf("media not healthy: %s", m.GetUnhealthyReason())
		}
		for _, l := range []*loopDisk{early, late} {
			d := mediaDevice(term, l.name)
			if d == nil || d.GetState() != "read-only" || d.GetSerial() != filepath.Base(l.image) || d.GetBus() != "test" {
				return fmt.Errorf("%s in posture: %v", l.name, d)
			}
		}
		if len(m.GetTreatAsRemovable()) != 1 {
			return fmt.Errorf("test matcher not reported: %v", m.GetTreatAsRemovable())
		}
		return nil
	})

	// Drift: someone sets the disk writable, or remounts read-write.
	sh(t, "blockdev", "--setrw", "/dev/"+late.name)
	// Remounting read-write needs the disk and the partition writable.
	// The agent hears of blockdev on their nodes (and of mount(8), which
	// opens them) and repairs within a millisecond, so the flags are
	// cleared through nodes of the test's own and the remount is mount(2)
	// itself; the agent hears of the remount through the mount table.
	if err := driftRemount(t, mntExt4, early.name, early.parts[0]); err != nil {
		t.Fatalf("could not remount the ext4 partition read-write to simulate drift: %v", err)
	}
	eventually(t, 5*time.Second, func() error {
		if getro(t, late.name) != "1" || getro(t, early.parts[0]) != "1" {
			return fmt.Errorf("%s or %s still writable", late.name, early.parts[0])
		}
		return writeFails(filepath.Join(mntExt4, "drift"))
	})

	// Detach.
	late.detach(t)
	eventually(t, 10*time.Second, func() error {
		n := c.eventTypes(t, id)
		for _, typ := range []string{"media.attached", "media.read_only_set", "media.drift_repaired", "media.detached"} {
			if n[typ] == 0 {
				return fmt.Errorf("no %s event yet: %v", typ, n)
			}
		}
		return nil
	})

	// Restart: what drifts while the agent is down is repaired when it is
	// back.
	a.proc.stop(t)
	sh(t, "blockdev", "--setrw", "/dev/"+early.parts[1])
	a.start(t)
	eventually(t, 10*time.Second, func() error {
		if getro(t, early.parts[1]) != "1" {
			return fmt.Errorf("%s writable after restart", early.parts[1])
		}
		return nil
	})
}
