// Package web is the collector's console for administrators, helpdesk
// staff and auditors: server-rendered pages (html/template, every asset
// embedded, nothing fetched from outside the collector) over the same
// store and admin service as the gRPC API, behind sign-in with a password
// and TOTP, per-route authorization from package authz, CSRF tokens and a
// strict Content-Security-Policy.
package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	_ "time/tzdata" // Asia/Tokyo on every system, Windows included

	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/authz"
	"github.com/mnguard/mnguard/server/compliance"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
)

// Session limits and request bounds.
const (
	DefaultIdleTimeout     = 15 * time.Minute
	DefaultAbsoluteTimeout = 8 * time.Hour
	// MaxFormBytes bounds a request body: forms are small.
	MaxFormBytes = 64 << 10
)

// Config configures the console.
type Config struct {
	Store store.Store
	// Admin is the admin service the console's actions go through, as
	// the operator behind the session.
	Admin     *api.AdminService
	Operators *operators.Service
	// Reports renders the self-inspection report; nil hides it.
	Reports api.ReportRenderer
	// Compliance is the evaluation policy (report interval, versions).
	Compliance compliance.Policy
	// ExemptionMaxDuration bounds the durations the issue form offers.
	ExemptionMaxDuration time.Duration
	// Location is the time zone of every time shown (default Asia/Tokyo).
	Location *time.Location
	// IdleTimeout and AbsoluteTimeout end sessions (defaults 15 min, 8 h).
	IdleTimeout, AbsoluteTimeout time.Duration
	Version                      string
	// Health and Metrics serve /healthz and /metrics.
	Health  func(context.Context) error
	Metrics http.Handler
	Logger  *slog.Logger
	Now     func() time.Time
}

// Server is the console. Its Handler serves every route of the
// authorization table.
type Server struct {
	cfg   Config
	pages *pages
	mux   *http.ServeMux
	live  *hub
	// signins counts failed sign-ins per client address.
	signins *signinThrottle
	// patterns are the routes registered, in order.
	patterns []string
}

// New returns the console.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Admin == nil || cfg.Operators == nil {
		return nil, errors.New("web: store, admin service and operators are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Location == nil {
		loc, err := time.LoadLocation("Asia/Tokyo")
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		cfg.Location = loc
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.AbsoluteTimeout <= 0 {
		cfg.AbsoluteTimeout = DefaultAbsoluteTimeout
	}
	if cfg.ExemptionMaxDuration <= 0 {
		cfg.ExemptionMaxDuration = api.DefaultExemptionMaxDuration
	}
	if err := i18n.Check(); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	p, err := loadPages(cfg.Location)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, pages: p, mux: http.NewServeMux(), live: newHub(), signins: newSigninThrottle()}
	s.routes()
	return s, nil
}

// Changed tells the console's live pages that something of the terminal
// changed (an event, an exemption). It never blocks.
func (s *Server) Changed(terminalID string) { s.live.notify(terminalID) }

// Handler returns the console's handler.
func (s *Server) Handler() http.Handler { return s.secure(s.mux) }

// SweepJob is the session sweep as a job of the store (store.DB.TryJob):
// with replicas on one database, one of them sweeps.
const SweepJob = "console.sweep-sessions"

// Sweep removes expired sessions from the store every minute until ctx
// ends; with replicas, on the one that holds SweepJob.
func (s *Server) Sweep(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	j, jobs := s.cfg.Store.(interface {
		TryJob(ctx context.Context, name string) (release func(), ok bool, err error)
	})
	// The claim is held from tick to tick, released on the way out.
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if jobs {
				rel, ok, err := j.TryJob(ctx, SweepJob)
				if err != nil || !ok {
					continue
				}
				release = rel
			}
			now := s.cfg.Now()
			if n, err := s.cfg.Store.DeleteExpiredSessions(ctx, now.Add(-s.cfg.IdleTimeout), now.Add(-s.cfg.AbsoluteTimeout)); err != nil {
				s.cfg.Logger.Warn("remove expired console sessions", "err", err)
			} else if n > 0 {
				s.cfg.Logger.Debug("expired console sessions removed", "count", n)
			}
		}
	}
}

// handler is a console handler: it gets the request's context (operator,
// session, language) and returns an error to show, or nil.
type handler func(w http.ResponseWriter, r *http.Request, c *reqCtx) error

// handle registers h for pattern behind the authorization table: the
// table decides who may use it, and a pattern the table does not list is
// refused to everyone.
func (s *Server) handle(pattern string, h handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, s.guard(pattern, h))
}

// secure sets the headers every response carries.
func (s *Server) secure(next http.Handler) http.Handler {
	const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

// guard authenticates the request for pattern, checks the table, the
// CSRF token of a state-changing request, and bounds its body.
func (s *Server) guard(pattern string, h handler) http.Handler {
	who, listed := authz.Route(pattern)
	method, _, _ := strings.Cut(pattern, " ")
	public := listed && len(who) == 1 && who[0] == authz.Anyone
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := s.newReqCtx(r)
		if !listed {
			s.cfg.Logger.Error("console route missing from the authorization table: refused", "route", pattern)
			s.fail(w, r, c, http.StatusForbidden, "error.forbidden", "")
			return
		}
		if method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
			if err := r.ParseForm(); err != nil {
				var mb *http.MaxBytesError
				if errors.As(err, &mb) {
					s.fail(w, r, c, http.StatusRequestEntityTooLarge, "error.too_large", "")
					return
				}
				s.fail(w, r, c, http.StatusBadRequest, "error.bad_form", "")
				return
			}
			if !sameOrigin(r) {
				s.fail(w, r, c, http.StatusForbidden, "error.cross_origin", "")
				return
			}
		}
		if !public {
			ok, err := s.authenticate(w, r, c)
			if err != nil {
				s.fail(w, r, c, http.StatusServiceUnavailable, "error.unavailable", err.Error())
				return
			}
			if !ok {
				s.toSignIn(w, r, c)
				return
			}
			if !authz.AllowsRoute(pattern, c.op.Role) {
				s.fail(w, r, c, http.StatusForbidden, "error.forbidden", "")
				return
			}
			if method == http.MethodPost && !c.validCSRF(r.PostForm.Get("csrf")) {
				s.fail(w, r, c, http.StatusForbidden, "error.csrf", "")
				return
			}
		}
		if err := h(w, r, c); err != nil {
			s.failErr(w, r, c, err)
		}
	})
}

// sameOrigin refuses a state-changing request that a browser says came
// from another origin (the CSRF token and SameSite=Strict already do; this
// is a third fence). Requests without Origin (old clients) pass.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" && r.Header.Get("Sec-Fetch-Site") == "same-origin" {
		return true
	}
	return o == "https://"+r.Host
}
