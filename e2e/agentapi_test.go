package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/enroll"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// enrollIdentity enrolls a simulated terminal with the real collector
// through the agent's enroll package.
func enrollIdentity(c *collector, token, hostname, dir string) (*state.Identity, error) {
	return enroll.Enroll(context.Background(), enroll.Options{
		Server: c.grpcAddr, Token: token, CAPin: c.pin, StateDir: state.Dir(dir),
		Host: &mnguardv1.HostFacts{Hostname: hostname, Os: "linux", AgentVersion: "test"},
	})
}

func enrollInProcess(t testing.TB, c *collector, token, hostname string) *state.Identity {
	t.Helper()
	id, err := enrollIdentity(c, token, hostname, t.TempDir())
	if err != nil {
		t.Fatalf("enroll %s: %v", hostname, err)
	}
	return id
}

// dialConn connects to the collector presenting cert (nil: none), trusting
// the pinned CA.
func dialConn(t testing.TB, c *collector, cert *tls.Certificate, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	var get func() (*tls.Certificate, error)
	if cert != nil {
		get = func() (*tls.Certificate, error) { return cert, nil }
	}
	cfg, err := pki.PinnedTLSConfig(c.pin, "127.0.0.1", get)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.grpcAddr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func dialAs(t testing.TB, c *collector, cert *tls.Certificate, opts ...grpc.DialOption) mnguardv1.AgentServiceClient {
	t.Helper()
	return mnguardv1.NewAgentServiceClient(dialConn(t, c, cert, opts...))
}

func validPosture(hostname string) *mnguardv1.Posture {
	return &mnguardv1.Posture{
		CollectedAt: timestamppb.Now(),
		Host:        &mnguardv1.HostFacts{Hostname: hostname, Os: "linux"},
		CpuCount:    2,
		Interfaces:  []*mnguardv1.NetworkInterface{{Name: "lo", Addrs: []string{"127.0.0.1/8"}}},
	}
}

func ev(seq uint64, typ string) *mnguardv1.Event {
	return &mnguardv1.Event{Seq: seq, Time: timestamppb.Now(), Type: typ, Severity: mnguardv1.Severity_SEVERITY_INFO, Message: typ}
}

// certFrom signs a client certificate for cn with the given CA key.
func certFrom(t testing.TB, caCert *x509.Certificate, caKey any, cn string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	parent, signer := caCert, caKey
	if caCert == nil { // self-signed stranger
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestAgentRPCRefusals: agent RPCs without a valid, known, unrevoked client
// certificate are refused with a reason, and nothing is stored.
func TestAgentRPCRefusals(t *testing.T) {
	c := newCollector(t)
	id := enrollInProcess(t, c, c.token(t, "1h", 3), "refusals-1")
	victim := enrollInProcess(t, c, c.token(t, "1h", 1), "refusals-2")
	ctx := context.Background()

	// Our own CA key, to make certificates the store never recorded.
	caKeyPEM, err := os.ReadFile(filepath.Join(c.dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := pki.ParseKeyPEM(caKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	// Revoke the victim through the CLI.
	if _, errOut, code := c.ctl(t, "terminals", "revoke", victim.TerminalID, "--reason", "stolen"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}

	tests := []struct {
		name string
		cert *tls.Certificate
		code codes.Code
		want string
	}{
		{"no client certificate", nil, codes.Unauthenticated, "client certificate required"},
		{"certificate from another CA", certFrom(t, nil, nil, id.TerminalID, now.Add(-time.Hour), now.Add(time.Hour)), codes.Unauthenticated, "not issued by this collector's CA"},
		{"certificate unknown to the store", certFrom(t, id.CA, caKey, id.TerminalID, now.Add(-time.Hour), now.Add(time.Hour)), codes.Unauthenticated, "unknown to this collector"},
		{"expired certificate", certFrom(t, id.CA, caKey, id.TerminalID, now.Add(-2*time.Hour), now.Add(-time.Hour)), codes.Unauthenticated, "expired"},
		{"revoked certificate", victim.TLSCertificate(), codes.PermissionDenied, "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dialAs(t, c, tt.cert)
			_, err := cl.Report(ctx, &mnguardv1.ReportRequest{Posture: validPosture("intruder"), Events: []*mnguardv1.Event{ev(1, "intruder.event")}})
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Fatalf("Report: %v; want %s containing %q", err, tt.code, tt.want)
			}
			stream, err := cl.Subscribe(ctx, &mnguardv1.SubscribeRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tt.code {
				t.Errorf("Subscribe: %v; want %s", err, tt.code)
			}
		})
	}
	for _, term := range c.terminals(t) {
		if term.GetPostureReceivedAt() != nil || term.GetHost().GetHostname() == "intruder" {
			t.Errorf("a refused report was stored: %v", term)
		}
	}
	var evs mnguardv1.ListEventsResponse
	c.ctlJSON(t, &evs, "events", "list")
	if len(evs.GetEvents()) != 0 {
		t.Errorf("refused events stored: %v", &evs)
	}

	// The legitimate terminal still works, and a revoked terminal's live
	// stream ends at once.
	cl := dialAs(t, c, id.TLSCertificate())
	if _, err := cl.Report(ctx, &mnguardv1.ReportRequest{Posture: validPosture("refusals-1")}); err != nil {
		t.Fatalf("valid report: %v", err)
	}
	stream, err := cl.Subscribe(ctx, &mnguardv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// A new stream carries the exemptions in force (none), then the policy.
	if msg, err := stream.Recv(); err != nil || msg.GetExemptions() == nil || len(msg.GetExemptions().GetExemptions()) != 0 {
		t.Fatalf("first push: %v, %v; want an empty exemption set", msg, err)
	}
	if msg, err := stream.Recv(); err != nil || msg.GetPolicy() == nil {
		t.Fatalf("second push: %v, %v; want the policy", msg, err)
	}
	if _, errOut, code := c.ctl(t, "terminals", "revoke", id.TerminalID); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	done := make(chan error, 1)
	go func() { _, err := stream.Recv(); done <- err }()
	select {
	case err := <-done:
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("stream after revoke: %v, want PermissionDenied", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("revoked terminal's stream still open after 2s")
	}
	if _, err := cl.Report(ctx, &mnguardv1.ReportRequest{Posture: validPosture("refusals-1")}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("report after revoke: %v", err)
	}
	if term := c.terminal(t, id.TerminalID); term.GetState() != mnguardv1.TerminalState_TERMINAL_STATE_REVOKED {
		t.Errorf("state after revoke: %v", term.GetState())
	}
}

// rawCodec sends bytes as they are, to put malformed protobuf on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestReportValidation: oversized, malformed and invalid reports are refused
// with a reason naming the problem, and nothing of them is stored; a resent
// event is stored once.
func TestReportValidation(t *testing.T) {
	c := newCollector(t)
	id := enrollInProcess(t, c, c.token(t, "1h", 1), "validation")
	cl := dialAs(t, c, id.TLSCertificate(), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
	ctx := context.Background()
	if _, err := cl.Report(ctx, &mnguardv1.ReportRequest{Posture: validPosture("validation"), Events: []*mnguardv1.Event{ev(1, "test.one"), ev(2, "test.two")}}); err != nil {
		t.Fatal(err)
	}
	before := c.terminal(t, id.TerminalID)

	huge := validPosture("validation")
	huge.CpuModel = strings.Repeat("x", 2<<20)
	mut := func(f func(p *mnguardv1.Posture)) *mnguardv1.Posture {
		p := validPosture("validation")
		f(p)
		return p
	}
	tests := []struct {
		name string
		req  *mnguardv1.ReportRequest
		code codes.Code
		want string
	}{
		{"oversized posture", &mnguardv1.ReportRequest{Posture: huge}, codes.ResourceExhausted, "larger than max"},
		{"empty report", &mnguardv1.ReportRequest{}, codes.InvalidArgument, "empty report"},
		{"missing collection time", &mnguardv1.ReportRequest{Posture: mut(func(p *mnguardv1.Posture) { p.CollectedAt = nil })}, codes.InvalidArgument, "posture.collected_at: missing"},
		{"missing host", &mnguardv1.ReportRequest{Posture: mut(func(p *mnguardv1.Posture) { p.Host = nil })}, codes.InvalidArgument, "posture.host: missing"},
		{"control character in hostname", &mnguardv1.ReportRequest{Posture: mut(func(p *mnguardv1.Posture) { p.Host.Hostname = "a\x1b[2Jb" })}, codes.InvalidArgument, "control character"},
		{"address not CIDR", &mnguardv1.ReportRequest{Posture: mut(func(p *mnguardv1.Posture) { p.Interfaces[0].Addrs = []string{"localhost"} })}, codes.InvalidArgument, "not an address in CIDR notation"},
		{"bad USB vendor", &mnguardv1.ReportRequest{Posture: mut(func(p *mnguardv1.Posture) {
			p.UsbDevices = []*mnguardv1.UsbDevice{{VendorId: "XYZ", ProductId: "0001"}}
		})}, codes.InvalidArgument, "vendor_id"},
		{"event seq 0", &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{ev(0, "test.zero")}}, codes.InvalidArgument, "seq: must be at least 1"},
		{"same seq twice in a report", &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{ev(7, "test.a"), ev(7, "test.b")}}, codes.InvalidArgument, "appears twice"},
		{"bad event type", &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{ev(8, "DROP TABLE")}}, codes.InvalidArgument, "not a dotted lowercase event type"},
		{"valid posture with one bad event", &mnguardv1.ReportRequest{Posture: mut(func(p *mnguardv1.Posture) { p.CpuCount = 64 }), Events: []*mnguardv1.Event{ev(9, "test.ok"), ev(10, "")}}, codes.InvalidArgument, "events[1].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cl.Report(ctx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Fatalf("Report: %v; want %s containing %q", err, tt.code, tt.want)
			}
		})
	}
	t.Run("malformed protobuf", func(t *testing.T) {
		conn := dialConn(t, c, id.TLSCertificate())
		garbage := []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}
		var out []byte
		err := conn.Invoke(ctx, "/mnguard.v1.AgentService/Report", &garbage, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) == codes.OK || !strings.Contains(status.Convert(err).Message(), "unmarshal") {
			t.Fatalf("malformed report: %v; want an unmarshalling error", err)
		}
	})

	after := c.terminal(t, id.TerminalID)
	if after.GetPostureHistoryCount() != before.GetPostureHistoryCount() || after.GetPosture().GetCpuCount() != before.GetPosture().GetCpuCount() {
		t.Errorf("refused posture stored: history %d → %d, cpu %d → %d", before.GetPostureHistoryCount(), after.GetPostureHistoryCount(), before.GetPosture().GetCpuCount(), after.GetPosture().GetCpuCount())
	}

	// Resending events: each (terminal, seq) is stored once, and all are
	// acknowledged so the agent can drop them.
	resp, err := cl.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{ev(2, "test.two"), ev(3, "test.three")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetAckedSeqs()); got != 2 {
		t.Errorf("acked %v, want seqs 2 and 3", resp.GetAckedSeqs())
	}
	var evs mnguardv1.ListEventsResponse
	c.ctlJSON(t, &evs, "events", "list", "--terminal", id.TerminalID)
	count := map[uint64]int{}
	for _, e := range evs.GetEvents() {
		count[e.GetEvent().GetSeq()]++
	}
	if len(count) != 3 || count[1] != 1 || count[2] != 1 || count[3] != 1 {
		t.Errorf("stored event seqs %v, want 1, 2, 3 once each", count)
	}
}
