package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/exemption"
	"github.com/mnguard/mnguard/internal/snapshot"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/compliance"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config is what both services share.
type Config struct {
	Store store.Store
	CA    *ca.CA
	// ExemptionKey verifies exemption tokens; handed to agents at enrollment.
	// When ExemptionSigner is set it is that key's public half, whatever
	// was given.
	ExemptionKey ed25519.PublicKey
	// ExemptionSigner signs exemption tokens; nil leaves IssueExemption
	// unimplemented.
	ExemptionSigner ed25519.PrivateKey
	// ExemptionMaxDuration is the longest exemption an operator may issue
	// (default 8 h, at most 24 h); ExemptionDefaultDuration is what one
	// gets that names no duration (default 1 h, at most the maximum).
	ExemptionMaxDuration     time.Duration
	ExemptionDefaultDuration time.Duration
	// CertValidity is the lifetime of agent certificates.
	CertValidity time.Duration
	// RenewInterval is the least time between two renewals of one
	// terminal (default DefaultRenewInterval; at most CertValidity/6).
	RenewInterval time.Duration
	// ReportInterval is pushed to agents as policy.
	ReportInterval time.Duration
	// CollectorAddrs are the collector's own addresses, pushed with the
	// network policy: agents always allow them (see CheckCollectorAddrs).
	CollectorAddrs []netip.Addr
	// Heartbeat is how often an idle Subscribe stream carries a heartbeat
	// (default DefaultHeartbeat).
	Heartbeat time.Duration
	// MaxStreamsPerTerminal is how many Subscribe streams one terminal
	// may hold open (default DefaultMaxStreamsPerTerminal); a new stream
	// beyond it ends the terminal's oldest.
	MaxStreamsPerTerminal int
	// IngestBatch is the most reports stored in one transaction (default
	// DefaultIngestBatch); IngestLinger how long a batch that is not full
	// waits for more (default none: it takes what is waiting).
	IngestBatch  int
	IngestLinger time.Duration
	// SessionTicketSecret, when set, is what the agent listener's TLS
	// session ticket keys derive from (see ticketKeys): a terminal resumes
	// its session after a restart of the collector, and on another
	// replica holding the same secret. Unset, the keys are random per
	// process.
	SessionTicketSecret []byte
	Version             string
	// Logins is the TOTP authority; nil leaves the user RPCs and
	// VerifyLogin unimplemented.
	Logins *logins.Service
	// Operators manages operators; nil leaves their RPCs unimplemented.
	Operators *operators.Service
	// Reports renders the self-inspection report; nil leaves
	// GetSelfInspectionReport unimplemented.
	Reports ReportRenderer
	// Changed, when set, is told of every terminal whose reports, events
	// or exemptions changed (the compliance evaluation and the console's
	// live pages listen).
	Changed func(terminalID string)
	// PostureStored, when set, is given each posture once its report is
	// committed, before Changed, with the report's receipt time as
	// stored: the compliance evaluation takes it from there instead of
	// reading it back (compliance.Evaluator.Stored). It must not change p.
	PostureStored func(terminalID string, receivedAt time.Time, p *mnguardv1.Posture)
	// NetworkPolicyChanged, when set, is told when a new network policy
	// is in force (the compliance evaluation re-judges every terminal).
	NetworkPolicyChanged func()
	Logger               *slog.Logger
	Metrics              *Metrics
	Now                  func() time.Time
}

// Services are the collector's gRPC services over one store.
type Services struct {
	cfg Config
	hub *hub
	// state is the policy in force (policyState); setMu serializes its
	// changes, so the state in force is the one stored last.
	state atomic.Pointer[policyState]
	setMu sync.Mutex
	// ingest stores the agents' reports in batches (group commit).
	ingest *ingester
	// certs are the certificates Report may take without a read (see
	// certCache), shared by every gRPC server of the services.
	certs *certCache
	// beats sends the streams' heartbeats and ends them when their
	// certificates expire.
	beats *beats
	// grpcOptions are added to NewGRPCServer's (benchmarks of the
	// options).
	grpcOptions []grpc.ServerOption
	Agent       *AgentService
	Admin       *AdminService
}

