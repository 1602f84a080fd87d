package web

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// brokenNetwork makes a posture whose network section has findings: a
// connection outside the policy by a process, and a phone tethered over
// USB that enforcement cut off; enforcement asked for but not in place.
func brokenNetwork(at time.Time) func(*mnguardv1.Posture) {
	return func(p *mnguardv1.Posture) {
		n := p.Network
		n.Findings = []*mnguardv1.NetworkFinding{
			{Id: "socket:tcp:203.0.113.7:443", Kind: "socket", Detail: "tcp 192.0.2.10:50312 → 203.0.113.7:443 established",
				Process: "curl<script>", Pid: 4242, User: "taro", Address: "203.0.113.7:443", FirstSeen: timestamppb.New(at.Add(-90 * time.Second))},
			{Id: "usb_adapter:usb0", Kind: "usb_adapter", Detail: "usb0: RNDIS phone (usb ancestor 1-2)", Interface: "usb0",
				FirstSeen: timestamppb.New(at.Add(-time.Minute))},
		}
		n.Adapters = append(n.Adapters, &mnguardv1.NetworkAdapter{Name: "usb0", Kind: "usb", Reason: "usb ancestor 1-2, interface class e0/01/03 (RNDIS)",
			Addrs: []string{"192.168.42.129/24"}, Driver: "rndis_host", VendorId: "18d1", ProductId: "4ee7", State: "deauthorized"})
		n.Routes = append(n.Routes, &mnguardv1.NetworkRoute{Destination: "0.0.0.0/0", Gateway: "192.168.42.1", Interface: "usb0", Table: "main"})
		n.Enforcement = &mnguardv1.NetworkEnforcement{Requested: true, InPlace: false, Mechanism: "nftables table inet mnguard",
			Detail: "table inet mnguard missing", Repairs: 2, LastRepair: timestamppb.New(at.Add(-time.Minute))}
		n.ScanErrors = []string{"sockets: permission denied"}
	}
}

// TestTerminalNetwork: a terminal's page shows its network section — the
// findings with their process, the adapters, routes, DNS servers,
// enforcement and the policy version against the collector's — and the
// network check with its translated detail.
func TestTerminalNetwork(t *testing.T) {
	e := newEnv(t)
	auditor := e.addOperator("auditor", store.RoleAuditor)
	e.netVersion.Store("n-00c0ffee")
	broken := e.terminalWith("term-broken", "SN-1", false, brokenNetwork(e.clock.Now()))
	clean := e.terminal("term-clean", "SN-2", false)
	pending := e.terminalWith("term-pending", "SN-3", false, func(p *mnguardv1.Posture) { p.Network.PolicyVersion = "n-00000001" })
	old := e.terminalWith("term-old", "SN-4", false, func(p *mnguardv1.Posture) { p.Network = nil })
	c := e.mustSignIn(auditor)

	for _, lang := range i18n.Languages {
		c.post("/account/language", url.Values{"lang": {lang}}, true)
		resp, body := c.get("/terminals/" + broken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", lang, resp.Status)
		}
		detail := i18n.TS(lang, "check.network.findings", []string{"2", "socket", "tcp 192.0.2.10:50312 → 203.0.113.7:443 established"})
		for _, want := range []string{
			`data-check="network" data-status="fail"`, html.EscapeString(detail),
			`data-network-findings="2"`, html.EscapeString(i18n.T(lang, "network.findings_alert", 2)),
			`data-finding="socket:tcp:203.0.113.7:443" data-kind="socket"`, i18n.T(lang, "netfinding.socket"),
			"curl&lt;script&gt;", i18n.T(lang, "network.pid", 4242), i18n.T(lang, "network.user", "taro"), "203.0.113.7:443",
			`data-finding="usb_adapter:usb0" data-kind="usb_adapter"`, i18n.T(lang, "netfinding.usb_adapter"),
			`data-adapter="usb0" data-kind="usb"`, i18n.T(lang, "netkind.usb"), "(RNDIS)", "18d1:4ee7", i18n.T(lang, "netstate.deauthorized"),
			`data-route="0.0.0.0/0"`, "192.168.42.1", `data-dns="192.0.2.53"`, "/etc/resolv.conf",
			`data-enforcement="failing"`, "nftables table inet mnguard", "table inet mnguard missing", i18n.T(lang, "network.repairs", 2),
			`data-scan-error`, "sockets: permission denied",
			`data-policy-version="n-00c0ffee"`, `data-collector-version="n-00c0ffee"`,
			// First seen, in the console's zone.
			e.clock.Now().Add(-90 * time.Second).In(e.console.cfg.Location).Format("2006-01-02 15:04:05 MST"),
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the broken terminal's page lacks %q", lang, want)
			}
		}
		if strings.Contains(body, "curl<script>") {
			t.Errorf("%s: a process name is not escaped", lang)
		}

		_, body = c.get("/terminals/" + clean)
		for _, want := range []string{`data-check="network" data-status="pass"`, `data-enforcement="off"`,
			html.EscapeString(i18n.T(lang, "network.no_findings")), `data-adapter="eth0" data-kind="ethernet"`} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the clean terminal's page lacks %q", lang, want)
			}
		}
		if strings.Contains(body, "data-network-findings") || strings.Contains(body, "data-finding=") {
			t.Errorf("%s: the clean terminal shows findings", lang)
		}

		_, body = c.get("/terminals/" + pending)
		pend := i18n.TS(lang, "check.network.policy_pending", []string{"n-00c0ffee", "n-00000001"})
		for _, want := range []string{`data-check="network" data-status="unknown"`, html.EscapeString(pend),
			`data-policy-version="n-00000001"`, html.EscapeString(i18n.T(lang, "network.policy_differs"))} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the pending terminal's page lacks %q", lang, want)
			}
		}

		_, body = c.get("/terminals/" + old)
		for _, want := range []string{`data-check="network" data-status="fail"`, html.EscapeString(i18n.T(lang, "check.network.not_reported")),
			html.EscapeString(i18n.T(lang, "terminal.network_none")), "192.0.2.10/24"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the old agent's page lacks %q", lang, want)
			}
		}
	}

	// Thousands of routes: the page lists the first ones and says so.
	many := e.terminalWith("term-routes", "SN-5", false, func(p *mnguardv1.Posture) {
		for i := range maxShownRoutes + 50 {
			p.Network.Routes = append(p.Network.Routes, &mnguardv1.NetworkRoute{Destination: fmt.Sprintf("10.0.%d.0/24", i), Interface: "eth0"})
		}
	})
	_, body := c.get("/terminals/" + many)
	if n := strings.Count(body, "data-route="); n != maxShownRoutes || !strings.Contains(body, `data-hidden-routes="51"`) {
		t.Errorf("a terminal with %d routes: %d listed, hidden note %v", maxShownRoutes+51, n, strings.Contains(body, "data-hidden-routes"))
	}

	// The list filters on the failing network check.
	_, body = c.get("/terminals?check=network")
	if !strings.Contains(body, "term-broken") || !strings.Contains(body, "term-old") || strings.Contains(body, "term-clean") ||
		strings.Contains(body, "term-pending") {
		t.Errorf("terminals failing the network check: wrong list")
	}
}

