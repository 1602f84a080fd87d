package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metricsClient is an HTTPS client with a metrics client certificate that
// 'mnguard-server metrics-cert' issued from the collector's CA.
func (c *collector) metricsClient(t testing.TB) *http.Client {
	t.Helper()
	dir := t.TempDir()
	if _, errOut, code := run(t, nil, "mnguard-server", "metrics-cert", "--data-dir", c.dir, "--out", dir); code != 0 {
		t.Fatalf("mnguard-server metrics-cert: exit %d: %s", code, errOut)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "metrics.crt"), filepath.Join(dir, "metrics.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: c.caPool(t), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert},
	}}}
}

// metric scrapes /metrics with cl and returns the value of the unlabelled
// metric name.
func (c *collector) metric(t testing.TB, cl *http.Client, name string) float64 {
	t.Helper()
	resp, err := cl.Get("https://" + c.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// rssBytes is the resident set size of process pid.
func rssBytes(t testing.TB, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// floodResult is what subscribeFlood saw.
type floodResult struct {
	opened   int            // streams that got their first push
	refused  int            // attempts refused before the first push
	ended    map[string]int // streams ended by the collector, by code
	duration time.Duration
}

// subscribeFlood makes attempts Subscribe calls with one terminal's
// certificate over conns connections, 16 at a time, and leaves every
// stream open that the collector leaves open. check, when set, runs after
// every 500 attempts. The streams are closed when tb ends.
func subscribeFlood(tb testing.TB, c *collector, cert *tls.Certificate, attempts, conns int, check func(done int)) floodResult {
	tb.Helper()
	clients := make([]mnguardv1.AgentServiceClient, conns)
	for i := range clients {
		clients[i] = dialAs(tb, c, cert, grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu      sync.Mutex
		res     = floodResult{ended: map[string]int{}}
		next    atomic.Int64
		wg      sync.WaitGroup
		readers sync.WaitGroup
	)
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= attempts {
					return
				}
				sctx, scancel := context.WithCancel(ctx)
				callCtx, callCancel := context.WithTimeout(sctx, 10*time.Second)
				stream, err := clients[i%conns].Subscribe(sctx, &mnguardv1.SubscribeRequest{})
				if err == nil {
					// The first push says the stream is registered.
					done := make(chan error, 1)
					go func() { _, err := stream.Recv(); done <- err }()
					select {
					case err = <-done:
					case <-callCtx.Done():
						err = callCtx.Err()
					}
				}
				callCancel()
				mu.Lock()
				if err != nil {
					res.refused++
					mu.Unlock()
					scancel()
				} else {
					res.opened++
					mu.Unlock()
					readers.Add(1)
					go func() {
						defer readers.Done()
						defer scancel()
						for {
							if _, err := stream.Recv(); err != nil {
								if ctx.Err() == nil {
									mu.Lock()
									res.ended[status.Code(err).String()]++
									mu.Unlock()
								}
								return
							}
						}
					}()
				}
				if check != nil && (i+1)%500 == 0 {
					check(i + 1)
				}
			}
		}()
	}
	wg.Wait()
	res.duration = time.Since(start)
	tb.Cleanup(func() {
		cancel()
		readers.Wait()
	})
	mu.Lock()
	defer mu.Unlock()
	out := res
	out.ended = make(map[string]int, len(res.ended))
	for k, v := range res.ended {
		out.ended[k] = v
	}
	return out
}

// maxStreams is the collector's default cap of Subscribe streams per
// terminal (api.DefaultMaxStreamsPerTerminal).
const maxStreams = 2

// TestSubscribeFloodCapped: 10,000 Subscribe attempts with one terminal's
// certificate, over 10 connections, leave at most the cap of streams open
// at any time (the metrics gauge, read every 500 attempts); each stream
// the flood pushes out ends with ResourceExhausted; the terminal's newest
// stream and another terminal's stream stay up.
func TestSubscribeFloodCapped(t *testing.T) {
	c := newCollector(t, "--log-level", "warn")
	flooder := enrollInProcess(t, c, c.token(t, "1h", 1), "flooder")
	bystander := enrollInProcess(t, c, c.token(t, "1h", 1), "bystander")
	mc := c.metricsClient(t)

	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	bstream, err := dialAs(t, c, bystander.TLSCertificate()).Subscribe(bctx, &mnguardv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bstream.Recv(); err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	res := subscribeFlood(t, c, flooder.TLSCertificate(), 10000, 10, func(done int) {
		n := int64(c.metric(t, mc, "mnguard_agent_streams"))
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if n > maxStreams+1 {
			t.Errorf("after %d attempts: %d streams open, want at most %d of the flooder and 1 of the bystander", done, n, maxStreams)
		}
	})
	t.Logf("10,000 attempts in %s: %d opened, %d refused, ended by the collector %v; peak gauge %d", res.duration.Round(time.Millisecond), res.opened, res.refused, res.ended, peak.Load())
	if t.Failed() {
		return
	}
	eventually(t, 5*time.Second, func() error {
		if n := c.metric(t, mc, "mnguard_agent_streams"); n != maxStreams+1 {
			return fmt.Errorf("%v streams open, want %d of the flooder and the bystander's", n, maxStreams)
		}
		return nil
	})
	if res.opened+res.refused != 10000 || res.opened < 9000 {
		t.Errorf("%d of 10,000 attempts opened a stream, %d refused: the cap should replace streams, not refuse them", res.opened, res.refused)
	}
	eventually(t, 5*time.Second, func() error {
		if got := c.metric(t, mc, "mnguard_agent_streams_replaced_total"); got != float64(res.opened-maxStreams) {
			return fmt.Errorf("mnguard_agent_streams_replaced_total = %v, want %d", got, res.opened-maxStreams)
		}
		return nil
	})
	// The bystander is still served, and its stream still up.
	if _, err := dialAs(t, c, bystander.TLSCertificate()).Report(context.Background(), &mnguardv1.ReportRequest{Posture: validPosture("bystander")}); err != nil {
		t.Errorf("bystander report: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := bstream.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		t.Errorf("bystander's stream ended: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	for code, n := range res.ended {
		if code != codes.ResourceExhausted.String() {
			t.Errorf("%d streams ended with %s, want ResourceExhausted", n, code)
		}
	}
}

// TestConnectionsPerAddressCapped: with --max-conns-per-ip 8, a ninth
// connection from one address is closed at once, before TLS, while another
// address still connects, and the agent API works for it.
func TestConnectionsPerAddressCapped(t *testing.T) {
	const max = 8
	c := newCollector(t, "--max-conns-per-ip", strconv.Itoa(max))
	id := enrollInProcess(t, c, c.token(t, "1h", 1), "capped")
	dial := func(local string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		conn, err := d.Dial("tcp", c.grpcAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	closed := func(conn net.Conn, within time.Duration) bool {
		conn.SetReadDeadline(time.Now().Add(within))
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	// Connections of the enrollment and mnguardctl may still count for a
	// moment: of max+4 connections, at most max stay open, the rest are
	// closed at once.
	open := 0
	for range max + 4 {
		if !closed(dial("127.0.0.1"), 500*time.Millisecond) {
			open++
		}
	}
	if open > max || open < max-2 {
		t.Fatalf("%d of %d connections from 127.0.0.1 stayed open, want %d (or up to 2 fewer while earlier ones close)", open, max+4, max)
	}
	if closed(dial("127.0.0.3"), 300*time.Millisecond) {
		t.Fatal("a connection from 127.0.0.3 was closed")
	}
	// A terminal on another address is served.
	cfg := id.TLSCertificate()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.4")}}
	cl := dialAs(t, c, cfg, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if _, err := cl.Report(context.Background(), &mnguardv1.ReportRequest{Posture: validPosture("capped")}); err != nil {
		t.Errorf("report from 127.0.0.4: %v", err)
	}
}
