package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// testNow is the clock of every test; times in fixtures are relative to it.
var testNow = time.Date(2026, 5, 1, 1, 0, 0, 0, time.UTC)

// testLoc is the time zone of table and CSV output in tests (JST, the
// users' zone, which also shows that times are converted).
var testLoc = time.FixedZone("JST", 9*60*60)

const (
	testToken = "mgo_testtoken0123456789"
	testPin   = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	termID1   = "6f1c2b7e-4a4e-4c53-9d1a-2f3b5c7d9e01"
	termID2   = "0b9e8c7d-6a5f-4e3d-8c2b-1a0f9e8d7c02"
)

// fakeAdmin is a minimal AdminService with canned data. It records the last
// requests it got.
type fakeAdmin struct {
	mnguardv1.UnimplementedAdminServiceServer

	terminals []*mnguardv1.Terminal
	tokens    []*mnguardv1.EnrollmentToken
	events    []*mnguardv1.StoredEvent
	info      *mnguardv1.GetServerInfoResponse
	users     []*mnguardv1.User

	mu         sync.Mutex
	lastCreate *mnguardv1.CreateEnrollmentTokenRequest
	lastEvents *mnguardv1.ListEventsRequest
	lastRevoke *mnguardv1.RevokeTerminalRequest
}

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(testNow.Add(d)) }

