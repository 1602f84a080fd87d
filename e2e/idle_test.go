package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// postureWithin waits until the collector holds a posture of terminal id
// for which ok is true, and fails the test when that takes longer than
// within from since. It asks over the admin API in-process (mnguardctl's
// start-up would eat the time measured).
func postureWithin(t *testing.T, admin mnguardv1.AdminServiceClient, id string, since time.Time, within time.Duration, what string, ok func(*mnguardv1.Posture) bool) {
	t.Helper()
	ctx := context.Background()
	for {
		resp, err := admin.GetTerminal(ctx, &mnguardv1.GetTerminalRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.GetTerminal().GetPosture(); ok(p) {
			t.Logf("%s: in the collector's posture %s after the change", what, time.Since(since).Round(time.Millisecond))
			return
		}
		if time.Since(since) > within {
			t.Fatalf("%s: not in the collector's posture within %s (mfa: %v)", what, within, resp.GetTerminal().GetPosture().GetMfa())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPAMDriftReportedAtOnce: with a 60 s report interval, every change to
// a PAM service file that the MFA posture is judged from — rewritten in
// place, replaced by a rename, removed, created again — reaches the
// collector's posture within 1 s.
func TestPAMDriftReportedAtOnce(t *testing.T) {
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	pamDir := filepath.Join(t.TempDir(), "pam.d")
	if err := os.Mkdir(pamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	login := filepath.Join(pamDir, "login")
	withMFA := "auth required pam_unix.so\nauth required pam_mnguard.so socket=" + a.pamSocket + "\n"
	without := "auth required pam_unix.so\n"
	if err := os.WriteFile(login, []byte(withMFA), 0o644); err != nil {
		t.Fatal(err)
	}
	appendConfig(t, a, fmt.Sprintf("  pam_dir: %s\n  services: [login]\n", pamDir))
	a.start(t)
	admin := c.adminClient(t)
	enforced := func(p *mnguardv1.Posture) bool { return p.GetMfa().GetEnforced() }
	notEnforced := func(p *mnguardv1.Posture) bool { return p.GetMfa() != nil && !p.GetMfa().GetEnforced() }
	postureWithin(t, admin, id, time.Now(), 10*time.Second, "first report", enforced)
	// Let the first reports settle: the change below is the only one.
	time.Sleep(2 * time.Second)

	steps := []struct {
		what string
		do   func() error
		ok   func(*mnguardv1.Posture) bool
	}{
		{"pam_mnguard removed by a write in place", func() error { return os.WriteFile(login, []byte(without), 0o644) }, notEnforced},
		{"pam_mnguard back by a rename over the file", func() error {
			if err := os.WriteFile(login+".new", []byte(withMFA), 0o644); err != nil {
				return err
			}
			return os.Rename(login+".new", login)
		}, enforced},
		{"service file removed", func() error { return os.Remove(login) }, func(p *mnguardv1.Posture) bool {
			return notEnforced(p) && len(p.GetMfa().GetServices()) == 1 && !p.GetMfa().GetServices()[0].GetPresent()
		}},
		{"service file created again", func() error { return os.WriteFile(login, []byte(withMFA), 0o644) }, enforced},
	}
	for _, s := range steps {
		changed := time.Now()
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		postureWithin(t, admin, id, changed, time.Second, s.what, s.ok)
		time.Sleep(500 * time.Millisecond)
	}
}

// TestNetworkChangeReportedAtOnce: with a 60 s report interval, a new
// network interface, and an address added to it, reach the collector's
// posture within 1 s. Needs root and iproute2 for a tap interface, which
// it removes again.
func TestNetworkChangeReportedAtOnce(t *testing.T) {
	testenv.RequireRoot(t, "add a network interface")
	ifname := fmt.Sprintf("mnwt%d", os.Getpid()%100000)
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	a.start(t)
	admin := c.adminClient(t)
	postureWithin(t, admin, id, time.Now(), 10*time.Second, "first report", func(p *mnguardv1.Posture) bool { return p.GetPolicyVersion() != "" })
	time.Sleep(2 * time.Second)
	iface := func(p *mnguardv1.Posture) *mnguardv1.NetworkInterface {
		for _, ifc := range p.GetInterfaces() {
			if ifc.GetName() == ifname {
				return ifc
			}
		}
		return nil
	}

	added := time.Now()
	if out, err := exec.Command("ip", "tuntap", "add", ifname, "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("ip tuntap add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", ifname).Run() })
	postureWithin(t, admin, id, added, time.Second, "new interface", func(p *mnguardv1.Posture) bool { return iface(p) != nil })
	time.Sleep(500 * time.Millisecond)

	added = time.Now()
	if out, err := exec.Command("ip", "addr", "add", "192.0.2.77/32", "dev", ifname).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	postureWithin(t, admin, id, added, time.Second, "new address", func(p *mnguardv1.Posture) bool {
		for _, a := range iface(p).GetAddrs() {
			if a == "192.0.2.77/32" {
				return true
			}
		}
		return false
	})
}
