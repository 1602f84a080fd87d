package collector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/authz"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Principals of the matrices: the three roles, no credentials at all, and
// an enrolled terminal's client certificate.
const principals = "AHUNT"

// wantRPCs is who may call each gRPC method, written out by hand: A admin,
// H helpdesk, U auditor, N anyone without credentials, T a terminal with
// its client certificate. A method missing here fails the test, so a new
// RPC cannot slip past review.
var wantRPCs = map[string]string{
	"AgentService/Enroll":      "AHUNT",
	"AgentService/Renew":       "T",
	"AgentService/Report":      "T",
	"AgentService/Subscribe":   "T",
	"AgentService/VerifyLogin": "T",

	"AdminService/GetServerInfo":             "AHU",
	"AdminService/ListTerminals":             "AHU",
	"AdminService/GetTerminal":               "AHU",
	"AdminService/RevokeTerminal":            "A",
	"AdminService/CreateEnrollmentToken":     "A",
	"AdminService/ListEnrollmentTokens":      "AU",
	"AdminService/ListEvents":                "AHU",
	"AdminService/EnrollUser":                "A",
	"AdminService/ConfirmUser":               "AH",
	"AdminService/ListUsers":                 "AHU",
	"AdminService/GetUser":                   "AHU",
	"AdminService/UnlockUser":                "AH",
	"AdminService/ResetUser":                 "A",
	"AdminService/DeleteUser":                "A",
	"AdminService/ImportUsers":               "A",
	"AdminService/ImportTokens":              "A",
	"AdminService/ListTokens":                "A",
	"AdminService/AssignToken":               "A",
	"AdminService/ResyncUser":                "AH",
	"AdminService/NewRecoveryCodes":          "A",
	"AdminService/IssueOfflineLoginCode":     "AH",
	"AdminService/IssueExemption":            "AH",
	"AdminService/RevokeExemption":           "AH",
	"AdminService/ListExemptions":            "AHU",
	"AdminService/IssueOfflineExemptionCode": "AH",
	"AdminService/AddOperator":               "A",
	"AdminService/ListOperators":             "AU",
	"AdminService/GetOperator":               "AU",
	"AdminService/DisableOperator":           "A",
	"AdminService/EnableOperator":            "A",
	"AdminService/DeleteOperator":            "A",
	"AdminService/ResetOperatorTotp":         "A",
	"AdminService/GetNetworkPolicy":          "AHU",
	"AdminService/SetNetworkPolicy":          "A",
	"AdminService/SetOperatorRole":           "A",
	"AdminService/SetOperatorPassword":       "A",
	"AdminService/UnlockOperator":            "A",
	"AdminService/CreateOperatorToken":       "A",
	"AdminService/RevokeOperatorToken":       "A",
	"AdminService/ListAudit":                 "AU",
	"AdminService/VerifyAudit":               "AU",
	"AdminService/GetSelfInspectionReport":   "AU",
}

