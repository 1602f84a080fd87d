package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/offlinecode"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// pamtester's words for the PAM results.
const (
	pamOK          = "successfully authenticated"
	pamAuthErr     = "Authentication failure"
	pamUnavailable = "Authentication service cannot retrieve authentication info"
	pamMaxTries    = "Have exhausted maximum number of retries for service"
)

func requirePamtester(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "PAM service files")
	if _, err := exec.LookPath("pamtester"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pamtester missing (make deps installs it)")
		}
		t.Skip("pamtester missing")
	}
}

// pamService writes a PAM service file stacking pam_permit and the built
// pam_mnguard.so on the agent's socket, and returns its name.
func pamService(t *testing.T, sock string) string {
	t.Helper()
	service := fmt.Sprintf("mnguard-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	conf := fmt.Sprintf("auth required pam_permit.so\nauth required %s socket=%s timeout=15\naccount required pam_permit.so\n", bin("pam_mnguard.so"), sock)
	if err := os.WriteFile("/etc/pam.d/"+service, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/etc/pam.d/" + service) })
	return service
}

// oathtool returns the TOTP code of the base32 secret at now+offset,
// computed by oathtool, an implementation independent of ours.
func oathtool(t *testing.T, secret string, offset time.Duration) string {
	t.Helper()
	at := time.Now().Add(offset).UTC().Format("2006-01-02 15:04:05 UTC")
	out, err := exec.Command("oathtool", "--totp", "-b", "-N", at, secret).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// login runs pamtester and checks the outcome: want is one of the pam*
// constants. It returns the output and how long the login took.
func login(t *testing.T, service, user, code, want string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	out, ok := pamtester(t, service, user, code)
	d := time.Since(start)
	if ok != (want == pamOK) || !strings.Contains(out, want) {
		t.Fatalf("login %s: want %q, got authenticated=%v:\n%s", user, want, ok, out)
	}
	if code != "" && len(code) >= 4 && strings.Contains(out, code) {
		t.Fatalf("pamtester output shows the code:\n%s", out)
	}
	return out, d
}

func (c *collector) user(t *testing.T, name string) *mnguardv1.User {
	t.Helper()
	var resp mnguardv1.GetUserResponse
	c.ctlJSON(t, &resp, "users", "show", name)
	return resp.GetUser()
}

// challengeRE finds the challenge in the agent's prompt, and only there:
// pamtester's own lines name the service, whose random suffix can look
// like a challenge too ("mnguard-e2e-8520-6393").
var challengeRE = regexp.MustCompile(`Offline challenge for [^\n]*?: (\d{4}-\d{4})\. Ask the helpdesk`)

// TestTOTPLogin is issue 4's promise end to end with real PAM: pamtester
// with the built pam_mnguard.so, the real agent socket and a real
// collector; codes from oathtool.
func TestTOTPLogin(t *testing.T) {
	requirePamtester(t)
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool missing (make deps installs it)")
	}
	const delay = 500 * time.Millisecond
	c := newCollector(t, "--login-delay", delay.String(), "--login-delay-after", "3", "--login-lock-after", "10")
	a, id := enrolledAgent(t, c, "60s")
	a.start(t)
	c.waitReported(t, id, 10*time.Second)
	eventually(t, 10*time.Second, func() error { _, err := os.Stat(a.pamSocket); return err })
	service := pamService(t, a.pamSocket)

	// Enroll: the JSON carries the otpauth URL, the secret and ten
	// recovery codes; the user is pending.
	var enr mnguardv1.EnrollUserResponse
	c.ctlJSON(t, &enr, "users", "enroll", "alice")
	if !strings.HasPrefix(enr.GetOtpauthUrl(), "otpauth://totp/") || !strings.Contains(enr.GetOtpauthUrl(), "secret="+enr.GetSecret()) {
		t.Fatalf("enroll: otpauth_url %q, secret %q", enr.GetOtpauthUrl(), enr.GetSecret())
	}
	if n := len(enr.GetRecoveryCodes()); n != 10 {
		t.Fatalf("enroll: %d recovery codes, want 10", n)
	}
	if s := c.user(t, "alice").GetState(); s != mnguardv1.UserState_USER_STATE_PENDING {
		t.Fatalf("after enroll: state %v, want pending", s)
	}
	secret := enr.GetSecret()
	var used []string // every code typed, none may appear in any log

	// A code from oathtool passes and confirms the enrollment; the same
	// code again is a replay; a wrong code fails.
	code := oathtool(t, secret, 0)
	used = append(used, code)
	login(t, service, "alice", code, pamOK)
	if u := c.user(t, "alice"); u.GetState() != mnguardv1.UserState_USER_STATE_ACTIVE || u.GetLastLoginAt() == nil {
		t.Fatalf("after the first login: state %v, last login %v; want active", u.GetState(), u.GetLastLoginAt())
	}
	login(t, service, "alice", code, pamAuthErr) // replay: failure 1
	wrong := fmt.Sprintf("%06d", (atoi(code)+500000)%1000000)
	used = append(used, wrong)
	login(t, service, "alice", wrong, pamAuthErr) // failure 2

	// Failures 3 to 10: the 4th to 10th attempts are delayed by the
	// server; the 10th locks; the 11th reports locked even with a code
	// that would be right.
	for n := 3; n <= 10; n++ {
		_, d := login(t, service, "alice", wrong, pamAuthErr)
		switch {
		case n <= 3 && d >= delay:
			t.Errorf("attempt %d took %v: not delayed until 3 failures", n, d)
		case n >= 4 && d < delay:
			t.Errorf("attempt %d took %v: want delayed by at least %v", n, d, delay)
		}
	}
	if u := c.user(t, "alice"); !u.GetLocked() || u.GetFailures() != 10 {
		t.Fatalf("after 10 failures: locked %v, failures %d", u.GetLocked(), u.GetFailures())
	}
	next := oathtool(t, secret, 30*time.Second) // valid: one step ahead
	used = append(used, next)
	out, _ := login(t, service, "alice", next, pamMaxTries)
	if !strings.Contains(strings.ToLower(out), "locked") {
		t.Errorf("locked login does not say so:\n%s", out)
	}
	login(t, service, "alice", wrong, pamMaxTries)

	// The helpdesk unlocks; the same valid code now passes (it was never
	// checked while locked).
	if _, errOut, code := c.ctl(t, "users", "unlock", "alice"); code != 0 {
		t.Fatalf("users unlock: exit %d: %s", code, errOut)
	}
	login(t, service, "alice", next, pamOK)

	// Bad input through the whole stack: refused with clear errors, the
	// agent keeps serving.
	for _, bad := range []string{"", "abcdef", "12345", strings.Repeat("7", 100), "12 34 56"} {
		login(t, service, "alice", bad, pamAuthErr)
	}
	for _, user := range []string{"bob\x07", strings.Repeat("u", 10<<10)} {
		out, ok := pamtester(t, service, user, "123456")
		if ok {
			t.Fatalf("login as %q authenticated:\n%s", user[:min(len(user), 10)], out)
		}
	}

	// A recovery code works once, at the same prompt.
	rc := enr.GetRecoveryCodes()[3]
	used = append(used, rc)
	login(t, service, "alice", rc, pamOK)
	login(t, service, "alice", rc, pamAuthErr)
	if n := c.user(t, "alice").GetRecoveryCodesLeft(); n != 9 {
		t.Errorf("recovery codes left: %d, want 9", n)
	}

	// The server becomes unreachable for the terminal: refused, with a
	// challenge at the prompt.
	grpcAddr, httpAddr := c.grpcAddr, c.httpAddr
	c.stop(t)
	now := oathtool(t, secret, 60*time.Second)
	used = append(used, now)
	var challenge string
	eventually(t, 15*time.Second, func() error {
		out, ok := pamtester(t, service, "alice", now)
		if ok {
			t.Fatalf("authenticated with the server down:\n%s", out)
		}
		if !strings.Contains(out, pamUnavailable) {
			return fmt.Errorf("server down: want %q:\n%s", pamUnavailable, out)
		}
		m := challengeRE.FindStringSubmatch(out)
		if m == nil {
			return fmt.Errorf("server down: no challenge shown:\n%s", out)
		}
		challenge = m[1]
		return nil
	})

	// The helpdesk reaches the server (the terminal still cannot: the
	// collector now listens elsewhere) and reads back an offline code.
	c.grpcAddr, c.httpAddr, c.started = freeAddr(t), freeAddr(t), false
	c.start(t)
	var oc mnguardv1.IssueOfflineLoginCodeResponse
	c.ctlJSON(t, &oc, "users", "offline-code", "--terminal", id, "--user", "alice", "--challenge", challenge)
	if oc.GetCode() == "" || oc.GetValidUntil() == nil {
		t.Fatalf("offline-code: %v", &oc)
	}
	used = append(used, strings.ReplaceAll(oc.GetCode(), "-", ""))
	if out, ok := pamtester(t, service, "alice", oc.GetCode()); !ok {
		// Say which side disagrees: the code computed here from the
		// agent's own offline key against the collector's.
		key, _ := os.ReadFile(filepath.Join(a.stateDir, "offline.key"))
		w := offlinecode.WindowOf(time.Now())
		mine, err := offlinecode.LoginCode(key, id, "alice", challenge, w)
		prev, _ := offlinecode.LoginCode(key, id, "alice", challenge, w-1)
		t.Fatalf("offline code refused: challenge %s, collector's code %s, code from the agent's key %s (previous window %s, err %v), key %d bytes\n%s",
			challenge, oc.GetCode(), offlinecode.Format(mine), offlinecode.Format(prev), err, len(key), out)
	}
	out2, ok := pamtester(t, service, "alice", oc.GetCode())
	if ok || !strings.Contains(out2, pamAuthErr) && !strings.Contains(out2, pamUnavailable) {
		t.Fatalf("offline code used twice: authenticated=%v\n%s", ok, out2)
	}

	// The server is back where the terminal expects it: the refusals and
	// the offline login reach it.
	c.stop(t)
	c.grpcAddr, c.httpAddr = grpcAddr, httpAddr
	c.start(t)
	var evs mnguardv1.ListEventsResponse
	eventually(t, 30*time.Second, func() error {
		c.ctlJSON(t, &evs, "events", "list", "--terminal", id, "--limit", "500")
		var offline, refused bool
		for _, e := range evs.GetEvents() {
			attrs := e.GetEvent().GetAttributes()
			if e.GetSource() == "agent" && attrs["path"] == "offline" && attrs["result"] == "accepted" {
				offline = true
			}
			if e.GetSource() == "agent" && attrs["result"] == "unavailable" {
				refused = true
			}
		}
		if !offline || !refused {
			return fmt.Errorf("agent events: offline login %v, refusal while unreachable %v", offline, refused)
		}
		return nil
	})

	// Every attempt the server saw is an event with terminal, user,
	// service and result.
	results := map[string]int{}
	for _, e := range evs.GetEvents() {
		if e.GetSource() != "server" || e.GetEvent().GetType() != "login.verify" {
			continue
		}
		attrs := e.GetEvent().GetAttributes()
		if e.GetTerminalId() != id || attrs["service"] != service || attrs["user"] == "" {
			t.Errorf("login event lacks terminal, user or service: %v", e)
		}
		results[attrs["result"]]++
	}
	if results["accepted"] < 3 || results["rejected"] < 10 || results["locked"] < 2 {
		t.Errorf("server login events by result: %v; want ≥3 accepted, ≥10 rejected, ≥2 locked", results)
	}

	// No code appears in any output or event.
	all := a.proc.out.String() + c.proc.out.String()
	for _, e := range evs.GetEvents() {
		all += e.String()
	}
	for _, code := range used {
		if strings.Contains(all, code) {
			t.Errorf("code %q appears in a log or event", code)
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
