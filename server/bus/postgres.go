package bus

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Handler acts on the messages of the other replicas.
type Handler interface {
	// Handle acts on one message of another replica. It is called from
	// the listening goroutine, one message at a time: it must not block
	// for long.
	Handle(ctx context.Context, m Message)
	// Reconcile is called each time the listening connection is
	// (re)established, once LISTEN is in force: notifications sent while
	// it was down are lost, so the replica re-derives from the database
	// whatever they could have changed. Messages may arrive meanwhile.
	Reconcile(ctx context.Context)
}

// ApplicationName begins the application_name of the bus's connections,
// followed by "/" and the replica's Origin, so that an operator (or a
// test) can tell them, and whose they are, in pg_stat_activity.
const ApplicationName = "mnguard-bus"

// Reconnection backoff of the listening and the publishing connection:
// doubled per failure from minBackoff up to maxBackoff, with jitter. A
// replica that lost its LISTEN misses pushes until it is back (and
// reconciles then), so the bound is short.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 3 * time.Second
	// checkEvery is how long the listening connection may be silent
	// before it is checked with a query: a connection whose peer vanished
	// without a word (a cut cable) would otherwise wait forever.
	checkEvery = 30 * time.Second
)

// Postgres is the bus over PostgreSQL LISTEN/NOTIFY: one connection that
// listens, one that sends. Publish never blocks: messages wait in a set
// (two equal messages are one) until they are sent, and are retried until
// the database takes them.
type Postgres struct {
	cfg    *pgx.ConnConfig
	origin string
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]Message
	wake    chan struct{}

	listening  atomic.Bool
	connects   atomic.Int64
	listenPID  atomic.Uint32
	published  atomic.Int64
	reconciled atomic.Int64
}

// NewPostgres returns a bus on the PostgreSQL database of dsn
// ("postgres://…" or key=value). It connects when Run is called.
func NewPostgres(dsn string, log *slog.Logger) (*Postgres, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bus: PostgreSQL connection string: %w", err)
	}
	return NewPostgresConfig(cfg, log)
}

// NewPostgresConfig is NewPostgres with the connection settings of cfg
// (a copy is kept), e.g. those of the store's pool.
func NewPostgresConfig(cfg *pgx.ConnConfig, log *slog.Logger) (*Postgres, error) {
	cfg = cfg.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if log == nil {
		log = slog.Default()
	}
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("bus: origin: %w", err)
	}
	origin := hex.EncodeToString(b[:])
	cfg.RuntimeParams["application_name"] = ApplicationName + "/" + origin
	return &Postgres{
		cfg: cfg, origin: origin, log: log,
		pending: make(map[string]Message), wake: make(chan struct{}, 1),
	}, nil
}

// Origin is this replica's name on the bus, random per process.
func (p *Postgres) Origin() string { return p.origin }

// Listening reports whether LISTEN is in force now.
func (p *Postgres) Listening() bool { return p.listening.Load() }

// ListenPID is the backend process ID of the listening connection, 0
// while there is none.
func (p *Postgres) ListenPID() uint32 { return p.listenPID.Load() }

// Connects counts the listening connections established, the first
// included.
func (p *Postgres) Connects() int64 { return p.connects.Load() }

// Reconciled counts the completed Reconcile calls.
func (p *Postgres) Reconciled() int64 { return p.reconciled.Load() }

// Published counts the notifications sent.
func (p *Postgres) Published() int64 { return p.published.Load() }

// Publish announces m to the other replicas, stamped with Origin. Call it
// after the change is committed. It never blocks; an invalid message is
// logged and dropped.
func (p *Postgres) Publish(m Message) {
	m.Origin = p.origin
	if err := m.Validate(); err != nil {
		p.log.Error("bus message not sent", "kind", m.Kind, "err", err)
		return
	}
	p.mu.Lock()
	p.pending[m.key()] = m
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run listens and sends until ctx ends, reconnecting with backoff when a
// connection is lost; it returns nil then.
func (p *Postgres) Run(ctx context.Context, h Handler) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.sendLoop(ctx)
	}()
	p.listenLoop(ctx, h)
	wg.Wait()
	return nil
}

