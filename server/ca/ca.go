package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// File names of the CA in its directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// Properties of a CA created by [LoadOrCreate].
const (
	caCommonName   = "mnguard collector CA"
	caOrganization = "mnguard"
	caValidity     = 10 * 365 * 24 * time.Hour
	// backdate covers agents whose clocks run a little behind the server's.
	backdate = 5 * time.Minute
)

// CA is a loaded certificate authority. It is immutable but for a counter,
// and safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pin  string
	// requests counts the certificate requests SignClient was given.
	requests atomic.Uint64
}

// LoadOrCreate loads the CA from dir/ca.crt and dir/ca.key or, when both are
// absent, creates a new ECDSA P-256 CA valid for ten years from now and
// writes it there (the key with mode 0600). The bool reports whether the CA
// was created. It refuses a directory holding only one of the two files, a
// key readable by group or others (on Unix), a key that does not match the
// certificate, and a certificate that is not a CA or not valid at now.
func LoadOrCreate(dir string, now time.Time) (*CA, bool, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certExists, err := exists(certPath)
	if err != nil {
		return nil, false, fmt.Errorf("ca: load: %w", err)
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, false, fmt.Errorf("ca: load: %w", err)
	}
	switch {
	case certExists && keyExists:
		c, err := load(certPath, keyPath, now)
		if err != nil {
			return nil, false, fmt.Errorf("ca: load: %w", err)
		}
		return c, false, nil
	case certExists:
		return nil, false, fmt.Errorf("ca: load: %s exists but %s is missing; restore the key, or remove the certificate to create a new CA (enrolled agents will then need re-enrollment)", certPath, keyPath)
	case keyExists:
		return nil, false, fmt.Errorf("ca: load: %s exists but %s is missing; restore the certificate, or remove the key to create a new CA (enrolled agents will then need re-enrollment)", keyPath, certPath)
	}
	c, err := create(dir, now)
	if err != nil {
		return nil, false, fmt.Errorf("ca: create in %s: %w", dir, err)
	}
	return c, true, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

func load(certPath, keyPath string, now time.Time) (*CA, error) {
	if err := pki.CheckPrivateFileMode(keyPath); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	c, err := parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certPath, keyPath, err)
	}
	if now.Before(c.cert.NotBefore) {
		return nil, fmt.Errorf("%s: CA certificate is not valid before %s (is the clock right?)", certPath, c.cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.cert.NotAfter) {
		return nil, fmt.Errorf("%s: CA certificate expired at %s", certPath, c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// parse checks that certPEM is a CA certificate and keyPEM its key.
func parse(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA (basic constraints CA:true missing)", cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %q does not allow certificate signing (key usage)", cert.Subject.CommonName)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if err := pki.CheckKeyPair(cert, key); err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, pin: pki.Pin(cert.Raw)}, nil
}

func create(dir string, now time.Time) (*CA, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName, Organization: []string{caOrganization}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := write(dir, pki.CertPEM(der), keyPEM); err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, pin: pki.Pin(der)}, nil
}

// write stores the CA in dir, the key first: a crash in between leaves a
// lone key, which LoadOrCreate reports rather than silently replacing.
func write(dir string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(dir, CertFile), certPEM, 0o644)
}

// Import stores an operator's own CA in dir: certPEM must hold a CA
// certificate (the first CERTIFICATE block is used) that is currently
// valid, and keyPEM its unencrypted private key (PKCS#8, SEC 1 or PKCS#1).
// Import refuses to replace an existing CA: its error then wraps
// fs.ErrExist, and the operator must remove ca.crt and ca.key first, knowing
// that every enrolled agent will need re-enrollment.
func Import(dir string, certPEM, keyPEM []byte) error {
	c, err := parse(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("ca: import: %w", err)
	}
	now := time.Now()
	if now.Before(c.cert.NotBefore) || now.After(c.cert.NotAfter) {
		return fmt.Errorf("ca: import: CA certificate %q is only valid from %s to %s", c.cert.Subject.CommonName,
			c.cert.NotBefore.UTC().Format(time.RFC3339), c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, name := range []string{CertFile, KeyFile} {
		path := filepath.Join(dir, name)
		ok, err := exists(path)
		if err != nil {
			return fmt.Errorf("ca: import: %w", err)
		}
		if ok {
			return fmt.Errorf("ca: import: %s: %w; remove the existing CA first (enrolled agents will need re-enrollment)", path, fs.ErrExist)
		}
	}
	keyOut, err := pki.MarshalKeyPEM(c.key)
	if err != nil {
		return fmt.Errorf("ca: import: %w", err)
	}
	if err := write(dir, pki.CertPEM(c.cert.Raw), keyOut); err != nil {
		return fmt.Errorf("ca: import: %w", err)
	}
	return nil
}

// Pin returns the CA's pin, "sha256:" and the hex SHA-256 of its
// certificate, which operators give agents at enrollment.
func (c *CA) Pin() string { return c.pin }

// CertDER returns a copy of the CA certificate in DER.
func (c *CA) CertDER() []byte { return bytes.Clone(c.cert.Raw) }

// CertPEM returns the CA certificate in PEM.
func (c *CA) CertPEM() []byte { return pki.CertPEM(c.cert.Raw) }

// Cert returns the CA certificate. Callers must not modify it.
func (c *CA) Cert() *x509.Certificate { return c.cert }

// Pool returns a new pool holding only the CA certificate, for verifying
// agent certificates (tls.Config.ClientCAs).
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// serialLimit bounds serial numbers to 128 bits.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// SerialHex returns the serial number of cert in lowercase hex, the key of
// a certificate in the store. It returns "" for a nil certificate.
func SerialHex(cert *x509.Certificate) string {
	if cert == nil || cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}
