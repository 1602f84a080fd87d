package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"text/template/parse"
	"time"
	"unicode"

	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/server/authz"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"golang.org/x/net/html"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// TestTemplatesHaveNoLiteralText: every word a page shows comes from the
// catalogue. The templates' literal text, with each action replaced by a
// placeholder, is parsed as HTML; no text node and no human-facing
// attribute may hold a letter.
func TestTemplatesHaveNoLiteralText(t *testing.T) {
	p, err := loadPages(time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for page, tmpl := range p.byLang[i18n.Default] {
		for _, tt := range tmpl.Templates() {
			if tt.Tree == nil || seen[tt.Name()] {
				continue
			}
			seen[tt.Name()] = true
			var b strings.Builder
			var walk func(parse.Node)
			walk = func(n parse.Node) {
				switch n := n.(type) {
				case *parse.ListNode:
					if n == nil {
						return
					}
					for _, c := range n.Nodes {
						walk(c)
					}
				case *parse.TextNode:
					b.Write(n.Text)
				case *parse.IfNode:
					walk(n.List)
					walk(n.ElseList)
				case *parse.RangeNode:
					walk(n.List)
					walk(n.ElseList)
				case *parse.WithNode:
					walk(n.List)
					walk(n.ElseList)
				default:
					b.WriteString("\x00")
				}
			}
			walk(tt.Tree.Root)
			z := html.NewTokenizer(strings.NewReader(b.String()))
			for {
				tok := z.Next()
				if tok == html.ErrorToken {
					break
				}
				tk := z.Token()
				switch tok {
				case html.TextToken:
					if hasLetter(tk.Data) {
						t.Errorf("%s (%s): literal text %q: put it in the catalogue", tt.Name(), page, strings.TrimSpace(tk.Data))
					}
				case html.StartTagToken, html.SelfClosingTagToken:
					for _, a := range tk.Attr {
						switch a.Key {
						case "title", "placeholder", "alt", "aria-label", "data-confirm":
							if hasLetter(a.Val) {
								t.Errorf("%s (%s): literal %s=%q", tt.Name(), page, a.Key, a.Val)
							}
						}
					}
				}
			}
		}
	}
	if len(seen) < 20 {
		t.Fatalf("walked only %d templates", len(seen))
	}
}

func hasLetter(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) {
			return true
		}
	}
	return false
}

