package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxOperatorTokenTTL bounds API tokens of operators: a year.
const maxOperatorTokenTTL = 365 * 24 * time.Hour

func operatorProto(o store.Operator, tokens []store.OperatorToken) *mnguardv1.Operator {
	out := &mnguardv1.Operator{
		Name: o.Name, Role: o.Role, Disabled: !o.Enabled(), DisabledAt: ts(o.DisabledAt),
		Locked: !o.LockedAt.IsZero(), LockedAt: ts(o.LockedAt), Failures: uint32(max(o.Failures, 0)),
		HasPassword: o.PasswordHash != "", CreatedAt: ts(o.CreatedAt), CreatedBy: o.CreatedBy,
		LastSignInAt: ts(o.LastSignInAt), Language: o.Language,
	}
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, &mnguardv1.OperatorToken{
			Id: t.ID, CreatedAt: ts(t.CreatedAt), ExpiresAt: ts(t.ExpiresAt), RevokedAt: ts(t.RevokedAt), Note: t.Note,
		})
	}
	return out
}

// operatorErr maps an error of package operators to a gRPC status.
func operatorErr(err error) error {
	var c codes.Code
	switch {
	case errors.Is(err, operators.ErrInvalid):
		c = codes.InvalidArgument
	case errors.Is(err, operators.ErrUnknown), errors.Is(err, store.ErrNotFound):
		c = codes.NotFound
	case errors.Is(err, operators.ErrExists):
		c = codes.AlreadyExists
	case errors.Is(err, operators.ErrLastAdmin), errors.Is(err, store.ErrRevoked):
		c = codes.FailedPrecondition
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		c = codes.Internal
	}
	return status.Error(c, strings.TrimPrefix(err.Error(), operators.ErrInvalid.Error()+": "))
}

// operatorsFor returns the caller and the operator service.
func (a *AdminService) operatorsFor(ctx context.Context) (*operators.Service, *Operator, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, nil, err
	}
	if a.s.cfg.Operators == nil {
		return nil, nil, status.Error(codes.Unimplemented, "operators are not configured on this collector")
	}
	return a.s.cfg.Operators, op, nil
}

// auditBy is the audit entry of an action by op, now.
func (a *AdminService) auditBy(op *Operator) store.AuditEntry {
	return store.AuditEntry{Time: a.s.cfg.Now(), Actor: op.Actor()}
}

