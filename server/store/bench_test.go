package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// benchTerminal enrolls one terminal in a real SQLite store for a
// benchmark.
func benchTerminal(b *testing.B) (*DB, string) {
	b.Helper()
	s, _ := openTest(b)
	h := createToken(b, s, "bench", 1, t0.Add(24*time.Hour))
	id := "00000001-0000-4000-8000-000000000001"
	term, cert := newTerminal(id, "pc-0001")
	if err := s.Enroll(context.Background(), h, t0, term, cert); err != nil {
		b.Fatal(err)
	}
	return s, id
}

// BenchmarkEventBatch stores reports of 500 events each (an agent's largest
// batch, after the collector was away) without a posture: one transaction
// inserting 500 rows. It reports events per second.
func BenchmarkEventBatch(b *testing.B) {
	ctx := context.Background()
	s, id := benchTerminal(b)
	const batch = 500
	data := make([]byte, 200)
	rand.Read(data)
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		evs := make([]Event, batch)
		for i := range evs {
			seq++
			evs[i] = Event{Seq: seq, Time: now, ReceivedAt: now, Type: "media.write_blocked", Severity: 2,
				Message: fmt.Sprintf("write blocked on USB stick %d", seq), Data: data}
		}
		res, err := s.SaveReport(ctx, Report{TerminalID: id, ReceivedAt: now, Events: evs})
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Stored) != batch {
			b.Fatalf("stored %d events of %d", len(res.Stored), batch)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkPostureUpsert stores posture-only reports of one terminal, a
// ~4 KB posture: "same" as at every report interval when nothing changed
// (the latest posture replaced, no history row), "changed" with a new
// fingerprint each time (a history row added too).
func BenchmarkPostureUpsert(b *testing.B) {
	for _, changed := range []bool{false, true} {
		name := "same"
		if changed {
			name = "changed"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s, id := benchTerminal(b)
			posture := make([]byte, 4096)
			rand.Read(posture)
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				n++
				fp := []byte{1}
				if changed {
					fp = []byte(fmt.Sprint(n))
				}
				now := time.Now()
				if _, err := s.SaveReport(ctx, Report{TerminalID: id, ReceivedAt: now, Posture: posture, CollectedAt: now, Fingerprint: fp}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSaveReportBackends stores reports as the collector does: from many
// goroutines at once (RunParallel, 8 per CPU), each report of one of 200
// terminals with its unchanged ~1 KB posture and two events, on SQLite
// and on PostgreSQL (testenv.Postgres's server: scripts/testpg.sh's
// cluster in make bench). "postgres-writelock" takes the write lock in
// every report too, as every other write transaction does: the cost the
// report path saves by locking its terminal's row only. It reports
// reports per second.
func BenchmarkSaveReportBackends(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres", "postgres-writelock"} {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			var (
				s   *DB
				err error
			)
			if backend == "sqlite" {
				s, err = OpenSQLite(ctx, filepath.Join(b.TempDir(), "bench.db"))
			} else {
				s, err = OpenPostgres(ctx, testenv.Postgres(b))
			}
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			if _, err := s.SetKeySealer(ctx, newTestSealer(b, 1)); err != nil {
				b.Fatal(err)
			}
			s.reportLock = backend == "postgres-writelock"
			const terminals = 200
			h := createToken(b, s, "bench", terminals, t0.Add(24*time.Hour))
			ids := make([]string, terminals)
			for i := range ids {
				ids[i] = fmt.Sprintf("00000001-0000-4000-8000-%012d", i)
				term, cert := newTerminal(ids[i], fmt.Sprintf("pc-%04d", i))
				cert.Serial = fmt.Sprintf("%04x", i+1)
				if err := s.Enroll(ctx, h, t0, term, cert); err != nil {
					b.Fatal(err)
				}
			}
			posture := make([]byte, 1024)
			rand.Read(posture)
			var next atomic.Uint64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := next.Add(1)
					now := time.Now()
					r := Report{TerminalID: ids[n%terminals], ReceivedAt: now, Posture: posture, CollectedAt: now,
						Fingerprint: []byte{1}}
					for k := range uint64(2) {
						r.Events = append(r.Events, Event{Seq: 2*n + k, Time: now, Type: "media.attached", Severity: 1,
							Message: "USB stick attached"})
					}
					if _, err := s.SaveReport(ctx, r); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
		})
	}
}
