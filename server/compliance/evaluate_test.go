package compliance

import (
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// now is the evaluation time of the table tests.
var now = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// netVersion is the version of the collector's network policy in the
// table tests.
const netVersion = "n-1a2b3c4d"

var policy = Policy{ReportInterval: time.Minute, Version: "1.4.0", NetworkPolicyVersion: func() string { return netVersion }}

// goodPosture is the posture of a terminal that passes every check it can.
func goodPosture(collected time.Time) *mnguardv1.Posture {
	return &mnguardv1.Posture{
		CollectedAt:  timestamppb.New(collected),
		AgentVersion: "1.4.0",
		Host: &mnguardv1.HostFacts{Hostname: "PC-01", Os: "linux", Platform: "debian", PlatformVersion: "12",
			AgentVersion: "1.4.0"},
		Interfaces: []*mnguardv1.NetworkInterface{
			{Name: "lo", Addrs: []string{"127.0.0.1/8", "::1/128"}, Flags: []string{"up", "loopback"}},
			{Name: "eth0", Addrs: []string{"192.0.2.10/24", "2001:DB8::10/64"}, Flags: []string{"up", "broadcast"}},
		},
		UsbDevices: []*mnguardv1.UsbDevice{{VendorId: "046d", ProductId: "c52b", Serial: "KBD-SERIAL"}},
		Media: &mnguardv1.MediaPosture{Mode: "enforce", Healthy: true, Devices: []*mnguardv1.RemovableDevice{
			{Name: "sdb", VendorId: "0781", ProductId: "5581", Serial: "SN-Stick-1", State: "read-only"},
		}},
		Mfa: &mnguardv1.MfaPosture{Enforced: true, SocketServing: true},
		Network: &mnguardv1.NetworkPosture{
			PolicyVersion: netVersion,
			Adapters: []*mnguardv1.NetworkAdapter{
				{Name: "lo", Kind: "loopback", Addrs: []string{"127.0.0.1/8"}, Up: true},
				{Name: "eth0", Kind: "ethernet", Addrs: []string{"192.0.2.10/24"}, Up: true, Driver: "e1000e"},
			},
			Routes:      []*mnguardv1.NetworkRoute{{Destination: "192.0.2.0/24", Interface: "eth0", Table: "main"}},
			DnsServers:  []*mnguardv1.DnsServer{{Address: "192.0.2.53", Source: "/etc/resolv.conf"}},
			Enforcement: &mnguardv1.NetworkEnforcement{Requested: true, InPlace: true, Mechanism: "nftables table inet mnguard"},
			LastScan:    timestamppb.New(collected),
		},
	}
}

// finding is a network finding of kind with detail.
func finding(kind, detail string) *mnguardv1.NetworkFinding {
	return &mnguardv1.NetworkFinding{Id: kind + ":" + detail, Kind: kind, Detail: detail}
}

func exemption(id, state string, notAfter time.Time) *mnguardv1.ExemptionState {
	return &mnguardv1.ExemptionState{Id: id, State: state, NotAfter: timestamppb.New(notAfter),
		Device: &mnguardv1.DeviceIdentity{VendorId: "0781", ProductId: "5581", Serial: "SN-Stick-1"}}
}

// goodInput is an active terminal that reported goodPosture 30 s ago.
func goodInput(p *mnguardv1.Posture) Input {
	seen := now.Add(-30 * time.Second)
	return Input{
		ComplianceInput: store.ComplianceInput{TerminalID: "t1", Hostname: "pc-01", State: store.StateActive,
			EnrolledAt: now.Add(-30 * 24 * time.Hour), LastSeenAt: seen, CertNotAfter: now.Add(60 * 24 * time.Hour),
			PostureReceivedAt: seen},
		Facts: FactsOf("t1", "pc-01", p),
	}
}

// want is one check's expected status, detail and (when not nil) args.
type want struct {
	status, detail string
	args           []string
}

func pass() want                                 { return want{status: store.CheckPass} }
func fail(detail string, args ...string) want    { return want{store.CheckFail, detail, args} }
func unknown(detail string, args ...string) want { return want{store.CheckUnknown, detail, args} }

func stamp3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func TestEvaluate(t *testing.T) {
	collected := now.Add(-35 * time.Second)
	devArgs := "0781:5581:SN-Stick-1"
	tests := []struct {
		name        string
		posture     func(p *mnguardv1.Posture) *mnguardv1.Posture // nil: the good one
		input       func(in *Input)
		policy      func(p *Policy)
		checks      map[string]want // checks not named must pass
		state       string
		wantOffline bool
	}{
		{name: "all good", state: store.Compliant},

		// Media.
		{name: "no posture", posture: func(*mnguardv1.Posture) *mnguardv1.Posture { return nil },
			checks: map[string]want{
				store.CheckMedia: fail("check.no_posture"), store.CheckMFA: fail("check.no_posture"), store.CheckNetwork: fail("check.no_posture"),
				store.CheckVersion: fail("check.no_posture"), store.CheckExemptions: unknown("check.no_posture"),
			}, state: store.NonCompliant},
		{name: "media not reported", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Media = nil; return p },
			checks: map[string]want{store.CheckMedia: fail("check.media.not_reported")}, state: store.NonCompliant},
		{name: "media monitor", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Media.Mode = "monitor"; return p },
			checks: map[string]want{store.CheckMedia: fail("check.media.monitor", "monitor")}, state: store.NonCompliant},
		{name: "media mode empty", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Media.Mode = ""; return p },
			checks: map[string]want{store.CheckMedia: fail("check.media.monitor", "")}, state: store.NonCompliant},
		{name: "media unhealthy", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Healthy, p.Media.UnhealthyReason = false, "udev rule missing"
			return p
		}, checks: map[string]want{store.CheckMedia: fail("check.media.unhealthy", "udev rule missing")}, state: store.NonCompliant},
		{name: "writable device", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Devices = append(p.Media.Devices, &mnguardv1.RemovableDevice{Name: "sdc", State: "writable", Detail: "remount failed: EBUSY"})
			return p
		}, checks: map[string]want{store.CheckMedia: fail("check.media.writable", "sdc", "remount failed: EBUSY")}, state: store.NonCompliant},
		{name: "exempted device passes", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Devices[0].State = "exempted"
			return p
		}, state: store.Compliant},

		// MFA.
		{name: "mfa not reported", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Mfa = nil; return p },
			checks: map[string]want{store.CheckMFA: fail("check.mfa.not_reported")}, state: store.NonCompliant},
		{name: "mfa not enforced", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Mfa = &mnguardv1.MfaPosture{Reason: "sshd: pam_mnguard absent"}
			return p
		}, checks: map[string]want{store.CheckMFA: fail("check.mfa.not_enforced", "sshd: pam_mnguard absent")}, state: store.NonCompliant},

		// Network.
		{name: "network not reported", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Network = nil; return p },
			checks: map[string]want{store.CheckNetwork: fail("check.network.not_reported")}, state: store.NonCompliant},
		{name: "no network policy on the collector", policy: func(p *Policy) { p.NetworkPolicyVersion = nil },
			checks: map[string]want{store.CheckNetwork: unknown("check.network.no_policy")}, state: store.Compliant},
		{name: "empty network policy version", policy: func(p *Policy) { p.NetworkPolicyVersion = func() string { return "" } },
			checks: map[string]want{store.CheckNetwork: unknown("check.network.no_policy")}, state: store.Compliant},
		{name: "no policy, agent holds none", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.PolicyVersion, p.Network.Enforcement = "", nil
			return p
		}, policy: func(p *Policy) { p.NetworkPolicyVersion = nil },
			checks: map[string]want{store.CheckNetwork: unknown("check.network.no_policy")}, state: store.Compliant},
		{name: "no policy: findings that need one do not count", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Findings = []*mnguardv1.NetworkFinding{finding("socket", "tcp 192.0.2.10:50312 → 203.0.113.7:443 established"),
				finding("default_route", "0.0.0.0/0 via 192.0.2.1 dev eth0")}
			return p
		}, policy: func(p *Policy) { p.NetworkPolicyVersion = nil },
			checks: map[string]want{store.CheckNetwork: unknown("check.network.no_policy")}, state: store.Compliant},
		{name: "no policy: a wireless adapter fails", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Findings = []*mnguardv1.NetworkFinding{finding("wireless", "wlan0: sysfs wireless/")}
			return p
		}, policy: func(p *Policy) { p.NetworkPolicyVersion = nil },
			checks: map[string]want{store.CheckNetwork: fail("check.network.findings", "1", "wireless", "wlan0: sysfs wireless/")},
			state:  store.NonCompliant},
		{name: "no policy: only the findings that need none are counted", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Findings = []*mnguardv1.NetworkFinding{finding("socket", "tcp → 203.0.113.7:443"),
				finding("usb_adapter", "usb0: RNDIS"), finding("dns", "203.0.113.53"), finding("bluetooth_adapter", "bnep0"),
				finding("unknown_interface", "weird0")}
			return p
		}, policy: func(p *Policy) { p.NetworkPolicyVersion = nil },
			checks: map[string]want{store.CheckNetwork: fail("check.network.findings", "3", "usb_adapter", "usb0: RNDIS")},
			state:  store.NonCompliant},
		{name: "policy pending", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Network.PolicyVersion = "n-00000001"; return p },
			checks: map[string]want{store.CheckNetwork: unknown("check.network.policy_pending", netVersion, "n-00000001")},
			state:  store.Compliant},
		{name: "policy pending, agent holds none", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.PolicyVersion, p.Network.Enforcement = "", nil
			return p
		}, checks: map[string]want{store.CheckNetwork: unknown("check.network.policy_pending", netVersion, "—")},
			state: store.Compliant},
		{name: "policy pending with findings fails", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.PolicyVersion = "n-00000001"
			p.Network.Findings = []*mnguardv1.NetworkFinding{finding("route", "203.0.113.0/24 via 192.0.2.1")}
			return p
		}, checks: map[string]want{store.CheckNetwork: fail("check.network.findings", "1", "route", "203.0.113.0/24 via 192.0.2.1")},
			state: store.NonCompliant},
		{name: "findings", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Findings = []*mnguardv1.NetworkFinding{
				{Id: "s1", Kind: "socket", Detail: "tcp 192.0.2.10:50312 → 203.0.113.7:443 established", Process: "curl", Pid: 4242, User: "taro"},
				finding("listener", "tcp 0.0.0.0:8080 listening")}
			return p
		}, checks: map[string]want{store.CheckNetwork: fail("check.network.findings", "2", "socket", "tcp 192.0.2.10:50312 → 203.0.113.7:443 established")},
			state: store.NonCompliant},
		{name: "enforcement not in place", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Enforcement.InPlace, p.Network.Enforcement.Detail = false, "nftables: operation not permitted"
			return p
		}, checks: map[string]want{store.CheckNetwork: fail("check.network.enforcement", "nftables: operation not permitted")},
			state: store.NonCompliant},
		{name: "enforcement not requested", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Enforcement = &mnguardv1.NetworkEnforcement{}
			return p
		}, state: store.Compliant},
		{name: "no enforcement section", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Network.Enforcement = nil; return p },
			state: store.Compliant},
		{name: "enforcement finding reported", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Enforcement.InPlace = false
			p.Network.Findings = []*mnguardv1.NetworkFinding{finding("enforcement", "table inet mnguard missing")}
			return p
		}, checks: map[string]want{store.CheckNetwork: fail("check.network.findings", "1", "enforcement", "table inet mnguard missing")},
			state: store.NonCompliant},
		{name: "scan error without a finding", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.ScanErrors = []string{"sockets: permission denied", "dns: resolv.conf unreadable"}
			return p
		}, checks: map[string]want{store.CheckNetwork: fail("check.network.scan_error", "sockets: permission denied")},
			state: store.NonCompliant},
		{name: "a stale terminal's network is judged from its last posture", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Network.Findings = []*mnguardv1.NetworkFinding{finding("dns", "203.0.113.53 from /etc/resolv.conf")}
			return p
		}, input: func(in *Input) { in.LastSeenAt = now.Add(-time.Hour) },
			checks: map[string]want{
				store.CheckFresh:   fail("check.fresh.stale", stamp3339(now.Add(-time.Hour)), "3m0s"),
				store.CheckNetwork: fail("check.network.findings", "1", "dns", "203.0.113.53 from /etc/resolv.conf"),
			}, state: store.Stale},

		// Freshness.
		{name: "waiting for the first report", posture: func(*mnguardv1.Posture) *mnguardv1.Posture { return nil },
			input: func(in *Input) {
				in.LastSeenAt, in.PostureReceivedAt, in.EnrolledAt = time.Time{}, time.Time{}, now.Add(-3*time.Minute)
			},
			checks: map[string]want{
				store.CheckFresh: unknown("check.fresh.waiting", stamp3339(now.Add(-3*time.Minute))),
				store.CheckMedia: fail("check.no_posture"), store.CheckMFA: fail("check.no_posture"), store.CheckNetwork: fail("check.no_posture"),
				store.CheckVersion: fail("check.no_posture"), store.CheckExemptions: unknown("check.no_posture"),
			}, state: store.NonCompliant},
		{name: "never reported", posture: func(*mnguardv1.Posture) *mnguardv1.Posture { return nil },
			input: func(in *Input) {
				in.LastSeenAt, in.PostureReceivedAt, in.EnrolledAt = time.Time{}, time.Time{}, now.Add(-3*time.Minute-time.Second)
			},
			checks: map[string]want{
				store.CheckFresh: fail("check.fresh.never", stamp3339(now.Add(-3*time.Minute-time.Second))),
				store.CheckMedia: fail("check.no_posture"), store.CheckMFA: fail("check.no_posture"), store.CheckNetwork: fail("check.no_posture"),
				store.CheckVersion: fail("check.no_posture"), store.CheckExemptions: unknown("check.no_posture"),
			}, state: store.Stale},
		{name: "never reported for 7 days", posture: func(*mnguardv1.Posture) *mnguardv1.Posture { return nil },
			input: func(in *Input) {
				in.LastSeenAt, in.PostureReceivedAt, in.EnrolledAt = time.Time{}, time.Time{}, now.Add(-OfflineAfter)
			},
			checks: map[string]want{
				store.CheckFresh: fail("check.fresh.never", stamp3339(now.Add(-OfflineAfter))),
				store.CheckMedia: fail("check.no_posture"), store.CheckMFA: fail("check.no_posture"), store.CheckNetwork: fail("check.no_posture"),
				store.CheckVersion: fail("check.no_posture"), store.CheckExemptions: unknown("check.no_posture"),
			}, state: store.Stale, wantOffline: true},
		{name: "silent for exactly 3 intervals", input: func(in *Input) { in.LastSeenAt = now.Add(-3 * time.Minute) },
			state: store.Compliant},
		{name: "stale after 3 intervals", input: func(in *Input) { in.LastSeenAt = now.Add(-3*time.Minute - time.Second) },
			checks: map[string]want{store.CheckFresh: fail("check.fresh.stale", stamp3339(now.Add(-3*time.Minute-time.Second)), "3m0s")},
			state:  store.Stale},
		{name: "stale with a longer report interval", input: func(in *Input) { in.LastSeenAt = now.Add(-10 * time.Minute) },
			policy: func(p *Policy) { p.ReportInterval = 5 * time.Minute }, state: store.Compliant},
		{name: "stale and failing: stale wins", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.Mfa = nil; return p },
			input: func(in *Input) { in.LastSeenAt = now.Add(-time.Hour) },
			checks: map[string]want{
				store.CheckFresh: fail("check.fresh.stale", stamp3339(now.Add(-time.Hour)), "3m0s"),
				store.CheckMFA:   fail("check.mfa.not_reported"),
			}, state: store.Stale},
		{name: "offline after 7 days", input: func(in *Input) { in.LastSeenAt = now.Add(-OfflineAfter) },
			checks: map[string]want{store.CheckFresh: fail("check.fresh.offline", stamp3339(now.Add(-OfflineAfter)))},
			state:  store.Stale, wantOffline: true},
		{name: "not yet offline", input: func(in *Input) { in.LastSeenAt = now.Add(-OfflineAfter + time.Second) },
			checks: map[string]want{store.CheckFresh: fail("check.fresh.stale", stamp3339(now.Add(-OfflineAfter+time.Second)), "3m0s")},
			state:  store.Stale},

		// Version.
		{name: "newer agent", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "1.10.0"; return p },
			state: store.Compliant},
		{name: "older agent", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "1.3.9"; return p },
			checks: map[string]want{store.CheckVersion: fail("check.version.differs", "1.3.9", "1.4.0")}, state: store.NonCompliant},
		{name: "older agent, numerically", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "1.4.0"; return p },
			policy: func(p *Policy) { p.Version = "1.10.0" },
			checks: map[string]want{store.CheckVersion: fail("check.version.differs", "1.4.0", "1.10.0")}, state: store.NonCompliant},
		{name: "git describe of the same release", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.AgentVersion = "v1.4.0-3-gabc1234"
			return p
		}, state: store.Compliant},
		{name: "development build", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "dev"; return p },
			checks: map[string]want{store.CheckVersion: fail("check.version.differs", "dev", "1.4.0")}, state: store.NonCompliant},
		{name: "same development build", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "dev"; return p },
			policy: func(p *Policy) { p.Version = "dev" }, state: store.Compliant},
		{name: "version from the host facts", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.AgentVersion, p.Host.AgentVersion = "", "1.3.0"
			return p
		}, checks: map[string]want{store.CheckVersion: fail("check.version.differs", "1.3.0", "1.4.0")}, state: store.NonCompliant},
		{name: "no version", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.AgentVersion, p.Host.AgentVersion = "", ""
			return p
		}, checks: map[string]want{store.CheckVersion: fail("check.version.unknown")}, state: store.NonCompliant},
		{name: "at the minimum version", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "1.2.0"; return p },
			policy: func(p *Policy) { p.MinAgentVersion = "1.2.0" }, state: store.Compliant},
		{name: "above the minimum, below the collector", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "1.3.0"; return p },
			policy: func(p *Policy) { p.MinAgentVersion = "v1.2.0" }, state: store.Compliant},
		{name: "below the minimum", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "1.1.9"; return p },
			policy: func(p *Policy) { p.MinAgentVersion = "1.2.0" },
			checks: map[string]want{store.CheckVersion: fail("check.version.old", "1.1.9", "1.2.0")}, state: store.NonCompliant},
		{name: "unparsable with a minimum", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture { p.AgentVersion = "dev"; return p },
			policy: func(p *Policy) { p.MinAgentVersion = "1.2.0" },
			checks: map[string]want{store.CheckVersion: fail("check.version.unparsable", "dev", "1.2.0")}, state: store.NonCompliant},
		{name: "unparsable minimum", policy: func(p *Policy) { p.MinAgentVersion = "latest" },
			checks: map[string]want{store.CheckVersion: fail("check.version.unparsable", "1.4.0", "latest")}, state: store.NonCompliant},

		// Certificate.
		{name: "no certificate", input: func(in *Input) { in.CertNotAfter = time.Time{} },
			checks: map[string]want{store.CheckCertificate: fail("check.certificate.none")}, state: store.NonCompliant},
		{name: "certificate expired", input: func(in *Input) { in.CertNotAfter = now.Add(-time.Hour) },
			checks: map[string]want{store.CheckCertificate: fail("check.certificate.expired", stamp3339(now.Add(-time.Hour)))}, state: store.NonCompliant},
		{name: "certificate ends now", input: func(in *Input) { in.CertNotAfter = now },
			checks: map[string]want{store.CheckCertificate: fail("check.certificate.expired", stamp3339(now))}, state: store.NonCompliant},
		{name: "certificate ends within 14 days", input: func(in *Input) { in.CertNotAfter = now.Add(CertWarning - time.Second) },
			checks: map[string]want{store.CheckCertificate: fail("check.certificate.expiring", stamp3339(now.Add(CertWarning-time.Second)))},
			state:  store.NonCompliant},
		{name: "certificate ends in 14 days", input: func(in *Input) { in.CertNotAfter = now.Add(CertWarning) }, state: store.Compliant},

		// Exemptions.
		{name: "exemption in force", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(time.Hour))}
			return p
		}, state: store.Compliant},
		{name: "exemption applied past its end", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(-time.Hour))}
			return p
		}, checks: map[string]want{store.CheckExemptions: fail("check.exemptions.past_end", "e1", devArgs, stamp3339(now.Add(-time.Hour)))},
			state: store.NonCompliant},
		{name: "exemption ending past its end", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e2", "ending", now.Add(-3*time.Minute))}
			return p
		}, checks: map[string]want{store.CheckExemptions: fail("check.exemptions.past_end", "e2", devArgs, stamp3339(now.Add(-3*time.Minute)))},
			state: store.NonCompliant},
		{name: "exemption within the grace period", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(-2*time.Minute))}
			return p
		}, state: store.Compliant},
		{name: "grace grows with the report interval", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(-9*time.Minute))}
			return p
		}, policy: func(p *Policy) { p.ReportInterval = 5 * time.Minute }, state: store.Compliant},
		{name: "ended and waiting exemptions do not count", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{
				exemption("e1", "ended", now.Add(-time.Hour)), exemption("e2", "waiting", now.Add(-time.Hour))}
			return p
		}, state: store.Compliant},
		{name: "exemption revoked by the collector", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(time.Hour))}
			return p
		}, input: func(in *Input) { in.Revoked = map[string]time.Time{"e1": now.Add(-10 * time.Minute)} },
			checks: map[string]want{store.CheckExemptions: fail("check.exemptions.revoked", "e1", devArgs, stamp3339(now.Add(-10*time.Minute)))},
			state:  store.NonCompliant},
		{name: "revocation within the grace period", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(time.Hour))}
			return p
		}, input: func(in *Input) { in.Revoked = map[string]time.Time{"e1": now.Add(-time.Minute)} }, state: store.Compliant},
		{name: "another exemption revoked", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(time.Hour))}
			return p
		}, input: func(in *Input) { in.Revoked = map[string]time.Time{"e9": now.Add(-time.Hour)} }, state: store.Compliant},
		{name: "a stale terminal is judged as of its last posture", posture: func(p *mnguardv1.Posture) *mnguardv1.Posture {
			p.CollectedAt = timestamppb.New(now.Add(-time.Hour))
			p.Media.Exemptions = []*mnguardv1.ExemptionState{exemption("e1", "applied", now.Add(-time.Hour+time.Minute))}
			return p
		}, input: func(in *Input) { in.LastSeenAt = now.Add(-time.Hour) },
			checks: map[string]want{store.CheckFresh: fail("check.fresh.stale", stamp3339(now.Add(-time.Hour)), "3m0s")},
			state:  store.Stale},

		// Revoked terminal.
		{name: "revoked", input: func(in *Input) {
			in.State, in.RevokedAt, in.LastSeenAt = store.StateRevoked, now.Add(-time.Hour), now.Add(-30*24*time.Hour)
		},
			checks: map[string]want{
				store.CheckMedia: unknown("check.revoked"), store.CheckMFA: unknown("check.revoked"), store.CheckNetwork: unknown("check.revoked"),
				store.CheckFresh: unknown("check.revoked"), store.CheckVersion: unknown("check.revoked"),
				store.CheckCertificate: unknown("check.revoked"), store.CheckExemptions: unknown("check.revoked"),
			}, state: store.ComplianceRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := goodPosture(collected)
			if tt.posture != nil {
				p = tt.posture(p)
			}
			in := goodInput(p)
			if tt.input != nil {
				tt.input(&in)
			}
			pol := policy
			if tt.policy != nil {
				tt.policy(&pol)
			}
			c := Evaluate(in, now, pol)
			if c.State != tt.state || c.Offline != tt.wantOffline {
				t.Errorf("state %s (offline %v), want %s (offline %v); checks %+v", c.State, c.Offline, tt.state, tt.wantOffline, c.Checks)
			}
			if len(c.Checks) != len(store.Checks) {
				t.Fatalf("%d checks: %+v", len(c.Checks), c.Checks)
			}
			for i, r := range c.Checks {
				if r.Name != store.Checks[i] {
					t.Errorf("check %d is %s, want %s", i, r.Name, store.Checks[i])
				}
				w, ok := tt.checks[r.Name]
				if !ok {
					w = pass()
				}
				if r.Status != w.status || r.Detail != w.detail || (w.args != nil && !slices.Equal(r.Args, w.args)) {
					t.Errorf("check %s = %s %q %q, want %s %q %q", r.Name, r.Status, r.Detail, r.Args, w.status, w.detail, w.args)
				}
				if !r.Since.Equal(now) {
					t.Errorf("check %s since %v, want now (no previous verdict)", r.Name, r.Since)
				}
			}
			if !c.StateSince.Equal(now) || !c.EvaluatedAt.Equal(now) || c.TerminalID != "t1" || !c.PostureAt.Equal(in.PostureReceivedAt) {
				t.Errorf("verdict %+v", c)
			}
			var want []string
			for _, r := range c.Checks {
				if r.Status == store.CheckFail {
					want = append(want, r.Name)
				}
			}
			if !slices.Equal(c.Failing(), want) {
				t.Errorf("Failing() = %v, want %v", c.Failing(), want)
			}
		})
	}
}

