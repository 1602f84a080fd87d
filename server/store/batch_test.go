package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSaveReports: one batch, one transaction, each report its own
// result: the reports of unknown, revoked and retired certificates,
// invalid reports and reports of unknown terminals fail alone, the others
// are stored once (events deduplicated against earlier batches and within
// the batch).
func TestSaveReports(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	good := enroll(t, s, "t-good", "good")
	other := enroll(t, s, "t-other", "other")
	gone := enroll(t, s, "t-gone", "gone")
	renew := enroll(t, s, "t-renew", "renew")
	if err := s.RevokeTerminal(ctx, "t-gone", "stolen", t0.Add(time.Minute), tAudit); err != nil {
		t.Fatal(err)
	}
	// t-renew's first certificate is retired by the first use of its
	// renewed one.
	at := t0.Add(20 * time.Minute)
	if err := s.RenewCertificate(ctx, renewed("t-renew", "ab12", at), renew.Serial, time.Minute, tAudit); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseCertificate(ctx, "ab12", at, tAudit); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(time.Hour)
	ev := func(seq uint64) Event {
		return Event{Seq: seq, Time: now, Type: "media.attached", Severity: 1, Message: fmt.Sprint("event ", seq), Data: []byte{1}}
	}
	posture := func(fp string) (p []byte, f []byte) { return []byte("posture " + fp), []byte(fp) }
	p1, f1 := posture("a")
	batch := []BatchReport{
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Posture: p1, CollectedAt: now, Fingerprint: f1, Events: []Event{ev(1), ev(2)}}, CertSerial: good.Serial},
		{Report: Report{TerminalID: "t-gone", ReceivedAt: now, Events: []Event{ev(1)}}, CertSerial: gone.Serial},
		{Report: Report{TerminalID: "t-other", ReceivedAt: now, Events: []Event{ev(7)}}, CertSerial: other.Serial},
		{Report: Report{TerminalID: "t-renew", ReceivedAt: now, Events: []Event{ev(1)}}, CertSerial: renew.Serial},
		{Report: Report{TerminalID: "t-renew", ReceivedAt: now, Events: []Event{ev(2)}}, CertSerial: "ab12"},
		// Another terminal's certificate.
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Events: []Event{ev(3)}}, CertSerial: other.Serial},
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Events: []Event{ev(4)}}, CertSerial: "no-such-serial"},
		{Report: Report{TerminalID: "t-nobody", ReceivedAt: now, Events: []Event{ev(1)}}},
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Events: []Event{ev(math.MaxInt64 + 1)}}, CertSerial: good.Serial},
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Events: []Event{{Seq: 5, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}}, CertSerial: good.Serial},
		// A second report of t-good in the same batch: event 2 again.
		{Report: Report{TerminalID: "t-good", ReceivedAt: now.Add(time.Second), Events: []Event{ev(2), ev(6)}}, CertSerial: good.Serial},
	}
	res, err := s.SaveReports(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(batch) {
		t.Fatalf("%d results for %d reports", len(res), len(batch))
	}
	want := []struct {
		err              error
		stored, duplicte []uint64
	}{
		{nil, []uint64{1, 2}, nil},
		{ErrRevoked, nil, nil},
		{nil, []uint64{7}, nil},
		{ErrRetired, nil, nil},
		{nil, []uint64{2}, nil},
		{ErrNotFound, nil, nil},
		{ErrNotFound, nil, nil},
		{ErrNotFound, nil, nil},
		{errAny, nil, nil},
		{errAny, nil, nil},
		{nil, []uint64{6}, []uint64{2}},
	}
	for i, w := range want {
		r := res[i]
		switch {
		case w.err == nil && r.Err != nil:
			t.Errorf("report %d: %v, want stored", i, r.Err)
		case w.err == errAny && r.Err == nil, w.err != nil && w.err != errAny && !errors.Is(r.Err, w.err):
			t.Errorf("report %d: error %v, want %v", i, r.Err, w.err)
		case !slices.Equal(r.Stored, w.stored) || !slices.Equal(r.Duplicates, w.duplicte):
			t.Errorf("report %d: stored %v, duplicates %v; want %v, %v", i, r.Stored, r.Duplicates, w.stored, w.duplicte)
		}
	}
	for _, c := range []struct {
		id   string
		want int
	}{{"t-good", 3}, {"t-other", 1}, {"t-gone", 0}, {"t-renew", 1}, {"t-nobody", 0}} {
		if n := count(t, s, `SELECT COUNT(*) FROM events WHERE terminal_id = $1`, c.id); n != c.want {
			t.Errorf("%s: %d events stored, want %d", c.id, n, c.want)
		}
	}
	if n := count(t, s, `SELECT COUNT(*) FROM postures WHERE terminal_id = 't-good'`); n != 1 {
		t.Errorf("t-good: %d postures, want 1", n)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM terminals WHERE last_seen_at IS NOT NULL`); n != 3 {
		t.Errorf("%d terminals seen, want 3 (good, other, renew)", n)
	}

	// A single report's failure is its own, not the batch's.
	res, err = s.SaveReports(ctx, batch[1:2])
	if err != nil || !errors.Is(res[0].Err, ErrRevoked) {
		t.Errorf("lone revoked report: %v, %v", res, err)
	}
	// An empty batch is nothing to do.
	if res, err := s.SaveReports(ctx, nil); err != nil || len(res) != 0 {
		t.Errorf("empty batch: %v, %v", res, err)
	}
}

var errAny = errors.New("any error")

// TestSaveReportsTransactionFails: a batch whose transaction cannot run
// (the context is cancelled) stores nothing and says so.
func TestSaveReportsTransactionFails(t *testing.T) {
	s, _ := openTest(t)
	good := enroll(t, s, "t-good", "good")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	now := t0.Add(time.Hour)
	_, err := s.SaveReports(ctx, []BatchReport{
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Events: []Event{{Seq: 1, Time: now}}}, CertSerial: good.Serial},
		{Report: Report{TerminalID: "t-good", ReceivedAt: now, Events: []Event{{Seq: 2, Time: now}}}, CertSerial: good.Serial},
	})
	if err == nil {
		t.Fatal("batch in a cancelled context: no error")
	}
	if n := count(t, s, `SELECT COUNT(*) FROM events`); n != 0 {
		t.Errorf("%d events stored by a failed batch", n)
	}
}

// BenchmarkSaveReports stores posture reports with one event each of many
// terminals, in batches of 1 (one transaction per report, as SaveReport),
// 8, 32 and 128: what group commit gains. It reports reports per second.
func BenchmarkSaveReports(b *testing.B) {
	for _, size := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprint("batch=", size), func(b *testing.B) {
			s, _ := openTest(b)
			ctx := context.Background()
			const terminals = 128
			serials := make([]string, terminals)
			for i := range terminals {
				serials[i] = enroll(b, s, fmt.Sprintf("t-%03d", i), fmt.Sprintf("pc-%03d", i)).Serial
			}
			posture := make([]byte, 1024)
			seq := uint64(0)
			n := 0
			b.ResetTimer()
			for b.Loop() {
				now := time.Now()
				batch := make([]BatchReport, size)
				for j := range batch {
					i := (n + j) % terminals
					seq++
					posture[0] = byte(seq)
					batch[j] = BatchReport{Report: Report{TerminalID: fmt.Sprintf("t-%03d", i), ReceivedAt: now, Posture: posture, CollectedAt: now,
						Fingerprint: []byte{1}, Events: []Event{{Seq: seq, Time: now, Type: "bench", Message: "x"}}}, CertSerial: serials[i]}
				}
				n += size
				res, err := s.SaveReports(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range res {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "reports/s")
		})
	}
}

// TestSaveReportsWriteFails: a report that fails while it writes (here an
// event refused by a trigger, after its certificate was accepted) fails
// alone, with nothing of it stored; the batch is run again with a
// savepoint around each report, and the others are stored once. A lone
// report's write failure is its own result, not the batch's error.
func TestSaveReportsWriteFails(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	certs := map[string]Certificate{}
	for _, id := range []string{"t-a", "t-b", "t-c"} {
		certs[id] = enroll(t, s, id, "pc-"+id)
	}
	failInserts(t, s, "boom", "events", "NEW.type = 'boom'")
	now := t0.Add(time.Hour)
	report := func(id, typ string, seq uint64) BatchReport {
		return BatchReport{Report: Report{TerminalID: id, ReceivedAt: now, Posture: []byte("posture " + id), CollectedAt: now, Fingerprint: []byte(id),
			Events: []Event{{Seq: seq, Time: now, Type: typ, Message: "m"}}}, CertSerial: certs[id].Serial}
	}
	batch := []BatchReport{report("t-a", "media.attached", 1), report("t-b", "boom", 1), report("t-c", "media.attached", 1), report("t-a", "media.attached", 2)}
	res, err := s.SaveReports(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, wantErr := range []bool{false, true, false, false} {
		switch {
		case wantErr && (res[i].Err == nil || !strings.Contains(res[i].Err.Error(), "injected failure")):
			t.Errorf("report %d: %v, want the injected failure", i, res[i].Err)
		case !wantErr && (res[i].Err != nil || len(res[i].Stored) != 1):
			t.Errorf("report %d: %v, stored %v; want stored", i, res[i].Err, res[i].Stored)
		}
	}
	for id, want := range map[string]int{"t-a": 2, "t-b": 0, "t-c": 1} {
		if n := count(t, s, `SELECT COUNT(*) FROM events WHERE terminal_id = $1`, id); n != want {
			t.Errorf("%s: %d events, want %d", id, n, want)
		}
	}
	// Nothing of t-b's report: not its posture, nor its last contact.
	if n := count(t, s, `SELECT COUNT(*) FROM postures WHERE terminal_id = 't-b'`) +
		count(t, s, `SELECT COUNT(*) FROM terminals WHERE id = 't-b' AND last_seen_at IS NOT NULL`); n != 0 {
		t.Errorf("t-b: %d rows of its failed report", n)
	}

	res, err = s.SaveReports(ctx, batch[1:2])
	if err != nil || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "injected failure") {
		t.Errorf("lone failing report: %v, %v", res, err)
	}
}
