package web

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/server/authz"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

//go:embed templates
var templateFS embed.FS

// pages holds every page's template, per language: the layout and
// partials parsed with the page, and the function t bound to the language.
type pages struct {
	byLang map[string]map[string]*template.Template
}

// funcs are the template functions of a language.
func funcs(lang string, loc *time.Location) template.FuncMap {
	return template.FuncMap{
		"t": func(key string, args ...any) string { return i18n.T(lang, key, args...) },
		"time": func(t time.Time) string {
			if t.IsZero() {
				return i18n.T(lang, "time.never")
			}
			return t.In(loc).Format("2006-01-02 15:04:05 MST")
		},
		"ago":   func(now, t time.Time) string { return ago(lang, now, t) },
		"dur":   func(d time.Duration) string { return duration(lang, d) },
		"bytes": humanBytes,
		"short": func(s string) string {
			if len(s) > 8 {
				return s[:8]
			}
			return s
		},
		"join": strings.Join,
		"hex":  func(b []byte) string { return fmt.Sprintf("%x", b) },
		"exrows": func(rows []exemptionRow, withTerminal bool) exemptionTable {
			return exemptionTable{Rows: rows, Terminal: withTerminal}
		},
		// tv is t with the arguments given as a slice (check details).
		"tv": func(key string, args []string) string { return i18n.TS(lang, key, args) },
		// tk is the text of prefix+value, or value itself when the
		// catalogue has none (a kind a newer agent reports).
		"tk": func(prefix, value string) string {
			if i18n.Has(prefix + value) {
				return i18n.T(lang, prefix+value)
			}
			return value
		},
	}
}

