package bus

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mnguard/mnguard/internal/testenv"
)

// recorder is a Handler that keeps what it got.
type recorder struct {
	mu         sync.Mutex
	got        []Message
	at         []time.Time
	reconciles int
	signal     chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1000)} }

func (r *recorder) Handle(_ context.Context, m Message) {
	r.mu.Lock()
	r.got = append(r.got, m)
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
	r.signal <- struct{}{}
}

func (r *recorder) Reconcile(context.Context) {
	r.mu.Lock()
	r.reconciles++
	r.mu.Unlock()
	r.signal <- struct{}{}
}

func (r *recorder) messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) reconciled() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reconciles
}

// waitFor waits up to d for cond, re-checked on every signal.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("no %s within %s", what, d)
		}
	}
}

// startBus runs a bus on dsn with h until the test ends.
func startBus(t testing.TB, dsn string, h Handler) *Postgres {
	t.Helper()
	b, err := NewPostgres(dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx, h) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !b.Listening() {
		if time.Now().After(deadline) {
			t.Fatal("bus not listening within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return b
}

func TestNewPostgresRefusesBadDSN(t *testing.T) {
	if _, err := NewPostgres("postgres://host:notaport/db", nil); err == nil {
		t.Fatal("NewPostgres of a DSN with a bad port: no error")
	}
}

// Two replicas on one database: what one publishes reaches the other, not
// itself; a reconcile follows the first LISTEN.
func TestPostgresFanOut(t *testing.T) {
	dsn := testenv.Postgres(t)
	ra, rb := newRecorder(), newRecorder()
	a := startBus(t, dsn, ra)
	b := startBus(t, dsn, rb)
	ra.waitFor(t, 5*time.Second, "first reconcile of A", func() bool { return ra.reconciled() == 1 })
	rb.waitFor(t, 5*time.Second, "first reconcile of B", func() bool { return rb.reconciled() == 1 })

	want := []Message{
		{Kind: Exemptions, Terminal: "0b6f3a52-8a1e-4f0e-9d3c-2a1b4c5d6e7f"},
		{Kind: Policy},
		{Kind: Revoked, Terminal: "t2"},
		{Kind: Retired, Terminal: "t3", Serials: []string{"ab12"}},
	}
	for _, m := range want {
		a.Publish(m)
	}
	rb.waitFor(t, 5*time.Second, "4 messages at B", func() bool { return len(rb.messages()) == 4 })
	got := rb.messages()
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g Message) bool { return g.key() == w.key() && g.Origin == a.Origin() }) {
			t.Errorf("B did not get %+v from %s; got %+v", w, a.Origin(), got)
		}
	}
	// A's own messages come back to its listener and are dropped: send
	// one from B and check A got only that.
	b.Publish(Message{Kind: Policy})
	ra.waitFor(t, 5*time.Second, "B's message at A", func() bool { return len(ra.messages()) >= 1 })
	time.Sleep(200 * time.Millisecond)
	if got := ra.messages(); len(got) != 1 || got[0].Origin != b.Origin() {
		t.Fatalf("A got %+v, want only B's policy message", got)
	}
}

// terminate ends the backend pid as a database administrator would.
func terminate(t *testing.T, dsn string, pid uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var ok bool
	if err := c.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
}

// A listening connection killed by the database: the bus connects again,
// reconciles (a notification sent meanwhile is lost to LISTEN), and
// messages flow again.
func TestPostgresListenerKilledReconciles(t *testing.T) {
	dsn := testenv.Postgres(t)
	ra, rb := newRecorder(), newRecorder()
	a := startBus(t, dsn, ra)
	b := startBus(t, dsn, rb)
	rb.waitFor(t, 5*time.Second, "first reconcile", func() bool { return rb.reconciled() == 1 })
	pid := b.ListenPID()
	terminate(t, dsn, pid)
	start := time.Now()
	rb.waitFor(t, 10*time.Second, "reconcile after the reconnect", func() bool { return rb.reconciled() == 2 })
	t.Logf("listening connection %d killed: listening again and reconciled after %s", pid, time.Since(start).Round(time.Millisecond))
	if b.ListenPID() == pid || b.ListenPID() == 0 || b.Connects() != 2 {
		t.Fatalf("after the kill: pid %d (was %d), %d connects; want a new connection, 2 connects", b.ListenPID(), pid, b.Connects())
	}
	a.Publish(Message{Kind: Revoked, Terminal: "after"})
	rb.waitFor(t, 5*time.Second, "message after the reconnect", func() bool {
		return slices.ContainsFunc(rb.messages(), func(m Message) bool { return m.Terminal == "after" })
	})
}

// The sending connection killed: the message still goes out, on a new
// one.
func TestPostgresPublisherKilledRetries(t *testing.T) {
	dsn := testenv.Postgres(t)
	ra, rb := newRecorder(), newRecorder()
	a := startBus(t, dsn, ra)
	startBus(t, dsn, rb)
	a.Publish(Message{Kind: Policy})
	rb.waitFor(t, 5*time.Second, "first message", func() bool { return len(rb.messages()) == 1 })
	// The sender's backend: the bus's connection of A that is not its
	// listener.
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var pids []int32
	rows, err := c.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database() AND query NOT ILIKE 'LISTEN%'", ApplicationName+"/"+a.Origin())
	if err != nil {
		t.Fatal(err)
	}
	pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 1 {
		t.Fatalf("sending connections of A's bus: %v, want one", pids)
	}
	terminate(t, dsn, uint32(pids[0]))
	for i := range 3 {
		a.Publish(Message{Kind: Revoked, Terminal: fmt.Sprintf("t%d", i)})
	}
	rb.waitFor(t, 10*time.Second, "3 messages after the sender was killed", func() bool { return len(rb.messages()) == 4 })
}

// Latency of a push from one replica to another, publish to handler.
func BenchmarkPostgresFanOut(b *testing.B) {
	dsn := testenv.Postgres(b)
	ra, rb := newRecorder(), newRecorder()
	a := startBus(b, dsn, ra)
	startBus(b, dsn, rb)
	lat := make([]time.Duration, 0, b.N)
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		a.Publish(Message{Kind: Exemptions, Terminal: fmt.Sprintf("t%d", i)})
		<-rb.signal
		for len(rb.messages()) <= i {
			<-rb.signal
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
		b.ReportMetric(float64(p(0.5).Microseconds()), "p50_µs")
		b.ReportMetric(float64(p(0.99).Microseconds()), "p99_µs")
		b.Logf("bus fan-out, %d pushes: p50 %s, p99 %s, max %s", len(lat), p(0.5), p(0.99), lat[len(lat)-1])
	}
}
