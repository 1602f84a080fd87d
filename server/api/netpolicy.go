package api

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/netpolicy"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// AuditNetworkPolicySet is the audit action of a change of the network
// policy.
const AuditNetworkPolicySet = "network_policy.set"

// maxAuditDetail bounds the summary of a policy in its audit entry; a
// longer one ends with how many networks it left out.
const maxAuditDetail = 4096

// policyState is the policy in force: what agents get (Policy, its network
// policy with the collector's addresses) and who set the network policy
// when. It is never changed, only replaced whole.
type policyState struct {
	policy    *mnguardv1.Policy
	updatedAt time.Time
	updatedBy string
}

// currentPolicy is the Policy agents get now. Callers must not change it.
func (s *Services) currentPolicy() *mnguardv1.Policy { return s.state.Load().policy }

// NetworkPolicyVersion is the version of the network policy in force, ""
// while none is set. Agents report the version they apply; the compliance
// check compares.
func (s *Services) NetworkPolicyVersion() string {
	return s.state.Load().policy.GetNetwork().GetVersion()
}

// newPolicyState makes the state of the network policy np (nil: none) as
// stored, without the collector's addresses: it fills them in, checks the
// whole, and computes Policy.version.
func (s *Services) newPolicyState(np *mnguardv1.NetworkPolicy, at time.Time, by string) (*policyState, error) {
	p := &mnguardv1.Policy{ReportIntervalSeconds: uint32((s.cfg.ReportInterval + time.Second - 1) / time.Second)}
	if np != nil {
		m := proto.Clone(np).(*mnguardv1.NetworkPolicy)
		m.CollectorAddrs = nil
		for _, a := range s.cfg.CollectorAddrs {
			m.CollectorAddrs = append(m.CollectorAddrs, a.String())
		}
		v, err := netpolicy.FromProto(m)
		if err != nil {
			return nil, err
		}
		p.Network = v.Proto()
	}
	p.Version = policyVersion(p)
	return &policyState{policy: p, updatedAt: at, updatedBy: by}, nil
}

// CheckCollectorAddrs validates the collector's own addresses as the
// network policy carries them: unicast IP addresses without a zone, at
// most netpolicy.MaxCollector.
func CheckCollectorAddrs(addrs []netip.Addr) error {
	if len(addrs) > netpolicy.MaxCollector {
		return fmt.Errorf("%d collector addresses, at most %d", len(addrs), netpolicy.MaxCollector)
	}
	for _, a := range addrs {
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() {
			return fmt.Errorf("collector address %q: want a unicast IP address without a zone", a)
		}
	}
	return nil
}

// LoadNetworkPolicy reads the network policy from the store, so that
// agents get it from the first Subscribe on. The collector calls it once
// before it serves; a stored policy that no longer validates is an error
// (the collector does not start rather than push a policy agents refuse).
func (s *Services) LoadNetworkPolicy(ctx context.Context) error {
	stored, err := s.cfg.Store.NetworkPolicy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load network policy: %w", err)
	}
	np := &mnguardv1.NetworkPolicy{}
	if err := proto.Unmarshal(stored.Policy, np); err != nil {
		return fmt.Errorf("load network policy %s: %w", stored.Version, err)
	}
	if np.GetVersion() != stored.Version {
		return fmt.Errorf("load network policy: stored version %s, its content says %s", stored.Version, np.GetVersion())
	}
	st, err := s.newPolicyState(np, stored.UpdatedAt, stored.UpdatedBy)
	if err != nil {
		return fmt.Errorf("load network policy %s: %w", stored.Version, err)
	}
	s.setMu.Lock()
	defer s.setMu.Unlock()
	old := s.state.Swap(st)
	if old.policy.GetVersion() != st.policy.GetVersion() {
		s.hub.policyChanged()
	}
	return nil
}

// GetNetworkPolicy implements mnguardv1.AdminServiceServer: the network
// policy in force as agents get it, with the collector's addresses.
func (a *AdminService) GetNetworkPolicy(ctx context.Context, _ *mnguardv1.GetNetworkPolicyRequest) (*mnguardv1.GetNetworkPolicyResponse, error) {
	if _, err := OperatorFrom(ctx); err != nil {
		return nil, err
	}
	st := a.s.state.Load()
	return &mnguardv1.GetNetworkPolicyResponse{
		Policy: st.policy.GetNetwork(), UpdatedAt: ts(st.updatedAt), UpdatedBy: st.updatedBy, PolicyVersion: st.policy.GetVersion(),
	}, nil
}

