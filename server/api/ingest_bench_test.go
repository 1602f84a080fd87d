package api

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/store"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// benchCollector is an in-process collector on a real SQLite store and a
// real mutual-TLS gRPC listener, for benchmarks (startCollector is for
// tests).
type benchCollector struct {
	st      *store.DB
	svc     *Services
	metrics *Metrics
	addr    string
	caDER   []byte
}

func startBenchCollector(b *testing.B, opts ...grpc.ServerOption) *benchCollector {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	now := time.Now()
	authority, _, err := ca.LoadOrCreate(dir, now)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "mnguard.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	keyPath := filepath.Join(dir, "totp.key")
	if err := logins.CreateKey(keyPath); err != nil {
		b.Fatal(err)
	}
	key, err := logins.LoadKey(keyPath)
	if err != nil {
		b.Fatal(err)
	}
	sealer, err := logins.NewSealer(key)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.SetKeySealer(ctx, sealer); err != nil {
		b.Fatal(err)
	}
	c := &benchCollector{st: st, metrics: NewMetrics(nil), caDER: authority.CertDER()}
	c.svc = New(Config{Store: st, CA: authority, Version: "bench", Logger: slog.New(slog.DiscardHandler), Metrics: c.metrics})
	cert, err := authority.ServerCertificate([]string{"localhost"}, now, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	c.svc.grpcOptions = opts
	srv := c.svc.NewGRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	c.addr = l.Addr().String()
	return c
}

func (c *benchCollector) dial(b *testing.B, cert *tls.Certificate) *grpc.ClientConn {
	b.Helper()
	cfg, err := pki.CATLSConfig(c.caDER, func() (*tls.Certificate, error) { return cert, nil })
	if err != nil {
		b.Fatal(err)
	}
	cfg.ServerName = "localhost"
	cc, err := grpc.NewClient("passthrough:///"+c.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return cc
}

// terminal enrolls a terminal through the Enroll RPC; the client holds
// its own connection.
func (c *benchCollector) terminal(b *testing.B) mnguardv1.AgentServiceClient {
	b.Helper()
	return mnguardv1.NewAgentServiceClient(c.dial(b, c.enroll(b)))
}

// enroll enrolls a terminal through the Enroll RPC and returns its
// certificate.
func (c *benchCollector) enroll(b *testing.B) *tls.Certificate {
	b.Helper()
	ctx := b.Context()
	secret, err := NewToken(enrollTokenPrefix)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{
		ID: secret[len(secret)-8:], Hash: HashToken(secret), CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), Uses: 1, UsesLeft: 1, CreatedBy: "bench",
	}, testAudit); err != nil {
		b.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		b.Fatal(err)
	}
	res, err := mnguardv1.NewAgentServiceClient(c.dial(b, nil)).Enroll(ctx, &mnguardv1.EnrollRequest{
		Token: secret, CsrDer: csr, Host: &mnguardv1.HostFacts{Hostname: "bench", Os: "linux"},
	})
	if err != nil {
		b.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{res.GetCertificateDer()}, PrivateKey: key}
}

// batches returns the number of batches stored so far and the seconds
// they took.
func (c *benchCollector) batches(b *testing.B) (uint64, float64) {
	var m dto.Metric
	if err := c.metrics.batchSeconds.Write(&m); err != nil {
		b.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// BenchmarkReport has 64 terminals, each on its own mutual-TLS connection,
// report a posture and an event as fast as they are answered, to one
// in-process collector on a real SQLite store: the collector's cost of a
// report (run with -cpuprofile to see where it goes; the clients' cost is
// in the same process). It reports reports per second the mean number
// of reports per transaction and its mean time.
func BenchmarkReport(b *testing.B) {
	c := startBenchCollector(b)
	const n = 64
	agents := make([]mnguardv1.AgentServiceClient, n)
	for i := range agents {
		agents[i] = c.terminal(b)
	}
	ctx := b.Context()
	for _, a := range agents {
		if _, err := a.Report(ctx, &mnguardv1.ReportRequest{Posture: goodPosture(time.Now())}); err != nil {
			b.Fatal(err)
		}
	}
	batches0, seconds0 := c.batches(b)
	var seq atomic.Uint64
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				p := goodPosture(time.Now())
				if _, err := a.Report(ctx, &mnguardv1.ReportRequest{Posture: p, Events: []*mnguardv1.Event{agentEvent(seq.Add(1), "bench.report")}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
	batches, seconds := c.batches(b)
	if batches -= batches0; batches > 0 {
		b.ReportMetric(float64(b.N)/float64(batches), "reports/batch")
		b.ReportMetric((seconds-seconds0)/float64(batches)*1000, "ms/batch")
	}
}
