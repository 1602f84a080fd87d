package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
)

// failoverBound is the agent's longest retry wait (agent/daemon's
// maxBackoff): a terminal whose collector died is on another within it,
// plus the time to connect.
const failoverBound = 10 * time.Second

// TestFailoverReplicaKilled: two real collector processes on one real
// PostgreSQL; a real agent configured with 'server: [A, B]' connects to A
// (the first) and emits a steady flow of events. A is killed with SIGKILL.
// The agent is connected to B within the backoff bound, delivers its spool
// there, and every event it generated is stored exactly once, with its
// content and in order, compared one by one (sequence numbers and content).
func TestFailoverReplicaKilled(t *testing.T) {
	// A cluster of the test's own: the test runs long enough for a
	// garbage collection, and the shared cluster of testenv.Postgres
	// keeps its keeper's pipe in no variable that outlives adminDSN.
	cluster := testenv.NewPostgresCluster(t)
	dsn := testenv.CreateDatabase(t, cluster.DSN)
	a := newPGCollector(t, dsn)
	b := newReplica(t, a)

	ag, id := enrolledAgent(t, a, "60s")
	yaml := fmt.Sprintf("server: [%s, %s]\nstate_dir: %s\nreport_interval: 60s\nlog_level: debug\nmfa:\n  socket: %s\n", a.grpcAddr, b.grpcAddr, ag.stateDir, ag.pamSocket)
	if err := os.WriteFile(ag.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ag.start(t)
	a.waitReported(t, id, 20*time.Second)
	eventually(t, 20*time.Second, func() error {
		if st := agentStatus(t, ag); !st.Connected || st.Collector != a.grpcAddr {
			return fmt.Errorf("agent status: connected %v to %q, want %s", st.Connected, st.Collector, a.grpcAddr)
		}
		return nil
	})
	flow := startFlow(t, ag, "0f01", 20*time.Millisecond)
	flow.waitMore(t, 50, 20*time.Second)

	if err := a.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.proc.done
	killed := time.Now()
	var since time.Time
	eventually(t, failoverBound+10*time.Second, func() error {
		st := agentStatus(t, ag)
		if !st.Connected || st.Collector != b.grpcAddr || !st.ConnectedSince.After(killed) {
			return fmt.Errorf("agent status: connected %v to %q since %s, want %s after the kill", st.Connected, st.Collector, st.ConnectedSince, b.grpcAddr)
		}
		if st.Failovers < 1 {
			return fmt.Errorf("agent status: %d failovers", st.Failovers)
		}
		since = st.ConnectedSince
		return nil
	})
	failover := since.Sub(killed)
	t.Logf("failover time: collector A killed (SIGKILL) → the agent's subscription up at B: %s (bound %s)", failover.Round(time.Millisecond), failoverBound)
	if failover > failoverBound {
		t.Errorf("failover took %s, above the backoff bound %s", failover, failoverBound)
	}
	flow.waitMore(t, 50, 30*time.Second)
	ca := &chaosAgent{a: ag, id: id, flow: flow, starts: 1}
	finishChaos(t, b, []*chaosAgent{ca})
}
