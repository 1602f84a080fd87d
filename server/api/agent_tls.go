package api

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/mnguard/mnguard/server/ca"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// A terminal's client certificate is verified once per connection, in the
// handshake, not at every RPC: a collector of 100,000 terminals takes a
// report from each every minute, and rebuilding a pool and verifying the
// chain for each cost more than storing it. The TLS layer only requests the
// certificate (Enroll comes without one, and a refused agent must read why
// in a gRPC status, not a TLS alert); verifyingCreds verifies it right
// after the handshake and hands the outcome to the interceptors with the
// connection's AuthInfo.

// verifiedTLSInfo is the AuthInfo of a connection whose client certificate
// chain was checked after its handshake.
type verifiedTLSInfo struct {
	credentials.TLSInfo
	chain *chainResult
}

// chainResult is the outcome of verifying one client certificate chain
// against the CA: either err (a gRPC status error for the agent), or the
// leaf, its serial and the time window in which every certificate of the
// chain is valid.
type chainResult struct {
	leaf      *x509.Certificate
	serial    string
	notBefore time.Time
	notAfter  time.Time
	err       error
}

// check returns the verified chain's error, or one if now is outside the
// chain's validity (a connection may outlive its certificate).
func (r *chainResult) check(now time.Time) error {
	if r.err != nil {
		return r.err
	}
	if now.After(r.notAfter) {
		return status.Errorf(codes.Unauthenticated, "client certificate expired at %s: enroll this terminal again", r.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(r.notBefore) {
		return status.Errorf(codes.Unauthenticated, "client certificate not valid before %s: is this terminal's clock right?", r.notBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// chainVerifier verifies client certificate chains and remembers the
// chains it verified (by their bytes), so a reconnect storm, each terminal
// back with its known certificate, costs no signature check per
// connection. Only successes are remembered; the CA does not change while
// the collector runs.
type chainVerifier struct {
	roots *x509.CertPool
	now   func() time.Time
	max   int
	mu    sync.Mutex
	known map[[sha256.Size]byte]*chainResult
}

// defaultVerifiedChains bounds the remembered chains: one per terminal of
// a large collector, about 200 bytes each.
const defaultVerifiedChains = 1 << 17

func newChainVerifier(roots *x509.CertPool, now func() time.Time, max int) *chainVerifier {
	if max <= 0 {
		max = defaultVerifiedChains
	}
	return &chainVerifier{roots: roots, now: now, max: max, known: make(map[[sha256.Size]byte]*chainResult)}
}

// verify verifies certs (leaf first) as of now.
func (v *chainVerifier) verify(certs []*x509.Certificate) *chainResult {
	if len(certs) == 0 {
		return &chainResult{err: status.Error(codes.Unauthenticated, "client certificate required: this terminal is not enrolled")}
	}
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
		h.Write([]byte{0})
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	now := v.now()
	v.mu.Lock()
	r := v.known[key]
	v.mu.Unlock()
	if r != nil {
		// The verified leaf, not this connection's parse of the same
		// bytes: they are equal.
		if err := r.check(now); err == nil {
			return r
		}
	}
	r = verifyChain(certs, v.roots, now)
	if r.err != nil {
		return r
	}
	v.mu.Lock()
	if len(v.known) >= v.max {
		// Forget about half, at random (map order): a full cache of a
		// collector at capacity still finds most terminals.
		n := 0
		for k := range v.known {
			delete(v.known, k)
			if n++; n >= v.max/2 {
				break
			}
		}
	}
	v.known[key] = r
	v.mu.Unlock()
	return r
}

func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) *chainResult {
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return &chainResult{err: status.Errorf(codes.Unauthenticated, "client certificate expired at %s: enroll this terminal again", leaf.NotAfter.UTC().Format(time.RFC3339))}
		}
		return &chainResult{err: status.Errorf(codes.Unauthenticated, "client certificate not issued by this collector's CA: %v", err)}
	}
	r := &chainResult{leaf: leaf, serial: ca.SerialHex(leaf), notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	// The window in which the whole chain stays valid.
	for _, c := range chains[0][1:] {
		if c.NotBefore.After(r.notBefore) {
			r.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(r.notAfter) {
			r.notAfter = c.NotAfter
		}
	}
	return r
}

// verifyingCreds are TLS transport credentials that verify the client's
// certificate chain once, right after the handshake.
type verifyingCreds struct {
	credentials.TransportCredentials
	v *chainVerifier
}

func (c verifyingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		// Enroll and admin RPCs: no client certificate to verify.
		return conn, info, nil
	}
	return conn, verifiedTLSInfo{TLSInfo: ti, chain: c.v.verify(ti.State.PeerCertificates)}, nil
}

func (c verifyingCreds) Clone() credentials.TransportCredentials {
	return verifyingCreds{TransportCredentials: c.TransportCredentials.Clone(), v: c.v}
}

// certCache remembers, per certificate serial, the terminal it belongs to
// once the store confirmed it in use (first use recorded, neither revoked
// nor retired). Report then needs no read of the certificate before its
// batch: whether the certificate is revoked or retired is checked in the
// transaction that stores the report (store.BatchReport.CertSerial), so
// the cache never decides that. Every other agent RPC reads the store.
type certCache struct {
	max int
	mu  sync.Mutex
	m   map[string]string
}

// defaultCachedCerts bounds the cache: one entry per terminal of a large
// collector, about 100 bytes each.
const defaultCachedCerts = 1 << 17

func newCertCache(max int) *certCache {
	if max <= 0 {
		max = defaultCachedCerts
	}
	return &certCache{max: max, m: make(map[string]string)}
}

func (c *certCache) get(serial string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.m[serial]
	return id, ok
}

func (c *certCache) put(serial, terminalID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[serial]; !ok && len(c.m) >= c.max {
		n := 0
		for k := range c.m {
			delete(c.m, k)
			if n++; n >= c.max/2 {
				break
			}
		}
	}
	c.m[serial] = terminalID
}

func (c *certCache) forget(serials []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range serials {
		delete(c.m, s)
	}
}
