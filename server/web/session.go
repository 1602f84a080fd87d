package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
)

// Cookies. The __Host- prefix makes browsers refuse them unless Secure,
// host-only and for the whole site.
const (
	sessionCookie = "__Host-mnguard_session"
	signinCookie  = "__Host-mnguard_signin"
	langCookie    = "__Host-mnguard_lang"
)

// reqCtx is what a handler knows about the request: language, time, and
// for a signed-in operator the operator and session.
type reqCtx struct {
	s    *Server
	lang string
	now  time.Time
	path string
	// done is the key of a finished action to confirm ("?done=").
	done string
	// Set once authenticated.
	op      *store.Operator
	ses     *store.Session
	sesHash []byte
}

func (s *Server) newReqCtx(r *http.Request) *reqCtx {
	c := &reqCtx{s: s, now: s.cfg.Now(), path: r.URL.Path, lang: i18n.Match(r.Header.Get("Accept-Language"))}
	if d := r.URL.Query().Get("done"); d != "" && len(d) < 64 && i18n.Has("done."+d) {
		c.done = d
	}
	if ck, err := r.Cookie(langCookie); err == nil && i18n.Supported(ck.Value) {
		c.lang = ck.Value
	}
	return c
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashSecret(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// authenticate finds the session of the request's cookie and checks its
// operator and timeouts; it reports false (and ends the session) when there
// is none or it has expired. An error means the store failed.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, c *reqCtx) (bool, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" || len(ck.Value) > 128 {
		return false, nil
	}
	hash := hashSecret(ck.Value)
	ses, op, err := s.cfg.Store.SessionByHash(r.Context(), hash)
	if errors.Is(err, store.ErrNotFound) {
		clearCookie(w, sessionCookie)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if reason := s.sessionEnded(ses, op, c.now); reason != "" {
		a := (&api.Operator{Name: op.Name, Role: op.Role, Via: "web session " + sessionID(hash)}).Actor()
		if err := s.cfg.Store.DeleteSession(r.Context(), hash, &store.AuditEntry{Time: c.now, Actor: a,
			Action: "operator.session_expired", Target: op.Name, Detail: reason}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
		clearCookie(w, sessionCookie)
		return false, nil
	}
	// Record activity, at most every few seconds: the idle timeout does
	// not need every request written.
	if c.now.Sub(ses.LastSeenAt) > min(30*time.Second, s.cfg.IdleTimeout/10) {
		if err := s.cfg.Store.TouchSession(r.Context(), hash, c.now); err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
	}
	c.op, c.ses, c.sesHash = &op, &ses, hash
	if i18n.Supported(op.Language) {
		c.lang = op.Language
	}
	return true, nil
}

// sessionEnded says why the session may not go on at now (idle timeout,
// absolute timeout, operator disabled), or "" when it may.
func (s *Server) sessionEnded(ses store.Session, op store.Operator, now time.Time) string {
	switch {
	case now.Sub(ses.CreatedAt) > s.cfg.AbsoluteTimeout:
		return "absolute timeout"
	case now.Sub(ses.LastSeenAt) > s.cfg.IdleTimeout:
		return "idle timeout"
	case !op.Enabled():
		return "operator disabled"
	}
	return ""
}

// sessionID is a short, non-secret name of a session for the audit log:
// the first 8 hex digits of its hash.
func sessionID(hash []byte) string { return hex.EncodeToString(hash)[:8] }

// validCSRF compares a form's CSRF token with the session's.
func (c *reqCtx) validCSRF(v string) bool {
	return c.ses != nil && v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(c.ses.CSRF)) == 1
}

// operator is the API's view of the signed-in operator, for in-process
// calls of the admin service and the audit log.
func (c *reqCtx) operator() *api.Operator {
	return &api.Operator{Name: c.op.Name, Role: c.op.Role, Via: "web session " + sessionID(c.sesHash)}
}

// apiCtx is ctx carrying the signed-in operator for the admin service.
func (c *reqCtx) apiCtx(ctx context.Context) context.Context {
	return api.WithOperator(ctx, c.operator())
}

// audit is an audit entry of an action of the signed-in operator.
func (c *reqCtx) audit() store.AuditEntry {
	return store.AuditEntry{Time: c.now, Actor: c.operator().Actor()}
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		MaxAge: int(maxAge / time.Second),
	})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// toSignIn sends a request without a valid session to the sign-in page,
