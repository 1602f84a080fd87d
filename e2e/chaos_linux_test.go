package e2e

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func signalProc(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// freeze stops the collector's process (SIGSTOP) until thaw: its sockets
// stay open and accept what the agents send, but nothing answers.
func freeze(t *testing.T, c *collector) {
	t.Helper()
	p := c.proc
	signalProc(t, p, syscall.SIGSTOP)
	t.Cleanup(func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) })
}

func thaw(t *testing.T, c *collector) { signalProc(t, c.proc, syscall.SIGCONT) }

// TestChaosCollectorStopped30s: the collector is stopped (SIGTERM) for 30 s
// while two agents generate events, then started again. The events of the
// outage wait in the agents' spools (status.json counts them) and arrive
// after the restart: every one stored once, none lost.
func TestChaosCollectorStopped30s(t *testing.T) {
	t.Parallel()
	c := newCollector(t)
	agents := chaosAgents(t, c, 2, 0x100, 100*time.Millisecond)
	for _, ca := range agents {
		ca.flow.waitMore(t, 20, 20*time.Second)
	}

	signalProc(t, c.proc, syscall.SIGTERM)
	select {
	case <-c.proc.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the collector did not stop within 15 s of SIGTERM")
	}
	down := time.Now()
	before := make([]int, len(agents))
	for i, ca := range agents {
		before[i] = ca.flow.certain()
	}
	time.Sleep(30*time.Second - time.Since(down))
	for i, ca := range agents {
		during := ca.flow.certain() - before[i]
		if during < 100 {
			t.Errorf("terminal %s: only %d events generated in the 30 s outage; the flow stalled", ca.id, during)
		}
		// Nothing was acknowledged while the collector was away: the
		// spool holds at least what was generated meanwhile.
		eventually(t, 5*time.Second, func() error {
			if st := agentStatus(t, ca.a); st.PendingEvents < during {
				return fmt.Errorf("terminal %s: %d events spooled, %d generated during the outage", ca.id, st.PendingEvents, during)
			}
			return nil
		})
	}
	c.start(t)
	t.Logf("collector back after %s", time.Since(down).Round(time.Millisecond))
	for _, ca := range agents {
		ca.flow.waitMore(t, 30, 20*time.Second)
	}
	finishChaos(t, c, agents)
}

// TestChaosAgentKilledMidReport: agents are killed with SIGKILL in the
// middle of a batch. In the even rounds the collector is frozen (SIGSTOP)
// first, so that each agent's report of the events generated meanwhile is
// sent and waits; then the agent is frozen too and the collector resumes:
// it stores the report and answers, and the agent is killed before it
// reads the answer, so the batch is stored but not acknowledged (counted:
// the test fails if no round left such a batch). In the odd rounds the
// kill lands at a random moment of the flow. The agents restart and
// resend; each event is stored once.
func TestChaosAgentKilledMidReport(t *testing.T) {
	t.Parallel()
	c := newCollector(t)
	agents := chaosAgents(t, c, 2, 0x200, 50*time.Millisecond)
	for round := range 4 {
		for _, ca := range agents {
			ca.flow.waitMore(t, 20, 20*time.Second)
		}
		inBatch := round%2 == 0
		if inBatch {
			freeze(t, c)
			for _, ca := range agents {
				ca.flow.waitMore(t, 10, 20*time.Second)
			}
			// The reports of these events are sent and wait.
			time.Sleep(300 * time.Millisecond)
			for _, ca := range agents {
				signalProc(t, ca.a.proc, syscall.SIGSTOP)
			}
			thaw(t, c)
			time.Sleep(time.Second)
		} else {
			time.Sleep(time.Duration(rand.N(500)) * time.Millisecond)
		}
		for _, ca := range agents {
			ca.kill(t)
		}
		stored := 0
		for _, ca := range agents {
			n := storedUnacked(t, c, ca)
			t.Logf("round %d: terminal %s killed with %d events stored but not acknowledged", round, ca.id, n)
			stored += n
		}
		if inBatch && stored == 0 {
			t.Errorf("round %d: the agents were killed with their reports answered but unread, yet the collector stored none of them", round)
		}
		for _, ca := range agents {
			ca.restart(t)
		}
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 20, 20*time.Second)
	}
	finishChaos(t, c, agents)
}

// TestChaosCollectorKilledMidCommit: the collector is killed with SIGKILL
// while it writes reports. Freezing it (SIGSTOP) lets a burst of reports
// from three agents build up; it resumes, and is killed the moment its
// SQLite write-ahead log changes, that is while a transaction writes it.
// After each restart the agents resend what was not acknowledged.
func TestChaosCollectorKilledMidCommit(t *testing.T) {
	t.Parallel()
	c := newCollector(t)
	agents := chaosAgents(t, c, 3, 0x300, 50*time.Millisecond)
	wal := filepath.Join(c.dir, "mnguard.db-wal")
	for round := range 3 {
		for _, ca := range agents {
			ca.flow.waitMore(t, 20, 20*time.Second)
		}
		freeze(t, c)
		for _, ca := range agents {
			ca.flow.waitMore(t, 20, 20*time.Second)
		}
		before := walState(t, wal)
		thaw(t, c)
		start := time.Now()
		for walState(t, wal) == before {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("round %d: the collector wrote nothing to %s within 10 s of resuming with reports waiting", round, wal)
			}
			time.Sleep(100 * time.Microsecond)
		}
		signalProc(t, c.proc, syscall.SIGKILL)
		<-c.proc.done
		t.Logf("round %d: collector killed %s after it resumed, as its write-ahead log changed", round, time.Since(start).Round(time.Microsecond))
		time.Sleep(time.Second)
		c.start(t)
	}
	for _, ca := range agents {
		ca.flow.waitMore(t, 20, 20*time.Second)
	}
	finishChaos(t, c, agents)
}

// walState is the size and modification time of a SQLite write-ahead log:
// a transaction that writes changes it.
func walState(t *testing.T, path string) [2]int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return [2]int64{st.Size, st.Mtim.Nano()}
}
