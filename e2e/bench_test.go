package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchPosture is about the size of a real terminal's snapshot.
func benchPosture(host string, uptime uint64) *mnguardv1.Posture {
	p := validPosture(host)
	p.UptimeSeconds = uptime
	p.CpuModel = "Intel(R) Core(TM) i5-10310U CPU @ 1.70GHz"
	p.MemoryTotalBytes = 16 << 30
	p.BootTime = timestamppb.New(time.Now().Add(-time.Hour))
	p.Host.Platform, p.Host.PlatformVersion, p.Host.KernelVersion = "debian", "12.8", "6.1.0-28-amd64"
	for i := range 3 {
		p.Interfaces = append(p.Interfaces, &mnguardv1.NetworkInterface{
			Name: fmt.Sprintf("eth%d", i), HardwareAddr: "52:54:00:12:34:5" + strconv.Itoa(i),
			Addrs: []string{fmt.Sprintf("10.20.%d.15/24", i), "fe80::5054:ff:fe12:3456/64"}, Flags: []string{"up", "broadcast", "multicast"}, Mtu: 1500,
		})
	}
	p.UsbDevices = []*mnguardv1.UsbDevice{
		{Bus: 1, Address: 2, VendorId: "046d", ProductId: "c077", Product: "USB Optical Mouse", Interfaces: []*mnguardv1.UsbInterface{{Class: 3, ClassName: "hid"}}},
		{Bus: 1, Address: 3, VendorId: "0781", ProductId: "5567", Serial: "4C530001230809116354", Product: "Cruzer Blade", Interfaces: []*mnguardv1.UsbInterface{{Class: 8, Subclass: 6, Protocol: 0x50, ClassName: "mass-storage"}}},
	}
	return p
}

// BenchmarkIngest measures one collector on this machine ingesting posture
// reports (each with one event) from many simulated agents, every one with
// its own certificate and its own mutual-TLS connection from its own
// loopback address. The load generator is this test process; the collector
// is a separate mnguard-server process. Tune with MNGUARD_BENCH_AGENTS
// (default 500) and MNGUARD_BENCH_SECONDS (default 10).
func BenchmarkIngest(b *testing.B) {
	agents := envInt("MNGUARD_BENCH_AGENTS", 500)
	seconds := envInt("MNGUARD_BENCH_SECONDS", 10)
	c := newCollector(b, "--log-level", "warn")
	tok := c.token(b, "1h", agents)

	type sim struct {
		cl   mnguardv1.AgentServiceClient
		host string
	}
	sims := make([]sim, agents)
	stateRoot := b.TempDir()
	enrollStart := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range sims {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			host := fmt.Sprintf("bench-%04d", i)
			id, err := enrollIdentity(c, tok, host, filepath.Join(stateRoot, host))
			if err != nil {
				b.Error(err)
				return
			}
			cert := id.TLSCertificate()
			cfg, err := pki.CATLSConfig(id.CA.Raw, func() (*tls.Certificate, error) { return cert, nil })
			if err != nil {
				b.Error(err)
				return
			}
			cfg.ServerName = "127.0.0.1"
			// Spread source addresses over 127.0.0.0/8.
			local := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(1+i%250))}
			d := &net.Dialer{LocalAddr: local}
			conn, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
			if err != nil {
				b.Error(err)
				return
			}
			b.Cleanup(func() { conn.Close() })
			sims[i] = sim{cl: mnguardv1.NewAgentServiceClient(conn), host: host}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	b.Logf("enrolled %d agents in %s", agents, time.Since(enrollStart).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Connect everyone first, so handshakes are not in the figures.
	for _, s := range sims {
		if _, err := s.cl.Report(ctx, &mnguardv1.ReportRequest{Posture: benchPosture(s.host, 0)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	lat := make([][]time.Duration, agents)
	errs := make([]int, agents)
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	for i, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); time.Now().Before(deadline); seq++ {
				req := &mnguardv1.ReportRequest{Posture: benchPosture(s.host, seq), Events: []*mnguardv1.Event{ev(seq, "bench.report")}}
				t0 := time.Now()
				if _, err := s.cl.Report(ctx, req); err != nil {
					errs[i]++
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var all []time.Duration
	failed := 0
	for i := range lat {
		all = append(all, lat[i]...)
		failed += errs[i]
	}
	if len(all) == 0 {
		b.Fatal("no report succeeded")
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration { return all[int(float64(len(all)-1)*p)] }
	rate := float64(len(all)) / elapsed.Seconds()
	b.ReportMetric(rate, "reports/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("ingest: %d agents over mTLS, %d reports in %s: %.0f reports/s, p50 %s, p99 %s, %d errors\n",
		agents, len(all), elapsed.Round(time.Millisecond), rate, pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), failed)
	if failed > 0 {
		b.Errorf("%d reports failed", failed)
	}
}
