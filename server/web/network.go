package web

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// networkView is the network section of a terminal's page: what the agent
// reported, and the collector's network policy version to compare with.
type networkView struct {
	*mnguardv1.NetworkPosture
	// Collector is the version of the collector's network policy; "" when
	// it holds none.
	Collector string
}

// Current reports whether the agent holds the collector's network policy
// (or neither has one).
func (n networkView) Current() bool { return n.GetPolicyVersion() == n.Collector }

// maxShownRoutes bounds the routes a terminal's page lists: an agent may
// report thousands, and every route that breaks the policy is a finding,
// listed in full.
const maxShownRoutes = 200

// ShownRoutes are the routes the page lists.
func (n networkView) ShownRoutes() []*mnguardv1.NetworkRoute {
	r := n.GetRoutes()
	return r[:min(len(r), maxShownRoutes)]
}

// HiddenRoutes is how many routes the page leaves out.
func (n networkView) HiddenRoutes() int { return max(len(n.GetRoutes())-maxShownRoutes, 0) }

// networkPolicyVersion is the version of the network policy the collector
// pushes, "" for none.
func (s *Server) networkPolicyVersion() string {
	if f := s.cfg.Compliance.NetworkPolicyVersion; f != nil {
		return f()
	}
	return ""
}

// netPolicyView is the network policy page's data.
type netPolicyView struct {
	// Unavailable: the admin service does not offer the network policy.
	Unavailable bool
	Policy      *mnguardv1.NetworkPolicy
	Networks    []netRow
	UpdatedAt   time.Time
	UpdatedBy   string
	// PolicyVersion is the version of the whole policy pushed to agents.
	PolicyVersion string
	// Failing counts the active terminals failing the network check.
	Failing int
	// Form is the edit form (shown to admins).
	Form *policyForm
}

// netRow is one allowed network, its ports as "tcp/443, udp/53"; Ports is
// empty when every port is allowed.
type netRow struct {
	CIDR  string
	Ports string
}

// portsText is a network's port ranges as the CLI writes them, e.g.
// "tcp/443, udp/53, tcp/8000-8100".
func portsText(ps []*mnguardv1.PortRange) string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		s := p.GetProtocol() + "/" + strconv.FormatUint(uint64(p.GetFirst()), 10)
		if p.GetLast() != p.GetFirst() {
			s += "-" + strconv.FormatUint(uint64(p.GetLast()), 10)
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// policyForm is the admins' edit form of the network policy: networks one
// a line in the CLI's form ("198.51.100.0/24", "2001:db8::/32@tcp/443"),
// DNS servers one a line, enforcement, and the version the edit started
// from (the change is refused if another one came first).
type policyForm struct {
	Networks string
	DNS      string
	Enforce  bool
	Expected string
	// Error says why the edit was refused, in the page's language;
	// ErrorDetail is the parser's or the collector's message.
	Error, ErrorDetail string
}

// formOf is the edit form filled with the policy in force (nil: none).
func formOf(p *mnguardv1.NetworkPolicy) *policyForm {
	f := &policyForm{Enforce: p.GetEnforce(), Expected: p.GetVersion()}
	var nets []string
	for _, n := range p.GetNetworks() {
		s := n.GetCidr()
		if len(n.GetPorts()) > 0 {
			s += "@" + strings.ReplaceAll(portsText(n.GetPorts()), " ", "")
		}
		nets = append(nets, s)
	}
	f.Networks = strings.Join(nets, "\n")
	f.DNS = strings.Join(p.GetDnsServers(), "\n")
	return f
}

// formLines are the items of a textarea: one a line, trimmed; empty lines
// and lines starting with '#' left out. Each keeps its line number.
func formLines(s string) (lines []string, nums []int) {
	for i, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines, nums = append(lines, l), append(nums, i+1)
	}
	return lines, nums
}

// formError is a refusal of the edit form: a catalogue key whose first
// argument is the line, and the parser's message.
type formError struct {
	key  string
	line int
	err  error
}

func (e *formError) Error() string { return fmt.Sprintf("%s: line %d: %v", e.key, e.line, e.err) }

