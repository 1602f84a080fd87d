package web

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/csvsafe"
	"github.com/mnguard/mnguard/internal/exemption"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Paging.
const (
	defaultPageSize = 50
	maxPage         = 1000000
)

var pageSizes = []int{25, 50, 100, 200}

// paging reads page (1-based) and size from the query.
func paging(q url.Values) (page, size int, err error) {
	page, size = 1, defaultPageSize
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			return 0, 0, bad("error.bad_page", v)
		}
		page = n
	}
	if v := q.Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || !slices.Contains(pageSizes, n) {
			return 0, 0, bad("error.bad_page_size", v)
		}
		size = n
	}
	return page, size, nil
}

// terminalFilter reads the terminal list's filter from the query, checked
// as the admin API checks ListTerminals.
func terminalFilter(q url.Values) (store.TerminalFilter, error) {
	req := &mnguardv1.ListTerminalsRequest{State: q.Get("state"), FailingCheck: q.Get("check"), Search: q.Get("q"), Sort: q.Get("sort")}
	switch q.Get("dir") {
	case "", "asc":
	case "desc":
		req.Descending = true
	default:
		return store.TerminalFilter{}, bad("error.bad_sort", q.Get("dir"))
	}
	f, err := api.TerminalFilter(req)
	if err != nil {
		return f, bad("error.bad_filter", status.Convert(err).Message())
	}
	return f, nil
}

type terminalsView struct {
	Filter     store.TerminalFilter
	Rows       []store.TerminalSummary
	Total      int
	Page       int
	Pages      int
	Size       int
	States     []string
	Checks     []string
	Sorts      []string
	Sizes      []int
	PrevURL    string
	NextURL    string
	FirstURL   string
	LastURL    string
	CSVURL     string
	From, To   int
	SortLinks  map[string]string
	SortActive string
}

func (s *Server) terminals(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	f, err := terminalFilter(q)
	if err != nil {
		return err
	}
	page, size, err := paging(q)
	if err != nil {
		return err
	}
	f.Limit, f.Offset = size, (page-1)*size
	rows, total, err := s.cfg.Store.TerminalPage(r.Context(), f)
	if err != nil {
		return err
	}
	pages := max((total+size-1)/size, 1)
	v := terminalsView{
		Filter: f, Rows: rows, Total: total, Page: page, Pages: pages, Size: size,
		States: []string{store.NonCompliant, store.Stale, store.Compliant, store.ComplianceRevoked},
		Checks: store.Checks, Sizes: pageSizes,
		Sorts: []string{store.SortHostname, store.SortState, store.SortLastSeen, store.SortAgentVersion, store.SortEnrolled},
		From:  min(f.Offset+1, total), To: min(f.Offset+len(rows), total), SortLinks: map[string]string{},
		SortActive: f.Sort,
	}
	if v.SortActive == "" {
		v.SortActive = store.SortHostname
	}
	page2 := func(p int) string {
		return link("/terminals", q, func(u url.Values) { u.Set("page", strconv.Itoa(p)) })
	}
	if page > 1 {
		v.PrevURL, v.FirstURL = page2(page-1), page2(1)
	}
	if page < pages {
		v.NextURL, v.LastURL = page2(page+1), page2(pages)
	}
	for _, key := range v.Sorts {
		v.SortLinks[key] = link("/terminals", q, func(u url.Values) {
			u.Del("page")
			u.Del("dir")
			u.Set("sort", key)
			if key == v.SortActive && !f.Desc {
				u.Set("dir", "desc")
			}
		})
	}
	v.CSVURL = link("/terminals.csv", q, func(u url.Values) {
		u.Del("page")
		u.Del("size")
	})
	return s.render(w, c, http.StatusOK, "terminals", v)
}

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// link is path with the query q as edit changes it (q itself stays).
func link(path string, q url.Values, edit func(url.Values)) string {
	u := maps.Clone(q)
	if u == nil {
		u = url.Values{}
	}
	edit(u)
	if len(u) == 0 {
		return path
	}
	return path + "?" + u.Encode()
}