func (p *Postgres) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, p.cfg)
}

// backoff waits the n-th (from 0) reconnection delay; false when ctx
// ended.
func backoff(ctx context.Context, n int) bool {
	d := minBackoff << min(n, 10)
	d = min(d, maxBackoff)
	// Full jitter on the upper half: replicas that lost the database
	// together do not come back in step.
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (p *Postgres) listenLoop(ctx context.Context, h Handler) {
	// Reconcile runs beside the listening, one at a time; a reconnect
	// while one runs asks for another after it.
	reconcile := make(chan struct{}, 1)
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-reconcile:
				h.Reconcile(ctx)
				p.reconciled.Add(1)
			}
		}
	}()
	for fails := 0; ctx.Err() == nil; {
		err := p.listen(ctx, h, reconcile)
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("bus: listening connection lost; reconnecting (pushes made meanwhile are reconciled once back)", "err", err)
		if !backoff(ctx, fails) {
			return
		}
		fails++
		if p.listening.Load() {
			fails = 0
		}
	}
}

// listen runs one listening connection until it fails or ctx ends.
func (p *Postgres) listen(ctx context.Context, h Handler, reconcile chan struct{}) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		p.listening.Store(false)
		p.listenPID.Store(0)
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	p.listenPID.Store(conn.PgConn().PID())
	p.listening.Store(true)
	if p.connects.Add(1) > 1 {
		p.log.Info("bus: listening again; reconciling what was pushed meanwhile")
	}
	select {
	case reconcile <- struct{}{}:
	default:
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, checkEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Silent for a while: is the database still there?
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			continue
		case err != nil:
			return fmt.Errorf("wait for notification: %w", err)
		}
		if n.Channel != Channel {
			continue
		}
		m, err := Decode(n.Payload)
		if err != nil {
			p.log.Warn("bus: message ignored", "from_pid", n.PID, "err", err)
			continue
		}
		if m.Origin == p.origin {
			continue
		}
		h.Handle(ctx, m)
	}
}

// take removes and returns the pending messages.
func (p *Postgres) take() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Message, 0, len(p.pending))
	for k, m := range p.pending {
		out = append(out, m)
		delete(p.pending, k)
	}
	return out
}

// putBack returns unsent messages to the pending set.
func (p *Postgres) putBack(ms []Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range ms {
		p.pending[m.key()] = m
	}
}

func (p *Postgres) sendLoop(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			conn.Close(cctx)
		}
	}()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for {
			ms := p.take()
			if len(ms) == 0 {
				break
			}
			err := error(nil)
			if conn == nil {
				conn, err = p.connect(ctx)
			}
			if err == nil {
				err = p.send(ctx, conn, ms)
			}
			if err == nil {
				fails = 0
				continue
			}
			p.putBack(ms)
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("bus: notifications not sent; retrying", "messages", len(ms), "err", err)
			if conn != nil {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				conn.Close(cctx)
				cancel()
				conn = nil
			}
			if !backoff(ctx, fails) {
				return
			}
			fails++
		}
	}
}

// send notifies ms in one round trip.
func (p *Postgres) send(ctx context.Context, conn *pgx.Conn, ms []Message) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var b pgx.Batch
	for _, m := range ms {
		payload, err := m.Encode()
		if err != nil {
			// Validated when published: cannot happen.
			p.log.Error("bus message not sent", "kind", m.Kind, "err", err)
			continue
		}
		b.Queue("SELECT pg_notify($1, $2)", Channel, payload)
	}
	if err := conn.SendBatch(ctx, &b).Close(); err != nil {
		return err
	}
	p.published.Add(int64(b.Len()))
	return nil
}
