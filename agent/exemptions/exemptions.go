// Package exemptions keeps the helpdesk's device exemptions on a terminal:
// it verifies the collector's signed tokens and the helpdesk's offline
// codes, persists what is in force, and ends each exemption at its expiry,
// at revocation, or when the clock cannot be trusted.
//
// Expiry holds offline, across restarts and when the wall clock is set
// back: an exemption ends at its wall-clock end (not_after) or when its
// duration, measured since the agent received it, is used up, whichever
// comes first. The used-up duration advances by the monotonic clock while
// the agent runs, by the wall clock across a restart, and is persisted
// every tick; a wall clock found earlier than the last time the agent
// recorded ends every exemption (fail closed).
package exemptions

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Files in the state directory.
const (
	// FileName holds the exemptions, pending offline challenges and the
	// offline-code lockout (JSON, 0600).
	FileName = "exemptions.json"
	// SocketName is the control socket 'mnguard-agent exemption' talks to.
	SocketName = "control.sock"
)

// Sources of an exemption.
const (
	SourceServer  = "server"  // pushed by the collector
	SourceOffline = "offline" // entered from a helpdesk response code
)

// States of an exemption in posture and 'mnguard-agent exemption list'.
const (
	StateWaiting = "waiting" // in force, no matching device writable (none attached, or not yet valid)
	StateApplied = "applied" // the matching device is writable
	StateEnding  = "ending"  // ended; the device is being made read-only
	StateEnded   = "ended"
)

// Event types the manager emits. exemption.applied is the media side's.
const (
	EventReceived         = "exemption.received"
	EventRefused          = "exemption.refused"
	EventExpired          = "exemption.expired"
	EventRevoked          = "exemption.revoked"
	EventOfflineChallenge = "exemption.offline_challenge"
	EventOfflineEntered   = "exemption.offline_entered"
	EventOfflineRefused   = "exemption.offline_refused"
	EventStateDamaged     = "exemption.state_damaged"
)

// Reasons an exemption ended (EndReason, the "reason" attribute).
const (
	EndExpired      = "expired"        // its wall-clock end passed
	EndDurationUsed = "duration_used"  // its duration since receipt is used up
	EndRevoked      = "revoked"        // the collector's set no longer holds it
	EndClockBack    = "clock_set_back" // the wall clock went back across a restart
	EndUnverifiable = "unverifiable"   // its stored token or record no longer verifies
	EndNotPersisted = "not_persisted"  // it could not be recorded, so it was not applied
)

// Limits.
const (
	// DefaultTick is the longest time between two checks of expiry (and
	// persisted used-up durations).
	DefaultTick = time.Second
	// ChallengeTTL is how long an offline challenge can be answered.
	ChallengeTTL = time.Hour
	// MaxPending is how many offline challenges may wait at once; a new
	// one replaces the oldest.
	MaxPending = 8
	// MaxWrongCodes wrong response codes in a row lock code entry for
	// Lockout.
	MaxWrongCodes = 5
	Lockout       = 15 * time.Minute
	// KeepEnded is how long an ended exemption stays in the posture.
	KeepEnded = time.Hour
	// keepTombstone is how long an ended exemption's ID is remembered past
	// its wall-clock end, so the collector's set cannot start it again.
	keepTombstone = 24 * time.Hour
	// MaxExemptions bounds the exemptions held (in force and ended).
	MaxExemptions = 256
	// applyWait bounds how long a control request waits for the devices
	// to be re-evaluated after a change.
	applyWait = 5 * time.Second
)

// EmitFunc records an event for the collector.
type EmitFunc func(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string)

