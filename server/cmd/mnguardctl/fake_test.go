package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
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
	termID3   = "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b03"
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
	operators []*mnguardv1.Operator // with their tokens
	audit     []*mnguardv1.AuditEntry
	verify    *mnguardv1.VerifyAuditResponse
	reportErr error // GetSelfInspectionReport fails with it
	// ListTerminals pages as the collector does (page_size, page_token
	// "fake-page:OFFSET"); pageLoop answers the first page's token for
	// ever, failPage fails the call of that number.
	pageLoop      bool
	failPage      int
	terminalCalls int

	mu                sync.Mutex
	lastCreate        *mnguardv1.CreateEnrollmentTokenRequest
	lastEvents        *mnguardv1.ListEventsRequest
	lastRevoke        *mnguardv1.RevokeTerminalRequest
	lastTerminals     *mnguardv1.ListTerminalsRequest
	lastAudit         *mnguardv1.ListAuditRequest
	lastReport        *mnguardv1.GetSelfInspectionReportRequest
	lastAddOperator   *mnguardv1.AddOperatorRequest
	lastSetRole       *mnguardv1.SetOperatorRoleRequest
	lastSetPassword   *mnguardv1.SetOperatorPasswordRequest
	lastOperatorToken *mnguardv1.CreateOperatorTokenRequest
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
	const day = 24 * time.Hour
	check := func(name, status, detail string, since time.Duration) *mnguardv1.CheckResult {
		return &mnguardv1.CheckResult{Name: name, Status: status, Detail: detail, Since: ts(since)}
	}
	revokedChecks := []*mnguardv1.CheckResult{}
	for _, name := range complianceChecks {
		revokedChecks = append(revokedChecks, check(name, "unknown", "the terminal is revoked", -2*time.Hour))
	}
	return &fakeAdmin{
		terminals: []*mnguardv1.Terminal{
			{
				Id: termID1, Host: pc01, State: mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE,
				EnrolledAt: ts(-30 * day), LastSeenAt: ts(-12 * time.Second),
				CertificateSerial: "5f3a9c0e71d2", CertificateNotAfter: ts(60 * day),
				Posture: posture, PostureReceivedAt: ts(-12 * time.Second), PostureHistoryCount: 1440,
				Compliance: &mnguardv1.Compliance{
					State: "non-compliant", StateSince: ts(-3 * time.Hour), EvaluatedAt: ts(-30 * time.Second),
					Checks: []*mnguardv1.CheckResult{
						check("media", "pass", "", -30*day),
						check("mfa", "fail", "sshd: pam_mnguard is optional", -3*time.Hour),
						check("network", "unknown", "the agent does not report network isolation yet", -30*day),
						check("fresh", "pass", "", -30*day),
						check("version", "fail", "agent 0.1.0 is older than 0.2.0", -2*day),
						check("certificate", "pass", "", -30*day),
						check("exemptions", "pass", "", -30*day),
					},
				},
			},
			{
				Id: termID2, State: mnguardv1.TerminalState_TERMINAL_STATE_REVOKED,
				Host: &mnguardv1.HostFacts{
					Hostname: "MN-PC-02", Os: "windows", Platform: "Microsoft Windows 11 Pro",
					PlatformVersion: "10.0.22631", Arch: "x86_64", AgentVersion: "0.0.9",
				},
				EnrolledAt: ts(-90 * day), RevokedAt: ts(-2 * time.Hour),
				CertificateSerial: "01", CertificateNotAfter: ts(-24 * time.Hour),
				Compliance: &mnguardv1.Compliance{
					State: "revoked", StateSince: ts(-2 * time.Hour), EvaluatedAt: ts(-30 * time.Second), Checks: revokedChecks,
				},
			},
			{
				// Silent for ten days; its verdict carries a check this
				// mnguardctl does not know, as a newer collector's would.
				Id: termID3, State: mnguardv1.TerminalState_TERMINAL_STATE_ACTIVE,
				Host:       &mnguardv1.HostFacts{Hostname: "mn-pc-03", Os: "linux", Platform: "ubuntu", PlatformVersion: "24.04", AgentVersion: "0.2.0"},
				EnrolledAt: ts(-60 * day), LastSeenAt: ts(-10 * day),
				CertificateSerial: "7a", CertificateNotAfter: ts(20 * day),
				Compliance: &mnguardv1.Compliance{
					State: "stale", StateSince: ts(-10*day + 3*time.Minute), EvaluatedAt: ts(-30 * time.Second), Offline: true,
					Checks: []*mnguardv1.CheckResult{
						check("media", "pass", "", -60*day),
						check("mfa", "pass", "", -60*day),
						check("network", "unknown", "the agent does not report network isolation yet", -60*day),
						check("fresh", "fail", "no report for 10d", -10*day+3*time.Minute),
						check("version", "pass", "", -60*day),
						check("certificate", "pass", "", -60*day),
						check("exemptions", "pass", "", -60*day),
						check("disk_encryption", "fail", "=cmd|' /C calc'!A0", -10*day),
					},
				},
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
		operators: []*mnguardv1.Operator{
			{Name: "tanaka", Role: "admin", HasPassword: true, CreatedAt: ts(-90 * day), CreatedBy: "mnguard-server init",
				LastSignInAt: ts(-time.Hour), Language: "ja", Tokens: []*mnguardv1.OperatorToken{
					{Id: "ot-1", CreatedAt: ts(-30 * day), Note: "tanaka's CLI"},
					{Id: "ot-2", CreatedAt: ts(-60 * day), ExpiresAt: ts(-30 * day), Note: "migration"},
					{Id: "ot-3", CreatedAt: ts(-10 * day), ExpiresAt: ts(20 * day), RevokedAt: ts(-day), Note: "lost laptop\x1b[2J"},
				}},
			{Name: "sato", Role: "helpdesk", Locked: true, LockedAt: ts(-20 * time.Minute), Failures: 5, HasPassword: true,
				CreatedAt: ts(-30 * day), CreatedBy: "tanaka (admin, token ot-1)", LastSignInAt: ts(-2 * day)},
			{Name: "suzuki", Role: "auditor", Disabled: true, DisabledAt: ts(-7 * day),
				CreatedAt: ts(-20 * day), CreatedBy: "tanaka (admin, token ot-1)", Language: "en"},
		},
		audit: fakeAuditChain([]*mnguardv1.AuditEntry{
			{Id: 1, Time: ts(-30 * day), Actor: "mnguard-server init", Action: "operator.add", Target: "tanaka", Detail: "role admin; password and TOTP set"},
			{Id: 2, Time: ts(-30 * day), Actor: "tanaka (admin, token ot-1)", Action: "operator.add", Target: "sato", Detail: "role helpdesk; password and TOTP set"},
			{Id: 3, Time: ts(-time.Hour), Actor: "sato (helpdesk, web session 1a2b3c4d)", Action: "exemption.issue", Target: "ex-7",
				Detail: "=HYPERLINK(\"http://x\") 0781:5581:4C530001230815117432 on " + termID1},
			{Id: 4, Time: ts(-time.Minute), Actor: "sato (helpdesk, web session 1a2b3c4d)", Action: "exemption.revoke", Target: "ex-7", Detail: "done\nearly"},
		}),
	}
}

// fakeAuditChain links entries (oldest first) as the collector does, and
// returns them newest first.
func fakeAuditChain(es []*mnguardv1.AuditEntry) []*mnguardv1.AuditEntry {
	var prev []byte
	for _, e := range es {
		h := sha256.New()
		h.Write(prev)
		fmt.Fprintf(h, "%d|%s|%s|%s|%s|%s", e.GetId(), e.GetTime().AsTime().Format(time.RFC3339Nano), e.GetActor(), e.GetAction(), e.GetTarget(), e.GetDetail())
		e.PrevHash, e.Hash = prev, h.Sum(nil)
		prev = e.Hash
	}
	slices.Reverse(es)
	return es
}

func (f *fakeAdmin) ListTerminals(_ context.Context, req *mnguardv1.ListTerminalsRequest) (*mnguardv1.ListTerminalsResponse, error) {
	f.mu.Lock()
	f.lastTerminals = proto.Clone(req).(*mnguardv1.ListTerminalsRequest)
	f.terminalCalls++
	call := f.terminalCalls
	f.mu.Unlock()
	if call == f.failPage {
		return nil, status.Error(codes.Unavailable, "database unavailable")
	}
	start := int(req.GetOffset())
	if tok := req.GetPageToken(); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "fake-page:"))
		if err != nil || !strings.HasPrefix(tok, "fake-page:") {
			return nil, status.Errorf(codes.InvalidArgument, "page_token: not a page token")
		}
		start = n
	}
	var match []*mnguardv1.Terminal
	for _, t := range f.terminals {
		c := t.GetCompliance()
		switch {
		case req.GetState() != "" && c.GetState() != req.GetState():
			continue
		case req.GetFailingCheck() != "" && checkStatus(c, req.GetFailingCheck()) != "fail":
			continue
		case req.GetSearch() != "" && !strings.Contains(strings.ToLower(t.GetHost().GetHostname()+" "+t.GetId()), strings.ToLower(req.GetSearch())):
			continue
		}
		t = proto.Clone(t).(*mnguardv1.Terminal)
		t.Posture = nil // only GetTerminal fills it
		match = append(match, t)
	}
	out := &mnguardv1.ListTerminalsResponse{Total: uint32(len(match))}
	match = match[min(start, len(match)):]
	if n := int(req.GetLimit()); n > 0 && n < len(match) {
		match = match[:n]
	}
	if n := int(req.GetPageSize()); n > 0 && n < len(match) {
		match = match[:n]
		out.NextPageToken = fmt.Sprintf("fake-page:%d", start+n)
		if f.pageLoop {
			out.NextPageToken = fmt.Sprintf("fake-page:%d", n)
		}
	}
	out.Terminals = match
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
	t.Compliance = nil // not evaluated since
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

