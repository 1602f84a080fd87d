package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Exemption limits and defaults.
const (
	DefaultExemptionMaxDuration = 8 * time.Hour
	DefaultExemptionDuration    = time.Hour
	// MinExemptionDuration is the shortest exemption an operator may issue.
	MinExemptionDuration = time.Minute
	maxReasonBytes       = 512
	maxTicketBytes       = maxShortString
	// deliveryWait is how long IssueExemption and RevokeExemption wait for
	// a live stream of the terminal to carry the new set.
	deliveryWait = time.Second
)

// Server event types of exemptions; agents report what they do with them
// (applied, used, expired) as their own events.
const (
	EventExemptionIssued        = "exemption.issued"
	EventExemptionRevoked       = "exemption.revoked"
	EventExemptionOfflineIssued = "exemption.offline_issued"
	EventExemptionDelivered     = "exemption.delivered"
)

// Exemption record states.
const (
	exemptionActive  = "active"
	exemptionExpired = "expired"
	exemptionRevoked = "revoked"
)

func deviceOf(e store.Exemption) *mnguardv1.DeviceIdentity {
	return &mnguardv1.DeviceIdentity{VendorId: e.VendorID, ProductId: e.ProductID, Serial: e.Serial}
}

func exemptionProto(e store.Exemption) *mnguardv1.Exemption {
	return &mnguardv1.Exemption{
		Id: e.ID, TerminalId: e.TerminalID, Device: deviceOf(e),
		NotBefore: ts(e.NotBefore), NotAfter: ts(e.NotAfter), DurationSeconds: uint32(e.Duration / time.Second),
		Issuer: e.Issuer, Reason: e.Reason, Ticket: e.Ticket, AllowNoSerial: e.AllowNoSerial, IssuedAt: ts(e.IssuedAt),
	}
}

func exemptionRecord(e store.Exemption, now time.Time) *mnguardv1.ExemptionRecord {
	state := exemptionActive
	switch {
	case !e.RevokedAt.IsZero():
		state = exemptionRevoked
	case !now.Before(e.NotAfter):
		state = exemptionExpired
	}
	return &mnguardv1.ExemptionRecord{
		Exemption: exemptionProto(e), State: state, Source: e.Source,
		RevokedAt: ts(e.RevokedAt), RevokedBy: e.RevokedBy, RevokeReason: e.RevokeReason, DeliveredAt: ts(e.DeliveredAt),
	}
}

// exemptionSet reads the online exemptions in force for the terminal:
// what its streams carry. Offline ones are not in it: the agent got them
// from a code, and a set without them does not end them.
func (s *Services) exemptionSet(ctx context.Context, terminalID string, now time.Time) (*mnguardv1.ExemptionSet, []store.Exemption, error) {
	es, err := s.cfg.Store.Exemptions(ctx, terminalID, now, 0)
	if err != nil {
		return nil, nil, err
	}
	set := &mnguardv1.ExemptionSet{}
	var online []store.Exemption
	for _, e := range es {
		if e.Source != store.ExemptionOnline {
			continue
		}
		se := &mnguardv1.SignedExemption{}
		if err := proto.Unmarshal(e.Token, se); err != nil {
			return nil, nil, fmt.Errorf("exemption %s: stored token: %w", e.ID, err)
		}
		set.Exemptions = append(set.Exemptions, se)
		online = append(online, e)
	}
	return set, online, nil
}

