package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mnguard/mnguard/agent/mfa"
	"github.com/mnguard/mnguard/internal/offlinecode"
	"github.com/mnguard/mnguard/internal/retry"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Timeouts of the login path, from the inside out; each must exceed the one
// before it. The collector may hold an answer for a couple of seconds after
// a user's third failure.
const (
	// verifyTimeout bounds the collector's VerifyLogin.
	verifyTimeout = 8 * time.Second
	// gateTimeout is the mfa.Server's phase timeout. pam_mnguard's default
	// timeout (15 s) is above it.
	gateTimeout = 10 * time.Second
	// probeTimeout is the longest a login's begin waits to learn whether
	// the collector's connection is up.
	probeTimeout = time.Second
)

// EventLogin is the type of the login attempts the agent records itself:
// those it refused or accepted offline, or refused without asking. The
// collector's own verifications are login.verify, a type the collector
// refuses from agents.
const EventLogin = "login.local"

// Paths of a login attempt, in events.
const (
	pathServer  = "server"  // the collector decided
	pathOffline = "offline" // the agent checked a helpdesk offline code
	pathAgent   = "agent"   // the agent refused without asking (peer not permitted)
)

// loginVerifier answers pam_mnguard. It asks the collector, which holds the
// TOTP seeds; when the collector cannot answer, the login is refused (fail
// closed) unless the user types the helpdesk's one-time offline code for
// the challenge shown at the prompt, which the agent checks itself under
// the terminal's offline key.
type loginVerifier struct {
	d       *Daemon
	pending *challenges
	host    string

	mu     sync.Mutex
	failAt time.Time // the collector last failed to answer a VerifyLogin
	okAt   time.Time // the collector last answered a VerifyLogin
}

// newLoginVerifier returns the daemon's login verifier; now is the clock of
// offline challenges and codes (nil: time.Now).
func newLoginVerifier(d *Daemon, now func() time.Time) *loginVerifier {
	host, _ := os.Hostname()
	return &loginVerifier{d: d, pending: newChallenges(now), host: host}
}

// Begin implements mfa.Verifier: nothing to show while the collector is
// reachable; otherwise the user's offline challenge, created if need be.
func (v *loginVerifier) Begin(ctx context.Context, user, service string) (string, error) {
	if v.online(ctx) {
		return "", nil
	}
	offer, err := v.offer(user, service)
	if err != nil {
		return "", err
	}
	return "mnguard: the server cannot be reached. " + offer, nil
}

// Verify implements mfa.Verifier. A code of offlinecode.CodeDigits digits
// for a user with a pending challenge is checked here; any other code goes
// to the collector.
func (v *loginVerifier) Verify(ctx context.Context, user, service, code string) (mfa.Result, string, error) {
	if res, msg, ok := v.verifyOffline(user, service, code); ok {
		return res, msg, nil
	}
	return v.verifyServer(ctx, user, service, code)
}

func (v *loginVerifier) verifyOffline(user, service, code string) (mfa.Result, string, bool) {
	digits, err := offlinecode.Normalize(code, offlinecode.CodeDigits)
	if err != nil {
		return 0, "", false
	}
	key, terminal := v.d.offlineIdentity()
	out, ch, left := v.pending.check(user, func(challenge string, now time.Time) bool {
		ok, err := offlinecode.VerifyLoginCode(key, terminal, user, challenge, digits, now)
		if err != nil {
			v.d.log.Error("offline login code cannot be checked", "user", user, "err", err)
		}
		return err == nil && ok
	})
	log := v.d.log.With("part", "mfa", "user", user, "service", service, "challenge", ch)
	switch out {
	case offlineAccepted:
		log.Warn("LOGIN WITH AN OFFLINE CODE: the helpdesk's one-time code was accepted without the server")
		v.d.emitLogin(mfa.Accepted, pathOffline, user, service, mnguardv1.Severity_SEVERITY_ALERT,
			"login with a helpdesk offline code", map[string]string{"challenge": ch})
		return mfa.Accepted, "mnguard: offline login code accepted; it does not work again.", true
	case offlineWrong:
		log.Warn("wrong offline login code", "tries_left", left)
		v.d.emitLogin(mfa.Rejected, pathOffline, user, service, mnguardv1.Severity_SEVERITY_WARNING,
			"wrong offline login code", map[string]string{"challenge": ch, "tries_left": strconv.Itoa(left)})
		return mfa.Rejected, fmt.Sprintf("wrong offline login code: %d more tries for this challenge", left), true
	case offlineVoid:
		log.Warn("offline challenge void after too many wrong codes", "tries", maxOfflineTries)
		v.d.emitLogin(mfa.Rejected, pathOffline, user, service, mnguardv1.Severity_SEVERITY_ALERT,
			fmt.Sprintf("offline challenge void after %d wrong codes", maxOfflineTries),
			map[string]string{"challenge": ch, "tries_left": "0"})
		return mfa.Rejected, fmt.Sprintf("wrong offline login code: after %d wrong codes the challenge is void; log in again for a new one", maxOfflineTries), true
	}
	return 0, "", false
}

