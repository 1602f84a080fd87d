package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/status"
)

// Enrollment tokens.

type tokensView struct {
	Tokens []*mnguardv1.EnrollmentToken
	// Created is a new token, shown once.
	Created *mnguardv1.CreateEnrollmentTokenResponse
}

func (s *Server) tokens(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	resp, err := listAllEnrollmentTokens(c.apiCtx(r.Context()), s.cfg.Admin)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "tokens", tokensView{Tokens: resp.GetTokens()})
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	ttl, err := time.ParseDuration(f.Get("ttl"))
	if err != nil || ttl < time.Minute || ttl > 365*24*time.Hour {
		return bad("error.bad_duration", f.Get("ttl"))
	}
	uses, err := strconv.ParseUint(f.Get("uses"), 10, 32)
	if err != nil || uses < 1 || uses > 100000 {
		return bad("error.bad_number", f.Get("uses"))
	}
	created, err := s.cfg.Admin.CreateEnrollmentToken(c.apiCtx(r.Context()), &mnguardv1.CreateEnrollmentTokenRequest{
		TtlSeconds: uint32(ttl / time.Second), Uses: uint32(uses), Note: strings.TrimSpace(f.Get("note")),
	})
	if err != nil {
		return err
	}
	resp, err := listAllEnrollmentTokens(c.apiCtx(r.Context()), s.cfg.Admin)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "tokens", tokensView{Tokens: resp.GetTokens(), Created: created})
}

// Events.

// parseTime reads a time parameter: RFC 3339, a datetime-local value
// (2006-01-02T15:04) or a day, in the console's time zone.
func (s *Server) parseTime(key, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, v, s.cfg.Location); err == nil {
			if t.Year() < 2000 || t.Year() > 2200 {
				break
			}
			return t, nil
		}
	}
	return time.Time{}, bad(key, v)
}

type eventsView struct {
	Rows     []eventRow
	Terminal string
	Type     string
	Since    string
	Until    string
	OlderURL string
	CSVURL   string
}

const eventsPage = 100

func (s *Server) eventFilter(q url.Values, limit int) (store.EventFilter, error) {
	req := &mnguardv1.ListEventsRequest{TerminalId: strings.TrimSpace(q.Get("terminal")), Type: strings.TrimSpace(q.Get("type")), Limit: uint32(limit)}
	f, err := api.EventFilter(req)
	if err != nil {
		return f, bad("error.bad_filter", status.Convert(err).Message())
	}
	if f.Since, err = s.parseTime("error.bad_time", q.Get("since")); err != nil {
		return f, err
	}
	if f.Until, err = s.parseTime("error.bad_time", q.Get("until")); err != nil {
		return f, err
	}
	if v := q.Get("older"); v != "" {
		c, err := parseCursor(v)
		if err != nil {
			return f, err
		}
		f.Before = &c
	}
	return f, nil
}

// formatCursor is an event's place in the list as the events page's
// "older" link carries it: received time (Unix nanoseconds), source and
// seq or ID.
func formatCursor(c store.EventCursor) string {
	return fmt.Sprintf("%d.%s.%d", c.ReceivedAt.UnixNano(), c.Source, c.Key)
}

func parseCursor(v string) (store.EventCursor, error) {
	parts := strings.Split(v, ".")
	if len(parts) == 3 && (parts[1] == "agent" || parts[1] == "server") {
		at, err1 := strconv.ParseInt(parts[0], 10, 64)
		key, err2 := strconv.ParseInt(parts[2], 10, 64)
		if err1 == nil && err2 == nil && key >= 0 {
			return store.EventCursor{ReceivedAt: time.Unix(0, at).UTC(), Source: parts[1], Key: key}, nil
		}
	}
	return store.EventCursor{}, bad("error.bad_page", v)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	f, err := s.eventFilter(q, eventsPage)
	if err != nil {
		return err
	}
	evs, err := s.cfg.Store.FilterEvents(r.Context(), f)
	if err != nil {
		return err
	}
	v := eventsView{Terminal: q.Get("terminal"), Type: q.Get("type"), Since: q.Get("since"), Until: q.Get("until")}
	if v.Rows, err = s.eventRows(r.Context(), evs); err != nil {
		return err
	}
	if len(evs) == eventsPage {
		v.OlderURL = link("/events", q, func(u url.Values) { u.Set("older", formatCursor(evs[len(evs)-1].Cursor())) })
	}
	v.CSVURL = link("/events.csv", q, func(u url.Values) { u.Del("older") })
	return s.render(w, c, http.StatusOK, "events", v)
}