func newFakeAdmin() *fakeAdmin {
	pc01 := &mnguardv1.HostFacts{
		Hostname: "mn-pc-01", Os: "linux", Platform: "debian", PlatformVersion: "12.7",
		KernelVersion: "6.1.0-25-amd64", Arch: "x86_64", MachineId: "4b6f0d3c9a2e4f11b7c85d2e9a0f1c3b",
		AgentVersion: "0.1.0",
	}
	posture := &mnguardv1.Posture{
		CollectedAt:      ts(-15 * time.Second),
		Host:             pc01,
		BootTime:         ts(-(3*24*time.Hour + 4*time.Hour + 5*time.Minute)),
		UptimeSeconds:    uint64((3*24*time.Hour + 4*time.Hour + 5*time.Minute) / time.Second),
		CpuCount:         8,
		CpuModel:         "Intel(R) Core(TM) i5-1145G7 @ 2.60GHz",
		MemoryTotalBytes: 16_640_000_000,
		AgentVersion:     "0.1.0",
		PolicyVersion:    "2026-04-01",
		Interfaces: []*mnguardv1.NetworkInterface{
			{Name: "lo", Addrs: []string{"127.0.0.1/8", "::1/128"}, Flags: []string{"up", "loopback"}, Mtu: 65536},
			{Name: "eth0", HardwareAddr: "52:54:00:12:34:56", Addrs: []string{"192.0.2.10/24", "fe80::5054:ff:fe12:3456/64"}, Flags: []string{"up", "broadcast", "multicast"}, Mtu: 1500},
		},
		UsbDevices: []*mnguardv1.UsbDevice{
			{Bus: 1, Address: 3, VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432",
				Manufacturer: "SanDisk", Product: "Ultra", Interfaces: []*mnguardv1.UsbInterface{
					{Number: 0, Class: 8, Subclass: 6, Protocol: 0x50, ClassName: "mass-storage"},
				}},
			// Untrusted strings: an escape sequence must not reach the
			// operator's terminal.
			{Bus: 2, Address: 7, VendorId: "04e8", ProductId: "6860", Manufacturer: "SAMSUNG",
				Product: "Galaxy\x1b[2J", Interfaces: []*mnguardv1.UsbInterface{
					{Number: 0, Class: 6, Subclass: 1, Protocol: 1, ClassName: "still-image"},
					{Number: 1, Class: 0xff, Subclass: 0xff},
				}},
		},
		UsbInventoryError: "libusb: cannot open 2 of 9 devices",
		Mfa: &mnguardv1.MfaPosture{
			Enforced: false, Reason: "sshd: pam_mnguard is optional", Socket: "/run/mnguard/pam.sock", SocketServing: true,
			Services: []*mnguardv1.PamService{
				{Name: "login", Present: true, MfaRequired: true, ModuleLine: "required pam_mnguard.so"},
				{Name: "sshd", Present: true, ModuleLine: "optional pam_mnguard.so", Reason: "pam_mnguard is optional"},
				{Name: "lightdm"},
			},
		},
		Media: &mnguardv1.MediaPosture{
			Mode: "enforce", Healthy: true, UdevRuleInstalled: true, UdisksRuleInstalled: false,
			Exemptions: []*mnguardv1.ExemptionState{{
				Id: "ex-7", Device: &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432"},
				Source: "server", State: "applied", NotAfter: ts(time.Hour), RemainingSeconds: 3540, Devices: []string{"sdb"},
				Detail: "BLKROSET 0 sdb; remount /media/user/STICK read-write",
			}},
			LastReconcile: ts(-3 * time.Second),
			Devices: []*mnguardv1.RemovableDevice{
				{Name: "sdb", Bus: "usb", VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432", Model: "Ultra",
					SizeBytes: 32_017_047_552, Partitions: []string{"sdb1"}, State: "read-only", Reason: "usb ancestor 1-3",
					Detail: "BLKROSET sdb; BLKROSET sdb1; remount /media/user/STICK read-only", AttachedAt: ts(-5 * time.Minute)},
			},
		},
	}
	return &fakeAdmin{
		terminals: []*mnguardv1.Terminal{
			{
				Id: termID1, Host: pc01, State: mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE,
				EnrolledAt: ts(-30 * 24 * time.Hour), LastSeenAt: ts(-12 * time.Second),
				CertificateSerial: "5f3a9c0e71d2", CertificateNotAfter: ts(60 * 24 * time.Hour),
				Posture: posture, PostureReceivedAt: ts(-12 * time.Second), PostureHistoryCount: 1440,
			},
			{
				Id: termID2, State: mnguardv1.TerminalState_TERMINAL_STATE_REVOKED,
				Host: &mnguardv1.HostFacts{
					Hostname: "MN-PC-02", Os: "windows", Platform: "Microsoft Windows 11 Pro",
					PlatformVersion: "10.0.22631", Arch: "x86_64", AgentVersion: "0.0.9",
				},
				EnrolledAt: ts(-90 * 24 * time.Hour), RevokedAt: ts(-2 * time.Hour),
				CertificateSerial: "01", CertificateNotAfter: ts(-24 * time.Hour),
			},
		},
		tokens: []*mnguardv1.EnrollmentToken{
			{Id: "tok-1", CreatedAt: ts(-time.Hour), ExpiresAt: ts(23 * time.Hour), Uses: 5, UsesLeft: 3, CreatedBy: "tanaka", Note: "2F PCs, batch \"A\""},
			{Id: "tok-2", CreatedAt: ts(-48 * time.Hour), ExpiresAt: ts(-24 * time.Hour), Uses: 1, UsesLeft: 1, CreatedBy: "tanaka"},
			{Id: "tok-3", CreatedAt: ts(-2 * time.Hour), ExpiresAt: ts(22 * time.Hour), Uses: 1, UsesLeft: 0, CreatedBy: "suzuki", Note: "multi\nline"},
		},
		events: []*mnguardv1.StoredEvent{
			{TerminalId: termID1, Source: "server", ReceivedAt: ts(-2 * time.Second), Event: &mnguardv1.Event{
				Time: ts(-2 * time.Second), Type: "login.verify", Severity: mnguardv1.Severity_SEVERITY_WARNING,
				Message: "login code rejected for tanaka on sshd", Attributes: map[string]string{"user": "tanaka", "service": "sshd", "result": "rejected", "reason": "wrong code"},
			}},
			{TerminalId: termID1, ReceivedAt: ts(-10 * time.Second), Event: &mnguardv1.Event{
				Seq: 42, Time: ts(-11 * time.Second), Type: "media.write_blocked", Severity: mnguardv1.Severity_SEVERITY_WARNING,
				Message: "write blocked on SanDisk Ultra (sdb)", Attributes: map[string]string{"vendor_id": "0781", "product_id": "5581"},
			}},
			{TerminalId: termID1, ReceivedAt: ts(-5 * time.Minute), Event: &mnguardv1.Event{
				Seq: 41, Type: "agent.start", Severity: mnguardv1.Severity_SEVERITY_INFO, Message: "agent started",
			}},
			{TerminalId: termID2, ReceivedAt: ts(-3 * time.Hour), Event: &mnguardv1.Event{
				Seq: 7, Time: ts(-3 * time.Hour), Type: "login.lockout", Severity: mnguardv1.Severity_SEVERITY_ALERT,
				Message: "user sato locked out after 10 failures",
			}},
		},
		users: []*mnguardv1.User{
			{Name: "sato", State: mnguardv1.UserState_USER_STATE_ACTIVE, Locked: true, LockedAt: ts(-3 * time.Hour), Failures: 10,
				Algorithm: "SHA1", Digits: 6, PeriodSeconds: 30, Source: "imported", TokenSerial: "GALT10234567",
				CreatedAt: ts(-90 * 24 * time.Hour), ConfirmedAt: ts(-89 * 24 * time.Hour), LastLoginAt: ts(-26 * time.Hour),
				ClockOffsetSteps: -2, RecoveryCodesLeft: 0, CreatedBy: "admin (admin)"},
			{Name: "tanaka", State: mnguardv1.UserState_USER_STATE_ACTIVE, Failures: 1,
				Algorithm: "SHA1", Digits: 6, PeriodSeconds: 30, Source: "enrolled",
				CreatedAt: ts(-30 * 24 * time.Hour), ConfirmedAt: ts(-30 * 24 * time.Hour), LastLoginAt: ts(-15 * time.Minute),
				ClockOffsetSteps: 1, RecoveryCodesLeft: 9, CreatedBy: "admin (admin)"},
			{Name: "yamada\x1b[31m", State: mnguardv1.UserState_USER_STATE_PENDING,
				Algorithm: "SHA256", Digits: 8, PeriodSeconds: 60, Source: "imported", TokenSerial: "=cmd|' /C calc'!A0",
				CreatedAt: ts(-time.Hour), RecoveryCodesLeft: 0, CreatedBy: "admin (admin)"},
		},
		info: &mnguardv1.GetServerInfoResponse{
			Version: "0.1.0", CaPin: testPin, Operator: "tanaka", Role: "admin",
		},
	}
}

