package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/retry"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Several collectors. The configuration lists collector addresses
// (config.Servers); a name that resolves to several IP addresses counts as
// several. The agent holds one connection, to one address, at a time. When
// a call or the subscription fails because that collector is gone
// (Unavailable, DeadlineExceeded), it moves to the next address; the
// reporter and the subscription wait a full-jitter backoff between
// attempts (retryWait), so a fleet whose collector died spreads over the
// others instead of arriving at once, and undelivered events go from the
// spool to whichever collector answers next: every replica acknowledges
// only what its database committed, and stores each (terminal, seq) once.
//
// The list is walked by hand rather than by a gRPC resolver with
// pick_first: each address needs its own TLS server name (the name it was
// configured with, not the IP it resolved to), the move must be visible in
// the status and the log, and the jittered wait belongs to the agent's
// retry loops, which also decide what a failure means (a refused terminal
// is not a dead collector).
//
// TLS sessions are resumed (tls.ClientSessionCache shared by every
// connection): after a collector restart or a failover, thousands of
// terminals reconnect, and a resumed TLS 1.3 handshake skips the
// certificate signatures and chain checks on both sides. A renewed
// certificate starts a new cache (connect).

const (
	// retryBase and maxBackoff bound the full-jitter wait: attempt n waits
	// a uniformly random time in [0, min(maxBackoff, retryBase·2^n)].
	retryBase = 500 * time.Millisecond
	// sessionCacheSize holds the TLS sessions of the collector addresses.
	sessionCacheSize = 64
	// resolveTimeout bounds the lookup of the collector names at a move.
	resolveTimeout = 5 * time.Second
)

// retryWait is the full-jitter backoff of the attempt-th consecutive
// failure (0 for the first).
func retryWait(attempt int) time.Duration {
	return retry.FullJitter(attempt, retryBase, maxBackoff)
}

// endpoint is one collector address to dial.
type endpoint struct {
	server     string // the configured HOST:PORT
	addr       string // IP:PORT to dial (HOST:PORT if the name did not resolve)
	serverName string // the TLS server name: the configured host
}

func (e endpoint) String() string {
	if e.addr == e.server {
		return e.server
	}
	return e.server + " (" + e.addr + ")"
}

// resolveEndpoints expands the configured addresses: a literal IP is
// itself, a name is each address it resolves to, in the resolver's order;
// a name that does not resolve stays a name (the dial will say why).
func resolveEndpoints(ctx context.Context, servers []string, lookup func(context.Context, string) ([]netip.Addr, error)) []endpoint {
	var out []endpoint
	seen := map[string]bool{}
	add := func(e endpoint) {
		if !seen[e.addr] {
			seen[e.addr] = true
			out = append(out, e)
		}
	}
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			continue // validated by config; nothing to dial
		}
		if a, err := netip.ParseAddr(host); err == nil {
			add(endpoint{server: s, addr: net.JoinHostPort(a.Unmap().String(), port), serverName: host})
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		addrs, err := lookup(lctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			add(endpoint{server: s, addr: s, serverName: host})
			continue
		}
		for _, a := range addrs {
			add(endpoint{server: s, addr: net.JoinHostPort(a.Unmap().WithZone("").String(), port), serverName: host})
		}
	}
	return out
}

func lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// collectorConn is the list of collector addresses and which one is in
// use; the connection itself is Daemon.conn (and Daemon.client), which
// tests set by hand.
type collectorConn struct {
	mu      sync.Mutex // serialises moves and reconnects
	servers []string
	lookup  func(context.Context, string) ([]netip.Addr, error)
	cache   tls.ClientSessionCache

	// Guarded by mu.
	eps       []endpoint
	idx       int
	gen       uint64 // changes with every new connection
	failovers uint64
}

// current is the client in use, its connection's generation and address.
func (d *Daemon) current() (mnguardv1.AgentServiceClient, uint64, endpoint) {
	c := &d.cc
	c.mu.Lock()
	gen := c.gen
	var ep endpoint
	if c.idx < len(c.eps) {
		ep = c.eps[c.idx]
	}
	c.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client, gen, ep
}

