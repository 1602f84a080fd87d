package collector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
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
	for _, f := range []string{AdminTokenFile, "ca.key", SigningKeyFile, DBFile} {
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
}

// TestServeLifecycle: Serve answers /healthz and /metrics over HTTPS with a
// certificate from its CA, and a cancelled context is a clean exit.
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
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": "mnguard_report_duration_seconds", "/": "mnguardctl"} {
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
