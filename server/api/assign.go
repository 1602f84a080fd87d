package api

import (
	"context"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func hardwareTokenProto(t store.HardwareToken) *mnguardv1.HardwareToken {
	return &mnguardv1.HardwareToken{
		Serial: t.Serial, Kind: t.Kind, Algorithm: t.Algorithm, Digits: uint32(max(t.Digits, 0)),
		PeriodSeconds: uint32(max(t.Period, 0)), Counter: uint64(max(t.Counter, 0)),
		NotAfter: ts(t.NotAfter), CreatedAt: ts(t.CreatedAt), CreatedBy: t.CreatedBy,
	}
}

// ListTokens implements mnguardv1.AdminServiceServer: a page of the
// unassigned hardware tokens by serial.
func (a *AdminService) ListTokens(ctx context.Context, req *mnguardv1.ListTokensRequest) (*mnguardv1.ListTokensResponse, error) {
	if _, _, err := a.loginsFor(ctx); err != nil {
		return nil, err
	}
	sc := newPageScope(pageHardwareTokens)
	n, after, err := a.pageStart(sc, req.GetPageSize(), 0, defaultPageSize, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, err := a.pages()
	if err != nil {
		return nil, err
	}
	ts, next, err := p.HardwareTokenPage(ctx, after, n)
	if err != nil {
		return nil, storeErr("hardware tokens", err)
	}
	out := &mnguardv1.ListTokensResponse{Tokens: make([]*mnguardv1.HardwareToken, 0, len(ts)), NextPageToken: a.nextToken(sc, next)}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, hardwareTokenProto(t))
	}
	return out, nil
}

// AssignToken implements mnguardv1.AdminServiceServer.
func (a *AdminService) AssignToken(ctx context.Context, req *mnguardv1.AssignTokenRequest) (*mnguardv1.AssignTokenResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if s := req.GetSerial(); s == "" || len(s) > maxAssignmentBytes {
		return nil, status.Errorf(codes.InvalidArgument, "serial: must be 1 to %d bytes", maxAssignmentBytes)
	}
	if err := validName("user", req.GetUser()); err != nil {
		return nil, err
	}
	u, err := l.Assign(ctx, req.GetSerial(), req.GetUser(), req.GetReplace(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	a.s.cfg.Logger.Info("token assigned", "serial", req.GetSerial(), "user", u.Name, "by", op.Name)
	return &mnguardv1.AssignTokenResponse{User: userProto(u)}, nil
}