// TestCatalogueCoversTemplates: every key the templates name exists in
// both languages, and so does every key the templates build from a
// prefix.
func TestCatalogueCoversTemplates(t *testing.T) {
	if err := i18n.Check(); err != nil {
		t.Fatal(err)
	}
	p, err := loadPages(time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	keyRE := regexp.MustCompile(`\bt "([^"]+)"`)
	for _, tmpl := range p.byLang[i18n.Default] {
		for _, tt := range tmpl.Templates() {
			if tt.Tree == nil {
				continue
			}
			for _, m := range keyRE.FindAllStringSubmatch(tt.Tree.Root.String(), -1) {
				if !i18n.Has(m[1]) {
					t.Errorf("template %s uses %q, which the catalogue lacks", tt.Name(), m[1])
				}
			}
		}
	}
	dynamic := map[string][]string{
		"role.%s":            {store.RoleAdmin, store.RoleHelpdesk, store.RoleAuditor},
		"state.%s":           {store.Compliant, store.NonCompliant, store.Stale, store.ComplianceRevoked, "unevaluated"},
		"status.%s":          {store.CheckPass, store.CheckFail, store.CheckUnknown},
		"check.%s":           store.Checks,
		"sort.%s":            {store.SortHostname, store.SortState, store.SortLastSeen, store.SortAgentVersion, store.SortEnrolled},
		"severity.%s":        {"info", "warning", "alert", "unknown"},
		"source.%s":          {"agent", "server", store.ExemptionOnline, store.ExemptionOffline},
		"media.%s":           {"read-only", "writable", "exempted", "deauthorized", ""},
		"agent_state.%s":     {"waiting", "applied", "ending", "ended"},
		"exemption_state.%s": {"active", "expired", "revoked"},
		"phase.%s":           {"issued", "delivered", "applied", "used", "revoked", "expired", "ending", "ended", "refused", "failed"},
		"phase.%s.help":      {"issued", "delivered", "applied", "used", "revoked", "expired", "ending", "ended", "refused", "failed"},
		"step.%s":            {"issued", "delivered", "applied", "used", "revoked", "expired", "ended", "refused", "failed"},
		"user_state.%s":      {"USER_STATE_PENDING", "USER_STATE_ACTIVE", "USER_STATE_UNSPECIFIED"},
		"user_source.%s":     {"enrolled", "imported"},
		"lang.%s":            i18n.Languages,
		"netfinding.%s": {"default_route", "route", "socket", "listener", "dns", "wireless", "usb_adapter", "bluetooth_adapter",
			"unknown_interface", "enforcement", "scan_error"},
		"netkind.%s":  {"loopback", "ethernet", "wireless", "usb", "bluetooth", "virtual", "unknown"},
		"netstate.%s": {"deauthorized"},
	}
	for format, vals := range dynamic {
		for _, v := range vals {
			if k := fmt.Sprintf(format, v); !i18n.Has(k) {
				t.Errorf("the catalogue lacks %q", k)
			}
		}
	}
}

// TestPagesRender: an admin signed in gets every page in both languages.
func TestPagesRender(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	id := e.terminal("term-01", "4C530001230815117432", false)
	c := e.mustSignIn(admin)
	paths := []string{"/", "/terminals", "/terminals?state=compliant&sort=last_seen&dir=desc&size=25", "/terminals/" + id,
		"/exemptions", "/exemptions?active=1", "/exemptions/new?terminal=" + id, "/exemptions/offline", "/users", "/users/offline-code",
		"/tokens", "/events", "/events?type=media.&since=2026-11-01", "/audit", "/audit?action=operator.", "/reports/self-inspection",
		"/operators", "/operators/admin", "/account", "/terminals.csv", "/events.csv", "/static/style.css", "/static/app.js",
		"/network-policy"}
	for _, lang := range i18n.Languages {
		c.post("/account/language", url.Values{"lang": {lang}}, true)
		for _, p := range paths {
			resp, body := c.get(p)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s GET %s: %s\n%s", lang, p, resp.Status, body)
			}
			if strings.Contains(body, "web: render") {
				t.Errorf("%s GET %s: a template failed", lang, p)
			}
		}
	}
	_, body := c.get("/terminals/" + id)
	for _, want := range []string{"term-01", "4C530001230815117432", `data-check="media" data-status="pass"`, "/exemptions/new?device=0781%3A5581%3A4C530001230815117432"} {
		if !strings.Contains(body, want) {
			t.Errorf("terminal page lacks %q", want)
		}
	}
}

// TestSecurityHeaders: every response, pages and errors alike.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	for _, p := range []string{"/signin", "/", "/nope", "/static/style.css"} {
		resp, _ := c.get(p)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", p, csp)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", p, k, h.Get(k), v)
			}
		}
	}
	admin := e.addOperator("admin", store.RoleAdmin)
	c2 := e.newClient()
	c2.get("/signin")
	e.clock.Add(30 * time.Second)
	resp, _ := c2.post("/signin", url.Values{"name": {admin.name}, "password": {admin.password}, "code": {e.code(admin, 0)}}, true)
	var found bool
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(sc, sessionCookie+"=") {
			found = true
			for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} {
				if !strings.Contains(sc, attr) {
					t.Errorf("session cookie %q lacks %s", sc, attr)
				}
			}
		}
	}
	if !found {
		t.Fatalf("no session cookie set: %s %v", resp.Status, resp.Header)
	}
}

