package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// identity is one simulated terminal's enrollment: its key and certificate.
type identity struct {
	Index      int    `json:"i"`
	Host       string `json:"host"`
	TerminalID string `json:"terminal_id"`
	KeyPEM     string `json:"key"`
	CertDER    []byte `json:"cert"`

	cert *tls.Certificate
}

func (id *identity) load() error {
	key, err := pki.ParseKeyPEM([]byte(id.KeyPEM))
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(id.CertDER)
	if err != nil {
		return err
	}
	if err := pki.CheckKeyPair(leaf, key); err != nil {
		return err
	}
	id.cert = &tls.Certificate{Certificate: [][]byte{id.CertDER}, PrivateKey: key, Leaf: leaf}
	return nil
}

// identityCache keeps enrolled identities in DIR/identities-PIN.jsonl, one
// JSON object a line, appended as terminals enroll, so an interrupted
// enrollment keeps what it did. The file is per CA: a new collector has a
// new CA and new terminals.
type identityCache struct {
	path string
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
}

func cachePath(dir, pin string) string {
	return filepath.Join(dir, "identities-"+strings.TrimPrefix(pin, "sha256:")[:16]+".jsonl")
}

// openIdentityCache reads the identities cached for the CA pin, keyed by
// index, and opens the file to append new ones. A line that does not parse
// (a write cut short) ends the read: what follows is enrolled again.
func openIdentityCache(dir, pin, caPath string, caDER []byte) (*identityCache, map[int]*identity, []byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	c := &identityCache{path: cachePath(dir, pin)}
	got := map[int]*identity{}
	if b, err := os.ReadFile(caPath); err == nil {
		if pki.Pin(b) != pin {
			return nil, nil, nil, fmt.Errorf("%s holds a CA with pin %s, not %s: remove it", caPath, pki.Pin(b), pin)
		}
		caDER = b
	}
	f, err := os.OpenFile(c.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var good int64
	for sc.Scan() {
		id := &identity{}
		if err := json.Unmarshal(sc.Bytes(), id); err != nil || id.load() != nil {
			break
		}
		got[id.Index] = id
		good += int64(len(sc.Bytes())) + 1
	}
	// Drop a torn last line, and append after the good ones.
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	if _, err := f.Seek(good, 0); err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	c.f, c.w = f, bufio.NewWriter(f)
	return c, got, caDER, nil
}

func (c *identityCache) add(id *identity) error {
	if c == nil {
		return nil
	}
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.Write(b)
	return c.w.WriteByte('\n')
}

func (c *identityCache) close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.w.Flush(); err != nil {
		c.f.Close()
		return err
	}
	if err := c.f.Sync(); err != nil {
		c.f.Close()
		return err
	}
	return c.f.Close()
}

// enroller enrolls terminals through the collector's Enroll RPC as the agent
// does: the CA pinned by fingerprint, a fresh P-256 key and CSR, the answer
// checked against the pin, the CSR's key and the terminal ID.
type enroller struct {
	server, token, pin string
}

func (e *enroller) enroll(ctx context.Context, host string) (*identity, []byte, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := pki.NewCSR(key, host)
	if err != nil {
		return nil, nil, err
	}
	sname, _, _ := net.SplitHostPort(e.server)
	tlsCfg, err := pki.PinnedTLSConfig(e.pin, sname, nil)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(e.server, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := mnguardv1.NewAgentServiceClient(conn).Enroll(ctx, &mnguardv1.EnrollRequest{
		Token: e.token, CsrDer: csr,
		Host: &mnguardv1.HostFacts{Hostname: host, Os: "linux", Platform: "debian", PlatformVersion: "12.8", KernelVersion: "6.1.0-28-amd64", Arch: "x86_64", AgentVersion: "loadgen"},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("enroll %s with %s: %s: %s", host, e.server, status.Code(err), status.Convert(err).Message())
	}
	caDER := resp.GetCaCertificateDer()
	if pki.Pin(caDER) != e.pin {
		return nil, nil, fmt.Errorf("enroll %s: the collector answered with CA %s, not the pinned %s", host, pki.Pin(caDER), e.pin)
	}
	leaf, err := x509.ParseCertificate(resp.GetCertificateDer())
	if err != nil {
		return nil, nil, fmt.Errorf("enroll %s: certificate: %w", host, err)
	}
	if leaf.Subject.CommonName != resp.GetTerminalId() || resp.GetTerminalId() == "" {
		return nil, nil, fmt.Errorf("enroll %s: certificate names %q, answer names terminal %q", host, leaf.Subject.CommonName, resp.GetTerminalId())
	}
	if err := pki.CheckKeyPair(leaf, key); err != nil {
		return nil, nil, fmt.Errorf("enroll %s: certificate is not for our key: %w", host, err)
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	id := &identity{Host: host, TerminalID: resp.GetTerminalId(), KeyPEM: string(keyPEM), CertDER: leaf.Raw,
		cert: &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}
	return id, caDER, nil
}

// enrollAll returns n identities and the CA certificate: cached ones from
// stateDir, the rest enrolled (par at once) and added to the cache.
func enrollAll(ctx context.Context, cfg *config, log func(string, ...any)) ([]*identity, []byte, error) {
	ids := make([]*identity, cfg.agents)
	var cache *identityCache
	var caDER []byte
	if cfg.stateDir != "" {
		caPath := filepath.Join(cfg.stateDir, "ca-"+strings.TrimPrefix(cfg.caPin, "sha256:")[:16]+".der")
		var got map[int]*identity
		var err error
		cache, got, caDER, err = openIdentityCache(cfg.stateDir, cfg.caPin, caPath, nil)
		if err != nil {
			return nil, nil, err
		}
		defer func() {
			if caDER != nil {
				_ = pki.WriteFileAtomic(caPath, caDER, 0o600)
			}
		}()
		for i, id := range got {
			if i < cfg.agents {
				ids[i] = id
			}
		}
		if caDER == nil {
			for i := range ids {
				ids[i] = nil // identities without their CA: enroll again
			}
		}
	}
	var missing []int
	for i, id := range ids {
		if id == nil {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		log("identities: all %d cached in %s", cfg.agents, cfg.stateDir)
		return ids, caDER, cache.close()
	}
	if cfg.token == "" {
		cache.close()
		return nil, nil, fmt.Errorf("--token missing: %d of %d terminals need to enroll", len(missing), cfg.agents)
	}
	log("enrolling %d terminals (%d cached)", len(missing), cfg.agents-len(missing))
	start := time.Now()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	work := make(chan int)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range cfg.enrollPar {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &enroller{server: cfg.servers[w%len(cfg.servers)], token: cfg.token, pin: cfg.caPin}
			for i := range work {
				id, ca, err := e.enroll(ctx, fmt.Sprintf("%s-%06d", cfg.hostPrefix, i))
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					cancel()
				} else {
					id.Index = i
					ids[i] = id
					if caDER == nil {
						caDER = ca
					}
				}
				mu.Unlock()
				if err == nil {
					if err := cache.add(id); err != nil {
						mu.Lock()
						firstErr = cmpErr(firstErr, fmt.Errorf("--state-dir: %w", err))
						mu.Unlock()
						cancel()
					}
				}
			}
		}()
	}
feed:
	for _, i := range missing {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	closeErr := cache.close()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return nil, nil, err
	}
	for _, id := range ids {
		if id == nil {
			return nil, nil, errors.New("enrollment interrupted")
		}
	}
	el := time.Since(start)
	log("enrolled %d terminals in %s (%.0f/s)", len(missing), el.Round(time.Millisecond), float64(len(missing))/el.Seconds())
	return ids, caDER, closeErr
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