// currentConn is the connection in use (nil in a hand-built Daemon).
func (d *Daemon) currentConn() *grpc.ClientConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn
}

// connect (re)creates the client connection to the address in use with
// the current certificate. A renewed certificate needs a new connection:
// an established TLS connection keeps presenting the old one. It also
// needs new TLS sessions: a resumed session carries the client certificate
// it was made with, so the cache of sessions made with the old one is
// dropped and the next handshake is a full one.
func (d *Daemon) connect() error {
	c := &d.cc
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cache = tls.NewLRUClientSessionCache(sessionCacheSize)
	if len(c.eps) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		c.eps = resolveEndpoints(ctx, c.servers, c.lookup)
		cancel()
		if len(c.eps) == 0 {
			return fmt.Errorf("agent: no collector address to connect to (server: %v)", c.servers)
		}
	}
	return d.dialLocked()
}

// dialLocked replaces the connection by one to c.eps[c.idx]; c.mu held.
func (d *Daemon) dialLocked() error {
	c := &d.cc
	ep := c.eps[c.idx]
	d.mu.Lock()
	cert := d.id.TLSCertificate()
	caDER := d.id.CA.Raw
	d.mu.Unlock()
	tlsCfg, err := pki.CATLSConfig(caDER, func() (*tls.Certificate, error) { return cert, nil })
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	tlsCfg.ServerName = ep.serverName
	tlsCfg.ClientSessionCache = c.cache
	// passthrough: the address is resolved already (resolveEndpoints).
	conn, err := grpc.NewClient("passthrough:///"+ep.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// gRPC's own reconnection to this address, while it is the one in
		// use: within maxBackoff, not gRPC's default 2 minutes (the login
		// gate offers offline challenges until the connection is back).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: retryBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: retry.HandshakeTimeout,
		}),
		// TCP given up after retry.DialTimeout: an address that does not
		// answer is left for the next soon, one that answers is given
		// the handshake's time.
		grpc.WithContextDialer(retry.Dialer(nil)),
	)
	if err != nil {
		return fmt.Errorf("agent: connect %s: %w", ep, err)
	}
	c.gen++
	d.mu.Lock()
	old := d.conn
	d.conn, d.client = conn, mnguardv1.NewAgentServiceClient(conn)
	d.st.Collector = ep.String()
	d.st.Failovers = c.failovers
	d.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// collectorGone says err means the collector at the address in use cannot
// serve: the agent should try another.
func collectorGone(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// failover moves to the next collector address after err from the
// connection of generation gen; a later generation (someone moved or
// reconnected already) is left alone. A single address is kept: gRPC
// reconnects to it by itself. After the last address the names are
// resolved again.
func (d *Daemon) failover(gen uint64, err error) {
	c := &d.cc
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || len(c.eps) == 0 {
		return // moved or reconnected already, or a hand-built Daemon
	}
	from := c.eps[c.idx]
	next := c.idx + 1
	if next >= len(c.eps) {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		if eps := resolveEndpoints(ctx, c.servers, c.lookup); len(eps) > 0 {
			c.eps = eps
		}
		cancel()
		next = 0
	}
	if len(c.eps) == 1 {
		c.idx = 0
		return
	}
	c.idx = next
	c.failovers++
	if derr := d.dialLocked(); derr != nil {
		d.log.Error("collector failover: connection not created", "to", c.eps[c.idx].String(), "err", derr)
		return
	}
	d.log.Warn("collector unreachable: moving to the next address", "from", from.String(), "to", c.eps[c.idx].String(),
		slog.String("reason", status.Convert(err).Message()), "failovers", c.failovers)
	d.statusChanged()
}

// closeConn closes the connection at shutdown.
func (d *Daemon) closeConn() {
	d.mu.Lock()
	conn := d.conn
	d.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}
