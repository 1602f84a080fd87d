package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
	"github.com/mnguard/mnguard/internal/version"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

const defaultTimeout = 10 * time.Second

// connConfig says where the admin API is and how to talk to it.
type connConfig struct {
	server  string // HOST:PORT
	host    string // HOST, the name the server certificate must have
	token   string
	pin     string // canonical "sha256:HEX"
	timeout time.Duration
}

// String describes c without its token.
func (c connConfig) String() string {
	return fmt.Sprintf("server=%s pin=%s timeout=%s token=[redacted]", c.server, c.pin, c.timeout)
}

// GoString is String, so that %#v does not print the token either.
func (c connConfig) GoString() string { return c.String() }

// resolveConn builds the connection settings from flags and environment.
func resolveConn(o *options, getenv func(string) string) (connConfig, error) {
	var c connConfig

	server, from := o.server.or(getenv, "MNGUARD_SERVER", "--server")
	if server == "" {
		return c, usagef("missing server address: set --server HOST:PORT or MNGUARD_SERVER")
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil || host == "" || port == "" {
		return c, usagef("invalid server address %q from %s: want HOST:PORT", server, from)
	}
	c.server, c.host = server, host

	c.token, err = resolveToken(o, getenv)
	if err != nil {
		return c, err
	}

	rawPin, from := o.caPin.or(getenv, "MNGUARD_CA_PIN", "--ca-pin")
	if rawPin == "" {
		return c, usagef("missing CA pin: set --ca-pin sha256:HEX or MNGUARD_CA_PIN (on the collector, 'mnguardctl ca pin --data-dir DIR' prints it)")
	}
	if c.pin, err = pki.ParsePin(rawPin); err != nil {
		return c, usagef("invalid CA pin from %s: %v", from, err)
	}

	c.timeout, err = resolveTimeout(o, getenv)
	return c, err
}

// resolveToken returns the API token from --token-file or --token, or else
// from MNGUARD_TOKEN_FILE or MNGUARD_TOKEN. Errors never include the token.
func resolveToken(o *options, getenv func(string) string) (string, error) {
	var token, from string
	switch {
	case o.token.v != "" && o.tokenFile.v != "":
		return "", usagef("conflicting flags: give --token or --token-file, not both")
	case o.tokenFile.v != "":
		return readTokenFile(o.tokenFile.v)
	case o.token.v != "":
		token, from = o.token.v, "--token"
	default:
		env, file := getenv("MNGUARD_TOKEN"), getenv("MNGUARD_TOKEN_FILE")
		switch {
		case env != "" && file != "":
			return "", usagef("conflicting environment: set MNGUARD_TOKEN or MNGUARD_TOKEN_FILE, not both")
		case file != "":
			return readTokenFile(file)
		case env == "":
			return "", usagef("missing API token: set --token-file PATH, --token TOKEN or MNGUARD_TOKEN")
		}
		token, from = env, "MNGUARD_TOKEN"
	}
	token = strings.TrimSpace(token)
	if err := checkToken(token); err != nil {
		return "", usagef("invalid API token from %s: %v", from, err)
	}
	return token, nil
}

func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if err := checkToken(token); err != nil {
		return "", fmt.Errorf("token file %s: %v", path, err)
	}
	return token, nil
}

// checkToken tells whether token can be sent in an authorization header.
func checkToken(token string) error {
	if token == "" {
		return errors.New("empty")
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return errors.New("it must be one word of printable ASCII")
		}
	}
	return nil
}

func resolveTimeout(o *options, getenv func(string) string) (time.Duration, error) {
	s, from := o.timeout.or(getenv, "MNGUARD_TIMEOUT", "--timeout")
	if s == "" {
		return defaultTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef("invalid timeout %q from %s: want a duration such as 10s or 1m", s, from)
	}
	if d <= 0 {
		return 0, usagef("invalid timeout %q from %s: must be positive", s, from)
	}
	return d, nil
}

// connection is a client of the admin API.
type connection struct {
	client  mnguardv1.AdminServiceClient
	server  string
	timeout time.Duration
	// transportErr returns the last error connecting to the server (dial or
	// TLS handshake), or nil. It may itself be nil.
	transportErr func() error
	close        func() error
}

func (c *connection) Close() error {
	if c.close == nil {
		return nil
	}
	return c.close()
}

// maxResponseBytes bounds one response of the admin API.
const maxResponseBytes = 256 << 20