func (f *fakeAdmin) ListTerminals(context.Context, *mnguardv1.ListTerminalsRequest) (*mnguardv1.ListTerminalsResponse, error) {
	out := &mnguardv1.ListTerminalsResponse{}
	for _, t := range f.terminals {
		t = proto.Clone(t).(*mnguardv1.Terminal)
		t.Posture = nil // only GetTerminal fills it
		out.Terminals = append(out.Terminals, t)
	}
	return out, nil
}

func (f *fakeAdmin) find(id string) (*mnguardv1.Terminal, error) {
	for _, t := range f.terminals {
		if t.GetId() == id {
			return t, nil
		}
	}
	return nil, status.Error(codes.NotFound, "terminal not found")
}

func (f *fakeAdmin) GetTerminal(_ context.Context, req *mnguardv1.GetTerminalRequest) (*mnguardv1.GetTerminalResponse, error) {
	t, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	return &mnguardv1.GetTerminalResponse{Terminal: t}, nil
}

func (f *fakeAdmin) RevokeTerminal(_ context.Context, req *mnguardv1.RevokeTerminalRequest) (*mnguardv1.RevokeTerminalResponse, error) {
	f.mu.Lock()
	f.lastRevoke = req
	f.mu.Unlock()
	t, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	t = proto.Clone(t).(*mnguardv1.Terminal)
	t.Posture = nil
	t.State = mnguardv1.TerminalState_TERMINAL_STATE_REVOKED
	t.RevokedAt = timestamppb.New(testNow)
	return &mnguardv1.RevokeTerminalResponse{Terminal: t}, nil
}

func (f *fakeAdmin) CreateEnrollmentToken(_ context.Context, req *mnguardv1.CreateEnrollmentTokenRequest) (*mnguardv1.CreateEnrollmentTokenResponse, error) {
	f.mu.Lock()
	f.lastCreate = req
	f.mu.Unlock()
	return &mnguardv1.CreateEnrollmentTokenResponse{
		Token:     "mge_k5qw3zt7yb2xq4hd6n8mrc3vwa9pf2le",
		ExpiresAt: timestamppb.New(testNow.Add(time.Duration(req.GetTtlSeconds()) * time.Second)),
		Id:        "tok-4",
		Uses:      max(req.GetUses(), 1),
	}, nil
}

func (f *fakeAdmin) ListEnrollmentTokens(context.Context, *mnguardv1.ListEnrollmentTokensRequest) (*mnguardv1.ListEnrollmentTokensResponse, error) {
	return &mnguardv1.ListEnrollmentTokensResponse{Tokens: f.tokens}, nil
}

