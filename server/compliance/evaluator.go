package compliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// EventType is the server event recorded when a terminal's state changes.
const EventType = "compliance.changed"

// JobName is the periodic evaluation of every terminal as a job of the
// store (store.DB.TryJob): one replica runs it.
const JobName = "compliance.evaluate-all"

// jobClaimer is a store whose periodic jobs run on one replica at a time
// (store.DB).
type jobClaimer interface {
	TryJob(ctx context.Context, name string) (release func(), ok bool, err error)
}

// Config configures an Evaluator.
type Config struct {
	Store  store.Store
	Policy Policy
	// Interval is how often the terminals whose verdict the clock alone
	// may have changed since their last evaluation (a report missing, a
	// certificate or an exemption ending) are evaluated; 0 means half the
	// report interval, between 1 s and 30 s.
	Interval time.Duration
	// FullInterval is how often every terminal is evaluated all the same
	// (and at the first round): 0 means 10 minutes.
	FullInterval time.Duration
	// Location is the time zone of the daily history (the overview's
	// chart and the reports); UTC if nil.
	Location *time.Location
	// Registerer, when set, gets the gauges mnguard_terminals{state} and
	// mnguard_terminal_checks_failing{check}.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Evaluator keeps every terminal's verdict current: it evaluates them all
// periodically, and the terminals it is poked about (a report arrived)
// within a moment.
type Evaluator struct {
	cfg Config

	mu    sync.Mutex
	facts map[string]cachedFacts
	dirty map[string]bool
	// dirtyAll asks for every terminal to be evaluated (PokeAll).
	dirtyAll bool
	// verdicts holds each terminal's state and failing checks, for the
	// gauges; states and fails count them (by state, and by failing check
	// of the terminals not revoked), kept as verdicts change: a round of a
	// few poked terminals does not count 100,000 verdicts again.
	verdicts map[string]verdict
	states   map[string]int
	fails    map[string]int
	// due holds, by terminal, the earliest time the clock alone can
	// change its verdict (nextChange); the periodic round evaluates the
	// terminals due, not all 100,000 (reading and decoding every
	// terminal's verdict every 30 s was half the collector's idle CPU).
	// Its errors are early ones only: a verdict changed on another
	// replica moves a terminal's real due time later, never earlier, and
	// every terminal is evaluated at FullInterval anyway.
	due      map[string]time.Time
	lastFull time.Time
	lastDay  store.ComplianceDay
	poke     chan struct{}

	terminals *prometheus.GaugeVec
	failing   *prometheus.GaugeVec
}

// cachedFacts are the facts of the posture stored at a time; or, from
// Stored, the posture itself, whose facts the next evaluation extracts
// (the host name they need comes with it).
type cachedFacts struct {
	at      time.Time
	facts   Facts
	posture *mnguardv1.Posture
}

type verdict struct {
	state   string
	failing []string
}

// New returns an Evaluator; Run starts it.
func New(cfg Config) *Evaluator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.Policy.ReportInterval <= 0 {
		cfg.Policy.ReportInterval = time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = min(max(cfg.Policy.ReportInterval/2, time.Second), 30*time.Second)
	}
	if cfg.FullInterval <= 0 {
		cfg.FullInterval = 10 * time.Minute
	}
	e := &Evaluator{
		cfg: cfg, facts: map[string]cachedFacts{}, dirty: map[string]bool{}, verdicts: map[string]verdict{}, due: map[string]time.Time{},
		states: map[string]int{}, fails: map[string]int{},
		poke: make(chan struct{}, 1),
		terminals: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mnguard_terminals", Help: "Terminals by compliance state: compliant, non-compliant, stale, revoked.",
		}, []string{"state"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mnguard_terminal_checks_failing", Help: "Active terminals failing each compliance check.",
		}, []string{"check"}),
	}
	for _, s := range []string{store.Compliant, store.NonCompliant, store.Stale, store.ComplianceRevoked} {
		e.terminals.WithLabelValues(s).Set(0)
	}
	for _, c := range store.Checks {
		e.failing.WithLabelValues(c).Set(0)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(e.terminals, e.failing)
	}
	return e
}

// Policy returns the policy the checks compare against.
func (e *Evaluator) Policy() Policy { return e.cfg.Policy }

// Poke asks for the terminal to be evaluated soon (a report, an event or an
// exemption of it changed). It never blocks.
func (e *Evaluator) Poke(terminalID string) {
	e.mu.Lock()
	e.dirty[terminalID] = true
	e.mu.Unlock()
	select {
	case e.poke <- struct{}{}:
	default:
	}
}

