//go:build linux

package netcheck

import (
	"context"
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// openConns opens n real TCP connections on loopback (2n+1 descriptors
// in this process: the file limit here is 20,000) and closes them at the
// end of the benchmark.
func openConns(b *testing.B, n int) {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	conns := make([]net.Conn, 0, 2*n)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		conns = append(conns, <-accepted)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScanSockets5000 lists every socket, with process name and
// user, while this process holds 5,000 TCP connections on loopback (10,000
// sockets, both ends, and a listener). Reported per scan: CPU time
// (rusage, user + system), wall time, allocations, the sockets found.
//
// Two implementations side by side: gopsutil's ConnectionsWithoutUids
// (/proc/net/{tcp,udp}{,6} and every process's fds) and sock_diag with one
// pass over /proc/*/fd; both name processes and users through gopsutil.
func BenchmarkScanSockets5000(b *testing.B) {
	const n = 5000
	openConns(b, n)
	h, err := openDiag(netns.None())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	b.Run("gopsutil", func(b *testing.B) { benchScan(b, n, listSockets) })
	b.Run("sock_diag", func(b *testing.B) {
		benchScan(b, n, func(ctx context.Context) ([]Socket, error) { return diagSockets(ctx, h) })
	})
}

func benchScan(b *testing.B, n int, list func(context.Context) ([]Socket, error)) {
	ctx := context.Background()
	socks, err := list(ctx) // warm: the first scan pays for page cache and maps
	if err != nil {
		b.Fatal(err)
	}
	if len(socks) < 2*n {
		b.Fatalf("%d sockets listed, want at least %d", len(socks), 2*n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, wall0 := cpuTime(), time.Now()
	found := 0
	for b.Loop() {
		socks, err := list(ctx)
		if err != nil {
			b.Fatal(err)
		}
		found = len(socks)
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(per(cpu), "cpu_ms/scan")
	b.ReportMetric(per(wall), "wall_ms/scan")
	b.ReportMetric(float64(found), "sockets")
	fmt.Printf("%s: scan of %d sockets (%d connections): %.1f ms CPU, %.1f ms wall per scan over %d scans\n",
		b.Name(), found, n, per(cpu), per(wall), b.N)
}

// BenchmarkRouteChangeToNotify times, in a namespace of its own, 100
// route changes (50 adds and 50 deletions of a default route) from just
// before the netlink request is sent to Watch's callback, and reports
// p50 and p99.
func BenchmarkRouteChangeToNotify(b *testing.B) {
	const changes = 100
	var lat []time.Duration
	for b.Loop() {
		lat = append(lat, routeChanges(b, changes)...)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	p50, p99, worst := pct(0.50), pct(0.99), lat[len(lat)-1]
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(p50), "p50_ms")
	b.ReportMetric(ms(p99), "p99_ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("route change to notify: %d changes: p50 %s, p99 %s, max %s\n", len(lat), p50, p99, worst)
}

func routeChanges(b *testing.B, changes int) []time.Duration {
	ns := newNS(b)
	h := handleIn(b, ns)
	dummy, _, _ := terminal(b, h)
	p := platformIn(b, ns, PlatformOptions{})
	ch, stop := watcher(b, p, h)
	defer stop()
	drain(ch)
	def := &netlink.Route{LinkIndex: dummy.Attrs().Index, Gw: net.ParseIP("198.51.100.2")}
	lat := make([]time.Duration, 0, changes)
	for i := range changes {
		start := time.Now()
		var err error
		if i%2 == 0 {
			err = h.RouteAdd(def)
		} else {
			err = h.RouteDel(def)
		}
		if err != nil {
			b.Fatalf("change %d: %v", i, err)
		}
		select {
		case what := <-ch:
			lat = append(lat, time.Since(start))
			if what != "route" {
				b.Fatalf("change %d reported as %q", i, what)
			}
		case <-time.After(2 * time.Second):
			b.Fatalf("change %d not reported within 2 s", i)
		}
		// Nothing else may be pending before the next change.
		select {
		case what := <-ch:
			b.Fatalf("change %d reported twice (%q)", i, what)
		case <-time.After(2 * time.Millisecond):
		}
	}
	return lat
}
