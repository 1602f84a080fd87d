package web

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"
)

//go:embed static
var staticFS embed.FS

// routes registers every route. Each is in package authz's table, which
// says who may use it; TestRoutesMatchTable keeps the two in step.
func (s *Server) routes() {
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	s.handle("GET /static/{file...}", func(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
		return nil
	})
	s.handle("GET /healthz", func(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
		if s.cfg.Health != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := s.cfg.Health(ctx); err != nil {
				http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
				return nil
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, err := w.Write([]byte("ok\n"))
		return err
	})
	s.handle("GET /metrics", func(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
		if s.cfg.Metrics == nil {
			http.NotFound(w, r)
			return nil
		}
		s.cfg.Metrics.ServeHTTP(w, r)
		return nil
	})
	s.handle("GET /signin", s.getSignin)
	s.handle("POST /signin", s.postSignin)
	s.handle("POST /signout", s.postSignout)

	s.handle("GET /{$}", s.overview)
	s.handle("GET /terminals", s.terminals)
	s.handle("GET /terminals.csv", s.terminalsCSV)
	s.handle("GET /terminals/{id}", s.terminal)
	s.handle("POST /terminals/{id}/revoke", s.revokeTerminal)

	s.handle("GET /exemptions", s.exemptions)
	s.handle("GET /exemptions/new", s.newExemption)
	s.handle("POST /exemptions", s.issueExemption)
	s.handle("GET /exemptions/offline", s.offlineExemptionForm)
	s.handle("POST /exemptions/offline", s.offlineExemption)
	s.handle("GET /exemptions/{id}", s.exemption)
	s.handle("GET /exemptions/{id}/live", s.exemptionLive)
	s.handle("POST /exemptions/{id}/revoke", s.revokeExemption)

	s.handle("GET /users", s.users)
	s.handle("POST /users", s.enrollUser)
	s.handle("GET /users/offline-code", s.offlineLoginForm)
	s.handle("POST /users/offline-code", s.offlineLogin)
	s.handle("GET /users/{name}", s.user)
	s.handle("POST /users/{name}/unlock", s.unlockUser)
	s.handle("POST /users/{name}/reset", s.resetUser)
	s.handle("POST /users/{name}/resync", s.resyncUser)
	s.handle("POST /users/{name}/recovery-codes", s.recoveryCodes)
	s.handle("POST /users/{name}/delete", s.deleteUser)

	s.handle("GET /tokens", s.tokens)
	s.handle("POST /tokens", s.createToken)

	s.handle("GET /events", s.events)
	s.handle("GET /events.csv", s.eventsCSV)
	s.handle("GET /audit", s.audit)
	s.handle("GET /reports/self-inspection", s.selfInspection)
	s.handle("GET /network-policy", s.networkPolicy)
	s.handle("POST /network-policy", s.setNetworkPolicy)

	s.handle("GET /operators", s.operators)
	s.handle("POST /operators", s.addOperator)
	s.handle("GET /operators/{name}", s.operatorPage)
	s.handle("POST /operators/{name}/disable", s.operatorAction)
	s.handle("POST /operators/{name}/enable", s.operatorAction)
	s.handle("POST /operators/{name}/delete", s.operatorAction)
	s.handle("POST /operators/{name}/reset-totp", s.operatorAction)
	s.handle("POST /operators/{name}/role", s.operatorAction)
	s.handle("POST /operators/{name}/password", s.operatorAction)
	s.handle("POST /operators/{name}/unlock", s.operatorAction)
	s.handle("POST /operators/{name}/tokens", s.operatorAction)
	s.handle("POST /operators/tokens/{id}/revoke", s.revokeOperatorToken)

	s.handle("GET /account", s.account)
	s.handle("POST /account/language", s.setLanguage)

	// Everything else: a page that says so, in the console's language.
	s.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := s.newReqCtx(r)
		s.fail(w, r, c, http.StatusNotFound, "error.not_found", "")
	}))
}
