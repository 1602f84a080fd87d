package collector

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// DefaultMaxConnsPerIP is how many connections one source address may hold
// open on each of the collector's listeners when Config names no limit.
// Every terminal holds one gRPC connection; terminals behind one NAT
// address need a higher limit.
const DefaultMaxConnsPerIP = 128

// limitListener closes, as soon as they are accepted, connections from a
// source address that holds max connections already, so that one client
// cannot take every file descriptor (or every TLS handshake) of the
// collector. The count drops when a connection is closed.
type limitListener struct {
	net.Listener
	max     int
	log     *slog.Logger
	mu      sync.Mutex
	conns   map[string]int
	refused map[string]time.Time // last warning per address
}

func newLimitListener(l net.Listener, max int, log *slog.Logger) *limitListener {
	return &limitListener{Listener: l, max: max, log: log, conns: make(map[string]int), refused: make(map[string]time.Time)}
}

// Accept returns the next connection whose source address is below the
// limit; the others are closed at once.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := sourceIP(c.RemoteAddr())
		if l.take(ip) {
			return &limitConn{Conn: c, release: func() { l.release(ip) }}, nil
		}
		c.Close()
	}
}

func (l *limitListener) take(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip] >= l.max {
		// One warning per address and minute, not one per connection.
		if now := time.Now(); now.Sub(l.refused[ip]) >= time.Minute {
			l.refused[ip] = now
			l.log.Warn("connection refused: too many from one address", "addr", ip, "max_conns_per_ip", l.max)
		}
		return false
	}
	l.conns[ip]++
	return true
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip]--; l.conns[ip] <= 0 {
		delete(l.conns, ip)
		delete(l.refused, ip)
	}
}

// sourceIP is the address a connection counts against: its IP without the
// port (an IPv4-mapped IPv6 address counts as the IPv4 one).
func sourceIP(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok {
		if v4 := tcp.IP.To4(); v4 != nil {
			return v4.String()
		}
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitConn gives its slot back once, at the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
