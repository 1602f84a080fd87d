package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// connTestTerminal is the terminal ID of the certificate newTestPKI issues.
const connTestTerminal = "t-conn-test"

// testPKI is a CA, a collector certificate for 127.0.0.1 and a terminal
// certificate, made for one test.
type testPKI struct {
	ca         *x509.Certificate
	server     tls.Certificate
	clientKey  *ecdsa.PrivateKey
	clientCert *x509.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, key *ecdsa.PrivateKey, eku x509.ExtKeyUsage, ips []net.IP) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{eku}, KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := issue(2, "collector", srvKey, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cli := issue(3, connTestTerminal, cliKey, x509.ExtKeyUsageClientAuth, nil)
	return &testPKI{ca: ca, server: tls.Certificate{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey, Leaf: srv}, clientKey: cliKey, clientCert: cli}
}

// sharedStore is the database two collector replicas share: each (seq)
// stored once, as the real store does.
type sharedStore struct {
	mu        sync.Mutex
	stored    map[uint64]string // seq → the replica that stored it
	delivered map[uint64]int    // seq → how many reports carried it
	events    map[uint64]*mnguardv1.Event
}

// replica is a real gRPC collector with mutual TLS on loopback, backed by
// sharedStore.
type replica struct {
	mnguardv1.UnimplementedAgentServiceServer
	name     string
	store    *sharedStore
	srv      *grpc.Server
	addr     string
	reports  atomic.Int64
	postures atomic.Int64
	firstAt  atomic.Pointer[time.Time]
	resumed  atomic.Int64
	handshak atomic.Int64
	// unavailable makes Report answer Unavailable, as a collector whose
	// database is down does.
	unavailable atomic.Bool
}

func startReplica(t *testing.T, name string, p *testPKI, st *sharedStore) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, store: st, addr: ln.Addr().String()}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{p.server}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			r.handshak.Add(1)
			if cs.DidResume {
				r.resumed.Add(1)
			}
			return nil
		},
	}
	r.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	mnguardv1.RegisterAgentServiceServer(r.srv, r)
	go r.srv.Serve(ln)
	t.Cleanup(r.srv.Stop)
	return r
}

func (r *replica) Report(ctx context.Context, req *mnguardv1.ReportRequest) (*mnguardv1.ReportResponse, error) {
	if p, ok := peer.FromContext(ctx); !ok || p.AuthInfo == nil {
		return nil, status.Error(codes.Unauthenticated, "no TLS")
	}
	r.reports.Add(1)
	if r.unavailable.Load() {
		return nil, status.Error(codes.Unavailable, "store: database unavailable")
	}
	if req.GetPosture() != nil {
		r.postures.Add(1)
	}
	now := time.Now()
	r.firstAt.CompareAndSwap(nil, &now)
	var acked []uint64
	r.store.mu.Lock()
	for _, e := range req.GetEvents() {
		r.store.delivered[e.GetSeq()]++
		if _, ok := r.store.stored[e.GetSeq()]; !ok {
			r.store.stored[e.GetSeq()] = r.name
			if r.store.events != nil {
				r.store.events[e.GetSeq()] = e
			}
		}
		acked = append(acked, e.GetSeq())
	}
	r.store.mu.Unlock()
	return &mnguardv1.ReportResponse{AckedSeqs: acked, ServerTime: timestamppb.Now()}, nil
}

func (r *replica) Subscribe(_ *mnguardv1.SubscribeRequest, stream mnguardv1.AgentService_SubscribeServer) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if err := stream.Send(&mnguardv1.SubscribeResponse{SentAt: timestamppb.Now(), Push: &mnguardv1.SubscribeResponse_Heartbeat{Heartbeat: &mnguardv1.Heartbeat{}}}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C:
		}
	}
}

