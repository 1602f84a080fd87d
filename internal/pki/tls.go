package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// PinMismatchError is returned by the handshake of a [PinnedTLSConfig] when
// the server's CA is not the pinned one.
type PinMismatchError struct {
	Got  string // pin of the CA the server sent, or of its leaf if it sent no CA
	Want string // the expected pin
	NoCA bool   // the server sent no CA certificate at all
}

func (e *PinMismatchError) Error() string {
	if e.NoCA {
		return fmt.Sprintf("server sent no CA certificate with its own (%s), expected CA pin %s (not an mnguard collector?)", e.Got, e.Want)
	}
	return fmt.Sprintf("server CA is %s, expected pin %s (wrong --ca-pin, or not an mnguard collector)", e.Got, e.Want)
}

// PinnedTLSConfig returns a TLS 1.3 client configuration that trusts only the
// CA whose fingerprint is pin (see [Pin]). Such a configuration is used to
// enroll, before the agent has the CA certificate.
//
// The server must send its CA certificate after its leaf. The handshake
// fails unless one of the certificates sent is the pinned one, it is a CA,
// and the leaf chains to it, names the server and allows server
// authentication.
//
// serverName is the host the leaf must name, without port. It may be empty
// when dialing a host name through grpc or [tls.Dial], which set it from the
// target; it must be given when dialing an IP address, since TLS does not
// send IP addresses as SNI and the verifier has no other way to learn it.
//
// cert, when not nil, is called at each handshake for the client
// certificate, so renewed certificates are used without a new configuration.
func PinnedTLSConfig(pin string, serverName string, cert func() (*tls.Certificate, error)) (*tls.Config, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(serverName); err == nil {
		return nil, fmt.Errorf("pinned TLS config: server name %q includes a port", serverName)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Verification is done by VerifyConnection against the pinned CA
		// only; the system roots are never consulted.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			name := cs.ServerName
			if name == "" {
				name = serverName
			}
			return verifyPinned(cs.PeerCertificates, want, name)
		},
		GetClientCertificate: clientCertFunc(cert),
	}
	return cfg, nil
}

func verifyPinned(certs []*x509.Certificate, want, name string) error {
	if len(certs) == 0 {
		return errors.New("server sent no certificate")
	}
	if name == "" {
		return errors.New("verify server certificate: no server name to check it against (dialing an IP address needs an explicit server name)")
	}
	leaf := certs[0]
	var (
		ca            *x509.Certificate
		lastCA        *x509.Certificate
		intermediates = x509.NewCertPool()
	)
	for _, c := range certs[1:] {
		if c.BasicConstraintsValid && c.IsCA {
			lastCA = c
		}
		if ca == nil && Pin(c.Raw) == want {
			ca = c
			continue
		}
		intermediates.AddCert(c)
	}
	if ca == nil {
		if Pin(leaf.Raw) == want {
			return fmt.Errorf("verify server certificate: server presented the pinned CA certificate %s as its own certificate", want)
		}
		if lastCA == nil {
			return &PinMismatchError{Got: Pin(leaf.Raw), Want: want, NoCA: true}
		}
		return &PinMismatchError{Got: Pin(lastCA.Raw), Want: want}
	}
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return fmt.Errorf("verify server certificate: pinned certificate %s (%q) is not a CA", want, ca.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		DNSName:       name,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify server certificate against pinned CA %s: %w", want, err)
	}
	return nil
}

// CATLSConfig returns a TLS 1.3 client configuration that trusts exactly the
// CA certificate caDER. The agent uses it once enrolled, with the CA it
// stored. The server name is set by grpc from the target, or by the caller.
// cert is used as in [PinnedTLSConfig].
func CATLSConfig(caDER []byte, cert func() (*tls.Certificate, error)) (*tls.Config, error) {
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("CA TLS config: %w", err)
	}
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, fmt.Errorf("CA TLS config: certificate %q is not a CA", ca.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              roots,
		GetClientCertificate: clientCertFunc(cert),
	}, nil
}

func clientCertFunc(cert func() (*tls.Certificate, error)) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert == nil {
		return nil
	}
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := cert()
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		if c == nil {
			// No certificate yet: send none and let the server decide.
			return &tls.Certificate{}, nil
		}
		return c, nil
	}
}
