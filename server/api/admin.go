package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// AdminService implements mnguardv1.AdminServiceServer.
type AdminService struct {
	mnguardv1.UnimplementedAdminServiceServer
	s *Services
	// pageKey authenticates page tokens (see pages.go), derived once.
	pageKeyOnce sync.Once
	pageKey     []byte
}

const (
	// defaultEventLimit is the page size of events and audit entries
	// when a request names none (it was their limit before pages).
	defaultEventLimit = 100
	defaultTokenTTL   = 24 * time.Hour
	maxTokenTTL       = 365 * 24 * time.Hour
	maxTokenUses      = 100000
)

// NewToken returns a fresh random secret with the prefix: 160 bits,
// lowercase base32.
func NewToken(prefix string) (string, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// NewOperatorToken returns a fresh operator API token.
func NewOperatorToken() (string, error) { return NewToken(operatorTokenPrefix) }

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func terminalProto(t store.Terminal) (*mnguardv1.Terminal, error) {
	host := &mnguardv1.HostFacts{}
	if err := proto.Unmarshal(t.Host, host); err != nil {
		return nil, fmt.Errorf("terminal %s host facts: %w", t.ID, err)
	}
	state := mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE
	if t.State == store.StateRevoked {
		state = mnguardv1.TerminalState_TERMINAL_STATE_REVOKED
	}
	out := &mnguardv1.Terminal{
		Id:                  t.ID,
		Host:                host,
		State:               state,
		EnrolledAt:          ts(t.EnrolledAt),
		LastSeenAt:          ts(t.LastSeenAt),
		RevokedAt:           ts(t.RevokedAt),
		CertificateSerial:   t.CertSerial,
		CertificateNotAfter: ts(t.CertNotAfter),
		PostureReceivedAt:   ts(t.PostureReceivedAt),
		PostureHistoryCount: uint32(t.PostureHistoryCount),
	}
	if t.Posture != nil {
		p := &mnguardv1.Posture{}
		if err := proto.Unmarshal(t.Posture, p); err != nil {
			return nil, fmt.Errorf("terminal %s posture: %w", t.ID, err)
		}
		out.Posture = p
		// The latest posture knows the host better than enrollment did.
		if p.GetHost() != nil {
			out.Host = p.GetHost()
		}
	}
	return out, nil
}

func storeErr(what string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.NotFound, "%s not found", what)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

func validID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "terminal ID missing")
	}
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return status.Errorf(codes.InvalidArgument, "%q is not a terminal ID", truncate(id))
	}
	return nil
}

