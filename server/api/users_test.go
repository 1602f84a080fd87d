package api

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/offlinecode"
	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/store"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Roles as the authorization table (package authz) gives them.
var (
	allRoles        = []string{store.RoleAdmin, store.RoleHelpdesk, store.RoleAuditor}
	adminOnly       = []string{store.RoleAdmin}
	adminOrHelpdesk = []string{store.RoleAdmin, store.RoleHelpdesk}
)

// collector is a real collector on loopback: CA, SQLite store, TOTP
// authority, gRPC over mutual TLS.
type collector struct {
	t       *testing.T
	st      *store.DB
	svc     *Services
	clock   *fakeclock.Clock
	addr    string
	caDER   []byte
	tokens  map[string]string // role -> API token
	metrics *Metrics
	dataDir string
}

func startCollector(t *testing.T, withLogins bool) *collector {
	t.Helper()
	return startCollectorWith(t, withLogins, nil)
}

// startCollectorWith starts a collector whose Config edit may change
// first. It signs exemptions with a fresh key.
func startCollectorWith(t *testing.T, withLogins bool, edit func(*Config)) *collector {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now()
	authority, _, err := ca.LoadOrCreate(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "mnguard.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &collector{t: t, st: st, clock: fakeclock.New(time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC)), caDER: authority.CertDER(),
		tokens: map[string]string{}, metrics: NewMetrics(nil)}
	_, signer, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: st, CA: authority, Version: "test", Logger: slog.New(slog.DiscardHandler), Metrics: c.metrics, ExemptionSigner: signer}
	// The data directory's key seals the offline keys, as the collector's.
	keyPath := filepath.Join(dir, "totp.key")
	if err := logins.CreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	key, err := logins.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := logins.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetKeySealer(ctx, sealer); err != nil {
		t.Fatal(err)
	}
	c.dataDir = dir
	if withLogins {
		p := logins.DefaultPolicy()
		p.Delay = 0
		p.Now = c.clock.Now
		p.Logger = cfg.Logger
		if cfg.Logins, err = logins.New(st, key, p); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(&cfg)
	}
	for _, role := range allRoles {
		tok, err := NewOperatorToken()
		if err != nil {
			t.Fatal(err)
		}
		audit := store.AuditEntry{Time: now, Actor: "test", Action: "operator.add"}
		if err := st.CreateOperator(ctx, store.Operator{Name: role + "-op", Role: role, CreatedAt: now}, audit); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateOperatorToken(ctx, store.OperatorToken{ID: "tok-" + role, Name: role + "-op", Hash: HashToken(tok), CreatedAt: now}, audit); err != nil {
			t.Fatal(err)
		}
		c.tokens[role] = tok
	}
	c.svc = New(cfg)
	cert, err := authority.ServerCertificate([]string{"localhost"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := c.svc.NewGRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	c.addr = l.Addr().String()
	return c
}

func (c *collector) dial(cert *tls.Certificate) *grpc.ClientConn {
	c.t.Helper()
	cfg, err := pki.CATLSConfig(c.caDER, func() (*tls.Certificate, error) { return cert, nil })
	if err != nil {
		c.t.Fatal(err)
	}
	cfg.ServerName = "localhost"
	cc, err := grpc.NewClient("passthrough:///"+c.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

// admin returns a client and a context carrying role's API token.
func (c *collector) admin(role string) (mnguardv1.AdminServiceClient, context.Context) {
	ctx := metadata.AppendToOutgoingContext(c.t.Context(), "authorization", "Bearer "+c.tokens[role])
	return mnguardv1.NewAdminServiceClient(c.dial(nil)), ctx
}

// terminal enrolls a terminal through the Enroll RPC and returns an agent
// client authenticated by its certificate.
func (c *collector) terminal() (mnguardv1.AgentServiceClient, *mnguardv1.EnrollResponse) {
	c.t.Helper()
	ctx := c.t.Context()
	secret, err := NewToken(enrollTokenPrefix)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{
		ID: secret[len(secret)-8:], Hash: HashToken(secret), CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), Uses: 1, UsesLeft: 1, CreatedBy: "test",
	}, testAudit); err != nil {
		c.t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		c.t.Fatal(err)
	}
	res, err := mnguardv1.NewAgentServiceClient(c.dial(nil)).Enroll(ctx, &mnguardv1.EnrollRequest{
		Token: secret, CsrDer: csr, Host: &mnguardv1.HostFacts{Hostname: "term-01", Os: "linux"},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{res.GetCertificateDer()}, PrivateKey: key}
	return mnguardv1.NewAgentServiceClient(c.dial(cert)), res
}

// count returns the login verifications counted with result.
func (c *collector) count(result string) float64 {
	c.t.Helper()
	var m dto.Metric
	if err := c.metrics.logins.WithLabelValues(result).Write(&m); err != nil {
		c.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func wantCode(t *testing.T, err error, want codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != want || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("error %v, want %v containing %q", err, want, msg)
	}
}

func (c *collector) code(secret string, d time.Duration) string {
	c.t.Helper()
	s, err := totp.DecodeSecret(secret)
	if err != nil {
		c.t.Fatal(err)
	}
	code, err := totp.Generate(s, c.clock.Now().Add(d), totp.Params{})
	if err != nil {
		c.t.Fatal(err)
	}
	return code
}

// wrong returns a code that is not the secret's near the clock.
func (c *collector) wrong(secret string) string {
	near := map[string]bool{}
	for d := -2; d <= 2; d++ {
		near[c.code(secret, time.Duration(d)*30*time.Second)] = true
	}
	for i := 0; ; i++ {
		if w := fmt.Sprintf("%06d", 314159+i*7919); !near[w] {
			return w
		}
	}
}

func TestUserLifecycle(t *testing.T) {
	c := startCollector(t, true)
	admin, actx := c.admin(store.RoleAdmin)
	help, hctx := c.admin(store.RoleHelpdesk)
	auditor, audctx := c.admin(store.RoleAuditor)
	agent, term := c.terminal()
	ctx := t.Context()
	var secrets []string // must never reach the audit log

	en, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: "t.yamada"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, en.GetSecret())
	secrets = append(secrets, en.GetRecoveryCodes()...)
	if u := en.GetUser(); u.GetState() != mnguardv1.UserState_USER_STATE_PENDING || u.GetRecoveryCodesLeft() != 10 ||
		u.GetCreatedBy() != "admin-op" || u.GetAlgorithm() != "SHA1" || u.GetDigits() != 6 || u.GetPeriodSeconds() != 30 ||
		!strings.HasPrefix(en.GetOtpauthUrl(), "otpauth://totp/mnguard:t.yamada?") {
		t.Fatalf("EnrollUser = %v", en)
	}
	_, err = admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: "t.yamada"})
	wantCode(t, err, codes.AlreadyExists, "exists")

	_, err = help.ConfirmUser(hctx, &mnguardv1.ConfirmUserRequest{Name: "t.yamada", Code: c.wrong(en.GetSecret())})
	wantCode(t, err, codes.InvalidArgument, "wrong code")
	_, err = help.ConfirmUser(hctx, &mnguardv1.ConfirmUserRequest{Name: "t.yamada", Code: "12345"})
	wantCode(t, err, codes.InvalidArgument, "5 digits, want 6")
	code := c.code(en.GetSecret(), 0)
	secrets = append(secrets, code)
	cu, err := help.ConfirmUser(hctx, &mnguardv1.ConfirmUserRequest{Name: "t.yamada", Code: code})
	if err != nil {
		t.Fatal(err)
	}
	if cu.GetUser().GetState() != mnguardv1.UserState_USER_STATE_ACTIVE {
		t.Errorf("confirmed: %v", cu.GetUser())
	}
	_, err = help.ConfirmUser(hctx, &mnguardv1.ConfirmUserRequest{Name: "t.yamada", Code: code})
	wantCode(t, err, codes.FailedPrecondition, "confirmed already")

	// Logins at the terminal.
	verify := func(code string) *mnguardv1.VerifyLoginResponse {
		t.Helper()
		r, err := agent.VerifyLogin(ctx, &mnguardv1.VerifyLoginRequest{User: "t.yamada", Code: code, Service: "gdm-password"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	c.clock.Add(30 * time.Second)
	code = c.code(en.GetSecret(), 0)
	if r := verify(code); r.GetResult() != mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED || r.GetMessage() != logins.MsgAccepted {
		t.Errorf("VerifyLogin = %v", r)
	}
	if r := verify(code); r.GetResult() != mnguardv1.LoginResult_LOGIN_RESULT_REJECTED || r.GetMessage() != logins.MsgWrong {
		t.Errorf("replayed VerifyLogin = %v", r)
	}
	r, err := agent.VerifyLogin(ctx, &mnguardv1.VerifyLoginRequest{User: "nobody", Code: "123456", Service: "login"})
	if err != nil || r.GetResult() != mnguardv1.LoginResult_LOGIN_RESULT_UNKNOWN_USER {
		t.Errorf("VerifyLogin(unknown) = %v, %v", r, err)
	}
	for range 9 {
		verify(c.wrong(en.GetSecret()))
	}
	c.clock.Add(30 * time.Second)
	if r := verify(c.code(en.GetSecret(), 0)); r.GetResult() != mnguardv1.LoginResult_LOGIN_RESULT_LOCKED || r.GetMessage() != logins.MsgLocked {
		t.Errorf("VerifyLogin of a locked user = %v", r)
	}
	if got := c.count("locked"); got != 1 {
		t.Errorf("locked verifications counted %v, want 1", got)
	}
	if got := c.count("rejected"); got != 10 {
		t.Errorf("rejected verifications counted %v, want 10", got)
	}

	// The helpdesk: offline code refused while locked, then unlock.
	_, err = help.IssueOfflineLoginCode(hctx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: term.GetTerminalId(), User: "t.yamada", Challenge: "1234-5678"})
	wantCode(t, err, codes.FailedPrecondition, "unlock first")
	gu, err := auditor.GetUser(audctx, &mnguardv1.GetUserRequest{Name: "t.yamada"})
	if err != nil || !gu.GetUser().GetLocked() || gu.GetUser().GetFailures() != 10 {
		t.Fatalf("GetUser = %v, %v", gu, err)
	}
	if _, err := help.UnlockUser(hctx, &mnguardv1.UnlockUserRequest{Name: "t.yamada"}); err != nil {
		t.Fatal(err)
	}
	oc, err := help.IssueOfflineLoginCode(hctx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: term.GetTerminalId(), User: "t.yamada", Challenge: "1234-5678"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, oc.GetCode(), strings.ReplaceAll(oc.GetCode(), "-", ""))
	ok, err := offlinecode.VerifyLoginCode(term.GetOfflineKey(), term.GetTerminalId(), "t.yamada", "12345678", oc.GetCode(), c.clock.Now())
	if err != nil || !ok {
		t.Errorf("the agent's check of the offline code: %v, %v", ok, err)
	}
	_, err = help.IssueOfflineLoginCode(hctx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: "9b5f7a4e-3c55-4a8e-9d7e-1f2a3b4c5d6e", User: "t.yamada", Challenge: "12345678"})
	wantCode(t, err, codes.NotFound, "no such terminal")
	_, err = help.IssueOfflineLoginCode(hctx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: term.GetTerminalId(), User: "t.yamada", Challenge: "1234"})
	wantCode(t, err, codes.InvalidArgument, "challenge")

	// A recovery code, new codes, a resync.
	r = verify(strings.ToUpper(en.GetRecoveryCodes()[0]))
	if r.GetResult() != mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED || !strings.Contains(r.GetMessage(), "9 left") {
		t.Errorf("recovery code: %v", r)
	}
	rc, err := admin.NewRecoveryCodes(actx, &mnguardv1.NewRecoveryCodesRequest{Name: "t.yamada"})
	if err != nil || len(rc.GetRecoveryCodes()) != 10 || rc.GetUser().GetRecoveryCodesLeft() != 10 {
		t.Fatalf("NewRecoveryCodes = %v, %v", rc, err)
	}
	secrets = append(secrets, rc.GetRecoveryCodes()...)
	c1 := c.code(en.GetSecret(), 10*time.Minute)
	c.clock.Add(30 * time.Second)
	c2 := c.code(en.GetSecret(), 10*time.Minute)
	secrets = append(secrets, c1, c2)
	_, err = help.ResyncUser(hctx, &mnguardv1.ResyncUserRequest{Name: "t.yamada", Code1: c2, Code2: c1})
	wantCode(t, err, codes.InvalidArgument, "not consecutive")
	rs, err := help.ResyncUser(hctx, &mnguardv1.ResyncUserRequest{Name: "t.yamada", Code1: c1, Code2: c2})
	if err != nil || rs.GetUser().GetClockOffsetSteps() != 20 {
		t.Fatalf("ResyncUser = %v, %v", rs, err)
	}
	_, err = help.ResyncUser(hctx, &mnguardv1.ResyncUserRequest{Name: "t.yamada", Code1: c1, Code2: c2})
	wantCode(t, err, codes.InvalidArgument, "used already")

	// Reset and delete.
	re, err := admin.ResetUser(actx, &mnguardv1.ResetUserRequest{Name: "t.yamada"})
	if err != nil || re.GetSecret() == en.GetSecret() || re.GetUser().GetState() != mnguardv1.UserState_USER_STATE_PENDING {
		t.Fatalf("ResetUser = %v, %v", re, err)
	}
	secrets = append(secrets, re.GetSecret())
	secrets = append(secrets, re.GetRecoveryCodes()...)
	list, err := auditor.ListUsers(audctx, &mnguardv1.ListUsersRequest{})
	if err != nil || len(list.GetUsers()) != 1 || list.GetUsers()[0].GetName() != "t.yamada" {
		t.Fatalf("ListUsers = %v, %v", list, err)
	}
	if _, err := admin.DeleteUser(actx, &mnguardv1.DeleteUserRequest{Name: "t.yamada"}); err != nil {
		t.Fatal(err)
	}
	_, err = auditor.GetUser(audctx, &mnguardv1.GetUserRequest{Name: "t.yamada"})
	wantCode(t, err, codes.NotFound, "no such user")
	_, err = admin.DeleteUser(actx, &mnguardv1.DeleteUserRequest{Name: "t.yamada"})
	wantCode(t, err, codes.NotFound, "no such user")

	// Server events, with their source.
	evs, err := auditor.ListEvents(audctx, &mnguardv1.ListEventsRequest{TerminalId: term.GetTerminalId()})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, e := range evs.GetEvents() {
		if e.GetSource() != "server" || e.GetEvent().GetType() != "login.verify" {
			t.Errorf("event %v", e)
			continue
		}
		n++
	}
	// Accepted, replayed, unknown user, 9 wrong, locked, recovery code.
	if n != 14 {
		t.Errorf("%d login events, want 14", n)
	}

	// The audit log names every action and no secret.
	audit, err := c.st.AuditLog(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, e := range audit {
		actions[e.Action] = true
		line := e.Actor + e.Action + e.Target + e.Detail
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("audit entry %s %s contains a secret or code", e.Action, e.Target)
			}
		}
	}
	for _, a := range []string{"user.enroll", "user.confirm", "user.unlock", "user.offline_code", "user.recovery_codes", "user.resync", "user.reset", "user.delete"} {
		if !actions[a] {
			t.Errorf("no audit entry %s", a)
		}
	}
}

