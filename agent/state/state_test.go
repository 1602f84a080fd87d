package state

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// testIdentity makes an identity like enrollment's: a CA (made here; the
// agent must not import the collector's) signs a certificate for a fresh key.
func testIdentity(t *testing.T) *Identity {
	t.Helper()
	now := time.Now()
	caKey, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	const id = "3f1c2a9e-0000-4000-8000-000000000001"
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: id},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	return &Identity{
		Enrollment: Enrollment{TerminalID: id, Server: "127.0.0.1:8443", CAPin: pki.Pin(caDER), EnrolledAt: now.UTC()},
		Key:        key, Cert: cert, CA: caCert, ExemptionKey: pub, OfflineKey: make([]byte, 32),
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	d := Dir(filepath.Join(t.TempDir(), "state"))
	if d.Enrolled() {
		t.Fatal("empty directory counts as enrolled")
	}
	if _, err := d.LoadIdentity(); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("LoadIdentity on empty dir: %v, want ErrNotEnrolled", err)
	}
	id := testIdentity(t)
	if err := d.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		for _, f := range []string{KeyFile, CertFile, OfflineKeyFile, EnrollmentFile} {
			fi, err := os.Stat(d.Path(f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
			}
		}
	}
	got, err := d.LoadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if got.TerminalID != id.TerminalID || !got.Cert.Equal(id.Cert) || !got.CA.Equal(id.CA) || !got.EnrolledAt.Equal(id.EnrolledAt) {
		t.Errorf("loaded %+v, saved %+v", got.Enrollment, id.Enrollment)
	}
	if c := got.TLSCertificate(); c.Leaf != got.Cert || len(c.Certificate) != 1 {
		t.Errorf("TLSCertificate = %+v", c)
	}
}

func TestLoadIdentityRefusesDamage(t *testing.T) {
	other := testIdentity(t)
	tests := []struct {
		name  string
		spoil func(t *testing.T, d Dir)
		want  string
	}{
		{"damaged enrollment.json", func(t *testing.T, d Dir) { write(t, d, EnrollmentFile, []byte("{")) }, "damaged"},
		{"certificate of another key", func(t *testing.T, d Dir) { write(t, d, CertFile, pki.CertPEM(other.Cert.Raw)) }, "does not match"},
		{"CA that is not the pinned one", func(t *testing.T, d Dir) { write(t, d, CAFile, pki.CertPEM(other.CA.Raw)) }, "pinned CA"},
		{"short exemption key", func(t *testing.T, d Dir) { write(t, d, ExemptionFile, []byte("short")) }, "Ed25519"},
		{"missing key", func(t *testing.T, d Dir) { os.Remove(d.Path(KeyFile)) }, KeyFile},
		{"garbage certificate", func(t *testing.T, d Dir) { write(t, d, CertFile, []byte("not PEM")) }, CertFile},
	}
	if runtime.GOOS != "windows" {
		tests = append(tests, struct {
			name  string
			spoil func(t *testing.T, d Dir)
			want  string
		}{"key readable by others", func(t *testing.T, d Dir) { os.Chmod(d.Path(KeyFile), 0o644) }, KeyFile})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Dir(t.TempDir())
			if err := d.SaveIdentity(testIdentity(t)); err != nil {
				t.Fatal(err)
			}
			tt.spoil(t, d)
			_, err := d.LoadIdentity()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func write(t *testing.T, d Dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(d.Path(name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSaveCertificate(t *testing.T) {
	d := Dir(t.TempDir())
	id := testIdentity(t)
	if err := d.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
	// A renewal keeps the key: the same key's certificate, newly issued.
	renewed := *id.Cert
	if err := d.SaveCertificate(&renewed); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LoadIdentity(); err != nil {
		t.Fatal(err)
	}
}

func TestStatus(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.ReadStatus(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadStatus before any write: %v", err)
	}
	want := Status{PID: 42, StartedAt: time.Now().UTC().Truncate(time.Second), Connected: true, PendingEvents: 3, LastError: "x"}
	if err := d.WriteStatus(want); err != nil {
		t.Fatal(err)
	}
	got, err := d.ReadStatus()
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != want.PID || !got.StartedAt.Equal(want.StartedAt) || !got.Connected || got.PendingEvents != 3 || got.LastError != "x" {
		t.Errorf("status = %+v, want %+v", got, want)
	}
	if got.Network != nil {
		t.Errorf("network = %+v before any scan, want none", got.Network)
	}
	want.Network = &NetworkStatus{
		PolicyVersion: "n-1a2b3c4d", EnforceRequested: true, EnforceDetail: "nftables unavailable", Findings: 2,
		FirstFindings: []NetworkFinding{{Kind: "socket", Detail: "tcp 198.51.100.2:4000 → 203.0.113.1:80 established", Process: "curl", PID: 7, User: "alice"}},
	}
	if err := d.WriteStatus(want); err != nil {
		t.Fatal(err)
	}
	if got, err = d.ReadStatus(); err != nil {
		t.Fatal(err)
	}
	if n := got.Network; n == nil || n.PolicyVersion != "n-1a2b3c4d" || !n.EnforceRequested || n.EnforceInPlace || n.Findings != 2 ||
		len(n.FirstFindings) != 1 || n.FirstFindings[0] != want.Network.FirstFindings[0] {
		t.Errorf("network = %+v, want %+v", got.Network, want.Network)
	}
	write(t, d, StatusFile, []byte("nope"))
	if _, err := d.ReadStatus(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged status: %v", err)
	}
}
