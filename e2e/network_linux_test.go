package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// The segment the network tests build, in documentation ranges:
//
//	C (collector) 192.0.2.1 ── 192.0.2.2 T (terminal: the agent)
//	A (allowed)   198.51.100.1/24, 2001:db8:a::1/64 ── T .2, ::2
//	D (disallowed) 203.0.113.1/24, 2001:db8:d::1/64 ── T .2, ::2
//
// The collector's link is a point-to-point /32, so the terminal's only
// route to it is a host route: the collector is allowed without being in
// the policy's networks (the agent adds the address it reaches it at).
const (
	collectorIP = "192.0.2.1"
	terminalIP  = "192.0.2.2"
	allowedIP   = "198.51.100.1"
	allowedIP6  = "2001:db8:a::1"
	deniedIP    = "203.0.113.1"
	deniedIP6   = "2001:db8:d::1"
	allowedNet  = "198.51.100.0/24"
	allowedNet6 = "2001:db8:a::/64"
	allowedDNS  = "198.51.100.53"
	deniedDNS   = "203.0.113.53"
)

// segment is a terminal namespace running the real agent, a collector
// namespace running the real mnguard-server, an allowed and a disallowed
// peer.
type segment struct {
	term, coll, allowed, denied *netns
	c                           *collector
	a                           *agent
	id                          string
	// resolvConf is the file the agent reads as /etc/resolv.conf.
	resolvConf string
	// sysfs is the agent's sysfs root (network.sysfs_root).
	sysfs string
}

// requireNetTools fails (CI) or skips the test without root, iproute2 or
// nft.
func requireNetTools(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces")
	for tool, pkg := range map[string]string{"ip": "iproute2", "nft": "nftables"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found (apt-get install %s); CI must run this test", tool, pkg)
			}
			t.Skipf("%s not found (apt-get install %s)", tool, pkg)
		}
	}
}

// newSegment builds the namespaces and links, starts the collector in C
// with the given report interval, and enrolls an agent in T (not started:
// configure it first, then s.a.start).
func newSegment(t testing.TB, reportInterval string) *segment {
	t.Helper()
	requireNetTools(t)
	s := &segment{term: newNetns(t, "T"), coll: newNetns(t, "C"), allowed: newNetns(t, "A"), denied: newNetns(t, "D")}
	veth(t, s.term, "toC", s.coll, "toT")
	veth(t, s.term, "toA", s.allowed, "toT")
	veth(t, s.term, "toD", s.denied, "toT")
	s.term.ip(t, "addr", "add", terminalIP+"/32", "peer", collectorIP+"/32", "dev", "toC")
	s.coll.ip(t, "addr", "add", collectorIP+"/32", "peer", terminalIP+"/32", "dev", "toT")
	for _, l := range []struct {
		peer       *netns
		dev        string
		ip4, ip6   string
		termSuffix string
	}{{s.allowed, "toA", allowedIP, allowedIP6, ""}, {s.denied, "toD", deniedIP, deniedIP6, ""}} {
		termIP4 := l.ip4[:len(l.ip4)-1] + "2"
		termIP6 := l.ip6[:len(l.ip6)-1] + "2"
		s.term.ip(t, "addr", "add", termIP4+"/24", "dev", l.dev)
		s.term.ip(t, "-6", "addr", "add", termIP6+"/64", "dev", l.dev, "nodad")
		l.peer.ip(t, "addr", "add", l.ip4+"/24", "dev", "toT")
		l.peer.ip(t, "-6", "addr", "add", l.ip6+"/64", "dev", "toT", "nodad")
	}
	s.c = newCollectorAt(t, s.coll.name, collectorIP+":8443", collectorIP+":8444", "--report-interval", reportInterval)
	dir := t.TempDir()
	s.resolvConf = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(s.resolvConf, []byte("nameserver "+allowedDNS+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.a = newAgent(t, s.c, reportInterval)
	s.a.netns = s.term.name
	appendConfig(t, s.a, fmt.Sprintf("network:\n  resolv_conf: %s\n", s.resolvConf))
	if _, errOut, code := s.a.enroll(t, s.c, s.c.token(t, "1h", 1), s.c.pin); code != 0 {
		t.Fatalf("enroll from the terminal namespace: exit %d: %s", code, errOut)
	}
	s.id = s.a.terminalID(t)
	return s
}

// phoneRNDIS is the sysfs tree of a phone tethering over RNDIS
// (agent/netcheck's testdata): interface usb0 behind USB device 1-2.
const phoneRNDIS = "../agent/netcheck/testdata/sysfs/phone-rndis"

// usbTree copies the phone's sysfs tree for the agent (network.sysfs_root)
// and returns the path of the USB device's authorized attribute in it.
func (s *segment) usbTree(t *testing.T) (authorized string) {
	t.Helper()
	s.sysfs = filepath.Join(t.TempDir(), "sys")
	if out, err := exec.Command("cp", "-a", phoneRNDIS, s.sysfs).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", phoneRNDIS, err, out)
	}
	appendConfig(t, s.a, fmt.Sprintf("  sysfs_root: %s\n", s.sysfs))
	dev, err := filepath.EvalSymlinks(filepath.Join(s.sysfs, "class", "net", "usb0"))
	if err != nil {
		t.Fatal(err)
	}
	authorized = filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(dev))), "authorized")
	if b, err := os.ReadFile(authorized); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("%s: %q, %v; want 1", authorized, b, err)
	}
	return authorized
}

