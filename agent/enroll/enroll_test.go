package enroll

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func TestEnrollRefusesBadInput(t *testing.T) {
	pin := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no token", Options{Server: "h:1", CAPin: pin}, "--token missing"},
		{"bad pin", Options{Server: "h:1", Token: "mne_x", CAPin: "md5:00"}, "--ca-pin"},
		{"no port", Options{Server: "collector", Token: "mne_x", CAPin: pin}, "not HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.StateDir = state.Dir(t.TempDir())
			_, err := Enroll(context.Background(), tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if tt.o.StateDir.Enrolled() {
				t.Error("a refused enrollment wrote enrollment.json")
			}
		})
	}
}

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t *testing.T) testCA {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key}
}

func (c testCA) issue(t *testing.T, pub crypto.PublicKey, cn string, eku x509.ExtKeyUsage) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestIdentityFromRefusesBadAnswers: a collector's answer is checked before
// anything is stored.
func TestIdentityFromRefusesBadAnswers(t *testing.T) {
	ca, stranger := newCA(t), newCA(t)
	key, _ := pki.NewKey()
	otherKey, _ := pki.NewKey()
	exemption, _, _ := ed25519.GenerateKey(rand.Reader)
	const id = "3f1c2a9e-0000-4000-8000-000000000001"
	good := func() *mnguardv1.EnrollResponse {
		return &mnguardv1.EnrollResponse{
			TerminalId: id, CertificateDer: ca.issue(t, key.Public(), id, x509.ExtKeyUsageClientAuth),
			CaCertificateDer: ca.cert.Raw, ExemptionPublicKey: exemption, OfflineKey: make([]byte, 32),
		}
	}
	o := Options{Server: "127.0.0.1:1", Now: time.Now, StateDir: state.Dir(filepath.Join(t.TempDir(), "s"))}
	if _, err := identityFrom(good(), key, pki.Pin(ca.cert.Raw), o); err != nil {
		t.Fatalf("good answer refused: %v", err)
	}
	tests := []struct {
		name string
		mut  func(r *mnguardv1.EnrollResponse)
		want string
	}{
		{"another CA", func(r *mnguardv1.EnrollResponse) { r.CaCertificateDer = stranger.cert.Raw }, "not the pinned"},
		{"certificate from another CA", func(r *mnguardv1.EnrollResponse) {
			r.CertificateDer = stranger.issue(t, key.Public(), id, x509.ExtKeyUsageClientAuth)
		}, "certificate"},
		{"certificate for another key", func(r *mnguardv1.EnrollResponse) {
			r.CertificateDer = ca.issue(t, otherKey.Public(), id, x509.ExtKeyUsageClientAuth)
		}, "not for our key"},
		{"server certificate", func(r *mnguardv1.EnrollResponse) {
			r.CertificateDer = ca.issue(t, key.Public(), id, x509.ExtKeyUsageServerAuth)
		}, "certificate"},
		{"names another terminal", func(r *mnguardv1.EnrollResponse) { r.TerminalId = "other" }, "names"},
		{"bad exemption key", func(r *mnguardv1.EnrollResponse) { r.ExemptionPublicKey = []byte{1} }, "Ed25519"},
		{"short offline key", func(r *mnguardv1.EnrollResponse) { r.OfflineKey = []byte{1} }, "offline key"},
		{"garbage CA", func(r *mnguardv1.EnrollResponse) { r.CaCertificateDer = []byte("x") }, "CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.mut(r)
			_, err := identityFrom(r, key, pki.Pin(ca.cert.Raw), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