// wantRoutes is who may use each web route, by hand like wantRPCs. The
// console does not ask for client certificates: a terminal's certificate
// counts for nothing there, so T is listed only where anyone may.
var wantRoutes = map[string]string{
	"GET /healthz":          "AHUNT",
	"GET /metrics":          "AHUNT", // reachable by all; the handler then wants the metrics token or certificate (TestMetricsNeedCredentials)
	"GET /static/{file...}": "AHUNT",
	"GET /signin":           "AHUNT",
	"POST /signin":          "AHUNT",
	"POST /signout":         "AHU",

	"GET /{$}":                    "AHU",
	"GET /terminals":              "AHU",
	"GET /terminals.csv":          "AHU",
	"GET /terminals/{id}":         "AHU",
	"POST /terminals/{id}/revoke": "A",

	"GET /exemptions":              "AHU",
	"GET /exemptions/new":          "AH",
	"POST /exemptions":             "AH",
	"GET /exemptions/offline":      "AH",
	"POST /exemptions/offline":     "AH",
	"GET /exemptions/{id}":         "AHU",
	"GET /exemptions/{id}/live":    "AHU",
	"POST /exemptions/{id}/revoke": "AH",

	"GET /users":                        "AHU",
	"POST /users":                       "A",
	"GET /users/{name}":                 "AHU",
	"POST /users/{name}/unlock":         "AH",
	"POST /users/{name}/reset":          "A",
	"POST /users/{name}/resync":         "AH",
	"POST /users/{name}/recovery-codes": "A",
	"POST /users/{name}/delete":         "A",
	"GET /users/offline-code":           "AH",
	"POST /users/offline-code":          "AH",

	"GET /tokens":  "AU",
	"POST /tokens": "A",

	"GET /events":     "AHU",
	"GET /events.csv": "AHU",
	"GET /audit":      "AU",

	"GET /reports/self-inspection": "AU",

	"GET /network-policy":  "AHU",
	"POST /network-policy": "A",

	"GET /operators":                     "A",
	"POST /operators":                    "A",
	"GET /operators/{name}":              "A",
	"POST /operators/{name}/disable":     "A",
	"POST /operators/{name}/enable":      "A",
	"POST /operators/{name}/delete":      "A",
	"POST /operators/{name}/reset-totp":  "A",
	"POST /operators/{name}/role":        "A",
	"POST /operators/{name}/password":    "A",
	"POST /operators/{name}/unlock":      "A",
	"POST /operators/{name}/tokens":      "A",
	"POST /operators/tokens/{id}/revoke": "A",

	"GET /account":           "AHU",
	"POST /account/language": "AHU",
}

// matrixCollector is a collector started by Serve for the matrices, with a
// helpdesk and an auditor operator and an enrolled terminal.
type matrixCollector struct {
	dir                string
	grpcAddr, httpAddr string
	pool               *x509.CertPool
	adminToken         string
	tokens             map[byte]string    // role letter -> API token
	signin             map[byte][2]string // role letter -> name, password
	secrets            map[byte][]byte    // role letter -> TOTP secret
	agentCert          *tls.Certificate
}

