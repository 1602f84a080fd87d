package api

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
)

// BenchmarkIdleStreams opens MNGUARD_BENCH_STREAMS (default 500) terminals,
// each with its own mutual-TLS connection and Subscribe stream, to an
// in-process collector, and reports what each idle stream costs the
// process: goroutines and heap bytes per stream (clients included: the
// same in every variant, so the variants' differences are the server's),
// with the gRPC server options as they are and with variants of them.
func BenchmarkIdleStreams(b *testing.B) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("MNGUARD_BENCH_STREAMS")); err == nil && v > 0 {
		n = v
	}
	for _, v := range []struct {
		name string
		opts []grpc.ServerOption
	}{
		{"as-configured", nil},
		// The options before the tuning: gRPC's default buffers.
		{"grpc-default-buffers", []grpc.ServerOption{grpc.ReadBufferSize(32 << 10), grpc.WriteBufferSize(32 << 10)}},
		{"read-buffer-4k", []grpc.ServerOption{grpc.ReadBufferSize(4 << 10)}},
		{"write-buffer-4k", []grpc.ServerOption{grpc.WriteBufferSize(4 << 10)}},
		{"grpc-default-windows", []grpc.ServerOption{grpc.InitialWindowSize(64 << 10), grpc.InitialConnWindowSize(64 << 10)}},
	} {
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				idleStreams(b, n, v.opts)
			}
		})
	}
}

func idleStreams(b *testing.B, n int, opts []grpc.ServerOption) {
	c := startBenchCollector(b, opts...)
	certs := make([]mnguardv1.AgentServiceClient, n)
	for i := range certs {
		certs[i] = mnguardv1.NewAgentServiceClient(c.dial(b, c.enroll(b)))
	}
	g0, h0 := processFigures()
	ctx := b.Context()
	streams := make([]mnguardv1.AgentService_SubscribeClient, n)
	for i, a := range certs {
		st, err := a.Subscribe(ctx, &mnguardv1.SubscribeRequest{})
		if err != nil {
			b.Fatal(err)
		}
		for range 2 { // exemptions, policy
			if _, err := st.Recv(); err != nil {
				b.Fatal(err)
			}
		}
		streams[i] = st
	}
	time.Sleep(500 * time.Millisecond)
	g1, h1 := processFigures()
	if got := c.svc.beats.count(); got != n {
		b.Fatalf("%d streams registered, want %d", got, n)
	}
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/stream")
	b.ReportMetric((h1-h0)/float64(n)/1024, "heap-KB/stream")
	fmt.Fprintf(os.Stderr, "%s: %d streams: %.2f goroutines and %.1f KB heap per stream (connection included, clients too)\n",
		b.Name(), n, float64(g1-g0)/float64(n), (h1-h0)/float64(n)/1024)
}

// processFigures returns the goroutines and the bytes of live heap
// objects after a collection.
func processFigures() (int, float64) {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return runtime.NumGoroutine(), float64(s[0].Value.Uint64())
}
