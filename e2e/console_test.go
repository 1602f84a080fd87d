package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/i18n"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// chromiumPath is Debian's Chromium, which make deps installs.
const chromiumPath = "/usr/bin/chromium"

// screenshotDir is where the browser tests leave their screenshots:
// MNGUARD_SCREENSHOT_DIR, or .test-output/screenshots in the work tree.
func screenshotDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("MNGUARD_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join("..", ".test-output", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// consoleSPKI is the base64 SHA-256 of the console certificate's public
// key: Chromium trusts exactly that key (--ignore-certificate-errors-spki-list),
// as a browser with the collector's CA installed would.
func consoleSPKI(t testing.TB, c *collector) string {
	t.Helper()
	conn, err := tls.Dial("tcp", c.httpAddr, &tls.Config{RootCAs: c.caPool(t), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var leaf *x509.Certificate = conn.ConnectionState().PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browserPool is one headless Chromium for the console; each tab it opens
// is a browser context of its own (its own cookies).
type browserPool struct {
	root context.Context
}

func newBrowserPool(t *testing.T, c *collector) *browserPool {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Chromium is missing (%v): make deps installs Debian's chromium", err)
		}
		t.Skipf("no Chromium at %s: make deps installs it", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("ignore-certificate-errors-spki-list", consoleSPKI(t, c)),
		chromedp.Flag("lang", "ja-JP"),
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	// The browser lives as long as the context of its first run: no
	// timeout there.
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(cancelRoot)
	if err := chromedp.Do(root); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return &browserPool{root: root}
}

// tab opens a tab in a browser context of its own.
func (b *browserPool) tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

// stepTimeout bounds each step: a page that never comes fails the test.
const stepTimeout = time.Minute

func cdp(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// value runs one action that returns a value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	return value(t, ctx, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

type css = chromedp.CSS

// signIn fills the sign-in form; it returns once the overview is shown.
func signIn(t *testing.T, ctx context.Context, base, name, password, secret string) {
	t.Helper()
	cdp(t, ctx, "sign in as "+name,
		// Japanese, as the municipality's browsers ask for it.
		chromedp.Navigate(base+"/signin?lang=ja"),
		chromedp.WaitVisible(css(`input[name=name]`)),
		chromedp.SendKeys(css(`input[name=name]`), name),
		chromedp.SendKeys(css(`input[name=password]`), password),
		chromedp.SendKeys(css(`input[name=code]`), oathtool(t, secret, 0)),
		chromedp.Click(css(`form[action="/signin"] button[type=submit]`)),
		chromedp.WaitVisible(css(`section.cards`)),
	)
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join(screenshotDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	t.Logf("screenshot: %s", abs)
}

// count reads the overview's count for a state.
func count(t *testing.T, ctx context.Context, state string) int {
	t.Helper()
	s := value(t, ctx, "read the "+state+" count", chromedp.Text(css(`a[data-count-state="`+state+`"] .count`)))
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("%s count %q: %v", state, s, err)
	}
	return n
}

// fetchStatus posts a form from the page with fetch and returns the HTTP
// status: the browser sends what a page's script could, and the collector
// decides.
func fetchStatus(t *testing.T, ctx context.Context, path string, form map[string]string) int {
	t.Helper()
	b, _ := json.Marshal(form)
	return value(t, ctx, "POST "+path, chromedp.Evaluate[int](fmt.Sprintf(
		`fetch(%q, {method: "POST", body: new URLSearchParams(%s), redirect: "manual"}).then(r => r.status)`, path, b),
		chromedp.EvalAwaitPromise))
}

// statusOf is the HTTP status the page shows: error pages carry it.
const statusOf = `(document.querySelector("section.error-page[data-status]") || {dataset: {status: "200"}}).dataset.status`

// hostileAgent enrolls a terminal through the agent API and reports host
// facts and a device carrying script, as a compromised or odd agent might.
func hostileAgent(t *testing.T, c *collector) string {
	t.Helper()
	id := enrollInProcess(t, c, c.token(t, "1h", 1), `<img src=x onerror="window.__xss=1">`)
	agentCl := dialAs(t, c, id.TLSCertificate())
	p := &mnguardv1.Posture{
		CollectedAt: timestamppb.Now(),
		Host:        &mnguardv1.HostFacts{Hostname: `<script>window.__xss=2</script>`, Os: "linux", Platform: `"><svg onload="window.__xss=3">`},
		Media: &mnguardv1.MediaPosture{Mode: "enforce", Healthy: true, Devices: []*mnguardv1.RemovableDevice{{
			Name: "sdz", Bus: "usb", VendorId: "0781", ProductId: "5581", Serial: `<script>window.__xss=4</script>`, Model: `<b onmouseover=alert(5)>`, State: "read-only",
		}}},
	}
	if _, err := agentCl.Report(context.Background(), &mnguardv1.ReportRequest{Posture: p}); err != nil {
		t.Fatalf("hostile report: %v", err)
	}
	return id.TerminalID
}

// TestConsole drives the web console in a real headless Chromium against a
// real collector and real agents, one of them enforcing on loop devices:
// sign-in with password and an oathtool code, the overview's counts, an
// exemption issued from the form that the page shows applied without a
// reload while a real write succeeds, its revocation, the auditor's and
// the helpdesk's limits, CSRF, hostile strings, idle expiry and sign-out.
func TestConsole(t *testing.T) {
	testenv.RequireRoot(t, "loop devices and mounts")
	testenv.LockLoops(t)
	c := newCollector(t, "--report-interval", "2s", "--web-idle-timeout", "15s")
	base := "https://" + c.httpAddr
	readFile := func(name string) string {
		b, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	adminPW, adminTOTP := readFile("admin.password"), readFile("admin.totp")

	// The enforcing agent: loops are its sticks; its PAM stack requires
	// pam_mnguard, so it is compliant.
	good, goodID := mediaAgent(t, c)
	pamDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(pamDir, "login"), []byte("auth required pam_unix.so\nauth required pam_mnguard.so socket="+good.pamSocket+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(good.config)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), "mfa:\n", "mfa:\n  pam_dir: "+pamDir+"\n  services: [login]\n", 1))
	if err := os.WriteFile(good.config, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	good.start(t)
	// One in monitor mode (non-compliant), one that will stop (stale).
	monitor, monitorID := enrolledAgent(t, c, "60s")
	appendConfig(t, monitor, "media:\n  mode: monitor\n")
	monitor.start(t)
	quiet, quietID := enrolledAgent(t, c, "60s")
	quiet.start(t)
	hostileID := hostileAgent(t, c)
	for _, id := range []string{goodID, monitorID, quietID} {
		c.waitReported(t, id, 15*time.Second)
	}
	quiet.proc.stop(t)
	stoppedAt := time.Now()

	stick := newLoopDisk(t, 32, "ext4")
	mnt := stick.mount(t, stick.parts[0])
	eventually(t, 10*time.Second, func() error { return mountedRO(mnt) })
	eventually(t, 10*time.Second, func() error {
		if mediaDevice(c.terminal(t, goodID), stick.name) == nil {
			return fmt.Errorf("the stick is not in the posture yet")
		}
		return nil
	})

	pool := newBrowserPool(t, c)
	admin := pool.tab(t)
	signIn(t, admin, base, "admin", adminPW, adminTOTP)

	// The overview: 1 compliant, 1 non-compliant (monitor mode), 2 stale
	// (the stopped agent, and the hostile one that reported once) —
	// without anyone asking about them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cdp(t, admin, "reload the overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css(`section.cards`)))
		comp, non, stale := count(t, admin, "compliant"), count(t, admin, "non-compliant"), count(t, admin, "stale")
		if comp == 1 && non == 1 && stale == 2 {
			t.Logf("overview: 1 compliant, 1 non-compliant, 2 stale, %s after the agent stopped", time.Since(stoppedAt).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("overview: compliant %d, non-compliant %d, stale %d; want 1, 1, 2", comp, non, stale)
		}
		time.Sleep(time.Second)
	}
	screenshot(t, admin, "console-overview.png")
	cdp(t, admin, "filter stale terminals", chromedp.Navigate(base+"/terminals?state=stale"), chromedp.WaitVisible(css(`table.terminals`)))
	rows := eval[int](t, admin, `document.querySelectorAll("tr[data-terminal]").length`)
	staleRow := eval[bool](t, admin, fmt.Sprintf(`!!document.querySelector('tr[data-terminal="%s"]')`, quietID))
	if rows != 2 || !staleRow {
		t.Errorf("state=stale lists %d rows, the stopped agent's among them: %v", rows, staleRow)
	}
	cdp(t, admin, "filter non-compliant terminals", chromedp.Navigate(base+"/terminals?state=non-compliant"), chromedp.WaitVisible(css(`table.terminals`)))
	if !eval[bool](t, admin, fmt.Sprintf(`!!document.querySelector('tr[data-terminal="%s"]')`, monitorID)) {
		t.Error("the monitor-mode terminal is not listed as non-compliant")
	}

	// The terminal page; issue an exemption for the stick from its form.
	devSel := fmt.Sprintf(`tr[data-device="%s"] a.button`, loopID(stick))
	cdp(t, admin, "open the terminal page", chromedp.Navigate(base+"/terminals/"+goodID), chromedp.WaitVisible(css(devSel)))
	screenshot(t, admin, "console-terminal.png")
	cdp(t, admin, "open the exemption form from the stick's row", chromedp.Click(css(devSel)), chromedp.WaitVisible(css(`#issue-exemption`)))
	if !eval[bool](t, admin, fmt.Sprintf(`document.querySelector('label[data-device="%s"] input').checked`, loopID(stick))) {
		t.Fatal("the form does not offer the stick picked")
	}
	cdp(t, admin, "fill in and submit",
		chromedp.SetValue(css(`select[name=duration]`), "15m0s"),
		chromedp.SendKeys(css(`textarea[name=reason]`), "議会議事録のコピー <script>window.__xss=6</script>"),
		chromedp.SendKeys(css(`input[name=ticket]`), "INC-2026-0042"),
		chromedp.Click(css(`#issue-exemption button[type=submit]`)),
		chromedp.WaitVisible(css(`#exemption-live [data-phase]`)),
	)
	url := value(t, admin, "location", chromedp.Location())
	eval[chromedp.Void](t, admin, `window.__noReload = 1`)
	cdp(t, admin, "wait for applied", chromedp.WaitVisible(css(`#exemption-live [data-phase="applied"]`)))
	if got, want := value(t, admin, "phase text", chromedp.Text(css(`#exemption-live .phase .badge`))), i18n.T("ja", "phase.applied"); got != want {
		t.Errorf("phase shown %q, want %q", got, want)
	}
	if err := writeWorks(mnt); err != nil {
		t.Fatalf("the page says applied but the stick is not writable: %v", err)
	}
	screenshot(t, admin, "console-exemption-applied.png")
	// The write is the agent's next event (media.exemption_used): the
	// page shows it by itself, within a second of the event.
	cdp(t, admin, "wait for used", chromedp.WaitVisible(css(`#exemption-live [data-phase="used"]`)))
	if eval[int](t, admin, `window.__noReload || 0`) != 1 {
		t.Fatal("the page reloaded to show the new phase; it should update in place")
	}
	updated := time.UnixMilli(eval[int64](t, admin, `Number(document.querySelector("#exemption-live").dataset.updated)`))
	var used mnguardv1.ListEventsResponse
	c.ctlJSON(t, &used, "events", "list", "--terminal", goodID, "--type", "media.exemption_used", "--limit", "1")
	if len(used.GetEvents()) != 1 {
		t.Fatalf("no media.exemption_used event: %v", &used)
	}
	lag := updated.Sub(used.GetEvents()[0].GetEvent().GetTime().AsTime())
	t.Logf("the page showed the agent's media.exemption_used event %s after the agent recorded it", lag.Round(time.Millisecond))
	if lag > time.Second {
		t.Errorf("the page updated %s after the agent's event, want within 1s", lag)
	}
	exemptionPath := strings.TrimPrefix(strings.Split(url, "?")[0], base)

	// Revoke it from the page: read-only again, and the page says so.
	cdp(t, admin, "revoke",
		chromedp.SendKeys(css(`#revoke-exemption input[name=reason]`), "通話終了"),
		chromedp.Click(css(`#revoke-exemption button[type=submit]`)),
		chromedp.WaitVisible(css(`p[data-done="exemption_revoked"]`)),
		chromedp.WaitVisible(css(`#exemption-live [data-phase="ended"]`)),
	)
	eventually(t, 5*time.Second, func() error { return writeFails(filepath.Join(mnt, "after-revoke")) })

	// Script from agents and forms is shown, never run.
	for _, p := range []string{"/", "/terminals", "/terminals/" + hostileID, exemptionPath, "/exemptions", "/events", "/audit"} {
		cdp(t, admin, "visit "+p, chromedp.Navigate(base+p), chromedp.WaitVisible(css(`main`)), chromedp.Sleep(200*time.Millisecond))
		if xss := eval[string](t, admin, `typeof window.__xss`); xss != "undefined" {
			t.Errorf("%s ran injected script (window.__xss is %s)", p, xss)
		}
	}
	cdp(t, admin, "the hostile terminal", chromedp.Navigate(base+"/terminals/"+hostileID), chromedp.WaitVisible(css(`h1`)))
	if !eval[bool](t, admin, `document.querySelector("h1").textContent.includes("<script>window.__xss=2</script>")`) {
		t.Error("the hostile host name is not shown as text")
	}

	// A POST without the CSRF token is refused.
	if st := fetchStatus(t, admin, "/users", map[string]string{"name": "csrf-test"}); st != 403 {
		t.Errorf("POST /users without a CSRF token: %d, want 403", st)
	}

	// Operators for the other roles, made with mnguardctl.
	addOperator := func(name, role string) (string, string) {
		pw := "a long password for " + name
		f := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := c.ctl(t, "operators", "add", name, "--role", role, "--password-file", f, "-o", "json")
		if code != 0 {
			t.Fatalf("operators add %s: %s", name, errOut)
		}
		var res struct {
			Role, Secret string
			OtpauthURL   string `json:"otpauth_url"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.OtpauthURL == "" || res.Role != role {
			t.Fatalf("operators add -o json printed %q: %v", out, err)
		}
		return pw, res.Secret
	}
	auditPW, auditTOTP := addOperator("kansa", "auditor")
	deskPW, deskTOTP := addOperator("helpdesk1", "helpdesk")

	// The auditor sees the pages without their forms, and the collector
	// refuses the auditor's POSTs.
	auditor := pool.tab(t)
	signIn(t, auditor, base, "kansa", auditPW, auditTOTP)
	for _, p := range []string{"/terminals/" + goodID, exemptionPath, "/users", "/tokens", "/audit"} {
		cdp(t, auditor, "auditor visits "+p, chromedp.Navigate(base+p), chromedp.WaitVisible(css(`main`)))
		if st := eval[string](t, auditor, statusOf); st != "200" {
			t.Errorf("auditor on %s: status %s", p, st)
		}
		if forms := eval[int](t, auditor, `document.querySelectorAll('form[method="post"]:not(#signout)').length`); forms != 0 {
			t.Errorf("auditor on %s sees %d forms that change something", p, forms)
		}
	}
	csrf := value(t, auditor, "the auditor's CSRF token", chromedp.Value(css(`#signout input[name=csrf]`)))
	if st := fetchStatus(t, auditor, exemptionPath+"/revoke", map[string]string{"csrf": csrf, "reason": "auditor"}); st != 403 {
		t.Errorf("the auditor's revoke POST: %d, want 403", st)
	}
	if st := fetchStatus(t, auditor, "/users", map[string]string{"csrf": csrf, "name": "by-auditor"}); st != 403 {
		t.Errorf("the auditor's enrollment POST: %d, want 403", st)
	}

	// The helpdesk is not offered the operators page and cannot open it.
	desk := pool.tab(t)
	signIn(t, desk, base, "helpdesk1", deskPW, deskTOTP)
	link := eval[bool](t, desk, `!!document.querySelector('nav a[href="/operators"]')`)
	cdp(t, desk, "helpdesk opens /operators", chromedp.Navigate(base+"/operators"), chromedp.WaitVisible(css(`main`)))
	if st := eval[string](t, desk, statusOf); link || st != "403" {
		t.Errorf("helpdesk: operators link shown %v, /operators status %s; want hidden and 403", link, st)
	}

	// Sign-out ends the helpdesk's session on the server.
	cdp(t, desk, "sign out", chromedp.Click(css(`#signout button`)), chromedp.WaitVisible(css(`section.signin`)),
		chromedp.Navigate(base+"/terminals"), chromedp.WaitVisible(css(`section.signin`)))
	if after := value(t, desk, "location", chromedp.Location()); !strings.Contains(after, "/signin") {
		t.Errorf("after sign-out /terminals went to %s", after)
	}

	// Idle expiry: the admin waits past the 15 s idle timeout.
	time.Sleep(17 * time.Second)
	cdp(t, admin, "after 17 s idle", chromedp.Navigate(base+"/terminals"), chromedp.WaitVisible(css(`section.signin`)))
	after := value(t, admin, "location", chromedp.Location())
	notice := value(t, admin, "notice", chromedp.Text(css(`.flash.info`)))
	if !strings.Contains(after, "expired=1") || notice != i18n.T("ja", "signin.expired") {
		t.Errorf("after idling: %s, notice %q", after, notice)
	}
}
