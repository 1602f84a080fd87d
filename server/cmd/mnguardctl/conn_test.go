package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testCA is a CA made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mnguard test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pin() string { return pki.Pin(ca.cert.Raw) }

// serverCert issues a certificate for 127.0.0.1 and localhost, sent with the
// CA after it, as the collector does.
func (ca *testCA) serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "collector"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// startTLSServer serves fake on 127.0.0.1 over TLS with a certificate of
// ca, accepting only testToken, and returns its address.
func startTLSServer(t *testing.T, ca *testCA, fake mnguardv1.AdminServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.serverCert(t)},
		MinVersion:   tls.VersionTLS13,
	})
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(requireToken))
	mnguardv1.RegisterAdminServiceServer(srv, fake)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// requireToken is the server's side of the bearer token.
func requireToken(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+testToken {
		return nil, status.Error(codes.Unauthenticated, "API token not recognised")
	}
	return handler(ctx, req)
}

// runReal runs mnguardctl as main does, with the real grpc client.
func runReal(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return env[k] })
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	checkStderr(t, r)
	return r
}

func TestTLSPinnedWithToken(t *testing.T) {
	ca := newTestCA(t)
	fake := newFakeAdmin()
	fake.info.CaPin = ca.pin()
	addr := startTLSServer(t, ca, fake)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	r := runReal(t, nil, "--server", addr, "--token-file", tokenFile, "--ca-pin", ca.pin(), "whoami", "-o", "json")
	if r.code != 0 {
		t.Fatalf("whoami: exit %d: %s", r.code, r.stderr)
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatal(err)
	}
	if info["operator"] != "tanaka" || info["role"] != "admin" || info["ca_pin"] != ca.pin() {
		t.Errorf("whoami = %v", info)
	}

	// Colon-separated uppercase pins, as openssl prints them, work too; and
	// the settings may come from the environment.
	env := map[string]string{"MNGUARD_SERVER": addr, "MNGUARD_TOKEN": testToken, "MNGUARD_CA_PIN": colonPin(ca.pin())}
	r = runReal(t, env, "tokens", "create", "--ttl", "2h", "--uses", "4")
	if r.code != 0 {
		t.Fatalf("tokens create: exit %d: %s", r.code, r.stderr)
	}
	if first, _, _ := strings.Cut(r.stdout, "\n"); first != "mge_k5qw3zt7yb2xq4hd6n8mrc3vwa9pf2le" {
		t.Errorf("first line %q is not the bare token", first)
	}
	fake.mu.Lock()
	got := fake.lastCreate
	fake.mu.Unlock()
	if got.GetTtlSeconds() != 7200 || got.GetUses() != 4 {
		t.Errorf("server got %v", got)
	}

	r = runReal(t, env, "terminals", "show", "no-such-terminal")
	if r.code != 1 || r.stderr != "mnguardctl: show terminal no-such-terminal: terminal not found\n" {
		t.Errorf("not found: exit %d, %q", r.code, r.stderr)
	}

	// Sanity check of the contract ca pin relies on.
	r = runReal(t, env, "ca", "pin")
	if r.code != 0 || r.stdout != ca.pin()+"\n" {
		t.Errorf("ca pin: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

func colonPin(pin string) string {
	h := strings.ToUpper(strings.TrimPrefix(pin, "sha256:"))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return "sha256:" + strings.Join(parts, ":")
}

func TestTLSWrongPin(t *testing.T) {
	addr := startTLSServer(t, newTestCA(t), newFakeAdmin())
	other := newTestCA(t)
	r := runReal(t, nil, "--server", addr, "--token", testToken, "--ca-pin", other.pin(), "terminals", "list")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
	}
	want := "mnguardctl: list terminals: server " + addr + " is not the pinned collector: server CA is "
	if !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, "expected pin "+other.pin()) {
		t.Errorf("stderr = %q, want it to start %q and name the expected pin", r.stderr, want)
	}
}

func TestTLSWrongToken(t *testing.T) {
	ca := newTestCA(t)
	addr := startTLSServer(t, ca, newFakeAdmin())
	r := runReal(t, nil, "--server", addr, "--token", "mgo_wrong", "--ca-pin", ca.pin(), "terminals", "list")
	want := "mnguardctl: list terminals: the server refused the API token: API token not recognised\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", r.code, r.stderr, want)
	}
	if strings.Contains(r.stderr, "mgo_wrong") {
		t.Error("stderr shows the token")
	}
}

