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
	"sync/atomic"
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

// sim is one simulated agent.
type sim struct {
	cl   mnguardv1.AgentServiceClient
	host string
	seq  *atomic.Uint64
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
			sims[i] = sim{cl: mnguardv1.NewAgentServiceClient(conn), host: host, seq: new(atomic.Uint64)}
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
	// Phase 1, saturation: every agent reports again as soon as it has its
	// answer. This gives the most reports per second the collector takes;
	// latency here is mostly queueing.
	sat := loadPhase(ctx, sims, seconds, 0)
	// Phase 2, a steady offered load below saturation (default 500 reports/s:
	// 30,000 terminals at the 60 s interval), spread evenly over the agents:
	// the latency a terminal sees in a large deployment.
	rate := envInt("MNGUARD_BENCH_RATE", 500)
	paced := loadPhase(ctx, sims, seconds, rate)
	b.StopTimer()
	b.ReportMetric(sat.rate, "reports/s")
	b.ReportMetric(ms(sat.p99), "sat_p99_ms")
	b.ReportMetric(ms(paced.p50), "paced_p50_ms")
	b.ReportMetric(ms(paced.p99), "paced_p99_ms")
	b.ReportMetric(ms(paced.sentP50), "paced_sent_p50_ms")
	b.ReportMetric(ms(paced.sentP99), "paced_sent_p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("ingest, saturation: %d agents over mTLS, %d reports in %s: %.0f reports/s, p50 %s, p99 %s, %d errors\n",
		agents, sat.n, sat.elapsed.Round(time.Millisecond), sat.rate, sat.p50, sat.p99, sat.failed)
	fmt.Printf("ingest, paced at %d reports/s: %d agents, %d reports in %s: %.0f reports/s, from the scheduled send p50 %s, p99 %s (from the actual send p50 %s, p99 %s), %d errors\n",
		rate, agents, paced.n, paced.elapsed.Round(time.Millisecond), paced.rate, paced.p50, paced.p99, paced.sentP50, paced.sentP99, paced.failed)
	failed := sat.failed + paced.failed
	if failed > 0 {
		b.Errorf("%d reports failed", failed)
	}
}

type phaseResult struct {
	n, failed int
	elapsed   time.Duration
	rate      float64
	// p50 and p99 are measured from when each report was due by the
	// schedule (paced) or sent (saturation); sentP50 and sentP99 from when
	// it was sent, which hides the wait of a report whose agent was still
	// busy with the one before (coordinated omission).
	p50, p99         time.Duration
	sentP50, sentP99 time.Duration
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// loadPhase has every simulated agent report for the given time, as fast as
// answers come (rate 0) or together at rate reports per second. Paced, each
// agent's reports are due at fixed times; one that is late because the
// agent still waits for the answer before is sent as soon as it can be, and
// its latency counts from when it was due.
func loadPhase(ctx context.Context, sims []sim, seconds, rate int) phaseResult {
	lat := make([][]time.Duration, len(sims))
	sent := make([][]time.Duration, len(sims))
	errs := make([]int, len(sims))
	start := time.Now()
	deadline := start.Add(time.Duration(seconds) * time.Second)
	var every time.Duration
	if rate > 0 {
		every = time.Duration(float64(len(sims)) / float64(rate) * float64(time.Second))
	}
	var wg sync.WaitGroup
	for i, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start
			if every > 0 { // spread the agents' phases evenly
				next = start.Add(every * time.Duration(i) / time.Duration(len(sims)))
			}
			for seq := uint64(1); ; seq++ {
				due := time.Now()
				if every > 0 {
					due = next
					next = next.Add(every)
				}
				if due.After(deadline) {
					return
				}
				time.Sleep(time.Until(due))
				req := &mnguardv1.ReportRequest{Posture: benchPosture(s.host, seq), Events: []*mnguardv1.Event{ev(s.seq.Add(1), "bench.report")}}
				t0 := time.Now()
				if every == 0 {
					due = t0
				}
				if _, err := s.cl.Report(ctx, req); err != nil {
					errs[i]++
					continue
				}
				done := time.Now()
				lat[i] = append(lat[i], done.Sub(due))
				sent[i] = append(sent[i], done.Sub(t0))
			}
		}()
	}
	wg.Wait()
	res := phaseResult{elapsed: time.Since(start)}
	var all, allSent []time.Duration
	for i := range lat {
		all = append(all, lat[i]...)
		allSent = append(allSent, sent[i]...)
		res.failed += errs[i]
	}
	res.n = len(all)
	if res.n == 0 {
		return res
	}
	slices.Sort(all)
	slices.Sort(allSent)
	pct := func(d []time.Duration, p float64) time.Duration {
		return d[int(float64(len(d)-1)*p)].Round(10 * time.Microsecond)
	}
	res.rate = float64(res.n) / res.elapsed.Seconds()
	res.p50, res.p99 = pct(all, 0.50), pct(all, 0.99)
	res.sentP50, res.sentP99 = pct(allSent, 0.50), pct(allSent, 0.99)
	return res
}