// Options configure a Manager.
type Options struct {
	// StateDir holds FileName.
	StateDir string
	// TerminalID is this terminal's ID, which tokens and codes must name.
	TerminalID string
	// VerifyKey is the collector's Ed25519 exemption key from enrollment.
	VerifyKey ed25519.PublicKey
	// OfflineKey is the terminal's key for offline response codes.
	OfflineKey []byte
	Emit       EmitFunc
	Logger     *slog.Logger
	// Apply re-evaluates every removable device against Allows (the media
	// manager's Refresh). Run calls it, without locks held, soon after
	// every change of the exemptions in force.
	Apply func(ctx context.Context)
	// Attached lists the removable devices present, for the exemptions'
	// states (the media posture's devices); nil reports none.
	Attached func() []*mnguardv1.RemovableDevice
	// Now is the wall clock and Mono a monotonic clock (time since an
	// arbitrary origin); tests inject both. Defaults: time.Now and the
	// monotonic reading of time.Since.
	Now  func() time.Time
	Mono func() time.Duration
	// Boot returns the current boot's ID and the time since boot, counting
	// suspend (Linux: boot_id and CLOCK_BOOTTIME); "" where unknown.
	// Default BootClock.
	Boot func() (id string, uptime time.Duration)
	// Tick is the longest time between two expiry checks; DefaultTick if
	// zero.
	Tick time.Duration
}

// Manager holds the exemptions of one terminal. It is safe for concurrent
// use; Run drives expiry and applies changes.
type Manager struct {
	opts Options
	log  *slog.Logger
	path string

	mu       sync.Mutex
	st       *file
	lastMono time.Duration
	// refused remembers the tokens refused since start, so a set pushed
	// again does not repeat the event.
	refused map[[32]byte]bool
	gen     uint64 // changes of what is in force
	applied uint64 // the change Apply last finished for
	done    chan struct{}
	kick    chan struct{}

	saveMu  sync.Mutex
	saveSeq uint64
	saved   uint64
}

// New loads the state directory's exemptions and returns the manager. A
// damaged file is set aside (FileName + ".damaged") and nothing is in force;
// a wall clock earlier than the file's last-seen time ends every exemption.
func New(opts Options) (*Manager, error) {
	switch {
	case opts.StateDir == "":
		return nil, errors.New("exemptions: no state directory")
	case opts.TerminalID == "":
		return nil, errors.New("exemptions: no terminal ID")
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Now().Round(0) }
	}
	if opts.Mono == nil {
		start := time.Now()
		opts.Mono = func() time.Duration { return time.Since(start) }
	}
	if opts.Boot == nil {
		opts.Boot = BootClock
	}
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{
		opts: opts, log: log, path: filepath.Join(opts.StateDir, FileName),
		refused: make(map[[32]byte]bool), done: make(chan struct{}), kick: make(chan struct{}, 1),
	}
	m.lastMono = opts.Mono()
	m.load()
	return m, nil
}

// Path is the file the manager persists to.
func (m *Manager) Path() string { return m.path }

func (m *Manager) emit(typ string, sev mnguardv1.Severity, msg string, attrs map[string]string) {
	if m.opts.Emit != nil {
		m.opts.Emit(typ, sev, msg, attrs)
	}
}

type event struct {
	typ   string
	sev   mnguardv1.Severity
	msg   string
	attrs map[string]string
}

func (m *Manager) emitAll(evs []event) {
	for _, e := range evs {
		m.emit(e.typ, e.sev, e.msg, e.attrs)
	}
}