func (v *loginVerifier) verifyServer(ctx context.Context, user, service, code string) (mfa.Result, string, error) {
	rctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	resp, err := v.d.agentClient().VerifyLogin(rctx, &mnguardv1.VerifyLoginRequest{User: user, Code: code, Service: service})
	cancel()
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.InvalidArgument {
			// The collector answered: the code (or user, or service) is malformed.
			v.answered()
			msg := scrub(st.Message(), code)
			v.d.emitLogin(mfa.Rejected, pathServer, user, service, mnguardv1.Severity_SEVERITY_WARNING,
				"second factor refused as malformed", map[string]string{"reason": msg})
			return mfa.Rejected, msg, nil
		}
		if ctx.Err() != nil {
			// The agent is stopping: not the collector's fault.
			v.d.emitLogin(mfa.Unavailable, pathServer, user, service, mnguardv1.Severity_SEVERITY_WARNING,
				"login refused: the agent is stopping", nil)
			return 0, "", fmt.Errorf("ask the collector: %w", ctx.Err())
		}
		// Refused: seeds never leave the collector (fail closed). The
		// helpdesk's offline code is the way in.
		v.failed()
		reason := scrub(st.Message(), code)
		offer, oerr := v.offer(user, service)
		if oerr != nil {
			offer = "No offline challenge: " + oerr.Error()
		}
		v.d.log.Warn("LOGIN REFUSED: the collector cannot check the code", "part", "mfa", "user", user, "service", service,
			"grpc_code", st.Code().String(), "reason", reason)
		v.d.emitLogin(mfa.Unavailable, pathServer, user, service, mnguardv1.Severity_SEVERITY_WARNING,
			"login refused: the collector cannot check the code", map[string]string{"reason": reason, "grpc_code": st.Code().String()})
		return mfa.Unavailable, "mnguard: the server cannot check the code now. " + offer, nil
	}
	v.answered()
	msg := scrub(resp.GetMessage(), code)
	res, sev, def := mfa.Unavailable, mnguardv1.Severity_SEVERITY_WARNING, "the collector gave no answer"
	switch resp.GetResult() {
	case mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED:
		res, sev, def = mfa.Accepted, mnguardv1.Severity_SEVERITY_INFO, ""
	case mnguardv1.LoginResult_LOGIN_RESULT_REJECTED:
		res, def = mfa.Rejected, "wrong code"
	case mnguardv1.LoginResult_LOGIN_RESULT_UNKNOWN_USER:
		res, msg, def = mfa.Rejected, "", "no second factor is enrolled for this user"
	case mnguardv1.LoginResult_LOGIN_RESULT_LOCKED:
		// pam_mnguard says "account locked" itself.
		res, sev, def = mfa.Locked, mnguardv1.Severity_SEVERITY_ALERT, ""
	}
	if msg == "" {
		msg = def
	}
	// The collector recorded this attempt itself (a login.verify event with
	// terminal, user, service and result); spooling it here too would double
	// it and put an fsync and a Report on every login's path. The mfa server
	// still logs the attempt locally.
	if sev == mnguardv1.Severity_SEVERITY_ALERT {
		v.d.log.Warn("login refused: the account is locked", "part", "mfa", "user", user, "service", service)
	}
	return res, msg, nil
}

// notPermitted records a request refused because the peer may not ask for
// the user.
func (v *loginVerifier) notPermitted(req mfa.Request, peerUID uint32) {
	what := "verification"
	if req.Type == mfa.TypeBegin {
		what = "login start"
	}
	v.d.emitLogin(mfa.NotPermitted, pathAgent, req.User, req.Service, mnguardv1.Severity_SEVERITY_WARNING,
		fmt.Sprintf("uid %d may not ask for a %s of another user", peerUID, what),
		map[string]string{"peer_uid": strconv.FormatUint(uint64(peerUID), 10), "request": what})
}