// TestCSRF: a state-changing request without the session's token, with a
// wrong one, or from another origin is refused, and changes nothing.
func TestCSRF(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	c := e.mustSignIn(admin)
	for name, form := range map[string]url.Values{
		"none":  {"name": {"sato"}},
		"wrong": {"name": {"sato"}, "csrf": {"not-the-token"}},
	} {
		resp, body := c.post("/users", form, false)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `data-error="error.csrf"`) {
			t.Errorf("%s token: %s", name, resp.Status)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/users", strings.NewReader(url.Values{"name": {"sato"}, "csrf": {c.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, _ := c.do(req); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST: %s", resp.Status)
	}
	if _, err := e.st.User(context.Background(), "sato"); err == nil {
		t.Fatal("a refused request enrolled the user")
	}
	// The sign-in form has its own token, bound to a cookie.
	c2 := e.newClient()
	resp, _ := c2.post("/signin", url.Values{"name": {"admin"}, "password": {admin.password}, "code": {e.code(admin, 0)}, "csrf": {"forged"}}, true)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the sign-in cookie: %s", resp.Status)
	}
	// With the token it works.
	if resp, _ := c.post("/users", url.Values{"name": {"sato"}}, true); resp.StatusCode != http.StatusOK {
		t.Errorf("enroll with the token: %s %s", resp.Status, resp.Header.Get("Location"))
	}
}

// TestBadInput: oversized bodies, bad paging, sort and filters, unknown
// routes and asset paths get clear refusals, never a 500.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	c := e.mustSignIn(admin)
	big := url.Values{"name": {strings.Repeat("a", MaxFormBytes)}}
	if resp, _ := c.post("/users", big, true); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized form: %s, want 413", resp.Status)
	}
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/terminals?page=0", 400}, {"/terminals?page=-1", 400}, {"/terminals?page=x", 400}, {"/terminals?page=99999999999", 400},
		{"/terminals?size=7", 400}, {"/terminals?sort=hostname%3BDROP", 400}, {"/terminals?dir=sideways", 400},
		{"/terminals?state=green", 400}, {"/terminals?check=%3Cscript%3E", 400}, {"/terminals?q=" + strings.Repeat("x", 200), 400},
		{"/terminals?page=500", 200}, // past the end: an empty page
		{"/terminals/not-an-id", 400}, {"/terminals/00000000-0000-0000-0000-000000000000", 404},
		{"/exemptions/x", 400}, {"/exemptions?terminal=x", 400}, {"/exemptions?active=maybe", 400},
		{"/events?type=Bad Type", 400}, {"/events?since=yesterday", 400}, {"/events?terminal=1", 400},
		{"/audit?before=-3", 400}, {"/audit?since=1999-01-01", 400},
		{"/users/%3Cb%3E", 400}, {"/operators/a%20b", 400},
		{"/reports/self-inspection?from=2026-13-01&to=2026-12-01", 400},
		{"/no/such/page", 404}, {"/static/../../../etc/passwd", 404}, {"/static/%2e%2e/web.go", 404}, {"/static/nope.css", 404},
	} {
		resp, body := c.get(tt.path)
		if resp.StatusCode == http.StatusMovedPermanently || resp.StatusCode == http.StatusTemporaryRedirect {
			// The mux cleans dot segments by redirecting: follow once.
			resp, body = c.get(resp.Header.Get("Location"))
		}
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s: %s, want %d", tt.path, resp.Status, tt.want)
		}
		if strings.Contains(body, "package web") || strings.Contains(body, "root:x:0") {
			t.Errorf("GET %s served a file outside the assets", tt.path)
		}
	}
	for _, tt := range []struct {
		path string
		form url.Values
		want int
	}{
		{"/users", url.Values{"name": {"<b>x</b>"}}, 400},
		{"/operators", url.Values{"name": {"<script>"}, "role": {"admin"}, "password": {"long enough password"}, "password2": {"long enough password"}}, 400},
		{"/operators", url.Values{"name": {"ok"}, "role": {"root"}, "password": {"long enough password"}, "password2": {"long enough password"}}, 400},
		{"/operators", url.Values{"name": {"ok"}, "role": {"admin"}, "password": {"short"}, "password2": {"short"}}, 400},
		{"/exemptions", url.Values{"terminal": {"x"}}, 400},
		{"/tokens", url.Values{"ttl": {"forever"}, "uses": {"1"}}, 400},
		{"/tokens", url.Values{"ttl": {"1h"}, "uses": {"0"}}, 400},
		{"/account/language", url.Values{"lang": {"xx"}}, 400},
	} {
		if resp, body := c.post(tt.path, tt.form, true); resp.StatusCode != tt.want {
			t.Errorf("POST %s %v: %s, want %d\n%s", tt.path, tt.form, resp.Status, tt.want, body)
		}
	}
}

