package operators

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/totp"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/store"
)

// t0 is one second into a 30 s TOTP step.
var t0 = time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC)

// logBuffer collects the service's log for inspection.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type env struct {
	t     *testing.T
	st    *store.DB
	key   []byte
	clock *fakeclock.Clock
	logs  *logBuffer
	svc   *Service
	// secrets are what must never show in the audit log or the log:
	// passwords and codes used.
	secrets []string
}

// newEnv opens a real SQLite store, a TOTP key in a temp dir and a Service
// without sign-in delays; mod adjusts the policy. The admin "root"
// exists (password "root password 1", made cheap to verify).
func newEnv(t *testing.T, mod func(*Policy)) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "mnguard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyPath := filepath.Join(dir, "totp.key")
	if err := logins.CreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	key, err := logins.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, key: key, clock: fakeclock.New(t0), logs: &logBuffer{}}
	p := DefaultPolicy()
	p.Delay = 0
	p.Now = e.clock.Now
	// Without the time, whose digits could look like a code.
	p.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}}))
	if mod != nil {
		mod(&p)
	}
	if e.svc, err = New(st, key, p); err != nil {
		t.Fatal(err)
	}
	e.operator("root", store.RoleAdmin, "root password 1")
	t.Cleanup(e.checkNoSecrets)
	return e
}

func (e *env) audit() store.AuditEntry {
	return store.AuditEntry{Time: e.clock.Now(), Actor: "root"}
}

// operator creates an operator whose password hash is cheap to verify
// (straight in the store) and gives it a TOTP secret through the Service;
// it returns the secret.
func (e *env) operator(name, role, password string) []byte {
	e.t.Helper()
	ctx := context.Background()
	o := store.Operator{Name: name, Role: role, PasswordHash: cheapHash(e.t, password), CreatedAt: e.clock.Now(), CreatedBy: "test"}
	if err := e.st.CreateOperator(ctx, o, store.AuditEntry{Actor: "test", Action: "operator.add", Target: name}); err != nil {
		e.t.Fatal(err)
	}
	_, tt, err := e.svc.ResetTOTP(ctx, name, e.audit())
	if err != nil {
		e.t.Fatal(err)
	}
	secret, err := totp.DecodeSecret(tt.Secret)
	if err != nil {
		e.t.Fatal(err)
	}
	e.secrets = append(e.secrets, password, tt.Secret)
	return secret
}

// code returns secret's code at the clock plus d.
func (e *env) code(secret []byte, d time.Duration) string {
	e.t.Helper()
	c, err := totp.Generate(secret, e.clock.Now().Add(d), totp.DefaultParams())
	if err != nil {
		e.t.Fatal(err)
	}
	e.secrets = append(e.secrets, c)
	return c
}

// wrongCode returns a well-formed code that is not secret's near now.
func (e *env) wrongCode(secret []byte) string {
	e.t.Helper()
	near := map[string]bool{}
	for d := -3; d <= 3; d++ {
		near[e.code(secret, time.Duration(d)*30*time.Second)] = true
	}
	for i := 0; ; i++ {
		if c := fmt.Sprintf("%06d", (123457+i*7919)%1000000); !near[c] {
			e.secrets = append(e.secrets, c)
			return c
		}
	}
}

// signIn tries to sign in with session id.
func (e *env) signIn(ctx context.Context, name, password, code, id string) (store.Operator, error) {
	now := e.clock.Now()
	return e.svc.SignIn(ctx, SignInRequest{Name: name, Password: password, Code: code, Remote: "192.0.2.7",
		Session: store.Session{IDHash: sessionHash(id), CSRF: "csrf-" + id, CreatedAt: now, LastSeenAt: now, RemoteAddr: "192.0.2.7:50000"}})
}

func sessionHash(id string) []byte {
	sum := sha256.Sum256([]byte("session " + id))
	return sum[:]
}