// plugPhone creates the phone's interface: a real interface usb0 in the
// terminal namespace (a tap: this kernel has no dummy driver), whose
// ifindex the sysfs tree then carries.
func (s *segment) plugPhone(t *testing.T) {
	t.Helper()
	s.term.ip(t, "tuntap", "add", "usb0", "mode", "tap")
	s.term.ip(t, "link", "set", "usb0", "up")
	idx := strings.TrimSpace(s.term.exec(t, "cat", "/sys/class/net/usb0/ifindex"))
	dev, err := filepath.EvalSymlinks(filepath.Join(s.sysfs, "class", "net", "usb0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "ifindex"), []byte(idx+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unplugPhone deletes the phone's interface.
func (s *segment) unplugPhone(t *testing.T) { s.term.ip(t, "link", "del", "usb0") }

// setPolicy runs 'mnguardctl policy set ARGS' inside the collector's
// namespace and returns the network policy's new version.
func (s *segment) setPolicy(t testing.TB, args ...string) string {
	t.Helper()
	if _, errOut, code := s.c.ctl(t, append([]string{"policy", "set"}, args...)...); code != 0 {
		t.Fatalf("mnguardctl policy set %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return s.policyVersion(t)
}

// policyVersion is the network policy's version as 'mnguardctl policy
// show' has it.
func (s *segment) policyVersion(t testing.TB) string {
	t.Helper()
	var resp mnguardv1.GetNetworkPolicyResponse
	s.c.ctlJSON(t, &resp, "policy", "show")
	return resp.GetPolicy().GetVersion()
}

// network polls the collector (its admin API, from inside its namespace:
// mnguardctl's start-up would blur the times measured) until the
// terminal's network posture satisfies ok, and returns it with when it was
// seen; it fails the test after within.
func (s *segment) network(t testing.TB, admin mnguardv1.AdminServiceClient, within time.Duration, what string, ok func(*mnguardv1.NetworkPosture) bool) (*mnguardv1.NetworkPosture, time.Time) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := admin.GetTerminal(t.Context(), &mnguardv1.GetTerminalRequest{Id: s.id})
		if err != nil {
			t.Fatal(err)
		}
		np := resp.GetTerminal().GetPosture().GetNetwork()
		if ok(np) {
			return np, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in the collector's network posture within %s; it holds:\n%s", what, within, describeNetwork(np))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describeNetwork renders a network posture for failure messages.
func describeNetwork(np *mnguardv1.NetworkPosture) string {
	if np == nil {
		return "  (no network section)"
	}
	var b strings.Builder
	e := np.GetEnforcement()
	fmt.Fprintf(&b, "  policy %q, enforcement requested %v in place %v (%s), scan errors %v\n", np.GetPolicyVersion(), e.GetRequested(), e.GetInPlace(), e.GetDetail(), np.GetScanErrors())
	for _, a := range np.GetAdapters() {
		fmt.Fprintf(&b, "  adapter %s %s (%s) %s\n", a.GetName(), a.GetKind(), a.GetReason(), a.GetState())
	}
	for _, f := range np.GetFindings() {
		fmt.Fprintf(&b, "  finding %s %s: %s [%s pid %d] %s %s\n", f.GetId(), f.GetKind(), f.GetDetail(), f.GetProcess(), f.GetPid(), f.GetInterface(), f.GetAddress())
	}
	return b.String()
}

// findingWhere returns the first finding of kind for which match is true.
func findingWhere(np *mnguardv1.NetworkPosture, kind string, match func(*mnguardv1.NetworkFinding) bool) *mnguardv1.NetworkFinding {
	for _, f := range np.GetFindings() {
		if f.GetKind() == kind && (match == nil || match(f)) {
			return f
		}
	}
	return nil
}

// addressIs matches a finding about a remote (or local) address.
func addressIs(addr string) func(*mnguardv1.NetworkFinding) bool {
	return func(f *mnguardv1.NetworkFinding) bool { return f.GetAddress() == addr }
}

// events are the terminal's events of type typ the collector holds,
// through 'mnguardctl events list' in the collector's namespace.
func (s *segment) events(t *testing.T, typ string) []*mnguardv1.StoredEvent {
	t.Helper()
	var resp mnguardv1.ListEventsResponse
	s.c.ctlJSON(t, &resp, "events", "list", "--terminal", s.id, "--type", typ, "--limit", "1000")
	return resp.GetEvents()
}

// waitEvent waits until the collector holds an event of type typ with the
// attribute id (a finding's), and returns it.
func (s *segment) waitEvent(t testing.TB, admin mnguardv1.AdminServiceClient, within time.Duration, typ string, match func(*mnguardv1.Event) bool) *mnguardv1.StoredEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := admin.ListEvents(t.Context(), &mnguardv1.ListEventsRequest{TerminalId: s.id, Type: typ, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEvents() {
			if match(e.GetEvent()) {
				return e
			}
		}
		if time.Now().After(deadline) {
			var got []string
			for _, e := range resp.GetEvents() {
				got = append(got, fmt.Sprintf("%s %v", e.GetEvent().GetMessage(), e.GetEvent().GetAttributes()))
			}
			t.Fatalf("no %s event as wanted within %s; the collector holds %d:\n%s", typ, within, len(got), strings.Join(got, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attrIs matches an event by one attribute.
func attrIs(key, value string) func(*mnguardv1.Event) bool {
	return func(e *mnguardv1.Event) bool { return e.GetAttributes()[key] == value }
}