// Stored tells the evaluator that p is the posture stored for the
// terminal as received at receivedAt (its report committed): the
// evaluation that follows, which finds that time in the store, takes p
// instead of reading the posture back and decoding it. On SQLite that read
// came after every commit of another connection, so from a cache SQLite
// had just emptied: 8 % of the collector's CPU at 1,667 reports/s. p
// must not change afterwards.
func (e *Evaluator) Stored(terminalID string, receivedAt time.Time, p *mnguardv1.Posture) {
	if p == nil {
		return
	}
	e.mu.Lock()
	if cf, ok := e.facts[terminalID]; !ok || !cf.at.After(receivedAt) {
		e.facts[terminalID] = cachedFacts{at: receivedAt, posture: p}
	}
	e.mu.Unlock()
}

// PokeAll asks for every terminal to be evaluated soon: something all
// verdicts depend on changed (the network policy). It never blocks.
func (e *Evaluator) PokeAll() {
	e.mu.Lock()
	e.dirtyAll = true
	e.mu.Unlock()
	select {
	case e.poke <- struct{}{}:
	default:
	}
}

// Run evaluates every terminal at once and then every Interval, and the
// poked ones (all of them after PokeAll) within about 100 ms, until ctx
// ends. Failures are logged and retried at the next round.
//
// With replicas on one database (a Store with TryJob) the evaluation of
// every terminal at each Interval, which turns silent terminals stale, is a
// job one replica runs (JobName); the others evaluate the terminals poked
// on them, and take the job over when its replica dies.
func (e *Evaluator) Run(ctx context.Context) error {
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	periodic := func() {
		if j, ok := e.cfg.Store.(jobClaimer); ok {
			rel, run, err := j.TryJob(ctx, JobName)
			if err != nil {
				if ctx.Err() == nil {
					e.cfg.Logger.Warn("compliance evaluation skipped: job not claimed", "err", err)
				}
				return
			}
			if !run {
				return
			}
			release = rel
		}
		if err := e.evaluateDue(ctx); err != nil && ctx.Err() == nil {
			e.cfg.Logger.Error("compliance evaluation", "err", err)
		}
	}
	periodic()
	tick := time.NewTicker(e.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			periodic()
		case <-e.poke:
			// Gather the pokes of a burst of reports into one round.
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			e.mu.Lock()
			ids, all := slices.Collect(maps.Keys(e.dirty)), e.dirtyAll
			clear(e.dirty)
			e.dirtyAll = false
			e.mu.Unlock()
			if all {
				if err := e.EvaluateAll(ctx); err != nil && ctx.Err() == nil {
					e.cfg.Logger.Error("compliance evaluation", "err", err)
				}
				continue
			}
			if err := e.Evaluate(ctx, ids); err != nil && ctx.Err() == nil {
				e.cfg.Logger.Error("compliance evaluation", "terminals", len(ids), "err", err)
			}
		}
	}
}

// EvaluateAll evaluates every terminal, stores what changed and updates
// the gauges and today's history.
func (e *Evaluator) EvaluateAll(ctx context.Context) error {
	if err := e.evaluate(ctx, nil); err != nil {
		return err
	}
	return e.saveDay(ctx)
}

// evaluateDue is the periodic round: every terminal at the first round
// and each FullInterval, else the terminals due (see Evaluator.due).
func (e *Evaluator) evaluateDue(ctx context.Context) error {
	now := e.cfg.Now()
	e.mu.Lock()
	full := e.lastFull.IsZero() || now.Sub(e.lastFull) >= e.cfg.FullInterval || now.Before(e.lastFull)
	var ids []string
	if !full {
		for id, at := range e.due {
			if !at.IsZero() && !now.Before(at) {
				ids = append(ids, id)
			}
		}
	}
	e.mu.Unlock()
	if full {
		if err := e.EvaluateAll(ctx); err != nil {
			return err
		}
		e.mu.Lock()
		e.lastFull = now
		e.mu.Unlock()
		return nil
	}
	if err := e.Evaluate(ctx, ids); err != nil {
		return err
	}
	return e.saveDay(ctx)
}

// Evaluate evaluates the terminals with the IDs and stores what changed.
func (e *Evaluator) Evaluate(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	return e.evaluate(ctx, ids)
}

// batch is how many verdicts one transaction stores.
const batch = 500