func TestTLSServerName(t *testing.T) {
	// The certificate names localhost and 127.0.0.1; dialing by name checks
	// the name.
	ca := newTestCA(t)
	addr := startTLSServer(t, ca, newFakeAdmin())
	_, port, _ := net.SplitHostPort(addr)
	r := runReal(t, nil, "--server", "localhost:"+port, "--token", testToken, "--ca-pin", ca.pin(), "whoami")
	if r.code != 0 {
		t.Fatalf("by name: exit %d: %s", r.code, r.stderr)
	}
}

func TestUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r := runReal(t, nil, "--server", addr, "--token", testToken, "--ca-pin", testPin, "whoami")
	want := "mnguardctl: whoami: cannot reach server " + addr + ": "
	if r.code != 1 || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("exit %d, stderr %q; want 1, %q...", r.code, r.stderr, want)
	}
}

func TestNoTLSHandshake(t *testing.T) {
	// A server that accepts connections and never answers: the timeout ends
	// the call with a clear error.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	addr := lis.Addr().String()
	start := time.Now()
	r := runReal(t, nil, "--server", addr, "--token", testToken, "--ca-pin", testPin, "--timeout", "300ms", "whoami")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a 300ms timeout", d)
	}
	if r.code != 1 || !strings.Contains(r.stderr, addr) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCAPinDataDir(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	// No server settings needed.
	r := runReal(t, nil, "ca", "pin", "--data-dir", dir)
	if r.code != 0 || r.stdout != ca.pin()+"\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runReal(t, nil, "-o", "json", "ca", "pin", "--data-dir", dir)
	if want := "{\n  \"ca_pin\": \"" + ca.pin() + "\"\n}\n"; r.stdout != want {
		t.Errorf("json = %q, want %q", r.stdout, want)
	}
	r = runReal(t, nil, "ca", "pin", "--data-dir", t.TempDir())
	if r.code != 1 || !strings.HasPrefix(r.stderr, "mnguardctl: read CA certificate: ") {
		t.Errorf("missing ca.crt: exit %d, %q", r.code, r.stderr)
	}
}

// writeCA writes a new CA certificate to dir/ca.crt.
func writeCA(t *testing.T, dir string) *testCA {
	t.Helper()
	ca := newTestCA(t)
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestExplain(t *testing.T) {
	c := &connection{server: "collector.test:8443", timeout: 10 * time.Second}
	ctx := context.Background()
	tests := []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unauthenticated, ""), "the server refused the API token"},
		{status.Error(codes.PermissionDenied, "role auditor may not do this (needs admin)"), "permission denied: role auditor may not do this (needs admin)"},
		{status.Error(codes.NotFound, "terminal not found"), "terminal not found"},
		{status.Error(codes.InvalidArgument, `"x" is not a terminal ID`), `"x" is not a terminal ID`},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "no answer from server collector.test:8443 within 10s"},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp: lookup collector.test: no such host"`),
			"cannot reach server collector.test:8443: Error while dialing: dial tcp: lookup collector.test: no such host"},
		{status.Error(codes.Unavailable, "terminals: database is locked"), "server collector.test:8443 is unavailable: terminals: database is locked"},
		{status.Error(codes.Internal, "boom"), "server error: boom"},
	}
	for _, tt := range tests {
		if got := c.explain(ctx, tt.err); got != tt.want {
			t.Errorf("explain(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
