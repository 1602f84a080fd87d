package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"
)

// stats counts what the terminals see. Latencies and counters of the
// current second are printed and reset every second; the totals count only
// the measured phase (after every terminal first connected).
type stats struct {
	target int64

	streams        atomic.Int64
	reconnects     atomic.Int64
	resumed        atomic.Int64 // streams up on a resumed TLS session
	allConnectedAt atomic.Int64 // UnixNano of the last time every stream was up
	allUp          chan struct{}
	allUpOnce      sync.Once

	mu         sync.Mutex
	measuring  bool
	sec, total histogram
	secReports int64
	secEvents  int64
	secErrors  int64
	totReports int64
	totEvents  int64
	errors     map[string]int64 // "report Unavailable": count, whole run
	// measuredErrors are those of the measured phase: the summary's. The
	// first connection's (handshakes that outwait gRPC's connect timeout
	// on a loaded machine) are only in errors.
	measuredErrors map[string]int64
	// lastError is the last message of each kind of error, for the
	// summary: a count by code does not say why.
	lastError map[string]string
}

func newStats(target int) *stats {
	return &stats{target: int64(target), allUp: make(chan struct{}), errors: map[string]int64{}, measuredErrors: map[string]int64{}, lastError: map[string]string{}}
}

func (s *stats) streamUp(reconnect bool) {
	if reconnect {
		s.reconnects.Add(1)
	}
	if s.streams.Add(1) == s.target {
		s.allConnectedAt.Store(time.Now().UnixNano())
		s.allUpOnce.Do(func() { close(s.allUp) })
	}
}

func (s *stats) streamDown() { s.streams.Add(-1) }

// waitAll waits until every terminal's stream is up, or ctx ends.
func (s *stats) waitAll(ctx context.Context) int64 {
	select {
	case <-s.allUp:
	case <-ctx.Done():
	}
	return s.streams.Load()
}

func (s *stats) fail(what string, err error) {
	key := what + " " + status.Code(err).String()
	msg := status.Convert(err).Message()
	if len(msg) > 300 {
		msg = msg[:300]
	}
	s.mu.Lock()
	s.errors[key]++
	s.lastError[key] = msg
	if s.measuring {
		s.measuredErrors[key]++
	}
	s.secErrors++
	s.mu.Unlock()
}

func (s *stats) reported(lat time.Duration, events int) {
	s.mu.Lock()
	s.sec.add(lat)
	s.secReports++
	s.secEvents += int64(events)
	if s.measuring {
		s.total.add(lat)
		s.totReports++
		s.totEvents += int64(events)
	}
	s.mu.Unlock()
}

func (s *stats) startMeasure() { s.mu.Lock(); s.measuring = true; s.mu.Unlock() }
func (s *stats) stopMeasure()  { s.mu.Lock(); s.measuring = false; s.mu.Unlock() }

// monitor reads the collector's and this process's memory and CPU.
type monitor struct {
	pid                  int
	rss0                 int64 // the collector's RSS before any terminal connected
	markCPU, markSelfCPU time.Duration
	markAt               time.Time
	lastCPU              time.Duration
	lastAt               time.Time
}

func newMonitor(pid int) *monitor {
	m := &monitor{pid: pid, lastAt: time.Now()}
	if pid > 0 {
		m.rss0, m.lastCPU, _ = readProc(pid)
	}
	return m
}

func (m *monitor) mark() {
	m.markAt = time.Now()
	if m.pid > 0 {
		_, m.markCPU, _ = readProc(m.pid)
	}
	_, m.markSelfCPU, _ = readProc(os.Getpid())
}

// second returns the collector's RSS and its CPU use since the last call,
// in % of one core; ok false when it cannot be read.
func (m *monitor) second() (rss int64, cpuPct float64, ok bool) {
	if m.pid <= 0 {
		return 0, 0, false
	}
	rss, cpu, err := readProc(m.pid)
	if err != nil {
		return 0, 0, false
	}
	now := time.Now()
	cpuPct = 100 * float64(cpu-m.lastCPU) / float64(now.Sub(m.lastAt))
	m.lastCPU, m.lastAt = cpu, now
	return rss, cpuPct, true
}