func (s *Server) eventsCSV(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f, err := s.eventFilter(r.URL.Query(), 10000)
	if err != nil {
		return err
	}
	evs, err := s.cfg.Store.FilterEvents(r.Context(), f)
	if err != nil {
		return err
	}
	rows, err := s.eventRows(r.Context(), evs)
	if err != nil {
		return err
	}
	if err := s.auditExport(r, c, "export.events_csv", fmt.Sprintf("%d events, filter %q", len(rows), r.URL.RawQuery)); err != nil {
		return err
	}
	header := []string{"received_at", "time", "terminal_id", "hostname", "source", "seq", "type", "severity", "message", "attributes"}
	return writeCSV(w, "events-"+c.now.In(s.cfg.Location).Format("20060102-150405")+".csv", header, func(write func([]string) error) error {
		for _, e := range rows {
			var attrs []string
			for _, a := range e.Attrs {
				attrs = append(attrs, a.K+"="+a.V)
			}
			if err := write([]string{csvTime(e.ReceivedAt), csvTime(e.Time), e.TerminalID, e.Hostname, e.Source,
				strconv.FormatUint(e.Seq, 10), e.Type, e.Severity, e.Message, strings.Join(attrs, "; ")}); err != nil {
				return err
			}
		}
		return nil
	})
}

// Audit log.

type auditView struct {
	Verification store.AuditVerification
	Entries      []store.AuditEntry
	Action       string
	Since, Until string
	OlderURL     string
}

const auditPage = 100

func (s *Server) audit(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	f := store.AuditFilter{Limit: auditPage, ActionPrefix: strings.TrimSpace(q.Get("action"))}
	if len(f.ActionPrefix) > 64 || strings.ContainsFunc(f.ActionPrefix, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return bad("error.bad_filter", f.ActionPrefix)
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return bad("error.bad_page", v)
		}
		f.BeforeID = n
	}
	var err error
	if f.Since, err = s.parseTime("error.bad_time", q.Get("since")); err != nil {
		return err
	}
	if f.Until, err = s.parseTime("error.bad_time", q.Get("until")); err != nil {
		return err
	}
	v := auditView{Action: f.ActionPrefix, Since: q.Get("since"), Until: q.Get("until")}
	if v.Verification, err = s.cfg.Store.VerifyAudit(r.Context(), time.Time{}); err != nil {
		return err
	}
	if v.Entries, err = s.cfg.Store.FilterAudit(r.Context(), f); err != nil {
		return err
	}
	if len(v.Entries) == auditPage {
		v.OlderURL = link("/audit", q, func(u url.Values) { u.Set("before", strconv.FormatInt(v.Entries[len(v.Entries)-1].ID, 10)) })
	}
	return s.render(w, c, http.StatusOK, "audit", v)
}

// Self-inspection report.

type reportFormView struct {
	From, To string
	Enabled  bool
}

func (s *Server) selfInspection(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	if s.cfg.Reports == nil || from == "" && to == "" {
		today := c.now.In(s.cfg.Location)
		firstOfMonth := time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, s.cfg.Location)
		return s.render(w, c, http.StatusOK, "report_form", reportFormView{
			From: firstOfMonth.AddDate(0, -1, 0).Format(time.DateOnly), To: firstOfMonth.AddDate(0, 0, -1).Format(time.DateOnly),
			Enabled: s.cfg.Reports != nil,
		})
	}
	format := q.Get("format")
	if format == "" {
		format = "html"
	}
	lang := q.Get("lang")
	if lang == "" {
		lang = c.lang
	}
	resp, err := s.cfg.Admin.GetSelfInspectionReport(c.apiCtx(r.Context()), &mnguardv1.GetSelfInspectionReportRequest{
		From: from, To: to, Format: format, Language: lang,
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", resp.GetContentType())
	h.Set("Cache-Control", "no-store")
	if format != "html" {
		h.Set("Content-Disposition", "attachment; filename=\""+resp.GetFilename()+"\"")
	}
	_, err = w.Write(resp.GetDocument())
	return err
}

// Operators.

type operatorsView struct {
	Operators []*mnguardv1.Operator
	Roles     []string
	Added     *secretView
}

var roles = []string{store.RoleAdmin, store.RoleHelpdesk, store.RoleAuditor}

func (s *Server) operators(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	resp, err := listAllOperators(c.apiCtx(r.Context()), s.cfg.Admin)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "operators", operatorsView{Operators: resp.GetOperators(), Roles: roles})
}

func validOperatorName(name string) error {
	if err := operators.ValidateName(name); err != nil {
		return bad("error.bad_operator", name)
	}
	return nil
}

func (s *Server) addOperator(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	if err := validOperatorName(name); err != nil {
		return err
	}
	if f.Get("password") != f.Get("password2") {
		return bad("error.password_mismatch", "")
	}
	resp, err := s.cfg.Admin.AddOperator(c.apiCtx(r.Context()), &mnguardv1.AddOperatorRequest{Name: name, Role: f.Get("role"), Password: f.Get("password")})
	if err != nil {
		return err
	}
	sv, err := newSecretView(name, resp.GetOtpauthUrl(), resp.GetSecret(), nil)
	if err != nil {
		return err
	}
	list, err := listAllOperators(c.apiCtx(r.Context()), s.cfg.Admin)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "operators", operatorsView{Operators: list.GetOperators(), Roles: roles, Added: sv})
}

type operatorView struct {
	O     *mnguardv1.Operator
	Roles []string
	// Shown once.
	Secret *secretView
	Token  *mnguardv1.CreateOperatorTokenResponse
	Self   bool
}