// loadPages parses templates/layout.html and templates/partials/*.html
// with each templates/pages/NAME.html, for each language.
func loadPages(loc *time.Location) (*pages, error) {
	p := &pages{byLang: map[string]map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/pages/*.html")
	if err != nil {
		return nil, err
	}
	for _, lang := range i18n.Languages {
		base, err := template.New("layout.html").Funcs(funcs(lang, loc)).ParseFS(templateFS, "templates/layout.html", "templates/partials/*.html")
		if err != nil {
			return nil, fmt.Errorf("web: templates: %w", err)
		}
		m := map[string]*template.Template{}
		for _, n := range names {
			t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
			if err != nil {
				return nil, fmt.Errorf("web: template %s: %w", n, err)
			}
			m[strings.TrimSuffix(path.Base(n), ".html")] = t
		}
		p.byLang[lang] = m
	}
	return p, nil
}

// exemptionTable is the partial exemptions-table's data.
type exemptionTable struct {
	Rows     []exemptionRow
	Terminal bool
}

// view is what every page's template gets: the request's context and the
// page's own data.
type view struct {
	c    *reqCtx
	Data any
}

// Lang is the page's language.
func (v view) Lang() string { return v.c.lang }

// Now is the request's time.
func (v view) Now() time.Time { return v.c.now }

// Op is the signed-in operator (nil on public pages).
func (v view) Op() *store.Operator { return v.c.op }

// CSRF is the session's anti-forgery token, for forms.
func (v view) CSRF() string {
	if v.c.ses == nil {
		return ""
	}
	return v.c.ses.CSRF
}

// Can reports whether the signed-in operator may use the route.
func (v view) Can(pattern string) bool {
	return v.c.op != nil && authz.AllowsRoute(pattern, v.c.op.Role)
}

// Path is the request's path, for the navigation.
func (v view) Path() string { return v.c.path }

// Version is the collector's version.
func (v view) Version() string { return v.c.s.cfg.Version }

// Zone is the name of the time zone times are shown in.
func (v view) Zone() string { return v.c.s.cfg.Location.String() }

// Done is the catalogue key (after "done.") of the action that brought the
// operator here, when the redirect named one.
func (v view) Done() string { return v.c.done }

// Section is the first path element, for marking the navigation.
func (v view) Section() string {
	p := strings.TrimPrefix(v.c.path, "/")
	s, _, _ := strings.Cut(p, "/")
	return strings.TrimSuffix(s, ".csv")
}

// render writes the page with status. Pages are never cached: they show
// state, and some show secrets once.
func (s *Server) render(w http.ResponseWriter, c *reqCtx, status int, page string, data any) error {
	t := s.pages.byLang[c.lang][page]
	if t == nil {
		return fmt.Errorf("web: no page %q", page)
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", view{c: c, Data: data}); err != nil {
		return fmt.Errorf("web: render %s: %w", page, err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(b.Bytes())
	return err
}

// fragment renders one named template (a partial) without the layout.
func (s *Server) fragment(c *reqCtx, page, name string, data any) (string, error) {
	t := s.pages.byLang[c.lang][page]
	if t == nil {
		return "", fmt.Errorf("web: no page %q", page)
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, view{c: c, Data: data}); err != nil {
		return "", fmt.Errorf("web: render %s/%s: %w", page, name, err)
	}
	return b.String(), nil
}

type errorView struct {
	Status  int
	Message string
	Detail  string
}

// fail shows an error page: a catalogue message and, optionally, a detail
// from the collector.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, c *reqCtx, code int, key, detail string) {
	if r.Header.Get("Accept") == "text/event-stream" {
		http.Error(w, i18n.T(c.lang, key), code)
		return
	}
	if err := s.render(w, c, code, "error", errorView{Status: code, Message: key, Detail: detail}); err != nil {
		s.cfg.Logger.Error("render error page", "err", err)
		http.Error(w, http.StatusText(code), code)
	}
}

// badRequest is an error in a request's parameters: a catalogue key and
// the offending value.
type badRequest struct {
	key   string
	value string
}

func (e *badRequest) Error() string { return e.key + ": " + e.value }

func bad(key, value string) error {
	if len(value) > 64 {
		value = value[:64] + "…"
	}
	return &badRequest{key: key, value: value}
}

// failErr shows the error a handler returned: a bad parameter (400), an
// admin service refusal (its status mapped to HTTP), a missing record
// (404), or anything else (500, logged).
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, c *reqCtx, err error) {
	var br *badRequest
	if errors.As(err, &br) {
		s.fail(w, r, c, http.StatusBadRequest, br.key, br.value)
		return
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		code, key := http.StatusInternalServerError, "error.failed"
		switch st.Code() {
		case codes.InvalidArgument:
			code, key = http.StatusBadRequest, "error.invalid"
		case codes.NotFound:
			code, key = http.StatusNotFound, "error.not_found"
		case codes.AlreadyExists:
			code, key = http.StatusConflict, "error.exists"
		case codes.FailedPrecondition, codes.Aborted:
			code, key = http.StatusConflict, "error.precondition"
		case codes.PermissionDenied:
			code, key = http.StatusForbidden, "error.forbidden"
		case codes.Unavailable, codes.DeadlineExceeded:
			code, key = http.StatusServiceUnavailable, "error.unavailable"
		case codes.Canceled:
			return
		}
		s.fail(w, r, c, code, key, st.Message())
		return
	}
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, c, http.StatusNotFound, "error.not_found", "")
		return
	}
	if r.Context().Err() != nil {
		return
	}
	s.cfg.Logger.Error("console request failed", "path", r.URL.Path, "err", err)
	s.fail(w, r, c, http.StatusInternalServerError, "error.internal", "")
}

// ago is "3 minutes ago" in lang.
func ago(lang string, now, t time.Time) string {
	if t.IsZero() {
		return i18n.T(lang, "time.never")
	}
	d := now.Sub(t)
	if d < 0 {
		return i18n.T(lang, "time.in_future")
	}
	return i18n.T(lang, "time.ago", duration(lang, d))
}

// duration is a rounded duration in lang: "45 s", "3 min", "2 h 5 min",
// "4 d 3 h".
func duration(lang string, d time.Duration) string {
	switch {
	case d < time.Minute:
		return i18n.T(lang, "time.seconds", int(d/time.Second))
	case d < time.Hour:
		return i18n.T(lang, "time.minutes", int(d/time.Minute))
	case d < 24*time.Hour:
		return i18n.T(lang, "time.hours_minutes", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return i18n.T(lang, "time.days_hours", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