// dialAdmin returns a connection to the admin API. grpc connects lazily, on
// the first call.
func dialAdmin(cfg connConfig) (*connection, error) {
	tlsConf, err := pki.PinnedTLSConfig(cfg.pin, cfg.host, nil)
	if err != nil {
		return nil, fmt.Errorf("set up TLS: %w", err)
	}
	diag := &transportDiag{}
	cc, err := grpc.NewClient("passthrough:///"+cfg.server,
		grpc.WithTransportCredentials(&recordingCreds{credentials.NewTLS(tlsConf), diag}),
		grpc.WithPerRPCCredentials(bearer{cfg.token}),
		grpc.WithContextDialer(diag.dial),
		grpc.WithUserAgent("mnguardctl/"+version.Version),
		// Lists of 10,000 terminals, events and audit entries are larger
		// than grpc's default 4 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes)),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.server, err)
	}
	return &connection{
		client:       mnguardv1.NewAdminServiceClient(cc),
		server:       cfg.server,
		timeout:      cfg.timeout,
		transportErr: diag.last,
		close:        cc.Close,
	}, nil
}

// bearer sends the operator API token with every call.
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// String keeps the token out of anything that prints a bearer.
func (bearer) String() string { return "Bearer [redacted]" }

// transportDiag remembers why connecting failed, which grpc only reports
// folded into a status message.
type transportDiag struct {
	mu  sync.Mutex
	err error
}

func (d *transportDiag) record(err error) {
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
}

func (d *transportDiag) last() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *transportDiag) dial(ctx context.Context, addr string) (net.Conn, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		// "connect: connection refused" rather than "dial tcp H:P: ...":
		// the caller names the server already.
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			err = opErr.Err
		}
		d.record(err)
		return nil, err
	}
	d.record(nil)
	return conn, nil
}

// recordingCreds is TLS credentials that remember handshake failures.
type recordingCreds struct {
	credentials.TransportCredentials
	diag *transportDiag
}

func (r *recordingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := r.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		r.diag.record(&handshakeError{err})
	}
	return conn, info, err
}

func (r *recordingCreds) Clone() credentials.TransportCredentials {
	return &recordingCreds{r.TransportCredentials.Clone(), r.diag}
}

type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS handshake failed: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// call makes one RPC with the connection's timeout and turns its error into
// plain words: "what: reason".
// request connects, makes one call and closes the connection: what every
// command that asks the server does. rpc is a method expression such as
// mnguardv1.AdminServiceClient.ListTerminals. It also returns the server
// address it asked.
func request[Req, Resp any](ctx context.Context, inv *invocation, what string,
	rpc func(mnguardv1.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, string, error) {
	var zero Resp
	c, err := inv.connect()
	if err != nil {
		return zero, "", err
	}
	defer c.Close()
	resp, err := call(ctx, c, what, func(ctx context.Context, r Req, opts ...grpc.CallOption) (Resp, error) {
		return rpc(c.client, ctx, r, opts...)
	}, req)
	return resp, c.server, err
}

func call[Req, Resp any](ctx context.Context, c *connection, what string,
	rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := rpc(ctx, req)
	if err != nil {
		return resp, fmt.Errorf("%s: %s", what, c.explain(ctx, err))
	}
	return resp, nil
}

// explain says in plain words why a call failed.
func (c *connection) explain(ctx context.Context, err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	var transport error
	if c.transportErr != nil {
		transport = c.transportErr()
	}
	switch st.Code() {
	case codes.Unauthenticated:
		if msg == "" {
			return "the server refused the API token"
		}
		return "the server refused the API token: " + msg
	case codes.PermissionDenied:
		return "permission denied: " + msg
	case codes.Unavailable:
		var pinErr *pki.PinMismatchError
		switch {
		case errors.As(transport, &pinErr):
			return fmt.Sprintf("server %s is not the pinned collector: %v", c.server, pinErr)
		case transport != nil:
			return fmt.Sprintf("cannot reach server %s: %v", c.server, transport)
		}
		if rest, ok := strings.CutPrefix(msg, "connection error: desc = "); ok {
			if u, err := strconv.Unquote(rest); err == nil {
				rest = u
			}
			return fmt.Sprintf("cannot reach server %s: %s", c.server, strings.TrimPrefix(rest, "transport: "))
		}
		return fmt.Sprintf("server %s is unavailable: %s", c.server, msg)
	case codes.DeadlineExceeded:
		if transport != nil {
			return fmt.Sprintf("cannot reach server %s: %v", c.server, transport)
		}
		return fmt.Sprintf("no answer from server %s within %s", c.server, c.timeout)
	case codes.Canceled:
		if ctx.Err() != nil {
			return "interrupted"
		}
		return "cancelled: " + msg
	case codes.Unimplemented:
		return fmt.Sprintf("server %s does not support this request (older than mnguardctl %s?): %s", c.server, version.Version, msg)
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists,
		codes.OutOfRange, codes.ResourceExhausted, codes.Aborted:
		return msg
	}
	return "server error: " + msg
}
