package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/proto"
)

type exemptionsView struct {
	Rows       []exemptionRow
	Terminal   string
	ActiveOnly bool
}

type exemptionRow struct {
	store.Exemption
	Hostname string
	State    string
}

// exemptionState is the collector's state of an exemption: active,
// expired or revoked.
func exemptionState(e store.Exemption, now time.Time) string {
	switch {
	case !e.RevokedAt.IsZero():
		return "revoked"
	case !now.Before(e.NotAfter):
		return "expired"
	}
	return "active"
}

func (s *Server) exemptions(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	v := exemptionsView{Terminal: q.Get("terminal")}
	if v.Terminal != "" {
		if err := validTerminalID(v.Terminal); err != nil {
			return err
		}
	}
	switch q.Get("active") {
	case "", "0":
	case "1":
		v.ActiveOnly = true
	default:
		return bad("error.bad_filter", q.Get("active"))
	}
	var at time.Time
	if v.ActiveOnly {
		at = c.now
	}
	es, err := s.cfg.Store.Exemptions(r.Context(), v.Terminal, at, 200)
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for _, e := range es {
		ids[e.TerminalID] = true
	}
	names, err := s.hostnames(r.Context(), ids)
	if err != nil {
		return err
	}
	for _, e := range es {
		v.Rows = append(v.Rows, exemptionRow{Exemption: e, Hostname: names[e.TerminalID], State: exemptionState(e, c.now)})
	}
	return s.render(w, c, http.StatusOK, "exemptions", v)
}

// durations are the exemption lengths the issue form offers.
var durations = []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 24 * time.Hour}

type newExemptionView struct {
	T         store.Terminal
	Host      *mnguardv1.HostFacts
	Devices   []deviceRow
	Device    string
	Durations []time.Duration
	Default   time.Duration
	Reason    string
	Ticket    string
}

func (s *Server) newExemption(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	t, host, p, err := s.terminalByID(r.Context(), q.Get("terminal"))
	if err != nil {
		return err
	}
	v := newExemptionView{T: t, Host: host, Device: q.Get("device"), Default: time.Hour}
	for _, d := range durations {
		if d <= s.cfg.ExemptionMaxDuration {
			v.Durations = append(v.Durations, d)
		}
	}
	for _, d := range p.GetMedia().GetDevices() {
		dev := &mnguardv1.DeviceIdentity{VendorId: d.GetVendorId(), ProductId: d.GetProductId(), Serial: d.GetSerial()}
		if exemption.ValidateDevice(dev) != nil {
			continue
		}
		v.Devices = append(v.Devices, deviceRow{RemovableDevice: d, ID: exemption.FormatDevice(dev), Exemptible: true})
	}
	return s.render(w, c, http.StatusOK, "exemption_new", v)
}

// formDevice reads the device of an exemption form: the picked device, or
// the one typed in.
func formDevice(f url.Values) (*mnguardv1.DeviceIdentity, error) {
	v := f.Get("device")
	if v == "" || v == "other" {
		v = strings.TrimSpace(f.Get("device_other"))
	}
	if v == "" {
		return nil, bad("error.no_device", "")
	}
	d, err := exemption.ParseDevice(v)
	if err != nil {
		return nil, bad("error.bad_device", v)
	}
	return d, nil
}

func formDuration(v string, maxD time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute || d > maxD || d%time.Second != 0 {
		return 0, bad("error.bad_duration", v)
	}
	return d, nil
}

func (s *Server) issueExemption(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	tid := f.Get("terminal")
	if err := validTerminalID(tid); err != nil {
		return err
	}
	dev, err := formDevice(f)
	if err != nil {
		return err
	}
	d, err := formDuration(f.Get("duration"), s.cfg.ExemptionMaxDuration)
	if err != nil {
		return err
	}
	resp, err := s.cfg.Admin.IssueExemption(c.apiCtx(r.Context()), &mnguardv1.IssueExemptionRequest{
		TerminalId: tid, Device: dev, DurationSeconds: uint32(d / time.Second),
		Reason: strings.TrimSpace(f.Get("reason")), Ticket: strings.TrimSpace(f.Get("ticket")),
		AllowNoSerial: f.Get("allow_no_serial") == "1",
	})
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/exemptions/"+resp.GetExemption().GetExemption().GetId()+"?done=exemption_issued", http.StatusSeeOther)
	return nil
}

