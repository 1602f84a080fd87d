package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// TestNetworkIsolation is issue 12's "What it must show", in network
// namespaces: a terminal T running the real agent, the real collector in
// C (not in the policy's networks), an allowed peer A and a disallowed
// peer D. The policy is set through mnguardctl; every finding is read back
// from the collector. The report interval is 60 s: what arrives sooner was
// announced (netlink), not polled.
func TestNetworkIsolation(t *testing.T) {
	s := newSegment(t, "60s")
	authorized := s.usbTree(t)
	s.a.start(t)
	s.c.waitReported(t, s.id, 15*time.Second)
	admin := s.c.adminClient(t)
	// Processes restarted inside a subtest live on to the end of the test.
	top := t

	version := s.setPolicy(t, "--allow-network", allowedNet, "--allow-network", allowedNet6, "--allow-dns", allowedDNS)
	if !strings.HasPrefix(version, "n-") {
		t.Fatalf("policy show gives network policy version %q", version)
	}
	s.network(t, admin, 10*time.Second, "the policy in force", func(np *mnguardv1.NetworkPosture) bool {
		return np.GetPolicyVersion() == version
	})
	// Listeners in the peers, for connections from T.
	peers := map[string]*peerListener{
		deniedIP + ":8080":         listenIn(t, s.denied, "tcp", deniedIP+":8080"),
		"[" + deniedIP6 + "]:8080": listenIn(t, s.denied, "tcp", "["+deniedIP6+"]:8080"),
		allowedIP + ":8080":        listenIn(t, s.allowed, "tcp", allowedIP+":8080"),
	}

	t.Run("a scan that finds nothing new is not a report", func(t *testing.T) {
		// The resolver file rewritten unchanged: the probe has the
		// terminal scanned again, the scan's time moves, nothing else.
		settled := func() uint32 {
			resp, err := admin.GetTerminal(t.Context(), &mnguardv1.GetTerminalRequest{Id: s.id})
			if err != nil {
				t.Fatal(err)
			}
			return resp.GetTerminal().GetPostureHistoryCount()
		}
		time.Sleep(2 * time.Second)
		before := settled()
		lastScan := s.c.terminal(t, s.id).GetPosture().GetNetwork().GetLastScan().AsTime()
		for range 3 {
			if err := os.WriteFile(s.resolvConf+".tmp", []byte("nameserver "+allowedDNS+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(s.resolvConf+".tmp", s.resolvConf); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond)
		}
		if after := settled(); after != before {
			t.Errorf("posture history %d → %d after scans that found nothing new", before, after)
		}
		if log := s.a.proc.out.String(); !strings.Contains(log, `why="resolver file"`) {
			t.Errorf("the probe asked for no scan; the test proves nothing (last scan %s)", lastScan)
		}
	})

	t.Run("connection to the disallowed peer", func(t *testing.T) {
		allowed := startHelper(t, s.term, "connect", allowedIP+":8080")
		for _, remote := range []string{deniedIP + ":8080", "[" + deniedIP6 + "]:8080"} {
			h := startHelper(t, s.term, "connect", remote)
			if !strings.HasPrefix(h.Line, "connected ") {
				t.Fatalf("connect to %s before enforcement: %s", remote, h.Line)
			}
			comm := h.Comm(t)
			var f *mnguardv1.NetworkFinding
			np, seen := s.network(t, admin, 5*time.Second, "connection to "+remote, func(np *mnguardv1.NetworkPosture) bool {
				f = findingWhere(np, "socket", addressIs(remote))
				return f != nil && f.GetPid() != 0
			})
			took := seen.Sub(h.At)
			t.Logf("tcp to %s reported %s after the connect: %s (%s pid %d user %s)", remote, took.Round(time.Millisecond), f.GetDetail(), f.GetProcess(), f.GetPid(), f.GetUser())
			if took > 2*time.Second {
				t.Errorf("connection to %s reported %s after the connect, want within 2s", remote, took)
			}
			if f.GetPid() != uint32(h.PID()) || f.GetProcess() != comm {
				t.Errorf("finding names %s pid %d, want %s pid %d", f.GetProcess(), f.GetPid(), comm, h.PID())
			}
			if g := findingWhere(np, "socket", addressIs(allowedIP+":8080")); g != nil {
				t.Errorf("the connection to the allowed peer is a finding: %v", g)
			}
			ev := s.waitEvent(t, admin, 5*time.Second, "network.finding", attrIs("id", f.GetId()))
			if a := ev.GetEvent().GetAttributes(); a["kind"] != "socket" || a["pid"] != strconv.Itoa(h.PID()) || a["process"] != comm ||
				ev.GetEvent().GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT {
				t.Errorf("network.finding event %v %v, want kind socket, pid %d, process %s, an alert", ev.GetEvent().GetSeverity(), a, h.PID(), comm)
			}
			// The peer hangs up first, then the process closes and exits:
			// no TIME_WAIT socket is left on the terminal (one would be a
			// finding of its own, with no process, for a minute).
			peers[remote].closeConns()
			time.Sleep(100 * time.Millisecond)
			h.stop()
			s.network(t, admin, 5*time.Second, "connection to "+remote+" closed", func(np *mnguardv1.NetworkPosture) bool {
				return findingWhere(np, "socket", addressIs(remote)) == nil
			})
			s.waitEvent(t, admin, 5*time.Second, "network.finding_cleared", attrIs("id", f.GetId()))
		}
		allowed.stop()
	})

	t.Run("listener reachable from outside", func(t *testing.T) {
		h := startHelper(t, s.term, "listen", "0.0.0.0:9999")
		if !strings.HasPrefix(h.Line, "listening ") {
			t.Fatal(h.Line)
		}
		var f *mnguardv1.NetworkFinding
		s.network(t, admin, 5*time.Second, "listener on 0.0.0.0:9999", func(np *mnguardv1.NetworkPosture) bool {
			f = findingWhere(np, "listener", func(f *mnguardv1.NetworkFinding) bool { return strings.HasSuffix(f.GetAddress(), ":9999") })
			return f != nil
		})
		t.Logf("listener: %s (%s pid %d)", f.GetDetail(), f.GetProcess(), f.GetPid())
		if f.GetPid() != uint32(h.PID()) {
			t.Errorf("listener finding names pid %d, want %d", f.GetPid(), h.PID())
		}
		h.stop()
		s.network(t, admin, 10*time.Second, "listener closed", func(np *mnguardv1.NetworkPosture) bool {
			return findingWhere(np, "listener", addressIs(f.GetAddress())) == nil
		})
		s.waitEvent(t, admin, 5*time.Second, "network.finding_cleared", attrIs("id", f.GetId()))
	})

	t.Run("default route", func(t *testing.T) {
		added := time.Now()
		s.term.ip(t, "route", "add", "default", "via", deniedIP)
		var f *mnguardv1.NetworkFinding
		_, seen := s.network(t, admin, 5*time.Second, "default route", func(np *mnguardv1.NetworkPosture) bool {
			f = findingWhere(np, "default_route", nil)
			return f != nil
		})
		ev := s.waitEvent(t, admin, 5*time.Second, "network.finding", attrIs("id", f.GetId()))
		arrived := ev.GetReceivedAt().AsTime().Sub(added)
		t.Logf("default route: event at the collector %s after 'ip route add', posture seen after %s: %s",
			arrived.Round(time.Millisecond), seen.Sub(added).Round(time.Millisecond), f.GetDetail())
		if arrived > time.Second {
			t.Errorf("default route reached the collector %s after it was added, want within 1s", arrived)
		}
		s.term.ip(t, "route", "del", "default", "via", deniedIP)
		s.network(t, admin, 5*time.Second, "default route removed", func(np *mnguardv1.NetworkPosture) bool {
			return findingWhere(np, "default_route", nil) == nil
		})
		s.waitEvent(t, admin, 5*time.Second, "network.finding_cleared", attrIs("id", f.GetId()))
	})

	t.Run("DNS server outside the policy", func(t *testing.T) {
		if err := os.WriteFile(s.resolvConf+".tmp", []byte("nameserver "+deniedDNS+"\nnameserver "+allowedDNS+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(s.resolvConf+".tmp", s.resolvConf); err != nil {
			t.Fatal(err)
		}
		var f *mnguardv1.NetworkFinding
		np, _ := s.network(t, admin, 10*time.Second, "DNS server "+deniedDNS, func(np *mnguardv1.NetworkPosture) bool {
			f = findingWhere(np, "dns", func(f *mnguardv1.NetworkFinding) bool {
				return strings.Contains(f.GetAddress()+f.GetDetail(), deniedDNS)
			})
			return f != nil
		})
		t.Logf("dns: %s", f.GetDetail())
		if g := findingWhere(np, "dns", func(f *mnguardv1.NetworkFinding) bool {
			return strings.Contains(f.GetAddress()+f.GetDetail(), allowedDNS)
		}); g != nil {
			t.Errorf("the allowed DNS server is a finding: %v", g)
		}
		if err := os.WriteFile(s.resolvConf, []byte("nameserver "+allowedDNS+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.network(t, admin, 10*time.Second, "DNS server "+deniedDNS+" gone", func(np *mnguardv1.NetworkPosture) bool {
			return findingWhere(np, "dns", nil) == nil
		})
		s.waitEvent(t, admin, 5*time.Second, "network.finding_cleared", attrIs("id", f.GetId()))
	})

	t.Run("USB network adapter", func(t *testing.T) {
		s.plugPhone(t)
		var f *mnguardv1.NetworkFinding
		np, _ := s.network(t, admin, 5*time.Second, "phone usb0", func(np *mnguardv1.NetworkPosture) bool {
			f = findingWhere(np, "usb_adapter", func(f *mnguardv1.NetworkFinding) bool { return f.GetInterface() == "usb0" })
			return f != nil
		})
		for _, a := range np.GetAdapters() {
			if a.GetName() == "usb0" {
				t.Logf("usb0: %s (%s) %s:%s driver %s", a.GetKind(), a.GetReason(), a.GetVendorId(), a.GetProductId(), a.GetDriver())
				if a.GetKind() != "usb" {
					t.Errorf("usb0 is of kind %q, want usb", a.GetKind())
				}
			}
		}
		s.unplugPhone(t)
		s.network(t, admin, 5*time.Second, "phone unplugged", func(np *mnguardv1.NetworkPosture) bool {
			return findingWhere(np, "usb_adapter", nil) == nil
		})
		s.waitEvent(t, admin, 5*time.Second, "network.finding_cleared", attrIs("id", f.GetId()))
	})

	t.Run("enforcement", func(t *testing.T) {
		before := s.term.exec(t, "nft", "list", "ruleset")
		enforced := s.setPolicy(t, "--allow-network", allowedNet, "--allow-network", allowedNet6, "--allow-dns", allowedDNS, "--enforce-network")
		if enforced == version {
			t.Fatalf("--enforce-network left the version at %s", version)
		}
		s.network(t, admin, 10*time.Second, "enforcement in place", func(np *mnguardv1.NetworkPosture) bool {
			return np.GetPolicyVersion() == enforced && np.GetEnforcement().GetInPlace()
		})
		rules := s.term.exec(t, "nft", "list", "table", "inet", "mnguard")
		t.Logf("the agent's table:\n%s", rules)
		// What the terminal's own status says.
		eventually(t, 15*time.Second, func() error {
			out, _, _ := run(t, nil, "mnguard-agent", s.a.args("status")...)
			if want := "Network:     policy " + enforced + ", enforced: rules in place (nftables table inet mnguard)"; !strings.Contains(out, want) {
				return fmt.Errorf("mnguard-agent status lacks %q:\n%s", want, out)
			}
			return nil
		})

		if h := startHelper(t, s.term, "connect", deniedIP+":8080"); !strings.HasPrefix(h.Line, "failed ") {
			t.Errorf("connect to the disallowed peer with enforcement on: %s", h.Line)
		}
		if h := startHelper(t, s.term, "connect", "["+deniedIP6+"]:8080"); !strings.HasPrefix(h.Line, "failed ") {
			t.Errorf("connect to the disallowed peer over IPv6 with enforcement on: %s", h.Line)
		}
		if h := startHelper(t, s.term, "connect", allowedIP+":8080"); !strings.HasPrefix(h.Line, "connected ") {
			t.Errorf("connect to the allowed peer with enforcement on: %s", h.Line)
		}

		// The collector still hears from the agent: a phone plugged in now
		// is reported, and cut off the bus.
		s.plugPhone(t)
		s.network(t, admin, 5*time.Second, "phone reported under enforcement", func(np *mnguardv1.NetworkPosture) bool {
			return findingWhere(np, "usb_adapter", func(f *mnguardv1.NetworkFinding) bool { return f.GetInterface() == "usb0" }) != nil
		})
		eventually(t, 5*time.Second, func() error {
			b, err := os.ReadFile(authorized)
			if err != nil || strings.TrimSpace(string(b)) != "0" {
				return fmt.Errorf("%s: %q, %v; want 0", authorized, b, err)
			}
			return nil
		})
		s.unplugPhone(t)

		// Drift: the table flushed by hand is put back.
		flushed := time.Now()
		s.term.exec(t, "nft", "flush", "table", "inet", "mnguard")
		eventually(t, 5*time.Second, func() error {
			if got := s.term.exec(t, "nft", "list", "table", "inet", "mnguard"); got != rules {
				return fmt.Errorf("the table after the flush:\n%s\nwant:\n%s", got, rules)
			}
			return nil
		})
		t.Logf("flushed table restored within %s", time.Since(flushed).Round(time.Millisecond))
		s.waitEvent(t, admin, 5*time.Second, "network.enforcement", func(e *mnguardv1.Event) bool {
			return e.GetTime().AsTime().After(flushed) && e.GetSeverity() == mnguardv1.Severity_SEVERITY_ALERT
		})
		if h := startHelper(t, s.term, "connect", deniedIP+":8080"); !strings.HasPrefix(h.Line, "failed ") {
			t.Errorf("connect to the disallowed peer after the repair: %s", h.Line)
		}

		// A reboot while the collector is away: the rules are gone with
		// the kernel's state; the agent starts without reaching the
		// collector and enforces the policy it saved.
		s.c.stop(t)
		s.a.proc.stop(t)
		s.term.exec(t, "nft", "delete", "table", "inet", "mnguard")
		restarted := time.Now()
		s.a.start(top)
		eventually(t, 10*time.Second, func() error {
			got, err := s.term.try("nft", "list", "table", "inet", "mnguard")
			if err != nil || got != rules {
				return fmt.Errorf("the table after a restart without the collector (%v):\n%s\nwant:\n%s", err, got, rules)
			}
			return nil
		})
		t.Logf("restarted without the collector: rules back %s after the start", time.Since(restarted).Round(time.Millisecond))
		if h := startHelper(t, s.term, "connect", deniedIP+":8080"); !strings.HasPrefix(h.Line, "failed ") {
			t.Errorf("connect to the disallowed peer after a restart without the collector: %s", h.Line)
		}
		s.c.start(top)
		s.network(t, admin, 20*time.Second, "the restarted agent reporting under enforcement", func(np *mnguardv1.NetworkPosture) bool {
			return np.GetPolicyVersion() == enforced && np.GetEnforcement().GetInPlace() && np.GetLastScan().AsTime().After(restarted)
		})

		// Off: not a rule left behind.
		off := s.setPolicy(t, "--allow-network", allowedNet, "--allow-network", allowedNet6, "--allow-dns", allowedDNS, "--no-enforce-network")
		s.network(t, admin, 10*time.Second, "enforcement off", func(np *mnguardv1.NetworkPosture) bool {
			return np.GetPolicyVersion() == off && !np.GetEnforcement().GetRequested() && !np.GetEnforcement().GetInPlace()
		})
		eventually(t, 5*time.Second, func() error {
			if after := s.term.exec(t, "nft", "list", "ruleset"); after != before {
				return fmt.Errorf("nft list ruleset after enforcement off:\n%s\nbefore enforcement:\n%s", after, before)
			}
			return nil
		})
		if h := startHelper(t, s.term, "connect", deniedIP+":8080"); !strings.HasPrefix(h.Line, "connected ") {
			t.Errorf("connect to the disallowed peer after enforcement off: %s", h.Line)
		}
	})

	// What an operator reads with mnguardctl: each kind raised and cleared.
	raised, cleared := map[string]int{}, map[string]int{}
	for _, e := range s.events(t, "network.finding") {
		raised[e.GetEvent().GetAttributes()["kind"]]++
	}
	for _, e := range s.events(t, "network.finding_cleared") {
		cleared[e.GetEvent().GetAttributes()["kind"]]++
	}
	t.Logf("network.finding events by kind %v, network.finding_cleared %v", raised, cleared)
	for _, k := range []string{"socket", "listener", "default_route", "dns", "usb_adapter"} {
		if raised[k] == 0 || cleared[k] == 0 {
			t.Errorf("mnguardctl events list: %d network.finding and %d network.finding_cleared of kind %s, want both", raised[k], cleared[k], k)
		}
	}
}
