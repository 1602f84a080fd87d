package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kardianos/service"
	"github.com/mnguard/mnguard/internal/testenv"
)

// TestServiceLifecycle installs the agent as a real system service through
// the machine's service manager (systemd, or System V init where systemd is
// not running), starts it, sees it report, stops and removes it. It changes
// the system's service definitions, so it needs root; it uses its own
// service name and removes everything it made.
func TestServiceLifecycle(t *testing.T) {
	testenv.RequireRoot(t, "install a system service")
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	name := fmt.Sprintf("mnguard-agent-e2e-%d", os.Getpid())
	f, err := os.OpenFile(a.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "service_name: %s\n", name)
	f.Close()
	agentCmd := func(args ...string) (string, string, int) {
		return run(t, nil, "mnguard-agent", a.args(args[0], args[1:]...)...)
	}
	t.Cleanup(func() {
		agentCmd("stop")
		agentCmd("uninstall", "--no-rules")
		os.Remove("/var/log/" + name + ".log")
		os.Remove("/var/log/" + name + ".err")
	})
	if out, errOut, code := agentCmd("install", "--no-rules"); code != 0 {
		t.Fatalf("install: exit %d: %s%s", code, out, errOut)
	}
	if _, errOut, code := agentCmd("install", "--no-rules"); code == 0 || !strings.Contains(errOut, "install") {
		t.Errorf("second install: exit %d, %q; want a refusal", code, errOut)
	}
	if out, errOut, code := agentCmd("start"); code != 0 {
		t.Fatalf("start: exit %d: %s%s", code, out, errOut)
	}
	eventually(t, 10*time.Second, func() error {
		out, _, code := agentCmd("status")
		if code != 0 || !strings.Contains(out, "installed, running") || !strings.Contains(out, "connected since") {
			return fmt.Errorf("status exit %d:\n%s", code, out)
		}
		return nil
	})
	if c.terminal(t, id).GetLastSeenAt() == nil {
		t.Error("the service's agent has not reported")
	}
	if out, errOut, code := agentCmd("stop"); code != 0 {
		t.Fatalf("stop: exit %d: %s%s", code, out, errOut)
	}
	eventually(t, 10*time.Second, func() error {
		out, _, code := agentCmd("status")
		if code == 0 || !strings.Contains(out, "stopped at") {
			return fmt.Errorf("status after stop: exit %d:\n%s", code, out)
		}
		return nil
	})
	if out, errOut, code := agentCmd("uninstall", "--no-rules"); code != 0 {
		t.Fatalf("uninstall: exit %d: %s%s", code, out, errOut)
	}
	out, _, _ := agentCmd("status")
	if strings.Contains(out, "installed, ") {
		t.Errorf("status after uninstall still says installed:\n%s", out)
	}
	t.Logf("service manager: %s", service.Platform())
}