// ListTerminals implements mnguardv1.AdminServiceServer: a page of the
// terminals the request selects, in its order, with their compliance. The
// legacy offset places only the first page.
func (a *AdminService) ListTerminals(ctx context.Context, req *mnguardv1.ListTerminalsRequest) (*mnguardv1.ListTerminalsResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	f, err := TerminalFilter(req)
	if err != nil {
		return nil, err
	}
	if req.GetPageToken() != "" && req.GetOffset() > 0 {
		return nil, status.Error(codes.InvalidArgument, "offset: not with a page_token (the token says where the page starts)")
	}
	sc := newPageScope(pageTerminals, f.State, f.FailingCheck, f.Search, f.Sort, strconv.FormatBool(f.Desc))
	n, after, err := a.pageStart(sc, req.GetPageSize(), req.GetLimit(), defaultPageSize, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, err := a.pages()
	if err != nil {
		return nil, err
	}
	ts, next, total, err := p.TerminalKeyPage(ctx, f, after, n)
	if err != nil {
		return nil, storeErr("terminals", err)
	}
	out := &mnguardv1.ListTerminalsResponse{Terminals: make([]*mnguardv1.Terminal, 0, len(ts)), Total: uint32(total), NextPageToken: a.nextToken(sc, next)}
	for _, t := range ts {
		out.Terminals = append(out.Terminals, summaryProto(t))
	}
	return out, nil
}

// TerminalFilter checks a ListTerminals request and returns the store's
// filter for it.
func TerminalFilter(req *mnguardv1.ListTerminalsRequest) (store.TerminalFilter, error) {
	f := store.TerminalFilter{
		State: req.GetState(), FailingCheck: req.GetFailingCheck(), Search: strings.TrimSpace(req.GetSearch()),
		Sort: req.GetSort(), Desc: req.GetDescending(), Limit: int(req.GetLimit()), Offset: int(req.GetOffset()),
	}
	switch {
	case f.State != "" && !store.ValidComplianceState(f.State):
		return f, status.Errorf(codes.InvalidArgument, "state: %q is not compliant, non-compliant, stale or revoked", truncate(f.State))
	case f.FailingCheck != "" && !store.ValidCheck(f.FailingCheck):
		return f, status.Errorf(codes.InvalidArgument, "failing_check: %q is not one of %s", truncate(f.FailingCheck), strings.Join(store.Checks, ", "))
	case !store.ValidSort(f.Sort):
		return f, status.Errorf(codes.InvalidArgument, "sort: %q is not hostname, state, last_seen, agent_version or enrolled", truncate(f.Sort))
	case req.GetLimit() > 100000 || req.GetOffset() > 10000000:
		return f, status.Error(codes.InvalidArgument, "limit or offset out of range")
	}
	if err := checkString("search", f.Search, 128); err != nil {
		return f, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return f, nil
}

// summaryProto is a terminal of a list: no posture, host facts from the
// compliance record.
func summaryProto(t store.TerminalSummary) *mnguardv1.Terminal {
	state := mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE
	if t.State == store.StateRevoked {
		state = mnguardv1.TerminalState_TERMINAL_STATE_REVOKED
	}
	out := &mnguardv1.Terminal{
		Id: t.ID, Host: &mnguardv1.HostFacts{Hostname: t.Hostname}, State: state,
		EnrolledAt: ts(t.EnrolledAt), LastSeenAt: ts(t.LastSeenAt), RevokedAt: ts(t.RevokedAt),
		CertificateSerial: t.CertSerial, CertificateNotAfter: ts(t.CertNotAfter),
	}
	if c := t.Compliance; c != nil {
		out.Host.AgentVersion = c.AgentVersion
		out.Host.Platform = c.Platform
		out.PostureReceivedAt = ts(c.PostureAt)
		out.Compliance = ComplianceProto(*c)
	}
	return out
}

// ComplianceProto is the API form of a verdict. Check details are in
// English: the console renders them in the operator's language itself.
func ComplianceProto(c store.Compliance) *mnguardv1.Compliance {
	out := &mnguardv1.Compliance{State: c.State, StateSince: ts(c.StateSince), EvaluatedAt: ts(c.EvaluatedAt), Offline: c.Offline}
	for _, r := range c.Checks {
		detail := ""
		if r.Detail != "" {
			detail = i18n.TS("en", r.Detail, r.Args)
		}
		out.Checks = append(out.Checks, &mnguardv1.CheckResult{Name: r.Name, Status: r.Status, Detail: detail, Since: ts(r.Since)})
	}
	return out
}

// GetTerminal implements mnguardv1.AdminServiceServer.
func (a *AdminService) GetTerminal(ctx context.Context, req *mnguardv1.GetTerminalRequest) (*mnguardv1.GetTerminalResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	if err := validID(req.GetId()); err != nil {
		return nil, err
	}
	t, err := a.s.cfg.Store.Terminal(ctx, req.GetId())
	if err != nil {
		return nil, storeErr("terminal "+req.GetId(), err)
	}
	pt, err := terminalProto(t)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	c, err := a.s.cfg.Store.TerminalCompliance(ctx, t.ID)
	switch {
	case err == nil:
		pt.Compliance = ComplianceProto(c)
	case !errors.Is(err, store.ErrNotFound):
		return nil, storeErr("compliance of terminal "+t.ID, err)
	}
	return &mnguardv1.GetTerminalResponse{Terminal: pt}, nil
}

// RevokeTerminal implements mnguardv1.AdminServiceServer.
func (a *AdminService) RevokeTerminal(ctx context.Context, req *mnguardv1.RevokeTerminalRequest) (*mnguardv1.RevokeTerminalResponse, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := validID(req.GetId()); err != nil {
		return nil, err
	}
	if err := checkString("reason", req.GetReason(), maxShortString); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	cfg := a.s.cfg
	if err := cfg.Store.RevokeTerminal(ctx, req.GetId(), req.GetReason(), cfg.Now(),
		a.entry(op, "terminal.revoke", req.GetId(), req.GetReason())); err != nil {
		return nil, storeErr("terminal "+req.GetId(), err)
	}
	a.s.hub.kick(req.GetId())
	a.s.changed(req.GetId())
	cfg.Logger.Info("terminal revoked", "terminal", req.GetId(), "operator", op.Name, "reason", req.GetReason())
	t, err := cfg.Store.Terminal(ctx, req.GetId())
	if err != nil {
		return nil, storeErr("terminal "+req.GetId(), err)
	}
	pt, err := terminalProto(t)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &mnguardv1.RevokeTerminalResponse{Terminal: pt}, nil
}

// entry is the audit entry of an action of op, for the store to append in
// the transaction of the change.
func (a *AdminService) entry(op *Operator, action, target, detail string) store.AuditEntry {
	return store.AuditEntry{Time: a.s.cfg.Now(), Actor: op.Actor(), Action: action, Target: target, Detail: detail}
}

// audit appends an entry about an action that changes nothing else (a
// report read); a change passes its entry to the store instead.
func (a *AdminService) audit(ctx context.Context, op *Operator, action, target, detail string) error {
	_, err := a.s.cfg.Store.AppendAudit(ctx, a.entry(op, action, target, detail))
	if err != nil {
		return status.Errorf(codes.Unavailable, "audit log: %v", err)
	}
	return nil
}

// CreateEnrollmentToken implements mnguardv1.AdminServiceServer.
func (a *AdminService) CreateEnrollmentToken(ctx context.Context, req *mnguardv1.CreateEnrollmentTokenRequest) (*mnguardv1.CreateEnrollmentTokenResponse, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl == 0 {
		ttl = defaultTokenTTL
	}
	if ttl > maxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_seconds: at most %d (%s)", int(maxTokenTTL.Seconds()), maxTokenTTL)
	}
	uses := req.GetUses()
	if uses == 0 {
		uses = 1
	}
	if uses > maxTokenUses {
		return nil, status.Errorf(codes.InvalidArgument, "uses: at most %d", maxTokenUses)
	}
	if err := checkString("note", req.GetNote(), maxShortString); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	secret, err := NewToken(enrollTokenPrefix)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	now := a.s.cfg.Now()
	t := store.EnrollmentToken{
		ID: uuid.NewString(), Hash: HashToken(secret), CreatedAt: now, ExpiresAt: now.Add(ttl),
		Uses: int(uses), UsesLeft: int(uses), CreatedBy: op.Name, Note: req.GetNote(),
	}
	a2 := a.entry(op, "token.create", t.ID, fmt.Sprintf("uses=%d expires=%s note=%q", uses, t.ExpiresAt.UTC().Format(time.RFC3339), req.GetNote()))
	if err := a.s.cfg.Store.CreateEnrollmentToken(ctx, t, a2); err != nil {
		return nil, storeErr("enrollment token", err)
	}
	return &mnguardv1.CreateEnrollmentTokenResponse{Token: secret, ExpiresAt: ts(t.ExpiresAt), Id: t.ID, Uses: uses}, nil
}

// ListEnrollmentTokens implements mnguardv1.AdminServiceServer: a page of
// the tokens, oldest first.
func (a *AdminService) ListEnrollmentTokens(ctx context.Context, req *mnguardv1.ListEnrollmentTokensRequest) (*mnguardv1.ListEnrollmentTokensResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	sc := newPageScope(pageEnrollmentTokens)
	n, after, err := a.pageStart(sc, req.GetPageSize(), 0, defaultPageSize, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, err := a.pages()
	if err != nil {
		return nil, err
	}
	toks, next, err := p.EnrollmentTokenPage(ctx, after, n)
	if err != nil {
		return nil, storeErr("enrollment tokens", err)
	}
	out := &mnguardv1.ListEnrollmentTokensResponse{NextPageToken: a.nextToken(sc, next)}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, &mnguardv1.EnrollmentToken{
			Id: t.ID, CreatedAt: ts(t.CreatedAt), ExpiresAt: ts(t.ExpiresAt),
			Uses: uint32(t.Uses), UsesLeft: uint32(t.UsesLeft), CreatedBy: t.CreatedBy, Note: t.Note,
		})
	}
	return out, nil
}