func (e *env) get(name string) store.Operator {
	e.t.Helper()
	o, err := e.st.Operator(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// auditLog is the whole audit log, oldest first.
func (e *env) auditLog() []store.AuditEntry {
	e.t.Helper()
	es, err := e.st.FilterAudit(context.Background(), store.AuditFilter{Ascending: true, Limit: 100000})
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

func (e *env) lastAudit() store.AuditEntry {
	e.t.Helper()
	es := e.auditLog()
	return es[len(es)-1]
}

// changes runs fn and checks that it appended want audit entries.
func (e *env) changes(want int, fn func() error) error {
	e.t.Helper()
	before := len(e.auditLog())
	err := fn()
	if got := len(e.auditLog()) - before; got != want {
		e.t.Errorf("%d audit entries appended (err %v), want %d", got, err, want)
	}
	return err
}

// checkNoSecrets fails the test if a password, secret or code used shows
// in the audit log or the log.
func (e *env) checkNoSecrets() {
	var texts []string
	for _, a := range e.auditLog() {
		texts = append(texts, a.Actor, a.Action, a.Target, a.Detail)
	}
	all := strings.Join(texts, "\n") + "\n" + e.logs.String()
	for _, s := range e.secrets {
		if s != "" && strings.Contains(all, s) {
			e.t.Errorf("%q shows in the audit log or the log", s)
		}
	}
	if err := e.st.VerifyAuditChain(context.Background()); err != nil {
		e.t.Error(err)
	}
}

func TestNew(t *testing.T) {
	e := newEnv(t, nil)
	if p := e.svc.Policy(); p.Issuer != "mnguard console" || p.LockAfter != DefaultLockAfter || p.Window != totp.DefaultWindow {
		t.Errorf("Policy() = %+v", p)
	}
	for _, tt := range []struct {
		name string
		key  []byte
		mod  func(*Policy)
	}{
		{"short key", e.key[:16], nil},
		{"no key", nil, nil},
		{"never locks", e.key, func(p *Policy) { p.LockAfter = 0 }},
		{"negative delay", e.key, func(p *Policy) { p.Delay = -time.Second }},
		{"negative delay after", e.key, func(p *Policy) { p.DelayAfter = -1 }},
		{"window too wide", e.key, func(p *Policy) { p.Window = totp.MaxWindow + 1 }},
		{"negative window", e.key, func(p *Policy) { p.Window = -1 }},
	} {
		p := DefaultPolicy()
		if tt.mod != nil {
			tt.mod(&p)
		}
		if _, err := New(e.st, tt.key, p); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

// TestAdd adds an operator the way the console does (production password
// hashing) and signs in with what Add returned.
func TestAdd(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	const pw = "correct horse battery"
	e.secrets = append(e.secrets, pw)

	for _, tt := range []struct {
		name, op, role, pw string
	}{
		{"empty name", "", store.RoleHelpdesk, pw},
		{"name with a colon", "a:b", store.RoleHelpdesk, pw},
		{"name with a space", "a b", store.RoleHelpdesk, pw},
		{"unknown role", "yamada", "root", pw},
		{"short password", "yamada", store.RoleHelpdesk, "short pw"},
		{"password with a newline", "yamada", store.RoleHelpdesk, "correct horse\nbattery"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := e.changes(0, func() error {
				_, _, err := e.svc.Add(ctx, tt.op, tt.role, tt.pw, "root", e.audit())
				return err
			})
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
			if strings.Contains(err.Error(), tt.pw) {
				t.Errorf("error %q repeats the password", err)
			}
		})
	}
	if _, err := e.svc.Get(ctx, "yamada"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("refused operator stored: %v", err)
	}

	e.clock.Add(time.Hour)
	var (
		o  store.Operator
		tt TOTP
	)
	if err := e.changes(1, func() error {
		var err error
		o, tt, err = e.svc.Add(ctx, "yamada", store.RoleHelpdesk, pw, "root", e.audit())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, tt.Secret)
	if o.Name != "yamada" || o.Role != store.RoleHelpdesk || o.CreatedBy != "root" || !o.CreatedAt.Equal(e.clock.Now()) ||
		!o.Enabled() || o.TOTPLastStep != 0 || len(o.TOTPSealed) == 0 {
		t.Errorf("added %+v", o)
	}
	if h, err := parseHash(o.PasswordHash); err != nil || h.memory != argonMemoryKiB || h.time != argonTime || h.threads != argonThreads {
		t.Errorf("stored hash %q: %+v, %v", o.PasswordHash, h, err)
	}
	secret, err := totp.DecodeSecret(tt.Secret)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := logins.NewSealer(e.key)
	if err != nil {
		t.Fatal(err)
	}
	if opened, err := sealer.Open("operator:yamada", o.TOTPSealed); err != nil || !bytes.Equal(opened, secret) {
		t.Errorf("sealed secret opens to %x, %v; want the returned secret", opened, err)
	}
	if _, err := sealer.Open("yamada", o.TOTPSealed); err == nil {
		t.Error("the operator's sealed secret opens as a login user's")
	}
	if !strings.HasPrefix(tt.URL, "otpauth://totp/mnguard%20console:yamada?") || !strings.Contains(tt.URL, "secret="+tt.Secret) ||
		!strings.Contains(tt.URL, "issuer=mnguard%20console") {
		t.Errorf("URL %q", tt.URL)
	}
	if a := e.lastAudit(); a.Action != "operator.add" || a.Target != "yamada" || a.Actor != "root" ||
		a.Detail != "role helpdesk; password and TOTP set" {
		t.Errorf("audit entry %+v", a)
	}

	// The password and the secret as returned sign in.
	if _, err := e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s1"); err != nil {
		t.Errorf("signing in with what Add returned: %v", err)
	}

	if err := e.changes(0, func() error {
		_, _, err := e.svc.Add(ctx, "yamada", store.RoleAdmin, pw, "root", e.audit())
		return err
	}); !errors.Is(err, ErrExists) {
		t.Errorf("adding a taken name: %v, want ErrExists", err)
	}
	if o := e.get("yamada"); o.Role != store.RoleHelpdesk {
		t.Errorf("a refused Add changed the operator: %+v", o)
	}
}

func TestChanges(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	e.operator("yamada", store.RoleHelpdesk, "yamada password")

	type change struct {
		name       string
		do         func() (store.Operator, error)
		wantErr    error
		wantAction string
		wantDetail string
		check      func(store.Operator) bool
	}
	disabledAt := t0.Add(time.Minute)
	steps := []change{
		{"set role", func() (store.Operator, error) { return e.svc.SetRole(ctx, "yamada", store.RoleAuditor, e.audit()) },
			nil, "operator.set_role", "role helpdesk -> auditor", func(o store.Operator) bool { return o.Role == store.RoleAuditor }},
		{"set an unknown role", func() (store.Operator, error) { return e.svc.SetRole(ctx, "yamada", "superuser", e.audit()) },
			ErrInvalid, "", "", nil},
		{"set the role of nobody", func() (store.Operator, error) { return e.svc.SetRole(ctx, "nobody", store.RoleAdmin, e.audit()) },
			ErrUnknown, "", "", nil},
		{"set a malformed name's role", func() (store.Operator, error) { return e.svc.SetRole(ctx, "", store.RoleAdmin, e.audit()) },
			ErrInvalid, "", "", nil},
		{"demote the last admin", func() (store.Operator, error) { return e.svc.SetRole(ctx, "root", store.RoleHelpdesk, e.audit()) },
			ErrLastAdmin, "", "", nil},
		{"set language", func() (store.Operator, error) { return e.svc.SetLanguage(ctx, "yamada", "en", e.audit()) },
			nil, "operator.set_language", "language en", func(o store.Operator) bool { return o.Language == "en" }},
		{"set an unknown language", func() (store.Operator, error) { return e.svc.SetLanguage(ctx, "yamada", "fr", e.audit()) },
			ErrInvalid, "", "", nil},
		{"clear the language", func() (store.Operator, error) { return e.svc.SetLanguage(ctx, "yamada", "", e.audit()) },
			nil, "operator.set_language", "language ", func(o store.Operator) bool { return o.Language == "" }},
		{"disable", func() (store.Operator, error) {
			e.clock.Add(time.Minute)
			return e.svc.SetEnabled(ctx, "yamada", false, e.audit())
		}, nil, "operator.disable", "sessions ended, API tokens refused",
			func(o store.Operator) bool { return !o.Enabled() && o.DisabledAt.Equal(disabledAt) }},
		{"disable again", func() (store.Operator, error) {
			e.clock.Add(time.Minute)
			return e.svc.SetEnabled(ctx, "yamada", false, e.audit())
		}, nil, "operator.disable", "was disabled already", func(o store.Operator) bool { return o.DisabledAt.Equal(disabledAt) }},
		{"enable", func() (store.Operator, error) { return e.svc.SetEnabled(ctx, "yamada", true, e.audit()) },
			nil, "operator.enable", "disabled since " + disabledAt.Format(time.RFC3339), func(o store.Operator) bool { return o.Enabled() }},
		{"enable again", func() (store.Operator, error) { return e.svc.SetEnabled(ctx, "yamada", true, e.audit()) },
			nil, "operator.enable", "was enabled already", func(o store.Operator) bool { return o.Enabled() }},
		{"disable the last admin", func() (store.Operator, error) { return e.svc.SetEnabled(ctx, "root", false, e.audit()) },
			ErrLastAdmin, "", "", nil},
		{"disable nobody", func() (store.Operator, error) { return e.svc.SetEnabled(ctx, "nobody", false, e.audit()) },
			ErrUnknown, "", "", nil},
		{"unlock an unlocked operator", func() (store.Operator, error) { return e.svc.Unlock(ctx, "yamada", e.audit()) },
			nil, "operator.unlock", "was not locked; 0 failures cleared", func(o store.Operator) bool { return o.LockedAt.IsZero() }},
		{"unlock nobody", func() (store.Operator, error) { return e.svc.Unlock(ctx, "nobody", e.audit()) },
			ErrUnknown, "", "", nil},
		{"set a short password", func() (store.Operator, error) { return e.svc.SetPassword(ctx, "yamada", "too short", e.audit()) },
			ErrInvalid, "", "", nil},
		{"reset the TOTP of nobody", func() (store.Operator, error) {
			o, _, err := e.svc.ResetTOTP(ctx, "nobody", e.audit())
			return o, err
		}, ErrUnknown, "", "", nil},
	}
	for _, st := range steps {
		want := 0
		if st.wantErr == nil {
			want = 1
		}
		var o store.Operator
		err := e.changes(want, func() error {
			var err error
			o, err = st.do()
			return err
		})
		if st.wantErr != nil {
			if !errors.Is(err, st.wantErr) {
				t.Errorf("%s: err = %v, want %v", st.name, err, st.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", st.name, err)
			continue
		}
		if a := e.lastAudit(); a.Action != st.wantAction || a.Target != o.Name || a.Actor != "root" || a.Detail != st.wantDetail {
			t.Errorf("%s: audit entry %+v, want action %q detail %q", st.name, a, st.wantAction, st.wantDetail)
		}
		if !st.check(o) {
			t.Errorf("%s: returned %+v", st.name, o)
		}
		if err := sameStored(e.get(o.Name), o); err != nil {
			t.Errorf("%s: stored differs from returned: %v", st.name, err)
		}
	}
	if o := e.get("root"); o.Role != store.RoleAdmin || !o.Enabled() {
		t.Errorf("root after refused changes: %+v", o)
	}
}

// sameStored compares what the store holds with what a change returned.
func sameStored(got, want store.Operator) error {
	if got.Role != want.Role || got.Language != want.Language || !got.DisabledAt.Equal(want.DisabledAt) ||
		!got.LockedAt.Equal(want.LockedAt) || got.Failures != want.Failures || got.PasswordHash != want.PasswordHash ||
		!bytes.Equal(got.TOTPSealed, want.TOTPSealed) || got.TOTPLastStep != want.TOTPLastStep {
		return fmt.Errorf("got %+v\nwant %+v", got, want)
	}
	return nil
}

func TestDisableEndsSessions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	secret := e.operator("yamada", store.RoleHelpdesk, "yamada password")
	if _, err := e.signIn(ctx, "yamada", "yamada password", e.code(secret, 0), "s1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.SessionByHash(ctx, sessionHash("s1")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetEnabled(ctx, "yamada", false, e.audit()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.SessionByHash(ctx, sessionHash("s1")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of a disabled operator: %v", err)
	}
}

func TestResetTOTP(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	const pw = "yamada password"
	old := e.operator("yamada", store.RoleHelpdesk, pw)
	if _, err := e.signIn(ctx, "yamada", pw, e.code(old, 0), "s1"); err != nil {
		t.Fatal(err)
	}
	if o := e.get("yamada"); o.TOTPLastStep == 0 {
		t.Fatalf("step not recorded: %+v", o)
	}
	e.clock.Add(30 * time.Second)
	var (
		o  store.Operator
		tt TOTP
	)
	if err := e.changes(1, func() error {
		var err error
		o, tt, err = e.svc.ResetTOTP(ctx, "yamada", e.audit())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, tt.Secret)
	if o.TOTPLastStep != 0 || o.TOTPOffset != 0 {
		t.Errorf("after reset: step %d offset %d", o.TOTPLastStep, o.TOTPOffset)
	}
	if a := e.lastAudit(); a.Action != "operator.reset_totp" || a.Detail != "new TOTP secret" {
		t.Errorf("audit entry %+v", a)
	}
	secret, err := totp.DecodeSecret(tt.Secret)
	if err != nil || bytes.Equal(secret, old) {
		t.Fatalf("new secret %x (%v), old %x", secret, err, old)
	}
	if _, err := e.signIn(ctx, "yamada", pw, e.code(old, 0), "s2"); !errors.Is(err, ErrSignIn) {
		t.Errorf("the old secret's code: %v, want ErrSignIn", err)
	}
	if _, err := e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s3"); err != nil {
		t.Errorf("the new secret's code: %v", err)
	}
}

func TestSetPassword(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	const oldPW, newPW = "yamada password", "a new password for yamada"
	e.secrets = append(e.secrets, newPW)
	secret := e.operator("yamada", store.RoleHelpdesk, oldPW)
	before := e.get("yamada")
	if err := e.changes(1, func() error {
		_, err := e.svc.SetPassword(ctx, "yamada", newPW, e.audit())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	after := e.get("yamada")
	if after.PasswordHash == before.PasswordHash || !bytes.Equal(after.TOTPSealed, before.TOTPSealed) {
		t.Errorf("SetPassword: hash %q -> %q", before.PasswordHash, after.PasswordHash)
	}
	if a := e.lastAudit(); a.Action != "operator.set_password" || a.Detail != "new password" || a.Target != "yamada" {
		t.Errorf("audit entry %+v", a)
	}
	if _, err := e.signIn(ctx, "yamada", newPW, e.code(secret, 0), "s1"); err != nil {
		t.Errorf("signing in with the new password: %v", err)
	}
	if err := e.changes(0, func() error {
		_, err := e.svc.SetPassword(ctx, "nobody", "abcdefghijklmnop", e.audit())
		return err
	}); !errors.Is(err, ErrUnknown) {
		t.Errorf("SetPassword(nobody): %v, want ErrUnknown", err)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	secret := e.operator("yamada", store.RoleHelpdesk, "yamada password")
	if _, err := e.signIn(ctx, "yamada", "yamada password", e.code(secret, 0), "s1"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateOperatorToken(ctx, store.OperatorToken{ID: "k1", Name: "yamada", Hash: sessionHash("k1")},
		store.AuditEntry{Actor: "root", Action: "operator_token.create"}); err != nil {
		t.Fatal(err)
	}
	if err := e.changes(1, func() error { return e.svc.Delete(ctx, "yamada", e.audit()) }); err != nil {
		t.Fatal(err)
	}
	if a := e.lastAudit(); a.Action != "operator.delete" || a.Target != "yamada" || a.Detail != "with its API tokens and sessions" {
		t.Errorf("audit entry %+v", a)
	}
	if _, err := e.svc.Get(ctx, "yamada"); !errors.Is(err, ErrUnknown) {
		t.Errorf("deleted operator: %v", err)
	}
	if _, _, err := e.st.SessionByHash(ctx, sessionHash("s1")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of a deleted operator: %v", err)
	}
	if _, err := e.st.OperatorTokenByHash(ctx, sessionHash("k1")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token of a deleted operator: %v", err)
	}
	for _, tt := range []struct {
		name    string
		wantErr error
	}{{"yamada", ErrUnknown}, {"root", ErrLastAdmin}, {"", ErrInvalid}} {
		if err := e.changes(0, func() error { return e.svc.Delete(ctx, tt.name, e.audit()) }); !errors.Is(err, tt.wantErr) {
			t.Errorf("Delete(%q) = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestSignIn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	const pw = "yamada password"
	secret := e.operator("yamada", store.RoleHelpdesk, pw)

	code := e.code(secret, 0)
	var o store.Operator
	if err := e.changes(1, func() error {
		var err error
		o, err = e.signIn(ctx, "yamada", pw, code, "s1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	step, _ := totp.Step(e.clock.Now(), totp.DefaultParams())
	if o.Name != "yamada" || o.TOTPLastStep != step || o.TOTPOffset != 0 || o.Failures != 0 || !o.LastSignInAt.Equal(e.clock.Now()) {
		t.Errorf("signed in: %+v (step %d)", o, step)
	}
	ses, so, err := e.st.SessionByHash(ctx, sessionHash("s1"))
	if err != nil || ses.Operator != "yamada" || so.Name != "yamada" || ses.CSRF != "csrf-s1" || ses.RemoteAddr != "192.0.2.7:50000" {
		t.Errorf("session %+v of %s, %v", ses, so.Name, err)
	}
	if a := e.lastAudit(); a.Action != "operator.sign_in" || a.Target != "yamada" || !strings.Contains(a.Actor, "192.0.2.7") ||
		!a.Time.Equal(e.clock.Now()) {
		t.Errorf("audit entry %+v", a)
	}

	// Each failure is ErrSignIn, says the same whatever was wrong, and
	// is audited with its reason.
	e.clock.Add(5 * time.Second)
	failures := []struct {
		name, user, pw, code, reason string
	}{
		{"replayed code", "yamada", pw, code, "replayed TOTP code"},
		{"wrong password", "yamada", "wrong password!", e.code(secret, 30*time.Second), "wrong password"},
		{"wrong code", "yamada", pw, e.wrongCode(secret), "wrong TOTP code"},
		{"malformed code", "yamada", pw, "12ab56", "malformed TOTP code"},
		{"short code", "yamada", pw, "12345", "malformed TOTP code"},
		{"empty password", "yamada", "", e.code(secret, 30*time.Second), "wrong password"},
	}
	var msgs []string
	for i, f := range failures {
		if f.pw != pw {
			e.secrets = append(e.secrets, f.pw)
		}
		err := e.changes(1, func() error {
			_, err := e.signIn(ctx, f.user, f.pw, f.code, fmt.Sprint("f", i))
			return err
		})
		if !errors.Is(err, ErrSignIn) {
			t.Errorf("%s: err = %v, want ErrSignIn", f.name, err)
			continue
		}
		msgs = append(msgs, err.Error())
		if a := e.lastAudit(); a.Action != "operator.sign_in_failed" || a.Target != "yamada" || a.Detail != f.reason {
			t.Errorf("%s: audit entry %+v, want reason %q", f.name, a, f.reason)
		}
		if o := e.get("yamada"); o.Failures != i+1 || !o.LastFailureAt.Equal(e.clock.Now()) || !o.LockedAt.IsZero() {
			t.Errorf("%s: %d failures (want %d), last %v, locked %v", f.name, o.Failures, i+1, o.LastFailureAt, o.LockedAt)
		}
		if _, _, err := e.st.SessionByHash(ctx, sessionHash(fmt.Sprint("f", i))); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: a session was stored", f.name)
		}
	}
	// An unknown operator: the same answer, nothing audited (there is no
	// one to attribute it to).
	err = e.changes(0, func() error {
		_, err := e.signIn(ctx, "nobody", pw, e.code(secret, 0), "n")
		return err
	})
	if !errors.Is(err, ErrSignIn) {
		t.Errorf("unknown operator: %v, want ErrSignIn", err)
	} else {
		msgs = append(msgs, err.Error())
	}
	for _, m := range msgs {
		if m != msgs[0] {
			t.Errorf("failures say different things: %q and %q", msgs[0], m)
		}
	}

	// A wrong password did not use up the next step's code, and the
	// next success clears the failures.
	e.clock.Add(30 * time.Second)
	o, err = e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s2")
	if err != nil {
		t.Fatal(err)
	}
	if o.Failures != 0 || o.TOTPLastStep != step+1 {
		t.Errorf("after the second sign-in: %+v", o)
	}
	// A code of the step before the last accepted one is a replay.
	if _, err := e.signIn(ctx, "yamada", pw, e.code(secret, -30*time.Second), "s3"); !errors.Is(err, ErrSignIn) {
		t.Errorf("older code after a newer one: %v, want ErrSignIn", err)
	}
	if a := e.lastAudit(); a.Detail != "replayed TOTP code" {
		t.Errorf("older code audited as %q", a.Detail)
	}
}

func TestSignInRefusesMalformedRequests(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	secret := e.operator("yamada", store.RoleHelpdesk, "yamada password")
	for _, tt := range []struct {
		name, user, pw, code string
	}{
		{"no name", "", "yamada password", e.code(secret, 0)},
		{"name with a newline", "yamada\n", "yamada password", e.code(secret, 0)},
		{"long password", "yamada", strings.Repeat("x", MaxPasswordBytes+1), e.code(secret, 0)},
		{"long code", "yamada", "yamada password", strings.Repeat("1", 65)},
	} {
		err := e.changes(0, func() error {
			_, err := e.signIn(ctx, tt.user, tt.pw, tt.code, "x")
			return err
		})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
	if o := e.get("yamada"); o.Failures != 0 {
		t.Errorf("malformed requests counted as %d failures", o.Failures)
	}
}

func TestSignInDelay(t *testing.T) {
	ctx := context.Background()
	const delay = 100 * time.Millisecond
	e := newEnv(t, func(p *Policy) { p.DelayAfter, p.Delay, p.LockAfter = 2, delay, 10 })
	const pw = "yamada password"
	secret := e.operator("yamada", store.RoleHelpdesk, pw)
	e.secrets = append(e.secrets, "wrong password!")

	n := 0
	attempt := func(password string) (time.Duration, error) {
		n++
		start := time.Now()
		_, err := e.signIn(ctx, "yamada", password, e.code(secret, 0), fmt.Sprint("s", n))
		return time.Since(start), err
	}
	// The first two failures are answered at once.
	quickest := time.Hour
	for range 2 {
		d, err := attempt("wrong password!")
		if !errors.Is(err, ErrSignIn) {
			t.Fatalf("wrong password: %v", err)
		}
		quickest = min(quickest, d)
	}
	if quickest >= delay {
		t.Errorf("attempts before DelayAfter failures took %v, not less than the delay %v", quickest, delay)
	}
	// From then on every attempt waits, the right one included.
	if d, err := attempt("wrong password!"); !errors.Is(err, ErrSignIn) || d < delay {
		t.Errorf("third failure: %v after %v, want ErrSignIn after at least %v", err, d, delay)
	}
	// A caller that gives up during the wait leaves no failure behind.
	short, cancel := context.WithTimeout(ctx, delay/5)
	start := time.Now()
	_, err := e.signIn(short, "yamada", "wrong password!", e.code(secret, 0), "s")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) >= delay {
		t.Errorf("cancelled attempt: %v after %v", err, time.Since(start))
	}
	if o := e.get("yamada"); o.Failures != 3 {
		t.Errorf("%d failures, want 3", o.Failures)
	}
	if d, err := attempt(pw); err != nil || d < delay {
		t.Errorf("right password after failures: %v after %v, want success after at least %v", err, d, delay)
	}
	// The success cleared the failures: no more waiting.
	e.clock.Add(30 * time.Second)
	if d, err := attempt(pw); err != nil || d >= delay {
		t.Errorf("after a success: %v after %v, want success within %v", err, d, delay)
	}
}

func TestSignInLockout(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(p *Policy) { p.LockAfter = 3 })
	const pw = "yamada password"
	secret := e.operator("yamada", store.RoleHelpdesk, pw)
	e.secrets = append(e.secrets, "wrong password!")
	for i := 1; i <= 3; i++ {
		e.clock.Add(time.Second)
		_, err := e.signIn(ctx, "yamada", "wrong password!", e.code(secret, 0), "s")
		want := ErrSignIn
		if i == 3 {
			want = ErrLocked
		}
		if !errors.Is(err, want) {
			t.Fatalf("failure %d: %v, want %v", i, err, want)
		}
	}
	lockedAt := e.clock.Now()
	if o := e.get("yamada"); !o.LockedAt.Equal(lockedAt) || o.Failures != 3 {
		t.Fatalf("after 3 failures: %+v", o)
	}
	// The right password and code are refused too, and audited.
	e.clock.Add(30 * time.Second)
	err := e.changes(1, func() error {
		_, err := e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s")
		return err
	})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("right credentials while locked: %v, want ErrLocked", err)
	}
	if a := e.lastAudit(); a.Action != "operator.sign_in_refused" || a.Detail != "locked" {
		t.Errorf("audit entry %+v", a)
	}
	if _, _, err := e.st.SessionByHash(ctx, sessionHash("s")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a locked operator got a session: %v", err)
	}
	if o := e.get("yamada"); !o.LockedAt.Equal(lockedAt) || o.Failures != 4 || o.TOTPLastStep != 0 {
		t.Errorf("after a refused attempt: %+v", o)
	}

	o, err := e.svc.Unlock(ctx, "yamada", e.audit())
	if err != nil {
		t.Fatal(err)
	}
	if !o.LockedAt.IsZero() || o.Failures != 0 {
		t.Errorf("unlocked: %+v", o)
	}
	if a := e.lastAudit(); a.Action != "operator.unlock" || a.Detail != "locked since "+lockedAt.Format(time.RFC3339)+" after 4 failures" {
		t.Errorf("audit entry %+v", a)
	}
	if _, err := e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s"); err != nil {
		t.Errorf("after unlock: %v", err)
	}
}

func TestSignInDisabled(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	const pw = "yamada password"
	secret := e.operator("yamada", store.RoleHelpdesk, pw)
	if _, err := e.svc.SetEnabled(ctx, "yamada", false, e.audit()); err != nil {
		t.Fatal(err)
	}
	err := e.changes(1, func() error {
		_, err := e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s")
		return err
	})
	if !errors.Is(err, ErrSignIn) {
		t.Fatalf("disabled operator: %v, want ErrSignIn", err)
	}
	if a := e.lastAudit(); a.Action != "operator.sign_in_refused" || a.Detail != "disabled" {
		t.Errorf("audit entry %+v", a)
	}
	if o := e.get("yamada"); o.TOTPLastStep != 0 || !o.LastSignInAt.IsZero() {
		t.Errorf("a refused sign-in changed the operator: %+v", o)
	}
	if _, err := e.svc.SetEnabled(ctx, "yamada", true, e.audit()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.signIn(ctx, "yamada", pw, e.code(secret, 0), "s"); err != nil {
		t.Errorf("re-enabled operator: %v", err)
	}
}

// TestSignInIncompleteOperator: an operator without a password (migrated
// from an API token) or without a TOTP secret cannot sign in; one whose
// stored hash is damaged gets an error, not a failure.
func TestSignInIncompleteOperator(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	secret := e.operator("nopass", store.RoleHelpdesk, "nopass password")
	if _, err := e.st.UpdateOperator(ctx, "nopass", func(o *store.Operator, _ *store.AuditEntry) error { o.PasswordHash = ""; return nil },
		store.AuditEntry{Actor: "test", Action: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.signIn(ctx, "nopass", "nopass password", e.code(secret, 0), "s"); !errors.Is(err, ErrSignIn) {
		t.Errorf("operator without password: %v, want ErrSignIn", err)
	}
	if a := e.lastAudit(); a.Detail != "no password set" {
		t.Errorf("audit entry %+v", a)
	}

	const pw = "nototp password"
	if err := e.st.CreateOperator(ctx, store.Operator{Name: "nototp", Role: store.RoleAuditor, PasswordHash: cheapHash(t, pw)},
		store.AuditEntry{Actor: "test", Action: "x"}); err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, pw)
	if _, err := e.signIn(ctx, "nototp", pw, "123456", "s"); !errors.Is(err, ErrSignIn) {
		t.Errorf("operator without TOTP: %v, want ErrSignIn", err)
	}
	if a := e.lastAudit(); a.Detail != "no TOTP secret set" {
		t.Errorf("audit entry %+v", a)
	}

	if err := e.st.CreateOperator(ctx, store.Operator{Name: "damaged", Role: store.RoleAuditor, PasswordHash: "$argon2id$v=19$m=4194304,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"},
		store.AuditEntry{Actor: "test", Action: "x"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := e.signIn(ctx, "damaged", pw, "123456", "s")
	if err == nil || errors.Is(err, ErrSignIn) || !errors.Is(err, ErrMalformedHash) {
		t.Errorf("damaged hash: %v, want ErrMalformedHash", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("damaged hash took %v: computed?", d)
	}
}

// TestSignInConcurrent: the same code sent many times at once signs in
// exactly once.
func TestSignInConcurrent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	const pw = "yamada password"
	secret := e.operator("yamada", store.RoleHelpdesk, pw)
	code := e.code(secret, 0)
	var (
		wg        sync.WaitGroup
		won, lost atomic.Int32
	)
	for i := range 8 {
		wg.Go(func() {
			_, err := e.signIn(ctx, "yamada", pw, code, fmt.Sprint("c", i))
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, ErrSignIn):
				lost.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || lost.Load() != 7 {
		t.Errorf("%d won, %d lost; want 1 and 7", won.Load(), lost.Load())
	}
}

// TestSignInDelayAcrossServices: two Services on one store, as two
// collector replicas on one database. Once the operator has failed often
// enough, wrong attempts sent to both at once still go one per delay: the
// delay's slots live in the store, where the per-process lock of SignIn
// does not reach.
func TestSignInDelayAcrossServices(t *testing.T) {
	ctx := context.Background()
	const delay = 150 * time.Millisecond
	e := newEnv(t, func(p *Policy) { p.DelayAfter, p.Delay, p.LockAfter = 1, delay, 100 })
	other, err := New(e.st, e.key, e.svc.p)
	if err != nil {
		t.Fatal(err)
	}
	secret := e.operator("yamada", store.RoleHelpdesk, "yamada password")
	e.secrets = append(e.secrets, "wrong password!")
	if _, err := e.signIn(ctx, "yamada", "wrong password!", e.code(secret, 0), "s0"); !errors.Is(err, ErrSignIn) {
		t.Fatalf("first failure: %v", err)
	}
	const attempts = 6
	code := e.code(secret, 0) // e.code records the secret: not from the goroutines
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, attempts)
	for i := range attempts {
		svc := e.svc
		if i%2 == 1 {
			svc = other
		}
		wg.Go(func() {
			now := e.clock.Now()
			id := fmt.Sprint("p", i)
			_, errs[i] = svc.SignIn(ctx, SignInRequest{Name: "yamada", Password: "wrong password!", Code: code, Remote: "192.0.2.7",
				Session: store.Session{IDHash: sessionHash(id), CSRF: "csrf-" + id, CreatedAt: now, LastSeenAt: now, RemoteAddr: "192.0.2.7:50000"}})
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, err := range errs {
		if !errors.Is(err, ErrSignIn) {
			t.Errorf("attempt %d: %v, want ErrSignIn", i, err)
		}
	}
	// One Service alone would serve its three one after the other, the
	// two side by side: about 3 delays. One slot per delay: 6.
	if elapsed < attempts*delay {
		t.Errorf("%d attempts over two services took %v, want at least %v (one per delay)", attempts, elapsed, attempts*delay)
	}
	if o := e.get("yamada"); o.Failures != attempts+1 {
		t.Errorf("%d failures, want %d", o.Failures, attempts+1)
	}
}