// New builds the services.
func New(cfg Config) *Services {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = 90 * 24 * time.Hour
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = DefaultRenewInterval
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 60 * time.Second
	}
	if cfg.ExemptionSigner != nil {
		cfg.ExemptionKey = cfg.ExemptionSigner.Public().(ed25519.PublicKey)
	}
	if cfg.ExemptionMaxDuration <= 0 {
		cfg.ExemptionMaxDuration = DefaultExemptionMaxDuration
	}
	cfg.ExemptionMaxDuration = min(cfg.ExemptionMaxDuration, exemption.MaxDuration)
	if cfg.ExemptionDefaultDuration <= 0 {
		cfg.ExemptionDefaultDuration = DefaultExemptionDuration
	}
	cfg.ExemptionDefaultDuration = min(cfg.ExemptionDefaultDuration, cfg.ExemptionMaxDuration)
	if cfg.MaxStreamsPerTerminal <= 0 {
		cfg.MaxStreamsPerTerminal = DefaultMaxStreamsPerTerminal
	}
	s := &Services{cfg: cfg, hub: newHub(cfg.MaxStreamsPerTerminal)}
	s.certs = newCertCache(0)
	// Real time, as the certificates' validity.
	s.beats = newBeats(cfg.Heartbeat, time.Now)
	s.ingest = newIngester(cfg.Store, cfg.IngestBatch, cfg.IngestLinger, cfg.Metrics.observeBatch)
	// No network policy until LoadNetworkPolicy reads the stored one.
	st, _ := s.newPolicyState(nil, time.Time{}, "")
	s.state.Store(st)
	s.Agent = &AgentService{s: s}
	s.Admin = &AdminService{s: s}
	cfg.Metrics.subscribers(s.hub.count)
	return s
}

// changed tells Config.Changed that something of the terminal changed.
func (s *Services) changed(terminalID string) {
	if s.cfg.Changed != nil {
		s.cfg.Changed(terminalID)
	}
}

func policyVersion(p *mnguardv1.Policy) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	sum := HashToken(string(b))
	return "p-" + hex.EncodeToString(sum[:4])
}

// AgentService implements mnguardv1.AgentServiceServer.
type AgentService struct {
	mnguardv1.UnimplementedAgentServiceServer
	s *Services
}

// reservedEventTypes are the types of the events the collector records
// itself (store.ServerEvent): an agent reporting one would pass off its own
// claim as the collector's. exemption.revoked is not among them: agents
// report the revocations they apply under that type.
var reservedEventTypes = map[string]bool{
	logins.EventType:            true,
	compliance.EventType:        true,
	EventExemptionIssued:        true,
	EventExemptionOfflineIssued: true,
	EventExemptionDelivered:     true,
}

// maxEventSeq is the largest event sequence number the store keeps (a
// signed 64-bit integer in SQL).
const maxEventSeq = math.MaxInt64

const (
	enrollTokenPrefix   = "mne_"
	operatorTokenPrefix = "mno_"
	maxCSRBytes         = ca.MaxCSRBytes
	clockSkewAllowance  = 5 * time.Minute
)

