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

// NewGRPCServer returns a gRPC server with both services registered behind
// authentication, on TLS that requests (and the interceptors then verify)
// a client certificate. Verifying in the interceptor rather than in the
// handshake lets a refused agent read why.
func (s *Services) NewGRPCServer(cert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *grpc.Server {
	auth := &Authenticator{CA: s.cfg.CA.Pool(), Store: s.cfg.Store, Now: s.cfg.Now}
	tlsCfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: cert,
		NextProtos:     []string{"h2"},
	}
	m := s.cfg.Metrics
	count := func(method string, err error) {
		m.rpcs.WithLabelValues(method, status.Code(err).String()).Inc()
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
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
	)
	mnguardv1.RegisterAgentServiceServer(srv, s.Agent)
	mnguardv1.RegisterAdminServiceServer(srv, s.Admin)
	return srv
}
