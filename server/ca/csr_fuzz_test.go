package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// FuzzParseClientCSR: the certificate request of Enroll and Renew comes from
// anyone who can reach the collector. Whatever the bytes, parsing returns
// an error or a self-signed request by an accepted key, never panics, and
// SignClient agrees with it.
func FuzzParseClientCSR(f *testing.F) {
	ec, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, key := range []crypto.Signer{ec, ed, p384} {
		der, err := pki.NewCSR(key, "terminal")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
		f.Add(der[:len(der)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	dir := f.TempDir()
	c, _, err := LoadOrCreate(dir, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ParseClientCSR(der)
		if err != nil {
			if csr != nil {
				t.Fatal("a request returned with an error")
			}
			if _, serr := c.SignClient(der, "t1", time.Now(), time.Now().Add(time.Hour)); serr == nil {
				t.Fatalf("SignClient accepted what ParseClientCSR refused (%v)", err)
			}
			return
		}
		if len(der) > MaxCSRBytes {
			t.Fatalf("accepted %d bytes", len(der))
		}
		switch pub := csr.PublicKey.(type) {
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() {
				t.Fatalf("accepted curve %s", pub.Curve.Params().Name)
			}
		case ed25519.PublicKey:
		default:
			t.Fatalf("accepted key %T", pub)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a request whose signature fails: %v", err)
		}
		cert, err := c.SignClient(der, "t1", time.Now(), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatalf("SignClient refused what ParseClientCSR accepted: %v", err)
		}
		if cert.Subject.CommonName != "t1" {
			t.Fatalf("certificate for %q, want t1", cert.Subject.CommonName)
		}
	})
}