// TestEvaluateSince: since-times carry over from the previous verdict for
// what did not change.
func TestEvaluateSince(t *testing.T) {
	earlier := now.Add(-time.Hour)
	in := goodInput(goodPosture(now.Add(-time.Minute)))
	first := Evaluate(in, earlier, policy)
	if first.State != store.Compliant {
		t.Fatalf("first verdict %+v", first)
	}

	// Nothing changed: everything keeps its since.
	in.Prev = &first
	c := Evaluate(in, now, policy)
	if !c.StateSince.Equal(earlier) {
		t.Errorf("state since %v, want %v", c.StateSince, earlier)
	}
	for _, r := range c.Checks {
		if !r.Since.Equal(earlier) {
			t.Errorf("check %s since %v, want %v", r.Name, r.Since, earlier)
		}
	}

	// MFA breaks: the state and that check are new, the others keep theirs.
	p := goodPosture(now.Add(-time.Minute))
	p.Mfa.Enforced = false
	in2 := goodInput(p)
	in2.Prev = &first
	c = Evaluate(in2, now, policy)
	if c.State != store.NonCompliant || !c.StateSince.Equal(now) {
		t.Errorf("state %s since %v, want non-compliant since now", c.State, c.StateSince)
	}
	for _, r := range c.Checks {
		want := earlier
		if r.Name == store.CheckMFA {
			want = now
		}
		if !r.Since.Equal(want) {
			t.Errorf("check %s since %v, want %v", r.Name, r.Since, want)
		}
	}

	// A previous check without a since gets now.
	prev := first
	prev.Checks = slices.Clone(first.Checks)
	prev.Checks[0].Since = time.Time{}
	in.Prev = &prev
	if c := Evaluate(in, now, policy); !c.Checks[0].Since.Equal(now) || !c.Checks[1].Since.Equal(earlier) {
		t.Errorf("since without a previous since: %v, %v", c.Checks[0].Since, c.Checks[1].Since)
	}

	// A detail change with the same status keeps the since.
	p = goodPosture(now.Add(-time.Minute))
	p.Media.Mode = "monitor"
	in3 := goodInput(p)
	in3.Prev = nil
	monitor := Evaluate(in3, earlier, policy)
	p = goodPosture(now.Add(-time.Minute))
	p.Media.Healthy = false
	in4 := goodInput(p)
	in4.Prev = &monitor
	if c := Evaluate(in4, now, policy); c.Check(store.CheckMedia).Detail != "check.media.unhealthy" ||
		!c.Check(store.CheckMedia).Since.Equal(earlier) || !c.StateSince.Equal(earlier) {
		t.Errorf("media still failing, for another reason: %+v, state since %v", c.Check(store.CheckMedia), c.StateSince)
	}
}