// Enroll implements mnguardv1.AgentServiceServer.
func (a *AgentService) Enroll(ctx context.Context, req *mnguardv1.EnrollRequest) (*mnguardv1.EnrollResponse, error) {
	cfg := a.s.cfg
	tok := req.GetToken()
	if tok == "" {
		return nil, status.Error(codes.InvalidArgument, "enrollment token missing")
	}
	if len(tok) > 128 || !strings.HasPrefix(tok, enrollTokenPrefix) {
		cfg.Metrics.enrollments.WithLabelValues("bad_token").Inc()
		return nil, status.Error(codes.Unauthenticated, "enrollment token not recognised (it should start with "+enrollTokenPrefix+")")
	}
	now := cfg.Now()
	// The token before anything that costs: whoever has none gets no
	// certificate request parsed, let alone signed.
	switch err := cfg.Store.CheckEnrollmentToken(ctx, HashToken(tok), now); {
	case errors.Is(err, store.ErrTokenUnknown), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenExhausted):
		cfg.Metrics.enrollments.WithLabelValues("refused").Inc()
		cfg.Logger.Warn("enrollment refused", "hostname", req.GetHost().GetHostname(), "reason", err)
		return nil, status.Error(codes.Unauthenticated, tokenReason(err))
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "check enrollment token: %v", err)
	}
	if len(req.GetCsrDer()) == 0 || len(req.GetCsrDer()) > maxCSRBytes {
		return nil, status.Errorf(codes.InvalidArgument, "csr_der: want a DER certificate request of at most %d bytes", maxCSRBytes)
	}
	if err := ValidateHostFacts(req.GetHost()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	id := uuid.NewString()
	cert, err := cfg.CA.SignClient(req.GetCsrDer(), id, a.notBefore(now), now.Add(cfg.CertValidity))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	offline := make([]byte, 32)
	if _, err := rand.Read(offline); err != nil {
		return nil, status.Errorf(codes.Internal, "offline key: %v", err)
	}
	host, err := proto.Marshal(req.GetHost())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "host: %v", err)
	}
	serial := ca.SerialHex(cert)
	err = cfg.Store.Enroll(ctx, HashToken(tok), now, store.Terminal{
		ID:         id,
		Host:       host,
		Hostname:   req.GetHost().GetHostname(),
		State:      store.StateActive,
		EnrolledAt: now,
		OfflineKey: offline,
	}, store.Certificate{Serial: serial, TerminalID: id, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter})
	switch {
	case errors.Is(err, store.ErrTokenUnknown), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenExhausted):
		cfg.Metrics.enrollments.WithLabelValues("refused").Inc()
		cfg.Logger.Warn("enrollment refused", "hostname", req.GetHost().GetHostname(), "reason", err)
		return nil, status.Error(codes.Unauthenticated, tokenReason(err))
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "store enrollment: %v", err)
	}
	cfg.Metrics.enrollments.WithLabelValues("ok").Inc()
	cfg.Logger.Info("terminal enrolled", "terminal", id, "hostname", req.GetHost().GetHostname(), "serial", serial)
	return &mnguardv1.EnrollResponse{
		TerminalId:         id,
		CertificateDer:     cert.Raw,
		CaCertificateDer:   cfg.CA.CertDER(),
		ExemptionPublicKey: cfg.ExemptionKey,
		OfflineKey:         offline,
		Policy:             a.s.currentPolicy(),
	}, nil
}

// notBefore backdates certificates a little for terminals whose clocks run
// behind; at most a quarter of the validity, so the renewal point (a third of
// the lifetime before the end) stays in the future.
func (a *AgentService) notBefore(now time.Time) time.Time {
	return now.Add(-min(clockSkewAllowance, a.s.cfg.CertValidity/4))
}

func tokenReason(err error) string {
	switch {
	case errors.Is(err, store.ErrTokenExpired):
		return "enrollment token expired: ask the administrator for a new one"
	case errors.Is(err, store.ErrTokenExhausted):
		return "enrollment token has no uses left: ask the administrator for a new one"
	default:
		return "enrollment token not recognised"
	}
}

// Renew implements mnguardv1.AgentServiceServer.
func (a *AgentService) Renew(ctx context.Context, req *mnguardv1.RenewRequest) (*mnguardv1.RenewResponse, error) {
	cfg := a.s.cfg
	t, err := TerminalFrom(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetCsrDer()) == 0 || len(req.GetCsrDer()) > maxCSRBytes {
		return nil, status.Errorf(codes.InvalidArgument, "csr_der: want a DER certificate request of at most %d bytes", maxCSRBytes)
	}
	now := cfg.Now()
	every := a.renewInterval()
	// The rate first, before the signature it would cost.
	last, err := cfg.Store.LastCertificateIssued(ctx, t.ID)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "look up certificates: %v", err)
	}
	if next := last.Add(every); now.Before(next) {
		return nil, renewTooSoon(t.ID, last, next, every)
	}
	cert, err := cfg.CA.SignClient(req.GetCsrDer(), t.ID, a.notBefore(now), now.Add(cfg.CertValidity))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	err = cfg.Store.RenewCertificate(ctx, store.Certificate{
		Serial: ca.SerialHex(cert), TerminalID: t.ID, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, IssuedAt: now,
	}, t.Serial, every, store.AuditEntry{Time: now, Actor: "terminal " + t.ID, Action: "certificate.renew"})
	var soon *store.TooSoonError
	switch {
	case errors.As(err, &soon):
		return nil, renewTooSoon(t.ID, soon.Last, soon.Next, every)
	case errors.Is(err, store.ErrRevoked):
		return nil, status.Error(codes.PermissionDenied, "terminal revoked: enroll again")
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "store certificate: %v", err)
	}
	cfg.Logger.Info("certificate renewed", "terminal", t.ID, "serial", ca.SerialHex(cert), "not_after", cert.NotAfter)
	return &mnguardv1.RenewResponse{CertificateDer: cert.Raw}, nil
}

