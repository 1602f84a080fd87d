package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// testCA is a throwaway CA for tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pin() string { return Pin(ca.cert.Raw) }

// issue returns a leaf for names with the given extended key usages, its
// chain being [leaf, ca].
func (ca *testCA) issue(t *testing.T, cn string, names []string, eku ...x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

var serverNames = []string{"collector.test", "localhost", "127.0.0.1"}

// serve runs a TLS 1.3 server on loopback presenting cert and returns its
// address. If clientCAs is not nil it requires a client certificate signed
// by it; the subject of the last one seen is sent on gotClient.
func serve(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool, gotClient chan<- string) string {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				if gotClient != nil {
					if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
						gotClient <- pc[0].Subject.CommonName
					}
				}
				io.WriteString(tc, "ok")
			}()
		}
	}()
	return ln.Addr().String()
}

// dial connects with cfg to addr, possibly under another host name, and
// reads the server's greeting.
func dial(t *testing.T, addr, host string, cfg *tls.Config) error {
	t.Helper()
	if host != "" {
		_, port, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(host, port)
	}
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ok" {
		t.Fatalf("read %q from server", buf)
	}
	return nil
}

func TestPinnedTLSConfig(t *testing.T) {
	ca := newTestCA(t, "mnguard collector CA")
	other := newTestCA(t, "other CA")
	good := ca.issue(t, "collector", serverNames, x509.ExtKeyUsageServerAuth)

	// A leaf from another CA, sent with our CA in its chain.
	foreign := other.issue(t, "collector", serverNames, x509.ExtKeyUsageServerAuth)
	foreign.Certificate[1] = ca.cert.Raw

	// Leaves that must not be accepted as servers.
	clientOnly := ca.issue(t, "collector", serverNames, x509.ExtKeyUsageClientAuth)
	leafOnly := ca.issue(t, "collector", serverNames, x509.ExtKeyUsageServerAuth)
	leafOnly.Certificate = leafOnly.Certificate[:1]

	tests := []struct {
		name       string
		cert       tls.Certificate
		pin        string
		serverName string // passed to PinnedTLSConfig
		dialHost   string // replaces 127.0.0.1 in the dialed address
		wantErr    []string
	}{
		{name: "right pin by IP", cert: good, pin: ca.pin(), serverName: "127.0.0.1"},
		{name: "right pin by name from dial", cert: good, pin: ca.pin(), dialHost: "localhost"},
		{name: "right pin with SNI name", cert: good, pin: ca.pin(), serverName: "collector.test"},
		{name: "pin in colon form", cert: good, pin: colonPin(ca.pin()), serverName: "127.0.0.1"},
		{
			name: "wrong pin", cert: good, pin: other.pin(), serverName: "127.0.0.1",
			wantErr: []string{"server CA is " + ca.pin(), "expected pin " + other.pin(), "wrong --ca-pin"},
		},
		{
			name: "leaf from another CA", cert: foreign, pin: ca.pin(), serverName: "127.0.0.1",
			wantErr: []string{"verify server certificate against pinned CA", "unknown authority"},
		},
		{
			name: "no ServerAuth", cert: clientOnly, pin: ca.pin(), serverName: "127.0.0.1",
			wantErr: []string{"incompatible key usage"},
		},
		{
			name: "wrong host name", cert: good, pin: ca.pin(), serverName: "evil.test",
			wantErr: []string{"evil.test"},
		},
		{
			name: "IP without server name", cert: good, pin: ca.pin(),
			wantErr: []string{"no server name"},
		},
		{
			name: "no CA sent", cert: leafOnly, pin: ca.pin(), serverName: "127.0.0.1",
			wantErr: []string{"server sent no CA certificate", "expected CA pin " + ca.pin()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serve(t, tt.cert, nil, nil)
			cfg, err := PinnedTLSConfig(tt.pin, tt.serverName, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = dial(t, addr, tt.dialHost, cfg)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("dial succeeded, want error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func colonPin(pin string) string {
	h := strings.ToUpper(strings.TrimPrefix(pin, "sha256:"))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return "sha256:" + strings.Join(parts, ":")
}

func TestPinMismatchErrorAs(t *testing.T) {
	ca := newTestCA(t, "ca")
	other := newTestCA(t, "other")
	addr := serve(t, ca.issue(t, "s", serverNames, x509.ExtKeyUsageServerAuth), nil, nil)
	cfg, err := PinnedTLSConfig(other.pin(), "127.0.0.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = dial(t, addr, "", cfg)
	var pe *PinMismatchError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *PinMismatchError", err, err)
	}
	if pe.Got != ca.pin() || pe.Want != other.pin() {
		t.Errorf("PinMismatchError = %+v, want Got %s, Want %s", pe, ca.pin(), other.pin())
	}
}

func TestPinnedTLSConfigArgs(t *testing.T) {
	if _, err := PinnedTLSConfig("sha256:12", "", nil); err == nil {
		t.Error("bad pin accepted")
	}
	if _, err := PinnedTLSConfig(testPin, "collector.test:8443", nil); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("server name with port: err = %v", err)
	}
	cfg, err := PinnedTLSConfig(testPin, "::1", nil)
	if err != nil {
		t.Fatalf("IPv6 server name: %v", err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ServerName != "::1" || cfg.GetClientCertificate != nil {
		t.Errorf("config = MinVersion %x ServerName %q GetClientCertificate set %v", cfg.MinVersion, cfg.ServerName, cfg.GetClientCertificate != nil)
	}
}

func TestClientCertificate(t *testing.T) {
	ca := newTestCA(t, "ca")
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca.cert)
	got := make(chan string, 4)
	addr := serve(t, ca.issue(t, "s", serverNames, x509.ExtKeyUsageServerAuth), clientCAs, got)

	// The callback is consulted at every handshake: a renewed certificate is
	// used without a new configuration.
	current := ca.issue(t, "terminal-1", nil, x509.ExtKeyUsageClientAuth)
	calls := 0
	certFunc := func() (*tls.Certificate, error) {
		calls++
		c := current
		return &c, nil
	}
	for name, mk := range map[string]func() (*tls.Config, error){
		"pinned": func() (*tls.Config, error) { return PinnedTLSConfig(ca.pin(), "127.0.0.1", certFunc) },
		"CA":     func() (*tls.Config, error) { return CATLSConfig(ca.cert.Raw, certFunc) },
	} {
		t.Run(name, func(t *testing.T) {
			current = ca.issue(t, "terminal-1", nil, x509.ExtKeyUsageClientAuth)
			cfg, err := mk()
			if err != nil {
				t.Fatal(err)
			}
			cfg.ServerName = "127.0.0.1"
			if err := dial(t, addr, "", cfg); err != nil {
				t.Fatal(err)
			}
			if cn := <-got; cn != "terminal-1" {
				t.Errorf("server saw client %q", cn)
			}
			current = ca.issue(t, "terminal-1-renewed", nil, x509.ExtKeyUsageClientAuth)
			if err := dial(t, addr, "", cfg); err != nil {
				t.Fatal(err)
			}
			if cn := <-got; cn != "terminal-1-renewed" {
				t.Errorf("after renewal server saw client %q", cn)
			}
		})
	}
	if calls != 4 {
		t.Errorf("certificate callback called %d times, want 4", calls)
	}

	// Without a client certificate the server refuses.
	cfg, err := PinnedTLSConfig(ca.pin(), "127.0.0.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(t, addr, "", cfg); err == nil {
		t.Error("server accepted a client without certificate")
	}
}

func TestCATLSConfig(t *testing.T) {
	ca := newTestCA(t, "ca")
	other := newTestCA(t, "other")
	addr := serve(t, ca.issue(t, "s", serverNames, x509.ExtKeyUsageServerAuth), nil, nil)

	cfg, err := CATLSConfig(ca.cert.Raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(t, addr, "localhost", cfg); err != nil {
		t.Errorf("dial with the right CA: %v", err)
	}
	cfg, err = CATLSConfig(other.cert.Raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(t, addr, "localhost", cfg); err == nil {
		t.Error("dial with another CA succeeded")
	}

	leaf := ca.issue(t, "leaf", nil, x509.ExtKeyUsageServerAuth)
	if _, err := CATLSConfig(leaf.Leaf.Raw, nil); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf as CA: err = %v", err)
	}
	if _, err := CATLSConfig([]byte("junk"), nil); err == nil {
		t.Error("junk CA accepted")
	}
}