func (e *Evaluator) evaluate(ctx context.Context, ids []string) error {
	ins, err := e.cfg.Store.ComplianceInputs(ctx, ids)
	if err != nil {
		return err
	}
	now := e.cfg.Now()
	pol := e.cfg.Policy
	if pol.NetworkPolicyVersion != nil {
		// One version for the whole round.
		v := pol.NetworkPolicyVersion()
		pol.NetworkPolicyVersion = func() string { return v }
	}
	var (
		updates []store.ComplianceUpdate
		seen    = make(map[string]bool, len(ins))
	)
	for _, in := range ins {
		seen[in.TerminalID] = true
		input := Input{ComplianceInput: in}
		if input.Facts, err = e.factsOf(ctx, in); err != nil {
			return err
		}
		if input.Revoked, err = e.revoked(ctx, input.Facts.Exemptions); err != nil {
			return err
		}
		c := Evaluate(input, now, pol)
		e.mu.Lock()
		e.setVerdict(in.TerminalID, verdict{state: c.State, failing: c.Failing()})
		e.due[in.TerminalID] = nextChange(input, now, pol)
		e.mu.Unlock()
		if u, ok := update(in.Prev, c); ok {
			updates = append(updates, u)
		}
	}
	if ids == nil {
		// Forget terminals that are gone.
		e.mu.Lock()
		for id := range e.verdicts {
			if !seen[id] {
				e.setVerdict(id, verdict{})
				delete(e.facts, id)
				delete(e.due, id)
			}
		}
		e.mu.Unlock()
	}
	for len(updates) > 0 {
		n := min(batch, len(updates))
		if err := e.cfg.Store.SaveCompliance(ctx, updates[:n]); err != nil {
			return err
		}
		for _, u := range updates[:n] {
			if u.Event != nil {
				e.cfg.Logger.Info("terminal compliance changed", "terminal", u.Compliance.TerminalID,
					"state", u.Compliance.State, "failing", strings.Join(u.Compliance.Failing(), ","))
			}
		}
		updates = updates[n:]
	}
	e.setGauges()
	return nil
}

// factsOf returns the facts of the terminal's latest posture, decoding it
// only when it changed since the last evaluation (or it was Stored).
func (e *Evaluator) factsOf(ctx context.Context, in store.ComplianceInput) (Facts, error) {
	if in.PostureReceivedAt.IsZero() {
		return FactsOf(in.TerminalID, in.Hostname, nil), nil
	}
	e.mu.Lock()
	cf, ok := e.facts[in.TerminalID]
	e.mu.Unlock()
	if ok && cf.at.Equal(in.PostureReceivedAt) {
		if cf.posture != nil {
			return e.keepFacts(in, cf.at, cf.posture), nil
		}
		return cf.facts, nil
	}
	b, at, err := e.cfg.Store.LatestPosture(ctx, in.TerminalID)
	if errors.Is(err, store.ErrNotFound) {
		return FactsOf(in.TerminalID, in.Hostname, nil), nil
	}
	if err != nil {
		return Facts{}, err
	}
	p := &mnguardv1.Posture{}
	if err := proto.Unmarshal(b, p); err != nil {
		// Stored after validation, so this is corruption: judge the
		// terminal as one without posture, loudly.
		e.cfg.Logger.Error("stored posture does not decode", "terminal", in.TerminalID, "err", err)
		p = nil
	}
	return e.keepFacts(in, at, p), nil
}

// keepFacts extracts and caches the facts of the terminal's posture
// received at at.
func (e *Evaluator) keepFacts(in store.ComplianceInput, at time.Time, p *mnguardv1.Posture) Facts {
	f := FactsOf(in.TerminalID, in.Hostname, p)
	e.mu.Lock()
	if cf, ok := e.facts[in.TerminalID]; !ok || !cf.at.After(at) {
		e.facts[in.TerminalID] = cachedFacts{at: at, facts: f}
	}
	e.mu.Unlock()
	return f
}

// revoked looks up which of the exemptions the agent applies the collector
// has revoked.
func (e *Evaluator) revoked(ctx context.Context, es []*mnguardv1.ExemptionState) (map[string]time.Time, error) {
	var out map[string]time.Time
	for _, x := range es {
		rec, err := e.cfg.Store.Exemption(ctx, x.GetId())
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !rec.RevokedAt.IsZero() {
			if out == nil {
				out = map[string]time.Time{}
			}
			out[x.GetId()] = rec.RevokedAt
		}
	}
	return out, nil
}