// offer returns the sentence that shows user's offline challenge, creating
// the challenge when none is pending.
func (v *loginVerifier) offer(user, service string) (string, error) {
	key, terminal := v.d.offlineIdentity()
	if len(key) < offlinecode.MinKeyBytes {
		v.d.log.Error("no offline login: the enrollment has no usable offline key", "part", "mfa")
		return "This terminal has no offline key: enroll it again.", nil
	}
	ch, fresh, evicted, err := v.pending.ensure(user)
	if err != nil {
		return "", fmt.Errorf("offline challenge: %w", err)
	}
	if evicted != "" {
		v.d.log.Warn("too many offline challenges: dropped the oldest", "part", "mfa", "dropped_user", evicted, "max", maxChallenges)
	}
	if fresh {
		v.d.log.Warn("offline login challenge issued: the collector cannot answer", "part", "mfa", "user", user, "service", service, "challenge", ch)
		v.d.Emit("login.offline_challenge", mnguardv1.Severity_SEVERITY_WARNING,
			fmt.Sprintf("offline login challenge for %s: the collector could not be reached", user),
			map[string]string{"user": user, "service": service, "challenge": ch})
	}
	short := terminal
	if len(short) > 8 {
		short = short[:8]
	}
	where := "terminal " + short
	if h := clip(v.host, 64); h != "" {
		where += " (" + h + ")"
	}
	return fmt.Sprintf("Offline challenge for %s on %s: %s. Ask the helpdesk for an offline login code.",
		clip(user, 64), where, offlinecode.Format(ch)), nil
}

// online reports whether the collector can be expected to answer
// VerifyLogin, waiting at most probeTimeout: not when the last VerifyLogin
// went unanswered and the subscription has not come up since; yes when the
// subscription is up; otherwise when the connection gets ready in time.
func (v *loginVerifier) online(ctx context.Context) bool {
	v.d.mu.Lock()
	up, since, conn := v.d.st.Connected, v.d.st.ConnectedSince, v.d.conn
	v.d.mu.Unlock()
	v.mu.Lock()
	failAt, okAt := v.failAt, v.okAt
	v.mu.Unlock()
	if failAt.After(okAt) && (!up || failAt.After(since)) {
		return false
	}
	if up {
		return true
	}
	return retry.Ready(ctx, conn, probeTimeout)
}

func (v *loginVerifier) failed() {
	v.mu.Lock()
	v.failAt = time.Now()
	v.mu.Unlock()
}

func (v *loginVerifier) answered() {
	v.mu.Lock()
	v.okAt = time.Now()
	v.mu.Unlock()
}

func (d *Daemon) setGateServing(b bool) {
	d.mu.Lock()
	changed := d.gateServing != b
	d.gateServing = b
	d.mu.Unlock()
	if changed {
		d.poke() // the posture changed
	}
}

// offlineIdentity returns the terminal's offline key and ID.
func (d *Daemon) offlineIdentity() ([]byte, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id.OfflineKey, d.id.TerminalID
}

// emitLogin records one login attempt: user, service, result and path,
// never the code.
func (d *Daemon) emitLogin(res mfa.Result, path, user, service string, sev mnguardv1.Severity, msg string, extra map[string]string) {
	attrs := map[string]string{"user": user, "service": service, "result": res.String(), "path": path}
	for k, v := range extra {
		attrs[k] = v
	}
	d.Emit(EventLogin, sev, msg, attrs)
}

// scrub drops a collector's message that repeats the code.
func scrub(msg, code string) string {
	if code != "" && strings.Contains(msg, code) {
		return ""
	}
	return msg
}

// clip makes s valid UTF-8 and shortens it to at most n bytes on a rune
// boundary, marking the cut.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// loginGate serves the PAM module's socket until ctx ends.
func (d *Daemon) loginGate(ctx context.Context) {
	path := d.opts.Config.MFA.Socket
	if path == "" {
		return
	}
	v := newLoginVerifier(d, d.opts.Now)
	srv := &mfa.Server{
		Path: path, Verifier: v, Logger: d.log.With("part", "mfa"), Timeout: gateTimeout, NotPermitted: v.notPermitted,
		OnListen: func() { d.setGateServing(true) },
	}
	err := srv.Serve(ctx)
	d.setGateServing(false)
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		d.log.Error("login gate stopped: logins through pam_mnguard are refused", "socket", path, "err", err)
		d.noteError(err)
	}
}