// load reads the file; see New.
func (m *Manager) load() {
	now := m.opts.Now()
	m.st = &file{Version: fileVersion}
	data, err := os.ReadFile(m.path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err == nil {
		var f *file
		f, err = parseFile(data)
		if err == nil {
			m.st = f
		}
	}
	if err != nil {
		aside := m.path + ".damaged"
		if rerr := os.Rename(m.path, aside); rerr != nil {
			aside = ""
		}
		m.log.Error("exemption state unreadable: no exemption is in force", "file", m.path, "err", err, "moved_to", aside)
		m.emit(EventStateDamaged, mnguardv1.Severity_SEVERITY_ALERT,
			"the agent's exemption state was unreadable; every exemption ended and pending offline challenges were dropped",
			map[string]string{"file": m.path, "error": err.Error()})
		return
	}
	var evs []event
	back := now.Before(m.st.LastSeen)
	// The downtime: by the wall clock, or — within the same boot — by the
	// time since boot when that is longer (the wall clock was set back
	// while the agent was down, by less than the downtime).
	down := now.Sub(m.st.LastSeen)
	if id, up := m.opts.Boot(); id != "" && id == m.st.BootID {
		down = max(down, up-time.Duration(m.st.BootUptime))
	}
	for _, r := range m.st.Exemptions {
		if r.ended() {
			continue
		}
		if back {
			evs = append(evs, m.endLocked(r, now, EndClockBack,
				fmt.Sprintf("the wall clock (%s) is earlier than the agent last saw it (%s)", now.Format(time.RFC3339), m.st.LastSeen.Format(time.RFC3339))))
			continue
		}
		// The agent was down from LastSeen to now: that time counts.
		r.consumed += down
		if err := m.reverify(r, now); err != nil {
			evs = append(evs, m.endLocked(r, now, EndUnverifiable, err.Error()))
			continue
		}
		if why, reason := r.over(now); why != "" {
			evs = append(evs, m.endLocked(r, now, why, reason))
		}
	}
	if back {
		m.st.Challenges = nil
	}
	m.pruneLocked(now)
	m.seenLocked(now)
	if back || len(evs) > 0 {
		m.log.Warn("exemptions ended at start", "count", len(evs), "clock_set_back", back)
	}
	data, serr := m.marshalLocked()
	if serr == nil {
		serr = m.write(data, m.nextSeqLocked())
	}
	if serr != nil {
		m.log.Error("persist exemptions", "err", serr)
	}
	m.emitAll(evs)
}

// reverify checks a loaded record against its token (server) or MAC
// (offline); a server record takes its fields from the token again.
func (m *Manager) reverify(r *record, now time.Time) error {
	switch r.Source {
	case SourceServer:
		se := &mnguardv1.SignedExemption{}
		if err := proto.Unmarshal(r.Token, se); err != nil {
			return fmt.Errorf("stored token: %w", err)
		}
		e, err := verify(m.opts.VerifyKey, se, m.opts.TerminalID, now)
		if err != nil && !errors.Is(err, exemption.ErrExpired) && !errors.Is(err, exemption.ErrNotYetValid) {
			return fmt.Errorf("stored token: %w", err)
		}
		// Expired: over() ends it as such, by the token's own times.
		if e.GetId() != r.ID {
			return errors.New("stored token names another exemption")
		}
		r.fill(e)
		return nil
	case SourceOffline:
		if !r.macOK(m.opts.OfflineKey, m.opts.TerminalID) {
			return errors.New("stored offline exemption was altered (its MAC does not verify)")
		}
		return nil
	}
	return fmt.Errorf("unknown source %q", r.Source)
}

// verify is exemption.Verify, except that a token not valid yet is
// returned (as ErrNotYetValid with the exemption) so it can wait.
func verify(pub ed25519.PublicKey, se *mnguardv1.SignedExemption, terminalID string, now time.Time) (*mnguardv1.Exemption, error) {
	e, err := exemption.Verify(pub, se, terminalID, now)
	if errors.Is(err, exemption.ErrNotYetValid) {
		// Verify checks the signature, fields and terminal before the
		// times: the payload is the collector's.
		e = &mnguardv1.Exemption{}
		if uerr := proto.Unmarshal(se.GetPayload(), e); uerr != nil {
			return nil, err
		}
		return e, err
	}
	if errors.Is(err, exemption.ErrExpired) {
		e = &mnguardv1.Exemption{}
		if uerr := proto.Unmarshal(se.GetPayload(), e); uerr != nil {
			return nil, err
		}
		return e, err
	}
	return e, err
}

// marshalLocked returns the file as it is now.
func (m *Manager) marshalLocked() ([]byte, error) {
	return m.st.marshal()
}

func (m *Manager) nextSeqLocked() uint64 {
	m.saveSeq++
	return m.saveSeq
}

// write persists data unless a later state was written already.
func (m *Manager) write(data []byte, seq uint64) error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	if seq <= m.saved {
		return nil
	}
	if err := writeFile(m.path, data); err != nil {
		return err
	}
	m.saved = seq
	return nil
}

// saveLocked marshals under m.mu; the caller calls the returned function
// after unlocking to write it.
func (m *Manager) saveLocked() func() error {
	data, err := m.marshalLocked()
	if err != nil {
		return func() error { return err }
	}
	seq := m.nextSeqLocked()
	return func() error { return m.write(data, seq) }
}