// TestSignIn: a replayed code is refused; failures are delayed after 5
// and lock the operator after 10, even against the right password and
// code, until an admin unlocks it.
func TestSignIn(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	desk := e.addOperator("sato", store.RoleHelpdesk)
	c := e.newClient()
	if resp := c.signIn(desk, 0); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first sign-in: %s", resp.Status)
	}
	c.post("/signout", nil, true)
	// Same time step: refused.
	c2 := e.newClient()
	if resp := c2.signIn(desk, 0); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed code: %s, want 401", resp.Status)
	}
	e.clock.Add(30 * time.Second)
	wrong := func() time.Duration {
		c := e.newClient()
		c.get("/signin")
		start := time.Now()
		resp, body := c.post("/signin", url.Values{"name": {desk.name}, "password": {"wrong password!!"}, "code": {e.code(desk, 0)}}, true)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password: %s", resp.Status)
		}
		if strings.Contains(body, "wrong password!!") {
			t.Fatal("the page repeats the password")
		}
		return time.Since(start)
	}
	for i := 1; i <= 10; i++ {
		d := wrong()
		// The first attempt above was a replay: failures start at 1.
		if failures := i + 1; failures > 5+1 && d < 50*time.Millisecond {
			t.Errorf("attempt after %d failures answered in %s, want the 50ms delay", failures-1, d)
		}
	}
	c3 := e.newClient()
	e.clock.Add(30 * time.Second)
	c3.get("/signin")
	resp, body := c3.post("/signin", url.Values{"name": {desk.name}, "password": {desk.password}, "code": {e.code(desk, 0)}}, true)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `data-error="signin.locked"`) {
		t.Fatalf("locked operator with the right credentials: %s", resp.Status)
	}
	a := e.mustSignIn(admin)
	if resp, _ := a.post("/operators/sato/unlock", nil, true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("unlock: %s", resp.Status)
	}
	e.clock.Add(30 * time.Second)
	if resp := e.newClient().signIn(desk, 0); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after unlock: %s", resp.Status)
	}
	// The audit log has every attempt, never a password or code.
	log, err := e.st.AuditLog(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var fails int
	for _, en := range log {
		if en.Action == "operator.sign_in_failed" && en.Target == "sato" {
			fails++
		}
		if strings.Contains(en.Detail+en.Actor, "wrong password!!") || strings.Contains(en.Detail, desk.password) {
			t.Errorf("audit entry %d holds a password", en.ID)
		}
	}
	if fails < 10 {
		t.Errorf("%d failed sign-ins audited, want at least 10", fails)
	}
}

