package collector

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/server/ca"
)

// serveForTest runs Serve on loopback until the test ends and returns its
// HTTPS address and the CA pool.
func serveForTest(t *testing.T, cfg Config) (httpAddr, grpcAddr string, pool *x509.CertPool) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.GRPCListen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	type addrs struct{ g, h net.Addr }
	ready := make(chan addrs, 1)
	cfg.Ready = func(g, h net.Addr) { ready <- addrs{g, h} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	var a addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve not ready in 20s")
	}
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, ca.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return a.h.String(), a.g.String(), pool
}

// TestMetricsNeedCredentials: /metrics shows login and enrollment activity,
// so only the bearer token of --metrics-token-file or a metrics client
// certificate from the collector's CA reads it; /healthz stays open.
func TestMetricsNeedCredentials(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "metrics.token")
	const token = "mnm_0123456789abcdefghijklmnop"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _, pool := serveForTest(t, Config{DataDir: dir, MetricsTokenFile: tokenFile})

	certDir := t.TempDir()
	if _, err := WriteMetricsCert(dir, certDir, time.Now(), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	metricsCert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "metrics.crt"), filepath.Join(certDir, "metrics.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(certDir, "metrics.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("metrics.key: %v %v, want mode 0600", fi.Mode(), err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(dir, ca.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := pki.ParseKeyPEM(caKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caCertPEM, _ := os.ReadFile(filepath.Join(dir, ca.CertFile))
	caCert, _ := pki.ParseCertPEM(caCertPEM)
	// A terminal's certificate from the same CA, and a stranger's with the
	// metrics name.
	terminalCert := clientCert(t, caCert, caKey, "0b7e1a4c-3f2d-4a8e-9c1b-5d6e7f8a9b0c")
	strangerCert := clientCert(t, nil, nil, ca.MetricsCommonName)

	tests := []struct {
		name   string
		path   string
		bearer string
		cert   *tls.Certificate
		want   int
	}{
		{"healthz without credentials", "/healthz", "", nil, http.StatusOK},
		{"no credentials", "/metrics", "", nil, http.StatusUnauthorized},
		{"wrong token", "/metrics", "mnm_0123456789abcdefghijklmnoX", nil, http.StatusUnauthorized},
		{"token prefix", "/metrics", token[:len(token)-1], nil, http.StatusUnauthorized},
		{"token", "/metrics", token, nil, http.StatusOK},
		{"metrics certificate", "/metrics", "", &metricsCert, http.StatusOK},
		{"terminal certificate", "/metrics", "", terminalCert, http.StatusUnauthorized},
		{"certificate from another CA", "/metrics", "", strangerCert, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
			if tt.cert != nil {
				c := tt.cert
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
			}
			cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
			req, _ := http.NewRequest(http.MethodGet, "https://"+addr+tt.path, nil)
			if tt.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tt.bearer)
			}
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("GET %s: %s, want %d; body %.200q", tt.path, resp.Status, tt.want, body)
			}
			if tt.path == "/metrics" && tt.want == http.StatusOK && !strings.Contains(string(body), "mnguard_agent_streams") {
				t.Errorf("metrics lack mnguard_agent_streams: %.300q", body)
			}
			if tt.want == http.StatusUnauthorized && strings.Contains(string(body), "mnguard_") {
				t.Errorf("a refused request got metrics: %.300q", body)
			}
		})
	}
}

// TestMetricsTokenFileRefused: a token file others may read, a short token
// or a missing file stop Serve with an error naming the file.
func TestMetricsTokenFileRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct{ name, path, want string }{
		{"readable by others", write("open", strings.Repeat("a", 32), 0o644), "open"},
		{"short", write("short", "abc\n", 0o600), "at least 16"},
		{"two words", write("words", strings.Repeat("a", 16)+" "+strings.Repeat("b", 16), 0o600), "one line"},
		{"missing", filepath.Join(dir, "none"), "none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Serve(context.Background(), Config{DataDir: t.TempDir(), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
				MetricsTokenFile: tt.path, Logger: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Serve: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// clientCert signs a client certificate for cn with the CA's key, or
// self-signs it when caCert is nil.
func clientCert(t *testing.T, caCert *x509.Certificate, caKey any, cn string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	parent, signer := caCert, caKey
	if caCert == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