// changedLocked notes a change of what is in force; Run applies it.
func (m *Manager) changedLocked() uint64 {
	m.gen++
	select {
	case m.kick <- struct{}{}:
	default:
	}
	return m.gen
}

// endLocked ends r and returns the event that says so.
func (m *Manager) endLocked(r *record, now time.Time, reason, detail string) event {
	r.EndedAt, r.EndReason, r.EndDetail = now, reason, detail
	typ, sev, what := EventExpired, mnguardv1.Severity_SEVERITY_INFO, "expired"
	switch reason {
	case EndRevoked:
		typ, what = EventRevoked, "revoked"
	case EndClockBack, EndUnverifiable, EndNotPersisted:
		sev, what = mnguardv1.Severity_SEVERITY_WARNING, "ended: "+detail
	case EndDurationUsed:
		what = "expired (its duration since receipt is used up)"
	}
	m.log.Info("exemption ended", "id", r.ID, "device", r.Device, "source", r.Source, "reason", reason)
	a := r.attrs()
	a["reason"] = reason
	if detail != "" {
		a["detail"] = detail
	}
	return event{typ, sev, fmt.Sprintf("exemption %s for %s %s", r.ID, r.Device, what), a}
}

// pruneLocked forgets ended exemptions past keeping and expired
// challenges, and lifts an elapsed lockout.
func (m *Manager) pruneLocked(now time.Time) {
	keep := m.st.Exemptions[:0]
	for _, r := range m.st.Exemptions {
		if r.ended() && now.Sub(r.EndedAt) > KeepEnded && (now.After(r.NotAfter.Add(keepTombstone)) || now.Before(r.EndedAt)) {
			continue
		}
		keep = append(keep, r)
	}
	m.st.Exemptions = keep
	ch := m.st.Challenges[:0]
	for _, c := range m.st.Challenges {
		if c.expired(now) {
			continue
		}
		ch = append(ch, c)
	}
	m.st.Challenges = ch
	if !m.st.LockedUntil.IsZero() && !now.Before(m.st.LockedUntil) {
		m.st.LockedUntil = time.Time{}
	}
}

// Run checks expiry every Tick (sooner when an exemption ends sooner),
// persists the used-up durations, and calls Apply after every change, until
// ctx ends. It persists once more on the way out.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.applyLoop(ctx) })
	defer wg.Wait()
	// Apply once at start: what the file holds is what is in force.
	m.mu.Lock()
	m.changedLocked()
	m.mu.Unlock()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.tick()
			return nil
		case <-t.C:
		}
		next := m.tick()
		t.Reset(next)
	}
}

func (m *Manager) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		m.mu.Lock()
		g := m.gen
		m.mu.Unlock()
		if m.opts.Apply != nil {
			m.opts.Apply(ctx)
		}
		m.mu.Lock()
		if g > m.applied {
			m.applied = g
			close(m.done)
			m.done = make(chan struct{})
		}
		m.mu.Unlock()
	}
}