// sendExemptions sends the set in force on the stream and records the
// first delivery of each exemption in it. A set it cannot read ends the
// stream: the agent reconnects and gets the whole set, never a wrong one.
func (a *AgentService) sendExemptions(ctx context.Context, stream mnguardv1.AgentService_SubscribeServer, terminalID string) error {
	cfg := a.s.cfg
	now := cfg.Now()
	set, es, err := a.s.exemptionSet(ctx, terminalID, now)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		cfg.Logger.Error("read exemptions for a stream", "terminal", terminalID, "err", err)
		return status.Error(codes.Unavailable, "the collector could not read this terminal's exemptions; reconnect")
	}
	if err := stream.Send(&mnguardv1.SubscribeResponse{
		SentAt: timestamppb.New(now),
		Push:   &mnguardv1.SubscribeResponse_Exemptions{Exemptions: set},
	}); err != nil {
		return err
	}
	for _, e := range es {
		if !e.DeliveredAt.IsZero() {
			continue
		}
		first, err := cfg.Store.MarkExemptionDelivered(ctx, e.ID, now)
		if err != nil {
			cfg.Logger.Warn("record exemption delivery", "terminal", terminalID, "exemption", e.ID, "err", err)
			continue
		}
		if first {
			a.s.exemptionEvent(ctx, EventExemptionDelivered, mnguardv1.Severity_SEVERITY_INFO, e, now,
				fmt.Sprintf("exemption %s for %s delivered to the agent", e.ID, exemption.FormatDevice(deviceOf(e))), nil)
		}
	}
	return nil
}

// exemptionEvent records a server event about an exemption of the
// terminal. It only logs failures: the action it records has happened.
func (s *Services) exemptionEvent(ctx context.Context, typ string, sev mnguardv1.Severity, e store.Exemption, now time.Time, msg string, extra map[string]string) {
	attrs := map[string]string{
		"id": e.ID, "device": exemption.FormatDevice(deviceOf(e)), "duration": e.Duration.String(),
		"ticket": e.Ticket, "source": e.Source, "not_after": e.NotAfter.UTC().Format(time.RFC3339),
	}
	if e.AllowNoSerial {
		attrs["allow_no_serial"] = "true"
	}
	for k, v := range extra {
		attrs[k] = v
	}
	ev := &mnguardv1.Event{Time: timestamppb.New(now), Type: typ, Severity: sev, Message: msg, Attributes: attrs}
	data, err := proto.Marshal(ev)
	if err == nil {
		err = s.cfg.Store.AddServerEvent(ctx, store.ServerEvent{
			TerminalID: e.TerminalID, Time: now, Type: typ, Severity: int32(sev), Message: msg, Data: data,
		})
	}
	if err != nil {
		s.cfg.Logger.Error("record exemption event", "type", typ, "terminal", e.TerminalID, "exemption", e.ID, "err", err)
	}
	s.changed(e.TerminalID)
}

// notifyExemptions tells the terminal's live streams that its exemptions
// changed and waits up to deliveryWait for one of them to carry the new
// set. It reports whether one did.
func (s *Services) notifyExemptions(ctx context.Context, terminalID string) bool {
	return waitSent(ctx, s.hub.exemptionsChanged(terminalID))
}

// waitSent waits up to deliveryWait for one of the streams behind sent to
// carry a push, and reports whether one did (false at once for none).
func waitSent(ctx context.Context, sent []chan struct{}) bool {
	if len(sent) == 0 {
		return false
	}
	done := make(chan struct{})
	defer close(done)
	one := make(chan struct{}, len(sent))
	for _, c := range sent {
		go func() {
			select {
			case <-c:
				one <- struct{}{}
			case <-done:
			}
		}()
	}
	timer := time.NewTimer(deliveryWait)
	defer timer.Stop()
	select {
	case <-one:
		return true
	case <-timer.C:
	case <-ctx.Done():
	}
	return false
}

// checkExemptionText checks the reason and the ticket: both required.
func checkExemptionText(reason, ticket string) error {
	for _, f := range []struct {
		name, flag, val string
		max             int
	}{
		{"reason", "--reason", reason, maxReasonBytes},
		{"ticket", "--ticket", ticket, maxTicketBytes},
	} {
		if strings.TrimSpace(f.val) == "" {
			return status.Errorf(codes.InvalidArgument, "%s: required (%s): every exemption is justified and traceable", f.name, f.flag)
		}
		if err := checkString(f.name, f.val, f.max); err != nil {
			return status.Errorf(codes.InvalidArgument, "%v", err)
		}
	}
	return nil
}

