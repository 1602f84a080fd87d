package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func (c *collector) token(t testing.TB, ttl string, uses int) string {
	t.Helper()
	var resp mnguardv1.CreateEnrollmentTokenResponse
	c.ctlJSON(t, &resp, "tokens", "create", "--ttl", ttl, "--uses", fmt.Sprint(uses))
	if !strings.HasPrefix(resp.GetToken(), "mne_") || resp.GetExpiresAt() == nil {
		t.Fatalf("tokens create -o json = %v", &resp)
	}
	return resp.GetToken()
}

func (c *collector) terminals(t testing.TB) []*mnguardv1.Terminal {
	t.Helper()
	var resp mnguardv1.ListTerminalsResponse
	c.ctlJSON(t, &resp, "terminals", "list")
	return resp.GetTerminals()
}

func (c *collector) terminal(t testing.TB, id string) *mnguardv1.Terminal {
	t.Helper()
	var resp mnguardv1.GetTerminalResponse
	c.ctlJSON(t, &resp, "terminals", "show", id)
	return resp.GetTerminal()
}

// TestEnrollAndReport is the foundation's promise: an agent enrolled with a
// token reports its posture, visible through mnguardctl within 5 s.
func TestEnrollAndReport(t *testing.T) {
	c := newCollector(t)
	a := newAgent(t, c, "60s")
	tok := c.token(t, "1h", 2)
	out, errOut, code := a.enroll(t, c, tok, c.pin)
	if code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "Enrolled as terminal") {
		t.Errorf("enroll printed %q", out)
	}
	for _, f := range []string{"agent.key", "agent.crt", "offline.key", "enrollment.json"} {
		fi, err := os.Stat(filepath.Join(a.stateDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	id := a.terminalID(t)
	start := time.Now()
	a.start(t)
	hostname, _ := os.Hostname()
	eventually(t, 5*time.Second, func() error {
		for _, term := range c.terminals(t) {
			if term.GetId() == id && term.GetLastSeenAt() != nil && term.GetPostureReceivedAt() != nil {
				if term.GetHost().GetHostname() != hostname {
					return fmt.Errorf("hostname %q, want %q", term.GetHost().GetHostname(), hostname)
				}
				return nil
			}
		}
		return fmt.Errorf("terminal %s has not reported", id)
	})
	t.Logf("posture visible %s after agent start", time.Since(start).Round(time.Millisecond))

	term := c.terminal(t, id)
	p := term.GetPosture()
	if p.GetCpuCount() == 0 || p.GetMemoryTotalBytes() == 0 || p.GetBootTime() == nil || p.GetAgentVersion() == "" {
		t.Errorf("posture lacks CPU, memory, boot time or agent version: %v", p)
	}
	var lo bool
	for _, ifc := range p.GetInterfaces() {
		for _, addr := range ifc.GetAddrs() {
			lo = lo || addr == "127.0.0.1/8"
		}
	}
	if !lo {
		t.Errorf("posture interfaces lack 127.0.0.1/8: %v", p.GetInterfaces())
	}
	if p.GetUsbInventoryError() != "" {
		t.Errorf("usb inventory error: %s", p.GetUsbInventoryError())
	}
	if term.GetState() != mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE || term.GetCertificateSerial() == "" {
		t.Errorf("terminal = %v", term)
	}

	// The agent's start event arrives through the spool.
	eventually(t, 5*time.Second, func() error {
		var evs mnguardv1.ListEventsResponse
		c.ctlJSON(t, &evs, "events", "list", "--terminal", id)
		for _, e := range evs.GetEvents() {
			if e.GetEvent().GetType() == "agent.start" && e.GetEvent().GetSeq() >= 1 {
				return nil
			}
		}
		return fmt.Errorf("no agent.start event in %v", &evs)
	})

	// status says it in plain words.
	eventually(t, 5*time.Second, func() error {
		out, _, code := run(t, nil, "mnguard-agent", a.args("status")...)
		if code != 0 || !strings.Contains(out, "connected since") || !strings.Contains(out, "enrolled as terminal "+id) {
			return fmt.Errorf("status exit %d:\n%s", code, out)
		}
		return nil
	})

	// Table and CSV output name the terminal too.
	out, _, code = c.ctl(t, "terminals", "list")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, hostname) {
		t.Errorf("terminals list (table) exit %d:\n%s", code, out)
	}
	out, _, code = c.ctl(t, "terminals", "list", "-o", "csv")
	if code != 0 || !strings.Contains(out, id) {
		t.Errorf("terminals list -o csv exit %d:\n%s", code, out)
	}

	// The CA pin, from the data directory and from the server, is the one
	// init printed.
	for _, args := range [][]string{{"ca", "pin", "--data-dir", c.dir}, {"ca", "pin"}} {
		out, errOut, code := c.ctl(t, args...)
		if code != 0 || strings.TrimSpace(out) != c.pin {
			t.Errorf("mnguardctl %s: exit %d, %q %q; want %s", strings.Join(args, " "), code, out, errOut, c.pin)
		}
	}

	// The collector counts what it ingested, for a scraper with a metrics
	// certificate from its CA.
	resp, err := c.metricsClient(t).Get("https://" + c.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics with a metrics certificate: %s", resp.Status)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mnguard_reports_total{result="ok"}`, `mnguard_enrollments_total{result="ok"} 1`, "mnguard_agent_streams 1"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A clean stop: the agent says goodbye and exits 0.
	a.proc.stop(t)
	if a.proc.err != nil {
		t.Errorf("agent exit: %v", a.proc.err)
	}
	out, _, code = run(t, nil, "mnguard-agent", a.args("status")...)
	if code == 0 || !strings.Contains(out, "stopped") {
		t.Errorf("status after stop: exit %d\n%s", code, out)
	}
}

// TestEnrollRefusals: every refusal is a clear one-line error, and stores
// nothing.
func TestEnrollRefusals(t *testing.T) {
	c := newCollector(t)
	once := c.token(t, "1h", 1)
	a0 := newAgent(t, c, "60s")
	if _, errOut, code := a0.enroll(t, c, once, c.pin); code != 0 {
		t.Fatalf("first enroll: %s", errOut)
	}
	short := c.token(t, "1s", 5)
	time.Sleep(1500 * time.Millisecond)
	good := c.token(t, "1h", 5)
	otherPin := "sha256:" + strings.Repeat("ab", 32)

	tests := []struct {
		name, token, pin, want string
	}{
		{"unknown token", "mne_" + strings.Repeat("a", 32), c.pin, "enrollment token not recognised"},
		{"not a token", "hello", c.pin, "enrollment token not recognised"},
		{"expired token", short, c.pin, "enrollment token expired"},
		{"exhausted token", once, c.pin, "no uses left"},
		{"wrong CA pin", good, otherPin, "expected pin " + otherPin},
		{"malformed CA pin", good, "sha256:xyz", "--ca-pin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAgent(t, c, "60s")
			_, errOut, code := a.enroll(t, c, tt.token, tt.pin)
			if code == 0 {
				t.Fatal("enroll succeeded")
			}
			if !strings.Contains(errOut, tt.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("stderr = %q, want one line containing %q", errOut, tt.want)
			}
			if _, err := os.Stat(filepath.Join(a.stateDir, "enrollment.json")); err == nil {
				t.Error("a refused enrollment left an enrollment.json")
			}
		})
	}
	if n := len(c.terminals(t)); n != 1 {
		t.Errorf("%d terminals stored, want 1 (only the first enrollment)", n)
	}
	var toks mnguardv1.ListEnrollmentTokensResponse
	c.ctlJSON(t, &toks, "tokens", "list")
	for _, tk := range toks.GetTokens() {
		if tk.GetUses() == 5 && tk.GetUsesLeft() != 5 {
			t.Errorf("token %s lost uses to refused enrollments: %d left", tk.GetId(), tk.GetUsesLeft())
		}
	}
	// An enrolled state directory is not overwritten by accident.
	_, errOut, code := a0.enroll(t, c, good, c.pin)
	if code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("second enroll into the same state dir: exit %d, %q", code, errOut)
	}
}
