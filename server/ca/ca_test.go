package ca

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

var t0 = time.Now().Truncate(time.Second)

func newCA(t *testing.T) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	c, created, err := LoadOrCreate(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("LoadOrCreate on an empty directory did not create a CA")
	}
	return c, dir
}

func TestLoadOrCreate(t *testing.T) {
	c, dir := newCA(t)

	cert := c.Cert()
	if cert.Subject.CommonName != "mnguard collector CA" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "mnguard" {
		t.Errorf("subject %s", cert.Subject)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.MaxPathLen != 0 || !cert.MaxPathLenZero {
		t.Errorf("basic constraints: CA %v valid %v maxPathLen %d zero %v", cert.IsCA, cert.BasicConstraintsValid, cert.MaxPathLen, cert.MaxPathLenZero)
	}
	if cert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", cert.KeyUsage)
	}
	if cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v", cert.PublicKeyAlgorithm)
	}
	if years := cert.NotAfter.Sub(t0).Hours() / 24 / 365; years < 9.99 || years > 10.01 {
		t.Errorf("validity %.2f years", years)
	}
	if len(cert.SubjectKeyId) == 0 {
		t.Error("no subject key ID")
	}
	if c.Pin() != pki.Pin(c.CertDER()) || !strings.HasPrefix(c.Pin(), "sha256:") {
		t.Errorf("pin %s", c.Pin())
	}
	if got, err := pki.ParseCertPEM(c.CertPEM()); err != nil || !got.Equal(cert) {
		t.Errorf("CertPEM: %v", err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(filepath.Join(dir, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("key mode %04o", fi.Mode().Perm())
		}
	}

	again, created, err := LoadOrCreate(dir, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("reopening created a new CA")
	}
	if again.Pin() != c.Pin() {
		t.Errorf("reopened pin %s, want %s", again.Pin(), c.Pin())
	}

	if _, _, err := LoadOrCreate(dir, cert.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired CA: %v", err)
	}
}

func TestLoadOrCreatePartial(t *testing.T) {
	for _, keep := range []string{CertFile, KeyFile} {
		t.Run(keep, func(t *testing.T) {
			_, dir := newCA(t)
			for _, f := range []string{CertFile, KeyFile} {
				if f != keep {
					os.Remove(filepath.Join(dir, f))
				}
			}
			_, _, err := LoadOrCreate(dir, t0)
			if err == nil {
				t.Fatal("loaded a CA with a file missing")
			}
			for _, f := range []string{CertFile, KeyFile} {
				if !strings.Contains(err.Error(), filepath.Join(dir, f)) {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
}

func TestLoadOrCreateKeyMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not used on Windows")
	}
	_, dir := newCA(t)
	keyPath := filepath.Join(dir, KeyFile)
	if err := os.Chmod(keyPath, 0o640); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreate(dir, t0)
	if err == nil || !strings.Contains(err.Error(), keyPath) || !strings.Contains(err.Error(), "0640") {
		t.Errorf("group-readable key: err = %v", err)
	}
}

func TestLoadOrCreateMismatch(t *testing.T) {
	_, dir := newCA(t)
	_, other := newCA(t)
	data, err := os.ReadFile(filepath.Join(other, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, KeyFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(dir, t0); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: err = %v", err)
	}
}

func TestImport(t *testing.T) {
	src, srcDir := newCA(t)
	certPEM, err := os.ReadFile(filepath.Join(srcDir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(srcDir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "byo")
	if err := Import(dir, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	c, created, err := LoadOrCreate(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if created || c.Pin() != src.Pin() {
		t.Errorf("imported CA: created %v, pin %s, want %s", created, c.Pin(), src.Pin())
	}
	if err := Import(dir, certPEM, keyPEM); !errors.Is(err, fs.ErrExist) {
		t.Errorf("import over an existing CA: %v", err)
	}

	_, otherDir := newCA(t)
	otherKey, _ := os.ReadFile(filepath.Join(otherDir, KeyFile))
	if err := Import(t.TempDir(), certPEM, otherKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v", err)
	}

	// A leaf certificate is not a CA.
	leafKey, _ := pki.NewKey()
	csr, _ := pki.NewCSR(leafKey, "x")
	leaf, err := src.SignClient(csr, "t1", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leafKeyPEM, _ := pki.MarshalKeyPEM(leafKey)
	if err := Import(t.TempDir(), pki.CertPEM(leaf.Raw), leafKeyPEM); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf as CA: %v", err)
	}

	// An expired CA.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}
	oldDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, leafKey.Public(), leafKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := Import(t.TempDir(), pki.CertPEM(oldDER), leafKeyPEM); err == nil || !strings.Contains(err.Error(), "only valid") {
		t.Errorf("expired CA: %v", err)
	}

	// An RSA CA of one's own is fine.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	rsaDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rsaKey.Public(), rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeyPEM, _ := pki.MarshalKeyPEM(rsaKey)
	if err := Import(t.TempDir(), pki.CertPEM(rsaDER), rsaKeyPEM); err != nil {
		t.Errorf("RSA CA: %v", err)
	}
}

func TestPoolAndCertDERAreCopies(t *testing.T) {
	c, _ := newCA(t)
	der := c.CertDER()
	der[0] ^= 0xff
	if bytes.Equal(der, c.CertDER()) {
		t.Error("CertDER returned the CA's own slice")
	}
	if !c.Pool().Equal(c.Pool()) {
		t.Error("pools differ")
	}
}
