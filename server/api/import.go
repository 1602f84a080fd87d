package api

import (
	"context"
	"fmt"
	"strings"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ImportUsers implements mnguardv1.AdminServiceServer. The file is bounded
// by the gRPC message limit (MaxMessageBytes).
func (a *AdminService) ImportUsers(ctx context.Context, req *mnguardv1.ImportUsersRequest) (*mnguardv1.ImportUsersResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case len(req.GetData()) == 0:
		return nil, status.Error(codes.InvalidArgument, "data: the seed file is empty")
	case len(req.GetPskcPassword()) > maxPasswordBytes:
		return nil, status.Errorf(codes.InvalidArgument, "pskc_password: longer than %d bytes", maxPasswordBytes)
	}
	if k := len(req.GetPskcKey()); k != 0 && k != 16 && k != 24 && k != 32 {
		return nil, status.Errorf(codes.InvalidArgument, "pskc_key: %d bytes, want 16, 24 or 32", k)
	}
	format := strings.ToLower(req.GetFormat())
	switch format {
	case "", logins.FormatAuto, logins.FormatCSV, logins.FormatPSKC:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "format: %q is not csv, pskc or empty (detect)", truncate(req.GetFormat()))
	}
	us, err := l.Import(ctx, logins.ImportRequest{
		Data: req.GetData(), Format: format, Key: req.GetPskcKey(), Password: req.GetPskcPassword(),
		Replace: req.GetReplace(), Actor: op.Name,
	})
	if err != nil {
		return nil, loginErr(err)
	}
	names := make([]string, 0, len(us))
	out := &mnguardv1.ImportUsersResponse{Users: make([]*mnguardv1.User, 0, len(us))}
	for _, u := range us {
		names = append(names, u.Name+"="+u.TokenSerial)
		out.Users = append(out.Users, userProto(u))
	}
	detail := fmt.Sprintf("%d tokens, replace=%v: %s", len(us), req.GetReplace(), strings.Join(names, ", "))
	if len(detail) > maxLongString {
		detail = detail[:maxLongString-3] + "..."
	}
	if err := a.audit(ctx, op, "user.import", fmt.Sprintf("%d users", len(us)), detail); err != nil {
		return nil, err
	}
	return out, nil
}
