package pki

import (
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestKeyPEMRoundTrip(t *testing.T) {
	ec, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if ec.Curve != elliptic.P256() {
		t.Errorf("NewKey curve = %s", ec.Curve.Params().Name)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		key  interface {
			crypto.Signer
			Equal(crypto.PrivateKey) bool
		}
	}{{"ecdsa", ec}, {"ed25519", ed}} {
		t.Run(tt.name, func(t *testing.T) {
			pemBytes, err := MarshalKeyPEM(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(pemBytes), "-----BEGIN PRIVATE KEY-----") {
				t.Errorf("not a PKCS#8 PEM: %s", pemBytes)
			}
			back, err := ParseKeyPEM(pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.key.Equal(back) {
				t.Error("parsed key differs")
			}
		})
	}
}

func TestParseKeyPEMFormats(t *testing.T) {
	ec, _ := NewKey()
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	// openssl ecparam -genkey writes EC PARAMETERS first.
	withParams := append(enc("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}), enc("EC PRIVATE KEY", sec1)...)
	if k, err := ParseKeyPEM(withParams); err != nil || !ec.Equal(k) {
		t.Errorf("SEC 1 with parameters: %v", err)
	}
	if k, err := ParseKeyPEM(enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))); err != nil || !rsaKey.Equal(k) {
		t.Errorf("PKCS#1: %v", err)
	}
	for name, data := range map[string][]byte{
		"empty":     nil,
		"cert only": CertPEM([]byte("x")),
		"encrypted": enc("ENCRYPTED PRIVATE KEY", []byte("x")),
		"garbage":   enc("PRIVATE KEY", []byte("garbage")),
	} {
		if _, err := ParseKeyPEM(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestCSRAndCertPEM(t *testing.T) {
	key, _ := NewKey()
	der, err := NewCSR(key, "terminal-1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Error(err)
	}
	if csr.Subject.CommonName != "terminal-1" || !key.PublicKey.Equal(csr.PublicKey) {
		t.Errorf("CSR subject %q, key matches %v", csr.Subject.CommonName, key.PublicKey.Equal(csr.PublicKey))
	}

	ca := newTestCA(t, "ca")
	other, _ := NewKey()
	// A PEM bundle whose first certificate is preceded by a key.
	keyPEM, _ := MarshalKeyPEM(key)
	cert, err := ParseCertPEM(append(keyPEM, CertPEM(ca.cert.Raw)...))
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Equal(ca.cert) {
		t.Error("parsed certificate differs")
	}
	if err := CheckKeyPair(cert, ca.key); err != nil {
		t.Errorf("CheckKeyPair with the right key: %v", err)
	}
	if err := CheckKeyPair(cert, other); err == nil {
		t.Error("CheckKeyPair accepted another key")
	}
	if _, err := ParseCertPEM(keyPEM); err == nil {
		t.Error("ParseCertPEM found a certificate in a key")
	}
}