func TestImportUsers(t *testing.T) {
	c := startCollector(t, true)
	admin, actx := c.admin(store.RoleAdmin)
	csv := "serial,user,seed,digits\nSN1,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,8\nSN2,bob,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJR,6\n"
	res, err := admin.ImportUsers(actx, &mnguardv1.ImportUsersRequest{Data: []byte(csv)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetUsers()) != 2 || res.GetUsers()[0].GetSource() != "imported" || res.GetUsers()[0].GetTokenSerial() != "SN1" || res.GetUsers()[0].GetDigits() != 8 {
		t.Fatalf("ImportUsers = %v", res)
	}
	_, err = admin.ImportUsers(actx, &mnguardv1.ImportUsersRequest{Data: []byte(csv), Format: "csv"})
	wantCode(t, err, codes.AlreadyExists, "alice, bob")
	if _, err := admin.ImportUsers(actx, &mnguardv1.ImportUsersRequest{Data: []byte(csv), Replace: true}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		req  *mnguardv1.ImportUsersRequest
		want string
	}{
		{&mnguardv1.ImportUsersRequest{}, "data: the seed file is empty"},
		{&mnguardv1.ImportUsersRequest{Data: []byte(csv), Format: "xml"}, `format: "xml"`},
		{&mnguardv1.ImportUsersRequest{Data: []byte("<KeyContainer/>"), PskcKey: make([]byte, 10)}, "pskc_key: 10 bytes"},
		{&mnguardv1.ImportUsersRequest{Data: []byte(csv), PskcPassword: strings.Repeat("p", 2000)}, "pskc_password"},
		{&mnguardv1.ImportUsersRequest{Data: []byte("serial,user,seed\nSN3,carol\x01,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")}, "control character"},
		{&mnguardv1.ImportUsersRequest{Data: []byte("serial,user,seed\nSN3,,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")}, `csv seed file: csv line 2, column "user": empty`},
	} {
		_, err := admin.ImportUsers(actx, tt.req)
		wantCode(t, err, codes.InvalidArgument, tt.want)
	}
	// Over the gRPC message limit.
	_, err = admin.ImportUsers(actx, &mnguardv1.ImportUsersRequest{Data: make([]byte, MaxMessageBytes+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("ImportUsers of %d bytes = %v, want ResourceExhausted", MaxMessageBytes+1, err)
	}
}

// TestUserRoles calls every user RPC with every role.
func TestUserRoles(t *testing.T) {
	c := startCollector(t, true)
	tid := "9b5f7a4e-3c55-4a8e-9d7e-1f2a3b4c5d6e"
	calls := []struct {
		name    string
		allowed []string
		call    func(mnguardv1.AdminServiceClient, context.Context) error
	}{
		{"EnrollUser", adminOnly, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.EnrollUser(ctx, &mnguardv1.EnrollUserRequest{Name: "u1"})
			return err
		}},
		{"ResetUser", adminOnly, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.ResetUser(ctx, &mnguardv1.ResetUserRequest{Name: "u1"})
			return err
		}},
		{"DeleteUser", adminOnly, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.DeleteUser(ctx, &mnguardv1.DeleteUserRequest{Name: "nobody"})
			return err
		}},
		{"ImportUsers", adminOnly, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.ImportUsers(ctx, &mnguardv1.ImportUsersRequest{Data: []byte("x")})
			return err
		}},
		{"ConfirmUser", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.ConfirmUser(ctx, &mnguardv1.ConfirmUserRequest{Name: "nobody", Code: "123456"})
			return err
		}},
		{"UnlockUser", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.UnlockUser(ctx, &mnguardv1.UnlockUserRequest{Name: "nobody"})
			return err
		}},
		{"ResyncUser", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.ResyncUser(ctx, &mnguardv1.ResyncUserRequest{Name: "nobody", Code1: "123456", Code2: "234567"})
			return err
		}},
		{"NewRecoveryCodes", adminOnly, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.NewRecoveryCodes(ctx, &mnguardv1.NewRecoveryCodesRequest{Name: "nobody"})
			return err
		}},
		{"IssueOfflineLoginCode", adminOrHelpdesk, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.IssueOfflineLoginCode(ctx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: tid, User: "nobody", Challenge: "12345678"})
			return err
		}},
		{"ListUsers", allRoles, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.ListUsers(ctx, &mnguardv1.ListUsersRequest{})
			return err
		}},
		{"GetUser", allRoles, func(a mnguardv1.AdminServiceClient, ctx context.Context) error {
			_, err := a.GetUser(ctx, &mnguardv1.GetUserRequest{Name: "nobody"})
			return err
		}},
	}
	for _, role := range allRoles {
		client, ctx := c.admin(role)
		for _, call := range calls {
			t.Run(role+"/"+call.name, func(t *testing.T) {
				err := call.call(client, ctx)
				allowed := false
				for _, r := range call.allowed {
					allowed = allowed || r == role
				}
				if got := status.Code(err) == codes.PermissionDenied; got == allowed {
					t.Errorf("%s as %s: %v (allowed %v)", call.name, role, err, allowed)
				}
			})
		}
	}
	// Without an API token nothing at all.
	_, err := mnguardv1.NewAdminServiceClient(c.dial(nil)).ListUsers(t.Context(), &mnguardv1.ListUsersRequest{})
	wantCode(t, err, codes.Unauthenticated, "API token required")
}