func TestFactsOf(t *testing.T) {
	p := goodPosture(now)
	p.Host.Hostname = "pc-01.example.lg.jp"
	p.Media.Exemptions = []*mnguardv1.ExemptionState{
		exemption("e1", "applied", now), exemption("e2", "ending", now), exemption("e3", "ended", now), exemption("e4", "waiting", now),
	}
	p.Media.Devices = append(p.Media.Devices, &mnguardv1.RemovableDevice{Name: "sr0"}) // no serial
	f := FactsOf("0b5f7a4e-ID", "PC-01", p)
	if !f.Has || !f.CollectedAt.Equal(now) || f.Media != p.Media || f.MFA != p.Mfa || f.AgentVersion != "1.4.0" || f.Platform != "debian 12" {
		t.Errorf("facts %+v", f)
	}
	if want := []string{"192.0.2.10", "2001:DB8::10"}; !slices.Equal(f.Addresses, want) {
		t.Errorf("addresses %v, want %v (loopback left out, prefixes cut)", f.Addresses, want)
	}
	wantTerms := []string{"pc-01", "0b5f7a4e-ID", "pc-01.example.lg.jp", "192.0.2.10", "2001:db8::10", "sn-stick-1", "kbd-serial"}
	if terms := strings.Split(f.Search, "\x1f"); !slices.Equal(terms, wantTerms) {
		t.Errorf("search terms %q, want %q", terms, wantTerms)
	}
	var ids []string
	for _, e := range f.Exemptions {
		ids = append(ids, e.GetId())
	}
	if !slices.Equal(ids, []string{"e1", "e2"}) {
		t.Errorf("exemptions %v, want the applied and the ending one", ids)
	}

	// The posture's host name is a term only when it differs.
	p2 := goodPosture(now)
	p2.Host.Platform, p2.Host.PlatformVersion = "", ""
	p2.Interfaces = nil
	f = FactsOf("t1", "pc-01", p2)
	if f.Search != "pc-01\x1ft1\x1fsn-stick-1\x1fkbd-serial" || f.Platform != "linux" || len(f.Addresses) != 0 {
		t.Errorf("facts without addresses or platform: %q, %q, %v", f.Search, f.Platform, f.Addresses)
	}

	f = FactsOf("t1", "PC-01", nil)
	if f.Has || f.Search != "pc-01\x1ft1" || f.Media != nil || len(f.Addresses) != 0 || f.AgentVersion != "" {
		t.Errorf("facts of no posture: %+v", f)
	}

	// Evaluate falls back to host name and ID for facts without search.
	in := goodInput(nil)
	in.Facts = Facts{}
	if c := Evaluate(in, now, policy); c.Search != "pc-01\x1ft1" {
		t.Errorf("search of empty facts: %q", c.Search)
	}
	in = goodInput(goodPosture(now))
	if c := Evaluate(in, now, policy); c.Addresses != "192.0.2.10 2001:DB8::10" || c.AgentVersion != "1.4.0" || c.Platform != "debian 12" ||
		!strings.Contains(c.Search, "\x1f192.0.2.10\x1f") {
		t.Errorf("verdict facts: %q %q %q %q", c.Addresses, c.AgentVersion, c.Platform, c.Search)
	}
}