// operator returns a copy of the named operator, without its tokens.
func (f *fakeAdmin) operator(name string) (*mnguardv1.Operator, error) {
	for _, o := range f.operators {
		if o.GetName() == name {
			o = proto.Clone(o).(*mnguardv1.Operator)
			o.Tokens = nil
			return o, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "operator %s not found", name)
}

func fakeOtpauthURL(name string) string {
	return "otpauth://totp/mnguard%20console:" + name + "?algorithm=SHA1&digits=6&issuer=mnguard%20console&period=30&secret=" + fakeSecret
}

func (f *fakeAdmin) AddOperator(_ context.Context, req *mnguardv1.AddOperatorRequest) (*mnguardv1.AddOperatorResponse, error) {
	f.mu.Lock()
	f.lastAddOperator = req
	f.mu.Unlock()
	if _, err := f.operator(req.GetName()); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "operator %s exists", req.GetName())
	}
	if len([]rune(req.GetPassword())) < 12 {
		return nil, status.Error(codes.InvalidArgument, "password is shorter than 12 characters")
	}
	o := &mnguardv1.Operator{Name: req.GetName(), Role: req.GetRole(), HasPassword: true, CreatedAt: ts(0), CreatedBy: "tanaka (admin, token ot-1)"}
	return &mnguardv1.AddOperatorResponse{Operator: o, OtpauthUrl: fakeOtpauthURL(req.GetName()), Secret: fakeSecret}, nil
}