// testDaemon is a Daemon with a real spool and real connections to the
// servers listed, and nothing else.
func testDaemon(t *testing.T, p *testPKI, servers []string, logs io.Writer) *Daemon {
	t.Helper()
	return testDaemonAt(t, p, servers, logs, filepath.Join(t.TempDir(), "spool.db"))
}

// testDaemonAt is testDaemon with its spool file at path.
func testDaemonAt(t *testing.T, p *testPKI, servers []string, logs io.Writer, path string) *Daemon {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sp, err := spool.OpenWithOptions(path, spool.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	d := &Daemon{
		log: log, spool: sp, servers: servers, server: servers[0],
		wake: make(chan struct{}, 1), statusKick: make(chan struct{}, 1), resubscribe: make(chan struct{}, 1),
		id: &state.Identity{Enrollment: state.Enrollment{TerminalID: connTestTerminal}, Key: p.clientKey, Cert: p.clientCert, CA: p.ca},
	}
	d.cc = collectorConn{servers: servers, lookup: lookupIP, cache: tls.NewLRUClientSessionCache(sessionCacheSize)}
	if err := d.connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.closeConn)
	return d
}

// deliver is the reporter's delivery part (reportLoop without the
// posture): send the spool when woken, retry after retryWait.
func deliver(ctx context.Context, d *Daemon) {
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if !d.waitToReport(ctx, timer, failures) {
			return
		}
		next := time.Second
		if err := d.send(ctx, nil, 0); err != nil {
			next = retryWait(failures)
			failures++
		} else {
			failures = 0
		}
		timer.Reset(next)
	}
}

// TestFailoverTwoCollectors: an agent configured with [A, B] delivers to
// A; A dies (its server stopped: connections reset, the port refuses);
// the agent moves to B within the backoff bound, delivers its spool there
// and subscribes there, and every event emitted is stored exactly once.
func TestFailoverTwoCollectors(t *testing.T) {
	p := newTestPKI(t)
	st := &sharedStore{stored: map[uint64]string{}, delivered: map[uint64]int{}}
	a := startReplica(t, "A", p, st)
	b := startReplica(t, "B", p, st)
	logs := &lockedWriter{}
	d := testDaemon(t, p, []string{a.addr, b.addr}, logs)
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { deliver(ctx, d) })
	wg.Go(func() { d.subscribeLoop(ctx) })
	var emitted atomic.Int64
	stopEmit := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopEmit:
				return
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("event %d", i), nil)
			emitted.Add(1)
		}
	})
	waitFor(t, 5*time.Second, func() bool { return a.reports.Load() >= 5 }, "reports at A")
	if b.reports.Load() != 0 {
		t.Fatalf("B got %d reports before A died", b.reports.Load())
	}

	killed := time.Now()
	a.srv.Stop()
	waitFor(t, maxBackoff+5*time.Second, func() bool { return b.firstAt.Load() != nil }, "a report at B")
	failover := b.firstAt.Load().Sub(killed)
	t.Logf("failover time (A stopped → first report stored at B): %s", failover)
	if failover > maxBackoff+rpcTimeout {
		t.Errorf("failover took %s, above the bound", failover)
	}
	waitFor(t, 5*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.st.Connected && d.st.Collector == b.addr
	}, "the subscription at B")
	close(stopEmit)
	time.Sleep(20 * time.Millisecond)
	d.poke()
	waitFor(t, 10*time.Second, func() bool { n, _ := d.spool.Len(); return n == 0 }, "the spool drained")

	st.mu.Lock()
	defer st.mu.Unlock()
	last := d.spool.LastSeq()
	if int64(last) != emitted.Load() {
		t.Errorf("spool handed out %d numbers for %d events", last, emitted.Load())
	}
	atA, atB, dup := 0, 0, 0
	for seq := uint64(1); seq <= last; seq++ {
		switch st.stored[seq] {
		case "":
			t.Errorf("event %d never stored", seq)
		case "A":
			atA++
		case "B":
			atB++
		}
		if st.delivered[seq] > 1 {
			dup++
		}
	}
	if len(st.stored) != int(last) {
		t.Errorf("%d events stored, %d emitted", len(st.stored), last)
	}
	t.Logf("%d events: %d stored through A, %d through B; %d delivered twice (ack lost with A), stored once", last, atA, atB, dup)
	if atB == 0 {
		t.Error("nothing stored through B")
	}
	d.mu.Lock()
	fo := d.st.Failovers
	d.mu.Unlock()
	if fo < 1 {
		t.Errorf("status failovers = %d", fo)
	}
}

