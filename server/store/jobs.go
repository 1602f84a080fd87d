package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Coordination of collector replicas through the database: periodic jobs
// that run on one replica at a time (TryJob) and login delays that hold
// across replicas (ReserveLoginSlot). On SQLite there is one collector
// process, and both are trivial.

// jobKeyBase sets the advisory lock keys of jobs apart from the store's own
// (WriteLockKey, MigrateLockKey): their top byte is 0x6a ('j').
const jobKeyBase int64 = 0x6a << 56

// JobKey is the advisory lock key of the periodic job name.
func JobKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("mnguard job " + name))
	return jobKeyBase | int64(h.Sum64()&(1<<56-1))
}

// jobClaims are a PostgreSQL store's claims on jobs: session-level
// advisory locks on one connection of their own, taken out of the pool,
// so that they last exactly as long as that session. When the process
// dies, or loses the database, PostgreSQL ends the session and frees the
// locks, and another replica claims the jobs at its next try.
type jobClaims struct {
	mu   sync.Mutex
	conn *pgx.Conn
	held map[string]bool
}

// claims maps each PostgreSQL *DB to its *jobClaims (DB has no field for
// them).
var claims sync.Map

func (s *DB) jobClaims() *jobClaims {
	c, _ := claims.LoadOrStore(s, &jobClaims{held: map[string]bool{}})
	return c.(*jobClaims)
}

// TryJob claims the periodic job name for this replica: ok is true when
// this replica runs it now. Call it at every tick of the job and run the
// job when ok; do not release the claim between ticks, or every replica
// would run each tick in turn. The claim lasts until release is called
// or the claim's database session ends (the process died or lost the
// database): then another replica's next TryJob takes the job over, so
// the job keeps its interval, give or take one tick, when its runner
// dies. TryJob of a job held checks that the session still holds it.
//
// On SQLite (one collector process) every TryJob is ok.
//
// An error (the database unreachable) means no claim: skip the tick.
func (s *DB) TryJob(ctx context.Context, name string) (release func(), ok bool, err error) {
	if name == "" {
		return nil, false, errors.New("store: try job: no job name")
	}
	if s.pool == nil {
		return func() {}, true, nil
	}
	c := s.jobClaims()
	c.mu.Lock()
	defer c.mu.Unlock()
	key := JobKey(name)
	if c.conn != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.conn.Ping(pctx)
		cancel()
		if err != nil {
			// The session, and every lock it held, is gone.
			c.drop()
		}
	}
	if c.held[name] {
		return s.jobRelease(name, key), true, nil
	}
	if c.conn == nil {
		pc, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("store: try job %s: %w", name, unavailable(err))
		}
		c.conn = pc.Hijack()
	}
	if err := c.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		c.drop()
		return nil, false, fmt.Errorf("store: try job %s: %w", name, unavailable(err))
	}
	if !ok {
		c.closeIfIdle()
		return nil, false, nil
	}
	c.held[name] = true
	return s.jobRelease(name, key), true, nil
}

// jobRelease returns the release of the claim on name.
func (s *DB) jobRelease(name string, key int64) func() {
	return func() {
		c := s.jobClaims()
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.held[name] || c.conn == nil {
			return
		}
		delete(c.held, name)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// Ending the session frees the lock all the same.
			c.drop()
			return
		}
		c.closeIfIdle()
	}
}

// drop closes the claims' session: every claim ends.
func (c *jobClaims) drop() {
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.conn.Close(ctx)
		cancel()
		c.conn = nil
	}
	clear(c.held)
}

// closeIfIdle closes the session once it holds no claim.
func (c *jobClaims) closeIfIdle() {
	if len(c.held) == 0 {
		c.drop()
	}
}

// ErrSlotsFull is returned by ReserveLoginSlot when the subject's queue of
// delayed attempts reaches past the wait allowed: the attempt is refused
// without being checked.
var ErrSlotsFull = errors.New("too many login attempts waiting")

// MaxLoginSubject bounds a login slot's subject.
const MaxLoginSubject = 200

// ReserveLoginSlot reserves the next slot for a delayed login attempt of
// subject (e.g. "user:NAME"): the attempt may go ahead at the returned
// time, which is delay after now or after the subject's previous slot,
// whichever is later. Attempts that reach different replicas at once
// thus still go one per delay, as the slots live in the database. When
// the slot would be later than now+maxWait nothing is reserved and the
// error wraps ErrSlotsFull.
func (s *DB) ReserveLoginSlot(ctx context.Context, subject string, now time.Time, delay, maxWait time.Duration) (time.Time, error) {
	switch {
	case subject == "" || len(subject) > MaxLoginSubject:
		return time.Time{}, fmt.Errorf("store: login slot: subject of %d bytes: want 1 to %d", len(subject), MaxLoginSubject)
	case delay <= 0 || maxWait < delay:
		return time.Time{}, fmt.Errorf("store: login slot of %s: delay %s and wait %s: want 0 < delay <= wait", subject, delay, maxWait)
	}
	if err := storableTime("now", now.Add(maxWait)); err != nil {
		return time.Time{}, fmt.Errorf("store: login slot of %s: %w", subject, err)
	}
	var at time.Time
	err := s.writeTx(ctx, false, func(tx wtx) error {
		// One statement: PostgreSQL's ON CONFLICT DO UPDATE locks the row,
		// so two replicas' reservations take turns.
		return tx.queryRow(ctx, `INSERT INTO login_slots (subject, next_at) VALUES ($1, CAST($2 AS BIGINT) + CAST($3 AS BIGINT))
ON CONFLICT (subject) DO UPDATE SET next_at = CASE WHEN login_slots.next_at > CAST($2 AS BIGINT) THEN login_slots.next_at ELSE CAST($2 AS BIGINT) END + CAST($3 AS BIGINT)
WHERE CASE WHEN login_slots.next_at > CAST($2 AS BIGINT) THEN login_slots.next_at ELSE CAST($2 AS BIGINT) END + CAST($3 AS BIGINT) <= CAST($4 AS BIGINT)
RETURNING next_at`, subject, now.UnixNano(), int64(delay), now.Add(maxWait).UnixNano()).Scan(scanTime(&at))
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, fmt.Errorf("store: login slot of %s: %w", subject, ErrSlotsFull)
	case err != nil:
		return time.Time{}, fmt.Errorf("store: login slot of %s: %w", subject, err)
	}
	return at, nil
}