// checkDevice checks a device identity argument and the no-serial rule.
func checkDevice(d *mnguardv1.DeviceIdentity, allowNoSerial bool) error {
	if d == nil {
		return status.Error(codes.InvalidArgument, "device: missing (VID:PID:SERIAL)")
	}
	if err := exemption.ValidateDevice(d); err != nil {
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return checkSerial(d, allowNoSerial)
}

// checkSerial refuses a device without a serial number unless the
// operator accepted that its twins are exempted too.
func checkSerial(d *mnguardv1.DeviceIdentity, allowNoSerial bool) error {
	if d.GetSerial() == "" && !allowNoSerial {
		return status.Errorf(codes.InvalidArgument,
			"device %s has no serial number: it cannot be told apart from its twins, so every device of this model would be writable; refused unless allow_no_serial (--allow-no-serial) is set, which is recorded",
			exemption.FormatDevice(d))
	}
	return nil
}

// activeTerminal returns the terminal, which must be enrolled and not
// revoked.
func (s *Services) activeTerminal(ctx context.Context, id string) (store.Terminal, error) {
	if err := validID(id); err != nil {
		return store.Terminal{}, err
	}
	t, err := s.cfg.Store.Terminal(ctx, id)
	if err != nil {
		return store.Terminal{}, storeErr("terminal "+id, err)
	}
	if t.State != store.StateActive {
		return store.Terminal{}, status.Errorf(codes.FailedPrecondition, "terminal %s is revoked: it gets no exemptions", id)
	}
	return t, nil
}

// createExemption stores e with its audit entry, in one transaction: an
// exemption the audit log does not record is never stored.
func (a *AdminService) createExemption(ctx context.Context, op *Operator, e store.Exemption, action, detail string) error {
	cfg := a.s.cfg
	err := cfg.Store.CreateExemption(ctx, e, a.entry(op, action, e.ID, detail))
	switch {
	case errors.Is(err, store.ErrExists):
		return status.Errorf(codes.AlreadyExists,
			"challenge %s of terminal %s was answered already: each code works once; have the terminal show a new challenge",
			exemption.Format(e.Challenge), e.TerminalID)
	case errors.Is(err, store.ErrRevoked):
		return status.Errorf(codes.FailedPrecondition, "terminal %s is revoked: it gets no exemptions", e.TerminalID)
	case err != nil:
		return storeErr("terminal "+e.TerminalID, err)
	}
	return nil
}

func exemptionDetail(e store.Exemption) string {
	d := fmt.Sprintf("terminal %s, device %s, %s until %s, ticket %q, reason %q",
		e.TerminalID, exemption.FormatDevice(deviceOf(e)), e.Duration, e.NotAfter.UTC().Format(time.RFC3339), e.Ticket, e.Reason)
	if e.AllowNoSerial {
		d += ", no serial number: every device of this model (allow_no_serial)"
	}
	if e.Source == store.ExemptionOffline {
		d += ", offline challenge " + exemption.Format(e.Challenge)
	}
	return d
}

// IssueExemption implements mnguardv1.AdminServiceServer: it signs an
// exemption for one device of one terminal, stores it and pushes the
// terminal's new set to its live streams at once.
func (a *AdminService) IssueExemption(ctx context.Context, req *mnguardv1.IssueExemptionRequest) (*mnguardv1.IssueExemptionResponse, error) {
	cfg := a.s.cfg
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.ExemptionSigner == nil {
		return nil, status.Error(codes.Unimplemented, "this collector has no exemption signing key")
	}
	if err := validID(req.GetTerminalId()); err != nil {
		return nil, err
	}
	if err := checkDevice(req.GetDevice(), req.GetAllowNoSerial()); err != nil {
		return nil, err
	}
	d := time.Duration(req.GetDurationSeconds()) * time.Second
	if d == 0 {
		d = cfg.ExemptionDefaultDuration
	}
	if d < MinExemptionDuration || d > cfg.ExemptionMaxDuration {
		return nil, status.Errorf(codes.InvalidArgument, "duration_seconds: %d (%s) is outside %s to %s, the collector's maximum (--exemption-max-duration)",
			req.GetDurationSeconds(), d, MinExemptionDuration, cfg.ExemptionMaxDuration)
	}
	if err := checkExemptionText(req.GetReason(), req.GetTicket()); err != nil {
		return nil, err
	}
	if _, err := a.s.activeTerminal(ctx, req.GetTerminalId()); err != nil {
		return nil, err
	}

	now := cfg.Now().Truncate(time.Second)
	dev := req.GetDevice()
	e := store.Exemption{
		ID: uuid.NewString(), TerminalID: req.GetTerminalId(),
		VendorID: dev.GetVendorId(), ProductID: dev.GetProductId(), Serial: dev.GetSerial(),
		// The override is recorded only where it means something.
		AllowNoSerial: req.GetAllowNoSerial() && dev.GetSerial() == "",
		NotBefore:     now, NotAfter: now.Add(d), Duration: d,
		Issuer: op.String(), Reason: req.GetReason(), Ticket: req.GetTicket(),
		Source: store.ExemptionOnline, IssuedAt: now,
	}
	se, err := exemption.Sign(cfg.ExemptionSigner, exemptionProto(e))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign exemption: %v", err)
	}
	if e.Token, err = proto.Marshal(se); err != nil {
		return nil, status.Errorf(codes.Internal, "exemption token: %v", err)
	}
	if err := a.createExemption(ctx, op, e, "exemption.issue", exemptionDetail(e)); err != nil {
		return nil, err
	}
	a.s.exemptionEvent(ctx, EventExemptionIssued, mnguardv1.Severity_SEVERITY_WARNING, e, now,
		fmt.Sprintf("exemption issued by %s: %s writable for %s (ticket %s)", op, exemption.FormatDevice(dev), d, e.Ticket),
		map[string]string{"issuer": e.Issuer, "reason": e.Reason})
	cfg.Logger.Info("exemption issued", "exemption", e.ID, "terminal", e.TerminalID, "device", exemption.FormatDevice(dev),
		"duration", d, "operator", op.Name, "ticket", e.Ticket, "allow_no_serial", e.AllowNoSerial)

	delivered := a.s.notifyExemptions(ctx, e.TerminalID)
	if stored, err := cfg.Store.Exemption(ctx, e.ID); err == nil {
		e = stored // with its delivery time
	}
	return &mnguardv1.IssueExemptionResponse{Exemption: exemptionRecord(e, cfg.Now()), Delivered: delivered}, nil
}