// TestNetworkPolicyPage: every role reads the network policy page; it
// says when none is set, and shows the networks with their ports, the
// DNS servers, enforcement, the version and who changed it when.
func TestNetworkPolicyPage(t *testing.T) {
	e := newEnv(t)
	auditor := e.addOperator("auditor", store.RoleAuditor)
	helpdesk := e.addOperator("helpdesk", store.RoleHelpdesk)
	admin := e.addOperator("admin", store.RoleAdmin)
	broken := e.terminalWith("term-broken", "SN-1", false, brokenNetwork(e.clock.Now()))
	ca := e.mustSignIn(auditor)

	resp, body := ca.get("/network-policy")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("network policy page: %s\n%s", resp.Status, body)
	}
	if !strings.Contains(body, `data-netpolicy="none"`) || !strings.Contains(body, `href="/network-policy"`) {
		t.Errorf("no policy set: the page does not say so, or the menu lacks it\n%s", body)
	}
	// Without a policy only the findings that need none fail: the USB
	// adapter.
	if !strings.Contains(body, `data-failing="1"`) {
		t.Errorf("terminals failing without a policy: want 1")
	}

	ctx := api.WithOperator(context.Background(), &api.Operator{Name: "admin", Role: store.RoleAdmin, Via: "test"})
	set, err := e.console.cfg.Admin.SetNetworkPolicy(ctx, &mnguardv1.SetNetworkPolicyRequest{Policy: &mnguardv1.NetworkPolicy{
		Networks: []*mnguardv1.AllowedNetwork{
			{Cidr: "198.51.100.0/24"},
			{Cidr: "2001:db8::/32", Ports: []*mnguardv1.PortRange{{Protocol: "tcp", First: 443, Last: 443}, {Protocol: "udp", First: 53, Last: 53},
				{Protocol: "tcp", First: 8000, Last: 8100}}},
		},
		DnsServers: []string{"198.51.100.53"},
		Enforce:    true,
	}})
	if err != nil {
		t.Fatalf("set the network policy: %v", err)
	}
	version := set.GetPolicy().GetVersion()
	e.netVersion.Store(version)
	if err := e.eval.EvaluateAll(context.Background()); err != nil {
		t.Fatal(err)
	}

	for _, o := range []operator{auditor, helpdesk, admin} {
		c := ca
		if o.name != auditor.name {
			c = e.mustSignIn(o)
		}
		for _, lang := range i18n.Languages {
			c.post("/account/language", url.Values{"lang": {lang}}, true)
			resp, body := c.get("/network-policy")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s, %s: %s", o.name, lang, resp.Status)
			}
			for _, want := range []string{
				`data-netpolicy="` + version + `"`, `data-enforce="true"`, html.EscapeString(i18n.T(lang, "netpolicy.enforce_on")),
				`data-network="198.51.100.0/24"`, html.EscapeString(i18n.T(lang, "netpolicy.all_ports")),
				`data-network="2001:db8::/32"`, "tcp/443, tcp/8000-8100, udp/53", // the canonical order
				`data-dns="198.51.100.53"`, "admin", set.GetPolicyVersion(),
				// The broken terminal fails, now for its socket as well.
				`data-failing="1"`, `href="/terminals?check=network"`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("%s, %s: the network policy page lacks %q", o.name, lang, want)
				}
			}
		}
	}
	if r := e.verdict(broken).Check(store.CheckNetwork); r.Detail != "check.network.findings" || r.Args[0] != "2" {
		t.Errorf("the broken terminal's network check with a policy: %+v", r)
	}
}

