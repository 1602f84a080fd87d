package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// pamtester runs pamtester for service and user with code typed at the
// prompt, and returns its combined output and whether it authenticated.
func pamtester(t *testing.T, service, user, code string) (string, bool) {
	t.Helper()
	cmd := exec.Command("pamtester", "-v", service, user, "authenticate")
	cmd.Stdin = strings.NewReader(code + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("pamtester: %v", err)
	}
	return out.String(), err == nil
}

// TestPAMLoginGate runs a login through real PAM (pamtester, the built
// pam_mnguard.so) against the real agent socket and collector: with the
// agent down the login is refused as "authentication information
// unavailable"; with the agent up, a user without an enrolled token is
// refused; the code is in no output.
func TestPAMLoginGate(t *testing.T) {
	testenv.RequireRoot(t, "PAM service files")
	if _, err := exec.LookPath("pamtester"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pamtester missing (make deps installs it)")
		}
		t.Skip("pamtester missing")
	}
	c := newCollector(t)
	a, _ := enrolledAgent(t, c, "60s")
	sock := a.pamSocket

	service := fmt.Sprintf("mnguard-e2e-%d", os.Getpid())
	conf := fmt.Sprintf("auth required %s socket=%s timeout=5\naccount required pam_permit.so\n", bin("pam_mnguard.so"), sock)
	if err := os.WriteFile("/etc/pam.d/"+service, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/etc/pam.d/" + service) })
	const code = "287082"
	const unavailable = "Authentication service cannot retrieve authentication info"

	// Agent down: no socket; refused.
	out, ok := pamtester(t, service, "alice", code)
	if ok || !strings.Contains(out, unavailable) {
		t.Fatalf("agent down: authenticated=%v\n%s", ok, out)
	}

	// Agent up: alice has no token; refused, and the code is in no log.
	a.start(t)
	eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(sock); err != nil {
			return err
		}
		return nil
	})
	out, ok = pamtester(t, service, "alice", code)
	if ok || !strings.Contains(out, pamAuthErr) {
		t.Fatalf("agent up, user without a token: authenticated=%v\n%s", ok, out)
	}
	eventually(t, 5*time.Second, func() error {
		if !strings.Contains(a.proc.out.String(), "alice") {
			return fmt.Errorf("the agent did not log the attempt")
		}
		return nil
	})
	for name, log := range map[string]string{"agent": a.proc.out.String(), "collector": c.proc.out.String(), "pamtester": out} {
		if strings.Contains(log, code) {
			t.Errorf("the code appears in the %s's output", name)
		}
	}
}
