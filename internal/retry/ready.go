package retry

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Connection timeouts of an agent (and of the load generator that
// simulates agents).
const (
	// DialTimeout bounds the TCP connect to one collector address: an
	// address that does not answer (a host gone, a route black-holed) is
	// given up soon, and the agent fails over to the next.
	DialTimeout = 5 * time.Second
	// HandshakeTimeout bounds a connection attempt once TCP is up: TLS
	// and HTTP/2's preface, what gRPC's MinConnectTimeout bounds. The
	// collector at that address is alive, only busy: after a restart it
	// takes its whole fleet's handshakes at once. An attempt abandoned
	// before the collector answers is CPU it spent for nothing, and the
	// retry queues again behind everyone else: with 5 s, a restarted
	// collector of 5,000 terminals on 2 cores spent seconds on handshakes
	// their agents had already given up. The collector allows 20 s
	// (api.HandshakeTimeout).
	HandshakeTimeout = 20 * time.Second
)

// Dialer returns a gRPC context dialer whose TCP connect gives up after
// DialTimeout, from local when it is not nil.
func Dialer(local net.Addr) func(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: DialTimeout, LocalAddr: local}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
}

// AwaitReady has conn connect now and waits until it is READY, at most
// most (or until ctx ends), and reports whether it is.
//
// A connection that failed is held by gRPC in TRANSIENT_FAILURE until its
// own backoff ends, and a fail-fast RPC made meanwhile fails at once: the
// caller's backoff (FullJitter) then runs on top of gRPC's, and a fleet
// reconnecting after a collector restart waits out both. AwaitReady resets
// gRPC's backoff, so the caller's wait is the only one between attempts,
// and lets the attempt finish before the RPC that follows, which then
// fails, if it does, with gRPC's own error and its cause.
//
// From a new or idle connection, the first failed attempt ends the wait
// (the caller moves on to another address at once). A connection already
// failed stays in TRANSIENT_FAILURE while gRPC tries again (gRFC A62): it
// is waited for until READY or most.
func AwaitReady(ctx context.Context, conn *grpc.ClientConn, most time.Duration) bool {
	if conn.GetState() != connectivity.TransientFailure {
		return Ready(ctx, conn, most)
	}
	conn.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(ctx, most)
	defer cancel()
	if !conn.WaitForStateChange(ctx, connectivity.TransientFailure) {
		return false
	}
	return Ready(ctx, conn, most)
}

// Ready reports whether conn is READY or becomes so within wait, connecting
// it if it is idle; a failed connection (TRANSIENT_FAILURE) is not waited
// for. A nil conn is not ready.
func Ready(ctx context.Context, conn *grpc.ClientConn, wait time.Duration) bool {
	if conn == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		case connectivity.Idle:
			conn.Connect()
		}
		if !conn.WaitForStateChange(ctx, s) {
			return false
		}
	}
}
