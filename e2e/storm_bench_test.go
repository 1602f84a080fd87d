package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkReconnectStorm: every terminal (MNGUARD_BENCH_STORM_AGENTS,
// default the capacity benchmark's 19,500, whose enrolled collector it
// shares) holds its connection and Subscribe stream; the collector is
// killed with SIGKILL and started again on the same data directory and
// address; the load generator's terminals reconnect as agents do (full
// jitter: after the n-th failure in a row a random wait up to
// 0.5 s·2^n, at most 10 s; TLS session resumption). It reports the time until every stream is back, from the
// new collector answering its health check and from the kill, and the
// terminals per second (target: 2,000).
func BenchmarkReconnectStorm(b *testing.B) {
	agents := envInt("MNGUARD_BENCH_STORM_AGENTS", capacityAgents())
	cache := benchCacheDir(b, fmt.Sprintf("capacity-%d", agents))
	state := filepath.Join(cache, "loadgen")
	s := newBenchCollector(b, bin("mnguard-server"), filepath.Join(cache, "collector"))
	ensureEnrolled(b, s, state, agents, "cap")
	s.proc.stop(b)
	s.start(b)

	r := startLoad(b, s, state, "--agents", fmt.Sprint(agents), "--interval", "0", "--duration", "0", "--host-prefix", "cap")
	// The first connection of all.
	deadline := time.After(10 * time.Minute)
	var first string
	for first == "" {
		select {
		case m, ok := <-r.lines:
			if !ok {
				b.Fatalf("mnguard-loadgen ended: %v\n%s", r.proc.err, lastLines(r.proc.out.String(), 40))
			}
			r.note(b, m)
			if msg, _ := m["msg"].(string); strings.HasPrefix(msg, "connected:") {
				first = msg
			}
		case <-deadline:
			b.Fatal("the terminals did not all connect within 10 minutes")
		}
	}
	// Settle, then the crash.
	settle := time.After(5 * time.Second)
	for wait := true; wait; {
		select {
		case m := <-r.lines:
			r.note(b, m)
		case <-settle:
			wait = false
		}
	}
	b.ResetTimer()
	genCPU0, err := procCPU(r.proc.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	killed := time.Now()
	s.kill(b)
	restarted := time.Now()
	s.start(b)
	healthy := time.Now()
	var back time.Time
	minStreams := float64(agents)
	var curve []string // streams each second, from healthy
	deadline = time.After(5 * time.Minute)
	for back.IsZero() {
		select {
		case m, ok := <-r.lines:
			if !ok {
				b.Fatalf("mnguard-loadgen ended: %v\n%s", r.proc.err, lastLines(r.proc.out.String(), 40))
			}
			r.note(b, m)
			if m["type"] != "second" {
				continue
			}
			streams := f64(m, "streams")
			minStreams = min(minStreams, streams)
			curve = append(curve, fmt.Sprintf("%.0fs:%.0f", time.Since(healthy).Seconds(), streams))
			if at := int64(f64(m, "all_connected_at_unix_ns")); streams == float64(agents) && at > restarted.UnixNano() {
				back = time.Unix(0, at)
			}
		case <-deadline:
			b.Fatalf("not every stream back within 5 minutes of the restart")
		}
	}
	b.StopTimer()
	// The CPU the storm took: the new collector's from its start (its
	// startup included), the load generator's from the kill.
	srvCPU, err1 := procCPU(s.pid())
	genCPU, err2 := procCPU(r.proc.cmd.Process.Pid)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	genCPU -= genCPU0
	r.proc.stop(b)
	sum := r.wait(b)
	fromHealthy, fromKill := back.Sub(healthy), back.Sub(killed)
	rate := float64(agents) / fromHealthy.Seconds()
	fmt.Printf("reconnect storm: %d terminals (%s); collector killed (SIGKILL), started again in %s (healthy); streams down to %.0f; all %d back %s after it was healthy, %s after the kill: %.0f terminals/s (target 2,000: %s); reconnects counted %.0f (on a resumed TLS session: %.0f), errors while down %v\n",
		agents, first, healthy.Sub(restarted).Round(time.Millisecond), minStreams, agents, fromHealthy.Round(time.Millisecond), fromKill.Round(time.Millisecond),
		rate, verdict(rate >= 2000), f64(sum, "reconnects"), f64(sum, "tls_resumed"), sum["errors_by_code"])
	fmt.Printf("  streams each second after healthy: %s\n  last error of each kind: %v\n", strings.Join(curve, " "), sum["last_errors"])
	// Both share this machine's cores: the rate the collector's own work
	// allows is the cores over its CPU time a terminal.
	perTerm := srvCPU / time.Duration(agents)
	fmt.Printf("  CPU: the collector %s (%s a terminal: %.0f terminals/s on %d cores of its own), the load generator on the same cores %s (%s a terminal)\n",
		srvCPU.Round(time.Millisecond), perTerm.Round(time.Microsecond), float64(runtime.NumCPU())/perTerm.Seconds(), runtime.NumCPU(),
		genCPU.Round(time.Millisecond), (genCPU / time.Duration(agents)).Round(time.Microsecond))
	b.ReportMetric(perTerm.Seconds()*1e3, "collector_cpu_ms/terminal")
	if f64(sum, "reconnects") < float64(agents) {
		b.Errorf("%v reconnects counted, want every one of %d terminals", sum["reconnects"], agents)
	}
	b.ReportMetric(rate, "terminals/s")
	b.ReportMetric(fromHealthy.Seconds(), "s_from_healthy")
	b.ReportMetric(fromKill.Seconds(), "s_from_kill")
	b.ReportMetric(0, "ns/op")
}