func (f *fakeAdmin) ListOperators(context.Context, *mnguardv1.ListOperatorsRequest) (*mnguardv1.ListOperatorsResponse, error) {
	out := &mnguardv1.ListOperatorsResponse{}
	for _, o := range f.operators {
		o, _ = f.operator(o.GetName())
		out.Operators = append(out.Operators, o)
	}
	return out, nil
}

func (f *fakeAdmin) GetOperator(_ context.Context, req *mnguardv1.GetOperatorRequest) (*mnguardv1.GetOperatorResponse, error) {
	for _, o := range f.operators {
		if o.GetName() == req.GetName() {
			return &mnguardv1.GetOperatorResponse{Operator: o}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "operator %s not found", req.GetName())
}

func (f *fakeAdmin) DisableOperator(_ context.Context, req *mnguardv1.DisableOperatorRequest) (*mnguardv1.DisableOperatorResponse, error) {
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	o.Disabled, o.DisabledAt = true, ts(0)
	return &mnguardv1.DisableOperatorResponse{Operator: o}, nil
}

func (f *fakeAdmin) EnableOperator(_ context.Context, req *mnguardv1.EnableOperatorRequest) (*mnguardv1.EnableOperatorResponse, error) {
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	o.Disabled, o.DisabledAt = false, nil
	return &mnguardv1.EnableOperatorResponse{Operator: o}, nil
}

func (f *fakeAdmin) DeleteOperator(_ context.Context, req *mnguardv1.DeleteOperatorRequest) (*mnguardv1.DeleteOperatorResponse, error) {
	if _, err := f.operator(req.GetName()); err != nil {
		return nil, err
	}
	return &mnguardv1.DeleteOperatorResponse{}, nil
}

func (f *fakeAdmin) ResetOperatorTotp(_ context.Context, req *mnguardv1.ResetOperatorTotpRequest) (*mnguardv1.ResetOperatorTotpResponse, error) {
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	return &mnguardv1.ResetOperatorTotpResponse{Operator: o, OtpauthUrl: fakeOtpauthURL(o.GetName()), Secret: fakeSecret}, nil
}

func (f *fakeAdmin) SetOperatorRole(_ context.Context, req *mnguardv1.SetOperatorRoleRequest) (*mnguardv1.SetOperatorRoleResponse, error) {
	f.mu.Lock()
	f.lastSetRole = req
	f.mu.Unlock()
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	o.Role = req.GetRole()
	return &mnguardv1.SetOperatorRoleResponse{Operator: o}, nil
}

func (f *fakeAdmin) SetOperatorPassword(_ context.Context, req *mnguardv1.SetOperatorPasswordRequest) (*mnguardv1.SetOperatorPasswordResponse, error) {
	f.mu.Lock()
	f.lastSetPassword = req
	f.mu.Unlock()
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	o.HasPassword = true
	return &mnguardv1.SetOperatorPasswordResponse{Operator: o}, nil
}

func (f *fakeAdmin) UnlockOperator(_ context.Context, req *mnguardv1.UnlockOperatorRequest) (*mnguardv1.UnlockOperatorResponse, error) {
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	o.Locked, o.LockedAt, o.Failures = false, nil, 0
	return &mnguardv1.UnlockOperatorResponse{Operator: o}, nil
}

func (f *fakeAdmin) CreateOperatorToken(_ context.Context, req *mnguardv1.CreateOperatorTokenRequest) (*mnguardv1.CreateOperatorTokenResponse, error) {
	f.mu.Lock()
	f.lastOperatorToken = req
	f.mu.Unlock()
	o, err := f.operator(req.GetName())
	if err != nil {
		return nil, err
	}
	if o.GetDisabled() {
		return nil, status.Errorf(codes.FailedPrecondition, "operator %s is disabled: enable it first", o.GetName())
	}
	out := &mnguardv1.CreateOperatorTokenResponse{Token: "mgo_n3wt0k3nf0r" + o.GetName(), Id: "ot-4"}
	if d := time.Duration(req.GetTtlSeconds()) * time.Second; d > 0 {
		out.ExpiresAt = ts(d)
	}
	return out, nil
}

func (f *fakeAdmin) RevokeOperatorToken(_ context.Context, req *mnguardv1.RevokeOperatorTokenRequest) (*mnguardv1.RevokeOperatorTokenResponse, error) {
	for _, o := range f.operators {
		for _, t := range o.GetTokens() {
			if t.GetId() != req.GetId() {
				continue
			}
			if t.GetRevokedAt() != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "token %s is revoked already", t.GetId())
			}
			return &mnguardv1.RevokeOperatorTokenResponse{}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "token %s not found", req.GetId())
}

