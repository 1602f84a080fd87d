package spool

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func open(t testing.TB, path string, opts Options) *Spool {
	t.Helper()
	s, err := OpenWithOptions(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func event(msg string) *mnguardv1.Event {
	return &mnguardv1.Event{
		Time:       timestamppb.New(time.Date(2025, 4, 1, 9, 0, 0, 0, time.UTC)),
		Type:       "media.attached",
		Severity:   mnguardv1.Severity_SEVERITY_INFO,
		Message:    msg,
		Attributes: map[string]string{"vendor_id": "0781", "product_id": "5567"},
	}
}

func appendN(t testing.TB, s *Spool, n int, prefix string) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		e := event(fmt.Sprintf("%s%d", prefix, i))
		seq, err := s.Append(e)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if e.Seq != seq {
			t.Fatalf("Append returned %d but set e.Seq = %d", seq, e.Seq)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func pendingSeqs(t testing.TB, s *Spool, limit int) []uint64 {
	t.Helper()
	evs, err := s.Pending(limit)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	var seqs []uint64
	for _, e := range evs {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

func TestFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no unix permissions")
	}
	path := filepath.Join(t.TempDir(), "spool.db")
	open(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %v, want 0600", perm)
	}
}

func TestPendingOrderAndContent(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), Options{})
	want := appendN(t, s, 5, "e")
	if !slices.Equal(want, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("seqs = %v, want 1..5", want)
	}
	if got := pendingSeqs(t, s, 0); !slices.Equal(got, want) {
		t.Errorf("Pending(0) = %v, want %v", got, want)
	}
	if got := pendingSeqs(t, s, 3); !slices.Equal(got, want[:3]) {
		t.Errorf("Pending(3) = %v, want %v", got, want[:3])
	}
	evs, _ := s.Pending(1)
	w := event("e0")
	w.Seq = 1
	if !proto.Equal(evs[0], w) {
		t.Errorf("Pending(1)[0] = %v, want %v", evs[0], w)
	}
	if n, err := s.Len(); n != 5 || err != nil {
		t.Errorf("Len = %d, %v; want 5", n, err)
	}
	// Pending does not remove.
	if got := pendingSeqs(t, s, 0); len(got) != 5 {
		t.Errorf("second Pending = %v, want all 5 still there", got)
	}
}

func TestAck(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), Options{})
	appendN(t, s, 6, "e")
	if err := s.Ack([]uint64{2, 4, 4, 99, 0}); err != nil { // duplicates and unknowns ignored
		t.Fatal(err)
	}
	if got, want := pendingSeqs(t, s, 0), []uint64{1, 3, 5, 6}; !slices.Equal(got, want) {
		t.Errorf("after ack: %v, want %v", got, want)
	}
	if n, _ := s.Len(); n != 4 {
		t.Errorf("Len = %d, want 4", n)
	}
	if err := s.Ack([]uint64{1, 3, 5, 6}); err != nil {
		t.Fatal(err)
	}
	if got := pendingSeqs(t, s, 0); len(got) != 0 {
		t.Errorf("after acking all: %v", got)
	}
	if n, _ := s.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
	// Acknowledged numbers are not reused.
	if got := appendN(t, s, 1, "f"); got[0] != 7 {
		t.Errorf("next seq after acking all = %d, want 7", got[0])
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3, "a")
	if err := s.Ack([]uint64{3}); err != nil { // the highest: must still not be reused
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path, Options{})
	if got := s.LastSeq(); got != 3 {
		t.Errorf("LastSeq after reopen = %d, want 3", got)
	}
	if n, _ := s.Len(); n != 2 {
		t.Errorf("Len after reopen = %d, want 2", n)
	}
	evs, err := s.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Message != "a0" || evs[1].Message != "a1" || evs[1].Seq != 2 {
		t.Errorf("Pending after reopen = %v, want a0 (1), a1 (2)", evs)
	}
	if got := appendN(t, s, 1, "b"); got[0] != 4 {
		t.Errorf("first seq after reopen = %d, want 4", got[0])
	}
}

func TestConcurrentAppend(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), Options{})
	const workers, each = 8, 25
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seqs []uint64
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				seq, err := s.Append(event(fmt.Sprintf("w%d-%d", w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seqs = append(seqs, seq)
				mu.Unlock()
			}
		})
	}
	// Readers alongside the writers.
	wg.Go(func() {
		for range 20 {
			if _, err := s.Pending(10); err != nil {
				t.Error(err)
			}
			s.Len()
		}
	})
	wg.Wait()
	slices.Sort(seqs)
	want := make([]uint64, workers*each)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(seqs, want) {
		t.Errorf("seqs are not exactly 1..%d: %v", len(want), seqs)
	}
	if got := pendingSeqs(t, s, 0); !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want 1..%d in order", got, len(want))
	}
	if n, _ := s.Len(); n != len(want) {
		t.Errorf("Len = %d, want %d", n, len(want))
	}
}

func TestInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	open(t, path, Options{})
	start := time.Now()
	s2, err := Open(path)
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v", d)
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("err = %v, want one matching ErrInUse", err)
	}
	if want := fmt.Sprintf("spool %s is in use by another process", path); err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

func TestCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := OpenWithOptions(path, Options{MaxEvents: 3})
	if err != nil {
		t.Fatal(err)
	}
	// 1, 2, 3 fit; 4 drops 1 and adds the loss event 5; 6 drops 2 and 3
	// and grows the loss event in place (it was not handed out).
	appendN(t, s, 5, "e")
	if got, want := pendingSeqs(t, s, 0), []uint64{4, 5, 6}; !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v", got, want)
	}
	checkLoss(t, s, 5, "3", "1", "3")
	if got := s.Dropped(); got != 3 {
		t.Errorf("Dropped = %d, want 3", got)
	}
	if n, _ := s.Len(); n != 3 {
		t.Errorf("Len = %d, want 3", n)
	}
	s.Close()

	// The count survives a restart; a lower cap applies at the next Append.
	s = open(t, path, Options{MaxEvents: 2})
	if got := s.Dropped(); got != 3 {
		t.Errorf("Dropped after reopen = %d, want 3", got)
	}
	// 4 dropped, and the loss event 5, handed out before the restart, too:
	// its count goes into the new loss event 8.
	appendN(t, s, 1, "f")
	if got, want := pendingSeqs(t, s, 0), []uint64{6, 7, 8}; !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v", got, want)
	}
	checkLoss(t, s, 8, "4", "1", "4")
	if got := s.Dropped(); got != 4 {
		t.Errorf("Dropped = %d, want 4", got)
	}
	// Acknowledging makes room without dropping.
	if err := s.Ack([]uint64{6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 2, "g")
	if got := s.Dropped(); got != 4 {
		t.Errorf("Dropped after ack and append = %d, want 4", got)
	}
}

// checkLoss asserts that event seq is a spool_full loss event with the
// count and range given.
func checkLoss(t *testing.T, s *Spool, seq uint64, count, first, last string) {
	t.Helper()
	evs, err := s.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Seq != seq {
			continue
		}
		a := e.GetAttributes()
		if e.GetType() != EventDropped || a["reason"] != "spool_full" || a["count"] != count || a["first_seq"] != first || a["last_seq"] != last ||
			e.GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT {
			t.Errorf("event %d = %v, want %s with count %s, seq %s to %s", seq, e, EventDropped, count, first, last)
		}
		return
	}
	t.Errorf("no event %d in the spool", seq)
}

func TestCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 4, "e")
	s.Close()

	garbage := []byte("\xff\xff\xffnot a protobuf")
	if err := proto.Unmarshal(garbage, &mnguardv1.Event{}); err == nil {
		t.Fatal("test garbage decodes as an Event")
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if err := b.Put(seqKey(1), garbage); err != nil { // the oldest: would block delivery
			return err
		}
		return b.Put(seqKey(3), garbage)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	s = open(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got, want := pendingSeqs(t, s, 2), []uint64{2, 4}; !slices.Equal(got, want) {
		t.Errorf("Pending(2) = %v, want %v: corrupt records skipped, limit still filled", got, want)
	}
	if got := s.Corrupt(); got != 2 {
		t.Errorf("Corrupt = %d, want 2", got)
	}
	if n, _ := s.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
	for _, want := range []string{"removed corrupt record", "seq=1", "seq=3"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	// Removed for good: no second log, and the count persists.
	logs.Reset()
	pendingSeqs(t, s, 0)
	if logs.Len() != 0 {
		t.Errorf("second Pending logged again:\n%s", logs.String())
	}
	s.Close()
	s = open(t, path, Options{})
	if got := s.Corrupt(); got != 2 {
		t.Errorf("Corrupt after reopen = %d, want 2", got)
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 1, "e")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	e := event("late")
	if _, err := s.Append(e); !errors.Is(err, ErrClosed) || e.Seq != 0 {
		t.Errorf("Append after Close = %v (seq %d), want ErrClosed and seq untouched", err, e.Seq)
	}
	if _, err := s.Pending(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Pending after Close = %v, want ErrClosed", err)
	}
	if err := s.Ack([]uint64{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Len(); !errors.Is(err, ErrClosed) {
		t.Errorf("Len after Close = %v, want ErrClosed", err)
	}
}

func TestAppendInvalid(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), Options{})
	if _, err := s.Append(nil); err == nil {
		t.Error("Append(nil) succeeded")
	}
	bad := event("bad \xff utf-8")
	bad.Seq = 42
	if _, err := s.Append(bad); err == nil || !strings.HasPrefix(err.Error(), "spool: append: ") {
		t.Errorf("Append(invalid UTF-8) = %v, want a spool: append: error", err)
	}
	if bad.Seq != 42 {
		t.Errorf("failed Append changed e.Seq to %d", bad.Seq)
	}
	// A failed append uses no number.
	if got := appendN(t, s, 1, "ok"); got[0] != 1 {
		t.Errorf("seq after failed append = %d, want 1", got[0])
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing", "spool.db")); err == nil || !strings.HasPrefix(err.Error(), "spool: open ") {
		t.Errorf("Open in a missing directory = %v, want a spool: open error", err)
	}
	if _, err := OpenWithOptions(filepath.Join(dir, "x.db"), Options{MaxEvents: -1}); err == nil {
		t.Error("Open with MaxEvents -1 succeeded")
	}
}

func BenchmarkAppend(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "spool.db"), Options{})
	e := event("benchmark")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Append(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendAck is the agent's cycle on a real bbolt file: events
// appended one by one as they happen (each its own transaction), then read
// and acknowledged in batches of 100, as a report delivers them. It
// reports events per second through the whole cycle.
func BenchmarkAppendAck(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "spool.db"), Options{})
	e := event("benchmark")
	const batch = 100
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := s.Append(e); err != nil {
			b.Fatal(err)
		}
		n++
		if n%batch == 0 {
			evs, err := s.Pending(batch)
			if err != nil {
				b.Fatal(err)
			}
			seqs := make([]uint64, len(evs))
			for i, ev := range evs {
				seqs[i] = ev.GetSeq()
			}
			if err := s.Ack(seqs); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