func validExemptionID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "id: exemption ID missing")
	}
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return status.Errorf(codes.InvalidArgument, "id: %q is not an exemption ID", truncate(id))
	}
	return nil
}

// RevokeExemption implements mnguardv1.AdminServiceServer: it ends an
// online exemption and pushes the terminal's new set, without it, at once.
func (a *AdminService) RevokeExemption(ctx context.Context, req *mnguardv1.RevokeExemptionRequest) (*mnguardv1.RevokeExemptionResponse, error) {
	cfg := a.s.cfg
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := validExemptionID(req.GetId()); err != nil {
		return nil, err
	}
	if err := checkString("reason", req.GetReason(), maxReasonBytes); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	e, err := cfg.Store.Exemption(ctx, req.GetId())
	if err != nil {
		return nil, storeErr("exemption "+req.GetId(), err)
	}
	if e.Source == store.ExemptionOffline {
		return nil, status.Errorf(codes.FailedPrecondition,
			"exemption %s was read out as an offline code: the collector cannot reach that terminal's agent, so only the terminal can end it", e.ID)
	}
	now := cfg.Now()
	e, err = cfg.Store.RevokeExemption(ctx, req.GetId(), op.String(), req.GetReason(), now,
		a.entry(op, "exemption.revoke", e.ID, fmt.Sprintf("terminal %s, device %s, reason %q",
			e.TerminalID, exemption.FormatDevice(deviceOf(e)), req.GetReason())))
	switch {
	case errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrExpired):
		return nil, status.Errorf(codes.FailedPrecondition, "exemption %s: %s", req.GetId(), strings.TrimPrefix(err.Error(), "store: revoke exemption "+req.GetId()+": "))
	case err != nil:
		return nil, storeErr("exemption "+req.GetId(), err)
	}
	// Push first: the revocation stands whatever happens next.
	delivered := a.s.notifyExemptions(ctx, e.TerminalID)
	a.s.exemptionEvent(ctx, EventExemptionRevoked, mnguardv1.Severity_SEVERITY_INFO, e, now,
		fmt.Sprintf("exemption %s for %s revoked by %s", e.ID, exemption.FormatDevice(deviceOf(e)), op),
		map[string]string{"revoked_by": e.RevokedBy, "revoke_reason": e.RevokeReason, "pushed": fmt.Sprint(delivered)})
	cfg.Logger.Info("exemption revoked", "exemption", e.ID, "terminal", e.TerminalID, "operator", op.Name, "pushed", delivered)
	return &mnguardv1.RevokeExemptionResponse{Exemption: exemptionRecord(e, cfg.Now())}, nil
}

