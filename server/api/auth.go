// Package api implements the collector's gRPC services and the interceptors
// that authenticate terminals (client certificates) and operators (API tokens).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/mnguard/mnguard/server/authz"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

type ctxKey int

const (
	terminalKey ctxKey = iota
	operatorKey
)

// Terminal is the authenticated caller of an agent RPC.
type Terminal struct {
	ID     string
	Serial string
	Cert   *x509.Certificate
}

// Operator is the authenticated caller of an admin RPC or a web action.
type Operator struct {
	Name string
	Role string
	// Via says how the operator acts, for the audit log: "token ID" or
	// "web session 1a2b3c4d".
	Via string
}

// Authenticator decides who is calling. It is installed as a gRPC
// interceptor pair on the collector's one listener: agent RPCs need a client
// certificate from the CA that the store knows and has not revoked; admin
// RPCs need an operator API token; Enroll needs neither (its token is in the
// request).
type Authenticator struct {
	CA    *x509.CertPool
	Store store.Store
	Now   func() time.Time
	// Retired, when set, is told of the certificates of a terminal that
	// the first use of a renewed one retired (the collector ends their
	// streams).
	Retired func(terminalID string, serials []string)
	// certs, when set, lets Report skip the read of a certificate the
	// store confirmed before (see certCache).
	certs *certCache
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Unary is the unary server interceptor.
func (a *Authenticator) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor.
func (a *Authenticator) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// authenticate finds who calls method and checks it against the
// authorization table: a method the table does not list is refused before
// anything else, then the caller must be one the table names for it.
func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	if !authz.ListedRPC(method) {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not in the collector's authorization table: nobody may call it", method)
	}
	switch {
	case authz.AllowsRPC(method, authz.Anyone):
		return ctx, nil
	case authz.AllowsRPC(method, authz.Terminal):
		t, err := a.terminal(ctx, method)
		if err != nil {
			return nil, err
		}
		return context.WithValue(ctx, terminalKey, t), nil
	}
	op, err := a.operator(ctx)
	if err != nil {
		return nil, err
	}
	if !authz.AllowsRPC(method, op.Role) {
		who, _ := authz.RPC(method)
		return nil, status.Errorf(codes.PermissionDenied, "role %s may not call %s (needs %s)", op.Role, path.Base(method), strings.Join(who, " or "))
	}
	return context.WithValue(ctx, operatorKey, op), nil
}

// reportMethod is the one agent RPC that may authenticate from the
// certificate cache (see certCache).
const reportMethod = "/mnguard.v1.AgentService/Report"

// terminal verifies the peer's client certificate against the CA (once per
// connection, see verifyingCreds) and the store's record of it.
func (a *Authenticator) terminal(ctx context.Context, method string) (*Terminal, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "client certificate required")
	}
	var chain *chainResult
	switch info := p.AuthInfo.(type) {
	case verifiedTLSInfo:
		chain = info.chain
	case credentials.TLSInfo:
		// A server without verifyingCreds: verify here.
		if len(info.State.PeerCertificates) == 0 {
			return nil, status.Error(codes.Unauthenticated, "client certificate required: this terminal is not enrolled")
		}
		chain = verifyChain(info.State.PeerCertificates, a.CA, a.now())
	default:
		return nil, status.Error(codes.Unauthenticated, "client certificate required: this terminal is not enrolled")
	}
	now := a.now()
	if err := chain.check(now); err != nil {
		return nil, err
	}
	leaf, serial := chain.leaf, chain.serial
	if method == reportMethod && a.certs != nil {
		if id, ok := a.certs.get(serial); ok && id == leaf.Subject.CommonName {
			return &Terminal{ID: id, Serial: serial, Cert: leaf}, nil
		}
	}
	rec, err := a.Store.Certificate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate %s is unknown to this collector: enroll this terminal again", serial)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "look up client certificate: %v", err)
	}
	if !rec.RevokedAt.IsZero() {
		return nil, status.Errorf(codes.PermissionDenied, "client certificate %s was revoked at %s: enroll this terminal again", serial, rec.RevokedAt.UTC().Format(time.RFC3339))
	}
	if rec.TerminalID != leaf.Subject.CommonName {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate %s does not belong to terminal %q", serial, leaf.Subject.CommonName)
	}
	if !rec.RetiredAt.IsZero() {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate %s was replaced by the renewed certificate %s at %s: use that one, or enroll this terminal again",
			serial, rec.ReplacedBy, rec.RetiredAt.UTC().Format(time.RFC3339))
	}
	if rec.FirstUsedAt.IsZero() {
		// A renewed certificate in use retires the ones before it.
		retired, err := a.Store.UseCertificate(ctx, serial, now, store.AuditEntry{Time: now, Actor: "terminal " + rec.TerminalID, Action: "certificate.retire"})
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "record client certificate use: %v", err)
		}
		if len(retired) > 0 {
			if a.certs != nil {
				a.certs.forget(retired)
			}
			if a.Retired != nil {
				a.Retired(rec.TerminalID, retired)
			}
		}
	}
	if a.certs != nil {
		a.certs.put(serial, rec.TerminalID)
	}
	return &Terminal{ID: rec.TerminalID, Serial: serial, Cert: leaf}, nil
}

// HashToken is how API and enrollment tokens are stored: they are long
// random strings, so one SHA-256 is enough.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

func (a *Authenticator) operator(ctx context.Context) (*Operator, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return nil, status.Error(codes.Unauthenticated, "API token required (authorization: Bearer TOKEN)")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || tok == "" || len(tok) > 256 {
		return nil, status.Error(codes.Unauthenticated, "malformed authorization header: want Bearer TOKEN")
	}
	rec, err := a.Store.OperatorTokenByHash(ctx, HashToken(strings.TrimSpace(tok)))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Error(codes.Unauthenticated, "API token not recognised")
	case errors.Is(err, store.ErrRevoked):
		return nil, status.Error(codes.Unauthenticated, "API token revoked")
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "look up API token: %v", err)
	case rec.OperatorDisabled:
		return nil, status.Errorf(codes.PermissionDenied, "operator %s is disabled", rec.Name)
	case !rec.ExpiresAt.IsZero() && !a.now().Before(rec.ExpiresAt):
		return nil, status.Errorf(codes.Unauthenticated, "API token expired at %s", rec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return &Operator{Name: rec.Name, Role: rec.Role, Via: "token " + rec.ID}, nil
}

// TerminalFrom returns the authenticated terminal of an agent RPC.
func TerminalFrom(ctx context.Context) (*Terminal, error) {
	t, ok := ctx.Value(terminalKey).(*Terminal)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "client certificate required")
	}
	return t, nil
}

// OperatorFrom returns the authenticated operator of an admin RPC.
func OperatorFrom(ctx context.Context) (*Operator, error) {
	op, ok := ctx.Value(operatorKey).(*Operator)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "API token required")
	}
	return op, nil
}

// WithOperator returns ctx carrying op as the authenticated operator: the
// web console calls the admin service in-process for the operator behind a
// session, after checking the route against the authorization table.
func WithOperator(ctx context.Context, op *Operator) context.Context {
	return context.WithValue(ctx, operatorKey, op)
}

func (o *Operator) String() string { return fmt.Sprintf("%s (%s)", o.Name, o.Role) }

// Actor is how the audit log names the operator: name, role and how they
// acted.
func (o *Operator) Actor() string { return fmt.Sprintf("%s (%s, %s)", o.Name, o.Role, o.Via) }