func startMatrixCollector(t *testing.T) *matrixCollector {
	t.Helper()
	m := &matrixCollector{dir: t.TempDir(), tokens: map[byte]string{}, signin: map[byte][2]string{}, secrets: map[byte][]byte{}}
	ctx, cancel := context.WithCancel(context.Background())
	type addrs struct{ g, h net.Addr }
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{
			DataDir: m.dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready: func(g, h net.Addr) { ready <- addrs{g, h} },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case a := <-ready:
		m.grpcAddr, m.httpAddr = a.g.String(), a.h.String()
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve not ready in 20s")
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(m.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	caCert, err := pki.ParseCertPEM([]byte(read("ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	m.pool = x509.NewCertPool()
	m.pool.AddCert(caCert)
	m.adminToken = read(AdminTokenFile)
	m.tokens['A'] = m.adminToken
	m.signin['A'] = [2]string{"admin", read(AdminPasswordFile)}
	if m.secrets['A'], err = totp.DecodeSecret(read(AdminTOTPFile)); err != nil {
		t.Fatal(err)
	}
	admin := mnguardv1.NewAdminServiceClient(m.conn(t, nil))
	actx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+m.adminToken)
	for letter, role := range map[byte]string{'H': "helpdesk", 'U': "auditor"} {
		name, pw := "op-"+role, "a long password for "+role
		add, err := admin.AddOperator(actx, &mnguardv1.AddOperatorRequest{Name: name, Role: role, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		if m.secrets[letter], err = totp.DecodeSecret(add.GetSecret()); err != nil {
			t.Fatal(err)
		}
		m.signin[letter] = [2]string{name, pw}
		tok, err := admin.CreateOperatorToken(actx, &mnguardv1.CreateOperatorTokenRequest{Name: name, TtlSeconds: 3600})
		if err != nil {
			t.Fatal(err)
		}
		m.tokens[letter] = tok.GetToken()
	}
	et, err := admin.CreateEnrollmentToken(actx, &mnguardv1.CreateEnrollmentTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		t.Fatal(err)
	}
	en, err := mnguardv1.NewAgentServiceClient(m.conn(t, nil)).Enroll(ctx, &mnguardv1.EnrollRequest{
		Token: et.GetToken(), CsrDer: csr, Host: &mnguardv1.HostFacts{Hostname: "pc-matrix", Os: "linux"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.agentCert = &tls.Certificate{Certificate: [][]byte{en.GetCertificateDer()}, PrivateKey: key}
	return m
}

// conn dials the gRPC listener, with the client certificate when given.
func (m *matrixCollector) conn(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: m.pool, ServerName: "localhost", NextProtos: []string{"h2"}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient("passthrough:///"+m.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestRPCRoleMatrix calls every method of both services, with an empty
// request, as each principal and compares who got past authorization with
// wantRPCs.
func TestRPCRoleMatrix(t *testing.T) {
	m := startMatrixCollector(t)
	plain, withCert := m.conn(t, nil), m.conn(t, m.agentCert)
	var methods []protoreflect.MethodDescriptor
	for _, svc := range []string{"AgentService", "AdminService"} {
		sd := mnguardv1.File_mnguard_v1_agent_proto.Services().ByName(protoreflect.Name(svc))
		if sd == nil {
			sd = mnguardv1.File_mnguard_v1_admin_proto.Services().ByName(protoreflect.Name(svc))
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			methods = append(methods, sd.Methods().Get(i))
		}
	}
	covered := map[string]bool{}
	for _, md := range methods {
		name := string(md.Parent().Name()) + "/" + string(md.Name())
		full := "/mnguard.v1." + name
		covered[name] = true
		want, ok := wantRPCs[name]
		if !ok {
			t.Errorf("%s: not in the test's matrix: add it with the roles that may call it", name)
			continue
		}
		if _, listed := authz.RPC(full); !listed {
			t.Errorf("%s: not in the authorization table", name)
		}
		for i := range len(principals) {
			p := principals[i]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cc := plain
			switch p {
			case 'T':
				cc = withCert
			case 'N':
			default:
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+m.tokens[p])
			}
			err := call(ctx, cc, full, md)
			cancel()
			code := status.Code(err)
			refused := code == codes.PermissionDenied || code == codes.Unauthenticated
			if allowed := strings.IndexByte(want, p) >= 0; allowed == refused {
				t.Errorf("%s as %c: %v; want allowed=%v", name, p, err, allowed)
			}
		}
	}
	for name := range wantRPCs {
		if !covered[name] {
			t.Errorf("%s is in the matrix but not in the services", name)
		}
	}
}

// call invokes a method with an empty request; for a server stream it
// returns the error of the first message.
func call(ctx context.Context, cc *grpc.ClientConn, full string, md protoreflect.MethodDescriptor) error {
	req, resp := dynamicpb.NewMessage(md.Input()), dynamicpb.NewMessage(md.Output())
	if !md.IsStreamingServer() {
		return cc.Invoke(ctx, full, req, resp)
	}
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.RecvMsg(resp)
}

// browser is an HTTPS client with a cookie jar that follows no redirect.
type browser struct {
	hc   *http.Client
	base string
	csrf string
}

func (m *matrixCollector) browser(cert *tls.Certificate) *browser {
	jar, _ := cookiejar.New(nil)
	cfg := &tls.Config{RootCAs: m.pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &browser{base: "https://" + m.httpAddr, hc: &http.Client{
		Jar: jar, Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(t *testing.T, method, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", b.base)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := b.hc.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page []byte
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		// A live stream never ends: its first bytes are enough.
		page = make([]byte, 4096)
		n, _ := io.ReadAtLeast(resp.Body, page, 1)
		page = page[:n]
	} else if page, err = io.ReadAll(io.LimitReader(resp.Body, 4<<20)); err != nil {
		t.Fatal(err)
	}
	if m := csrfInput.FindSubmatch(page); m != nil {
		b.csrf = string(m[1])
	}
	return resp, string(page)
}

// signIn signs the operator in through the sign-in form.
func (m *matrixCollector) signIn(t *testing.T, letter byte) *browser {
	t.Helper()
	b := m.browser(nil)
	b.do(t, http.MethodGet, "/signin", nil)
	code, err := totp.Generate(m.secrets[letter], time.Now(), totp.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	resp, body := b.do(t, http.MethodPost, "/signin", url.Values{"csrf": {b.csrf}, "name": {m.signin[letter][0]}, "password": {m.signin[letter][1]}, "code": {code}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign-in as %c: %s\n%s", letter, resp.Status, body)
	}
	b.do(t, http.MethodGet, "/", nil)
	return b
}

// TestWebRoleMatrix uses every route of the authorization table as each
// principal and compares who got past authorization with wantRoutes:
// a refused role gets 403, a visitor without a session the sign-in page.
func TestWebRoleMatrix(t *testing.T) {
	m := startMatrixCollector(t)
	browsers := map[byte]*browser{'N': m.browser(nil), 'T': m.browser(m.agentCert)}
	for _, p := range []byte("AHU") {
		browsers[p] = m.signIn(t, p)
	}
	routes := authz.Routes()
	for _, r := range routes {
		if _, ok := wantRoutes[r]; !ok {
			t.Errorf("%s: in the authorization table but not in the test's matrix", r)
		}
	}
	for r := range wantRoutes {
		if !slices.Contains(routes, r) {
			t.Errorf("%s: in the matrix but not in the authorization table", r)
		}
	}
	// Sign-out last: it ends the session the other routes need.
	slices.SortStableFunc(routes, func(a, b string) int {
		switch {
		case a == "POST /signout":
			return 1
		case b == "POST /signout":
			return -1
		}
		return 0
	})
	fill := strings.NewReplacer("{id}", "00000000-0000-4000-8000-000000000000", "{name}", "nobody", "{file...}", "style.css", "{$}", "")
	for _, r := range routes {
		method, pattern, _ := strings.Cut(r, " ")
		path := fill.Replace(pattern)
		want := wantRoutes[r]
		for i := range len(principals) {
			p := principals[i]
			b := browsers[p]
			var form url.Values
			if method == http.MethodPost {
				form = url.Values{"csrf": {b.csrf}}
				if r == "POST /signin" {
					// Public: whoever posts gets the form's answer. A
					// browser of its own, so that the sign-in page's
					// token does not replace the session's.
					b = m.browser(nil)
					b.do(t, http.MethodGet, "/signin", nil)
					form = url.Values{"csrf": {b.csrf}, "name": {"nobody"}, "password": {"not the password"}, "code": {"000000"}}
				}
			}
			resp, _ := b.do(t, method, path, form)
			toSignIn := resp.StatusCode == http.StatusSeeOther && strings.HasPrefix(resp.Header.Get("Location"), "/signin")
			forbidden := resp.StatusCode == http.StatusForbidden
			allowed := strings.IndexByte(want, p) >= 0
			switch {
			case allowed && (forbidden || toSignIn && r != "POST /signout"):
				t.Errorf("%s as %c: %s %s; want allowed", r, p, resp.Status, resp.Header.Get("Location"))
			case r == "POST /signin" && resp.StatusCode != http.StatusUnauthorized:
				t.Errorf("%s as %c: %s; want 401 for a wrong password", r, p, resp.Status)
			case !allowed && (p == 'N' || p == 'T') && !toSignIn:
				t.Errorf("%s as %c: %s; want a redirect to the sign-in page", r, p, resp.Status)
			case !allowed && p != 'N' && p != 'T' && !forbidden:
				t.Errorf("%s as %c: %s; want 403", r, p, resp.Status)
			}
		}
	}
}
