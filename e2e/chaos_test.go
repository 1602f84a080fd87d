package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The chaos scenarios on PostgreSQL: the collector (or two replicas) on a
// cluster of the test's own, which the test stops and starts.

// newPGCollector initialises a data directory for database dsn
// ('mnguard-server init --db') and serves it, with flags added.
func newPGCollector(t testing.TB, dsn string, flags ...string) *collector {
	t.Helper()
	c := &collector{dir: t.TempDir(), grpcAddr: freeAddr(t), httpAddr: freeAddr(t), extraFlags: append([]string{"--db", dsn}, flags...)}
	cmd := exec.Command(bin("mnguard-server"), "init", "--data-dir", c.dir, "--db", dsn)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mnguard-server init --db: %v\n%s", err, errOut.String())
	}
	c.pin = strings.TrimSpace(string(out))
	if _, err := pki.ParsePin(c.pin); err != nil {
		t.Fatalf("init printed %q, not a pin: %v", c.pin, err)
	}
	c.tokenFile = filepath.Join(c.dir, "admin.token")
	c.start(t)
	return c
}

// newReplica starts a second collector on a's database, as the README
// tells an operator to set one up: a data directory of its own holding a
// copy of a's keys (the CA, the signing key, totp.key) and its admin token
// file, and a's flags.
func newReplica(t testing.TB, a *collector) *collector {
	t.Helper()
	b := &collector{dir: t.TempDir(), grpcAddr: freeAddr(t), httpAddr: freeAddr(t), pin: a.pin, extraFlags: a.extraFlags}
	for _, f := range []string{"ca.crt", "ca.key", "signing.key", "totp.key", "admin.token"} {
		copyFile(t, filepath.Join(a.dir, f), filepath.Join(b.dir, f))
	}
	b.tokenFile = filepath.Join(b.dir, "admin.token")
	b.start(t)
	return b
}

// postgresCollector is a collector on a fresh database of a PostgreSQL
// cluster of the test's own.
func postgresCollector(t *testing.T) (*testenv.PGCluster, *collector) {
	t.Helper()
	cluster := testenv.NewPostgresCluster(t)
	dsn := testenv.CreateDatabase(t, cluster.DSN)
	durableCommits(t, dsn)
	return cluster, newPGCollector(t, dsn)
}

// durableCommits turns synchronous_commit back on (PostgreSQL's default)
// for the database of dsn. The test clusters run with it off, for speed:
// a commit is then acknowledged before its WAL is written, and a server
// that crashes (an immediate stop) loses the last ones — a loss these
// tests would rightly report, but one of the test cluster's settings, not
// of mnguard. fsync stays off: the tests crash PostgreSQL, not the
// machine, and what was written survives in the page cache.
func durableCommits(t *testing.T, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var name string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET synchronous_commit = on"); err != nil {
		t.Fatalf("synchronous_commit on for %s: %v", name, err)
	}
}

// TestChaosPostgresRestarted: PostgreSQL is restarted twice under the
// collector while agents generate events: a fast shutdown, then an
// immediate one (as a crash). Reports in the gaps are refused, stay
// spooled, and arrive afterwards: every event stored once.
func TestChaosPostgresRestarted(t *testing.T) {
	t.Parallel()
	cluster, c := postgresCollector(t)
	agents := chaosAgents(t, c, 2, 0x400, 50*time.Millisecond)
	for _, immediate := range []bool{false, true} {
		for _, ca := range agents {
			ca.flow.waitMore(t, 20, 20*time.Second)
		}
		if err := cluster.Stop(immediate); err != nil {
			t.Fatalf("stop PostgreSQL: %v", err)
		}
		down := time.Now()
		for _, ca := range agents {
			ca.flow.waitMore(t, 40, 20*time.Second)
		}
		if err := cluster.Start(); err != nil {
			t.Fatalf("start PostgreSQL again: %v", err)
		}
		t.Logf("PostgreSQL stopped (immediate: %v) for %s", immediate, time.Since(down).Round(time.Millisecond))
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 20, 30*time.Second)
	}
	finishChaos(t, c, agents)
	if !c.proc.running() {
		t.Error("the collector exited while PostgreSQL restarted")
	}
}

