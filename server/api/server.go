package api

import (
	"context"
	"crypto/tls"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Limits of the gRPC listener, per connection. One client must not be able
// to hold the collector's memory: a connection carries at most
// MaxConcurrentStreams streams at once, buffers at most ConnWindowBytes of
// unread data (StreamWindowBytes per stream: fixed windows, so HTTP/2's
// bandwidth estimate cannot grow them to 16 MiB), and at most
// MaxHeaderListBytes of headers per request. A TLS handshake must finish
// within HandshakeTimeout; a connection without a call for
// MaxConnectionIdle is closed (an agent always holds its Subscribe stream).
const (
	MaxConcurrentStreams = 100
	StreamWindowBytes    = 1 << 20
	ConnWindowBytes      = 2 << 20
	MaxHeaderListBytes   = 64 << 10
	HandshakeTimeout     = 20 * time.Second
	MaxConnectionIdle    = 15 * time.Minute
)

// NewGRPCServer returns a gRPC server with both services registered behind
// authentication, on TLS that requests a client certificate. The chain is
// verified once per connection right after the handshake (verifyingCreds),
// and the interceptors refuse with the outcome: failing the handshake
// instead would leave a refused agent a TLS alert, not the reason.
//
// TLS 1.3 session tickets stay on (crypto/tls's default): an agent that
// reconnects resumes its session without the full handshake, which is what
// lets a restarted collector take its terminals back at thousands per
// second; with Config.SessionTicketSecret the tickets outlive the process
// (agent_tickets.go). A resumed session carries the client certificate of the session
// it resumes (crypto/tls refuses to resume one whose certificate expired),
// and it is verified and checked against the store as any other.
func (s *Services) NewGRPCServer(cert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *grpc.Server {
	pool := s.cfg.CA.Pool()
	auth := &Authenticator{CA: pool, Store: s.cfg.Store, Now: s.cfg.Now, Retired: s.hub.retire, certs: s.certs}
	tlsCfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: cert,
		NextProtos:     []string{"h2"},
	}
	if len(s.cfg.SessionTicketSecret) > 0 {
		tc := &ticketConfigs{base: tlsCfg.Clone(), secret: s.cfg.SessionTicketSecret, now: time.Now}
		tlsCfg.GetConfigForClient = tc.get
	}
	creds := verifyingCreds{TransportCredentials: credentials.NewTLS(tlsCfg), v: newChainVerifier(pool, s.cfg.Now, 0)}
	m := s.cfg.Metrics
	count := func(method string, err error) {
		m.rpcs.WithLabelValues(method, status.Code(err).String()).Inc()
	}
	opts := []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.InitialWindowSize(StreamWindowBytes),
		grpc.InitialConnWindowSize(ConnWindowBytes),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
		grpc.ConnectionTimeout(HandshakeTimeout),
		// No read buffer of gRPC's own: TLS buffers a record already, so
		// the 32 KiB read buffer only copied it again. 31 KiB less per
		// idle connection of 100,000 terminals (BenchmarkIdleStreams).
		// The write buffer goes back to a shared pool after each flush
		// already (grpc-go's default since 1.7x).
		grpc.ReadBufferSize(0),
		// Clients that ping more often than every 10 s are sent away
		// (GOAWAY too_many_pings); the server pings a connection silent for
		// 2 min and drops it when no answer comes within 20 s.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second, MaxConnectionIdle: MaxConnectionIdle}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			count(info.FullMethod, err)
			return resp, err
		}, auth.Unary),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			count(info.FullMethod, err)
			return err
		}, auth.Stream),
	}
	srv := grpc.NewServer(append(opts, s.grpcOptions...)...)
	mnguardv1.RegisterAgentServiceServer(srv, s.Agent)
	mnguardv1.RegisterAdminServiceServer(srv, s.Admin)
	return srv
}