func (s *Server) operatorPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validOperatorName(name); err != nil {
		return err
	}
	resp, err := s.cfg.Admin.GetOperator(c.apiCtx(r.Context()), &mnguardv1.GetOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "operator", operatorView{O: resp.GetOperator(), Roles: roles, Self: name == c.op.Name})
}

// operatorAction serves the operator page's forms; the route's last path
// element names the action.
func (s *Server) operatorAction(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validOperatorName(name); err != nil {
		return err
	}
	ctx, f := c.apiCtx(r.Context()), r.PostForm
	action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	var err error
	switch action {
	case "disable":
		_, err = s.cfg.Admin.DisableOperator(ctx, &mnguardv1.DisableOperatorRequest{Name: name})
	case "enable":
		_, err = s.cfg.Admin.EnableOperator(ctx, &mnguardv1.EnableOperatorRequest{Name: name})
	case "unlock":
		_, err = s.cfg.Admin.UnlockOperator(ctx, &mnguardv1.UnlockOperatorRequest{Name: name})
	case "role":
		_, err = s.cfg.Admin.SetOperatorRole(ctx, &mnguardv1.SetOperatorRoleRequest{Name: name, Role: f.Get("role")})
	case "password":
		if f.Get("password") != f.Get("password2") {
			return bad("error.password_mismatch", "")
		}
		_, err = s.cfg.Admin.SetOperatorPassword(ctx, &mnguardv1.SetOperatorPasswordRequest{Name: name, Password: f.Get("password")})
	case "delete":
		if _, err := s.cfg.Admin.DeleteOperator(ctx, &mnguardv1.DeleteOperatorRequest{Name: name}); err != nil {
			return err
		}
		http.Redirect(w, r, "/operators?done=operator_deleted", http.StatusSeeOther)
		return nil
	case "reset-totp":
		resp, err := s.cfg.Admin.ResetOperatorTotp(ctx, &mnguardv1.ResetOperatorTotpRequest{Name: name})
		if err != nil {
			return err
		}
		sv, err := newSecretView(name, resp.GetOtpauthUrl(), resp.GetSecret(), nil)
		if err != nil {
			return err
		}
		return s.operatorShown(w, r, c, name, operatorView{Secret: sv})
	case "tokens":
		ttl := time.Duration(0)
		if v := f.Get("ttl"); v != "" && v != "0" {
			if ttl, err = time.ParseDuration(v); err != nil || ttl < time.Minute {
				return bad("error.bad_duration", v)
			}
		}
		resp, err := s.cfg.Admin.CreateOperatorToken(ctx, &mnguardv1.CreateOperatorTokenRequest{
			Name: name, TtlSeconds: uint32(ttl / time.Second), Note: strings.TrimSpace(f.Get("note")),
		})
		if err != nil {
			return err
		}
		return s.operatorShown(w, r, c, name, operatorView{Token: resp})
	default:
		return bad("error.not_found", action)
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/operators/"+url.PathEscape(name)+"?done=operator_"+strings.ReplaceAll(action, "-", "_"), http.StatusSeeOther)
	return nil
}

// operatorShown renders the operator page with something shown once.
func (s *Server) operatorShown(w http.ResponseWriter, r *http.Request, c *reqCtx, name string, v operatorView) error {
	resp, err := s.cfg.Admin.GetOperator(c.apiCtx(r.Context()), &mnguardv1.GetOperatorRequest{Name: name})
	if err != nil {
		return err
	}
	v.O, v.Roles, v.Self = resp.GetOperator(), roles, name == c.op.Name
	return s.render(w, c, http.StatusOK, "operator", v)
}

func (s *Server) revokeOperatorToken(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if len(id) > 64 || id == "" {
		return bad("error.bad_filter", id)
	}
	if _, err := s.cfg.Admin.RevokeOperatorToken(c.apiCtx(r.Context()), &mnguardv1.RevokeOperatorTokenRequest{Id: id}); err != nil {
		return err
	}
	back := safeNext(r.PostForm.Get("next"))
	if back == "/" {
		back = "/operators"
	}
	http.Redirect(w, r, back+"?done=token_revoked", http.StatusSeeOther)
	return nil
}

// The operator's own account.

type accountView struct {
	Langs []string
}

func (s *Server) account(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return s.render(w, c, http.StatusOK, "account", accountView{Langs: i18n.Languages})
}

func (s *Server) setLanguage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	lang := r.PostForm.Get("lang")
	if lang != "" && !i18n.Supported(lang) {
		return bad("error.bad_language", lang)
	}
	if _, err := s.cfg.Operators.SetLanguage(r.Context(), c.op.Name, lang, c.audit()); err != nil {
		if errors.Is(err, operators.ErrInvalid) {
			return bad("error.bad_language", lang)
		}
		return err
	}
	if lang != "" {
		setCookie(w, langCookie, lang, 365*24*time.Hour)
	} else {
		clearCookie(w, langCookie)
	}
	http.Redirect(w, r, "/account?done=language_set", http.StatusSeeOther)
	return nil
}
