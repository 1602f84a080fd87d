package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"
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
