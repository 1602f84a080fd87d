package api

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/store"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func agentEvent(seq uint64, typ string) *mnguardv1.Event {
	return &mnguardv1.Event{Seq: seq, Time: timestamppb.Now(), Type: typ, Severity: mnguardv1.Severity_SEVERITY_INFO, Message: typ}
}

// TestReportRefusesServerEventTypes: an agent cannot report an event under a
// type the collector records itself (a forged login verification or
// exemption issue would read as the collector's own), and nothing of such a
// report is stored.
func TestReportRefusesServerEventTypes(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	ctx := t.Context()
	for i, typ := range []string{"login.verify", "exemption.issued", "exemption.offline_issued", "exemption.delivered", "compliance.changed"} {
		t.Run(typ, func(t *testing.T) {
			_, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(uint64(2*i+1), "agent.start"), agentEvent(uint64(2*i+2), typ)}})
			wantCode(t, err, codes.InvalidArgument, typ)
			wantCode(t, err, codes.InvalidArgument, "reserved")
		})
	}
	evs, err := c.st.Events(ctx, term.GetTerminalId(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		t.Errorf("event %d (%s) of a refused report stored", e.Seq, e.Type)
	}
	// The agent's own exemption events (it reports revocations it applied)
	// stay allowed.
	if _, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(100, "exemption.revoked"), agentEvent(101, "media.exemption_used")}}); err != nil {
		t.Fatalf("agent exemption events: %v", err)
	}
}

// TestReportEventSeqBound: sequence numbers beyond what the store keeps
// (signed 64-bit) are the agent's error, InvalidArgument naming the field,
// not the collector's Unavailable; the largest storable one is stored.
func TestReportEventSeqBound(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	ctx := t.Context()
	for _, seq := range []uint64{math.MaxUint64, math.MaxInt64 + 1} {
		_, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(seq, "agent.start")}})
		wantCode(t, err, codes.InvalidArgument, "events[0].seq")
	}
	resp, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(math.MaxInt64, "agent.start")}})
	if err != nil {
		t.Fatalf("seq 2^63-1: %v", err)
	}
	if acked := resp.GetAckedSeqs(); len(acked) != 1 || acked[0] != math.MaxInt64 {
		t.Errorf("acked %v, want [%d]", acked, uint64(math.MaxInt64))
	}
	evs, err := c.st.Events(ctx, term.GetTerminalId(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Seq != math.MaxInt64 || !strings.HasPrefix(evs[0].Type, "agent.") {
		t.Errorf("stored %d events, want the one event of seq 2^63-1", len(evs))
	}
}

// TestSubscribeStreamCap: one terminal holds at most MaxStreamsPerTerminal
// Subscribe streams; each new one ends the oldest with ResourceExhausted
// saying why, and another terminal's stream is not touched.
func TestSubscribeStreamCap(t *testing.T) {
	c := startCollector(t, false)
	agent, term := c.terminal()
	other, _ := c.terminal()
	otherStream := c.subscribe(other)
	otherStream.next(t, 5*time.Second)
	const n = 12
	streams := make([]*pushes, n)
	for i := range streams {
		streams[i] = c.subscribe(agent)
		// The first push: the stream is registered.
		streams[i].next(t, 5*time.Second)
		if got := c.svc.hub.count(); got > DefaultMaxStreamsPerTerminal+1 {
			t.Fatalf("after %d streams of one terminal: %d open, want at most %d (and the other terminal's)", i+1, got, DefaultMaxStreamsPerTerminal)
		}
	}
	for i, p := range streams[:n-DefaultMaxStreamsPerTerminal] {
		select {
		case err := <-p.err:
			wantCode(t, err, codes.ResourceExhausted, "replaced by a newer Subscribe stream of terminal "+term.GetTerminalId())
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d still open after %d newer ones", i+1, n-1-i)
		}
	}
	for i, p := range append(streams[n-DefaultMaxStreamsPerTerminal:], otherStream) {
		select {
		case err := <-p.err:
			t.Errorf("stream %d ended: %v", i, err)
		default:
		}
	}
	var m dto.Metric
	if err := c.metrics.streamsReplaced.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != n-DefaultMaxStreamsPerTerminal {
		t.Errorf("mnguard_agent_streams_replaced_total = %v, want %d", got, n-DefaultMaxStreamsPerTerminal)
	}
}

// renewWith renews the certificate of the agent client with a new key and
// returns the new certificate ready to dial with, or the error.
func renewWith(t *testing.T, agent mnguardv1.AgentServiceClient) (*tls.Certificate, error) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "terminal")
	if err != nil {
		t.Fatal(err)
	}
	res, err := agent.Renew(t.Context(), &mnguardv1.RenewRequest{CsrDer: csr})
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{res.GetCertificateDer()}, PrivateKey: key}, nil
}