// TestChaosPostgresUnreachable: PostgreSQL stops mid-run. A report is
// refused with Unavailable and nothing acknowledged; the agents' spools keep
// every event generated meanwhile (status.json counts them); once
// PostgreSQL is back, the same report is acknowledged and everything
// arrives, once.
func TestChaosPostgresUnreachable(t *testing.T) {
	t.Parallel()
	cluster, c := postgresCollector(t)
	agents := chaosAgents(t, c, 2, 0x500, 50*time.Millisecond)
	id := enrollInProcess(t, c, c.token(t, "1h", 1), "chaos-probe")
	probe := dialAs(t, c, id.TLSCertificate())
	report := func() (*mnguardv1.ReportResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return probe.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{{
			Seq: 1, Time: timestamppb.Now(), Type: "agent.start", Severity: mnguardv1.Severity_SEVERITY_INFO,
			Message: "chaos probe", Attributes: map[string]string{"probe": "1"},
		}}})
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 20, 20*time.Second)
	}

	if err := cluster.Stop(false); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	before := make([]int, len(agents))
	for i, ca := range agents {
		before[i] = ca.flow.certain()
	}
	resp, err := report()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a report while PostgreSQL is down: %v, %v; want Unavailable", resp, err)
	}
	if len(resp.GetAckedSeqs()) != 0 {
		t.Errorf("a report while PostgreSQL is down acknowledged %v", resp.GetAckedSeqs())
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 100, 30*time.Second)
	}
	for i, ca := range agents {
		during := ca.flow.certain() - before[i]
		eventually(t, 10*time.Second, func() error {
			st := agentStatus(t, ca.a)
			if st.PendingEvents < during {
				return fmt.Errorf("terminal %s: %d events spooled, %d generated while PostgreSQL was down", ca.id, st.PendingEvents, during)
			}
			if !strings.Contains(st.LastError, "report") {
				return fmt.Errorf("terminal %s: last error %q, want the refused report", ca.id, st.LastError)
			}
			return nil
		})
		t.Logf("terminal %s: %d events generated while PostgreSQL was down, all still spooled; the agent says %q", ca.id, during, agentStatus(t, ca.a).LastError)
	}
	if !c.proc.running() {
		t.Fatal("the collector exited when PostgreSQL became unreachable")
	}

	if err := cluster.Start(); err != nil {
		t.Fatalf("start PostgreSQL again: %v", err)
	}
	eventually(t, 30*time.Second, func() error {
		resp, err := report()
		if err != nil {
			return err
		}
		if got := resp.GetAckedSeqs(); len(got) != 1 || got[0] != 1 {
			t.Fatalf("the probe report acknowledged %v, want [1]", got)
		}
		return nil
	})
	finishChaos(t, c, agents)
	n := 0
	for _, e := range storedEvents(t, c, id.TerminalID) {
		if e.GetAttributes()["probe"] == "1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the probe event is stored %d times, want once", n)
	}
}

// TestChaosReplicaKilled: two replicas on one PostgreSQL, agents configured
// with both (server: [A, B]). The replica the agents are connected to is
// killed with SIGKILL; they reconnect to the other and deliver their
// spools there: every event stored once.
func TestChaosReplicaKilled(t *testing.T) {
	t.Parallel()
	_, a := postgresCollector(t)
	b := newReplica(t, a)
	replicas := []*collector{a, b}
	var agents []*chaosAgent
	for i := range 2 {
		ag, id := enrolledAgent(t, a, "60s")
		yaml := fmt.Sprintf("server: [%s, %s]\nstate_dir: %s\nreport_interval: 60s\nlog_level: debug\nmfa:\n  socket: %s\n", a.grpcAddr, b.grpcAddr, ag.stateDir, ag.pamSocket)
		if err := os.WriteFile(ag.config, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		ag.start(t)
		a.waitReported(t, id, 20*time.Second)
		ca := &chaosAgent{a: ag, id: id, starts: 1}
		ca.flow = startFlow(t, ag, fmt.Sprintf("%04x", 0x600+i), 50*time.Millisecond)
		agents = append(agents, ca)
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 20, 20*time.Second)
	}
	// The replica most agents are connected to.
	var victim, survivor *collector
	eventually(t, 20*time.Second, func() error {
		count := make([]int, len(replicas))
		for _, ca := range agents {
			for i, r := range replicas {
				if connectedTo(t, ca.a.proc.cmd.Process.Pid, r.grpcAddr) {
					count[i]++
				}
			}
		}
		if count[0]+count[1] < len(agents) {
			return fmt.Errorf("agents connected to the replicas: %v of %d", count, len(agents))
		}
		victim, survivor = a, b
		if count[1] > count[0] {
			victim, survivor = b, a
		}
		return nil
	})
	var onVictim []*chaosAgent
	for _, ca := range agents {
		if connectedTo(t, ca.a.proc.cmd.Process.Pid, victim.grpcAddr) {
			onVictim = append(onVictim, ca)
		}
	}
	if err := victim.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.proc.done
	killed := time.Now()
	for _, ca := range onVictim {
		eventually(t, 60*time.Second, func() error {
			if !connectedTo(t, ca.a.proc.cmd.Process.Pid, survivor.grpcAddr) {
				return fmt.Errorf("terminal %s is not connected to the other replica", ca.id)
			}
			return nil
		})
		t.Logf("terminal %s connected to the other replica %s after the kill", ca.id, time.Since(killed).Round(time.Millisecond))
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 40, 30*time.Second)
	}
	finishChaos(t, survivor, agents)
}

// connectedTo says whether process pid has an established TCP connection
// to addr (IP:PORT), as ss(8) lists them.
func connectedTo(t *testing.T, pid int, addr string) bool {
	t.Helper()
	out, err := exec.Command("ss", "-Htnp", "state", "established", "dst", addr).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return strings.Contains(string(out), "pid="+strconv.Itoa(pid)+",")
}