// ListExemptions implements mnguardv1.AdminServiceServer: a page of them,
// newest first.
func (a *AdminService) ListExemptions(ctx context.Context, req *mnguardv1.ListExemptionsRequest) (*mnguardv1.ListExemptionsResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	if req.GetTerminalId() != "" {
		if err := validID(req.GetTerminalId()); err != nil {
			return nil, err
		}
	}
	now := a.s.cfg.Now()
	var at time.Time
	if req.GetActiveOnly() {
		at = now
	}
	sc := newPageScope(pageExemptions, req.GetTerminalId(), strconv.FormatBool(req.GetActiveOnly()))
	n, after, err := a.pageStart(sc, req.GetPageSize(), 0, defaultPageSize, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, err := a.pages()
	if err != nil {
		return nil, err
	}
	es, next, err := p.ExemptionPage(ctx, req.GetTerminalId(), at, after, n)
	if err != nil {
		return nil, storeErr("exemptions", err)
	}
	out := &mnguardv1.ListExemptionsResponse{Exemptions: make([]*mnguardv1.ExemptionRecord, 0, len(es)), NextPageToken: a.nextToken(sc, next)}
	for _, e := range es {
		out.Exemptions = append(out.Exemptions, exemptionRecord(e, now))
	}
	return out, nil
}

// reportedDevices returns the distinct devices of the terminal's latest
// posture whose tag is tag.
func reportedDevices(t store.Terminal, tag uint16) ([]*mnguardv1.DeviceIdentity, error) {
	if len(t.Posture) == 0 {
		return nil, nil
	}
	p := &mnguardv1.Posture{}
	if err := proto.Unmarshal(t.Posture, p); err != nil {
		return nil, fmt.Errorf("terminal %s posture: %w", t.ID, err)
	}
	var out []*mnguardv1.DeviceIdentity
	for _, rd := range p.GetMedia().GetDevices() {
		d := &mnguardv1.DeviceIdentity{VendorId: rd.GetVendorId(), ProductId: rd.GetProductId(), Serial: rd.GetSerial()}
		if exemption.ValidateDevice(d) != nil || exemption.DeviceTag(d) != tag {
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || exemption.SameDevice(o, d)
		}
		if !dup {
			out = append(out, d)
		}
	}
	return out, nil
}

// IssueOfflineExemptionCode implements mnguardv1.AdminServiceServer: it
// answers a cut-off terminal's challenge with a response code under the
// terminal's offline key, once per challenge, and records the exemption.
func (a *AdminService) IssueOfflineExemptionCode(ctx context.Context, req *mnguardv1.IssueOfflineExemptionCodeRequest) (*mnguardv1.IssueOfflineExemptionCodeResponse, error) {
	cfg := a.s.cfg
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := validID(req.GetTerminalId()); err != nil {
		return nil, err
	}
	if err := checkString("challenge", req.GetChallenge(), 64); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	c, err := exemption.ParseChallenge(req.GetChallenge())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v (it looks like ABCDE-FGHJK)", err)
	}
	if c.Duration > cfg.ExemptionMaxDuration {
		return nil, status.Errorf(codes.InvalidArgument,
			"challenge: it asks for %s, more than the collector's maximum %s (--exemption-max-duration): have the terminal ask for a shorter exemption",
			c.Duration, cfg.ExemptionMaxDuration)
	}
	given := req.GetDevice()
	if given != nil && given.GetVendorId() == "" && given.GetProductId() == "" && given.GetSerial() == "" {
		given = nil // an empty message is no device
	}
	if given != nil {
		if err := checkDevice(given, req.GetAllowNoSerial()); err != nil {
			return nil, err
		}
		if exemption.DeviceTag(given) != c.Tag {
			return nil, status.Errorf(codes.InvalidArgument,
				"device %s is not the device the challenge names: check the device ID and the challenge", exemption.FormatDevice(given))
		}
	}
	if err := checkExemptionText(req.GetReason(), req.GetTicket()); err != nil {
		return nil, err
	}
	t, err := a.s.activeTerminal(ctx, req.GetTerminalId())
	if err != nil {
		return nil, err
	}
	offlineKey, err := cfg.Store.OfflineKey(ctx, t.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.FailedPrecondition, "terminal %s has no offline key: enroll it again", t.ID)
	case err != nil:
		cfg.Logger.Error("offline key cannot be opened", "terminal", t.ID, "err", err)
		return nil, status.Errorf(codes.Unavailable, "terminal %s: its offline key cannot be opened (see the collector's log)", t.ID)
	}
	dev := given
	if dev == nil {
		found, err := reportedDevices(t, c.Tag)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		switch len(found) {
		case 0:
			return nil, status.Error(codes.FailedPrecondition, "the terminal has not reported a device with this tag: give --device VID:PID:SERIAL")
		case 1:
			dev = found[0]
		default:
			names := make([]string, len(found))
			for i, d := range found {
				names[i] = exemption.FormatDevice(d)
			}
			return nil, status.Errorf(codes.FailedPrecondition, "%d devices the terminal reported match the challenge (%s): give --device VID:PID:SERIAL",
				len(found), strings.Join(names, ", "))
		}
		if err := checkSerial(dev, req.GetAllowNoSerial()); err != nil {
			return nil, err
		}
	}
	code, err := exemption.ResponseCode(offlineKey, t.ID, c.Text, dev)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "offline code: %v", err)
	}
	now := cfg.Now().Truncate(time.Second)
	e := store.Exemption{
		ID: uuid.NewString(), TerminalID: t.ID,
		VendorID: dev.GetVendorId(), ProductID: dev.GetProductId(), Serial: dev.GetSerial(),
		AllowNoSerial: req.GetAllowNoSerial() && dev.GetSerial() == "",
		NotBefore:     now, NotAfter: now.Add(c.Duration), Duration: c.Duration,
		Issuer: op.String(), Reason: req.GetReason(), Ticket: req.GetTicket(),
		Source: store.ExemptionOffline, Challenge: c.Text, IssuedAt: now,
	}
	if err := a.createExemption(ctx, op, e, "exemption.offline_code", exemptionDetail(e)); err != nil {
		return nil, err
	}
	a.s.exemptionEvent(ctx, EventExemptionOfflineIssued, mnguardv1.Severity_SEVERITY_WARNING, e, now,
		fmt.Sprintf("offline exemption code issued by %s: %s writable for %s (ticket %s)", op, exemption.FormatDevice(dev), c.Duration, e.Ticket),
		map[string]string{"issuer": e.Issuer, "reason": e.Reason, "challenge": exemption.Format(c.Text)})
	cfg.Logger.Info("offline exemption code issued", "exemption", e.ID, "terminal", e.TerminalID,
		"device", exemption.FormatDevice(dev), "duration", c.Duration, "operator", op.Name, "ticket", e.Ticket)
	return &mnguardv1.IssueOfflineExemptionCodeResponse{Code: exemption.Format(code), Exemption: exemptionRecord(e, cfg.Now())}, nil
}
