package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/collector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// realCollector is mnguard-server's collector.Serve on loopback: its own
// CA, SQLite store in a data directory, gRPC over TLS.
type realCollector struct {
	env  map[string]string // MNGUARD_SERVER, MNGUARD_CA_PIN, MNGUARD_TOKEN_FILE
	stop func()
}

// startRealCollector serves dataDir (initialised on first use) until the
// test ends or stop is called.
func startRealCollector(t *testing.T, dataDir string) *realCollector {
	t.Helper()
	res, err := collector.Init(context.Background(), dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- collector.Serve(ctx, collector.Config{
			DataDir: dataDir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
			AdvertiseAddrs: []netip.Addr{netip.MustParseAddr("198.51.100.10")},
			Logger:         slog.New(slog.DiscardHandler),
			Ready:          func(g, _ net.Addr) { ready <- g },
		})
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("collector: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addr := <-ready:
		return &realCollector{stop: stop, env: map[string]string{
			"MNGUARD_SERVER": addr.String(), "MNGUARD_CA_PIN": res.CAPin, "MNGUARD_TOKEN_FILE": filepath.Join(dataDir, collector.AdminTokenFile),
		}}
	case err := <-done:
		t.Fatalf("collector did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("collector did not start within 30s")
	}
	return nil
}

// policyJSON runs policy show -o json and decodes it.
func policyJSON(t *testing.T, env map[string]string) *mnguardv1.GetNetworkPolicyResponse {
	t.Helper()
	r := runReal(t, env, "policy", "show", "-o", "json")
	if r.code != 0 {
		t.Fatalf("policy show: exit %d: %s", r.code, r.stderr)
	}
	var resp mnguardv1.GetNetworkPolicyResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("policy show -o json: %v\n%s", err, r.stdout)
	}
	return &resp
}

func cidrs(p *mnguardv1.NetworkPolicy) []string {
	var out []string
	for _, n := range p.GetNetworks() {
		out = append(out, networkText(n))
	}
	return out
}

// TestPolicyRealCollector drives policy show and policy set against a real
// collector: set and show round trip; lists not given are kept; malformed
// input is refused before the server is asked, senseless input by the
// server, a stale --expect-version too, and nothing of it is stored; the
// helpdesk reads but may not set; every change is in the audit log; the
// policy survives a restart of the collector.
func TestPolicyRealCollector(t *testing.T) {
	dir := t.TempDir()
	c := startRealCollector(t, dir)
	env := c.env

	r := runReal(t, env, "policy", "show")
	if r.code != 0 || !strings.Contains(r.stdout, "Network policy:  none set") {
		t.Fatalf("show before any set: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = runReal(t, env, "policy", "set", "--allow-network", "198.51.100.0/24", "--allow-network", "2001:db8::/32@tcp/443,udp/53",
		"--allow-dns", "198.51.100.53")
	if r.code != 0 {
		t.Fatalf("set: exit %d: %s", r.code, r.stderr)
	}
	first := policyJSON(t, env)
	v1 := first.GetPolicy().GetVersion()
	if !strings.HasPrefix(r.stdout, "network policy "+v1+" set (none before); pushed to connected agents\n") {
		t.Errorf("set output:\n%s", r.stdout)
	}
	p := first.GetPolicy()
	if got := cidrs(p); !slices.Equal(got, []string{"198.51.100.0/24", "2001:db8::/32@tcp/443,udp/53"}) || !slices.Equal(p.GetDnsServers(), []string{"198.51.100.53"}) ||
		p.GetEnforce() || !slices.Equal(p.GetCollectorAddrs(), []string{"127.0.0.1", "198.51.100.10"}) || first.GetUpdatedBy() != "admin" ||
		time.Since(first.GetUpdatedAt().AsTime()) > time.Minute || !strings.HasPrefix(first.GetPolicyVersion(), "p-") {
		t.Errorf("after set: %v", first)
	}
	// The table an administrator reads.
	r = runReal(t, env, "policy", "show")
	for _, want := range []string{
		"Network policy:              " + v1 + "\n",
		"Enforcement:                 off: agents report what breaks isolation and block nothing\n",
		"Allowed networks:            2 networks\n",
		"  198.51.100.0/24:           every port\n",
		"  2001:db8::/32:             tcp/443, udp/53\n",
		"DNS servers:                 198.51.100.53\n",
		"Collector (always allowed):  127.0.0.1, 198.51.100.10\n",
		"Pushed policy:               " + first.GetPolicyVersion() + "\n",
		"Updated by:                  admin\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("policy show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runReal(t, env, "policy", "show", "-o", "csv")
	if r.code != 0 || !strings.Contains(r.stdout, `networks[1],"2001:db8::/32@tcp/443,udp/53"`+"\n") || !strings.Contains(r.stdout, "enforce,false\n") {
		t.Errorf("policy show -o csv:\n%s%s", r.stdout, r.stderr)
	}

	// Enforcement on: the lists stay.
	if r = runReal(t, env, "policy", "set", "--enforce-network"); r.code != 0 {
		t.Fatalf("set --enforce-network: exit %d: %s", r.code, r.stderr)
	}
	on := policyJSON(t, env).GetPolicy()
	if !on.GetEnforce() || !slices.Equal(cidrs(on), cidrs(p)) || !slices.Equal(on.GetDnsServers(), p.GetDnsServers()) || on.GetVersion() == v1 {
		t.Errorf("after --enforce-network: %v", on)
	}
	if !strings.HasPrefix(r.stdout, "network policy "+on.GetVersion()+" set (was "+v1+")") {
		t.Errorf("set output:\n%s", r.stdout)
	}
	// DNS replaced, networks kept; then no DNS server at all.
	if r = runReal(t, env, "policy", "set", "--allow-dns", "2001:db8::53", "--allow-dns", "198.51.100.54"); r.code != 0 {
		t.Fatalf("set --allow-dns: exit %d: %s", r.code, r.stderr)
	}
	if got := policyJSON(t, env).GetPolicy(); !slices.Equal(got.GetDnsServers(), []string{"198.51.100.54", "2001:db8::53"}) || !slices.Equal(cidrs(got), cidrs(p)) || !got.GetEnforce() {
		t.Errorf("after --allow-dns: %v", got)
	}
	if r = runReal(t, env, "policy", "set", "--no-dns", "-o", "json"); r.code != 0 {
		t.Fatalf("set --no-dns: exit %d: %s", r.code, r.stderr)
	}
	var setResp mnguardv1.SetNetworkPolicyResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &setResp); err != nil || len(setResp.GetPolicy().GetDnsServers()) != 0 || len(setResp.GetPolicy().GetNetworks()) != 2 {
		t.Errorf("set --no-dns -o json: %v\n%s", err, r.stdout)
	}
	current := setResp.GetPolicy().GetVersion()
	// The same again: nothing changes.
	if r = runReal(t, env, "policy", "set", "--no-dns"); r.code != 0 || !strings.HasPrefix(r.stdout, "network policy "+current+" unchanged\n") {
		t.Errorf("no-op set: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Refused: client side (exit 2), server side and stale (exit 1).
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--allow-network", "198.51.100.0/33"}, 2, `policy set: --allow-network: network "198.51.100.0/33": not a CIDR`},
		{[]string{"--allow-network", "198.51.100.1/24"}, 2, "host bits set; the network is 198.51.100.0/24"},
		{[]string{"--allow-network", "bogus"}, 2, `network "bogus": not a CIDR`},
		{[]string{"--allow-network", "::/0"}, 2, "allows every address"},
		{[]string{"--allow-network", "198.51.100.0/24@icmp/1"}, 2, "--allow-network"},
		{[]string{"--allow-dns", "300.1.1.1"}, 2, `policy set: --allow-dns: DNS server "300.1.1.1": not an IPv4 or IPv6 address`},
		{[]string{"--allow-dns", "dns.example"}, 2, `DNS server "dns.example"`},
		{[]string{"--no-networks"}, 1, "set network policy: network policy: enforcement on with no allowed network"},
		{[]string{"--allow-network", "198.51.100.0/24", "--allow-network", "198.51.100.128/25"}, 1, "198.51.100.128/25 is inside 198.51.100.0/24"},
		{[]string{"--no-enforce-network", "--expect-version", "n-00000000"}, 1, "the network policy changed meanwhile: version " + current + " is in force, not the expected n-00000000"},
	} {
		r := runReal(t, env, append([]string{"policy", "set"}, tt.args...)...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("policy set %v: exit %d, stderr %q; want %d and %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
	if got := policyJSON(t, env).GetPolicy().GetVersion(); got != current {
		t.Errorf("refused sets changed the policy to %s", got)
	}

	// The helpdesk reads the policy but may not change it.
	pw := writeFile(t, "pw", "a long enough passphrase 42\n")
	if r = runReal(t, env, "operators", "add", "sato", "--role", "helpdesk", "--password-file", pw); r.code != 0 {
		t.Fatalf("operators add: exit %d: %s", r.code, r.stderr)
	}
	r = runReal(t, env, "operators", "token", "sato")
	tok, _, _ := strings.Cut(r.stdout, "\n")
	if r.code != 0 || tok == "" {
		t.Fatalf("operators token: exit %d: %s", r.code, r.stderr)
	}
	desk := map[string]string{"MNGUARD_SERVER": env["MNGUARD_SERVER"], "MNGUARD_CA_PIN": env["MNGUARD_CA_PIN"], "MNGUARD_TOKEN": tok}
	if got := policyJSON(t, desk).GetPolicy().GetVersion(); got != current {
		t.Errorf("helpdesk reads %s, want %s", got, current)
	}
	r = runReal(t, desk, "policy", "set", "--no-enforce-network")
	if r.code != 1 || !strings.Contains(r.stderr, "set network policy: permission denied: role helpdesk may not call SetNetworkPolicy (needs admin)") {
		t.Errorf("helpdesk set: exit %d, stderr %q", r.code, r.stderr)
	}

	// Every change audited: the first set, enforcement, DNS, no DNS and the
	// no-op.
	r = runReal(t, env, "audit", "list", "--action", "network_policy.", "-o", "csv")
	if n := strings.Count(r.stdout, "network_policy.set"); r.code != 0 || n != 5 {
		t.Errorf("audit list: exit %d, %d network_policy.set entries, want 5:\n%s%s", r.code, n, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "networks: 198.51.100.0/24, 2001:db8::/32@tcp/443,udp/53; dns: 198.51.100.53; enforcement: off; version none → "+v1) {
		t.Errorf("audit detail of the first set missing:\n%s", r.stdout)
	}

	// Restarted on the same data directory: the policy is still in force.
	c.stop()
	c = startRealCollector(t, dir)
	after := policyJSON(t, c.env)
	if after.GetPolicy().GetVersion() != current || !slices.Equal(cidrs(after.GetPolicy()), cidrs(p)) || !after.GetPolicy().GetEnforce() ||
		!slices.Equal(after.GetPolicy().GetCollectorAddrs(), []string{"127.0.0.1", "198.51.100.10"}) || after.GetUpdatedBy() != "admin" {
		t.Errorf("after a restart: %v", after)
	}
}

// TestPolicyUsageErrors: contradictory or empty policy set command lines
// fail with exit 2 before anything is dialed.
func TestPolicyUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "set"}, "nothing to change"},
		{[]string{"policy", "set", "--enforce-network", "--no-enforce-network"}, "--enforce-network and --no-enforce-network: give one"},
		{[]string{"policy", "set", "--no-networks", "--allow-network", "198.51.100.0/24"}, "--no-networks and --allow-network: give one"},
		{[]string{"policy", "set", "--no-dns", "--allow-dns", "198.51.100.53"}, "--no-dns and --allow-dns: give one"},
		{[]string{"policy", "set", "--enforce-network", "--expect-version", ""}, "--expect-version is empty"},
		{[]string{"policy", "set", "--enforce-network", "--expect-version", strings.Repeat("n", 65)}, "longer than 64 bytes"},
		{[]string{"policy", "set", "--allow-network", "198.51.100.0/24", "--allow-network", "198.51.100.7"}, "no prefix length: write 198.51.100.7/32"},
		{[]string{"policy", "show", "--enforce-network"}, "does not apply"},
		{[]string{"policy", "show", "extra"}, "unexpected argument"},
		{[]string{"policy"}, "missing subcommand: want show or set"},
	} {
		h := newHarness()
		r := h.run(t, tt.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
		if h.cfg != nil {
			t.Errorf("%v: dialed", tt.args)
		}
	}
}

// TestPolicyOldServer: a collector without the network policy RPCs is
// named as such.
func TestPolicyOldServer(t *testing.T) {
	r := newHarness().run(t, "policy", "show")
	if r.code != 1 || !strings.Contains(r.stderr, "get network policy: server collector.test:8443 does not support this request") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestPolicyComplianceWiring: mnguardctl policy set reaches an enrolled
// terminal's live Subscribe stream on a real collector within a second; the
// collector's compliance check "network" compares the terminal's reported
// network policy version with the one pushed: pending (unknown) while the
// terminal applies another, pass once it reports the one in force without
// findings. mnguardctl reads the verdict.
func TestPolicyComplianceWiring(t *testing.T) {
	dir := t.TempDir()
	c := startRealCollector(t, dir)
	env := c.env
	ctx := t.Context()
	authority, _, err := ca.LoadOrCreate(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dial := func(cert *tls.Certificate) mnguardv1.AgentServiceClient {
		cfg, err := pki.CATLSConfig(authority.CertDER(), func() (*tls.Certificate, error) { return cert, nil })
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = "localhost"
		cc, err := grpc.NewClient("passthrough:///"+env["MNGUARD_SERVER"], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return mnguardv1.NewAgentServiceClient(cc)
	}
	r := runReal(t, env, "tokens", "create")
	tok, _, _ := strings.Cut(r.stdout, "\n")
	if r.code != 0 {
		t.Fatalf("tokens create: exit %d: %s", r.code, r.stderr)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		t.Fatal(err)
	}
	en, err := dial(nil).Enroll(ctx, &mnguardv1.EnrollRequest{Token: tok, CsrDer: csr, Host: &mnguardv1.HostFacts{Hostname: "mn-pc-01", Os: "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	agent := dial(&tls.Certificate{Certificate: [][]byte{en.GetCertificateDer()}, PrivateKey: key})

	// The agent's live stream: the exemption set, then the policy.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := agent.Subscribe(sctx, &mnguardv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	policies := make(chan *mnguardv1.Policy, 8)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				close(policies)
				return
			}
			if p := m.GetPolicy(); p != nil {
				policies <- p
			}
		}
	}()
	if p := <-policies; p.GetNetwork() != nil {
		t.Fatalf("first policy has a network policy: %v", p)
	}

	start := time.Now()
	if r = runReal(t, env, "policy", "set", "--allow-network", "198.51.100.0/24"); r.code != 0 {
		t.Fatalf("policy set: exit %d: %s", r.code, r.stderr)
	}
	select {
	case p := <-policies:
		t.Logf("mnguardctl policy set (its run: dial, TLS, get, set) to the policy on the agent's stream: %s", time.Since(start))
		if time.Since(start) > time.Second || !slices.Equal(cidrs(p.GetNetwork()), []string{"198.51.100.0/24"}) ||
			!slices.Equal(p.GetNetwork().GetCollectorAddrs(), []string{"127.0.0.1", "198.51.100.10"}) {
			t.Errorf("pushed after %s: %v", time.Since(start), p)
		}
	case <-time.After(time.Second):
		t.Fatal("no policy on the agent's stream within 1s of mnguardctl policy set")
	}
	want := policyJSON(t, env).GetPolicy().GetVersion()
	report := func(version string) {
		t.Helper()
		now := time.Now()
		_, err := agent.Report(ctx, &mnguardv1.ReportRequest{Posture: &mnguardv1.Posture{
			CollectedAt: timestamppb.New(now), Host: &mnguardv1.HostFacts{Hostname: "mn-pc-01", Os: "linux"},
			Network: &mnguardv1.NetworkPosture{PolicyVersion: version, LastScan: timestamppb.New(now), SocketsTotal: 3},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// networkCheck waits until the terminal's network check has status.
	networkCheck := func(status string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := runReal(t, env, "terminals", "show", en.GetTerminalId(), "-o", "json")
			var resp mnguardv1.GetTerminalResponse
			if err := protojson.Unmarshal([]byte(r.stdout), &resp); r.code != 0 || err != nil {
				t.Fatalf("terminals show: exit %d, %v: %s", r.code, err, r.stderr)
			}
			var got *mnguardv1.CheckResult
			for _, ch := range resp.GetTerminal().GetCompliance().GetChecks() {
				if ch.GetName() == "network" {
					got = ch
				}
			}
			if got.GetStatus() == status {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("network check %v, want status %s", got, status)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	report("n-00000000")
	networkCheck("unknown")
	report(want)
	networkCheck("pass")
}
