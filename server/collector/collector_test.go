package collector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestInitIsIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	first, err := Init(ctx, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !first.Created || first.AdminToken == "" || !strings.HasPrefix(first.CAPin, "sha256:") {
		t.Fatalf("first Init = %+v", first)
	}
	tok, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(tok)) != first.AdminToken {
		t.Error("admin.token does not hold the token Init returned")
	}
	key, err := os.ReadFile(filepath.Join(dir, TOTPKeyFile))
	if err != nil || len(key) != 32 {
		t.Fatalf("totp.key: %d bytes, %v", len(key), err)
	}
	// The first admin operator can sign in with the files' password and
	// TOTP secret.
	pw, err := os.ReadFile(filepath.Join(dir, AdminPasswordFile))
	if err != nil || strings.TrimSpace(string(pw)) != first.AdminPassword || len(first.AdminPassword) < operators.MinPasswordRunes {
		t.Fatalf("admin.password: %q, %v", pw, err)
	}
	secret, err := os.ReadFile(filepath.Join(dir, AdminTOTPFile))
	if err != nil || strings.TrimSpace(string(secret)) != first.AdminTOTPSecret {
		t.Fatalf("admin.totp: %q, %v", secret, err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	op, err := st.Operator(ctx, "admin")
	st.Close()
	if err != nil || op.Role != store.RoleAdmin || !op.Enabled() || len(op.TOTPSealed) == 0 {
		t.Fatalf("operator admin: %+v, %v", op, err)
	}
	if ok, err := operators.VerifyPassword(op.PasswordHash, first.AdminPassword); !ok || err != nil {
		t.Errorf("admin.password does not verify against the stored hash: %v", err)
	}
	for _, f := range []string{AdminTokenFile, AdminPasswordFile, AdminTOTPFile, "ca.key", SigningKeyFile, DBFile, TOTPKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v: readable by others", f, fi.Mode().Perm())
		}
	}
	second, err := Init(ctx, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if second.Created || second.AdminToken != "" || second.CAPin != first.CAPin {
		t.Errorf("second Init = %+v; want the same pin and no new token", second)
	}
	tok2, _ := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if string(tok2) != string(tok) {
		t.Error("second Init rewrote admin.token")
	}
	if key2, _ := os.ReadFile(filepath.Join(dir, TOTPKeyFile)); string(key2) != string(key) {
		t.Error("second Init rewrote totp.key")
	}
}

// TestTOTPKeyMissing: a lost totp.key is recreated only while no user
// depends on it; with users, init and serve refuse and say what to do.
func TestTOTPKeyMissing(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := Init(ctx, dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, TOTPKeyFile)
	// No users yet: a new key is harmless.
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, dir, time.Now()); err != nil {
		t.Fatalf("Init without key and users: %v", err)
	}
	key, err := logins.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := logins.New(st, key, logins.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Enroll(ctx, "alice", logins.Operator{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	_, err = Init(ctx, dir, time.Now())
	if err == nil || !strings.Contains(err.Error(), "holds 1 TOTP users") || !strings.Contains(err.Error(), "restore it from a backup") {
		t.Fatalf("Init with a user and no key = %v", err)
	}
	if _, err := os.Stat(keyPath); !os.IsNotExist(err) {
		t.Errorf("Init created a key anyway: %v", err)
	}
	err = Serve(ctx, Config{DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "restore it from a backup") {
		t.Fatalf("Serve with a user and no key = %v", err)
	}
	if runtime.GOOS == "windows" {
		return // file modes are ACLs there
	}
	// A key readable by others is refused too.
	if err := os.WriteFile(keyPath, key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, dir, time.Now()); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Init with a 0644 key = %v", err)
	}
}

// TestServeRefusesBadLoginPolicy: the policy is checked before listening.
func TestServeRefusesBadLoginPolicy(t *testing.T) {
	p := logins.DefaultPolicy()
	p.LockAfter = 0
	err := Serve(context.Background(), Config{DataDir: t.TempDir(), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logins: &p, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "lock after 0") {
		t.Fatalf("Serve with LockAfter 0 = %v", err)
	}
}

// TestServeLifecycle: Serve answers /healthz and the console over HTTPS with
// a certificate from its CA, refuses /metrics to a client without
// credentials (TestMetricsNeedCredentials has the rest), and a cancelled
// context is a clean exit.
func TestServeLifecycle(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{
			DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready:  func(_, h net.Addr) { ready <- h },
		})
	}()
	var httpAddr net.Addr
	select {
	case httpAddr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve not ready in 20s")
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := cl.Get("https://" + httpAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without credentials: %s, want 401", resp.Status)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/": `action="/signin"`} {
		resp, err := cl.Get("https://" + httpAddr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, want 200 containing %q; body starts %.200q", path, resp.StatusCode, want, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancel")
	}
}

// TestServeSignsExemptions: the collector signs exemptions with the key in
// its data directory, whose public half enrollment hands out, and applies
// the exemption durations it is given.
func TestServeSignsExemptions(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := Init(ctx, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "mne_exemptiontest"
	if err := st.CreateEnrollmentToken(ctx, store.EnrollmentToken{ID: "e1", Hash: api.HashToken(secret), ExpiresAt: time.Now().Add(time.Hour), Uses: 1}, store.NoAudit); err != nil {
		t.Fatal(err)
	}
	st.Close()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{
			DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
			ExemptionMaxDuration: 2 * time.Hour, ExemptionDefaultDuration: 90 * time.Minute,
			Ready: func(g, _ net.Addr) { ready <- g },
		})
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve not ready in 20s")
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.CATLSConfig(caCert.Raw, func() (*tls.Certificate, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg.ServerName = "localhost"
	cc, err := grpc.NewClient("passthrough:///"+addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		t.Fatal(err)
	}
	en, err := mnguardv1.NewAgentServiceClient(cc).Enroll(ctx, &mnguardv1.EnrollRequest{Token: secret, CsrDer: csr, Host: &mnguardv1.HostFacts{Hostname: "pc-1"}})
	if err != nil {
		t.Fatal(err)
	}
	signing, _, err := ca.LoadOrCreateSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !signing.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(en.GetExemptionPublicKey())) {
		t.Fatal("enrollment handed out another key than signing.key's")
	}

	admin := mnguardv1.NewAdminServiceClient(cc)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+res.AdminToken)
	req := &mnguardv1.IssueExemptionRequest{
		TerminalId: en.GetTerminalId(), Device: &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "SN1"},
		Reason: "test", Ticket: "INC-1",
	}
	iss, err := admin.IssueExemption(actx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d := iss.GetExemption().GetExemption().GetDurationSeconds(); d != 90*60 {
		t.Errorf("default duration %ds, want 5400", d)
	}
	req.DurationSeconds = 2*3600 + 60
	if _, err := admin.IssueExemption(actx, req); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "2h0m0s") {
		t.Errorf("over the maximum: %v", err)
	}
	st, err = store.OpenSQLite(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.Exemption(ctx, iss.GetExemption().GetExemption().GetId())
	if err != nil {
		t.Fatal(err)
	}
	se := &mnguardv1.SignedExemption{}
	if err := proto.Unmarshal(rec.Token, se); err != nil {
		t.Fatal(err)
	}
	if _, err := exemption.Verify(ed25519.PublicKey(en.GetExemptionPublicKey()), se, en.GetTerminalId(), time.Now()); err != nil {
		t.Errorf("stored token: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}

// TestServeConsoleCertificate: with --http-cert and --http-key the console
// presents that certificate, one the browsers trust, and not the CA's.
func TestServeConsoleCertificate(t *testing.T) {
	dir := t.TempDir()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "console.city.lg.jp"},
		DNSNames: []string{"console.city.lg.jp"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "console.crt"), filepath.Join(dir, "console.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{
			DataDir: filepath.Join(dir, "data"), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
			HTTPCertFile: certFile, HTTPKeyFile: keyFile, Logger: slog.New(slog.DiscardHandler),
			Ready: func(_, h net.Addr) { ready <- h },
		})
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve not ready in 20s")
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "console.city.lg.jp"}}}
	resp, err := cl.Get("https://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatalf("the console does not present the given certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	// A key that does not match is refused at start.
	other, _ := pki.NewKey()
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), Config{DataDir: filepath.Join(dir, "data"), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		HTTPCertFile: certFile, HTTPKeyFile: keyFile, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "console certificate") {
		t.Errorf("Serve with a mismatched key: %v", err)
	}
}
