package e2e

import (
	"testing"
	"time"
)

// BenchmarkSubscribeFlood: 10,000 Subscribe attempts with one terminal's
// certificate over 10 connections against a real collector process, every
// stream left open by the client. It reports the streams the collector
// still holds afterwards (its mnguard_agent_streams gauge) and how its heap
// in use (go_memstats_heap_inuse_bytes) and resident set (VmRSS) grew.
func BenchmarkSubscribeFlood(b *testing.B) {
	const attempts = 10000
	c := newCollector(b, "--log-level", "warn")
	id := enrollInProcess(b, c, c.token(b, "1h", 1), "flooder")
	mc := c.metricsClient(b)
	pid := c.proc.cmd.Process.Pid
	// Warm up: a connection and one stream, so the figures show what the
	// flood adds.
	subscribeFlood(b, c, id.TLSCertificate(), 1, 1, nil)
	time.Sleep(500 * time.Millisecond)
	heap0, rss0 := c.metric(b, mc, "go_memstats_heap_inuse_bytes"), rssBytes(b, pid)
	b.ResetTimer()
	var res floodResult
	for range b.N {
		res = subscribeFlood(b, c, id.TLSCertificate(), attempts, 10, nil)
	}
	b.StopTimer()
	// Let the collector finish ending the streams it replaced.
	time.Sleep(time.Second)
	open := c.metric(b, mc, "mnguard_agent_streams")
	heap1, rss1 := c.metric(b, mc, "go_memstats_heap_inuse_bytes"), rssBytes(b, pid)
	b.ReportMetric(float64(attempts)/res.duration.Seconds(), "attempts/s")
	b.ReportMetric(float64(res.opened), "streams-accepted")
	b.ReportMetric(open, "streams-open")
	b.ReportMetric((heap1-heap0)/(1<<20), "heap-inuse-delta-MiB")
	b.ReportMetric((rss1-rss0)/(1<<20), "rss-delta-MiB")
}