// serialOf returns the store key of a certificate.
func serialOf(t *testing.T, cert *tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return ca.SerialHex(leaf)
}

// TestRenewRateLimitedAndRetires: a terminal's certificate renews at most
// once per interval (ResourceExhausted saying when again); once a renewed
// certificate is used, the one before it is refused; a renewal retires the
// certificates issued since the one it renews that were never used. After
// 200 renewals, one certificate of the terminal works, not 201.
func TestRenewRateLimitedAndRetires(t *testing.T) {
	var clock *fakeclock.Clock
	c := startCollectorWith(t, false, func(cfg *Config) { cfg.Now = func() time.Time { return clock.Now() } })
	clock = c.clock
	// The CA was made at the real time: certificates must verify.
	clock.Set(time.Now())
	agent, enrolled := c.terminal()
	id := enrolled.GetTerminalId()
	ctx := t.Context()
	works := func(cert *tls.Certificate) error {
		_, err := mnguardv1.NewAgentServiceClient(c.dial(cert)).Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(uint64(clock.Now().UnixNano()), "test.alive")}})
		return err
	}
	requests := c.svc.cfg.CA.ClientRequests()

	// 200 renewals in a row: one is allowed per interval (10 min), and the
	// enrollment, minutes ago, was the last.
	var issued []*tls.Certificate
	refused := 0
	for range 200 {
		cert, err := renewWith(t, agent)
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted, "the next renewal is allowed from")
			refused++
			continue
		}
		issued = append(issued, cert)
	}
	if len(issued) != 0 || refused != 200 {
		t.Fatalf("200 renewals right after enrollment: %d accepted, %d refused; want none accepted", len(issued), refused)
	}
	if got := c.svc.cfg.CA.ClientRequests(); got != requests {
		t.Errorf("refused renewals cost %d certificate requests at the CA, want none", got-requests)
	}

	// Past the interval: one renewal, and the next is refused again.
	clock.Add(DefaultRenewInterval)
	first, err := renewWith(t, agent)
	if err != nil {
		t.Fatalf("renewal after %s: %v", DefaultRenewInterval, err)
	}
	_, err = renewWith(t, agent)
	wantCode(t, err, codes.ResourceExhausted, "one per 10m0s")

	// The old certificate works until the renewed one is used; then it is
	// refused, saying why.
	if err := works(nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no certificate: %v", err)
	}
	if _, err := agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(1, "test.old")}}); err != nil {
		t.Fatalf("the enrollment certificate before its successor is used: %v", err)
	}
	if err := works(first); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
	_, err = agent.Report(ctx, &mnguardv1.ReportRequest{Events: []*mnguardv1.Event{agentEvent(2, "test.old")}})
	wantCode(t, err, codes.Unauthenticated, "replaced by the renewed certificate "+serialOf(t, first))

	// Renewals nobody uses: each retires the unused one before it, so the
	// certificate renewed and the newest are all that work.
	cur := mnguardv1.NewAgentServiceClient(c.dial(first))
	var unused []*tls.Certificate
	for range 3 {
		clock.Add(DefaultRenewInterval)
		cert, err := renewWith(t, cur)
		if err != nil {
			t.Fatal(err)
		}
		unused = append(unused, cert)
	}
	for i, cert := range unused[:len(unused)-1] {
		if err := works(cert); status.Code(err) != codes.Unauthenticated {
			t.Errorf("unused renewed certificate %d superseded by a later renewal: %v, want Unauthenticated", i, err)
		}
	}
	newest := unused[len(unused)-1]
	if err := works(first); err != nil {
		t.Errorf("the certificate renewed from, while its successor is unused: %v", err)
	}
	if err := works(newest); err != nil {
		t.Fatalf("newest certificate: %v", err)
	}

	// 200 renewals, each used: one certificate works at the end.
	all := append([]*tls.Certificate{first}, unused...)
	cur = mnguardv1.NewAgentServiceClient(c.dial(newest))
	for i := range 200 {
		clock.Add(DefaultRenewInterval)
		cert, err := renewWith(t, cur)
		if err != nil {
			t.Fatalf("renewal %d: %v", i+1, err)
		}
		all = append(all, cert)
		if err := works(cert); err != nil {
			t.Fatalf("renewal %d: %v", i+1, err)
		}
		cur = mnguardv1.NewAgentServiceClient(c.dial(cert))
	}
	valid := 0
	for _, cert := range all {
		if works(cert) == nil {
			valid++
		}
	}
	if valid != 1 {
		t.Errorf("%d of %d certificates of the terminal still work, want 1", valid, len(all))
	}
	if err := works(all[len(all)-1]); err != nil {
		t.Errorf("the newest certificate: %v", err)
	}

	// Every renewal and retirement is in the audit log, by the terminal.
	renewals, retirements := c.audited("certificate.renew"), c.audited("certificate.retire")
	for _, e := range append(renewals, retirements...) {
		if e.Actor != "terminal "+id || e.Target != id {
			t.Errorf("audit %s by %q on %q, want by terminal %s", e.Action, e.Actor, e.Target, id)
		}
	}
	if len(renewals) != 204 || len(retirements) != 202 {
		t.Errorf("audited %d renewals and %d retirements, want 204 and 202", len(renewals), len(retirements))
	}
}

