package compliance

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/testenv"
	"github.com/mnguard/mnguard/server/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Two replicas' evaluators on one PostgreSQL: one evaluates every terminal
// at each tick (the job), the other does not; when the first one's
// database session dies, the other takes the job over at its next tick,
// and a terminal gone silent still turns stale.
func TestRunOneReplica(t *testing.T) {
	dsn := testenv.Postgres(t)
	clock := fakeclock.New(start)
	envs := make([]*env, 2)
	for i := range envs {
		st, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		e := &env{t: t, st: st, clock: clock, reg: prometheus.NewRegistry()}
		e.ev = New(Config{
			Store: st, Policy: Policy{ReportInterval: time.Minute, Version: "1.4.0"}, Location: jst, Interval: 50 * time.Millisecond,
			Registerer: e.reg, Logger: slog.New(slog.DiscardHandler), Now: clock.Now,
		})
		envs[i] = e
	}
	envs[0].enroll("t1", "pc-01")
	envs[0].report("t1", goodPosture(clock.Now()))
	ctx := context.Background()
	stop := map[*env]func(){}
	for _, e := range envs {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = e.ev.Run(rctx) }()
		stop[e] = func() { cancel(); <-done }
		t.Cleanup(stop[e])
	}
	compliant := func(e *env) float64 { return e.gauge("mnguard_terminals", "state", store.Compliant) }
	stale := func(e *env) float64 { return e.gauge("mnguard_terminals", "state", store.Stale) }
	deadline := time.Now().Add(10 * time.Second)
	for compliant(envs[0])+compliant(envs[1]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no replica evaluated every terminal within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Several ticks: still only one of them runs the job.
	time.Sleep(300 * time.Millisecond)
	leader, other := envs[0], envs[1]
	if compliant(other) == 1 {
		leader, other = other, leader
	}
	if compliant(leader) != 1 || compliant(other) != 0 {
		t.Fatalf("terminals evaluated as compliant by each replica: %v and %v; want the job on one", compliant(leader), compliant(other))
	}

	// The leader dies: its session ends, and its ticks stop (a living
	// process whose session was cut would claim the job again).
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	key := store.JobKey(JobName)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted
AND classid = $1 AND objid = $2 AND objsubid = 1`, uint32(uint64(key)>>32), uint32(uint64(key))).Scan(&n); err != nil || n != 1 {
		t.Fatalf("end the session that holds the job: %d ended, %v", n, err)
	}
	stop[leader]()
	// t1 goes silent: the other replica's next ticks find it stale.
	clock.Add(4 * time.Minute)
	deadline = time.Now().Add(5 * time.Second)
	for stale(other) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the other replica did not take the job over: stale %v", stale(other))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := other.st.TerminalCompliance(ctx, "t1"); err != nil || c.State != store.Stale {
		t.Fatalf("t1 after the take-over: %+v, %v; want stale", c, err)
	}
}
