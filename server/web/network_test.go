package web

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

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

	// The list filters on the failing network check.
	_, body := c.get("/terminals?check=network")
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
