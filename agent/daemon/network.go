package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mnguard/mnguard/agent/netcheck"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/limitread"
	"github.com/mnguard/mnguard/internal/netpolicy"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// collectorResolveEvery is how often the collector's host name is looked
// up again: its addresses are always allowed, also by the agent's own
// firewall rules.
const collectorResolveEvery = 5 * time.Minute

// collectorAddrs are the addresses the agent reaches the collector at:
// the configured host (its literal address, or what it resolves to) and
// the remote address of the live connection. Segment isolation always
// allows them.
type collectorAddrs struct {
	mu       sync.Mutex
	resolved []netip.Addr
	peer     netip.Addr
}

// get is the addresses, sorted, without duplicates.
func (c *collectorAddrs) get() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.resolved)
	if c.peer.IsValid() {
		out = append(out, c.peer)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// setResolved replaces the resolved addresses; it says whether they
// changed.
func (c *collectorAddrs) setResolved(addrs []netip.Addr) bool {
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(c.resolved, addrs) {
		return false
	}
	c.resolved = addrs
	return true
}

// setPeer records the remote address of the connection a report went
// through; it says whether it is new.
func (c *collectorAddrs) setPeer(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return false
	}
	a = a.Unmap().WithZone("")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peer == a {
		return false
	}
	c.peer = a
	return true
}