// TestSessionResumed: a new connection to a collector already met resumes
// the TLS session (no full handshake): what makes reconnect storms cheap;
// but not after a renewal, whose new certificate needs a full handshake.
func TestSessionResumed(t *testing.T) {
	p := newTestPKI(t)
	st := &sharedStore{stored: map[uint64]string{}, delivered: map[uint64]int{}}
	a := startReplica(t, "A", p, st)
	d := testDaemon(t, p, []string{a.addr}, io.Discard)
	ctx := context.Background()
	d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, "one", nil)
	if err := d.send(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	// A new connection, as a failover or a collector restart makes.
	d.cc.mu.Lock()
	err := d.dialLocked()
	d.cc.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, "two", nil)
	if err := d.send(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	if h, r := a.handshak.Load(), a.resumed.Load(); h != 2 || r != 1 {
		t.Errorf("%d handshakes, %d resumed; want 2 and the second resumed", h, r)
	}
	// After a renewal (connect), a full handshake: a resumed session
	// would present the old certificate.
	if err := d.connect(); err != nil {
		t.Fatal(err)
	}
	d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, "three", nil)
	if err := d.send(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	if h, r := a.handshak.Load(), a.resumed.Load(); h != 3 || r != 1 {
		t.Errorf("%d handshakes, %d resumed; want 3 and the third not resumed", h, r)
	}
}

// TestFailoverOneAddressKept: with one address there is nowhere to move;
// gRPC keeps reconnecting to it.
func TestFailoverOneAddressKept(t *testing.T) {
	p := newTestPKI(t)
	st := &sharedStore{stored: map[uint64]string{}, delivered: map[uint64]int{}}
	a := startReplica(t, "A", p, st)
	d := testDaemon(t, p, []string{a.addr}, io.Discard)
	_, gen, _ := d.current()
	d.failover(gen, status.Error(codes.Unavailable, "gone"))
	if _, gen2, ep := d.current(); gen2 != gen || ep.addr != a.addr {
		t.Errorf("after a failure with one address: generation %d→%d, address %s", gen, gen2, ep.addr)
	}
}

func TestResolveEndpoints(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "pair.example":
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.2")}, nil
		case "dup.example":
			return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil
		}
		return nil, errors.New("no such host")
	}
	got := resolveEndpoints(context.Background(), []string{"pair.example:8443", "198.51.100.7:9443", "gone.example:8443", "[2001:db8::1]:8443"}, lookup)
	want := []endpoint{
		{server: "pair.example:8443", addr: "192.0.2.1:8443", serverName: "pair.example"},
		{server: "pair.example:8443", addr: "192.0.2.2:8443", serverName: "pair.example"},
		{server: "198.51.100.7:9443", addr: "198.51.100.7:9443", serverName: "198.51.100.7"},
		{server: "gone.example:8443", addr: "gone.example:8443", serverName: "gone.example"},
		{server: "[2001:db8::1]:8443", addr: "[2001:db8::1]:8443", serverName: "2001:db8::1"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("resolveEndpoints =\n%v\nwant\n%v", got, want)
	}
	// The real resolver: localhost is at least one loopback address.
	if eps := resolveEndpoints(context.Background(), []string{"localhost:1"}, lookupIP); len(eps) == 0 || eps[0].serverName != "localhost" {
		t.Errorf("localhost resolved to %v", eps)
	}
}