// verdict is the terminal's stored verdict.
func (e *env) verdict(id string) store.Compliance {
	e.t.Helper()
	c, err := e.st.TerminalCompliance(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// TestNetworkPolicyEdit: an admin changes the network policy through the
// form; malformed or nonsensical input is refused with the line and the
// reason, keeping what was typed; an edit that started from an older
// version is refused; other roles see no form and may not post.
func TestNetworkPolicyEdit(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	helpdesk := e.addOperator("helpdesk", store.RoleHelpdesk)
	auditor := e.addOperator("auditor", store.RoleAuditor)
	c := e.mustSignIn(admin)
	c.post("/account/language", url.Values{"lang": {"en"}}, true)

	_, body := c.get("/network-policy")
	if !strings.Contains(body, `id="network-policy-form"`) || !strings.Contains(body, `name="expected" value=""`) {
		t.Fatalf("the admin gets no edit form\n%s", body)
	}
	form := url.Values{"networks": {"# the segment\n198.51.100.0/24\n\n 2001:db8::/32@udp/53,tcp/443 \n"}, "dns": {"198.51.100.53"},
		"enforce": {"on"}, "expected": {""}}
	resp, _ := c.post("/network-policy", form, true)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/network-policy?done=network_policy_set" {
		t.Fatalf("set: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	got, err := e.console.cfg.Admin.GetNetworkPolicy(api.WithOperator(context.Background(), &api.Operator{Name: "admin", Role: store.RoleAdmin}),
		&mnguardv1.GetNetworkPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p := got.GetPolicy()
	if len(p.GetNetworks()) != 2 || p.GetNetworks()[1].GetCidr() != "2001:db8::/32" || len(p.GetNetworks()[1].GetPorts()) != 2 ||
		strings.Join(p.GetDnsServers(), ",") != "198.51.100.53" || !p.GetEnforce() || got.GetUpdatedBy() != "admin" {
		t.Fatalf("policy after the form: %v", got)
	}
	version := p.GetVersion()
	_, body = c.get("/network-policy?done=network_policy_set")
	for _, want := range []string{`data-done="network_policy_set"`, `data-netpolicy="` + version + `"`, `name="expected" value="` + version + `"`,
		"198.51.100.0/24\n2001:db8::/32@tcp/443,udp/53</textarea>", `name="enforce" checked`} {
		if !strings.Contains(body, want) {
			t.Errorf("after the change, the page lacks %q", want)
		}
	}

	// Refused input: the page again, with the line, the reason and what
	// was typed; nothing changes.
	for _, tt := range []struct {
		name, networks, dns string
		enforce             bool
		want                []string
	}{
		{"bad CIDR", "198.51.100.0/24\n198.51.100.0/33", "", false, []string{i18n.T("en", "netpolicy.form.bad_network", 2), "198.51.100.0/33"}},
		{"host bits set", "\n198.51.100.7/24", "", false, []string{i18n.T("en", "netpolicy.form.bad_network", 2), "198.51.100.7/24"}},
		{"bad port", "198.51.100.0/24@tcp/70000", "", false, []string{i18n.T("en", "netpolicy.form.bad_network", 1)}},
		{"bad DNS", "198.51.100.0/24", "198.51.100.53\nresolver.example", false, []string{i18n.T("en", "netpolicy.form.bad_dns", 2), "resolver.example"}},
		{"everything allowed", "0.0.0.0/0", "", false, []string{i18n.T("en", "netpolicy.form.bad_network", 1), "0.0.0.0/0"}},
		{"enforcement with no network", "# none yet", "", true, []string{i18n.T("en", "netpolicy.form.invalid")}},
		{"duplicate", "198.51.100.0/24\n198.51.100.0/24", "", false, []string{i18n.T("en", "netpolicy.form.invalid")}},
		{"hostile", "<script>alert(1)</script>", "", false, []string{"&lt;script&gt;alert(1)&lt;/script&gt;</textarea>"}},
	} {
		f := url.Values{"networks": {tt.networks}, "dns": {tt.dns}, "expected": {version}}
		if tt.enforce {
			f.Set("enforce", "on")
		}
		resp, body := c.post("/network-policy", f, true)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "data-form-error") {
			t.Errorf("%s: %s, want 400 with the form's error", tt.name, resp.Status)
			continue
		}
		for _, want := range tt.want {
			if !strings.Contains(body, html.EscapeString(want)) && !strings.Contains(body, want) {
				t.Errorf("%s: the refusal lacks %q", tt.name, want)
			}
		}
		if strings.Contains(body, "<script>alert(1)") {
			t.Errorf("%s: typed input is not escaped", tt.name)
		}
	}

	// An edit from an older version: refused, nothing saved.
	resp, body = c.post("/network-policy", url.Values{"networks": {"192.0.2.0/24"}, "expected": {"n-00000000"}}, true)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, html.EscapeString(i18n.T("en", "netpolicy.form.conflict"))) {
		t.Errorf("stale edit: %s", resp.Status)
	}
	if got, _ := e.console.cfg.Admin.GetNetworkPolicy(api.WithOperator(context.Background(), &api.Operator{Name: "admin", Role: store.RoleAdmin}),
		&mnguardv1.GetNetworkPolicyRequest{}); got.GetPolicy().GetVersion() != version {
		t.Errorf("a refused edit changed the policy: %s, want %s", got.GetPolicy().GetVersion(), version)
	}
	// No CSRF token: refused.
	if resp, _ := c.post("/network-policy", url.Values{"networks": {"192.0.2.0/24"}}, false); resp.StatusCode != http.StatusForbidden {
		t.Errorf("without CSRF: %s", resp.Status)
	}

	// Other roles: no form, and a post is forbidden.
	for _, o := range []operator{helpdesk, auditor} {
		oc := e.mustSignIn(o)
		if _, body := oc.get("/network-policy"); strings.Contains(body, `id="network-policy-form"`) || !strings.Contains(body, `data-netpolicy="`+version+`"`) {
			t.Errorf("%s: sees the edit form, or not the policy", o.name)
		}
		if resp, _ := oc.post("/network-policy", url.Values{"networks": {"192.0.2.0/24"}, "expected": {version}}, true); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s may post the network policy: %s", o.name, resp.Status)
		}
	}
}