// update compares a new verdict with the stored one and returns what to
// store, if anything changed that the console or the history shows.
func update(prev *store.Compliance, c store.Compliance) (store.ComplianceUpdate, bool) {
	u := store.ComplianceUpdate{Compliance: c}
	var prevChecks map[string]store.CheckResult
	if prev != nil {
		prevChecks = make(map[string]store.CheckResult, len(prev.Checks))
		for _, r := range prev.Checks {
			prevChecks[r.Name] = r
		}
	}
	changed := prev == nil || prev.State != c.State || prev.Offline != c.Offline ||
		prev.AgentVersion != c.AgentVersion || prev.Platform != c.Platform || prev.Addresses != c.Addresses || prev.Search != c.Search
	for _, r := range c.Checks {
		old, had := prevChecks[r.Name]
		if !had || old.Status != r.Status || old.Detail != r.Detail || !slices.Equal(old.Args, r.Args) {
			changed = true
		}
		switch {
		case r.Status == store.CheckFail && (!had || old.Status != store.CheckFail):
			u.Opened = append(u.Opened, r)
		case r.Status != store.CheckFail && had && old.Status == store.CheckFail:
			u.Closed = append(u.Closed, r.Name)
		}
	}
	if !changed {
		return u, false
	}
	if prev != nil && prev.State != c.State {
		u.Event = stateEvent(prev.State, c)
	}
	return u, true
}

// stateEvent is the server event of a change of state.
func stateEvent(from string, c store.Compliance) *store.ServerEvent {
	sev := mnguardv1.Severity_SEVERITY_WARNING
	switch c.State {
	case store.Compliant, store.ComplianceRevoked:
		sev = mnguardv1.Severity_SEVERITY_INFO
	case store.Stale:
		if c.Offline {
			sev = mnguardv1.Severity_SEVERITY_ALERT
		}
	}
	failing := c.Failing()
	msg := fmt.Sprintf("compliance: %s -> %s", from, c.State)
	if len(failing) > 0 {
		msg += " (failing: " + strings.Join(failing, ", ") + ")"
	}
	ev := &mnguardv1.Event{
		Time: timestamppb.New(c.EvaluatedAt), Type: EventType, Severity: sev, Message: msg,
		Attributes: map[string]string{"from": from, "to": c.State, "failing": strings.Join(failing, ",")},
	}
	data, _ := proto.Marshal(ev)
	return &store.ServerEvent{TerminalID: c.TerminalID, Time: c.EvaluatedAt, Type: EventType, Severity: int32(sev), Message: msg, Data: data}
}

// setVerdict records the terminal's verdict and counts it instead of its
// previous one; the zero verdict forgets the terminal. e.mu is held.
func (e *Evaluator) setVerdict(id string, v verdict) {
	count := func(v verdict, n int) {
		if v.state == "" {
			return
		}
		add := func(m map[string]int, k string) {
			// A count down to zero is absent, as when counted afresh.
			if m[k] += n; m[k] == 0 {
				delete(m, k)
			}
		}
		add(e.states, v.state)
		if v.state == store.ComplianceRevoked {
			return
		}
		for _, c := range v.failing {
			add(e.fails, c)
		}
	}
	if old, ok := e.verdicts[id]; ok {
		count(old, -1)
	}
	count(v, 1)
	if v.state == "" {
		delete(e.verdicts, id)
		return
	}
	e.verdicts[id] = v
}

// counts returns the terminals per state and failing check, from the
// verdicts of the last evaluations.
func (e *Evaluator) counts() (map[string]int, map[string]int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.states), maps.Clone(e.fails)
}

func (e *Evaluator) setGauges() {
	states, fails := e.counts()
	for _, s := range []string{store.Compliant, store.NonCompliant, store.Stale, store.ComplianceRevoked} {
		e.terminals.WithLabelValues(s).Set(float64(states[s]))
	}
	for _, c := range store.Checks {
		e.failing.WithLabelValues(c).Set(float64(fails[c]))
	}
}

// saveDay records today's counts when they changed, or every 10 minutes.
func (e *Evaluator) saveDay(ctx context.Context) error {
	now := e.cfg.Now()
	states, fails := e.counts()
	d := store.ComplianceDay{
		Day: now.In(e.cfg.Location).Format(time.DateOnly), Compliant: states[store.Compliant],
		NonCompliant: states[store.NonCompliant], Stale: states[store.Stale], Failing: fails, UpdatedAt: now,
	}
	e.mu.Lock()
	last := e.lastDay
	e.mu.Unlock()
	if last.Day == d.Day && last.Compliant == d.Compliant && last.NonCompliant == d.NonCompliant && last.Stale == d.Stale &&
		maps.Equal(last.Failing, d.Failing) && now.Sub(last.UpdatedAt) < 10*time.Minute {
		return nil
	}
	if err := e.cfg.Store.SaveComplianceDay(ctx, d); err != nil {
		return err
	}
	e.mu.Lock()
	e.lastDay = d
	e.mu.Unlock()
	return nil
}
