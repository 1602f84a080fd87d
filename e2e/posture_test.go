package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// TestPostureReportedOnChange: with a 60 s report interval, a change on the
// terminal (a new network interface) reaches the collector within seconds,
// as a new posture history row. Needs root and iproute2 to add a tap
// interface, which it removes again.
func TestPostureReportedOnChange(t *testing.T) {
	testenv.RequireRoot(t, "add a network interface")
	ifname := fmt.Sprintf("mngt%d", os.Getpid()%100000)
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	a.start(t)
	var before *mnguardv1.Terminal
	eventually(t, 5*time.Second, func() error {
		before = c.terminal(t, id)
		if before.GetPosture().GetPolicyVersion() == "" {
			return fmt.Errorf("no posture under the collector's policy yet")
		}
		return nil
	})
	if out, err := exec.Command("ip", "tuntap", "add", ifname, "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("ip tuntap add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", ifname).Run() })
	added := time.Now()
	eventually(t, 10*time.Second, func() error {
		term := c.terminal(t, id)
		for _, ifc := range term.GetPosture().GetInterfaces() {
			if ifc.GetName() == ifname {
				if term.GetPostureHistoryCount() <= before.GetPostureHistoryCount() {
					return fmt.Errorf("posture history %d, was %d", term.GetPostureHistoryCount(), before.GetPostureHistoryCount())
				}
				return nil
			}
		}
		return fmt.Errorf("interface %s not in the reported posture", ifname)
	})
	t.Logf("new interface reported %s after it appeared", time.Since(added).Round(100*time.Millisecond))
}