// TestSessionExpiry: idle 15 minutes or 8 hours after sign-in, the
// session ends on the server; sign-out ends it too.
func TestSessionExpiry(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	c := e.mustSignIn(admin)
	e.clock.Add(14 * time.Minute)
	if resp, _ := c.get("/terminals"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after 14 idle minutes: %s", resp.Status)
	}
	e.clock.Add(16 * time.Minute)
	resp, _ := c.get("/terminals")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin?expired=1") {
		t.Fatalf("after 16 idle minutes: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	// Absolute: active every 10 minutes, still out after 8 hours.
	e.clock.Add(time.Minute)
	c = e.mustSignIn(admin)
	for elapsed := time.Duration(0); elapsed < 8*time.Hour-10*time.Minute; elapsed += 10 * time.Minute {
		e.clock.Add(10 * time.Minute)
		if resp, _ := c.get("/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("active session after %s: %s", elapsed, resp.Status)
		}
	}
	e.clock.Add(15 * time.Minute)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after 8 h: %s", resp.Status)
	}
	// Sign-out: the same cookie is refused afterwards.
	e.clock.Add(time.Minute)
	c = e.mustSignIn(admin)
	u, _ := url.Parse(e.srv.URL)
	old := c.hc.Jar.Cookies(u)
	if resp, _ := c.post("/signout", nil, true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %s", resp.Status)
	}
	c.hc.Jar.SetCookies(u, old)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the signed-out session still works: %s", resp.Status)
	}
}

// TestEscaping: what agents, users and operators type is shown as text.
func TestEscaping(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	const hostile = `<script>alert("host")</script>`
	id := e.terminal(hostile, `"><img src=x onerror=alert(2)>`, false)
	c := e.mustSignIn(admin)
	resp, body := c.post("/exemptions", url.Values{
		"terminal": {id}, "device": {"0781:5581:ABC123"}, "duration": {"1h"},
		"reason": {`<script>alert("reason")</script>`}, "ticket": {`<iframe src=//evil>`},
	}, true)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("issue exemption: %s\n%s", resp.Status, body)
	}
	for _, p := range []string{"/", "/terminals", "/terminals/" + id, resp.Header.Get("Location"), "/exemptions", "/events", "/audit"} {
		_, body := c.get(p)
		for _, raw := range []string{"<script>alert", "<img src=x", "<iframe"} {
			if strings.Contains(body, raw) {
				t.Errorf("%s shows %q unescaped", p, raw)
			}
		}
	}
	_, body = c.get("/terminals/" + id)
	if !strings.Contains(body, "&lt;script&gt;alert(&#34;host&#34;)&lt;/script&gt;") {
		t.Error("the terminal page does not show the host name escaped")
	}
}