func (g *gen) printLoop(ctx context.Context, mon *monitor) {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s := g.st
			s.mu.Lock()
			h := s.sec
			s.sec = histogram{}
			reps, evs, errs := s.secReports, s.secEvents, s.secErrors
			s.secReports, s.secEvents, s.secErrors = 0, 0, 0
			errMap := make(map[string]int64, len(s.errors))
			for k, v := range s.errors {
				errMap[k] = v
			}
			s.mu.Unlock()
			el := now.Sub(last).Seconds()
			last = now
			rss, cpu, ok := mon.second()
			line := map[string]any{
				"type": "second", "t": int(now.Sub(start).Seconds() + 0.5),
				"reports_per_s": float64(reps) / el, "events_per_s": float64(evs) / el,
				"p50_ms": ms(h.quantile(0.5)), "p99_ms": ms(h.quantile(0.99)), "max_ms": ms(h.maxDur()),
				"errors": errs, "errors_by_code": errMap,
				"streams": s.streams.Load(), "target": s.target, "reconnects": s.reconnects.Load(), "tls_resumed": s.resumed.Load(),
				"all_connected_at_unix_ns": s.allConnectedAt.Load(),
			}
			if ok {
				line["server_rss_kb"], line["server_cpu_pct"] = rss>>10, cpu
			}
			g.emit(line, func(w io.Writer) {
				fmt.Fprintf(w, "%4ds  %6.0f reports/s %7.0f events/s  p50 %7.1fms p99 %7.1fms max %7.1fms  streams %d/%d reconnects %d (tls resumed %d)  errors %d %s",
					line["t"], line["reports_per_s"], line["events_per_s"], line["p50_ms"], line["p99_ms"], line["max_ms"],
					line["streams"], s.target, line["reconnects"], line["tls_resumed"], errs, fmtErrors(errMap))
				if ok {
					fmt.Fprintf(w, "  collector rss %.1f MiB cpu %.1f%%", float64(rss)/(1<<20), cpu)
				}
				fmt.Fprintln(w)
			})
		}
	}
}

// summary prints the measured phase's totals: rates, latency from the
// scheduled send, errors, streams, and the collector's memory per stream
// (its RSS now less its RSS before any terminal connected) and CPU over the
// phase.
func (g *gen) summary(mon *monitor, now time.Time, el time.Duration) {
	s := g.st
	s.mu.Lock()
	h := s.total
	reps, evs := s.totReports, s.totEvents
	errMap := make(map[string]int64, len(s.measuredErrors))
	var nerr, nall int64
	for k, v := range s.measuredErrors {
		errMap[k] = v
		nerr += v
	}
	for _, v := range s.errors {
		nall += v
	}
	last := maps.Clone(s.lastError)
	s.mu.Unlock()
	secs := el.Seconds()
	streams := s.streams.Load()
	line := map[string]any{
		"type": "summary", "agents": s.target, "seconds": secs, "interval_s": g.cfg.interval.Seconds(), "baseline": g.cfg.baseline,
		"reports": reps, "events": evs,
		"reports_per_s": rate(reps, secs), "events_per_s": rate(evs, secs),
		"p50_ms": ms(h.quantile(0.5)), "p99_ms": ms(h.quantile(0.99)), "max_ms": ms(h.maxDur()),
		"errors": nerr, "errors_by_code": errMap, "connect_errors": nall - nerr, "streams": streams, "reconnects": s.reconnects.Load(), "tls_resumed": s.resumed.Load(),
		"last_errors": last,
	}
	if rss, cpu, err := readProc(os.Getpid()); err == nil {
		line["loadgen_rss_kb"] = rss >> 10
		if secs > 0 {
			line["loadgen_cpu_pct"] = 100 * float64(cpu-mon.markSelfCPU) / float64(el)
		}
	}
	if mon.pid > 0 {
		if rss, cpu, err := readProc(mon.pid); err == nil {
			line["server_pid"] = mon.pid
			line["server_rss_kb"], line["server_rss_before_kb"] = rss>>10, mon.rss0>>10
			if streams > 0 {
				line["server_rss_per_stream_kb"] = float64(rss-mon.rss0) / 1024 / float64(streams)
			}
			if secs > 0 {
				pct := 100 * float64(cpu-mon.markCPU) / float64(el)
				line["server_cpu_pct"] = pct
				if streams > 0 {
					line["server_cpu_pct_per_1000"] = pct * 1000 / float64(streams)
				}
			}
		}
	}
	g.emit(line, func(w io.Writer) {
		fmt.Fprintf(w, "summary: %d terminals over %.1fs: %d reports (%.1f/s), %d events (%.1f/s); from the scheduled send p50 %.1fms p99 %.1fms max %.1fms; streams %d, reconnects %d (tls resumed %d), errors %d %s (and %d during the first connection)\n",
			s.target, secs, reps, line["reports_per_s"], evs, line["events_per_s"], line["p50_ms"], line["p99_ms"], line["max_ms"], streams, line["reconnects"], line["tls_resumed"], nerr, fmtErrors(errMap), nall-nerr)
		if v, ok := line["server_rss_kb"]; ok {
			fmt.Fprintf(w, "collector (pid %d): rss %d KiB (%d KiB before the terminals), %.1f KiB a stream; cpu %.2f%% of a core, %.3f%% per 1,000 streams\n",
				mon.pid, v, line["server_rss_before_kb"], line["server_rss_per_stream_kb"], line["server_cpu_pct"], line["server_cpu_pct_per_1000"])
		}
	})
}

func rate(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fmtErrors(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("(")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, m[k])
	}
	b.WriteString(")")
	return b.String()
}

func (g *gen) emit(line map[string]any, text func(io.Writer)) {
	g.outMu.Lock()
	defer g.outMu.Unlock()
	if g.cfg.output == "json" {
		writeJSON(g.out, line)
		return
	}
	text(g.out)
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}
