package web

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
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

// networkPolicy shows the collector's network policy, read through the
// admin service as the operator.
func (s *Server) networkPolicy(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	v := netPolicyView{}
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
	}
	counts, err := s.cfg.Store.CountCompliance(r.Context())
	if err != nil {
		return err
	}
	v.Failing = counts.Failing[store.CheckNetwork]
	return s.render(w, c, http.StatusOK, "network_policy", v)
}