// waitApplied waits until Apply ran for change g (or a later one).
func (m *Manager) waitApplied(ctx context.Context, g uint64) bool {
	t := time.NewTimer(applyWait)
	defer t.Stop()
	for {
		m.mu.Lock()
		ok, done := m.applied >= g, m.done
		m.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-done:
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
}

// tick advances the used-up durations, ends what is over, persists, and
// returns when to tick next.
func (m *Manager) tick() time.Duration {
	m.mu.Lock()
	now, mono := m.opts.Now(), m.opts.Mono()
	delta := max(mono-m.lastMono, 0)
	m.lastMono = mono
	var evs []event
	next, active := m.opts.Tick, false
	for _, r := range m.st.Exemptions {
		if r.ended() {
			continue
		}
		r.consumed += delta
		if why, detail := r.over(now); why != "" {
			evs = append(evs, m.endLocked(r, now, why, detail))
			continue
		}
		active = true
		next = min(next, r.left(now))
	}
	n := len(m.st.Exemptions) + len(m.st.Challenges)
	m.pruneLocked(now)
	pruned := n != len(m.st.Exemptions)+len(m.st.Challenges)
	var save func() error
	if active || len(evs) > 0 || pruned {
		m.seenLocked(now)
		save = m.saveLocked()
	}
	if len(evs) > 0 {
		m.changedLocked()
	}
	m.mu.Unlock()
	if save != nil {
		if err := save(); err != nil {
			m.log.Error("persist exemptions", "err", err)
		}
	}
	m.emitAll(evs)
	// Wake just after the earliest end, at most a Tick from now.
	return max(next+time.Millisecond, time.Millisecond)
}

// ApplySet takes the collector's full set of exemptions for this terminal:
// new valid tokens come into force, refused ones are reported once, and
// server exemptions missing from the set are revoked.
func (m *Manager) ApplySet(set *mnguardv1.ExemptionSet) {
	m.mu.Lock()
	now, mono := m.opts.Now(), m.opts.Mono()
	m.advanceLocked(mono)
	var evs []event
	inSet := make(map[string]bool)
	changed := false
	for _, se := range set.GetExemptions() {
		raw, _ := proto.MarshalOptions{Deterministic: true}.Marshal(se)
		sum := sha256.Sum256(raw)
		e, err := verify(m.opts.VerifyKey, se, m.opts.TerminalID, now)
		if err != nil && !errors.Is(err, exemption.ErrNotYetValid) {
			if errors.Is(err, exemption.ErrExpired) && e != nil {
				// The collector still lists it; not a bad token, but
				// nothing to apply. Held ones end by their own clock.
				inSet[e.GetId()] = true
			}
			if !m.refused[sum] {
				m.refused[sum] = true
				evs = append(evs, refusedEvent(se, err))
				m.log.Warn("exemption refused", "err", err)
			}
			continue
		}
		inSet[e.GetId()] = true
		if r := m.findLocked(e.GetId()); r != nil {
			continue // held already (in force or ended: IDs are never reused)
		}
		if m.countLocked() >= MaxExemptions {
			if !m.refused[sum] {
				m.refused[sum] = true
				evs = append(evs, refusedEvent(se, fmt.Errorf("the agent already holds %d exemptions", MaxExemptions)))
			}
			continue
		}
		r := &record{Source: SourceServer, Token: raw, ReceivedAt: now}
		r.fill(e)
		m.st.Exemptions = append(m.st.Exemptions, r)
		changed = true
		a := r.attrs()
		a["issuer"], a["reason"], a["ticket"] = e.GetIssuer(), e.GetReason(), e.GetTicket()
		msg := fmt.Sprintf("exemption %s received: %s writable until %s (%s)", r.ID, r.Device, r.NotAfter.Format(time.RFC3339), r.duration())
		if err != nil {
			msg += "; not valid before " + r.NotBefore.Format(time.RFC3339)
			a["not_before"] = r.NotBefore.UTC().Format(time.RFC3339)
		}
		evs = append(evs, event{EventReceived, mnguardv1.Severity_SEVERITY_WARNING, msg, a})
		m.log.Info("exemption received", "id", r.ID, "device", r.Device, "not_after", r.NotAfter, "duration", r.duration())
	}
	for _, r := range m.st.Exemptions {
		if r.Source == SourceServer && !r.ended() && !inSet[r.ID] {
			evs = append(evs, m.endLocked(r, now, EndRevoked, "the collector's set no longer holds it"))
			changed = true
		}
	}
	var save func() error
	if changed {
		m.seenLocked(now)
		save = m.saveLocked()
		m.changedLocked()
	}
	m.mu.Unlock()
	if save != nil {
		if err := save(); err != nil {
			// In force in memory; expiry still holds while the agent runs.
			m.log.Error("persist exemptions", "err", err)
		}
	}
	m.emitAll(evs)
}

func refusedEvent(se *mnguardv1.SignedExemption, err error) event {
	a := map[string]string{"error": err.Error(), "reason": refusalReason(err)}
	// What the token claims, for the operator; not trusted.
	claim := &mnguardv1.Exemption{}
	if proto.Unmarshal(se.GetPayload(), claim) == nil {
		if id := claim.GetId(); id != "" && len(id) <= 64 {
			a["claimed_id"] = strconv.QuoteToASCII(id)
		}
		if d := claim.GetDevice(); exemption.ValidateDevice(d) == nil {
			a["claimed_device"] = exemption.FormatDevice(d)
		}
	}
	return event{EventRefused, mnguardv1.Severity_SEVERITY_ALERT, "exemption refused, the device stays read-only: " + err.Error(), a}
}

// refusalReason is a short word for why a token was refused.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, exemption.ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, exemption.ErrWrongTerminal):
		return "wrong_terminal"
	case errors.Is(err, exemption.ErrExpired):
		return "expired"
	case errors.Is(err, exemption.ErrInvalid) && strings.Contains(err.Error(), "verification key"):
		return "no_key"
	case errors.Is(err, exemption.ErrInvalid):
		return "malformed"
	}
	return "refused"
}

