package retry

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// serveHealth serves gRPC's health service on addr ("127.0.0.1:0" for any
// port) until the test ends or stop is called.
func serveHealth(t *testing.T, addr string) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}

// TestAwaitReady: a connection whose collector went away and came back
// stays failed for the rest of gRPC's backoff (20 s here), so a fail-fast
// call fails although the server answers; AwaitReady connects at once.
func TestAwaitReady(t *testing.T) {
	addr, stop := serveHealth(t, "127.0.0.1:0")
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Second, Multiplier: 1, MaxDelay: 20 * time.Second},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if !AwaitReady(context.Background(), conn, 5*time.Second) {
		t.Fatalf("first connection not ready: %v", conn.GetState())
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}

	stop()
	// gRPC reconnects; refused, it waits out its backoff.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for s := conn.GetState(); s != connectivity.TransientFailure; s = conn.GetState() {
		conn.Connect()
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("connection never failed with the server gone: %v", s)
		}
	}
	serveHealth(t, addr)
	if err := check(); status.Code(err) != codes.Unavailable {
		t.Fatalf("check during gRPC's backoff, server back: %v, want Unavailable (the wait AwaitReady removes)", err)
	}
	start := time.Now()
	if !AwaitReady(context.Background(), conn, 5*time.Second) {
		t.Fatalf("not ready after the server came back: %v", conn.GetState())
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("AwaitReady took %s with the server up", took)
	}
	if err := check(); err != nil {
		t.Fatalf("check after AwaitReady: %v", err)
	}
}

// TestAwaitReadyRefused: from a new connection a refused attempt ends the
// wait at once (the agent fails over without waiting out the bound); from
// a failed one, gRPC's next attempts are waited for until the bound.
func TestAwaitReadyRefused(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(Dialer(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if AwaitReady(context.Background(), conn, 10*time.Second) {
		t.Fatal("ready with nothing listening")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a new connection, refused: gave up after %s, want at once", took)
	}
	if s := conn.GetState(); s != connectivity.TransientFailure {
		t.Fatalf("state %v after a refused attempt", s)
	}
	start = time.Now()
	if AwaitReady(context.Background(), conn, 300*time.Millisecond) {
		t.Fatal("ready with nothing listening")
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("a failed connection: gave up after %s, want the bound, 300 ms", took)
	}
}
