package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/retry"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The agent's reconnection (agent/daemon): after the attempt-th failure in
// a row its stream waits a uniformly random time up to 0.5 s·2^attempt,
// at most 10 s (full jitter), then waits for the connection attempt
// (retry.AwaitReady): TCP given retry.DialTimeout, the handshake
// retry.HandshakeTimeout; gRPC's own connection backoff starts at 0.5 s.
// The load generator behaves alike, so a reconnect storm here is the one a
// fleet of agents makes.
const (
	retryBase     = 500 * time.Millisecond
	maxBackoff    = 10 * time.Second
	keepaliveTime = 30 * time.Second
)

// retryWait is the agent's full-jitter backoff of the attempt-th
// consecutive failure (0 for the first).
func retryWait(attempt int) time.Duration {
	return retry.FullJitter(attempt, retryBase, maxBackoff)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "baseline-server" {
		if err := runBaselineServer(ctx, args[1:], stdout, stderr); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stderr, "mnguard-loadgen baseline-server:", err)
			}
			return 2
		}
		return 0
	}
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "mnguard-loadgen:", err)
		return 2
	}
	g := &gen{cfg: cfg, out: stdout, st: newStats(cfg.agents)}
	if err := g.run(ctx); err != nil {
		fmt.Fprintln(stderr, "mnguard-loadgen:", err)
		return 1
	}
	return 0
}

// gen is one load generator run.
type gen struct {
	cfg   *config
	out   io.Writer
	outMu sync.Mutex
	st    *stats
	caDER []byte
	seq0  uint64
	boot  time.Time
}

func (g *gen) run(ctx context.Context) error {
	limit := raiseFileLimit()
	if limit > 0 && uint64(g.cfg.agents)+64 > limit {
		return fmt.Errorf("--agents %d needs more open files than this process may hold (%d): raise the hard limit (ulimit -Hn) or split the terminals over several load generators", g.cfg.agents, limit)
	}
	pid := g.cfg.serverPID
	if pid == 0 {
		pid = listenerPID(g.cfg.servers[0])
	}
	ids, err := g.identities(ctx)
	if err != nil {
		return err
	}
	g.seq0 = uint64(time.Now().UnixMicro())
	g.boot = time.Now().Add(-time.Hour)
	mon := newMonitor(pid)
	g.info("start: %d terminals, servers %v, interval %s, %d events a report, file limit %d, collector pid %d", len(ids), g.cfg.servers, g.cfg.interval, g.cfg.events, limit, pid)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	terms := make([]*terminal, len(ids))
	for i, id := range ids {
		conn, err := g.dial(i, id.cert)
		if err != nil {
			return err
		}
		defer conn.Close()
		terms[i] = &terminal{g: g, idx: i, host: id.Host, conn: conn}
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() { g.printLoop(ctx, mon); close(done) }()
	connectStart := time.Now()
	sem := make(chan struct{}, g.cfg.connectPar)
	for _, t := range terms {
		wg.Add(1)
		go func() { defer wg.Done(); t.subscribeLoop(ctx, sem) }()
	}
	connected := g.st.waitAll(ctx)
	el := time.Since(connectStart)
	if ctx.Err() != nil {
		cancel()
		wg.Wait()
		<-done
		g.summary(mon, time.Now(), 0)
		return nil
	}
	g.info("connected: %d of %d streams in %s (%.0f terminals/s)", connected, len(terms), el.Round(time.Millisecond), float64(connected)/el.Seconds())

	// The terminals report from here; after the warm-up the measured
	// phase starts, and from there the totals count.
	start := time.Now()
	var end time.Time
	if g.cfg.duration > 0 {
		end = start.Add(g.cfg.warmup + g.cfg.duration)
	}
	if g.cfg.interval > 0 {
		for _, t := range terms {
			wg.Add(1)
			go func() { defer wg.Done(); t.reportLoop(ctx, start, end) }()
		}
	}
	if g.cfg.warmup > 0 {
		g.info("warm-up: %s before measuring", g.cfg.warmup)
		select {
		case <-ctx.Done():
		case <-time.After(g.cfg.warmup):
		}
	}
	measured := time.Now()
	mon.mark()
	g.st.startMeasure()
	if !end.IsZero() {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(end)):
		}
	} else {
		<-ctx.Done()
	}
	stop := time.Now()
	g.st.stopMeasure()
	g.summary(mon, stop, stop.Sub(measured))
	cancel()
	wg.Wait()
	<-done
	return nil
}

// identities enrolls (or loads) the collector's terminals, or makes the
// baseline's from its CA.
func (g *gen) identities(ctx context.Context) ([]*identity, error) {
	if !g.cfg.baseline {
		ids, caDER, err := enrollAll(ctx, g.cfg, g.info)
		g.caDER = caDER
		return ids, err
	}
	ca, err := loadOrCreateBaselineCA(g.cfg.baselineDir)
	if err != nil {
		return nil, err
	}
	g.caDER = ca.cert.Raw
	ids := make([]*identity, g.cfg.agents)
	for i := range ids {
		host := fmt.Sprintf("%s-%06d", g.cfg.hostPrefix, i)
		cert, err := ca.issue(host, nil)
		if err != nil {
			return nil, err
		}
		cert.Certificate = cert.Certificate[:1]
		ids[i] = &identity{Index: i, Host: host, cert: cert}
	}
	return ids, nil
}