// TestEnrollChecksTokenFirst: without a valid enrollment token, Enroll is
// refused before the certificate request is even parsed: the CA sees none
// of it, whatever the request.
func TestEnrollChecksTokenFirst(t *testing.T) {
	c := startCollector(t, false)
	ctx := t.Context()
	enroll := mnguardv1.NewAgentServiceClient(c.dial(nil))
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.NewCSR(key, "terminal")
	if err != nil {
		t.Fatal(err)
	}
	mkToken := func(ttl time.Duration, uses int) string {
		secret, err := NewToken(enrollTokenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if err := c.st.CreateEnrollmentToken(ctx, store.EnrollmentToken{ID: secret[len(secret)-8:], Hash: HashToken(secret),
			CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(ttl), Uses: 1, UsesLeft: uses, CreatedBy: "test"}, testAudit); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	host := &mnguardv1.HostFacts{Hostname: "token-first", Os: "linux"}
	unknown, _ := NewToken(enrollTokenPrefix)
	expired, exhausted := mkToken(-time.Hour, 1), mkToken(time.Hour, 1)
	if _, err := enroll.Enroll(ctx, &mnguardv1.EnrollRequest{Token: exhausted, CsrDer: good, Host: host}); err != nil {
		t.Fatalf("the one use of a token: %v", err)
	}
	garbage := bytes.Repeat([]byte{0x30, 0x82}, 4096) // 8 KiB of nested-sequence headers
	requests := c.svc.cfg.CA.ClientRequests()
	for _, tt := range []struct{ name, token, want string }{
		{"unknown token", unknown, "not recognised"},
		{"expired token", expired, "expired"},
		{"exhausted token", exhausted, "no uses left"},
	} {
		for csrName, csr := range map[string][]byte{"valid CSR": good, "garbage CSR": garbage} {
			t.Run(tt.name+", "+csrName, func(t *testing.T) {
				_, err := enroll.Enroll(ctx, &mnguardv1.EnrollRequest{Token: tt.token, CsrDer: csr, Host: host})
				wantCode(t, err, codes.Unauthenticated, tt.want)
			})
		}
	}
	if got := c.svc.cfg.CA.ClientRequests(); got != requests {
		t.Errorf("refused enrollments gave the CA %d certificate requests, want none", got-requests)
	}
	// With a valid token, the request is the CA's to judge.
	_, err = enroll.Enroll(ctx, &mnguardv1.EnrollRequest{Token: mkToken(time.Hour, 1), CsrDer: garbage, Host: host})
	wantCode(t, err, codes.InvalidArgument, "parse CSR")
	if got := c.svc.cfg.CA.ClientRequests(); got != requests+1 {
		t.Errorf("a valid token's enrollment gave the CA %d requests, want 1", got-requests)
	}
}

// TestGRPCConnectionLimits: the collector announces its per-connection
// limits in its HTTP/2 SETTINGS, where every client obeys them: at most
// MaxConcurrentStreams streams, fixed flow-control windows, bounded headers.
func TestGRPCConnectionLimits(t *testing.T) {
	c := startCollector(t, false)
	pool := x509.NewCertPool()
	caCert, err := x509.ParseCertificate(c.caDER)
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(caCert)
	conn, err := tls.Dial("tcp", c.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The client preface and an empty SETTINGS frame.
	if _, err := conn.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	settings := map[uint16]uint32{}
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			t.Fatal(err)
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		payload := make([]byte, n)
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatal(err)
		}
		const frameSettings, flagAck = 0x4, 0x1
		if hdr[3] != frameSettings || hdr[4]&flagAck != 0 {
			continue
		}
		for i := 0; i+6 <= len(payload); i += 6 {
			settings[binary.BigEndian.Uint16(payload[i:])] = binary.BigEndian.Uint32(payload[i+2:])
		}
		break
	}
	const (
		maxConcurrentStreams = 0x3
		initialWindowSize    = 0x4
		maxHeaderListSize    = 0x6
	)
	for id, want := range map[uint16]uint32{maxConcurrentStreams: MaxConcurrentStreams, initialWindowSize: StreamWindowBytes, maxHeaderListSize: MaxHeaderListBytes} {
		if got, ok := settings[id]; !ok || got != want {
			t.Errorf("SETTINGS 0x%x = %d (sent: %v), want %d", id, got, ok, want)
		}
	}
}

// TestRetiredCertificateStreamEnds: when a renewed certificate is first
// used, the streams opened with the certificate it retired end
// (Unauthenticated), and the renewed certificate's stream stays.
func TestRetiredCertificateStreamEnds(t *testing.T) {
	var clock *fakeclock.Clock
	c := startCollectorWith(t, false, func(cfg *Config) { cfg.Now = func() time.Time { return clock.Now() } })
	clock = c.clock
	clock.Set(time.Now())
	agent, _ := c.terminal()
	old := c.subscribe(agent)
	old.next(t, 5*time.Second)
	clock.Add(DefaultRenewInterval)
	renewed, err := renewWith(t, agent)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-old.err:
		t.Fatalf("the old certificate's stream ended before the renewed one was used: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	next := c.subscribe(mnguardv1.NewAgentServiceClient(c.dial(renewed)))
	next.next(t, 5*time.Second)
	select {
	case err := <-old.err:
		wantCode(t, err, codes.Unauthenticated, "replaced by a renewed certificate")
	case <-time.After(5 * time.Second):
		t.Fatal("the retired certificate's stream still open after 5s")
	}
	select {
	case err := <-next.err:
		t.Fatalf("the renewed certificate's stream ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}