// DefaultHeartbeat is how often an idle Subscribe stream carries a
// heartbeat. The agents' gRPC keepalive pings (every 30 s, answered within
// 10 s) already keep every connection alive through NAT and firewalls and
// find a dead peer on either side; the heartbeat only shows the stream
// itself to whatever in between ends idle HTTP/2 streams. At 30 s it was
// half the collector's idle CPU (0.42 % of a core per 1,000 terminals
// against a plain grpc-go server's 0.16 %, which has only the pings).
const DefaultHeartbeat = 5 * time.Minute

// DefaultRenewInterval is the least time between two renewals of one
// terminal's certificate, unless a sixth of the validity is less.
const DefaultRenewInterval = 10 * time.Minute

// renewInterval is the least time between two renewals of a terminal:
// Config.RenewInterval, at most a sixth of the certificate validity, so that
// an agent renewing when a third of its certificate is left (and retrying
// after a lost answer) is never refused.
func (a *AgentService) renewInterval() time.Duration {
	return min(a.s.cfg.RenewInterval, a.s.cfg.CertValidity/6)
}

func renewTooSoon(terminalID string, last, next time.Time, every time.Duration) error {
	return status.Errorf(codes.ResourceExhausted, "terminal %s got a certificate at %s: the next renewal is allowed from %s (one per %s)",
		terminalID, last.UTC().Format(time.RFC3339), next.UTC().Format(time.RFC3339), every)
}

// Report implements mnguardv1.AgentServiceServer.
func (a *AgentService) Report(ctx context.Context, req *mnguardv1.ReportRequest) (*mnguardv1.ReportResponse, error) {
	cfg := a.s.cfg
	start := time.Now()
	t, err := TerminalFrom(ctx)
	if err != nil {
		return nil, err
	}
	now := cfg.Now()
	if req.GetPosture() == nil && len(req.GetEvents()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty report: neither posture nor events")
	}
	r := store.Report{TerminalID: t.ID, ReceivedAt: now}
	if p := req.GetPosture(); p != nil {
		if err := ValidatePosture(p, now); err != nil {
			cfg.Metrics.reports.WithLabelValues("invalid").Inc()
			cfg.Logger.Warn("posture refused", "terminal", t.ID, "reason", err)
			return nil, status.Errorf(codes.InvalidArgument, "%v", err)
		}
		b, err := proto.Marshal(p)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "posture: %v", err)
		}
		r.Posture, r.CollectedAt, r.Fingerprint = b, p.GetCollectedAt().AsTime(), snapshot.Fingerprint(p)
	}
	if err := ValidateEvents(req.GetEvents(), now); err != nil {
		cfg.Metrics.reports.WithLabelValues("invalid").Inc()
		cfg.Logger.Warn("events refused", "terminal", t.ID, "reason", err)
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	for _, e := range req.GetEvents() {
		b, err := proto.Marshal(e)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "event %d: %v", e.GetSeq(), err)
		}
		r.Events = append(r.Events, store.Event{
			TerminalID: t.ID, Seq: e.GetSeq(), Time: e.GetTime().AsTime(), ReceivedAt: now,
			Type: e.GetType(), Severity: int32(e.GetSeverity()), Message: e.GetMessage(), Data: b,
		})
	}
	// Stored in the next batch, checked there against the certificate
	// the report came with: acknowledged only once committed.
	res, err := a.s.ingest.submit(ctx, store.BatchReport{Report: r, CertSerial: t.Serial})
	if err != nil {
		cfg.Metrics.reports.WithLabelValues(reportErrorLabel(err)).Inc()
		return nil, reportError(t, err)
	}
	cfg.Metrics.reports.WithLabelValues("ok").Inc()
	if p := req.GetPosture(); p != nil && cfg.PostureStored != nil {
		cfg.PostureStored(t.ID, r.ReceivedAt, p)
	}
	a.s.changed(t.ID)
	cfg.Metrics.events.WithLabelValues("stored").Add(float64(len(res.Stored)))
	cfg.Metrics.events.WithLabelValues("duplicate").Add(float64(len(res.Duplicates)))
	cfg.Metrics.reportSeconds.Observe(time.Since(start).Seconds())
	acked := append(append(make([]uint64, 0, len(res.Stored)+len(res.Duplicates)), res.Stored...), res.Duplicates...)
	return &mnguardv1.ReportResponse{
		AckedSeqs:     acked,
		ServerTime:    timestamppb.New(now),
		PolicyVersion: a.s.currentPolicy().GetVersion(),
	}, nil
}

