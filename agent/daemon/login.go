package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/mnguard/mnguard/agent/mfa"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// loginVerifier answers the PAM module by asking the collector, which holds
// the TOTP seeds; the agent never decides a code on its own.
type loginVerifier struct{ d *Daemon }

const verifyTimeout = 5 * time.Second

// Begin implements mfa.Verifier: nothing to show before the prompt yet.
func (v loginVerifier) Begin(ctx context.Context, user, service string) (string, error) {
	return "", nil
}

// Verify implements mfa.Verifier.
func (v loginVerifier) Verify(ctx context.Context, user, service, code string) (mfa.Result, string, error) {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	resp, err := v.d.agentClient().VerifyLogin(ctx, &mnguardv1.VerifyLoginRequest{User: user, Code: code, Service: service})
	switch {
	case status.Code(err) == codes.Unimplemented:
		return mfa.Unavailable, "the collector does not verify login codes yet", nil
	case err != nil:
		// Refused: seeds never leave the collector (fail closed).
		return 0, "", errors.New("ask the collector: " + status.Convert(err).Message())
	}
	switch resp.GetResult() {
	case mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED:
		return mfa.Accepted, "", nil
	case mnguardv1.LoginResult_LOGIN_RESULT_LOCKED:
		return mfa.Locked, "account locked: call the helpdesk", nil
	case mnguardv1.LoginResult_LOGIN_RESULT_REJECTED, mnguardv1.LoginResult_LOGIN_RESULT_UNKNOWN_USER:
		return mfa.Rejected, "wrong code", nil
	default:
		return mfa.Unavailable, "the collector gave no answer", nil
	}
}

// loginGate serves the PAM module's socket until ctx ends.
func (d *Daemon) loginGate(ctx context.Context) {
	path := d.opts.Config.MFA.Socket
	if path == "" {
		return
	}
	srv := &mfa.Server{Path: path, Verifier: loginVerifier{d}, Logger: d.log.With("part", "mfa")}
	if err := srv.Serve(ctx); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		d.log.Error("login gate stopped: logins through pam_mnguard are refused", "socket", path, "err", err)
		d.noteError(err)
	}
}
