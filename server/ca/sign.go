package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// MaxTerminalIDLen is the longest terminal ID: the upper bound of an X.509
// common name.
const MaxTerminalIDLen = 64

// CheckTerminalID reports whether id can name a terminal in a certificate:
// 1 to 64 characters among ASCII letters, digits, '.', '_', ':' and '-'.
func CheckTerminalID(id string) error {
	if id == "" {
		return errors.New("empty terminal ID")
	}
	if len(id) > MaxTerminalIDLen {
		return fmt.Errorf("terminal ID is %d characters long, at most %d allowed", len(id), MaxTerminalIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("terminal ID %q: character %q not allowed (letters, digits, '.', '_', ':', '-')", id, c)
		}
	}
	return nil
}

// SignClient issues an agent certificate for the key in the DER certificate
// request csrDER. The subject is CN=terminalID whatever the request asks;
// the certificate allows client authentication only. The request must be
// self-signed by an ECDSA P-256 or Ed25519 key. notAfter is capped at the
// CA's own expiry.
func (c *CA) SignClient(csrDER []byte, terminalID string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	c.requests.Add(1)
	cert, err := c.signClient(csrDER, terminalID, notBefore, notAfter)
	if err != nil {
		return nil, fmt.Errorf("ca: sign client certificate: %w", err)
	}
	return cert, nil
}

// ClientRequests returns how many certificate requests SignClient has been
// given since the CA was loaded, signed or refused: the work an enrollment
// or renewal cost.
func (c *CA) ClientRequests() uint64 { return c.requests.Load() }

// MaxCSRBytes is the largest certificate request SignClient parses.
const MaxCSRBytes = 8 << 10

// ParseClientCSR parses and checks an agent's certificate request: DER of
// at most MaxCSRBytes, self-signed, by an ECDSA P-256 or Ed25519 key. The
// subject it asks for is ignored (SignClient sets it).
func ParseClientCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	if len(csrDER) == 0 {
		return nil, errors.New("empty CSR")
	}
	if len(csrDER) > MaxCSRBytes {
		return nil, fmt.Errorf("CSR of %d bytes, at most %d", len(csrDER), MaxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	// The key type first: it decides which signature check runs.
	if err := checkAgentKey(csr); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	return csr, nil
}

func (c *CA) signClient(csrDER []byte, terminalID string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if err := CheckTerminalID(terminalID); err != nil {
		return nil, err
	}
	csr, err := ParseClientCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	if !notBefore.Before(notAfter) {
		return nil, fmt.Errorf("validity from %s to %s is empty", notBefore.UTC().Format(time.RFC3339), notAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: terminalID},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		AuthorityKeyId:        c.cert.SubjectKeyId,
	}
	return c.issue(tmpl, csr.PublicKey)
}

// checkAgentKey accepts the key types agents may use.
func checkAgentKey(csr *x509.CertificateRequest) error {
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return fmt.Errorf("CSR key is ECDSA %s; only P-256 and Ed25519 are accepted", pub.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("CSR key is %s; only ECDSA P-256 and Ed25519 are accepted", csr.PublicKeyAlgorithm)
	}
}

func (c *CA) issue(tmpl *x509.Certificate, pub any) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// MetricsCommonName is the subject of the client certificates that may read
// the collector's /metrics. No terminal can have it: terminal IDs have no
// spaces.
const MetricsCommonName = "mnguard metrics"

// MetricsClientCertificate issues a client certificate for a metrics
// scraper (CN=[MetricsCommonName], client authentication only) with a fresh
// P-256 key, valid from now for validity (capped at the CA's expiry).
func (c *CA) MetricsClientCertificate(now time.Time, validity time.Duration) (tls.Certificate, error) {
	if validity <= 0 {
		return tls.Certificate{}, fmt.Errorf("ca: issue metrics certificate: validity %s is not positive", validity)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	key, err := pki.NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := c.issue(&x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: MetricsCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		AuthorityKeyId:        c.cert.SubjectKeyId,
	}, key.Public())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: issue metrics certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, c.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerCertificate issues the collector's TLS certificate for names (host
// names or IP addresses) with a fresh P-256 key, valid from now for
// validity (capped at the CA's expiry). The chain is [leaf, CA], as
// [pki.PinnedTLSConfig] expects.
func (c *CA) ServerCertificate(names []string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	cert, err := c.serverCertificate(names, now, validity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: issue server certificate: %w", err)
	}
	return cert, nil
}

func (c *CA) serverCertificate(names []string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if len(names) == 0 {
		return tls.Certificate{}, errors.New("no server names")
	}
	if validity <= 0 {
		return tls.Certificate{}, fmt.Errorf("validity %s is not positive", validity)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		AuthorityKeyId:        c.cert.SubjectKeyId,
	}
	for _, name := range names {
		host := strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
		if ip := net.ParseIP(host); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if name == "" || strings.ContainsAny(name, " \t\r\n/:[]") {
			return tls.Certificate{}, fmt.Errorf("invalid server name %q", name)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	tmpl.Subject = pkix.Name{CommonName: names[0]}
	key, err := pki.NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := c.issue(tmpl, key.Public())
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, c.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}