// writeCSV starts a CSV download named name.
func writeCSV(w http.ResponseWriter, name string, header []string, rows func(func([]string) error) error) error {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	w.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	if err := rows(func(rec []string) error {
		for i := range rec {
			rec[i] = csvsafe.Cell(rec[i])
		}
		return cw.Write(rec)
	}); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

func (s *Server) terminalsCSV(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f, err := terminalFilter(r.URL.Query())
	if err != nil {
		return err
	}
	rows, _, err := s.cfg.Store.TerminalPage(r.Context(), f)
	if err != nil {
		return err
	}
	if err := s.auditExport(r, c, "export.terminals_csv", fmt.Sprintf("%d terminals, filter %q", len(rows), r.URL.RawQuery)); err != nil {
		return err
	}
	header := []string{"id", "hostname", "state", "compliance_state", "compliance_since", "offline"}
	for _, ch := range store.Checks {
		header = append(header, "check_"+ch, "check_"+ch+"_detail")
	}
	header = append(header, "last_seen_at", "agent_version", "platform", "addresses", "enrolled_at", "revoked_at", "certificate_not_after")
	return writeCSV(w, "terminals-"+c.now.In(s.cfg.Location).Format("20060102-150405")+".csv", header, func(write func([]string) error) error {
		for _, t := range rows {
			rec := []string{t.ID, t.Hostname, t.State}
			cmp := t.Compliance
			if cmp == nil {
				cmp = &store.Compliance{}
			}
			rec = append(rec, cmp.State, csvTime(cmp.StateSince), strconv.FormatBool(cmp.Offline))
			for _, ch := range store.Checks {
				res := cmp.Check(ch)
				detail := ""
				if res.Detail != "" {
					detail = i18n.TS(c.lang, res.Detail, res.Args)
				}
				rec = append(rec, res.Status, detail)
			}
			rec = append(rec, csvTime(t.LastSeenAt), cmp.AgentVersion, cmp.Platform, cmp.Addresses, csvTime(t.EnrolledAt), csvTime(t.RevokedAt), csvTime(t.CertNotAfter))
			if err := write(rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// auditExport records who took data out of the console as a file.
func (s *Server) auditExport(r *http.Request, c *reqCtx, action, detail string) error {
	a := c.audit()
	a.Action, a.Target, a.Detail = action, r.URL.Path, detail
	_, err := s.cfg.Store.AppendAudit(r.Context(), a)
	return err
}

// eventRow is an event as pages list it.
type eventRow struct {
	store.Event
	Hostname string
	Attrs    []attr
	Severity string
}

type attr struct{ K, V string }

// eventRows decodes events for display, with their terminals' host names.
func (s *Server) eventRows(ctx context.Context, evs []store.Event) ([]eventRow, error) {
	ids := map[string]bool{}
	for _, e := range evs {
		ids[e.TerminalID] = true
	}
	names, err := s.hostnames(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]eventRow, 0, len(evs))
	for _, e := range evs {
		row := eventRow{Event: e, Hostname: names[e.TerminalID], Severity: severity(e.Severity)}
		pe := &mnguardv1.Event{}
		if proto.Unmarshal(e.Data, pe) == nil {
			keys := make([]string, 0, len(pe.GetAttributes()))
			for k := range pe.GetAttributes() {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				row.Attrs = append(row.Attrs, attr{k, pe.GetAttributes()[k]})
			}
		}
		out = append(out, row)
	}
	return out, nil
}

// severity is "info", "warning", "alert" or "unknown", from the enum's
// own names.
func severity(s int32) string {
	if _, ok := mnguardv1.Severity_name[s]; !ok || s == 0 {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(mnguardv1.Severity(s).String(), "SEVERITY_"))
}

// hostnames returns the host names of the terminals.
func (s *Server) hostnames(ctx context.Context, ids map[string]bool) (map[string]string, error) {
	return s.cfg.Store.TerminalHostnames(ctx, slices.Collect(maps.Keys(ids)))
}

// deviceRow is a removable device of a terminal's posture.
type deviceRow struct {
	*mnguardv1.RemovableDevice
	ID         string
	Exemptible bool
	IssueURL   string
}

type terminalView struct {
	T          store.Terminal
	Host       *mnguardv1.HostFacts
	Posture    *mnguardv1.Posture
	Compliance *store.Compliance
	Devices    []deviceRow
	// Network is the posture's network section; nil from agents without
	// it.
	Network    *networkView
	Exemptions []exemptionRow
	Events     []eventRow
}

func (s *Server) terminalByID(ctx context.Context, id string) (store.Terminal, *mnguardv1.HostFacts, *mnguardv1.Posture, error) {
	if err := validTerminalID(id); err != nil {
		return store.Terminal{}, nil, nil, err
	}
	t, err := s.cfg.Store.Terminal(ctx, id)
	if err != nil {
		return store.Terminal{}, nil, nil, err
	}
	host := &mnguardv1.HostFacts{}
	if err := proto.Unmarshal(t.Host, host); err != nil {
		return store.Terminal{}, nil, nil, fmt.Errorf("terminal %s host facts: %w", id, err)
	}
	var p *mnguardv1.Posture
	if len(t.Posture) > 0 {
		p = &mnguardv1.Posture{}
		if err := proto.Unmarshal(t.Posture, p); err != nil {
			return store.Terminal{}, nil, nil, fmt.Errorf("terminal %s posture: %w", id, err)
		}
		if p.GetHost() != nil {
			host = p.GetHost()
		}
	}
	return t, host, p, nil
}

func validTerminalID(id string) error {
	if len(id) != 36 || strings.Trim(id, "0123456789abcdef-") != "" {
		return bad("error.bad_terminal", id)
	}
	return nil
}

func (s *Server) terminal(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ctx := r.Context()
	t, host, p, err := s.terminalByID(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	v := terminalView{T: t, Host: host, Posture: p}
	cmp, err := s.cfg.Store.TerminalCompliance(ctx, t.ID)
	switch {
	case err == nil:
		v.Compliance = &cmp
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	if np := p.GetNetwork(); np != nil {
		v.Network = &networkView{NetworkPosture: np, Collector: s.networkPolicyVersion()}
	}
	for _, d := range p.GetMedia().GetDevices() {
		dev := &mnguardv1.DeviceIdentity{VendorId: d.GetVendorId(), ProductId: d.GetProductId(), Serial: d.GetSerial()}
		row := deviceRow{RemovableDevice: d, ID: exemption.FormatDevice(dev)}
		if exemption.ValidateDevice(dev) == nil && t.State == store.StateActive {
			row.Exemptible = true
			row.IssueURL = "/exemptions/new?" + url.Values{"terminal": {t.ID}, "device": {row.ID}}.Encode()
		}
		v.Devices = append(v.Devices, row)
	}
	es, err := s.cfg.Store.Exemptions(ctx, t.ID, time.Time{}, 20)
	if err != nil {
		return err
	}
	for _, e := range es {
		v.Exemptions = append(v.Exemptions, exemptionRow{Exemption: e, Hostname: host.GetHostname(), State: exemptionState(e, c.now)})
	}
	evs, err := s.cfg.Store.FilterEvents(ctx, store.EventFilter{TerminalID: t.ID, Limit: 25})
	if err != nil {
		return err
	}
	if v.Events, err = s.eventRows(ctx, evs); err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "terminal", v)
}

func (s *Server) revokeTerminal(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := validTerminalID(id); err != nil {
		return err
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if _, err := s.cfg.Admin.RevokeTerminal(c.apiCtx(r.Context()), &mnguardv1.RevokeTerminalRequest{Id: id, Reason: reason}); err != nil {
		return err
	}
	http.Redirect(w, r, "/terminals/"+id+"?done=terminal_revoked", http.StatusSeeOther)
	return nil
}