func TestUserValidation(t *testing.T) {
	c := startCollector(t, true)
	admin, actx := c.admin(store.RoleAdmin)
	agent, term := c.terminal()
	long := strings.Repeat("a", 10<<10)
	for _, tt := range []struct {
		name, user, service, code, want string
	}{
		{"control in user", "ali\x01ce", "login", "123456", "user: user name \"ali\\x01ce\": control character U+0001"},
		{"newline user", "alice\n", "login", "123456", "control character U+000A"},
		{"10 kB user", long, "login", "123456", "user: user name is 10240 bytes, at most 64"},
		{"empty user", "", "login", "123456", "user: user name is empty"},
		{"non-ASCII user", "山田", "login", "123456", "non-ASCII"},
		{"empty code", "alice", "login", "", "code: empty"},
		{"overlong code", "alice", "login", strings.Repeat("1", 65), "code: 65 bytes, at most 64"},
		{"non-ASCII code", "alice", "login", "１２３４５６", "code: byte 1 is not printable ASCII"},
		{"newline code", "alice", "login", "123456\n", "code: byte 7 is not printable ASCII"},
		{"NUL code", "alice", "login", "123\x00456", "code: byte 4"},
		{"service with space", "alice", "gdm password", "123456", "service: byte 4"},
		{"long service", "alice", strings.Repeat("s", 65), "123456", "service: 65 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := agent.VerifyLogin(t.Context(), &mnguardv1.VerifyLoginRequest{User: tt.user, Service: tt.service, Code: tt.code})
			wantCode(t, err, codes.InvalidArgument, tt.want)
			if len(tt.code) >= 3 && strings.Contains(status.Convert(err).Message(), strings.TrimSpace(tt.code)) {
				t.Errorf("error %q repeats the code", status.Convert(err).Message())
			}
		})
	}
	if got := c.count("invalid"); got != 12 {
		t.Errorf("invalid verifications counted %v, want 12", got)
	}
	evs, err := c.st.Events(t.Context(), term.GetTerminalId(), 100)
	if err != nil || len(evs) != 0 {
		t.Errorf("invalid requests recorded %d events (%v)", len(evs), err)
	}
	// An empty service is allowed.
	r, err := agent.VerifyLogin(t.Context(), &mnguardv1.VerifyLoginRequest{User: "alice", Code: "123456"})
	if err != nil || r.GetResult() != mnguardv1.LoginResult_LOGIN_RESULT_UNKNOWN_USER {
		t.Errorf("VerifyLogin without service = %v, %v", r, err)
	}
	// Without a client certificate: refused before anything is looked at.
	_, err = mnguardv1.NewAgentServiceClient(c.dial(nil)).VerifyLogin(t.Context(), &mnguardv1.VerifyLoginRequest{User: "alice", Code: "123456"})
	wantCode(t, err, codes.Unauthenticated, "client certificate required")

	for _, tt := range []struct {
		name string
		call func() error
		want string
	}{
		{"enroll 10 kB name", func() error {
			_, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: long})
			return err
		}, "name: user name is 10240 bytes"},
		{"enroll control", func() error {
			_, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: "bob\x1b[31m"})
			return err
		}, "control character U+001B"},
		{"enroll leading dash", func() error {
			_, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: "-bob"})
			return err
		}, "must start with"},
		{"confirm empty code", func() error {
			_, err := admin.ConfirmUser(actx, &mnguardv1.ConfirmUserRequest{Name: "bob"})
			return err
		}, "code: empty"},
		{"confirm non-ASCII", func() error {
			_, err := admin.ConfirmUser(actx, &mnguardv1.ConfirmUserRequest{Name: "bob", Code: "12345é"})
			return err
		}, "code: byte 6"},
		{"resync overlong", func() error {
			_, err := admin.ResyncUser(actx, &mnguardv1.ResyncUserRequest{Name: "bob", Code1: "123456", Code2: long})
			return err
		}, "code2: 10240 bytes"},
		{"offline bad terminal", func() error {
			_, err := admin.IssueOfflineLoginCode(actx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: "term-01", User: "bob", Challenge: "12345678"})
			return err
		}, "not a terminal ID"},
		{"offline control challenge", func() error {
			_, err := admin.IssueOfflineLoginCode(actx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: term.GetTerminalId(), User: "bob", Challenge: "1234\n5678"})
			return err
		}, "challenge: contains control character"},
		{"get empty", func() error {
			_, err := admin.GetUser(actx, &mnguardv1.GetUserRequest{})
			return err
		}, "name: user name is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), codes.InvalidArgument, tt.want)
		})
	}
	if us, err := admin.ListUsers(actx, &mnguardv1.ListUsersRequest{}); err != nil || len(us.GetUsers()) != 0 {
		t.Errorf("after refused requests: %v, %v", us, err)
	}
}

// TestLoginsNotConfigured: without a TOTP authority the RPCs say so.
func TestLoginsNotConfigured(t *testing.T) {
	c := startCollector(t, false)
	admin, actx := c.admin(store.RoleAdmin)
	_, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: "alice"})
	wantCode(t, err, codes.Unimplemented, "not configured")
	agent, _ := c.terminal()
	_, err = agent.VerifyLogin(t.Context(), &mnguardv1.VerifyLoginRequest{User: "alice", Code: "123456"})
	wantCode(t, err, codes.Unimplemented, "not configured")
}
