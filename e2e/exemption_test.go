package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// tokenCreds sends the operator API token with every call.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return true }

// adminClient is an in-process admin API client with the collector's admin
// token, for measurements that mnguardctl's process start would blur.
func (c *collector) adminClient(t testing.TB) mnguardv1.AdminServiceClient {
	t.Helper()
	tok, err := os.ReadFile(c.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: c.caPool(t), ServerName: "127.0.0.1"})),
		grpc.WithPerRPCCredentials(tokenCreds(strings.TrimSpace(string(tok)))),
	}
	if c.netns != "" {
		dial := netnsDialer(c.netns)
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	}
	conn, err := grpc.NewClient(c.grpcAddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return mnguardv1.NewAdminServiceClient(conn)
}

// exemptionArgs is "mnguard-agent exemption SUB" with the agent's config
// and state directory.
func exemptionArgs(a *agent, sub string, more ...string) []string {
	return append([]string{"exemption"}, a.args(sub, more...)...)
}

// loopID is the device identity the agent gives a loop disk it treats as
// removable.
func loopID(l *loopDisk) string { return "0000:0000:" + filepath.Base(l.image) }

// writeWorks writes a file on the mount and syncs it.
func writeWorks(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "exempted"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("minutes\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mountedRO reports whether the filesystem mounted at dir is read-only,
// from /proc/self/mounts. Tests wait for it before trying a write that
// must fail: a file opened for writing while the agent makes the mount
// read-only would make this test process a writer for the agent to end.
func mountedRO(dir string) error {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == dir {
			for _, o := range strings.Split(f[3], ",") {
				if o == "ro" {
					return nil
				}
			}
			return fmt.Errorf("%s is mounted read-write", dir)
		}
	}
	return fmt.Errorf("%s is not mounted", dir)
}

// issue runs mnguardctl exemptions issue and returns the record.
func (c *collector) issue(t *testing.T, id string, l *loopDisk, duration string) *mnguardv1.ExemptionRecord {
	t.Helper()
	var resp mnguardv1.IssueExemptionResponse
	c.ctlJSON(t, &resp, "exemptions", "issue", "--terminal", id, "--device", loopID(l), "--duration", duration,
		"--reason", "copy the council minutes", "--ticket", "INC-42")
	if resp.GetExemption().GetExemption().GetId() == "" {
		t.Fatalf("exemptions issue: %v", &resp)
	}
	return resp.GetExemption()
}

// TestExemptions is issue 5's promise on real loop devices with a real
// collector and agent: a helpdesk exemption makes one device writable
// within a second, leaves the others read-only, ends on revocation and on
// expiry — with the collector down, and with the agent down when it ends —
// and a cut-off terminal gets one through a challenge and a one-time code.
func TestExemptions(t *testing.T) {
	testenv.RequireRoot(t, "loop devices and mounts")
	testenv.LockLoops(t)
	c := newCollector(t)
	a, id := mediaAgent(t, c)
	a.useTestClock(t)
	a.start(t)
	c.waitReported(t, id, 10*time.Second)

	stickA := newLoopDisk(t, 32, "ext4")
	stickB := newLoopDisk(t, 32, "ext4")
	mntA := stickA.mount(t, stickA.parts[0])
	mntB := stickB.mount(t, stickB.parts[0])
	eventually(t, 10*time.Second, func() error {
		for _, m := range []string{mntA, mntB} {
			if err := mountedRO(m); err != nil {
				return err
			}
		}
		return nil
	})
	for _, m := range []string{mntA, mntB} {
		if err := writeFails(filepath.Join(m, "before")); err != nil {
			t.Fatal(err)
		}
	}
	// The collector must know the devices for offline codes later.
	eventually(t, 10*time.Second, func() error {
		term := c.terminal(t, id)
		if mediaDevice(term, stickA.name) == nil || mediaDevice(term, stickB.name) == nil {
			return fmt.Errorf("devices not in the posture yet")
		}
		return nil
	})

	// Issue: A writable within a second; B stays read-only.
	start := time.Now()
	e1 := c.issue(t, id, stickA, "1m")
	eventually(t, 5*time.Second, func() error { return writeWorks(mntA) })
	took := time.Since(start)
	t.Logf("issue to writable (mnguardctl process included): %s", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("issue to writable took %s, want within 1s", took)
	}
	if err := writeFails(filepath.Join(mntB, "other")); err != nil {
		t.Errorf("the other stick: %v", err)
	}
	ddFails(t, stickB.name)

	// Bad requests: refused with a clear error, B stays read-only.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", loopID(stickB), "--duration", "9h"}, "duration"},
		{[]string{"--device", "0000:0000"}, "serial"},
		{[]string{"--device", "loop0"}, "VID:PID:SERIAL"},
		{[]string{"--device", "0000:0000:nonexistent.img", "--duration", "0s"}, "duration"},
	} {
		args := append([]string{"exemptions", "issue", "--terminal", id, "--reason", "r", "--ticket", "t"}, tc.args...)
		_, errOut, code := c.ctl(t, args...)
		if code == 0 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("exemptions issue %v: exit %d, %q; want a one-line error about %s", tc.args, code, errOut, tc.want)
		}
	}
	if err := writeFails(filepath.Join(mntB, "after-bad")); err != nil {
		t.Errorf("after refused requests: %v", err)
	}

	// Revoke: B exempted, then revoked; read-only again within a second.
	e2 := c.issue(t, id, stickB, "1h")
	eventually(t, 5*time.Second, func() error { return writeWorks(mntB) })
	if _, errOut, code := c.ctl(t, "exemptions", "revoke", e2.GetExemption().GetId(), "--reason", "call ended"); code != 0 {
		t.Fatalf("exemptions revoke: exit %d: %s", code, errOut)
	}
	revoked := time.Now()
	eventually(t, 5*time.Second, func() error { return writeFails(filepath.Join(mntB, "after-revoke")) })
	if d := time.Since(revoked); d > time.Second {
		t.Errorf("revoke took %s to reach the device, want within 1s", d)
	}
	var list mnguardv1.ListExemptionsResponse
	c.ctlJSON(t, &list, "exemptions", "list", "--terminal", id, "--active")
	if len(list.GetExemptions()) != 1 || list.GetExemptions()[0].GetExemption().GetId() != e1.GetExemption().GetId() {
		t.Errorf("active exemptions: %v, want only %s", list.GetExemptions(), e1.GetExemption().GetId())
	}

	// The collector stops, and half-way through A's minute the agent's
	// wall clock is set back 20 s: the exemption still ends on time (its
	// duration since receipt, by the monotonic clock), not 20 s later, and
	// not early either.
	grpcAddr, httpAddr := c.grpcAddr, c.httpAddr
	c.stop(t)
	end := e1.GetExemption().GetNotAfter().AsTime()
	time.Sleep(time.Until(end.Add(-30 * time.Second)))
	a.shiftClock(t, -20*time.Second)
	time.Sleep(time.Until(end.Add(-3 * time.Second)))
	if err := writeWorks(mntA); err != nil {
		t.Errorf("3 s before its end, with the clock set back: %v", err)
	}
	time.Sleep(time.Until(end))
	eventually(t, 5*time.Second, func() error { return writeFails(filepath.Join(mntA, "after-expiry")) })
	if late := time.Since(end); late > 3*time.Second {
		t.Errorf("expired exemption ended %s late", late)
	}
	ddFails(t, stickA.name)
	a.shiftClock(t, 0)

	// The collector is back; an exemption that ends while the agent is
	// stopped leaves the device read-only at the agent's restart.
	c.grpcAddr, c.httpAddr = grpcAddr, httpAddr
	restarted := time.Now()
	c.start(t)
	// The agent reconnects within its retry delay (at most 15 s).
	eventually(t, 20*time.Second, func() error {
		if seen := c.terminal(t, id).GetLastSeenAt(); seen == nil || seen.AsTime().Before(restarted) {
			return fmt.Errorf("the agent has not reported since the collector restarted")
		}
		return nil
	})
	e3 := c.issue(t, id, stickA, "1m")
	eventually(t, 5*time.Second, func() error { return writeWorks(mntA) })
	a.proc.stop(t)
	time.Sleep(time.Until(e3.GetExemption().GetNotAfter().AsTime()) + 500*time.Millisecond)
	a.start(t)
	eventually(t, 10*time.Second, func() error { return mountedRO(mntA) })
	if err := writeFails(filepath.Join(mntA, "after-restart")); err != nil {
		t.Fatal(err)
	}

	// Offline: the terminal shows a challenge, the helpdesk answers, the
	// code works once; a wrong code is refused.
	out, errOut, code := run(t, nil, "mnguard-agent", exemptionArgs(a, "challenge", "--device", loopID(stickB), "--duration", "15m")...)
	if code != 0 {
		t.Fatalf("exemption challenge: exit %d: %s", code, errOut)
	}
	var challenge string
	if m := regexp.MustCompile(`(?m)^Challenge: ([0-9A-Z]{5}-[0-9A-Z]{5})$`).FindStringSubmatch(out); m != nil {
		challenge = m[1]
	}
	if challenge == "" {
		t.Fatalf("exemption challenge printed no challenge:\n%s", out)
	}
	var oc mnguardv1.IssueOfflineExemptionCodeResponse
	c.ctlJSON(t, &oc, "exemptions", "offline-code", "--terminal", id, "--challenge", challenge, "--reason", "offline", "--ticket", "INC-43")
	if _, errOut, code := run(t, nil, "mnguard-agent", exemptionArgs(a, "enter", "00000-00000")...); code == 0 {
		t.Errorf("a wrong offline code was accepted: %s", errOut)
	}
	if err := writeFails(filepath.Join(mntB, "wrong-code")); err != nil {
		t.Errorf("after a wrong code: %v", err)
	}
	if _, errOut, code := run(t, nil, "mnguard-agent", exemptionArgs(a, "enter", oc.GetCode())...); code != 0 {
		t.Fatalf("exemption enter: exit %d: %s", code, errOut)
	}
	eventually(t, 5*time.Second, func() error { return writeWorks(mntB) })
	if _, errOut, code := run(t, nil, "mnguard-agent", exemptionArgs(a, "enter", oc.GetCode())...); code == 0 {
		t.Errorf("the offline code worked twice: %s", errOut)
	}

	// What the collector recorded.
	eventually(t, 15*time.Second, func() error {
		n := c.eventTypes(t, id)
		for _, typ := range []string{"exemption.issued", "exemption.delivered", "exemption.revoked", "media.exemption_applied", "media.exemption_ended"} {
			if n[typ] == 0 {
				return fmt.Errorf("no %s event yet: %v", typ, n)
			}
		}
		return nil
	})
}