// ListEvents implements mnguardv1.AdminServiceServer: a page of the
// events the request selects, newest first.
func (a *AdminService) ListEvents(ctx context.Context, req *mnguardv1.ListEventsRequest) (*mnguardv1.ListEventsResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	f, err := EventFilter(req)
	if err != nil {
		return nil, err
	}
	sc := newPageScope(pageEvents, f.TerminalID, req.GetType(), timeFilter(f.Since), timeFilter(f.Until))
	n, after, err := a.pageStart(sc, req.GetPageSize(), req.GetLimit(), defaultEventLimit, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if after != nil {
		// The key is the cursor of the last event listed: [received
		// nanoseconds, seq or ID] and [source].
		if len(after.Ints) != 2 || len(after.Strings) != 1 || (after.Strings[0] != "agent" && after.Strings[0] != "server") {
			return nil, errPageToken("belongs to another list")
		}
		f.Before = &store.EventCursor{ReceivedAt: time.Unix(0, after.Ints[0]).UTC(), Key: after.Ints[1], Source: after.Strings[0]}
	}
	f.Limit = n + 1
	evs, err := a.s.cfg.Store.FilterEvents(ctx, f)
	if err != nil {
		return nil, storeErr("events", err)
	}
	out := &mnguardv1.ListEventsResponse{}
	if len(evs) > n {
		evs = evs[:n]
		c := evs[n-1].Cursor()
		out.NextPageToken = a.nextToken(sc, &store.PageKey{Ints: []int64{c.ReceivedAt.UnixNano(), c.Key}, Strings: []string{c.Source}})
	}
	out.Events = make([]*mnguardv1.StoredEvent, 0, len(evs))
	for _, e := range evs {
		se, err := StoredEventProto(e)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		out.Events = append(out.Events, se)
	}
	return out, nil
}

// EventFilter checks a ListEvents request and returns the store's filter.
func EventFilter(req *mnguardv1.ListEventsRequest) (store.EventFilter, error) {
	f := store.EventFilter{TerminalID: req.GetTerminalId(), Type: req.GetType(), Limit: int(req.GetLimit())}
	if f.TerminalID != "" {
		if err := validID(f.TerminalID); err != nil {
			return f, err
		}
	}
	if f.Limit == 0 {
		f.Limit = defaultEventLimit
	}
	if f.Limit > 10000 {
		return f, status.Error(codes.InvalidArgument, "limit: at most 10000")
	}
	if f.Type != "" {
		t := strings.TrimSuffix(f.Type, ".")
		if len(f.Type) > maxEventTypeLength || !eventTypeRE.MatchString(t) {
			return f, status.Errorf(codes.InvalidArgument, "type: %q is not an event type (media.attached) or a prefix ending in a dot (media.)", truncate(f.Type))
		}
		if t != f.Type {
			f.Type, f.TypePrefix = "", f.Type
		}
	}
	var err error
	if f.Since, err = optTime("since", req.GetSince()); err != nil {
		return f, err
	}
	if f.Until, err = optTime("until", req.GetUntil()); err != nil {
		return f, err
	}
	return f, nil
}

// StoredEventProto is the API form of a stored event.
func StoredEventProto(e store.Event) (*mnguardv1.StoredEvent, error) {
	pe := &mnguardv1.Event{}
	if err := proto.Unmarshal(e.Data, pe); err != nil {
		return nil, fmt.Errorf("event %s/%d: %w", e.TerminalID, e.Seq, err)
	}
	return &mnguardv1.StoredEvent{TerminalId: e.TerminalID, Event: pe, ReceivedAt: ts(e.ReceivedAt), Source: e.Source}, nil
}

// optTime checks an optional timestamp argument.
func optTime(field string, t *timestamppb.Timestamp) (time.Time, error) {
	if t == nil {
		return time.Time{}, nil
	}
	if err := t.CheckValid(); err != nil {
		return time.Time{}, status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	v := t.AsTime()
	if v.Year() < 1700 || v.Year() > 2200 {
		return time.Time{}, status.Errorf(codes.InvalidArgument, "%s: %s is out of range", field, v.Format(time.RFC3339))
	}
	return v, nil
}

// GetServerInfo implements mnguardv1.AdminServiceServer.
func (a *AdminService) GetServerInfo(ctx context.Context, _ *mnguardv1.GetServerInfoRequest) (*mnguardv1.GetServerInfoResponse, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	return &mnguardv1.GetServerInfoResponse{
		Version: a.s.cfg.Version, CaPin: pki.Pin(a.s.cfg.CA.CertDER()), Operator: op.Name, Role: op.Role,
	}, nil
}
