package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

func csrFor(t *testing.T, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := pki.NewCSR(key, cn)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignClient(t *testing.T) {
	c, _ := newCA(t)
	ec, _ := pki.NewKey()
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// Change the signed subject after signing.
	tampered := csrFor(t, ec, "terminal")
	i := bytes.Index(tampered, []byte("terminal"))
	tampered[i] = 'T'

	nb, na := t0.Add(-time.Minute), t0.Add(30*24*time.Hour)
	tests := []struct {
		name    string
		csr     []byte
		id      string
		wantErr string
	}{
		{name: "ecdsa", csr: csrFor(t, ec, "asks for admin"), id: "0b7e1a4c-3f2d-4a8e-9c1b-5d6e7f8a9b0c"},
		{name: "ed25519", csr: csrFor(t, ed, ""), id: "host-42.example"},
		{name: "rsa refused", csr: csrFor(t, rsaKey, "t"), id: "t1", wantErr: "CSR key is RSA; only ECDSA P-256 and Ed25519"},
		{name: "P-384 refused", csr: csrFor(t, p384, "t"), id: "t1", wantErr: "ECDSA P-384"},
		{name: "tampered", csr: tampered, id: "t1", wantErr: "CSR signature"},
		{name: "garbage", csr: []byte("garbage"), id: "t1", wantErr: "parse CSR"},
		{name: "empty ID", csr: csrFor(t, ec, "t"), id: "", wantErr: "empty terminal ID"},
		{name: "ID with space", csr: csrFor(t, ec, "t"), id: "a b", wantErr: "not allowed"},
		{name: "ID with slash", csr: csrFor(t, ec, "t"), id: "a/b", wantErr: "not allowed"},
		{name: "long ID", csr: csrFor(t, ec, "t"), id: strings.Repeat("a", 65), wantErr: "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := c.SignClient(tt.csr, tt.id, nb, na)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "ca: sign client certificate: ") {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != tt.id || len(cert.Subject.Organization) != 0 {
				t.Errorf("subject %s, want CN=%s", cert.Subject, tt.id)
			}
			if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ext key usage %v", cert.ExtKeyUsage)
			}
			if cert.KeyUsage != x509.KeyUsageDigitalSignature || cert.IsCA {
				t.Errorf("key usage %v, CA %v", cert.KeyUsage, cert.IsCA)
			}
			if !cert.NotBefore.Equal(nb) || !cert.NotAfter.Equal(na) {
				t.Errorf("validity %v – %v", cert.NotBefore, cert.NotAfter)
			}
			if string(cert.AuthorityKeyId) != string(c.Cert().SubjectKeyId) {
				t.Error("authority key ID is not the CA's subject key ID")
			}
			if bits := cert.SerialNumber.BitLen(); bits < 100 || bits > 128 || cert.SerialNumber.Sign() <= 0 {
				t.Errorf("serial %s has %d bits", SerialHex(cert), bits)
			}
			if SerialHex(cert) != strings.ToLower(cert.SerialNumber.Text(16)) {
				t.Errorf("SerialHex %s", SerialHex(cert))
			}
			if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.URIs)+len(cert.EmailAddresses) != 0 {
				t.Error("SANs copied from the CSR")
			}
			_, err = cert.Verify(x509.VerifyOptions{
				Roots:       c.Pool(),
				CurrentTime: t0,
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil {
				t.Errorf("verify as client: %v", err)
			}
			_, err = cert.Verify(x509.VerifyOptions{
				Roots:       c.Pool(),
				CurrentTime: t0,
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err == nil {
				t.Error("client certificate verifies for server auth")
			}
		})
	}
}

func TestSignClientValidity(t *testing.T) {
	c, _ := newCA(t)
	key, _ := pki.NewKey()
	csr := csrFor(t, key, "t")
	cert, err := c.SignClient(csr, "t1", t0, c.Cert().NotAfter.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(c.Cert().NotAfter) {
		t.Errorf("NotAfter %v not capped at the CA's %v", cert.NotAfter, c.Cert().NotAfter)
	}
	if _, err := c.SignClient(csr, "t1", t0, t0); err == nil {
		t.Error("empty validity accepted")
	}
	a, _ := c.SignClient(csr, "t1", t0, t0.Add(time.Hour))
	b, _ := c.SignClient(csr, "t1", t0, t0.Add(time.Hour))
	if SerialHex(a) == SerialHex(b) {
		t.Error("two certificates with the same serial")
	}
	if SerialHex(nil) != "" {
		t.Error("SerialHex(nil) not empty")
	}
}

func TestServerCertificateTLS(t *testing.T) {
	c, _ := newCA(t)
	now := time.Now()
	srv, err := c.ServerCertificate([]string{"collector.test", "127.0.0.1", "[::1]"}, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Certificate) != 2 || string(srv.Certificate[1]) != string(c.CertDER()) || srv.Leaf == nil {
		t.Fatalf("chain of %d, Leaf set %v", len(srv.Certificate), srv.Leaf != nil)
	}
	if got := srv.Leaf.DNSNames; len(got) != 1 || got[0] != "collector.test" {
		t.Errorf("DNS names %v", got)
	}
	if got := srv.Leaf.IPAddresses; len(got) != 2 || !got[0].Equal(net.IPv4(127, 0, 0, 1)) || !got[1].Equal(net.IPv6loopback) {
		t.Errorf("IP addresses %v", got)
	}
	if eku := srv.Leaf.ExtKeyUsage; len(eku) != 1 || eku[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ext key usage %v", eku)
	}

	// Mutual TLS: the collector presents srv and requires agent
	// certificates from the CA; the agent pins the CA.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{srv},
		ClientCAs:    c.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			seen <- "handshake: " + err.Error()
			return
		}
		seen <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		io.WriteString(tc, "ok")
	}()

	agentKey, _ := pki.NewKey()
	agentCert, err := c.SignClient(csrFor(t, agentKey, ""), "terminal-7", now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.PinnedTLSConfig(c.Pin(), "127.0.0.1", func() (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: [][]byte{agentCert.Raw}, PrivateKey: agentKey, Leaf: agentCert}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	if got := <-seen; got != "terminal-7" {
		t.Errorf("collector saw %q", got)
	}
}

func TestServerCertificateErrors(t *testing.T) {
	c, _ := newCA(t)
	for name, names := range map[string][]string{
		"none":      nil,
		"empty":     {""},
		"with port": {"collector.test:8443"},
		"space":     {"a b"},
	} {
		if _, err := c.ServerCertificate(names, t0, time.Hour); err == nil {
			t.Errorf("%s: accepted %q", name, names)
		}
	}
	if _, err := c.ServerCertificate([]string{"x"}, t0, 0); err == nil {
		t.Error("zero validity accepted")
	}
}