func (f *fakeAdmin) ListEvents(_ context.Context, req *mnguardv1.ListEventsRequest) (*mnguardv1.ListEventsResponse, error) {
	f.mu.Lock()
	f.lastEvents = req
	f.mu.Unlock()
	out := &mnguardv1.ListEventsResponse{}
	for _, e := range f.events {
		if req.GetTerminalId() == "" || e.GetTerminalId() == req.GetTerminalId() {
			out.Events = append(out.Events, e)
		}
	}
	return out, nil
}

func (f *fakeAdmin) ListUsers(context.Context, *mnguardv1.ListUsersRequest) (*mnguardv1.ListUsersResponse, error) {
	return &mnguardv1.ListUsersResponse{Users: f.users}, nil
}

func (f *fakeAdmin) GetUser(_ context.Context, req *mnguardv1.GetUserRequest) (*mnguardv1.GetUserResponse, error) {
	for _, u := range f.users {
		if u.GetName() == req.GetName() {
			return &mnguardv1.GetUserResponse{User: u}, nil
		}
	}
	return nil, status.Error(codes.NotFound, "user not found")
}

// fakeSecret is the fake's fixed enrollment secret (RFC 6238's SHA-1 key).
const fakeSecret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

func (f *fakeAdmin) EnrollUser(_ context.Context, req *mnguardv1.EnrollUserRequest) (*mnguardv1.EnrollUserResponse, error) {
	return &mnguardv1.EnrollUserResponse{
		User: &mnguardv1.User{Name: req.GetName(), State: mnguardv1.UserState_USER_STATE_PENDING, Algorithm: "SHA1", Digits: 6,
			PeriodSeconds: 30, Source: "enrolled", CreatedAt: ts(0), RecoveryCodesLeft: 2, CreatedBy: "admin (admin)"},
		OtpauthUrl:    "otpauth://totp/mnguard:" + req.GetName() + "?algorithm=SHA1&digits=6&issuer=mnguard&period=30&secret=" + fakeSecret,
		Secret:        fakeSecret,
		RecoveryCodes: []string{"abcd-efgh-ijkm-nopq", "rstu-vwxy-z234-5672"},
	}, nil
}

func (f *fakeAdmin) IssueOfflineLoginCode(_ context.Context, req *mnguardv1.IssueOfflineLoginCodeRequest) (*mnguardv1.IssueOfflineLoginCodeResponse, error) {
	if req.GetChallenge() != "1234-5678" {
		return nil, status.Error(codes.InvalidArgument, "challenge: want 8 digits")
	}
	return &mnguardv1.IssueOfflineLoginCodeResponse{Code: "01234-56789", ValidUntil: ts(90 * time.Minute)}, nil
}

func fakeExemption(id, terminal string, d time.Duration) *mnguardv1.ExemptionRecord {
	return &mnguardv1.ExemptionRecord{
		Exemption: &mnguardv1.Exemption{
			Id: id, TerminalId: terminal,
			Device:    &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "4C530001230815117432"},
			NotBefore: ts(0), NotAfter: ts(d), DurationSeconds: uint32(d / time.Second),
			Issuer: "helpdesk-1 (helpdesk)", Reason: "minutes for the council", Ticket: "INC-2026-0042", IssuedAt: ts(0),
		},
		State: "active", Source: "online", DeliveredAt: ts(time.Second),
	}
}

func (f *fakeAdmin) IssueExemption(_ context.Context, req *mnguardv1.IssueExemptionRequest) (*mnguardv1.IssueExemptionResponse, error) {
	d := time.Duration(req.GetDurationSeconds()) * time.Second
	if d == 0 {
		d = time.Hour
	}
	r := fakeExemption("ex-7", req.GetTerminalId(), d)
	r.Exemption.Device, r.Exemption.Reason, r.Exemption.Ticket = req.GetDevice(), req.GetReason(), req.GetTicket()
	return &mnguardv1.IssueExemptionResponse{Exemption: r, Delivered: true}, nil
}

func (f *fakeAdmin) ListExemptions(context.Context, *mnguardv1.ListExemptionsRequest) (*mnguardv1.ListExemptionsResponse, error) {
	revoked := fakeExemption("ex-6", termID2, 8*time.Hour)
	revoked.State, revoked.RevokedAt, revoked.RevokedBy = "revoked", ts(time.Minute), "admin (admin)"
	revoked.Exemption.Reason = "=HYPERLINK(\"http://x\")"
	return &mnguardv1.ListExemptionsResponse{Exemptions: []*mnguardv1.ExemptionRecord{fakeExemption("ex-7", termID1, time.Hour), revoked}}, nil
}