// AddOperator implements mnguardv1.AdminServiceServer.
func (a *AdminService) AddOperator(ctx context.Context, req *mnguardv1.AddOperatorRequest) (*mnguardv1.AddOperatorResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, t, err := svc.Add(ctx, req.GetName(), req.GetRole(), req.GetPassword(), op.Name, a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	a.s.cfg.Logger.Info("operator added", "operator", o.Name, "role", o.Role, "by", op.Name)
	return &mnguardv1.AddOperatorResponse{Operator: operatorProto(o, nil), OtpauthUrl: t.URL, Secret: t.Secret}, nil
}

// ListOperators implements mnguardv1.AdminServiceServer: a page of the
// operators by name.
func (a *AdminService) ListOperators(ctx context.Context, req *mnguardv1.ListOperatorsRequest) (*mnguardv1.ListOperatorsResponse, error) {
	if _, _, err := a.operatorsFor(ctx); err != nil {
		return nil, err
	}
	sc := newPageScope(pageOperators)
	n, after, err := a.pageStart(sc, req.GetPageSize(), 0, defaultPageSize, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, err := a.pages()
	if err != nil {
		return nil, err
	}
	os, next, err := p.OperatorPage(ctx, after, n)
	if err != nil {
		return nil, storeErr("operators", err)
	}
	out := &mnguardv1.ListOperatorsResponse{Operators: make([]*mnguardv1.Operator, 0, len(os)), NextPageToken: a.nextToken(sc, next)}
	for _, o := range os {
		out.Operators = append(out.Operators, operatorProto(o, nil))
	}
	return out, nil
}

// GetOperator implements mnguardv1.AdminServiceServer: the operator with
// its API tokens.
func (a *AdminService) GetOperator(ctx context.Context, req *mnguardv1.GetOperatorRequest) (*mnguardv1.GetOperatorResponse, error) {
	svc, _, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.Get(ctx, req.GetName())
	if err != nil {
		return nil, operatorErr(err)
	}
	toks, err := a.s.cfg.Store.OperatorTokens(ctx, o.Name)
	if err != nil {
		return nil, storeErr("tokens of operator "+o.Name, err)
	}
	return &mnguardv1.GetOperatorResponse{Operator: operatorProto(o, toks)}, nil
}

// DisableOperator implements mnguardv1.AdminServiceServer.
func (a *AdminService) DisableOperator(ctx context.Context, req *mnguardv1.DisableOperatorRequest) (*mnguardv1.DisableOperatorResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.SetEnabled(ctx, req.GetName(), false, a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	return &mnguardv1.DisableOperatorResponse{Operator: operatorProto(o, nil)}, nil
}

// EnableOperator implements mnguardv1.AdminServiceServer.
func (a *AdminService) EnableOperator(ctx context.Context, req *mnguardv1.EnableOperatorRequest) (*mnguardv1.EnableOperatorResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.SetEnabled(ctx, req.GetName(), true, a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	return &mnguardv1.EnableOperatorResponse{Operator: operatorProto(o, nil)}, nil
}

// DeleteOperator implements mnguardv1.AdminServiceServer.
func (a *AdminService) DeleteOperator(ctx context.Context, req *mnguardv1.DeleteOperatorRequest) (*mnguardv1.DeleteOperatorResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := svc.Delete(ctx, req.GetName(), a.auditBy(op)); err != nil {
		return nil, operatorErr(err)
	}
	a.s.cfg.Logger.Info("operator deleted", "operator", req.GetName(), "by", op.Name)
	return &mnguardv1.DeleteOperatorResponse{}, nil
}

// ResetOperatorTotp implements mnguardv1.AdminServiceServer.
func (a *AdminService) ResetOperatorTotp(ctx context.Context, req *mnguardv1.ResetOperatorTotpRequest) (*mnguardv1.ResetOperatorTotpResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, t, err := svc.ResetTOTP(ctx, req.GetName(), a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	return &mnguardv1.ResetOperatorTotpResponse{Operator: operatorProto(o, nil), OtpauthUrl: t.URL, Secret: t.Secret}, nil
}

// SetOperatorRole implements mnguardv1.AdminServiceServer.
func (a *AdminService) SetOperatorRole(ctx context.Context, req *mnguardv1.SetOperatorRoleRequest) (*mnguardv1.SetOperatorRoleResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.SetRole(ctx, req.GetName(), req.GetRole(), a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	return &mnguardv1.SetOperatorRoleResponse{Operator: operatorProto(o, nil)}, nil
}

// SetOperatorPassword implements mnguardv1.AdminServiceServer.
func (a *AdminService) SetOperatorPassword(ctx context.Context, req *mnguardv1.SetOperatorPasswordRequest) (*mnguardv1.SetOperatorPasswordResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.SetPassword(ctx, req.GetName(), req.GetPassword(), a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	return &mnguardv1.SetOperatorPasswordResponse{Operator: operatorProto(o, nil)}, nil
}

// UnlockOperator implements mnguardv1.AdminServiceServer.
func (a *AdminService) UnlockOperator(ctx context.Context, req *mnguardv1.UnlockOperatorRequest) (*mnguardv1.UnlockOperatorResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.Unlock(ctx, req.GetName(), a.auditBy(op))
	if err != nil {
		return nil, operatorErr(err)
	}
	return &mnguardv1.UnlockOperatorResponse{Operator: operatorProto(o, nil)}, nil
}

// CreateOperatorToken implements mnguardv1.AdminServiceServer: an API token
// that acts in the named operator's name, shown once.
func (a *AdminService) CreateOperatorToken(ctx context.Context, req *mnguardv1.CreateOperatorTokenRequest) (*mnguardv1.CreateOperatorTokenResponse, error) {
	svc, op, err := a.operatorsFor(ctx)
	if err != nil {
		return nil, err
	}
	o, err := svc.Get(ctx, req.GetName())
	if err != nil {
		return nil, operatorErr(err)
	}
	if !o.Enabled() {
		return nil, status.Errorf(codes.FailedPrecondition, "operator %s is disabled: enable it first", o.Name)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl > maxOperatorTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_seconds: at most %d (%s)", int(maxOperatorTokenTTL.Seconds()), maxOperatorTokenTTL)
	}
	if err := checkString("note", req.GetNote(), maxShortString); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	secret, err := NewOperatorToken()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	now := a.s.cfg.Now()
	t := store.OperatorToken{ID: uuid.NewString(), Name: o.Name, Hash: HashToken(secret), CreatedAt: now, Note: req.GetNote()}
	expiry := "no expiry"
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl)
		expiry = "expires " + t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	au := a.auditBy(op)
	au.Action, au.Target, au.Detail = "operator_token.create", t.ID, fmt.Sprintf("for operator %s (%s), %s, note %q", o.Name, o.Role, expiry, t.Note)
	if err := a.s.cfg.Store.CreateOperatorToken(ctx, t, au); err != nil {
		return nil, storeErr("operator token", err)
	}
	return &mnguardv1.CreateOperatorTokenResponse{Token: secret, Id: t.ID, ExpiresAt: ts(t.ExpiresAt)}, nil
}

// RevokeOperatorToken implements mnguardv1.AdminServiceServer.
func (a *AdminService) RevokeOperatorToken(ctx context.Context, req *mnguardv1.RevokeOperatorTokenRequest) (*mnguardv1.RevokeOperatorTokenResponse, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkString("id", req.GetId(), 64); err != nil || req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: want a token ID")
	}
	au := a.auditBy(op)
	au.Action, au.Target = "operator_token.revoke", req.GetId()
	err = a.s.cfg.Store.RevokeOperatorToken(ctx, req.GetId(), a.s.cfg.Now(), au)
	switch {
	case errors.Is(err, store.ErrRevoked):
		return nil, status.Errorf(codes.FailedPrecondition, "token %s is revoked already", req.GetId())
	case err != nil:
		return nil, storeErr("token "+req.GetId(), err)
	}
	return &mnguardv1.RevokeOperatorTokenResponse{}, nil
}

func auditProto(e store.AuditEntry) *mnguardv1.AuditEntry {
	return &mnguardv1.AuditEntry{
		Id: e.ID, Time: ts(e.Time), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail,
		PrevHash: e.PrevHash, Hash: e.Hash,
	}
}

// ListAudit implements mnguardv1.AdminServiceServer.
func (a *AdminService) ListAudit(ctx context.Context, req *mnguardv1.ListAuditRequest) (*mnguardv1.ListAuditResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	if req.GetLimit() > 10000 {
		return nil, status.Error(codes.InvalidArgument, "limit: at most 10000")
	}
	if req.GetBeforeId() < 0 {
		return nil, status.Error(codes.InvalidArgument, "before_id: must not be negative")
	}
	if err := checkString("action", req.GetAction(), 64); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	f := store.AuditFilter{BeforeID: req.GetBeforeId(), ActionPrefix: req.GetAction()}
	var err error
	if f.Since, err = optTime("since", req.GetSince()); err != nil {
		return nil, err
	}
	if f.Until, err = optTime("until", req.GetUntil()); err != nil {
		return nil, err
	}
	sc := newPageScope(pageAudit, strconv.FormatInt(f.BeforeID, 10), f.ActionPrefix, timeFilter(f.Since), timeFilter(f.Until))
	n, after, err := a.pageStart(sc, req.GetPageSize(), req.GetLimit(), defaultEventLimit, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if after != nil {
		// The key is the ID of the last entry listed.
		if len(after.Ints) != 1 || len(after.Strings) != 0 || after.Ints[0] <= 0 {
			return nil, errPageToken("belongs to another list")
		}
		f.BeforeID = after.Ints[0]
	}
	f.Limit = n + 1
	es, err := a.s.cfg.Store.FilterAudit(ctx, f)
	if err != nil {
		return nil, storeErr("audit log", err)
	}
	out := &mnguardv1.ListAuditResponse{}
	if len(es) > n {
		es = es[:n]
		out.NextPageToken = a.nextToken(sc, &store.PageKey{Ints: []int64{es[n-1].ID}})
	}
	out.Entries = make([]*mnguardv1.AuditEntry, 0, len(es))
	for _, e := range es {
		out.Entries = append(out.Entries, auditProto(e))
	}
	return out, nil
}

// VerifyAudit implements mnguardv1.AdminServiceServer: it walks the whole
// chain.
func (a *AdminService) VerifyAudit(ctx context.Context, _ *mnguardv1.VerifyAuditRequest) (*mnguardv1.VerifyAuditResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	v, err := a.s.cfg.Store.VerifyAudit(ctx, time.Time{})
	if err != nil {
		return nil, storeErr("audit log", err)
	}
	out := &mnguardv1.VerifyAuditResponse{Ok: v.Broken == nil, Entries: uint64(v.Entries), HeadId: v.Head.ID, HeadHash: v.Head.Hash}
	if v.Broken != nil {
		out.BrokenAt, out.Reason = v.Broken.ID, v.Broken.Reason
	}
	return out, nil
}