// TestExemptionLive: the exemption page's stream sends a new status block
// when the agent reports the exemption applied.
func TestExemptionLive(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	id := e.terminal("term-01", "4C530001230815117432", false)
	c := e.mustSignIn(admin)
	resp, body := c.post("/exemptions", url.Values{
		"terminal": {id}, "device": {"0781:5581:4C530001230815117432"}, "duration": {"1h"}, "reason": {"minutes"}, "ticket": {"INC-1"},
	}, true)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("issue: %s\n%s", resp.Status, body)
	}
	exID := strings.TrimPrefix(strings.Split(resp.Header.Get("Location"), "?")[0], "/exemptions/")
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/exemptions/"+exID+"/live", nil)
	req.Header.Set("Accept", "text/event-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	live, err := c.hc.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	if ct := live.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream: %s %s", live.Status, ct)
	}
	events := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(live.Body)
		var data strings.Builder
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "data: "):
				data.WriteString(strings.TrimPrefix(line, "data: "))
			case line == "" && data.Len() > 0:
				events <- data.String()
				data.Reset()
			}
		}
		close(events)
	}()
	first := <-events
	if !strings.Contains(first, `data-phase="issued"`) {
		t.Fatalf("first block: %s", first)
	}
	// The agent reports it applied.
	ev := &mnguardv1.Event{Seq: 1, Time: timestamppb.New(e.clock.Now()), Type: "media.exemption_applied", Severity: mnguardv1.Severity_SEVERITY_WARNING,
		Message: "sdb is writable", Attributes: map[string]string{"exemption_id": exID, "device": "sdb"}}
	data, _ := proto.Marshal(ev)
	sent := time.Now()
	if _, err := e.st.SaveReport(context.Background(), store.Report{TerminalID: id, ReceivedAt: e.clock.Now(), Events: []store.Event{{
		Seq: 1, Time: e.clock.Now(), Type: ev.Type, Severity: int32(ev.Severity), Message: ev.Message, Data: data,
	}}}); err != nil {
		t.Fatal(err)
	}
	e.console.Changed(id)
	select {
	case block := <-events:
		if !strings.Contains(block, `data-phase="applied"`) {
			t.Fatalf("after the agent's event: %s", block)
		}
		if d := time.Since(sent); d > time.Second {
			t.Errorf("the page learned of it after %s, want within 1s", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no new block within 3s of the agent's event")
	}
}

// TestChart: the overview's chart has a bar per day with history.
func TestChart(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	ctx := context.Background()
	today := e.clock.Now().In(e.console.cfg.Location)
	for i, d := range []store.ComplianceDay{{Compliant: 8, NonCompliant: 2}, {Compliant: 9, Stale: 1}} {
		d.Day = today.AddDate(0, 0, -i).Format(time.DateOnly)
		d.Failing = map[string]int{}
		if err := e.st.SaveComplianceDay(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	c := e.mustSignIn(admin)
	_, body := c.get("/")
	if n := strings.Count(body, `class="seg-compliant"`); n != 2 {
		t.Errorf("%d compliant segments, want 2", n)
	}
	if n := strings.Count(body, `class="seg-non-compliant"`) + strings.Count(body, `class="seg-stale"`); n != 2 {
		t.Errorf("%d other segments, want 2", n)
	}
}

// TestRoutesMatchTable: every route of the authorization table is served
// by its own handler, and every handler's route is in the table.
func TestRoutesMatchTable(t *testing.T) {
	e := newEnv(t)
	table := map[string]bool{}
	for _, r := range authz.Routes() {
		table[r] = true
		method, path, _ := strings.Cut(r, " ")
		path = strings.NewReplacer("{id}", "x", "{name}", "x", "{file...}", "style.css", "{$}", "").Replace(path)
		req := httptest.NewRequest(method, path, nil)
		if _, pattern := e.console.mux.Handler(req); pattern != r {
			t.Errorf("%s %s is served by %q, want the table's %q", method, path, pattern, r)
		}
	}
	for _, p := range e.console.patterns {
		if !table[p] {
			t.Errorf("route %q is registered but not in the authorization table", p)
		}
	}
}

// FuzzSafeNext: whatever a sign-in link carries, the redirect stays on this
// site.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/terminals?state=stale", "//evil.example/", "/\\evil", "https://evil.example", "/\r\nSet-Cookie: x", "javascript:alert(1)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := safeNext(s)
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") ||
			strings.HasPrefix(got, "/\\") || strings.ContainsAny(got, "\r\n") {
			t.Fatalf("safeNext(%q) = %q: not a path on this site", s, got)
		}
	})
}

// FuzzConsoleQuery: the list pages' query parameters are either refused or
// give a filter the store accepts.
func FuzzConsoleQuery(f *testing.F) {
	for _, s := range []string{"state=stale&check=media&sort=last_seen&dir=desc&page=3&size=25", "q=%25_%5C", "page=0", "size=7&dir=up", "state=%3Cb%3E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		filter, ferr := terminalFilter(q)
		page, size, perr := paging(q)
		if ferr != nil || perr != nil {
			return
		}
		if filter.State != "" && !store.ValidComplianceState(filter.State) || filter.FailingCheck != "" && !store.ValidCheck(filter.FailingCheck) ||
			!store.ValidSort(filter.Sort) || page < 1 || page > maxPage || size < 1 || size > 200 {
			t.Fatalf("accepted %q as %+v page %d size %d", raw, filter, page, size)
		}
	})
}

