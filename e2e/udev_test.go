package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/media"
	"github.com/mnguard/mnguard/internal/testenv"
)

// TestUdevRuleWithoutAgent: with no agent running, the shipped udev rule
// (in a variant whose hook treats loop devices as removable) makes a newly
// attached disk and its partitions read-only. It starts systemd-udevd when
// it is not running, and stops it again.
func TestUdevRuleWithoutAgent(t *testing.T) {
	testenv.RequireRoot(t, "udevd and loop devices")
	testenv.LockLoops(t)
	if exec.Command("udevadm", "control", "--ping").Run() != nil {
		udevd := "/lib/systemd/systemd-udevd"
		if _, err := os.Stat(udevd); err != nil {
			t.Fatalf("%s missing (make deps installs the udev package): %v", udevd, err)
		}
		sh(t, udevd, "--daemon")
		t.Cleanup(func() { exec.Command("udevadm", "control", "--exit").Run() })
		deadline := time.Now().Add(10 * time.Second)
		for exec.Command("udevadm", "control", "--ping").Run() != nil {
			if time.Now().After(deadline) {
				t.Fatal("systemd-udevd did not answer within 10s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("media:\n  treat_as_removable: [\"loop*\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rule := filepath.Join("/run/udev/rules.d", fmt.Sprintf("60-mnguard-media-e2e-%d.rules", os.Getpid()))
	if err := os.MkdirAll(filepath.Dir(rule), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rule, media.UdevRule(bin("mnguard-agent"), cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(rule)
		exec.Command("udevadm", "control", "--reload").Run()
	})
	sh(t, "udevadm", "control", "--reload")

	l := newLoopDisk(t, 32, "vfat")
	sh(t, "udevadm", "settle", "--timeout=10")
	eventually(t, 5*time.Second, func() error {
		for _, dev := range append([]string{l.name}, l.parts...) {
			if getro(t, dev) != "1" {
				return fmt.Errorf("%s is writable: the udev hook did not run or failed", dev)
			}
		}
		return nil
	})
	ddFails(t, l.parts[0])
}