// coming back to where it was going.
func (s *Server) toSignIn(w http.ResponseWriter, r *http.Request, c *reqCtx) {
	if r.Header.Get("Accept") == "text/event-stream" {
		http.Error(w, i18n.T(c.lang, "error.signed_out"), http.StatusUnauthorized)
		return
	}
	q := url.Values{}
	if _, err := r.Cookie(sessionCookie); err == nil {
		q.Set("expired", "1")
	}
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		q.Set("next", r.URL.RequestURI())
	}
	target := "/signin"
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// safeNext returns next when it is a path on this site, else "/".
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") || len(next) > 2048 {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

type signinView struct {
	Token   string
	Name    string
	Next    string
	Error   string
	Notice  string
	Langs   []string
	Current string
}

// signinPage shows the sign-in form with a fresh pre-session CSRF token.
func (s *Server) signinPage(w http.ResponseWriter, r *http.Request, c *reqCtx, status int, v signinView) error {
	if lang := r.URL.Query().Get("lang"); i18n.Supported(lang) {
		c.lang = lang
		setCookie(w, langCookie, lang, 365*24*time.Hour)
	}
	tok, err := randomToken(32)
	if err != nil {
		return err
	}
	setCookie(w, signinCookie, tok, time.Hour)
	v.Token, v.Langs, v.Current = tok, i18n.Languages, c.lang
	if v.Next == "" {
		v.Next = safeNext(r.URL.Query().Get("next"))
	}
	switch {
	case v.Notice != "":
	case r.URL.Query().Get("expired") == "1":
		v.Notice = "signin.expired"
	case r.URL.Query().Get("signed_out") == "1":
		v.Notice = "signin.signed_out"
	}
	return s.render(w, c, status, "signin", v)
}

func (s *Server) getSignin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if ok, err := s.authenticate(w, r, c); err == nil && ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return nil
	}
	return s.signinPage(w, r, c, http.StatusOK, signinView{})
}

func (s *Server) postSignin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	next := safeNext(f.Get("next"))
	ck, err := r.Cookie(signinCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(f.Get("csrf"))) != 1 {
		return s.signinPage(w, r, c, http.StatusForbidden, signinView{Next: next, Error: "error.csrf"})
	}
	name := strings.TrimSpace(f.Get("name"))
	secret, err := randomToken(32)
	if err != nil {
		return err
	}
	csrf, err := randomToken(32)
	if err != nil {
		return err
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !s.signins.allowed(remote, c.now) {
		s.cfg.Logger.Warn("console sign-in refused: too many failures from this address", "remote", remote, "name", name)
		w.Header().Set("Retry-After", strconv.Itoa(int(SigninRefill/time.Second)))
		return s.signinPage(w, r, c, http.StatusTooManyRequests, signinView{Name: name, Next: next, Error: "signin.throttled"})
	}
	ua := r.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	op, err := s.cfg.Operators.SignIn(r.Context(), operators.SignInRequest{
		Name: name, Password: f.Get("password"), Code: strings.TrimSpace(f.Get("code")), Remote: remote,
		Session: store.Session{IDHash: hashSecret(secret), CSRF: csrf, CreatedAt: c.now, LastSeenAt: c.now, RemoteAddr: remote, UserAgent: ua},
	})
	switch {
	case errors.Is(err, operators.ErrLocked):
		s.signins.failed(remote, c.now)
		return s.signinPage(w, r, c, http.StatusUnauthorized, signinView{Name: name, Next: next, Error: "signin.locked"})
	case errors.Is(err, operators.ErrSignIn), errors.Is(err, operators.ErrInvalid):
		s.signins.failed(remote, c.now)
		return s.signinPage(w, r, c, http.StatusUnauthorized, signinView{Name: name, Next: next, Error: "signin.failed"})
	case err != nil:
		return err
	}
	clearCookie(w, signinCookie)
	setCookie(w, sessionCookie, secret, s.cfg.AbsoluteTimeout)
	if i18n.Supported(op.Language) {
		setCookie(w, langCookie, op.Language, 365*24*time.Hour)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (s *Server) postSignout(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	a := c.audit()
	a.Action, a.Target, a.Detail = "operator.sign_out", c.op.Name, "console session ended"
	if err := s.cfg.Store.DeleteSession(r.Context(), c.sesHash, &a); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/signin?signed_out=1", http.StatusSeeOther)
	return nil
}