func (f *fakeAdmin) ListAudit(_ context.Context, req *mnguardv1.ListAuditRequest) (*mnguardv1.ListAuditResponse, error) {
	f.mu.Lock()
	f.lastAudit = req
	f.mu.Unlock()
	out := &mnguardv1.ListAuditResponse{}
	for _, e := range f.audit {
		if req.GetBeforeId() != 0 && e.GetId() >= req.GetBeforeId() || !strings.HasPrefix(e.GetAction(), req.GetAction()) {
			continue
		}
		if n := req.GetLimit(); n > 0 && len(out.Entries) == int(n) {
			break
		}
		out.Entries = append(out.Entries, e)
	}
	return out, nil
}

func (f *fakeAdmin) VerifyAudit(context.Context, *mnguardv1.VerifyAuditRequest) (*mnguardv1.VerifyAuditResponse, error) {
	if f.verify != nil {
		return f.verify, nil
	}
	head := f.audit[0]
	return &mnguardv1.VerifyAuditResponse{Ok: true, Entries: uint64(len(f.audit)), HeadId: head.GetId(), HeadHash: head.GetHash()}, nil
}

func (f *fakeAdmin) GetSelfInspectionReport(_ context.Context, req *mnguardv1.GetSelfInspectionReportRequest) (*mnguardv1.GetSelfInspectionReportResponse, error) {
	f.mu.Lock()
	f.lastReport = req
	f.mu.Unlock()
	if f.reportErr != nil {
		return nil, f.reportErr
	}
	format := cmp.Or(req.GetFormat(), "html")
	period := req.GetFrom() + ".." + req.GetTo()
	out := &mnguardv1.GetSelfInspectionReportResponse{Filename: "self-inspection-" + req.GetFrom() + "-" + req.GetTo() + "." + format}
	switch format {
	case "html":
		out.ContentType = "text/html; charset=utf-8"
		out.Document = []byte("<!DOCTYPE html>\n<html lang=\"" + cmp.Or(req.GetLanguage(), "ja") + "\"><title>self-inspection " + period + "</title></html>\n")
	case "csv":
		out.ContentType = "text/csv; charset=utf-8"
		out.Document = []byte("section,item,value\nperiod,days," + period + "\n")
	case "json":
		out.ContentType = "application/json"
		out.Document = []byte(`{"from":"` + req.GetFrom() + `","to":"` + req.GetTo() + `"}` + "\n")
	default:
		return nil, status.Errorf(codes.InvalidArgument, "format: %q is not html, csv or json", format)
	}
	return out, nil
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

func (c directClient) AddOperator(ctx context.Context, in *mnguardv1.AddOperatorRequest, _ ...grpc.CallOption) (*mnguardv1.AddOperatorResponse, error) {
	return c.s.AddOperator(ctx, in)
}

func (c directClient) ListOperators(ctx context.Context, in *mnguardv1.ListOperatorsRequest, _ ...grpc.CallOption) (*mnguardv1.ListOperatorsResponse, error) {
	return c.s.ListOperators(ctx, in)
}

func (c directClient) GetOperator(ctx context.Context, in *mnguardv1.GetOperatorRequest, _ ...grpc.CallOption) (*mnguardv1.GetOperatorResponse, error) {
	return c.s.GetOperator(ctx, in)
}

func (c directClient) DisableOperator(ctx context.Context, in *mnguardv1.DisableOperatorRequest, _ ...grpc.CallOption) (*mnguardv1.DisableOperatorResponse, error) {
	return c.s.DisableOperator(ctx, in)
}

func (c directClient) EnableOperator(ctx context.Context, in *mnguardv1.EnableOperatorRequest, _ ...grpc.CallOption) (*mnguardv1.EnableOperatorResponse, error) {
	return c.s.EnableOperator(ctx, in)
}

func (c directClient) DeleteOperator(ctx context.Context, in *mnguardv1.DeleteOperatorRequest, _ ...grpc.CallOption) (*mnguardv1.DeleteOperatorResponse, error) {
	return c.s.DeleteOperator(ctx, in)
}

func (c directClient) ResetOperatorTotp(ctx context.Context, in *mnguardv1.ResetOperatorTotpRequest, _ ...grpc.CallOption) (*mnguardv1.ResetOperatorTotpResponse, error) {
	return c.s.ResetOperatorTotp(ctx, in)
}

func (c directClient) SetOperatorRole(ctx context.Context, in *mnguardv1.SetOperatorRoleRequest, _ ...grpc.CallOption) (*mnguardv1.SetOperatorRoleResponse, error) {
	return c.s.SetOperatorRole(ctx, in)
}

func (c directClient) SetOperatorPassword(ctx context.Context, in *mnguardv1.SetOperatorPasswordRequest, _ ...grpc.CallOption) (*mnguardv1.SetOperatorPasswordResponse, error) {
	return c.s.SetOperatorPassword(ctx, in)
}

func (c directClient) UnlockOperator(ctx context.Context, in *mnguardv1.UnlockOperatorRequest, _ ...grpc.CallOption) (*mnguardv1.UnlockOperatorResponse, error) {
	return c.s.UnlockOperator(ctx, in)
}

func (c directClient) CreateOperatorToken(ctx context.Context, in *mnguardv1.CreateOperatorTokenRequest, _ ...grpc.CallOption) (*mnguardv1.CreateOperatorTokenResponse, error) {
	return c.s.CreateOperatorToken(ctx, in)
}

func (c directClient) RevokeOperatorToken(ctx context.Context, in *mnguardv1.RevokeOperatorTokenRequest, _ ...grpc.CallOption) (*mnguardv1.RevokeOperatorTokenResponse, error) {
	return c.s.RevokeOperatorToken(ctx, in)
}

func (c directClient) ListAudit(ctx context.Context, in *mnguardv1.ListAuditRequest, _ ...grpc.CallOption) (*mnguardv1.ListAuditResponse, error) {
	return c.s.ListAudit(ctx, in)
}

func (c directClient) VerifyAudit(ctx context.Context, in *mnguardv1.VerifyAuditRequest, _ ...grpc.CallOption) (*mnguardv1.VerifyAuditResponse, error) {
	return c.s.VerifyAudit(ctx, in)
}

func (c directClient) GetSelfInspectionReport(ctx context.Context, in *mnguardv1.GetSelfInspectionReportRequest, _ ...grpc.CallOption) (*mnguardv1.GetSelfInspectionReportResponse, error) {
	return c.s.GetSelfInspectionReport(ctx, in)
}

func (c directClient) GetNetworkPolicy(ctx context.Context, in *mnguardv1.GetNetworkPolicyRequest, _ ...grpc.CallOption) (*mnguardv1.GetNetworkPolicyResponse, error) {
	return c.s.GetNetworkPolicy(ctx, in)
}

func (c directClient) SetNetworkPolicy(ctx context.Context, in *mnguardv1.SetNetworkPolicyRequest, _ ...grpc.CallOption) (*mnguardv1.SetNetworkPolicyResponse, error) {
	return c.s.SetNetworkPolicy(ctx, in)
}

// brokenVerdict reports whether stdout is one JSON object or CSV key/value
// list saying ok is false: the only output a failure may leave (see
// verdictError).
func brokenVerdict(stdout string) bool {
	var v struct {
		Ok *bool `json:"ok"`
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	if dec.Decode(&v) == nil && v.Ok != nil {
		return !*v.Ok && errors.Is(dec.Decode(new(any)), io.EOF)
	}
	rows, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	return err == nil && len(rows) > 1 && slices.Equal(rows[0], []string{"key", "value"}) &&
		slices.ContainsFunc(rows, func(r []string) bool { return slices.Equal(r, []string{"ok", "false"}) })
}

// harness runs mnguardctl against a fake without a network. It records the
// connection settings of the last dial.
type harness struct {
	fake *fakeAdmin
	env  map[string]string
	cfg  *connConfig // nil until a command dialed
	// dials counts the connections made.
	dials int
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
			h.dials++
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
// failure is exactly one line "mnguardctl: ...", nothing on stdout but the
// verdict of a broken audit chain in JSON or CSV, and never the token.
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
	if r.stdout != "" && !brokenVerdict(r.stdout) {
		t.Errorf("stdout on failure: %q", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "mnguardctl: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr is not one line \"mnguardctl: ...\": %q", r.stderr)
	}
}