// literalCollector is the collector's address when HOST:PORT names it by
// address.
func literalCollector(hostport string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// resolveCollector looks the collector's host up: a literal address is
// itself; a name is resolved, within timeout.
func resolveCollector(ctx context.Context, hostport string, timeout time.Duration) ([]netip.Addr, error) {
	if a, ok := literalCollector(hostport); ok {
		return []netip.Addr{a}, nil
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("collector address %q: %w", hostport, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve collector %s: %w", host, err)
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap().WithZone("")
	}
	return addrs, nil
}

// resolveCollectors resolves every collector address of the list and
// returns the union, in list order without repeats. An address that does
// not resolve is left out and named in the error; the others still count.
func resolveCollectors(ctx context.Context, hostports []string, timeout time.Duration) ([]netip.Addr, error) {
	var (
		all  []netip.Addr
		errs []error
	)
	for _, hp := range hostports {
		addrs, err := resolveCollector(ctx, hp, timeout)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range addrs {
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	return all, errors.Join(errs...)
}

// newNetwork creates the segment-isolation manager.
func (d *Daemon) newNetwork() {
	nc := d.opts.Config.Network
	log := d.log.With("part", "network")
	for _, o := range nc.TestOverrides() {
		log.Warn("test-only setting in force: the network check does not read the system's own state", "setting", o)
	}
	plat := d.opts.Network
	if plat == nil {
		var resolv []string
		if nc.ResolvConf != "" {
			resolv = []string{nc.ResolvConf}
		}
		plat = netcheck.NewPlatform(netcheck.PlatformOptions{SysfsRoot: nc.SysfsRoot, ResolvConf: resolv, Logger: log})
	}
	enf := d.opts.Enforcer
	if enf == nil {
		var why string
		enf, why = newEnforcer(log)
		if enf == nil {
			log.Warn("network enforcement unavailable: a policy that asks for it is reported as not in place", "reason", why)
		}
	}
	// Every collector the agent may fail over to is allowed, not only the
	// first: literal addresses are known now, before any rule is applied.
	var literal []netip.Addr
	for _, s := range d.servers {
		if a, ok := literalCollector(s); ok {
			literal = append(literal, a)
		}
	}
	if len(literal) > 0 {
		d.collectorAddrs.setResolved(literal)
	}
	d.network = netcheck.New(netcheck.Options{
		Platform: plat, Enforcer: enf, Emit: d.Emit, OnChange: d.poke, Logger: log,
		Collector: d.collectorAddrs.get, Interval: d.interval, Now: d.opts.Now,
		StateFile: d.dir.Path(state.NetworkUSBCutFile),
	})
	d.loadNetworkPolicy()
}

// runNetwork runs the segment-isolation check until ctx ends, and keeps
// the collector's resolved addresses current.
func (d *Daemon) runNetwork(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { d.resolveLoop(ctx) })
	wg.Go(func() { d.probeNetwork(ctx) })
	if err := d.network.Run(ctx); err != nil {
		d.log.Error("network isolation check stopped", "err", err)
		d.noteError(fmt.Errorf("network check: %w", err))
	}
}

// resolveLoop looks the collector's name up at start and every
// collectorResolveEvery; new addresses are allowed at once (the policy is
// applied again).
func (d *Daemon) resolveLoop(ctx context.Context) {
	for {
		addrs, err := resolveCollectors(ctx, d.servers, 10*time.Second)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("collector address not resolved: only the other collectors' and the connection's own addresses are allowed", "err", err)
		}
		switch {
		case len(addrs) == 0:
		case d.collectorAddrs.setResolved(addrs):
			d.log.Info("collector addresses", "addrs", addrs)
			d.reapplyNetwork()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(collectorResolveEvery):
		}
	}
}

// notePeer records the collector's address a report went through.
func (d *Daemon) notePeer(addr net.Addr) {
	if addr != nil && d.collectorAddrs.setPeer(addr) {
		d.log.Debug("collector reached at", "addr", addr)
		d.reapplyNetwork()
	}
}

// reapplyNetwork hands the network policy in force to the manager again,
// after the collector's addresses changed.
func (d *Daemon) reapplyNetwork() {
	d.mu.Lock()
	p, ok := d.netPolicy, d.netPolicySet
	d.mu.Unlock()
	if ok && d.network != nil {
		d.network.SetPolicy(p)
	}
}

// applyNetworkPolicy validates the network policy the collector pushed and
// puts it in force. A policy the agent cannot validate is refused: the one
// before stays in force (fail closed: enforcement is not dropped by a
// policy the agent does not understand), an alert event says so, and
// status shows it. The same policy is applied once.
func (d *Daemon) applyNetworkPolicy(m *mnguardv1.NetworkPolicy) {
	key := policyKey(m)
	d.mu.Lock()
	if d.netPolicySeen && d.netPolicyKey == key {
		d.mu.Unlock()
		return
	}
	d.netPolicySeen, d.netPolicyKey = true, key
	d.mu.Unlock()

	p, err := netpolicy.FromProto(m)
	if err != nil {
		d.mu.Lock()
		d.netPolicyErr = fmt.Sprintf("%s (version %q)", err, m.GetVersion())
		kept := "none"
		if d.netPolicy != nil {
			kept = d.netPolicy.Version
		}
		d.mu.Unlock()
		d.log.Error("network policy refused; the one before stays in force", "version", m.GetVersion(), "kept", kept, "err", err)
		d.Emit("network.policy_refused", mnguardv1.Severity_SEVERITY_ALERT,
			fmt.Sprintf("network policy %q refused, %s stays in force: %v", m.GetVersion(), kept, err),
			map[string]string{"version": m.GetVersion(), "kept": kept, "error": err.Error()})
		return
	}
	d.mu.Lock()
	d.netPolicy, d.netPolicySet, d.netPolicyErr = p, true, ""
	d.mu.Unlock()
	d.saveNetworkPolicy(m)
	version := ""
	if p != nil {
		version = p.Version
	}
	d.log.Info("network policy applied", "version", version, "enforce", p != nil && p.Enforce)
	if d.network != nil {
		d.network.SetPolicy(p)
	}
	d.statusChanged()
}

// networkPosture is the manager's latest scan, and notes it in status.
func (d *Daemon) networkPosture() *mnguardv1.NetworkPosture {
	if d.network == nil {
		return nil
	}
	np := d.network.Posture()
	d.mu.Lock()
	d.st.Network = networkStatus(np, d.netPolicyErr)
	d.mu.Unlock()
	return np
}

// networkStatus is status.json's network section.
func networkStatus(np *mnguardv1.NetworkPosture, policyErr string) *state.NetworkStatus {
	if np == nil && policyErr == "" {
		return nil
	}
	e := np.GetEnforcement()
	st := &state.NetworkStatus{
		PolicyVersion: np.GetPolicyVersion(), PolicyError: policyErr,
		EnforceRequested: e.GetRequested(), EnforceInPlace: e.GetInPlace(), Mechanism: e.GetMechanism(), EnforceDetail: e.GetDetail(),
		Repairs: e.GetRepairs(), ScanErrors: slices.Clone(np.GetScanErrors()), Findings: len(np.GetFindings()),
	}
	if np.GetLastScan() != nil {
		st.LastScan = np.GetLastScan().AsTime()
	}
	for _, f := range np.GetFindings() {
		if len(st.FirstFindings) == state.MaxStatusFindings {
			break
		}
		nf := state.NetworkFinding{Kind: f.GetKind(), Detail: f.GetDetail(), Process: f.GetProcess(), PID: f.GetPid(), User: f.GetUser()}
		if f.GetFirstSeen() != nil {
			nf.FirstSeen = f.GetFirstSeen().AsTime()
		}
		st.FirstFindings = append(st.FirstFindings, nf)
	}
	return st
}

// zeroScanClock clears what changes at every scan without anything having
// changed: the scan's time and the count of sockets seen (each finding is
// its own entry). c is a copy.
func zeroScanClock(c *mnguardv1.Posture) {
	if n := c.GetNetwork(); n != nil {
		n.LastScan = (*timestamppb.Timestamp)(nil)
		n.SocketsTotal = 0
	}
}

// policyKey identifies a pushed network policy whole: its version does
// not cover the collector's addresses.
func policyKey(m *mnguardv1.NetworkPolicy) string {
	if m == nil {
		return "none"
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return "p:" + string(b)
}

// saveNetworkPolicy keeps the network policy accepted (nil: none) in the
// state directory for the next start.
func (d *Daemon) saveNetworkPolicy(m *mnguardv1.NetworkPolicy) {
	if d.dir == "" {
		return // a daemon of tests, without a state directory
	}
	path := d.dir.Path(state.NetworkPolicyFile)
	if m == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log.Error("network policy withdrawn but its saved copy stays", "path", path, "err", err)
		}
		return
	}
	b, err := proto.Marshal(m)
	if err == nil {
		err = pki.WriteFileAtomic(path, b, 0o600)
	}
	if err != nil {
		d.log.Error("network policy not saved: a restart without the collector starts without it", "path", path, "err", err)
	}
}

// maxSavedPolicy bounds the saved network policy's file (the collector
// bounds the policy far below it).
const maxSavedPolicy = 1 << 20

// loadNetworkPolicy puts the network policy saved by the last run in
// force before the collector is reached: a terminal restarted while the
// collector is away (after a reboot its firewall rules are gone) is
// enforced again at once. The collector's push replaces it. A damaged
// file is reported and left: the check then runs without a policy until
// the collector sends one.
func (d *Daemon) loadNetworkPolicy() {
	if d.dir == "" {
		return
	}
	path := d.dir.Path(state.NetworkPolicyFile)
	b, err := limitread.File(path, maxSavedPolicy)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var m mnguardv1.NetworkPolicy
	if err == nil {
		err = proto.Unmarshal(b, &m)
	}
	var p *netpolicy.Policy
	if err == nil {
		p, err = netpolicy.FromProto(&m)
	}
	if err != nil {
		d.log.Error("saved network policy unusable: none is in force until the collector sends one", "path", path, "err", err)
		d.Emit("network.policy_refused", mnguardv1.Severity_SEVERITY_ALERT,
			fmt.Sprintf("the network policy saved on the terminal is unusable; none is in force until the collector sends one: %v", err),
			map[string]string{"version": "", "kept": "none", "error": err.Error(), "source": "saved"})
		return
	}
	d.mu.Lock()
	d.netPolicy, d.netPolicySet = p, true
	d.netPolicySeen, d.netPolicyKey = true, policyKey(&m)
	d.mu.Unlock()
	d.log.Info("network policy from the last run in force until the collector is reached", "version", p.Version, "enforce", p.Enforce)
	d.network.SetPolicy(p)
}