func TestOlderThan(t *testing.T) {
	for _, tt := range []struct {
		v, min    string
		older, ok bool
	}{
		{"1.2.3", "1.2.3", false, true},
		{"1.2.3", "1.2.4", true, true},
		{"1.10.0", "1.9.9", false, true},
		{"1.9.9", "1.10.0", true, true},
		{"2.0.0", "1.99.99", false, true},
		{"v1.2.3", "1.2.3", false, true},
		{"1.2.3-5-gabc", "1.2.3", false, true},
		{"0.1.0-dev", "v0.1.0", false, true},
		{"1.2", "1.2.0", false, false},
		{"dev", "1.0.0", false, false},
		{"1.0.0", "", false, false},
		{"99999999999.0.0", "1.0.0", false, false},
	} {
		if older, ok := olderThan(tt.v, tt.min); older != tt.older || ok != tt.ok {
			t.Errorf("olderThan(%q, %q) = %v, %v; want %v, %v", tt.v, tt.min, older, ok, tt.older, tt.ok)
		}
	}
}

// TestDetailsInCatalogue: every detail key the checks produce has a text
// in the console's catalogue, in every language.
func TestDetailsInCatalogue(t *testing.T) {
	src, err := os.ReadFile("evaluate.go")
	if err != nil {
		t.Fatal(err)
	}
	keys := regexp.MustCompile(`"(check\.[a-z_.]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(keys) < 20 {
		t.Fatalf("found only %d detail keys in evaluate.go", len(keys))
	}
	// Check: every language has the same keys.
	if err := i18n.Check(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !i18n.Has(k[1]) {
			t.Errorf("detail %q has no text in the catalogue", k[1])
		}
	}
}

// TestNextChange: between an evaluation and the time nextChange gives, the
// clock alone changes no verdict (the periodic round may skip the
// terminal); for each kind of time it names, the verdict does change just
// after it.
func TestNextChange(t *testing.T) {
	statuses := func(c store.Compliance) string {
		s := c.State
		for _, r := range c.Checks {
			s += " " + r.Name + "=" + r.Status + ":" + r.Detail
		}
		return s
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	day := 24 * time.Hour
	for i := range 5000 {
		in := goodInput(goodPosture(now.Add(-time.Duration(rnd.IntN(600)) * time.Second)))
		in.EnrolledAt = now.Add(-time.Duration(rnd.IntN(10*60)) * time.Second)
		if rnd.IntN(4) == 0 {
			in.LastSeenAt = time.Time{}
		} else {
			in.LastSeenAt = now.Add(-time.Duration(rnd.Int64N(int64(8 * day))))
		}
		in.CertNotAfter = now.Add(time.Duration(rnd.Int64N(int64(30*day))) - 2*day)
		if rnd.IntN(3) == 0 {
			end := now.Add(time.Duration(rnd.IntN(600)-300) * time.Second)
			in.Facts.Exemptions = []*mnguardv1.ExemptionState{exemption("x1", "applied", end)}
			if rnd.IntN(2) == 0 {
				in.Revoked = map[string]time.Time{"x1": now.Add(-time.Duration(rnd.IntN(300)) * time.Second)}
			}
		}
		if rnd.IntN(20) == 0 {
			in.State = store.StateRevoked
		}
		due := nextChange(in, now, policy)
		want := statuses(Evaluate(in, now, policy))
		if due.IsZero() {
			// Nothing left to change: offline, certificate ended.
			due = now.Add(365 * day)
		} else if due.Before(now) {
			t.Fatalf("case %d: next change %s before now", i, due)
		}
		// Just before the due time, and a few random times before it.
		probes := []time.Time{due.Add(-time.Nanosecond)}
		for range 3 {
			probes = append(probes, now.Add(time.Duration(rnd.Int64N(int64(due.Sub(now))+1))))
		}
		for _, at := range probes {
			if at.Before(now) || !at.Before(due) {
				continue
			}
			if got := statuses(Evaluate(in, at, policy)); got != want {
				t.Fatalf("case %d: at %s, before the next change %s (now %s), the verdict changed:\n%s\nto\n%s\ninput %+v",
					i, at, due, now, want, got, in.ComplianceInput)
			}
		}
	}

	// Each kind of due time is a real change.
	in := goodInput(goodPosture(now))
	in.LastSeenAt = now
	stale := nextChange(in, now, policy)
	if want := now.Add(3*time.Minute + time.Nanosecond); !stale.Equal(want) {
		t.Errorf("silent terminal: next change %s, want %s", stale, want)
	}
	if c := Evaluate(in, stale, policy); c.State != store.Stale {
		t.Errorf("at its next change the silent terminal is %s, want stale", c.State)
	}
	in.CertNotAfter = now.Add(CertWarning + time.Minute)
	if got := nextChange(in, now, policy); !got.Equal(now.Add(time.Minute)) {
		t.Errorf("certificate nearing its end: next change %s, want %s", got, now.Add(time.Minute))
	}
	in = goodInput(goodPosture(now))
	in.LastSeenAt = now
	in.Facts.Exemptions = []*mnguardv1.ExemptionState{exemption("x1", "applied", now.Add(-90*time.Second))}
	got := nextChange(in, now, policy)
	if want := now.Add(30*time.Second + time.Nanosecond); !got.Equal(want) {
		t.Errorf("exemption past its end: next change %s, want %s", got, want)
	}
	if c := Evaluate(in, got, policy); c.Check(store.CheckExemptions).Status != store.CheckFail {
		t.Errorf("at its next change the exemption check is %v, want failing", c.Check(store.CheckExemptions))
	}
}
