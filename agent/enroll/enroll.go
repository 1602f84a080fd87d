// Package enroll enrolls the agent with a collector: it pins the collector's
// CA, trades an enrollment token and a CSR for a client certificate, and
// stores the identity in the state directory.
package enroll

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Options say where and how to enroll.
type Options struct {
	Server   string // HOST:PORT
	Token    string
	CAPin    string // sha256:HEX
	StateDir state.Dir
	Host     *mnguardv1.HostFacts
	// Force replaces an existing enrollment (after a revocation).
	Force bool
	Now   func() time.Time
}

// Enroll enrolls and returns the stored identity.
func Enroll(ctx context.Context, o Options) (*state.Identity, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Token == "" {
		return nil, errors.New("enroll: --token missing")
	}
	pin, err := pki.ParsePin(o.CAPin)
	if err != nil {
		return nil, fmt.Errorf("enroll: --ca-pin: %w", err)
	}
	host, _, err := net.SplitHostPort(o.Server)
	if err != nil || host == "" {
		return nil, fmt.Errorf("enroll: --server %q is not HOST:PORT", o.Server)
	}
	if o.StateDir.Enrolled() && !o.Force {
		return nil, fmt.Errorf("enroll: %s already holds an enrollment; use --force to replace it", o.StateDir)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	csr, err := pki.NewCSR(key, o.Host.GetHostname())
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	tlsCfg, err := pki.PinnedTLSConfig(pin, host, nil)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	conn, err := grpc.NewClient(o.Server, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := mnguardv1.NewAgentServiceClient(conn).Enroll(ctx, &mnguardv1.EnrollRequest{Token: o.Token, CsrDer: csr, Host: o.Host})
	if err != nil {
		return nil, fmt.Errorf("enroll with %s: %s", o.Server, status.Convert(err).Message())
	}
	id, err := identityFrom(resp, key, pin, o)
	if err != nil {
		return nil, fmt.Errorf("enroll: collector's answer refused: %w", err)
	}
	if err := o.StateDir.SaveIdentity(id); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return id, nil
}

// identityFrom checks the collector's answer: the CA is the pinned one, the
// certificate is ours, chains to it and names the terminal.
func identityFrom(resp *mnguardv1.EnrollResponse, key crypto.Signer, pin string, o Options) (*state.Identity, error) {
	caCert, err := x509.ParseCertificate(resp.GetCaCertificateDer())
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if got := pki.Pin(caCert.Raw); got != pin {
		return nil, fmt.Errorf("CA certificate is %s, not the pinned %s", got, pin)
	}
	cert, err := x509.ParseCertificate(resp.GetCertificateDer())
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: o.Now()}); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if cert.Subject.CommonName != resp.GetTerminalId() || resp.GetTerminalId() == "" {
		return nil, fmt.Errorf("certificate names %q, answer names terminal %q", cert.Subject.CommonName, resp.GetTerminalId())
	}
	if len(resp.GetExemptionPublicKey()) != ed25519.PublicKeySize {
		return nil, errors.New("exemption key is not an Ed25519 public key")
	}
	if len(resp.GetOfflineKey()) < 16 {
		return nil, errors.New("offline key shorter than 128 bits")
	}
	if err := pki.CheckKeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("certificate is not for our key: %w", err)
	}
	return &state.Identity{
		Enrollment: state.Enrollment{TerminalID: resp.GetTerminalId(), Server: o.Server, CAPin: pin, EnrolledAt: o.Now().UTC()},
		Key:        key, Cert: cert, CA: caCert, ExemptionKey: resp.GetExemptionPublicKey(), OfflineKey: resp.GetOfflineKey(),
	}, nil
}
