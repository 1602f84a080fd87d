package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// The baseline is the simpler peer the collector's cost per connection is
// measured against: grpc-go with mutual TLS (client certificates verified in
// the handshake against one CA) and the standard health service, nothing
// else. Its keepalive enforcement is the collector's, so the agents' 30 s
// pings are allowed on both.

// baselineCA is the baseline's own CA, kept in its data directory
// (ca.crt, ca.key): the load generator signs its terminals' certificates
// with it, since the baseline has no enrollment.
type baselineCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func loadOrCreateBaselineCA(dir string) (*baselineCA, error) {
	crtPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	crtPEM, errC := os.ReadFile(crtPath)
	keyPEM, errK := os.ReadFile(keyPath)
	if errC == nil && errK == nil {
		cert, err := pki.ParseCertPEM(crtPEM)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", crtPath, err)
		}
		key, err := pki.ParseKeyPEM(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		if err := pki.CheckKeyPair(cert, key); err != nil {
			return nil, fmt.Errorf("%s and %s do not match: %w", crtPath, keyPath, err)
		}
		return &baselineCA{cert: cert, key: key}, nil
	}
	if !errors.Is(errC, os.ErrNotExist) || !errors.Is(errK, os.ErrNotExist) {
		return nil, fmt.Errorf("baseline CA in %s: need both ca.crt and ca.key, or neither (%v; %v)", dir, errC, errK)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "mnguard-loadgen baseline CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	kp, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(keyPath, kp, 0o600); err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(crtPath, pki.CertPEM(der), 0o644); err != nil {
		return nil, err
	}
	return &baselineCA{cert: cert, key: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// issue signs a certificate for a new P-256 key: a server certificate for
// the IP addresses or names in hosts, or a client certificate when hosts is
// empty.
func (ca *baselineCA) issue(cn string, hosts []string) (*tls.Certificate, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(0, 1, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", cn, err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// runBaselineServer is 'mnguard-loadgen baseline-server'.
func runBaselineServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mnguard-loadgen baseline-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on, HOST:PORT")
	dir := fs.String("data-dir", "", "directory of the baseline's CA (ca.crt, ca.key; created when missing) (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return errors.New("--data-dir missing: where the baseline keeps its CA")
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen %q is not HOST:PORT", *listen)
	}
	raiseFileLimit()
	ca, err := loadOrCreateBaselineCA(*dir)
	if err != nil {
		return err
	}
	hosts := []string{"127.0.0.1", "localhost"}
	if host != "" && host != "127.0.0.1" && host != "localhost" {
		hosts = append(hosts, host)
	}
	srvCert, err := ca.issue("mnguard-loadgen baseline", hosts)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*srvCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "baseline listening on %s\n", l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}
