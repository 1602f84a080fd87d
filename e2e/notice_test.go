package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Notices pam_mnguard shows (PAM_TEXT_INFO) at the first successful login
// after an operator issued codes for the user.
var (
	offlineNoticeRE  = regexp.MustCompile(`An offline login code for terminal \S+ was issued for you on \d{4}-\d\d-\d\d \d\d:\d\d \S+ by helpdesk operator desk\. If you did not ask for it, call your administrator\.`)
	recoveryNoticeRE = regexp.MustCompile(`New recovery codes were issued for you on \d{4}-\d\d-\d\d \d\d:\d\d \S+ by administrator \S+\. If you did not ask for them, call your administrator\.`)
)

// TestCodesIssuedNotice is issue 11 point 4 end to end with real PAM: the
// helpdesk gets no offline login code for a user who never confirmed TOTP
// and cannot mint recovery codes; codes an operator does issue are shown to
// the user, with who and when, at the next successful login through
// pamtester and the built pam_mnguard.so, and only at that one.
func TestCodesIssuedNotice(t *testing.T) {
	requirePamtester(t)
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool missing (make deps installs it)")
	}
	c := newCollector(t)
	a, id := enrolledAgent(t, c, "60s")
	a.start(t)
	c.waitReported(t, id, 10*time.Second)
	eventually(t, 10*time.Second, func() error { _, err := os.Stat(a.pamSocket); return err })
	service := pamService(t, a.pamSocket)

	// A helpdesk operator with an API token of its own.
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("a long enough passphrase 42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.ctl(t, "operators", "add", "desk", "--role", "helpdesk", "--password-file", pw); code != 0 {
		t.Fatalf("operators add: exit %d: %s", code, errOut)
	}
	var tok mnguardv1.CreateOperatorTokenResponse
	c.ctlJSON(t, &tok, "operators", "token", "desk")
	deskToken := filepath.Join(dir, "desk.token")
	if err := os.WriteFile(deskToken, []byte(tok.GetToken()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	desk := func(args ...string) (string, string, int) {
		t.Helper()
		return run(t, c.ctlEnv(), "mnguardctl", append([]string{"--token-file", deskToken}, args...)...)
	}

	var enr mnguardv1.EnrollUserResponse
	c.ctlJSON(t, &enr, "users", "enroll", "carol")
	secret := enr.GetSecret()

	// Pending: no offline login code, a clear refusal.
	_, errOut, code := desk("users", "offline-code", "--terminal", id, "--user", "carol", "--challenge", "1234-5678")
	if code == 0 || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("offline code for a pending user: exit %d: %s", code, errOut)
	}
	// Recovery codes are the administrator's.
	if _, errOut, code := desk("users", "recovery-codes", "carol"); code == 0 || !strings.Contains(strings.ToLower(errOut), "permission") {
		t.Fatalf("recovery codes by the helpdesk: exit %d: %s", code, errOut)
	}

	// The confirming login shows no notice: nobody issued anything.
	out, _ := login(t, service, "carol", oathtool(t, secret, 0), pamOK)
	if strings.Contains(out, "issued for you") {
		t.Fatalf("first login shows a notice:\n%s", out)
	}

	// Confirmed: the helpdesk reads out an offline code, an administrator
	// issues new recovery codes.
	stdout, errOut, code := desk("users", "offline-code", "--terminal", id, "--user", "carol", "--challenge", "1234-5678", "-o", "json")
	if code != 0 || !strings.Contains(stdout, "code") {
		t.Fatalf("offline code for a confirmed user: exit %d: %s", code, errOut)
	}
	var rc mnguardv1.NewRecoveryCodesResponse
	c.ctlJSON(t, &rc, "users", "recovery-codes", "carol")
	if len(rc.GetRecoveryCodes()) != 10 {
		t.Fatalf("recovery codes: %v", &rc)
	}

	// The next successful login tells carol, once.
	out, _ = login(t, service, "carol", oathtool(t, secret, 30*time.Second), pamOK)
	t.Logf("login after codes were issued:\n%s", out)
	if !offlineNoticeRE.MatchString(out) || !recoveryNoticeRE.MatchString(out) {
		t.Fatalf("login after codes were issued: want both notices:\n%s", out)
	}
	out, _ = login(t, service, "carol", oathtool(t, secret, 60*time.Second), pamOK)
	if strings.Contains(out, "issued for you") {
		t.Fatalf("the notice is shown a second time:\n%s", out)
	}
}
