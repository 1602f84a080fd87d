package web

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/compliance"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/report"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// env is a console over a real SQLite store, admin service and operator
// service, served over TLS on loopback.
type env struct {
	t       testing.TB
	st      *store.DB
	clock   *fakeclock.Clock
	ops     *operators.Service
	console *Server
	eval    *compliance.Evaluator
	srv     *httptest.Server
	// netVersion is the collector's network policy version the checks
	// and pages compare with ("" for none).
	netVersion atomic.Value
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvIn(t, t.TempDir(), time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
}

// newEnvIn is newEnv over the data directory dir (its mnguard.db and
// totp.key are used when present), with the clock at now.
func newEnvIn(t testing.TB, dir string, now time.Time) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, clock: fakeclock.New(now)}
	authority, _, err := ca.LoadOrCreate(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e.st, err = store.OpenSQLite(ctx, filepath.Join(dir, "mnguard.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	keyPath := filepath.Join(dir, "totp.key")
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if err := logins.CreateKey(keyPath); err != nil {
			t.Fatal(err)
		}
	}
	key, err := logins.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lp := logins.DefaultPolicy()
	lp.Delay, lp.Now, lp.Logger = 0, e.clock.Now, log
	authn, err := logins.New(e.st, key, lp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetKeySealer(ctx, authn.KeySealer()); err != nil {
		t.Fatal(err)
	}
	op := operators.DefaultPolicy()
	op.Delay, op.Now, op.Logger = 50*time.Millisecond, e.clock.Now, log
	if e.ops, err = operators.New(e.st, key, op); err != nil {
		t.Fatal(err)
	}
	e.netVersion.Store("")
	pol := compliance.Policy{ReportInterval: time.Minute, Version: "v1.0.0",
		NetworkPolicyVersion: func() string { return e.netVersion.Load().(string) }}
	e.eval = compliance.New(compliance.Config{Store: e.st, Policy: pol, Logger: log, Now: e.clock.Now})
	_, signer, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svc := api.New(api.Config{
		Store: e.st, CA: authority, ExemptionSigner: signer, Reports: report.New(e.st, time.UTC, "v1.0.0"), Logins: authn, Operators: e.ops, Logger: log, Now: e.clock.Now, Version: "v1.0.0",
		Changed: func(id string) { e.console.Changed(id) },
	})
	if e.console, err = New(Config{
		Store: e.st, Admin: svc.Admin, Operators: e.ops, Compliance: pol, Reports: report.New(e.st, time.UTC, "v1.0.0"), Version: "v1.0.0", Logger: log, Now: e.clock.Now,
	}); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewTLSServer(e.console.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// operator is an operator of the test console with its sign-in.
type operator struct {
	name, password string
	secret         []byte
}

func (e *env) addOperator(name, role string) operator {
	e.t.Helper()
	pw := "correct horse battery " + name
	_, t, err := e.ops.Add(context.Background(), name, role, pw, "test", store.AuditEntry{Time: e.clock.Now(), Actor: "test"})
	if err != nil {
		e.t.Fatal(err)
	}
	secret, err := totp.DecodeSecret(t.Secret)
	if err != nil {
		e.t.Fatal(err)
	}
	return operator{name: name, password: pw, secret: secret}
}

// code is the operator's TOTP code now (by the test clock), offset by
// steps.
func (e *env) code(o operator, steps int) string {
	e.t.Helper()
	c, err := totp.Generate(o.secret, e.clock.Now().Add(time.Duration(steps)*30*time.Second), totp.DefaultParams())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// client is a browser: a cookie jar, the console's CA, no redirects
// followed.
type client struct {
	e    *env
	hc   *http.Client
	csrf string
}

func (e *env) newClient() *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	// A client of its own: httptest's Client() is one shared value.
	hc := &http.Client{
		Transport: e.srv.Client().Transport, Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &client{e: e, hc: hc}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// do sends a request and returns the response with its body read.
func (c *client) do(req *http.Request) (*http.Response, string) {
	c.e.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if m := csrfRE.FindStringSubmatch(string(b)); m != nil {
		c.csrf = m[1]
	}
	return resp, string(b)
}

func (c *client) get(path string) (*http.Response, string) {
	c.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.e.srv.URL+path, nil)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return c.do(req)
}

// post sends a form, with the session's CSRF token unless the form has
// its own "csrf" (or withCSRF is false).
func (c *client) post(path string, form url.Values, withCSRF bool) (*http.Response, string) {
	c.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if withCSRF && form.Get("csrf") == "" {
		form.Set("csrf", c.csrf)
	}
	req, err := http.NewRequest(http.MethodPost, c.e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.e.srv.URL)
	return c.do(req)
}

// signIn signs o in with a code steps time steps away from now.
func (c *client) signIn(o operator, steps int) *http.Response {
	c.e.t.Helper()
	c.get("/signin")
	resp, _ := c.post("/signin", url.Values{"name": {o.name}, "password": {o.password}, "code": {c.e.code(o, steps)}}, true)
	return resp
}

// mustSignIn signs o in and loads the overview (for its CSRF token).
func (e *env) mustSignIn(o operator) *client {
	e.t.Helper()
	c := e.newClient()
	if resp := c.signIn(o, 0); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		e.t.Fatalf("sign-in of %s: %s", o.name, resp.Status)
	}
	// The next sign-in of anyone needs a fresh time step.
	e.clock.Add(30 * time.Second)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusOK {
		e.t.Fatalf("overview after sign-in: %s", resp.Status)
	}
	return c
}

// terminal enrolls a terminal straight into the store and stores a
// posture for it: hostname, a removable device with serial, media and MFA
// enforced unless monitor, and a network section holding the collector's
// network policy (none by default), with no finding.
func (e *env) terminal(hostname, serial string, monitor bool) string {
	e.t.Helper()
	return e.terminalWith(hostname, serial, monitor, nil)
}

// terminalWith is terminal with the posture as edit changes it.
func (e *env) terminalWith(hostname, serial string, monitor bool, edit func(*mnguardv1.Posture)) string {
	e.t.Helper()
	ctx := context.Background()
	id := uuid.NewString()
	now := e.clock.Now()
	sum := sha256.Sum256([]byte(id))
	if err := e.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{ID: id, Hash: sum[:], CreatedAt: now, ExpiresAt: now.Add(time.Hour), Uses: 1, UsesLeft: 1}, store.NoAudit); err != nil {
		e.t.Fatal(err)
	}
	host := &mnguardv1.HostFacts{Hostname: hostname, Os: "linux", Platform: "debian", PlatformVersion: "12", AgentVersion: "v1.0.0"}
	hb, _ := proto.Marshal(host)
	serialHex := strings.ReplaceAll(id[:8], "-", "")
	if err := e.st.Enroll(ctx, sum[:], now, store.Terminal{ID: id, Host: hb, Hostname: hostname, State: store.StateActive, OfflineKey: make([]byte, 32)},
		store.Certificate{Serial: serialHex, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
	mode := "enforce"
	if monitor {
		mode = "monitor"
	}
	p := &mnguardv1.Posture{
		CollectedAt: timestamppb.New(now), Host: host, AgentVersion: "v1.0.0",
		Interfaces: []*mnguardv1.NetworkInterface{{Name: "eth0", Addrs: []string{"192.0.2.10/24"}, Flags: []string{"up"}}},
		Media: &mnguardv1.MediaPosture{Mode: mode, Healthy: !monitor, Devices: []*mnguardv1.RemovableDevice{{
			Name: "sdb", Bus: "usb", VendorId: "0781", ProductId: "5581", Serial: serial, Model: "Cruzer", SizeBytes: 16 << 30, State: "read-only",
		}}},
		Mfa: &mnguardv1.MfaPosture{Enforced: true, Socket: "/run/mnguard/pam.sock", SocketServing: true},
		Network: &mnguardv1.NetworkPosture{
			PolicyVersion: e.netVersion.Load().(string),
			Adapters:      []*mnguardv1.NetworkAdapter{{Name: "eth0", Kind: "ethernet", Reason: "pci device", Addrs: []string{"192.0.2.10/24"}, Up: true, Driver: "e1000e"}},
			Routes:        []*mnguardv1.NetworkRoute{{Destination: "192.0.2.0/24", Interface: "eth0", Table: "main"}},
			DnsServers:    []*mnguardv1.DnsServer{{Address: "192.0.2.53", Source: "/etc/resolv.conf"}},
			LastScan:      timestamppb.New(now),
			SocketsTotal:  12,
		},
	}
	if edit != nil {
		edit(p)
	}
	pb, _ := proto.Marshal(p)
	if _, err := e.st.SaveReport(ctx, store.Report{TerminalID: id, ReceivedAt: now, Posture: pb, CollectedAt: now}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.eval.EvaluateAll(ctx); err != nil {
		e.t.Fatal(err)
	}
	return id
}