func (f *fakeAdmin) IssueOfflineExemptionCode(_ context.Context, req *mnguardv1.IssueOfflineExemptionCodeRequest) (*mnguardv1.IssueOfflineExemptionCodeResponse, error) {
	r := fakeExemption("ex-8", req.GetTerminalId(), 90*time.Minute)
	r.Source = "offline"
	return &mnguardv1.IssueOfflineExemptionCodeResponse{Code: "7K2QM-9XH4C", Exemption: r}, nil
}

func (f *fakeAdmin) GetServerInfo(context.Context, *mnguardv1.GetServerInfoRequest) (*mnguardv1.GetServerInfoResponse, error) {
	return f.info, nil
}

// directClient is an AdminServiceClient that calls a server in process,
// without grpc, for tests of everything but the transport.
type directClient struct{ s mnguardv1.AdminServiceServer }

func (c directClient) ListTerminals(ctx context.Context, in *mnguardv1.ListTerminalsRequest, _ ...grpc.CallOption) (*mnguardv1.ListTerminalsResponse, error) {
	return c.s.ListTerminals(ctx, in)
}

func (c directClient) GetTerminal(ctx context.Context, in *mnguardv1.GetTerminalRequest, _ ...grpc.CallOption) (*mnguardv1.GetTerminalResponse, error) {
	return c.s.GetTerminal(ctx, in)
}

func (c directClient) RevokeTerminal(ctx context.Context, in *mnguardv1.RevokeTerminalRequest, _ ...grpc.CallOption) (*mnguardv1.RevokeTerminalResponse, error) {
	return c.s.RevokeTerminal(ctx, in)
}

func (c directClient) CreateEnrollmentToken(ctx context.Context, in *mnguardv1.CreateEnrollmentTokenRequest, _ ...grpc.CallOption) (*mnguardv1.CreateEnrollmentTokenResponse, error) {
	return c.s.CreateEnrollmentToken(ctx, in)
}

func (c directClient) ListEnrollmentTokens(ctx context.Context, in *mnguardv1.ListEnrollmentTokensRequest, _ ...grpc.CallOption) (*mnguardv1.ListEnrollmentTokensResponse, error) {
	return c.s.ListEnrollmentTokens(ctx, in)
}

func (c directClient) ListEvents(ctx context.Context, in *mnguardv1.ListEventsRequest, _ ...grpc.CallOption) (*mnguardv1.ListEventsResponse, error) {
	return c.s.ListEvents(ctx, in)
}

func (c directClient) GetServerInfo(ctx context.Context, in *mnguardv1.GetServerInfoRequest, _ ...grpc.CallOption) (*mnguardv1.GetServerInfoResponse, error) {
	return c.s.GetServerInfo(ctx, in)
}

func (c directClient) EnrollUser(ctx context.Context, in *mnguardv1.EnrollUserRequest, _ ...grpc.CallOption) (*mnguardv1.EnrollUserResponse, error) {
	return c.s.EnrollUser(ctx, in)
}

func (c directClient) ConfirmUser(ctx context.Context, in *mnguardv1.ConfirmUserRequest, _ ...grpc.CallOption) (*mnguardv1.ConfirmUserResponse, error) {
	return c.s.ConfirmUser(ctx, in)
}

func (c directClient) ListUsers(ctx context.Context, in *mnguardv1.ListUsersRequest, _ ...grpc.CallOption) (*mnguardv1.ListUsersResponse, error) {
	return c.s.ListUsers(ctx, in)
}

func (c directClient) GetUser(ctx context.Context, in *mnguardv1.GetUserRequest, _ ...grpc.CallOption) (*mnguardv1.GetUserResponse, error) {
	return c.s.GetUser(ctx, in)
}

func (c directClient) UnlockUser(ctx context.Context, in *mnguardv1.UnlockUserRequest, _ ...grpc.CallOption) (*mnguardv1.UnlockUserResponse, error) {
	return c.s.UnlockUser(ctx, in)
}

func (c directClient) ResetUser(ctx context.Context, in *mnguardv1.ResetUserRequest, _ ...grpc.CallOption) (*mnguardv1.ResetUserResponse, error) {
	return c.s.ResetUser(ctx, in)
}