// SetNetworkPolicy implements mnguardv1.AdminServiceServer: it validates the
// policy (netpolicy.FromProto), stores it with its audit entry, and pushes
// the new Policy to every connected agent at once. A set that changes
// nothing is stored and audited but pushes nothing.
func (a *AdminService) SetNetworkPolicy(ctx context.Context, req *mnguardv1.SetNetworkPolicyRequest) (*mnguardv1.SetNetworkPolicyResponse, error) {
	op, err := OperatorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetPolicy() == nil {
		return nil, status.Error(codes.InvalidArgument, "policy missing: send the whole network policy (networks, dns_servers, enforce)")
	}
	if err := checkString("expected_version", req.GetExpectedVersion(), maxPolicyVersionLen); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	// The collector fills version and collector_addrs itself.
	in := proto.Clone(req.GetPolicy()).(*mnguardv1.NetworkPolicy)
	in.Version, in.CollectorAddrs = "", nil
	np, err := netpolicy.FromProto(in)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	wire := np.Proto()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(wire)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode network policy: %v", err)
	}
	cfg := a.s.cfg
	// One set at a time, so that the state in force is the last stored.
	a.s.setMu.Lock()
	defer a.s.setMu.Unlock()
	now := cfg.Now()
	st, err := a.s.newPolicyState(wire, now, op.Name)
	if err != nil {
		// The policy is valid; the collector's own addresses are not.
		return nil, status.Errorf(codes.Internal, "network policy with the collector's addresses: %v", err)
	}
	before, found, err := cfg.Store.SetNetworkPolicy(ctx, store.NetworkPolicy{Policy: b, Version: wire.GetVersion(), UpdatedAt: now, UpdatedBy: op.Name},
		req.GetExpectedVersion(), func(before store.NetworkPolicy, found bool) store.AuditEntry {
			return a.entry(op, AuditNetworkPolicySet, wire.GetVersion(), networkPolicySummary(np, before.Version, found))
		})
	switch {
	case errors.Is(err, store.ErrConflict):
		inForce := "no network policy is set"
		if cur, err := cfg.Store.NetworkPolicy(ctx); err == nil {
			inForce = "version " + cur.Version + " is in force"
		}
		return nil, status.Errorf(codes.FailedPrecondition, "the network policy changed meanwhile: %s, not the expected %s; read it again and retry",
			inForce, req.GetExpectedVersion())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "store network policy: %v", err)
	}
	a.s.state.Store(st)
	changed := !found || before.Version != wire.GetVersion()
	if changed {
		a.s.hub.policyChanged()
		if cfg.NetworkPolicyChanged != nil {
			cfg.NetworkPolicyChanged()
		}
	}
	cfg.Logger.Info("network policy set", "operator", op.Name, "version", wire.GetVersion(), "previous", before.Version,
		"changed", changed, "networks", len(np.Networks), "dns_servers", len(np.DNS), "enforce", np.Enforce, "policy_version", st.policy.GetVersion())
	return &mnguardv1.SetNetworkPolicyResponse{Policy: st.policy.GetNetwork(), PolicyVersion: st.policy.GetVersion()}, nil
}

// networkPolicySummary is the audit detail of a set: the networks with
// their ports, the DNS servers, enforcement, and the version before and
// after.
func networkPolicySummary(p *netpolicy.Policy, before string, found bool) string {
	if !found {
		before = "none"
	}
	enforce := "off"
	if p.Enforce {
		enforce = "on"
	}
	dns := make([]string, len(p.DNS))
	for i, d := range p.DNS {
		dns[i] = d.String()
	}
	tail := fmt.Sprintf("; dns: %s; enforcement: %s; version %s → %s", orNone(dns), enforce, before, p.Version)
	if before == p.Version {
		tail += " (unchanged)"
	}
	var nets strings.Builder
	for i, n := range p.Networks {
		s := n.String()
		if i > 0 {
			s = ", " + s
		}
		if nets.Len()+len(s)+len(tail)+len("networks: ")+32 > maxAuditDetail {
			fmt.Fprintf(&nets, " … and %d more", len(p.Networks)-i)
			break
		}
		nets.WriteString(s)
	}
	if len(p.Networks) == 0 {
		nets.WriteString("none")
	}
	return "networks: " + nets.String() + tail
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
