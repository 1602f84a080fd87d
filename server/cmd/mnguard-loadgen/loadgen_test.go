package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// binDir holds mnguard-server, mnguardctl and mnguard-loadgen built from
// this tree by TestMain, with the Makefile's tags.
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		if runtime.GOOS != "linux" {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "mnguard-loadgen-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", dir+"/", "../mnguard-server", "../mnguardctl", ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
			return 1
		}
		binDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

func needBinaries(t *testing.T) {
	t.Helper()
	if binDir == "" {
		t.Skip("the collector runs on Linux here; this test starts it as a process")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startProc starts a binary of binDir; it is stopped (SIGINT, then SIGKILL)
// at cleanup, and its output logged when the test failed.
func startProc(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	out := &syncBuf{}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- %s ---\n%s", name, out.String())
		}
	})
	return cmd
}

// collector is a real mnguard-server on a fresh data directory.
type collector struct {
	dir, grpcAddr, pin string
	pid                int
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{dir: t.TempDir(), grpcAddr: freeAddr(t)}
	out, err := exec.Command(filepath.Join(binDir, "mnguard-server"), "init", "--data-dir", c.dir).Output()
	if err != nil {
		t.Fatalf("mnguard-server init: %v", err)
	}
	c.pin = strings.TrimSpace(string(out))
	httpAddr := freeAddr(t)
	c.pid = startProc(t, "mnguard-server", "serve", "--data-dir", c.dir, "--grpc-listen", c.grpcAddr, "--http-listen", httpAddr, "--log-level", "warn").Process.Pid
	caPEM, err := os.ReadFile(filepath.Join(c.dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := cl.Get("https://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not healthy within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *collector) ctl(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "mnguardctl"), append([]string{"--token-file", filepath.Join(c.dir, "admin.token")}, args...)...)
	cmd.Env = append(os.Environ(), "MNGUARD_SERVER="+c.grpcAddr, "MNGUARD_CA_PIN="+c.pin, "MNGUARD_TOKEN=", "MNGUARD_TOKEN_FILE=")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mnguardctl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out
}

// loadgen runs the load generator in this process with JSON output and
// returns its lines by type.
func loadgen(t *testing.T, args ...string) (summary map[string]any, lines []map[string]any) {
	t.Helper()
	var out, errb syncBuf
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if code := run(ctx, append(args, "--output", "json"), &out, &errb); code != 0 {
		t.Fatalf("mnguard-loadgen %s: exit %d: %s\n%s", strings.Join(args, " "), code, errb.String(), out.String())
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
		if m["type"] == "summary" {
			summary = m
		}
	}
	if summary == nil {
		t.Fatalf("no summary in:\n%s", out.String())
	}
	return summary, lines
}

func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("%s missing from %v", key, m)
	}
	return v
}

// TestSmoke: 50 simulated terminals enroll through the real Enroll RPC of a
// real collector, each holds its mutual-TLS connection and Subscribe
// stream, and reports every second for 10 s from 19 loopback addresses; the
// collector stored them; a second run takes every identity from the cache
// and enrolls nobody (no token given).
func TestSmoke(t *testing.T) {
	needBinaries(t)
	c := startCollector(t)
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(c.ctl(t, "tokens", "create", "--ttl", "1h", "--uses", "50", "-o", "json"), &tok); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	const agents, seconds = 50, 10
	sum, lines := loadgen(t, "--agents", fmt.Sprint(agents), "--interval", "1s", "--duration", fmt.Sprintf("%ds", seconds),
		"--server", c.grpcAddr, "--token", tok.Token, "--ca-pin", c.pin, "--state-dir", state,
		"--events-per-report", "2", "--source-ips", "127.0.0.2-127.0.0.20", "--host-prefix", "smoke")
	t.Logf("summary: %v", sum)
	if n := num(t, sum, "errors"); n != 0 {
		t.Errorf("%v errors: %v", n, sum["errors_by_code"])
	}
	if n := num(t, sum, "streams"); n != agents {
		t.Errorf("%v streams at the end, want %d", n, agents)
	}
	// One report a second each, the first at a random offset in the
	// first second: between 9 and 10 per terminal.
	reports := num(t, sum, "reports")
	if reports < agents*(seconds-1) || reports > agents*seconds {
		t.Errorf("%v reports, want %d to %d", reports, agents*(seconds-1), agents*seconds)
	}
	if ev := num(t, sum, "events"); ev != 2*reports {
		t.Errorf("%v events in %v reports of 2", ev, reports)
	}
	if p50, p99, mx := num(t, sum, "p50_ms"), num(t, sum, "p99_ms"), num(t, sum, "max_ms"); !(p50 > 0 && p50 <= p99 && p99 <= mx) {
		t.Errorf("latencies p50 %v p99 %v max %v", p50, p99, mx)
	}
	if pid := num(t, sum, "server_pid"); int(pid) != c.pid {
		t.Errorf("collector pid %v found by its address, want %d", pid, c.pid)
	}
	if rss := num(t, sum, "server_rss_kb"); rss < 1024 {
		t.Errorf("collector rss %v KiB", rss)
	}
	var seconds0 int
	for _, l := range lines {
		if l["type"] == "second" {
			seconds0++
		}
	}
	if seconds0 < seconds-1 {
		t.Errorf("%d per-second lines in a %ds run", seconds0, seconds)
	}

	// What the collector holds: every terminal, each reported.
	var list struct {
		Terminals []struct {
			Host struct {
				Hostname string `json:"hostname"`
			} `json:"host"`
			LastSeenAt *string `json:"last_seen_at"`
		} `json:"terminals"`
	}
	if err := json.Unmarshal(c.ctl(t, "terminals", "list", "-o", "json"), &list); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, term := range list.Terminals {
		if strings.HasPrefix(term.Host.Hostname, "smoke-") && term.LastSeenAt != nil {
			seen++
		}
	}
	if seen != agents {
		t.Errorf("the collector lists %d reported smoke- terminals, want %d", seen, agents)
	}

	// With a warm-up: the terminals report through it (5 s in all), only
	// the 3 s after it count, about 3 reports each.
	sum, _ = loadgen(t, "--agents", fmt.Sprint(agents), "--interval", "1s", "--warmup", "2s", "--duration", "3s",
		"--server", c.grpcAddr, "--ca-pin", c.pin, "--state-dir", state, "--host-prefix", "smoke")
	if r, secs := num(t, sum, "reports"), num(t, sum, "seconds"); r < agents*2 || r > agents*3+agents/5 || secs < 2.9 || secs > 3.5 || num(t, sum, "errors") != 0 {
		t.Errorf("warm-up run: %v reports in %vs, want about %d in 3s: %v", r, secs, agents*3, sum)
	}

	// Again, idle: nobody enrolls (there is no token), every stream is up.
	sum, lines = loadgen(t, "--agents", fmt.Sprint(agents), "--interval", "0", "--duration", "2s",
		"--server", c.grpcAddr, "--ca-pin", c.pin, "--state-dir", state, "--host-prefix", "smoke")
	if n := num(t, sum, "streams"); n != agents || num(t, sum, "reports") != 0 || num(t, sum, "errors") != 0 {
		t.Errorf("idle rerun: %v", sum)
	}
	if msg, _ := lines[0]["msg"].(string); !strings.Contains(msg, fmt.Sprintf("all %d cached", agents)) {
		t.Errorf("first line of the rerun %q, want every identity cached", msg)
	}
}

// TestBaseline: the plain grpc-go peer, a real process, holds a health
// Watch stream per terminal over mutual TLS and answers health checks; a
// client certificate from another CA is refused in the handshake.
func TestBaseline(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	startProc(t, "mnguard-loadgen", "baseline-server", "--listen", addr, "--data-dir", dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("baseline server not listening within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sum, _ := loadgen(t, "--baseline", "--baseline-dir", dir, "--agents", "50", "--interval", "1s", "--duration", "3s", "--server", addr)
	if num(t, sum, "streams") != 50 || num(t, sum, "errors") != 0 || num(t, sum, "reports") < 100 {
		t.Errorf("baseline: %v", sum)
	}

	// Terminals whose certificates come from a different CA: no stream.
	other := t.TempDir()
	if _, err := loadOrCreateBaselineCA(other); err != nil {
		t.Fatal(err)
	}
	ca, _ := loadOrCreateBaselineCA(dir)
	bad, _ := loadOrCreateBaselineCA(other)
	cert, err := bad.issue("stranger", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.CATLSConfig(ca.cert.Raw, func() (*tls.Certificate, error) { return cert, nil })
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "127.0.0.1"
	conn, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		// TLS 1.3: the client learns of the refusal at its first read.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a certificate of another CA: %v, want a refusal", err)
	}
}

func TestConfigErrors(t *testing.T) {
	base := []string{"--agents", "10", "--server", "127.0.0.1:1", "--ca-pin", "sha256:" + strings.Repeat("ab", 32)}
	if _, err := parseConfig(base, &bytes.Buffer{}); err != nil {
		t.Fatalf("valid flags: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--server", "127.0.0.1:1"}, "--agents 0"},
		{[]string{"--agents", "10"}, "--server missing"},
		{[]string{"--agents", "10", "--server", "127.0.0.1"}, "is not HOST:PORT"},
		{[]string{"--agents", "10", "--server", "127.0.0.1:1"}, "--ca-pin missing"},
		{[]string{"--agents", "10", "--server", "127.0.0.1:1", "--ca-pin", "nope"}, "--ca-pin"},
		{append(base, "--interval", "10ms"), "want 0 (idle) or at least"},
		{append(base, "--duration", "-1s"), "negative"},
		{append(base, "--warmup", "-1s"), "--warmup -1s is negative"},
		{append(base, "--events-per-report", "5000"), "want 0 to 1000"},
		{append(base, "--source-ips", "127.0.0.9-127.0.0.1"), "ends before it starts"},
		{append(base, "--output", "xml"), "want text or json"},
		{append(base, "--host-prefix", "a/b"), "--host-prefix"},
		{[]string{"--agents", "10", "--server", "127.0.0.1:1", "--baseline"}, "--baseline-dir"},
		{append(base, "extra"), "unexpected argument"},
	} {
		if _, err := parseConfig(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q) = %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
