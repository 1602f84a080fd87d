package collector

import (
	"bytes"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/server/ca"
)

// minMetricsTokenLen is the shortest bearer token --metrics-token-file may
// hold: it guards the collector's activity figures, so it must not be
// guessable.
const minMetricsTokenLen = 16

// LoadMetricsToken reads the bearer token of /metrics from path: one line,
// at least 16 printable ASCII characters without spaces, in a file that
// only its owner may read.
func LoadMetricsToken(path string) ([]byte, error) {
	if err := pki.CheckPrivateFileMode(path); err != nil {
		return nil, fmt.Errorf("metrics token file: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("metrics token file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < minMetricsTokenLen {
		return nil, fmt.Errorf("metrics token file %s: the token has %d characters, at least %d needed", path, len(tok), minMetricsTokenLen)
	}
	for _, c := range tok {
		if c <= ' ' || c > '~' {
			return nil, fmt.Errorf("metrics token file %s: the token must be one line of printable ASCII without spaces", path)
		}
	}
	return tok, nil
}

// metricsGuard lets a scraper read /metrics when it presents the bearer
// token (if one is configured) or a metrics client certificate from the
// collector's CA (see [ca.CA.MetricsClientCertificate]). Anyone else gets
// 401: the figures show login and enrollment activity.
type metricsGuard struct {
	token []byte // nil: no token accepted
	ca    *x509.CertPool
	now   func() time.Time
	next  http.Handler
}

func (g *metricsGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.allowed(r) {
		g.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="mnguard metrics"`)
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "metrics need the bearer token of --metrics-token-file or a metrics client certificate from the collector's CA ('mnguard-server metrics-cert')", http.StatusUnauthorized)
}

func (g *metricsGuard) allowed(r *http.Request) bool {
	if g.token != nil {
		if h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			// Constant time in the token's content; its length is no secret.
			if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(h)), g.token) == 1 {
				return true
			}
		}
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	leaf := r.TLS.PeerCertificates[0]
	if leaf.Subject.CommonName != ca.MetricsCommonName {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: g.ca, Intermediates: inter, CurrentTime: g.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// WriteMetricsCert issues a metrics client certificate from the CA in
// dataDir (which must exist: it is not created here) and writes
// metrics.crt, metrics.key (0600) and the CA's ca.crt, for the scraper to
// verify the collector, into outDir. It returns the paths written.
func WriteMetricsCert(dataDir, outDir string, now time.Time, validity time.Duration) ([]string, error) {
	if _, err := os.Stat(filepath.Join(dataDir, ca.CertFile)); err != nil {
		return nil, fmt.Errorf("metrics certificate: no CA in %s (run 'mnguard-server init' first): %w", dataDir, err)
	}
	authority, _, err := ca.LoadOrCreate(dataDir, now)
	if err != nil {
		return nil, err
	}
	cert, err := authority.MetricsClientCertificate(now, validity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKeyPEM(cert.PrivateKey.(crypto.Signer))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, fmt.Errorf("metrics certificate: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"metrics.key", keyPEM, 0o600},
		{"metrics.crt", pki.CertPEM(cert.Certificate[0]), 0o644},
		{"ca.crt", authority.CertPEM(), 0o644},
	}
	var paths []string
	for _, f := range files {
		path := filepath.Join(outDir, f.name)
		if err := pki.WriteFileAtomic(path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("metrics certificate: %w", err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}
