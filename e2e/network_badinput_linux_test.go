package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestNetworkBadInput: malformed policies are refused by mnguardctl and by
// the collector itself, with the policy unchanged; interfaces that vanish
// during scans and processes that exit between the socket listing and the
// name lookup neither crash the agent nor leave a finding behind.
func TestNetworkBadInput(t *testing.T) {
	s := newSegment(t, "60s")
	s.a.start(t)
	s.c.waitReported(t, s.id, 15*time.Second)
	admin := s.c.adminClient(t)
	version := s.setPolicy(t, "--allow-network", allowedNet, "--allow-network", allowedNet6, "--allow-dns", allowedDNS)
	s.network(t, admin, 10*time.Second, "the policy in force", func(np *mnguardv1.NetworkPosture) bool {
		return np.GetPolicyVersion() == version
	})

	t.Run("malformed policy refused", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--allow-network", "198.51.100.1/24"}, "host bits set"},
			{[]string{"--allow-network", "198.51.100.0/33"}, "not a CIDR"},
			{[]string{"--allow-network", "198.51.100.0"}, "no prefix length"},
			{[]string{"--allow-network", "segment-b"}, "not a CIDR"},
			{[]string{"--allow-network", "0.0.0.0/0"}, "no isolation"},
			{[]string{"--allow-network", "2001:db8:a::1/64"}, "host bits set"},
			{[]string{"--allow-network", allowedNet, "--allow-dns", "198.51.100.300"}, "not an IPv4 or IPv6 address"},
			{[]string{"--allow-network", allowedNet, "--allow-dns", "198.51.100.0/24"}, "not an IPv4 or IPv6 address"},
			{[]string{"--allow-network", allowedNet, "--allow-network", allowedNet}, "listed twice"},
			{[]string{"--allow-network", "198.51.0.0/16", "--allow-network", allowedNet}, "inside"},
			{[]string{"--no-networks", "--enforce-network"}, "no allowed network"},
		} {
			_, errOut, code := s.c.ctl(t, append([]string{"policy", "set"}, tc.args...)...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Errorf("mnguardctl policy set %s: exit %d, %q; want a refusal saying %q", strings.Join(tc.args, " "), code, strings.TrimSpace(errOut), tc.want)
			}
		}
		// The collector refuses them itself, not only mnguardctl.
		for _, tc := range []struct {
			p    *mnguardv1.NetworkPolicy
			want string
		}{
			{&mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.1/24"}}}, "host bits set"},
			{&mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24\n"}}}, "not a CIDR"},
			{&mnguardv1.NetworkPolicy{Networks: []*mnguardv1.AllowedNetwork{{Cidr: allowedNet}}, DnsServers: []string{"dns.example"}}, "not an IPv4 or IPv6 address"},
			{&mnguardv1.NetworkPolicy{Enforce: true}, "no allowed network"},
		} {
			_, err := admin.SetNetworkPolicy(t.Context(), &mnguardv1.SetNetworkPolicyRequest{Policy: tc.p})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Errorf("SetNetworkPolicy(%v) = %v; want InvalidArgument saying %q", tc.p, err, tc.want)
			}
		}
		if v := s.policyVersion(t); v != version {
			t.Errorf("after the refusals the policy is %s, want %s unchanged", v, version)
		}
	})

	t.Run("interfaces vanishing during scans", func(t *testing.T) {
		// One ip process sends the requests back to back (ip -batch): each
		// link and address change announces a scan, and the interfaces are
		// gone again before the scans list and classify them.
		var batch strings.Builder
		const rounds = 200
		for i := range rounds {
			name := fmt.Sprintf("flap%d", i%4)
			fmt.Fprintf(&batch, "tuntap add %s mode tap\nlink set %s up\naddr add 203.0.113.%d/32 dev %s\nlink del %s\n", name, name, 100+i%4, name, name)
		}
		file := filepath.Join(t.TempDir(), "flap.batch")
		if err := os.WriteFile(file, []byte(batch.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		s.term.ip(t, "-batch", file)
		t.Logf("%d interfaces created, addressed and deleted in %s", rounds, time.Since(started).Round(time.Millisecond))
		if !s.a.proc.running() {
			t.Fatalf("the agent exited: %v", s.a.proc.err)
		}
		// Nothing of them stays: the next scan (announced by this change)
		// finds none.
		s.term.ip(t, "tuntap", "add", "settle", "mode", "tap")
		s.term.ip(t, "link", "del", "settle")
		s.network(t, admin, 5*time.Second, "no trace of the vanished interfaces", func(np *mnguardv1.NetworkPosture) bool {
			for _, a := range np.GetAdapters() {
				if strings.HasPrefix(a.GetName(), "flap") || a.GetName() == "settle" {
					return false
				}
			}
			for _, f := range np.GetFindings() {
				if strings.Contains(f.GetDetail()+f.GetInterface(), "flap") || strings.Contains(f.GetAddress(), "203.0.113.10") {
					return false
				}
			}
			return len(np.GetScanErrors()) == 0
		})
	})

	t.Run("processes exiting between the socket listing and the lookup", func(t *testing.T) {
		listenIn(t, s.denied, "tcp", deniedIP+":8081")
		// Short-lived processes, each connecting to the disallowed peer
		// and exiting at once, two shells at a time for 4 s: the probe
		// asks for a scan every second, and the processes are gone by the
		// time the scan looks up who held the sockets.
		since := time.Now()
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.term.try("bash", "-c", "end=$((SECONDS+4)); while [ $SECONDS -lt $end ]; do (exec 3<>/dev/tcp/"+deniedIP+"/8081; sleep 0.0$((RANDOM%6))) 2>/dev/null; done")
			}()
		}
		// Scans while they run: an address comes and goes every 50 ms.
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for i := 0; ; i++ {
			select {
			case <-done:
			case <-time.After(50 * time.Millisecond):
				s.term.try("ip", "addr", "add", "198.51.100.99/32", "dev", "toA")
				s.term.try("ip", "addr", "del", "198.51.100.99/32", "dev", "toA")
				continue
			}
			break
		}
		if !s.a.proc.running() {
			t.Fatalf("the agent exited: %v", s.a.proc.err)
		}
		s.term.ip(t, "tuntap", "add", "settle", "mode", "tap")
		s.term.ip(t, "link", "del", "settle")
		// The terminal closed first: its side stays in TIME_WAIT for a
		// minute, held by no process (findings with pid 0). No finding may
		// name a process that is gone.
		s.network(t, admin, 10*time.Second, "no finding naming an exited process", func(np *mnguardv1.NetworkPosture) bool {
			return findingWhere(np, "socket", func(f *mnguardv1.NetworkFinding) bool {
				if f.GetPid() == 0 {
					return false
				}
				_, err := os.Stat(fmt.Sprintf("/proc/%d", f.GetPid()))
				return err != nil
			}) == nil && len(np.GetScanErrors()) == 0
		})
		if out := s.a.proc.out.String(); strings.Contains(out, "panic") {
			t.Errorf("the agent panicked:\n%s", out)
		}
		// How the scans found them: with the process, without (exited
		// before the lookup: the finding stands), or after they let go.
		named, gone, orphan := 0, 0, 0
		for _, e := range s.events(t, "network.finding") {
			a := e.GetEvent().GetAttributes()
			if a["kind"] != "socket" || !strings.HasSuffix(a["address"], ":8081") || e.GetReceivedAt().AsTime().Before(since) {
				continue
			}
			switch {
			case a["pid"] == "" || a["pid"] == "0":
				orphan++
			case a["process"] == "":
				gone++
			default:
				named++
			}
		}
		t.Logf("short-lived connections found by the scans: %d with their process, %d whose process exited before the lookup, %d held by no process (TIME_WAIT)", named, gone, orphan)
		if named+gone+orphan == 0 {
			t.Error("no connection of the short-lived processes was reported")
		}
	})
}