func (c directClient) DeleteUser(ctx context.Context, in *mnguardv1.DeleteUserRequest, _ ...grpc.CallOption) (*mnguardv1.DeleteUserResponse, error) {
	return c.s.DeleteUser(ctx, in)
}

func (c directClient) ImportUsers(ctx context.Context, in *mnguardv1.ImportUsersRequest, _ ...grpc.CallOption) (*mnguardv1.ImportUsersResponse, error) {
	return c.s.ImportUsers(ctx, in)
}

func (c directClient) ResyncUser(ctx context.Context, in *mnguardv1.ResyncUserRequest, _ ...grpc.CallOption) (*mnguardv1.ResyncUserResponse, error) {
	return c.s.ResyncUser(ctx, in)
}

func (c directClient) NewRecoveryCodes(ctx context.Context, in *mnguardv1.NewRecoveryCodesRequest, _ ...grpc.CallOption) (*mnguardv1.NewRecoveryCodesResponse, error) {
	return c.s.NewRecoveryCodes(ctx, in)
}

func (c directClient) IssueOfflineLoginCode(ctx context.Context, in *mnguardv1.IssueOfflineLoginCodeRequest, _ ...grpc.CallOption) (*mnguardv1.IssueOfflineLoginCodeResponse, error) {
	return c.s.IssueOfflineLoginCode(ctx, in)
}

func (c directClient) IssueExemption(ctx context.Context, in *mnguardv1.IssueExemptionRequest, _ ...grpc.CallOption) (*mnguardv1.IssueExemptionResponse, error) {
	return c.s.IssueExemption(ctx, in)
}

func (c directClient) RevokeExemption(ctx context.Context, in *mnguardv1.RevokeExemptionRequest, _ ...grpc.CallOption) (*mnguardv1.RevokeExemptionResponse, error) {
	return c.s.RevokeExemption(ctx, in)
}

func (c directClient) ListExemptions(ctx context.Context, in *mnguardv1.ListExemptionsRequest, _ ...grpc.CallOption) (*mnguardv1.ListExemptionsResponse, error) {
	return c.s.ListExemptions(ctx, in)
}

func (c directClient) IssueOfflineExemptionCode(ctx context.Context, in *mnguardv1.IssueOfflineExemptionCodeRequest, _ ...grpc.CallOption) (*mnguardv1.IssueOfflineExemptionCodeResponse, error) {
	return c.s.IssueOfflineExemptionCode(ctx, in)
}

// harness runs mnguardctl against a fake without a network. It records the
// connection settings of the last dial.
type harness struct {
	fake *fakeAdmin
	env  map[string]string
	cfg  *connConfig // nil until a command dialed
}

type result struct {
	code           int
	stdout, stderr string
}

func newHarness() *harness {
	return &harness{
		fake: newFakeAdmin(),
		env: map[string]string{
			"MNGUARD_SERVER": "collector.test:8443",
			"MNGUARD_TOKEN":  testToken,
			"MNGUARD_CA_PIN": testPin,
		},
	}
}

func (h *harness) run(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	a := &app{
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return h.env[k] },
		dial: func(cfg connConfig) (*connection, error) {
			h.cfg = &cfg
			return &connection{client: directClient{h.fake}, server: cfg.server, timeout: cfg.timeout}, nil
		},
		now: func() time.Time { return testNow },
		loc: testLoc,
	}
	r := result{code: a.run(context.Background(), args)}
	r.stdout, r.stderr = stdout.String(), stderr.String()
	checkStderr(t, r)
	return r
}

// checkStderr checks the error contract: success is silent on stderr; a
// failure is exactly one line "mnguardctl: ...", nothing on stdout, and
// never the token.
func checkStderr(t *testing.T, r result) {
	t.Helper()
	if strings.Contains(r.stderr, testToken) || strings.Contains(r.stdout, testToken) && r.code != 0 {
		t.Errorf("output shows the API token: stderr %q", r.stderr)
	}
	if r.code == 0 {
		if r.stderr != "" {
			t.Errorf("stderr on success: %q", r.stderr)
		}
		return
	}
	if r.stdout != "" {
		t.Errorf("stdout on failure: %q", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "mnguardctl: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr is not one line \"mnguardctl: ...\": %q", r.stderr)
	}
}
