//go:build linux

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkRouteChangeToEvent is the route-change-to-event latency as an
// operator sees it: from 'ip route add' (a netlink request) in the
// terminal's namespace to the network.finding event stored by the
// collector (its received_at; one clock, one machine), over
// MNGUARD_BENCH_ROUTE_CHANGES (default 100) routes to disallowed networks,
// each removed again (and its finding cleared) before the next. The
// report interval is 60 s: every event is announced, none polled. Also
// printed: to the agent's event time (the agent's part) and to the
// finding_cleared after 'ip route del'.
func BenchmarkRouteChangeToEvent(b *testing.B) {
	s := newSegment(b, "60s")
	s.a.start(b)
	s.c.waitReported(b, s.id, 15*time.Second)
	admin := s.c.adminClient(b)
	version := s.setPolicy(b, "--allow-network", allowedNet, "--allow-network", allowedNet6, "--allow-dns", allowedDNS)
	s.network(b, admin, 10*time.Second, "the policy in force", func(np *mnguardv1.NetworkPosture) bool {
		return np.GetPolicyVersion() == version
	})
	n := envInt("MNGUARD_BENCH_ROUTE_CHANGES", 100)
	var toCollector, toAgent, toCleared []time.Duration
	for b.Loop() {
		toCollector, toAgent, toCleared = toCollector[:0], toAgent[:0], toCleared[:0]
		for i := range n {
			dst := fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)
			added := time.Now()
			s.term.ip(b, "route", "add", dst, "via", deniedIP)
			ev := s.waitRouteEvent(b, admin, "network.finding", dst, added)
			toCollector = append(toCollector, ev.GetReceivedAt().AsTime().Sub(added))
			toAgent = append(toAgent, ev.GetEvent().GetTime().AsTime().Sub(added))
			deleted := time.Now()
			s.term.ip(b, "route", "del", dst, "via", deniedIP)
			cl := s.waitRouteEvent(b, admin, "network.finding_cleared", dst, deleted)
			toCleared = append(toCleared, cl.GetReceivedAt().AsTime().Sub(deleted))
		}
	}
	b.StopTimer()
	p := func(d []time.Duration, q float64) time.Duration {
		slices.Sort(d)
		return d[min(len(d)-1, int(float64(len(d))*q))]
	}
	p50, p99 := p(toCollector, 0.50), p(toCollector, 0.99)
	b.ReportMetric(ms(p50), "p50_ms")
	b.ReportMetric(ms(p99), "p99_ms")
	b.ReportMetric(ms(p(toAgent, 0.50)), "agent_p50_ms")
	b.ReportMetric(ms(p(toCleared, 0.50)), "cleared_p50_ms")
	fmt.Printf("route change to event at the collector, %d routes added in the terminal namespace (report interval 60 s): p50 %s, p99 %s, max %s; "+
		"to the agent's event time p50 %s, p99 %s; route removed to finding_cleared at the collector p50 %s, p99 %s\n",
		n, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), toCollector[len(toCollector)-1].Round(100*time.Microsecond),
		p(toAgent, 0.50).Round(100*time.Microsecond), p(toAgent, 0.99).Round(100*time.Microsecond),
		p(toCleared, 0.50).Round(100*time.Microsecond), p(toCleared, 0.99).Round(100*time.Microsecond))
}

// waitRouteEvent waits for the event of type typ about the route to dst,
// received since.
func (s *segment) waitRouteEvent(b testing.TB, admin mnguardv1.AdminServiceClient, typ, dst string, since time.Time) *mnguardv1.StoredEvent {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := admin.ListEvents(b.Context(), &mnguardv1.ListEventsRequest{TerminalId: s.id, Type: typ, Limit: 100, Since: timestamppb.New(since)})
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range resp.GetEvents() {
			a := e.GetEvent().GetAttributes()
			if a["kind"] == "route" && (a["address"] == dst || strings.Contains(a["detail"], dst)) {
				return e
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no %s event for the route to %s within 10s", typ, dst)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
