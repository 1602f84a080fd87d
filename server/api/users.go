package api

import (
	"cmp"
	"context"
	"errors"
	"strings"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits of the user RPCs.
const (
	maxCodeBytes     = 64
	maxPasswordBytes = 1024
)

func userProto(u store.User) *mnguardv1.User {
	state := mnguardv1.UserState_USER_STATE_UNSPECIFIED
	switch u.State {
	case store.UserPending:
		state = mnguardv1.UserState_USER_STATE_PENDING
	case store.UserActive:
		state = mnguardv1.UserState_USER_STATE_ACTIVE
	}
	return &mnguardv1.User{
		Name: u.Name, State: state, Locked: !u.LockedAt.IsZero(), LockedAt: ts(u.LockedAt),
		Failures: uint32(max(u.Failures, 0)), Algorithm: u.Algorithm,
		Digits: uint32(max(u.Digits, 0)), PeriodSeconds: uint32(max(u.Period, 0)),
		Source: u.Source, TokenSerial: u.TokenSerial, CreatedAt: ts(u.CreatedAt),
		ConfirmedAt: ts(u.ConfirmedAt), LastLoginAt: ts(u.LastLoginAt), ClockOffsetSteps: u.Offset,
		RecoveryCodesLeft: uint32(max(u.RecoveryCodesLeft, 0)), CreatedBy: u.CreatedBy,
		Kind: cmp.Or(u.Kind, store.TokenTOTP), Counter: uint64(max(u.Counter, 0)), NotAfter: ts(u.NotAfter),
	}
}

// loginsFor returns the caller and checks that TOTP logins are configured.
// Who may call what is the authorization table's business (package authz).
func (a *AdminService) loginsFor(ctx context.Context) (*logins.Service, *Operator, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, nil, err
	}
	if a.s.cfg.Logins == nil {
		return nil, nil, status.Error(codes.Unimplemented, "TOTP logins are not configured on this collector")
	}
	return a.s.cfg.Logins, op, nil
}

// loginOp is op as package logins records it in the audit entries it
// writes with each change.
func loginOp(op *Operator) logins.Operator {
	return logins.Operator{Name: op.Name, Role: op.Role, Actor: op.Actor()}
}

// loginErr maps an error of package logins to a gRPC status.
func loginErr(err error) error {
	var c codes.Code
	switch {
	case errors.Is(err, logins.ErrInvalid), errors.Is(err, logins.ErrWrongCode), errors.Is(err, logins.ErrReplay):
		c = codes.InvalidArgument
	case errors.Is(err, logins.ErrUnknownUser), errors.Is(err, logins.ErrUnknownTerminal), errors.Is(err, logins.ErrUnknownToken):
		c = codes.NotFound
	case errors.Is(err, logins.ErrUserExists):
		c = codes.AlreadyExists
	case errors.Is(err, logins.ErrLocked), errors.Is(err, logins.ErrNotPending), errors.Is(err, logins.ErrTerminalRevoked),
		errors.Is(err, logins.ErrNotConfirmed):
		c = codes.FailedPrecondition
	case errors.Is(err, logins.ErrConflict):
		c = codes.Aborted
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		c = codes.Internal
	}
	return status.Error(c, strings.TrimPrefix(err.Error(), logins.ErrInvalid.Error()+": "))
}

// validName checks a user name argument.
func validName(field, name string) error {
	if err := logins.ValidateName(name); err != nil {
		return status.Errorf(codes.InvalidArgument, "%s: %s", field, strings.TrimPrefix(err.Error(), logins.ErrInvalid.Error()+": "))
	}
	return nil
}

// validCode checks a code argument: 1 to 64 bytes of printable ASCII. The
// error never repeats the code.
func validCode(field, code string) error {
	switch {
	case code == "":
		return status.Errorf(codes.InvalidArgument, "%s: empty", field)
	case len(code) > maxCodeBytes:
		return status.Errorf(codes.InvalidArgument, "%s: %d bytes, at most %d", field, len(code), maxCodeBytes)
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c < 0x20 || c > 0x7e {
			return status.Errorf(codes.InvalidArgument, "%s: byte %d is not printable ASCII", field, i+1)
		}
	}
	return nil
}

// EnrollUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) EnrollUser(ctx context.Context, req *mnguardv1.EnrollUserRequest) (*mnguardv1.EnrollUserResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	en, err := l.Enroll(ctx, req.GetName(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.EnrollUserResponse{User: userProto(en.User), OtpauthUrl: en.URL, Secret: en.Secret, RecoveryCodes: en.RecoveryCodes}, nil
}

// ConfirmUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) ConfirmUser(ctx context.Context, req *mnguardv1.ConfirmUserRequest) (*mnguardv1.ConfirmUserResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := validCode("code", req.GetCode()); err != nil {
		return nil, err
	}
	u, err := l.Confirm(ctx, req.GetName(), req.GetCode(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.ConfirmUserResponse{User: userProto(u)}, nil
}

// ListUsers implements mnguardv1.AdminServiceServer: a page of the users
// by name.
func (a *AdminService) ListUsers(ctx context.Context, req *mnguardv1.ListUsersRequest) (*mnguardv1.ListUsersResponse, error) {
	if _, _, err := a.loginsFor(ctx); err != nil {
		return nil, err
	}
	sc := newPageScope(pageUsers)
	n, after, err := a.pageStart(sc, req.GetPageSize(), 0, defaultPageSize, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	p, err := a.pages()
	if err != nil {
		return nil, err
	}
	us, next, err := p.UserPage(ctx, after, n)
	if err != nil {
		return nil, storeErr("users", err)
	}
	out := &mnguardv1.ListUsersResponse{Users: make([]*mnguardv1.User, 0, len(us)), NextPageToken: a.nextToken(sc, next)}
	for _, u := range us {
		out.Users = append(out.Users, userProto(u))
	}
	return out, nil
}

// GetUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) GetUser(ctx context.Context, req *mnguardv1.GetUserRequest) (*mnguardv1.GetUserResponse, error) {
	l, _, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	u, err := l.User(ctx, req.GetName())
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.GetUserResponse{User: userProto(u)}, nil
}

// UnlockUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) UnlockUser(ctx context.Context, req *mnguardv1.UnlockUserRequest) (*mnguardv1.UnlockUserResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	u, err := l.Unlock(ctx, req.GetName(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.UnlockUserResponse{User: userProto(u)}, nil
}

// ResetUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) ResetUser(ctx context.Context, req *mnguardv1.ResetUserRequest) (*mnguardv1.ResetUserResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	en, err := l.Reset(ctx, req.GetName(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.ResetUserResponse{User: userProto(en.User), OtpauthUrl: en.URL, Secret: en.Secret, RecoveryCodes: en.RecoveryCodes}, nil
}

// DeleteUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) DeleteUser(ctx context.Context, req *mnguardv1.DeleteUserRequest) (*mnguardv1.DeleteUserResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := l.Delete(ctx, req.GetName(), loginOp(op)); err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.DeleteUserResponse{}, nil
}

// ResyncUser implements mnguardv1.AdminServiceServer.
func (a *AdminService) ResyncUser(ctx context.Context, req *mnguardv1.ResyncUserRequest) (*mnguardv1.ResyncUserResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := validCode("code1", req.GetCode1()); err != nil {
		return nil, err
	}
	if err := validCode("code2", req.GetCode2()); err != nil {
		return nil, err
	}
	u, err := l.Resync(ctx, req.GetName(), req.GetCode1(), req.GetCode2(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.ResyncUserResponse{User: userProto(u)}, nil
}

// NewRecoveryCodes implements mnguardv1.AdminServiceServer.
func (a *AdminService) NewRecoveryCodes(ctx context.Context, req *mnguardv1.NewRecoveryCodesRequest) (*mnguardv1.NewRecoveryCodesResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validName("name", req.GetName()); err != nil {
		return nil, err
	}
	u, codes, err := l.NewRecoveryCodes(ctx, req.GetName(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	return &mnguardv1.NewRecoveryCodesResponse{User: userProto(u), RecoveryCodes: codes}, nil
}

// IssueOfflineLoginCode implements mnguardv1.AdminServiceServer.
func (a *AdminService) IssueOfflineLoginCode(ctx context.Context, req *mnguardv1.IssueOfflineLoginCodeRequest) (*mnguardv1.IssueOfflineLoginCodeResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := validID(req.GetTerminalId()); err != nil {
		return nil, err
	}
	if err := validName("user", req.GetUser()); err != nil {
		return nil, err
	}
	if err := checkString("challenge", req.GetChallenge(), 64); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	code, until, err := l.OfflineLoginCode(ctx, req.GetTerminalId(), req.GetUser(), req.GetChallenge(), loginOp(op))
	if err != nil {
		return nil, loginErr(err)
	}
	a.s.cfg.Logger.Info("offline login code issued", "terminal", req.GetTerminalId(), "user", req.GetUser(), "operator", op.Name)
	return &mnguardv1.IssueOfflineLoginCodeResponse{Code: code, ValidUntil: ts(until)}, nil
}
