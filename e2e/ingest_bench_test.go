package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// ingestTarget is one backend's row of BenchmarkSustainedIngest.
type ingestTarget struct {
	name   string
	agents int
	rate   int // offered reports/s
	target string
}

// BenchmarkSustainedIngest offers one collector a steady load of ~1 KB
// posture reports, each with MNGUARD_BENCH_INGEST_EVENTS events (default 1),
// from simulated terminals each with its own mTLS connection and Subscribe
// stream, every terminal at a fixed interval (agents / rate) from a random
// phase: on SQLite (MNGUARD_BENCH_INGEST_SQLITE_RATE reports/s, default
// 2,000, from as many terminals) and on PostgreSQL (a fresh database on a
// throw-away cluster, testenv.Postgres; MNGUARD_BENCH_INGEST_PG_RATE,
// default 5,000), each for MNGUARD_BENCH_INGEST_SECONDS (default 30) after
// MNGUARD_BENCH_INGEST_WARMUP (default 10s) of the same load. It
// prints the reports/s and events/s sustained and p50/p99/max measured from
// each report's scheduled send, side by side, against the targets (2,000/s
// with p99 < 100 ms on SQLite; 5,000/s on PostgreSQL).
func BenchmarkSustainedIngest(b *testing.B) {
	seconds := envInt("MNGUARD_BENCH_INGEST_SECONDS", 30)
	events := envInt("MNGUARD_BENCH_INGEST_EVENTS", 1)
	warmup := envDuration(b, "MNGUARD_BENCH_INGEST_WARMUP", 10*time.Second)
	rows := []ingestTarget{
		{name: "SQLite", rate: envInt("MNGUARD_BENCH_INGEST_SQLITE_RATE", 2000), target: "2,000 reports/s, p99 < 100 ms"},
		{name: "PostgreSQL", rate: envInt("MNGUARD_BENCH_INGEST_PG_RATE", 5000), target: "5,000 reports/s"},
	}
	type result struct {
		row ingestTarget
		sum map[string]any
		err string
	}
	var results []result
	for _, row := range rows {
		// One report a second from each terminal: the rate in terminals.
		row.agents = row.rate
		var s *benchServer
		var state string
		switch row.name {
		case "SQLite":
			cache := benchCacheDir(b, fmt.Sprintf("ingest-sqlite-v2-%d", row.agents))
			state = filepath.Join(cache, "loadgen")
			s = newBenchCollector(b, bin("mnguard-server"), filepath.Join(cache, "collector"))
			// Enrolled in the cache, measured on a copy (the cache does not
			// grow by each run's reports), a fresh process.
			ensureEnrolled(b, s, state, row.agents, "ingest")
			s.proc.stop(b)
			s = newBenchCollector(b, bin("mnguard-server"), benchCopy(b, filepath.Join(cache, "collector")))
		case "PostgreSQL":
			if !serverHasFlag(b, "--db") {
				results = append(results, result{row: row, err: "this mnguard-server has no serve --db"})
				continue
			}
			dsn := ingestPostgres(b)
			dir := b.TempDir()
			state = filepath.Join(dir, "loadgen")
			s = newBenchCollector(b, bin("mnguard-server"), filepath.Join(dir, "collector"), "--db", dsn)
			ensureEnrolled(b, s, state, row.agents, "ingest")
			s.proc.stop(b)
			s.start(b)
		}
		sum := runLoad(b, s, state, "--agents", fmt.Sprint(row.agents), "--interval", "1s", "--warmup", warmup.String(), "--duration", fmt.Sprintf("%ds", seconds),
			"--events-per-report", fmt.Sprint(events), "--host-prefix", "ingest")
		b.Logf("%s: %v", row.name, sum)
		if f64(sum, "errors") > 0 {
			b.Errorf("%s: %v errors %v", row.name, sum["errors"], sum["errors_by_code"])
		}
		s.proc.stop(b)
		results = append(results, result{row: row, sum: sum})
	}
	fmt.Printf("sustained ingest: ~1 KB posture + %d event(s) a report, each terminal its own mTLS connection and stream, one report a second each, %ds after %s of warm-up; latency from the scheduled send:\n", events, seconds, warmup)
	fmt.Printf("  %-11s %8s %9s %10s %10s %9s %9s %9s %7s %9s  %s\n", "", "agents", "offered/s", "reports/s", "events/s", "p50 ms", "p99 ms", "max ms", "errors", "CPU %", "target")
	for _, r := range results {
		if r.err != "" {
			fmt.Printf("  %-11s not measured: %s\n", r.row.name, r.err)
			continue
		}
		m := r.sum
		ok := f64(m, "reports_per_s") >= 0.98*float64(r.row.rate) && f64(m, "errors") == 0
		if r.row.name == "SQLite" {
			ok = ok && f64(m, "p99_ms") < 100
		}
		fmt.Printf("  %-11s %8d %9d %10.0f %10.0f %9.1f %9.1f %9.1f %7.0f %9.1f  %s: %s\n", r.row.name, r.row.agents, r.row.rate,
			f64(m, "reports_per_s"), f64(m, "events_per_s"), f64(m, "p50_ms"), f64(m, "p99_ms"), f64(m, "max_ms"), f64(m, "errors"), f64(m, "server_cpu_pct"), r.row.target, verdict(ok))
		unit := strings.ToLower(r.row.name)
		b.ReportMetric(f64(m, "reports_per_s"), unit+"_reports/s")
		b.ReportMetric(f64(m, "p99_ms"), unit+"_p99_ms")
	}
	b.ReportMetric(0, "ns/op")
}

// ingestPostgres is a fresh database: on MNGUARD_TEST_POSTGRES's server when
// set, else on a throw-away cluster of this benchmark's own. (Not
// testenv.Postgres's shared cluster: it keeps only the DSN, so the garbage
// collector may finalize the keeper's pipe and stop the cluster in a
// long, allocating run such as this one.)
func ingestPostgres(b *testing.B) string {
	if os.Getenv(testenv.EnvPostgres) != "" {
		return testenv.Postgres(b)
	}
	c := testenv.NewPostgresCluster(b)
	return testenv.CreateDatabase(b, c.DSN)
}

// serverHasFlag reports whether this tree's mnguard-server serve knows flag.
func serverHasFlag(b *testing.B, flag string) bool {
	out, _ := exec.Command(bin("mnguard-server"), "serve", "--help").CombinedOutput()
	return strings.Contains(string(out), flag+" ") || strings.Contains(string(out), flag+"\n") || strings.Contains(string(out), "-"+strings.TrimLeft(flag, "-")+" ")
}