// dial makes terminal i's connection as the agent does (agent/daemon
// connect): the CA pinned at enrollment, the client certificate, keepalive
// pings every 30 s, reconnection with jittered backoff; and TLS session
// resumption. Terminal i starts at server i mod n and, when that one does
// not answer, dials the next.
func (g *gen) dial(i int, cert *tls.Certificate) (*grpc.ClientConn, error) {
	tlsCfg, err := pki.CATLSConfig(g.caDER, func() (*tls.Certificate, error) { return cert, nil })
	if err != nil {
		return nil, err
	}
	tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(2)
	servers := g.cfg.servers
	first := i % len(servers)
	host, _, _ := net.SplitHostPort(servers[first])
	tlsCfg.ServerName = host
	d := &net.Dialer{Timeout: retry.DialTimeout}
	if ips := g.cfg.sourceIPs; len(ips) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: ips[i%len(ips)].AsSlice()}
	}
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		var err error
		for k := range servers {
			c, e := d.DialContext(ctx, "tcp", servers[(first+k)%len(servers)])
			if e == nil {
				return c, nil
			}
			err = e
		}
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+servers[first],
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(dialer),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: retryBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: retry.HandshakeTimeout,
		}),
		// The load generator's own buffers, smaller than gRPC's 32 KiB
		// defaults so that 20,000 terminals fit in one process; the
		// collector's side of each connection is unchanged by them.
		grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10),
	)
}

// terminal is one simulated agent.
type terminal struct {
	g       *gen
	idx     int
	host    string
	conn    *grpc.ClientConn
	seq     uint64
	pending []*mnguardv1.Event
	reports uint64
}

// subscribeLoop keeps the terminal's Subscribe stream (baseline: health
// Watch) open, as the agent's subscribeLoop does. The first connection
// waits for a slot of sem, so that the start is not one burst of all
// handshakes at once.
func (t *terminal) subscribeLoop(ctx context.Context, sem chan struct{}) {
	attempt := 0
	first := true
	held := false
	select {
	case sem <- struct{}{}:
		held = true
	case <-ctx.Done():
		return
	}
	release := func() {
		if held {
			<-sem
			held = false
		}
	}
	defer release()
	for ctx.Err() == nil {
		up := false
		err := t.subscribe(ctx, func() {
			up = true
			release()
			t.g.st.streamUp(!first)
			first = false
		})
		if up {
			t.g.st.streamDown()
			attempt = 0
		}
		if ctx.Err() != nil {
			return
		}
		t.g.st.fail("subscribe", err)
		release()
		wait := retryWait(attempt)
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
			wait = time.Minute // as the agent: refused, retry slowly
		}
		attempt++
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// subscribe holds one stream until it ends; up is called at its first
// message (the agent counts itself connected then).
func (t *terminal) subscribe(ctx context.Context, up func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		recv   func() error
		stream grpc.ClientStream
	)
	if t.g.cfg.baseline {
		s, err := healthpb.NewHealthClient(t.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		recv, stream = func() error { _, err := s.Recv(); return err }, s
	} else {
		// As the agent: connect now, not when gRPC's backoff ends.
		retry.AwaitReady(ctx, t.conn, retry.HandshakeTimeout)
		s, err := mnguardv1.NewAgentServiceClient(t.conn).Subscribe(ctx, &mnguardv1.SubscribeRequest{})
		if err != nil {
			return err
		}
		recv, stream = func() error { _, err := s.Recv(); return err }, s
	}
	for n := 0; ; n++ {
		if err := recv(); err != nil {
			return err
		}
		if n == 0 {
			if p, ok := peer.FromContext(stream.Context()); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && ti.State.DidResume {
					t.g.st.resumed.Add(1)
				}
			}
			up()
		}
	}
}

// reportLoop sends a report every interval, the first at a random offset
// in the first interval. Each send is due at a fixed time; one sent late
// (the one before took longer than the interval) counts its latency from
// when it was due, not from when it went out.
func (t *terminal) reportLoop(ctx context.Context, start, end time.Time) {
	iv := t.g.cfg.interval
	due := start.Add(rand.N(iv))
	for {
		if !end.IsZero() && !due.Before(end) {
			return
		}
		if wait := time.Until(due); wait > 0 {
			tm := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				tm.Stop()
				return
			case <-tm.C:
			}
		}
		t.report(ctx, due)
		due = due.Add(iv)
	}
}

// maxPending bounds the events a terminal keeps resending after failed
// reports (the agent's spool; here only so a long outage stays bounded).
const maxPending = 1000

func (t *terminal) report(ctx context.Context, due time.Time) {
	cfg := t.g.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.reportTimout)
	defer cancel()
	var err error
	var nev int
	if cfg.baseline {
		_, err = healthpb.NewHealthClient(t.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	} else {
		for range cfg.events {
			t.seq++
			t.pending = append(t.pending, event(t.g.seq0+t.seq))
		}
		if len(t.pending) > maxPending {
			t.pending = t.pending[len(t.pending)-maxPending:]
		}
		t.reports++
		req := &mnguardv1.ReportRequest{Posture: posture(t.host, t.idx, 3600+t.reports*uint64(cfg.interval/time.Second), t.g.boot), Events: t.pending}
		nev = len(t.pending)
		_, err = mnguardv1.NewAgentServiceClient(t.conn).Report(ctx, req)
	}
	if err != nil {
		if ctx.Err() == nil || status.Code(err) != codes.Canceled {
			t.g.st.fail("report", err)
		}
		return
	}
	t.pending = t.pending[:0]
	t.g.st.reported(time.Since(due), nev)
}

func (g *gen) info(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	g.outMu.Lock()
	defer g.outMu.Unlock()
	if g.cfg.output == "json" {
		writeJSON(g.out, map[string]any{"type": "info", "time": time.Now().Format(time.RFC3339Nano), "msg": msg})
		return
	}
	fmt.Fprintln(g.out, msg)
}
