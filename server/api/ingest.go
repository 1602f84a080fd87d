package api

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mnguard/mnguard/server/store"
)

// Group commit of agent reports. A collector of 100,000 terminals takes
// thousands of reports a second, and SQLite has one writer: one
// transaction per report spends the writer on commits (an fsync of the WAL
// each). Reports that arrive while a transaction runs wait for the next
// one, which stores them all (store.DB.SaveReports): under load the batches
// grow by themselves, and a lone report is stored at once, without any
// added wait.
const (
	// DefaultIngestBatch is the most reports one transaction stores.
	DefaultIngestBatch = 256
	// ingestCommitTimeout bounds one batch's transaction. The reports'
	// own contexts do not: one agent hanging up must not fail the
	// reports of the others in its batch.
	ingestCommitTimeout = 30 * time.Second
	// postgresParallelBatches is how many batches are stored at once on
	// PostgreSQL: enough to keep it busy while one batch's statements
	// travel, few enough not to take every connection of the pool.
	postgresParallelBatches = 4
)

// batchSaver is a store that saves many reports in one transaction.
type batchSaver interface {
	SaveReports(ctx context.Context, rs []store.BatchReport) ([]store.BatchResult, error)
}

// ingester gathers concurrent reports into batches. It holds no goroutine
// while no report waits: the first report that finds no batch running
// starts one, and that goroutine ends when the queue is empty.
type ingester struct {
	save     func(ctx context.Context, rs []store.BatchReport) ([]store.BatchResult, error)
	maxBatch int
	// linger is how long a batch waits for more reports once it holds
	// fewer than maxBatch (0: none, the batch takes what is queued).
	linger  time.Duration
	batches func(n int, took time.Duration)
	// parallel is how many batches may be stored at once: one on SQLite
	// (one writer), more on PostgreSQL, where batches of different
	// terminals lock only their terminals' rows.
	parallel int

	mu      sync.Mutex
	queue   []*ingestItem
	running int
}

type ingestItem struct {
	ctx  context.Context
	r    store.BatchReport
	done chan struct{}
	res  store.BatchResult
}

// newIngester returns an ingester over st: in batches where st can
// (store.DB), one report per transaction otherwise.
func newIngester(st store.Store, maxBatch int, linger time.Duration, batches func(int, time.Duration)) *ingester {
	if maxBatch <= 0 {
		maxBatch = DefaultIngestBatch
	}
	g := &ingester{maxBatch: maxBatch, linger: linger, batches: batches, parallel: 1}
	if d, ok := st.(interface{ Dialect() string }); ok && d.Dialect() == store.DialectPostgres {
		g.parallel = postgresParallelBatches
	}
	if bs, ok := st.(batchSaver); ok {
		g.save = bs.SaveReports
	} else {
		g.save = func(ctx context.Context, rs []store.BatchReport) ([]store.BatchResult, error) {
			out := make([]store.BatchResult, len(rs))
			for i, r := range rs {
				out[i].ReportResult, out[i].Err = st.SaveReport(ctx, r.Report)
			}
			return out, nil
		}
	}
	return g
}

// submit stores r in the next batch and returns its result once the batch's
// transaction committed, or failed. An error means r may or may not be
// stored (the caller's context ended first, or the commit failed): its
// events must not be acknowledged.
func (g *ingester) submit(ctx context.Context, r store.BatchReport) (store.ReportResult, error) {
	it := &ingestItem{ctx: ctx, r: r, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, it)
	if g.running < g.parallel {
		g.running++
		go g.run()
	}
	g.mu.Unlock()
	select {
	case <-it.done:
		return it.res.ReportResult, it.res.Err
	case <-ctx.Done():
		return store.ReportResult{}, ctx.Err()
	}
}

// run commits batches until no report waits.
func (g *ingester) run() {
	for {
		batch := g.take()
		if batch == nil {
			return
		}
		g.commit(batch)
	}
}

// take returns the next batch, nil (and one runner fewer) when the queue
// is empty. Reports whose callers gave up are dropped.
func (g *ingester) take() []*ingestItem {
	if g.linger > 0 {
		g.mu.Lock()
		n := len(g.queue)
		g.mu.Unlock()
		if n > 0 && n < g.maxBatch {
			time.Sleep(g.linger)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		n := min(len(g.queue), g.maxBatch)
		if n == 0 {
			g.running--
			if g.running == 0 {
				g.queue = nil
			}
			return nil
		}
		batch := make([]*ingestItem, 0, n)
		for _, it := range g.queue[:n] {
			if it.ctx.Err() != nil {
				it.res.Err = it.ctx.Err()
				close(it.done)
				continue
			}
			batch = append(batch, it)
		}
		clear(g.queue[:n])
		g.queue = g.queue[n:]
		if len(batch) > 0 {
			return batch
		}
	}
}

func (g *ingester) commit(batch []*ingestItem) {
	start := time.Now()
	rs := make([]store.BatchReport, len(batch))
	for i, it := range batch {
		rs[i] = it.r
	}
	ctx, cancel := context.WithTimeout(context.Background(), ingestCommitTimeout)
	res, err := g.save(ctx, rs)
	cancel()
	for i, it := range batch {
		switch {
		case err != nil:
			it.res = store.BatchResult{Err: err}
		case i < len(res):
			it.res = res[i]
		default:
			it.res = store.BatchResult{Err: fmt.Errorf("store answered %d results for %d reports", len(res), len(rs))}
		}
		close(it.done)
	}
	if g.batches != nil {
		g.batches(len(batch), time.Since(start))
	}
}
