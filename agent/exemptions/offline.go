package exemptions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// Offline exemptions: 'mnguard-agent exemption challenge' shows a challenge
// for a device and duration, the helpdesk answers it with a response code
// under the terminal's offline key, and 'mnguard-agent exemption enter'
// brings an exemption for that device into force for that duration,
// starting then. Each challenge and each code works once; MaxWrongCodes
// wrong codes in a row lock entry for Lockout. Challenges, their use and the
// lockout are persisted before anything is applied.

// Errors of Enter; the CLI shows their text.
var (
	ErrLocked      = errors.New("too many wrong codes")
	ErrWrongCode   = errors.New("wrong code")
	ErrUsedCode    = errors.New("this code was used already; each code works once")
	ErrNoChallenge = errors.New("no challenge is waiting for a code: run 'mnguard-agent exemption challenge' first")
)

// ChallengeInfo is a challenge as the CLI shows it.
type ChallengeInfo struct {
	// Challenge is grouped for reading out: "ABCDE-FGHJK".
	Challenge string `json:"challenge"`
	// TerminalID is what the helpdesk needs besides the challenge.
	TerminalID      string    `json:"terminal_id"`
	Device          string    `json:"device"`
	DurationSeconds uint32    `json:"duration_seconds"`
	ExpiresAt       time.Time `json:"expires_at"`
}

// Challenge creates an offline challenge for device ("VID:PID:SERIAL") and
// duration (a multiple of 15 min up to 8 h).
func (m *Manager) Challenge(device string, duration time.Duration) (ChallengeInfo, error) {
	d, err := exemption.ParseDevice(device)
	if err != nil {
		return ChallengeInfo{}, err
	}
	if d.GetSerial() == "" {
		return ChallengeInfo{}, errors.New("device has no serial number: it cannot be told apart from its twins, and only the collector can exempt it (with a recorded override)")
	}
	c, err := exemption.NewChallenge(d, duration)
	if err != nil {
		return ChallengeInfo{}, err
	}
	m.mu.Lock()
	now := m.opts.Now()
	m.pruneLocked(now)
	if len(m.st.Challenges) >= MaxPending {
		// Make room: the oldest used challenge (kept only to recognise its
		// code typed again), else the oldest.
		drop := 0
		for i, p := range m.st.Challenges {
			if !p.UsedAt.IsZero() {
				drop = i
				break
			}
		}
		m.st.Challenges = append(m.st.Challenges[:drop], m.st.Challenges[drop+1:]...)
	}
	ch := &challenge{Text: c.Text, Device: exemption.FormatDevice(d), DurationSeconds: uint32(duration / time.Second),
		CreatedAt: now, ExpiresAt: now.Add(ChallengeTTL), dev: d}
	m.st.Challenges = append(m.st.Challenges, ch)
	save := m.saveLocked()
	m.mu.Unlock()
	if err := save(); err != nil {
		return ChallengeInfo{}, fmt.Errorf("record the challenge: %w", err)
	}
	m.log.Info("offline exemption challenge", "device", ch.Device, "duration", duration, "challenge", c.Text)
	m.emit(EventOfflineChallenge, mnguardv1.Severity_SEVERITY_INFO,
		fmt.Sprintf("offline exemption challenge for %s (%s)", ch.Device, duration),
		map[string]string{"challenge": c.Text, "device": ch.Device, "duration": duration.String(), "expires_at": ch.ExpiresAt.UTC().Format(time.RFC3339)})
	return ChallengeInfo{Challenge: exemption.Format(c.Text), TerminalID: m.opts.TerminalID, Device: ch.Device, DurationSeconds: ch.DurationSeconds, ExpiresAt: ch.ExpiresAt}, nil
}