// parsePolicyForm reads the edit form into a validated network policy
// (canonical order; the collector fills its version and addresses).
func parsePolicyForm(networks, dns string, enforce bool) (*netpolicy.Policy, error) {
	p := &netpolicy.Policy{Enforce: enforce}
	lines, nums := formLines(networks)
	if len(lines) > netpolicy.MaxNetworks {
		return nil, &formError{key: "netpolicy.form.bad_network", line: nums[netpolicy.MaxNetworks],
			err: fmt.Errorf("more than %d networks", netpolicy.MaxNetworks)}
	}
	for i, l := range lines {
		n, err := netpolicy.ParseNetwork(l)
		if err != nil {
			return nil, &formError{key: "netpolicy.form.bad_network", line: nums[i], err: err}
		}
		p.Networks = append(p.Networks, n)
	}
	lines, nums = formLines(dns)
	if len(lines) > netpolicy.MaxDNS {
		return nil, &formError{key: "netpolicy.form.bad_dns", line: nums[netpolicy.MaxDNS],
			err: fmt.Errorf("more than %d DNS servers", netpolicy.MaxDNS)}
	}
	for i, l := range lines {
		a, err := netpolicy.ParseDNS(l)
		if err != nil {
			return nil, &formError{key: "netpolicy.form.bad_dns", line: nums[i], err: err}
		}
		p.DNS = append(p.DNS, a)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// networkPolicy shows the collector's network policy, read through the
// admin service as the operator.
func (s *Server) networkPolicy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	return s.renderPolicy(w, r, c, http.StatusOK, nil)
}

// setNetworkPolicy replaces the network policy with the edit form's,
// through the admin service as the operator (who must be an admin); a
// refused edit shows the form again with what was typed and why.
func (s *Server) setNetworkPolicy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	form := &policyForm{Networks: f.Get("networks"), DNS: f.Get("dns"), Enforce: f.Get("enforce") == "on", Expected: f.Get("expected")}
	p, err := parsePolicyForm(form.Networks, form.DNS, form.Enforce)
	if err != nil {
		var fe *formError
		if errors.As(err, &fe) {
			form.Error, form.ErrorDetail = i18n.T(c.lang, fe.key, fe.line), fe.err.Error()
		} else {
			form.Error, form.ErrorDetail = i18n.T(c.lang, "netpolicy.form.invalid"), err.Error()
		}
		return s.renderPolicy(w, r, c, http.StatusBadRequest, form)
	}
	wire := p.Proto()
	wire.Version = ""
	_, err = s.cfg.Admin.SetNetworkPolicy(c.apiCtx(r.Context()), &mnguardv1.SetNetworkPolicyRequest{Policy: wire, ExpectedVersion: form.Expected})
	switch status.Code(err) {
	case codes.OK:
		http.Redirect(w, r, "/network-policy?done=network_policy_set", http.StatusSeeOther)
		return nil
	case codes.InvalidArgument:
		form.Error, form.ErrorDetail = i18n.T(c.lang, "netpolicy.form.invalid"), status.Convert(err).Message()
		return s.renderPolicy(w, r, c, http.StatusBadRequest, form)
	case codes.FailedPrecondition:
		form.Error, form.ErrorDetail = i18n.T(c.lang, "netpolicy.form.conflict"), status.Convert(err).Message()
		return s.renderPolicy(w, r, c, http.StatusConflict, form)
	}
	return err
}

// renderPolicy renders the network policy page with status; form, when
// not nil, is an edit to show again (refused), else admins get the policy
// in force to edit.
func (s *Server) renderPolicy(w http.ResponseWriter, r *http.Request, c *reqCtx, code int, form *policyForm) error {
	v := netPolicyView{Form: form}
	resp, err := s.cfg.Admin.GetNetworkPolicy(c.apiCtx(r.Context()), &mnguardv1.GetNetworkPolicyRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented:
		v.Unavailable = true
	case err != nil:
		return err
	default:
		v.Policy, v.PolicyVersion, v.UpdatedBy = resp.GetPolicy(), resp.GetPolicyVersion(), resp.GetUpdatedBy()
		if resp.GetUpdatedAt() != nil {
			v.UpdatedAt = resp.GetUpdatedAt().AsTime()
		}
		for _, n := range v.Policy.GetNetworks() {
			v.Networks = append(v.Networks, netRow{CIDR: n.GetCidr(), Ports: portsText(n.GetPorts())})
		}
		if v.Form == nil {
			v.Form = formOf(v.Policy)
		}
	}
	counts, err := s.cfg.Store.CountCompliance(r.Context())
	if err != nil {
		return err
	}
	v.Failing = counts.Failing[store.CheckNetwork]
	return s.render(w, c, code, "network_policy", v)
}