func TestParsePolicyForm(t *testing.T) {
	for _, tt := range []struct {
		networks, dns string
		enforce       bool
		want          string // the networks in the CLI's form, or "error"
	}{
		{"", "", false, ""},
		{"198.51.100.0/24", "", true, "198.51.100.0/24"},
		{"  # comment\r\n2001:db8::/32@tcp/443\r\n198.51.100.0/24\n", "198.51.100.53\r\n2001:db8::53", false, "198.51.100.0/24 2001:db8::/32@tcp/443"},
		{"198.51.100.0/24@udp/53,tcp/8000-8100", "", false, "198.51.100.0/24@tcp/8000-8100,udp/53"},
		{"198.51.100.1/24", "", false, "error"},
		{"198.51.100.0/24 192.0.2.0/24", "", false, "error"}, // two on one line
		{"", "", true, "error"},
		{"198.51.100.0/24", "198.51.100.53/32", false, "error"},
		{"::/0", "", false, "error"},
		{strings.Repeat("198.51.100.0/24\n", netpolicy.MaxNetworks+1), "", false, "error"},
	} {
		p, err := parsePolicyForm(tt.networks, tt.dns, tt.enforce)
		if tt.want == "error" {
			if err == nil {
				t.Errorf("parsePolicyForm(%q, %q, %v) accepted", tt.networks, tt.dns, tt.enforce)
			}
			continue
		}
		if err != nil {
			t.Errorf("parsePolicyForm(%q, %q, %v): %v", tt.networks, tt.dns, tt.enforce, err)
			continue
		}
		var nets []string
		for _, n := range p.Networks {
			nets = append(nets, n.String())
		}
		if got := strings.Join(nets, " "); got != tt.want || p.Enforce != tt.enforce {
			t.Errorf("parsePolicyForm(%q) = %q (enforce %v), want %q", tt.networks, got, p.Enforce, tt.want)
		}
	}
}