// Subscribe implements mnguardv1.AgentServiceServer. The first message is
// the set of exemptions in force for the terminal (possibly empty), the
// second the current policy; then pushes as they come: a new set whenever
// an exemption is issued or revoked, the policy whenever it changes (the
// network policy was set), heartbeats when idle. A revoked
// terminal's stream ends with PermissionDenied.
func (a *AgentService) Subscribe(req *mnguardv1.SubscribeRequest, stream mnguardv1.AgentService_SubscribeServer) error {
	cfg := a.s.cfg
	ctx := stream.Context()
	t, err := TerminalFrom(ctx)
	if err != nil {
		return err
	}
	// Registered before the first set is read: a change stored meanwhile
	// signals this stream and is sent next.
	sub, dropped := a.s.hub.add(t.ID, t.Serial)
	defer a.s.hub.remove(t.ID, sub)
	if dropped > 0 {
		cfg.Metrics.streamsReplaced.Add(float64(dropped))
		// Debug: a flood would flood the log too. The metric counts them.
		cfg.Logger.Debug("older Subscribe stream of the terminal ended", "terminal", t.ID, "ended", dropped, "max_streams", cfg.MaxStreamsPerTerminal)
	}
	cfg.Logger.Debug("agent subscribed", "terminal", t.ID)
	if err := a.sendExemptions(ctx, stream, t.ID); err != nil {
		return err
	}
	if err := stream.Send(&mnguardv1.SubscribeResponse{
		SentAt: timestamppb.New(cfg.Now()),
		Push:   &mnguardv1.SubscribeResponse_Policy{Policy: a.s.currentPolicy()},
	}); err != nil {
		return err
	}
	// Heartbeats, and the end of the certificate, which may expire while
	// the stream is open: one wheel drives every stream's (see beats).
	beat := a.s.beats.add(t.Cert.NotAfter)
	defer a.s.beats.remove(beat)
	for {
		var msg *mnguardv1.SubscribeResponse
		select {
		case <-ctx.Done():
			return nil
		case <-sub.kicked:
			return status.Error(codes.PermissionDenied, "terminal revoked: enroll again")
		case <-sub.retired:
			return status.Errorf(codes.Unauthenticated, "client certificate %s was replaced by a renewed certificate: use that one", t.Serial)
		case <-sub.replaced:
			return status.Errorf(codes.ResourceExhausted, "stream replaced by a newer Subscribe stream of terminal %s (at most %d per terminal)", t.ID, cfg.MaxStreamsPerTerminal)
		case <-beat.expired:
			return status.Error(codes.Unauthenticated, "client certificate expired")
		case <-sub.exemptions:
			waiting := sub.takeWaiting()
			if err := a.sendExemptions(ctx, stream, t.ID); err != nil {
				return err
			}
			for _, c := range waiting {
				close(c)
			}
			continue
		case <-sub.policy:
			// The policy in force now: of two changes in a row the
			// stream sends the last, never the older one after it.
			msg = &mnguardv1.SubscribeResponse{Push: &mnguardv1.SubscribeResponse_Policy{Policy: a.s.currentPolicy()}}
		case m := <-sub.push:
			// Shared with the terminal's other streams: copy before stamping.
			msg = proto.Clone(m).(*mnguardv1.SubscribeResponse)
		case <-beat.c:
			msg = &mnguardv1.SubscribeResponse{Push: &mnguardv1.SubscribeResponse_Heartbeat{Heartbeat: &mnguardv1.Heartbeat{}}}
		}
		msg.SentAt = timestamppb.New(cfg.Now())
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// reportError is what an agent is told of a report that was not stored:
// nothing of it is acknowledged, and the agent keeps it in its spool.
func reportError(t *Terminal, err error) error {
	switch {
	case errors.Is(err, store.ErrRevoked):
		return status.Error(codes.PermissionDenied, "terminal revoked: enroll again")
	case errors.Is(err, store.ErrRetired):
		return status.Errorf(codes.Unauthenticated, "client certificate %s was replaced by a renewed certificate: use that one, or enroll this terminal again", t.Serial)
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.Unauthenticated, "terminal unknown: enroll again")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, store.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "the collector's database cannot be reached, nothing was stored: send the report again later (%v)", err)
	}
	return status.Errorf(codes.Unavailable, "store report: %v", err)
}

func reportErrorLabel(err error) string {
	switch {
	case errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrRetired), errors.Is(err, store.ErrNotFound):
		return "refused"
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	}
	return "error"
}
