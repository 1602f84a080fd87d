//go:build linux

package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mnguard/mnguard/agent/netcheck/nft"
	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"golang.org/x/sys/unix"
)

// TestApplyNetworkPolicy: the daemon puts a valid network policy in force
// and refuses one it cannot validate — the one before stays in force, one
// alert event says so (not one per push), status shows why — and a policy
// withdrawn is none. The real Linux platform scans; the real nftables
// enforcer works in a network namespace of the test's own.
func TestApplyNetworkPolicy(t *testing.T) {
	testenv.RequireRoot(t, "nftables in a network namespace")
	ns := fmt.Sprintf("mngd%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	sp, err := spool.OpenWithOptions(filepath.Join(t.TempDir(), "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := state.Dir(t.TempDir())
	newD := func() *Daemon {
		d := &Daemon{dir: dir, spool: sp, log: log, wake: make(chan struct{}, 1), statusKick: make(chan struct{}, 1), server: "192.0.2.1:8443", servers: []string{"192.0.2.1:8443"}}
		d.opts.Enforcer = nft.New(nft.Options{Logger: log, NetNS: fd})
		d.newNetwork()
		return d
	}
	d := newD()
	if got := d.collectorAddrs.get(); len(got) != 1 || got[0].String() != "192.0.2.1" {
		t.Errorf("collector addresses %v, want the literal 192.0.2.1", got)
	}

	valid := &mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24"}}, DnsServers: []string{"198.51.100.53"}}
	d.applyNetworkPolicy(valid)
	d.mu.Lock()
	v1, perr := d.netPolicy.Version, d.netPolicyErr
	d.mu.Unlock()
	if !strings.HasPrefix(v1, "n-") || perr != "" {
		t.Fatalf("valid policy: in force %q, error %q", v1, perr)
	}

	refusals := func() []*mnguardv1.Event {
		evs, err := sp.Pending(0)
		if err != nil {
			t.Fatal(err)
		}
		var out []*mnguardv1.Event
		for _, e := range evs {
			if e.GetType() == "network.policy_refused" {
				out = append(out, e)
			}
		}
		return out
	}
	for _, bad := range []struct {
		p    *mnguardv1.NetworkPolicy
		want string
	}{
		{&mnguardv1.NetworkPolicy{Version: "n-bad1", Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.1/24"}}}, "host bits set"},
		{&mnguardv1.NetworkPolicy{Version: "n-00000000", Networks: []*mnguardv1.AllowedNetwork{{Cidr: "203.0.113.0/24"}}}, "does not match its content"},
		{&mnguardv1.NetworkPolicy{Version: "n-bad3", Enforce: true}, "no allowed network"},
	} {
		before := len(refusals())
		d.applyNetworkPolicy(bad.p)
		d.applyNetworkPolicy(bad.p) // pushed again on a reconnection
		d.mu.Lock()
		inForce, perr := d.netPolicy.Version, d.netPolicyErr
		d.mu.Unlock()
		if inForce != v1 || !strings.Contains(perr, bad.want) {
			t.Errorf("policy %s: in force %q, error %q; want %s kept and an error saying %q", bad.p.GetVersion(), inForce, perr, v1, bad.want)
		}
		evs := refusals()
		if len(evs) != before+1 {
			t.Errorf("policy %s: %d network.policy_refused events, want one", bad.p.GetVersion(), len(evs)-before)
			continue
		}
		if e := evs[len(evs)-1]; e.GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT || e.GetAttributes()["kept"] != v1 || e.GetAttributes()["version"] != bad.p.GetVersion() {
			t.Errorf("policy %s: event %v %v", bad.p.GetVersion(), e.GetSeverity(), e.GetAttributes())
		}
	}
	if err := d.network.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	np := d.networkPosture()
	if np.GetPolicyVersion() != v1 {
		t.Errorf("the check scans under %q, want %s", np.GetPolicyVersion(), v1)
	}
	if d.st.Network == nil || d.st.Network.PolicyVersion != v1 || !strings.Contains(d.st.Network.PolicyError, "no allowed network") {
		t.Errorf("status network = %+v", d.st.Network)
	}

	// A restart (the collector away) starts with the policy accepted last.
	restarted := newD()
	restarted.mu.Lock()
	rp, rset := restarted.netPolicy, restarted.netPolicySet
	restarted.mu.Unlock()
	if rp == nil || rp.Version != v1 || !rset {
		t.Errorf("restarted with policy %v (set %v), want %s from the state directory", rp, rset, v1)
	}
	restarted.applyNetworkPolicy(valid) // the collector's push of the same: nothing new
	if n := len(refusals()); n != 3 {
		t.Errorf("%d refusals after the restart, want the 3 before", n)
	}

	// Withdrawn: none in force, the refusal forgotten, the saved copy gone.
	d.applyNetworkPolicy(nil)
	d.mu.Lock()
	p, set, perr := d.netPolicy, d.netPolicySet, d.netPolicyErr
	d.mu.Unlock()
	if p != nil || !set || perr != "" {
		t.Errorf("withdrawn: policy %v set %v error %q", p, set, perr)
	}
	if err := d.network.Scan(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v := d.networkPosture().GetPolicyVersion(); v != "" {
		t.Errorf("withdrawn: the check scans under %q", v)
	}
	if _, err := os.Stat(dir.Path(state.NetworkPolicyFile)); !os.IsNotExist(err) {
		t.Errorf("withdrawn: the saved copy: %v", err)
	}

	// A damaged copy: none in force, an alert.
	if err := os.WriteFile(dir.Path(state.NetworkPolicyFile), []byte("\x0a\xff\xff"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := newD()
	if damaged.netPolicySet || damaged.netPolicy != nil {
		t.Errorf("a damaged copy put %v in force", damaged.netPolicy)
	}
	evs := refusals()
	if len(evs) != 4 || evs[3].GetAttributes()["source"] != "saved" {
		t.Errorf("a damaged copy: refusals %d, last %v", len(evs), evs[len(evs)-1].GetAttributes())
	}
}