// step is one stage of an exemption on its way to the device and back.
type step struct {
	Key  string // message key suffix: issued, delivered, applied, used, revoked, expired, ended, refused, failed
	At   time.Time
	Done bool
	Note string
}

// exemptionStatus is what the exemption page shows and keeps current.
type exemptionStatus struct {
	E        store.Exemption
	Hostname string
	State    string
	// Phase is the furthest stage reached: issued, delivered, applied,
	// used, ending, ended, refused, failed. Tests and the page's live
	// block read it from data-phase.
	Phase string
	Steps []step
	// Agent is what the agent's latest posture says of it; nil if
	// nothing.
	Agent *mnguardv1.ExemptionState
	// Final: nothing will change any more.
	Final bool
}

// status derives an exemption's progress from the collector's record,
// the agent's events about it and its latest posture.
func (s *Server) status(ctx context.Context, id string, now time.Time) (exemptionStatus, error) {
	e, err := s.cfg.Store.Exemption(ctx, id)
	if err != nil {
		return exemptionStatus{}, err
	}
	st := exemptionStatus{E: e, State: exemptionState(e, now), Phase: "issued"}
	names, err := s.hostnames(ctx, map[string]bool{e.TerminalID: true})
	if err != nil {
		return exemptionStatus{}, err
	}
	st.Hostname = names[e.TerminalID]
	found := map[string]time.Time{}
	for _, prefix := range []string{"media.exemption_", "exemption."} {
		evs, err := s.cfg.Store.FilterEvents(ctx, store.EventFilter{TerminalID: e.TerminalID, TypePrefix: prefix, Since: e.IssuedAt.Add(-time.Minute), Limit: 1000})
		if err != nil {
			return exemptionStatus{}, err
		}
		for _, ev := range evs {
			if ev.Source != "agent" {
				continue
			}
			pe := &mnguardv1.Event{}
			if proto.Unmarshal(ev.Data, pe) != nil {
				continue
			}
			a := pe.GetAttributes()
			if a["exemption_id"] != id && a["id"] != id {
				continue
			}
			key := strings.TrimPrefix(strings.TrimPrefix(ev.Type, "media.exemption_"), "exemption.")
			if t, ok := found[key]; !ok || ev.Time.Before(t) {
				found[key] = ev.Time
			}
		}
	}
	if b, _, err := s.cfg.Store.LatestPosture(ctx, e.TerminalID); err == nil {
		p := &mnguardv1.Posture{}
		if proto.Unmarshal(b, p) == nil {
			for _, x := range p.GetMedia().GetExemptions() {
				if x.GetId() == id {
					st.Agent = x
				}
			}
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return exemptionStatus{}, err
	}
	add := func(key string, at time.Time, done bool) {
		st.Steps = append(st.Steps, step{Key: key, At: at, Done: done})
		if done {
			st.Phase = key
		}
	}
	add("issued", e.IssuedAt, true)
	if e.Source == store.ExemptionOnline {
		delivered := e.DeliveredAt
		if delivered.IsZero() {
			delivered = found["received"]
		}
		add("delivered", delivered, !delivered.IsZero())
	}
	if t, ok := found["refused"]; ok {
		add("refused", t, true)
		st.Final = true
		return st, nil
	}
	if t, ok := found["failed"]; ok {
		add("failed", t, true)
	}
	applied, ok := found["applied"]
	if !ok && st.Agent.GetState() == "applied" {
		applied, ok = now, true
	}
	add("applied", applied, ok)
	if t, ok := found["used"]; ok {
		add("used", t, true)
	}
	switch st.State {
	case "revoked":
		add("revoked", e.RevokedAt, true)
	case "expired":
		add("expired", e.NotAfter, true)
	}
	if st.State != "active" {
		ended, endedOK := found["ended"]
		neverApplied := found["applied"].IsZero() && st.Agent.GetState() != "applied"
		if !neverApplied {
			add("ended", ended, endedOK)
		}
		if st.Agent.GetState() == "ending" && !endedOK {
			st.Phase = "ending"
		}
		st.Final = endedOK || neverApplied
	}
	return st, nil
}

func validExemptionID(id string) error {
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return bad("error.bad_exemption", id)
	}
	return nil
}