// Enter applies the helpdesk's response code to the pending challenge it
// answers: an offline exemption for the challenge's device and duration
// comes into force now. It returns the exemption and the change to wait
// for (see waitApplied).
func (m *Manager) Enter(code string) (Info, uint64, error) {
	m.mu.Lock()
	now := m.opts.Now()
	m.advanceLocked(m.opts.Mono())
	m.pruneLocked(now)
	refuse := func(reason string, err error, count bool) (Info, uint64, error) {
		a := map[string]string{"reason": reason}
		if count {
			m.st.WrongCodes++
			if m.st.WrongCodes >= MaxWrongCodes {
				m.st.WrongCodes = 0
				m.st.LockedUntil = now.Add(Lockout)
				err = fmt.Errorf("%w: %w; code entry is locked until %s", err, ErrLocked, m.st.LockedUntil.Local().Format("15:04"))
				a["locked_until"] = m.st.LockedUntil.UTC().Format(time.RFC3339)
			} else {
				left := MaxWrongCodes - m.st.WrongCodes
				err = fmt.Errorf("%w (%d more wrong codes lock entry for %s)", err, left, Lockout)
				a["tries_left"] = strconv.Itoa(left)
			}
		}
		save := m.saveLocked()
		m.mu.Unlock()
		if serr := save(); serr != nil {
			m.log.Error("persist exemptions", "err", serr)
		}
		m.log.Warn("offline exemption code refused", "reason", reason)
		m.emit(EventOfflineRefused, mnguardv1.Severity_SEVERITY_WARNING, "offline exemption code refused: "+err.Error(), a)
		return Info{}, 0, err
	}
	if !m.st.LockedUntil.IsZero() && now.Before(m.st.LockedUntil) {
		return refuse("locked", fmt.Errorf("%w: code entry is locked until %s", ErrLocked, m.st.LockedUntil.Local().Format("15:04")), false)
	}
	norm, err := exemption.Normalize(code)
	if err != nil {
		return refuse("malformed", err, false)
	}
	if len(m.st.Challenges) == 0 {
		return refuse("no_challenge", ErrNoChallenge, false)
	}
	var match *challenge
	for _, c := range m.st.Challenges {
		ok, err := exemption.VerifyResponse(m.opts.OfflineKey, m.opts.TerminalID, c.Text, c.dev, norm)
		if err != nil {
			m.mu.Unlock()
			return Info{}, 0, fmt.Errorf("check the code: %w", err)
		}
		if ok && match == nil {
			match = c
		}
	}
	switch {
	case match == nil:
		return refuse("wrong", ErrWrongCode, true)
	case !match.UsedAt.IsZero():
		return refuse("used", ErrUsedCode, false)
	}
	match.UsedAt = now
	m.st.WrongCodes = 0
	r := &record{
		ID: "offline-" + match.Text, Source: SourceOffline, Device: match.Device, dev: match.dev,
		NotBefore: now, NotAfter: now.Add(match.duration()), DurationSeconds: match.DurationSeconds,
		ReceivedAt: now, Challenge: match.Text,
	}
	r.MAC = r.mac(m.opts.OfflineKey, m.opts.TerminalID)
	m.st.Exemptions = append(m.st.Exemptions, r)
	m.seenLocked(now)
	save := m.saveLocked()
	m.mu.Unlock()
	if err := save(); err != nil {
		// Not recorded: a restart would forget the challenge was used.
		// Fail closed: end it before anything applies it.
		m.mu.Lock()
		ev := m.endLocked(r, now, EndNotPersisted, err.Error())
		m.mu.Unlock()
		m.emitAll([]event{ev})
		return Info{}, 0, fmt.Errorf("record the exemption: %w", err)
	}
	m.mu.Lock()
	g := m.changedLocked()
	m.mu.Unlock()
	m.log.Warn("OFFLINE EXEMPTION ENTERED", "id", r.ID, "device", r.Device, "duration", r.duration(), "not_after", r.NotAfter)
	a := r.attrs()
	a["challenge"] = match.Text
	m.emit(EventOfflineEntered, mnguardv1.Severity_SEVERITY_WARNING,
		fmt.Sprintf("offline exemption entered: %s writable until %s (%s)", r.Device, r.NotAfter.Format(time.RFC3339), r.duration()), a)
	return m.infoOf(r.ID), g, nil
}

// infoOf is the current Info of exemption id.
func (m *Manager) infoOf(id string) Info {
	for _, i := range m.List() {
		if i.ID == id {
			return i
		}
	}
	return Info{ID: id, State: StateEnded}
}

// EnterAndApply is Enter, then waits (up to a few seconds) until the
// devices were re-evaluated, and returns the exemption's state then.
func (m *Manager) EnterAndApply(ctx context.Context, code string) (Info, error) {
	i, g, err := m.Enter(code)
	if err != nil {
		return i, err
	}
	if m.waitApplied(ctx, g) {
		i = m.infoOf(i.ID)
	}
	return i, nil
}
