package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// BenchmarkExemptionToWritable measures, MNGUARD_BENCH_EXEMPTIONS times
// (default 100), from the helpdesk's IssueExemption call (in-process admin
// client over mTLS to the collector process) until a real write to the
// stick's mounted filesystem succeeds: collector signing and storing, the
// push over the agent's Subscribe stream, the agent's signature check, and
// the media side making the loop device and its mount writable. Each round
// is revoked and waited read-only before the next.
func BenchmarkExemptionToWritable(b *testing.B) {
	testenv.LockLoops(b)
	n := envInt("MNGUARD_BENCH_EXEMPTIONS", 100)
	c := newCollector(b, "--log-level", "warn")
	a, id := enrolledAgent(b, c, "60s")
	appendConfig(b, a, "media:\n  reconcile_interval: 10s\n  treat_as_removable: [\"loop*\"]\n")
	a.start(b)
	c.waitReported(b, id, 10*time.Second)
	stick := newLoopDisk(b, 32, "ext4")
	mnt := stick.mount(b, stick.parts[0])
	eventually(b, 10*time.Second, func() error { return mountedRO(mnt) })
	admin := c.adminClient(b)
	dev, err := exemption.ParseDevice(loopID(stick))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, n)
	b.ResetTimer()
	for range n {
		start := time.Now()
		resp, err := admin.IssueExemption(ctx, &mnguardv1.IssueExemptionRequest{TerminalId: id, Device: dev,
			DurationSeconds: 3600, Reason: "benchmark", Ticket: "BENCH"})
		if err != nil {
			b.Fatal(err)
		}
		for writeWorks(mnt) != nil {
			if time.Since(start) > 10*time.Second {
				b.Fatalf("not writable 10s after the exemption was issued")
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
		if _, err := admin.RevokeExemption(ctx, &mnguardv1.RevokeExemptionRequest{Id: resp.GetExemption().GetExemption().GetId(), Reason: "benchmark"}); err != nil {
			b.Fatal(err)
		}
		eventually(b, 10*time.Second, func() error { return writeFails(filepath.Join(mnt, "after")) })
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(ms(pct(0.5)), "p50_ms")
	b.ReportMetric(ms(pct(0.99)), "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("exemption, issue to writable (real write on the mounted stick): %d exemptions, p50 %s, p99 %s, max %s\n",
		n, pct(0.5).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
}