func (s *Server) exemption(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := validExemptionID(id); err != nil {
		return err
	}
	st, err := s.status(r.Context(), id, c.now)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "exemption", st)
}

// exemptionLive streams the exemption's status block as it changes.
func (s *Server) exemptionLive(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := validExemptionID(id); err != nil {
		return err
	}
	first, err := s.status(r.Context(), id, c.now)
	if err != nil {
		return err
	}
	err = s.stream(w, r, c, first.E.TerminalID, func() (string, bool, error) {
		c.now = s.cfg.Now()
		// The stream ends with the session: signed out elsewhere,
		// disabled, or idle (the stream itself is no activity).
		ses, op, err := s.cfg.Store.SessionByHash(r.Context(), c.sesHash)
		if errors.Is(err, store.ErrNotFound) || err == nil && s.sessionEnded(ses, op, c.now) != "" {
			return "", true, errSessionEnded
		}
		if err != nil {
			return "", true, err
		}
		st, err := s.status(r.Context(), id, c.now)
		if err != nil {
			return "", true, err
		}
		html, err := s.fragment(c, "exemption", "exemption-status", st)
		return html, st.Final, err
	})
	if err != nil && r.Context().Err() == nil && !errors.Is(err, errSessionEnded) {
		s.cfg.Logger.Warn("exemption live stream", "exemption", id, "err", err)
	}
	return nil
}

// errSessionEnded ends a live stream whose session ended.
var errSessionEnded = errors.New("session ended")

func (s *Server) revokeExemption(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := validExemptionID(id); err != nil {
		return err
	}
	if _, err := s.cfg.Admin.RevokeExemption(c.apiCtx(r.Context()), &mnguardv1.RevokeExemptionRequest{
		Id: id, Reason: strings.TrimSpace(r.PostForm.Get("reason")),
	}); err != nil {
		return err
	}
	http.Redirect(w, r, "/exemptions/"+id+"?done=exemption_revoked", http.StatusSeeOther)
	return nil
}

type offlineExemptionView struct {
	Terminal, Challenge, Device, Reason, Ticket string
	// Code is the response code, shown once.
	Code   string
	Record *mnguardv1.ExemptionRecord
}

func (s *Server) offlineExemptionForm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return s.render(w, c, http.StatusOK, "exemption_offline", offlineExemptionView{Terminal: r.URL.Query().Get("terminal")})
}

func (s *Server) offlineExemption(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	v := offlineExemptionView{
		Terminal: strings.TrimSpace(f.Get("terminal")), Challenge: strings.TrimSpace(f.Get("challenge")),
		Device: strings.TrimSpace(f.Get("device_other")), Reason: strings.TrimSpace(f.Get("reason")), Ticket: strings.TrimSpace(f.Get("ticket")),
	}
	if err := validTerminalID(v.Terminal); err != nil {
		return err
	}
	req := &mnguardv1.IssueOfflineExemptionCodeRequest{
		TerminalId: v.Terminal, Challenge: v.Challenge, Reason: v.Reason, Ticket: v.Ticket, AllowNoSerial: f.Get("allow_no_serial") == "1",
	}
	if v.Device != "" {
		d, err := exemption.ParseDevice(v.Device)
		if err != nil {
			return bad("error.bad_device", v.Device)
		}
		req.Device = d
	}
	resp, err := s.cfg.Admin.IssueOfflineExemptionCode(c.apiCtx(r.Context()), req)
	if err != nil {
		return err
	}
	v.Code, v.Record = resp.GetCode(), resp.GetExemption()
	return s.render(w, c, http.StatusOK, "exemption_offline", v)
}
