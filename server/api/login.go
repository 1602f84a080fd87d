package api

import (
	"context"
	"errors"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const maxServiceBytes = 64

var loginResults = map[logins.Outcome]mnguardv1.LoginResult{
	logins.Accepted:    mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED,
	logins.Rejected:    mnguardv1.LoginResult_LOGIN_RESULT_REJECTED,
	logins.Locked:      mnguardv1.LoginResult_LOGIN_RESULT_LOCKED,
	logins.UnknownUser: mnguardv1.LoginResult_LOGIN_RESULT_UNKNOWN_USER,
}

// validService checks a PAM service name: at most 64 bytes of
// [A-Za-z0-9._-]; empty is allowed (the agent may not know it).
func validService(s string) error {
	if len(s) > maxServiceBytes {
		return status.Errorf(codes.InvalidArgument, "service: %d bytes, at most %d", len(s), maxServiceBytes)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return status.Errorf(codes.InvalidArgument, "service: byte %d is not a letter, digit, '.', '_' or '-'", i+1)
		}
	}
	return nil
}

// VerifyLogin implements mnguardv1.AgentServiceServer: the calling terminal
// asks whether code is a valid second factor for user. The answer's
// message is for the person at the terminal.
func (a *AgentService) VerifyLogin(ctx context.Context, req *mnguardv1.VerifyLoginRequest) (*mnguardv1.VerifyLoginResponse, error) {
	cfg := a.s.cfg
	t, err := TerminalFrom(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.Logins == nil {
		return nil, status.Error(codes.Unimplemented, "TOTP logins are not configured on this collector")
	}
	count := cfg.Metrics.logins.WithLabelValues
	for _, check := range []func() error{
		func() error { return validName("user", req.GetUser()) },
		func() error { return validService(req.GetService()) },
		func() error { return validCode("code", req.GetCode()) },
	} {
		if err := check(); err != nil {
			count("invalid").Inc()
			return nil, err
		}
	}
	res, err := cfg.Logins.Verify(ctx, t.ID, req.GetUser(), req.GetService(), req.GetCode())
	if err != nil {
		count("error").Inc()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, status.FromContextError(err).Err()
		}
		cfg.Logger.Error("login verification failed", "terminal", t.ID, "user", req.GetUser(), "err", err)
		return nil, status.Error(codes.Unavailable, "the collector could not verify the code (see its log); try again")
	}
	count(res.Outcome.String()).Inc()
	return &mnguardv1.VerifyLoginResponse{Result: loginResults[res.Outcome], Message: res.Message}, nil
}