// FuzzPolicyForm: whatever the form holds, parsing never panics, and
// what it accepts the collector accepts too, and shows in the form again
// as the same policy.
func FuzzPolicyForm(f *testing.F) {
	f.Add("198.51.100.0/24\n2001:db8::/32@tcp/443,udp/53", "198.51.100.53", true)
	f.Add("# c\n\n10.0.0.0/8@tcp/1-65535", "::1\n2001:db8::53", false)
	f.Add("198.51.100.0/24@", "", false)
	f.Add("1.2.3.4/32@tcp/0", "fe80::1%eth0", false)
	f.Fuzz(func(t *testing.T, networks, dns string, enforce bool) {
		p, err := parsePolicyForm(networks, dns, enforce)
		if err != nil {
			return
		}
		wire := p.Proto()
		back, err := netpolicy.FromProto(wire)
		if err != nil {
			t.Fatalf("accepted %q / %q, but the collector refuses it: %v", networks, dns, err)
		}
		form := formOf(wire)
		again, err := parsePolicyForm(form.Networks, form.DNS, form.Enforce)
		if err != nil {
			t.Fatalf("the form of an accepted policy is refused: %v\n%s", err, form.Networks)
		}
		if again.ComputeVersion() != back.Version || form.Expected != back.Version {
			t.Fatalf("round trip changed the policy: %s, %s, %s", again.ComputeVersion(), back.Version, form.Expected)
		}
	})
}

// BenchmarkTerminalPageNetwork renders the page of a terminal whose
// network section is as large as the collector accepts (256 adapters,
// 4,096 routes, 1,024 findings, 256 DNS servers), through the console's
// handler (session and rendering included, TLS not), and reports the
// page's size.
func BenchmarkTerminalPageNetwork(b *testing.B) {
	e := newEnv(b)
	admin := e.addOperator("bench-admin", store.RoleAdmin)
	e.netVersion.Store("n-00c0ffee")
	now := e.clock.Now()
	id := e.terminalWith("term-huge", "SN-1", false, func(p *mnguardv1.Posture) {
		n := p.Network
		n.PolicyVersion = "n-00c0ffee"
		for i := range 256 {
			n.Adapters = append(n.Adapters, &mnguardv1.NetworkAdapter{Name: fmt.Sprintf("veth%d", i), Kind: "virtual", Reason: "sysfs virtual/net",
				Addrs: []string{fmt.Sprintf("10.%d.%d.1/24", i/256, i%256), fmt.Sprintf("2001:db8:%x::1/64", i)}, Up: true})
		}
		for i := range 4096 {
			n.Routes = append(n.Routes, &mnguardv1.NetworkRoute{Destination: fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), Gateway: "192.0.2.1",
				Interface: "eth0", Table: "main"})
		}
		for i := range 1024 {
			n.Findings = append(n.Findings, &mnguardv1.NetworkFinding{Id: fmt.Sprintf("socket:%d", i), Kind: "socket",
				Detail: fmt.Sprintf("tcp 192.0.2.10:%d → 203.0.113.7:443 established", 30000+i), Process: "curl", Pid: uint32(1000 + i),
				User: "taro", Address: "203.0.113.7:443", FirstSeen: timestamppb.New(now)})
		}
		for i := range 256 {
			n.DnsServers = append(n.DnsServers, &mnguardv1.DnsServer{Address: fmt.Sprintf("192.0.2.%d", i), Source: "/etc/resolv.conf"})
		}
	})
	c := e.mustSignIn(admin)
	u, _ := url.Parse(e.srv.URL)
	cookies := c.hc.Jar.Cookies(u)
	h := e.console.Handler()
	var size int
	b.ResetTimer()
	for range b.N {
		req := httptest.NewRequest(http.MethodGet, "https://"+u.Host+"/terminals/"+id, nil)
		for _, ck := range cookies {
			req.AddCookie(ck)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET: %d", rec.Code)
		}
		size = rec.Body.Len()
		e.clock.Add(10 * time.Millisecond)
	}
	b.ReportMetric(float64(size)/1024, "KiB/page")
}