// advanceLocked adds the monotonic time since the last tick to the
// exemptions in force.
func (m *Manager) advanceLocked(mono time.Duration) {
	delta := max(mono-m.lastMono, 0)
	m.lastMono = mono
	for _, r := range m.st.Exemptions {
		if !r.ended() {
			r.consumed += delta
		}
	}
}

func (m *Manager) findLocked(id string) *record {
	for _, r := range m.st.Exemptions {
		if r.ID == id {
			return r
		}
	}
	return nil
}

func (m *Manager) countLocked() int { return len(m.st.Exemptions) }

// Allows reports whether a device (vendor ID, product ID, serial) may be
// writable now, and under which exemption. It judges by the clocks at the
// moment of the call.
func (m *Manager) Allows(vendorID, productID, serial string) (id string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	extra := max(m.opts.Mono()-m.lastMono, 0)
	for _, r := range m.st.Exemptions {
		if r.ended() || !r.matches(vendorID, productID, serial) {
			continue
		}
		if r.inForce(now, r.consumed+extra) {
			return r.ID, true
		}
	}
	return "", false
}

// Info is one exemption as 'mnguard-agent exemption list' shows it.
type Info struct {
	ID               string    `json:"id"`
	Device           string    `json:"device"`
	Source           string    `json:"source"`
	State            string    `json:"state"`
	NotAfter         time.Time `json:"not_after"`
	RemainingSeconds uint32    `json:"remaining_seconds"`
	// Devices are the kernel names it makes writable, e.g. "sdb".
	Devices []string `json:"devices,omitempty"`
	Detail  string   `json:"detail,omitempty"`
	Ticket  string   `json:"ticket,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// Remaining is the time left.
func (i Info) Remaining() time.Duration { return time.Duration(i.RemainingSeconds) * time.Second }

// List returns the exemptions held, in force first, each with its state
// against the devices attached.
func (m *Manager) List() []Info {
	var devs []*mnguardv1.RemovableDevice
	if m.opts.Attached != nil {
		devs = m.opts.Attached()
	}
	return m.States(devs)
}

// States returns the exemptions held with their states against devs (the
// media posture's devices).
func (m *Manager) States(devs []*mnguardv1.RemovableDevice) []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	extra := max(m.opts.Mono()-m.lastMono, 0)
	out := make([]Info, 0, len(m.st.Exemptions))
	for _, r := range m.st.Exemptions {
		out = append(out, r.info(now, r.consumed+extra, devs))
	}
	sort.SliceStable(out, func(i, j int) bool {
		return (out[i].State != StateEnded) && out[j].State == StateEnded
	})
	return out
}

// Posture returns the exemptions for the media posture, their states
// judged against its devices.
func (m *Manager) Posture(devs []*mnguardv1.RemovableDevice) []*mnguardv1.ExemptionState {
	infos := m.States(devs)
	out := make([]*mnguardv1.ExemptionState, 0, len(infos))
	for _, i := range infos {
		d, _ := exemption.ParseDevice(i.Device)
		out = append(out, &mnguardv1.ExemptionState{
			Id: i.ID, Device: d, Source: i.Source, State: i.State, NotAfter: timestamppb.New(i.NotAfter),
			RemainingSeconds: i.RemainingSeconds, Devices: i.Devices, Detail: i.Detail,
		})
	}
	return out
}

// seenLocked records now as the last time the agent saw, with the boot
// clock's reading.
func (m *Manager) seenLocked(now time.Time) {
	m.st.LastSeen = now
	id, up := m.opts.Boot()
	m.st.BootID, m.st.BootUptime = id, int64(up)
}
