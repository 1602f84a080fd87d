package pki

import (
	"crypto/x509"
	"math/rand/v2"
	"time"
)

// DefaultRenewBefore is the fraction of a certificate's lifetime left at
// which [Renewal] renews it when Before is not set.
const DefaultRenewBefore = 1.0 / 3

// Renewal says when a certificate should be renewed.
type Renewal struct {
	// Before is the fraction of the certificate's lifetime still left when
	// it is renewed, in (0, 1). Zero or out of range means
	// DefaultRenewBefore.
	Before float64
	// Jitter is the largest random amount by which renewal is moved
	// earlier, so a fleet enrolled together does not renew together.
	Jitter time.Duration
}

// Due returns when cert should be renewed: NotAfter minus Before of its
// lifetime, minus a random jitter of up to r.Jitter, but never before the
// certificate's NotBefore nor before now. A result equal to now means
// renew now.
func (r Renewal) Due(cert *x509.Certificate, now time.Time) time.Time {
	before := r.Before
	if !(before > 0 && before < 1) { // also catches NaN
		before = DefaultRenewBefore
	}
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	due := cert.NotAfter.Add(-time.Duration(before * float64(lifetime)))
	if r.Jitter > 0 {
		due = due.Add(-rand.N(r.Jitter + 1))
	}
	if due.Before(cert.NotBefore) {
		due = cert.NotBefore
	}
	if due.Before(now) {
		due = now
	}
	return due
}
