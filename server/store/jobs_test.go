package store

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mnguard/mnguard/internal/testenv"
)

// openPG opens n stores on one fresh PostgreSQL database, as n replicas
// would.
func openPG(t *testing.T, n int) ([]*DB, string) {
	t.Helper()
	dsn := testenv.Postgres(t)
	var dbs []*DB
	for range n {
		s, err := Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		dbs = append(dbs, s)
	}
	return dbs, dsn
}

func TestTryJobSQLite(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		release, ok, err := s.TryJob(context.Background(), "sweep")
		if err != nil || !ok {
			t.Fatalf("TryJob on SQLite = %v, %v; want ok", ok, err)
		}
		release()
	}
	if _, _, err := s.TryJob(context.Background(), ""); err == nil {
		t.Fatal("TryJob without a name: no error")
	}
}

// claimPID returns the backend that holds the advisory lock of job.
func claimPID(t *testing.T, dsn, job string) int32 {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	key := JobKey(job)
	var pid int32
	// An advisory lock on a bigint shows its high half in classid, its low
	// half in objid.
	if err := c.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
AND classid = $1 AND objid = $2 AND objsubid = 1`, uint32(uint64(key)>>32), uint32(uint64(key))).Scan(&pid); err != nil {
		t.Fatalf("holder of job %s: %v", job, err)
	}
	return pid
}

// Two replicas: one runs the job, the other not, until the first
// releases it or its session dies.
func TestTryJobPostgres(t *testing.T) {
	dbs, dsn := openPG(t, 2)
	a, b := dbs[0], dbs[1]
	ctx := context.Background()
	try := func(s *DB, name string) (func(), bool) {
		t.Helper()
		release, ok, err := s.TryJob(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return release, ok
	}
	releaseA, ok := try(a, "evaluate")
	if !ok {
		t.Fatal("A: first TryJob not ok")
	}
	if _, ok := try(b, "evaluate"); ok {
		t.Fatal("B got the job A holds")
	}
	if _, ok := try(a, "evaluate"); !ok {
		t.Fatal("A: TryJob of the job it holds not ok")
	}
	// Another job is free.
	if _, ok := try(b, "sweep"); !ok {
		t.Fatal("B: another job not ok")
	}
	releaseA()
	releaseA() // twice is once
	if _, ok := try(b, "evaluate"); !ok {
		t.Fatal("B: job not ok after A released it")
	}
	if _, ok := try(a, "evaluate"); ok {
		t.Fatal("A got the job back while B holds it")
	}

	// B's session dies (as when B's process is killed): A takes over at
	// its next try, and B knows it lost the job.
	pid := claimPID(t, dsn, "evaluate")
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := try(a, "evaluate"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A did not take the job over within 5s of B's session ending")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := try(b, "evaluate"); ok {
		t.Fatal("B still thinks it runs the job after its session ended")
	}
	if _, ok := try(b, "sweep"); !ok {
		t.Fatal("B: sweep, lost with the session, not claimed again")
	}
}

// Closing the store's pool does not hang on the claims' connection, which
// is not the pool's.
func TestTryJobClose(t *testing.T) {
	dsn := testenv.Postgres(t)
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	release, ok, err := s.TryJob(context.Background(), "x")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	release()
	done := make(chan error)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
}

func TestReserveLoginSlot(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	const d = 2 * time.Second
	var got []time.Time
	for range 3 {
		at, err := s.ReserveLoginSlot(ctx, "user:alice", now, d, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, at)
	}
	want := []time.Time{now.Add(d), now.Add(2 * d), now.Add(3 * d)}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Fatalf("slots %v, want %v", got, want)
		}
	}
	// Two more fit within 10s; the sixth does not and reserves nothing.
	for range 2 {
		if _, err := s.ReserveLoginSlot(ctx, "user:alice", now, d, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ReserveLoginSlot(ctx, "user:alice", now, d, 10*time.Second); !errors.Is(err, ErrSlotsFull) {
		t.Fatalf("sixth slot: %v, want ErrSlotsFull", err)
	}
	// Another subject has its own slots; time passing frees them.
	if at, err := s.ReserveLoginSlot(ctx, "user:bob", now, d, 10*time.Second); err != nil || !at.Equal(now.Add(d)) {
		t.Fatalf("bob: %v, %v", at, err)
	}
	later := now.Add(time.Minute)
	if at, err := s.ReserveLoginSlot(ctx, "user:alice", later, d, 10*time.Second); err != nil || !at.Equal(later.Add(d)) {
		t.Fatalf("alice a minute later: %v, %v; want %v", at, err, later.Add(d))
	}
	for _, c := range []struct {
		subject     string
		delay, wait time.Duration
	}{{"", d, d}, {string(make([]byte, MaxLoginSubject+1)), d, d}, {"u", 0, d}, {"u", d, d / 2}} {
		if _, err := s.ReserveLoginSlot(ctx, c.subject, now, c.delay, c.wait); err == nil {
			t.Errorf("ReserveLoginSlot(%q, %s, %s): no error", c.subject, c.delay, c.wait)
		}
	}
}

// Reservations reaching two replicas at once still get one slot each,
// one delay apart.
func TestReserveLoginSlotReplicas(t *testing.T) {
	dbs, _ := openPG(t, 2)
	now := time.Unix(1_800_000_000, 0)
	const d = time.Second
	var (
		mu  sync.Mutex
		got []time.Time
		wg  sync.WaitGroup
	)
	for i := range 20 {
		wg.Go(func() {
			at, err := dbs[i%2].ReserveLoginSlot(context.Background(), "user:carol", now, d, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got = append(got, at)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
	if len(got) != 20 {
		t.Fatalf("%d slots, want 20", len(got))
	}
	for i, at := range got {
		if want := now.Add(time.Duration(i+1) * d); !at.Equal(want) {
			t.Fatalf("slot %d at %v, want %v (all: %v)", i, at, want, got)
		}
	}
}