// TestUnlistedRouteRefused: a handler registered for a route the
// authorization table does not list is refused to everyone, admins too.
func TestUnlistedRouteRefused(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	ran := false
	e.console.handle("GET /not-in-the-table", func(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
		ran = true
		return nil
	})
	c := e.mustSignIn(admin)
	if resp, _ := c.get("/not-in-the-table"); resp.StatusCode != http.StatusForbidden || ran {
		t.Errorf("unlisted route: %s, handler ran: %v", resp.Status, ran)
	}
}

// TestLiveStreamEndsWithSession: signing out ends the exemption page's
// stream too.
func TestLiveStreamEndsWithSession(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	id := e.terminal("term-01", "SN1", false)
	c := e.mustSignIn(admin)
	resp, _ := c.post("/exemptions", url.Values{"terminal": {id}, "device": {"0781:5581:SN1"}, "duration": {"1h"}, "reason": {"r"}, "ticket": {"t"}}, true)
	exID := strings.TrimPrefix(strings.Split(resp.Header.Get("Location"), "?")[0], "/exemptions/")
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/exemptions/"+exID+"/live", nil)
	req.Header.Set("Accept", "text/event-stream")
	live, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	ended := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(live.Body)
		ended <- string(b)
	}()
	time.Sleep(200 * time.Millisecond)
	c.post("/signout", nil, true)
	e.console.Changed(id)
	select {
	case body := <-ended:
		if !strings.Contains(body, "event: done") {
			t.Errorf("the stream ended without saying so: %q", body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived its session by 5s")
	}
}

// TestShownOnce: the pages that show a secret once — right after the POST
// that made it, never again — render it.
func TestShownOnce(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	id := e.terminal("term-01", "SN1", false)
	c := e.mustSignIn(admin)
	ch, err := exemption.NewChallenge(&mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "SN1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// An offline login code needs a user who confirmed the enrollment
	// (issue 11): sato confirms, as at a first login.
	confirm := func() {
		resp, body := c.post("/users/offline-code", url.Values{"terminal": {id}, "user": {"sato"}, "challenge": {"1234-5678"}}, true)
		if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "not confirmed") || strings.Contains(body, `data-once="offline-code"`) {
			t.Errorf("offline code for pending sato: %s\n%.2000s", resp.Status, body)
		}
		if _, err := e.st.AcceptStep(t.Context(), store.StepUpdate{Name: "sato", LastStep: 1, Confirm: true, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		path   string
		form   url.Values
		once   string
		before func()
	}{
		{"/users", url.Values{"name": {"sato"}}, `data-once="secret"`, nil},
		{"/users/sato/reset", nil, `data-once="secret"`, nil},
		{"/users/sato/recovery-codes", nil, `data-once="recovery"`, nil},
		{"/users/offline-code", url.Values{"terminal": {id}, "user": {"sato"}, "challenge": {"1234-5678"}}, `data-once="offline-code"`, confirm},
		{"/exemptions/offline", url.Values{"terminal": {id}, "challenge": {exemption.Format(ch.Text)}, "reason": {"r"}, "ticket": {"t"}}, `data-once="offline-code"`, nil},
		{"/tokens", url.Values{"ttl": {"1h"}, "uses": {"2"}}, `data-once="token"`, nil},
		{"/operators", url.Values{"name": {"kansa"}, "role": {"auditor"}, "password": {"a long password"}, "password2": {"a long password"}}, `data-once="secret"`, nil},
		{"/operators/kansa/reset-totp", nil, `data-once="secret"`, nil},
		{"/operators/kansa/tokens", url.Values{"ttl": {"24h"}}, `data-once="token"`, nil},
	} {
		if tt.before != nil {
			tt.before()
		}
		resp, body := c.post(tt.path, tt.form, true)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, tt.once) {
			t.Errorf("POST %s: %s, shows %s: %v\n%.2000s", tt.path, resp.Status, tt.once, strings.Contains(body, tt.once), body)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("POST %s: Cache-Control %q, want no-store", tt.path, resp.Header.Get("Cache-Control"))
		}
	}
}