func TestRetryWait(t *testing.T) {
	for attempt := range 30 {
		ceil := min(retryBase<<min(attempt, 16), maxBackoff)
		var maxSeen time.Duration
		for range 200 {
			w := retryWait(attempt)
			if w < 0 || w > ceil {
				t.Fatalf("retryWait(%d) = %s, outside [0, %s]", attempt, w, ceil)
			}
			maxSeen = max(maxSeen, w)
		}
		if maxSeen < ceil/2 {
			t.Errorf("retryWait(%d): 200 draws all below %s: not full jitter up to %s", attempt, ceil/2, ceil)
		}
	}
}

// lockedWriter collects a log written from several goroutines.
type lockedWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

func waitFor(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPostureKeptUntilAcked: a posture snapshot whose report failed stays
// in the spool across a restart of the agent, is sent to the collector
// when it is back, and leaves the spool once the collector acknowledged
// the report.
func TestPostureKeptUntilAcked(t *testing.T) {
	p := newTestPKI(t)
	st := &sharedStore{stored: map[uint64]string{}, delivered: map[uint64]int{}}
	a := startReplica(t, "A", p, st)
	a.srv.Stop() // the collector is away
	path := filepath.Join(t.TempDir(), "spool.db")
	d := testDaemonAt(t, p, []string{a.addr}, io.Discard, path)
	ctx := context.Background()
	pos := &mnguardv1.Posture{CollectedAt: timestamppb.Now(), AgentVersion: "test", Host: &mnguardv1.HostFacts{Hostname: "kept"}}
	gen, err := d.spool.SetPosture(pos)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.send(ctx, pos, gen); err == nil {
		t.Fatal("report to a stopped collector succeeded")
	}
	d.closeConn()
	d.spool.Close() // the agent stops

	b := startReplica(t, "B", p, st)
	d = testDaemonAt(t, p, []string{b.addr}, io.Discard, path)
	kept, kgen, err := d.spool.LatestPosture()
	if err != nil || kept.GetHost().GetHostname() != "kept" || kgen != gen {
		t.Fatalf("posture after restart = %v (generation %d), %v; want the one not acknowledged, generation %d", kept, kgen, err, gen)
	}
	if err := d.send(ctx, kept, kgen); err != nil {
		t.Fatal(err)
	}
	if b.postures.Load() != 1 {
		t.Errorf("collector received %d postures, want 1", b.postures.Load())
	}
	if left, _, _ := d.spool.LatestPosture(); left != nil {
		t.Errorf("posture still kept after the collector acknowledged it: %v", left)
	}
}

// TestNoReportPerEventWhileFailing: while the collector answers
// Unavailable (its database is down), events emitted meanwhile wait in
// the spool for the retry delay instead of each sending a report of its
// own; once the collector is back every event arrives.
func TestNoReportPerEventWhileFailing(t *testing.T) {
	p := newTestPKI(t)
	st := &sharedStore{stored: map[uint64]string{}, delivered: map[uint64]int{}}
	a := startReplica(t, "A", p, st)
	a.unavailable.Store(true)
	d := testDaemon(t, p, []string{a.addr}, io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { deliver(ctx, d) })
	const events = 200
	start := time.Now()
	for i := range events {
		d.Emit("test.event", mnguardv1.Severity_SEVERITY_INFO, fmt.Sprintf("event %d", i), nil)
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	n := a.reports.Load()
	t.Logf("%d events over %v while failing: %d reports", events, elapsed.Round(time.Millisecond), n)
	// Full-jitter backoff from 0.5 s doubling: a handful of retries in
	// ~2 s; one report per event would be ~200.
	if n > 20 {
		t.Errorf("%d reports for %d events while the collector failed, want the retry delay to hold them back", n, events)
	}
	a.unavailable.Store(false)
	waitFor(t, 15*time.Second, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.stored) >= events
	}, "every event stored once the collector is back")
}
