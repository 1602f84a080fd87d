package report

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// tokyo is the collector's zone in the tests.
var tokyo = func() *time.Location {
	loc, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		panic(err)
	}
	return loc
}()

// at is a time in Tokyo.
func at(month time.Month, day, hour, minute int) time.Time {
	return time.Date(2026, month, day, hour, minute, 0, 0, tokyo)
}

// The period of the tests: April 2026, reported on 10 May.
var (
	firstDay = at(time.April, 1, 0, 0)
	lastDay  = at(time.April, 30, 0, 0)
	now      = at(time.May, 10, 10, 0)
)

// fixture builds a real SQLite store.
type fixture struct {
	t    *testing.T
	ctx  context.Context
	st   *store.DB
	path string
	// failing is, per terminal, the checks it fails and their details.
	failing map[string]map[string]store.CheckResult
	seq     map[string]uint64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mnguard.db")
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return &fixture{t: t, ctx: ctx, st: st, path: path, failing: map[string]map[string]store.CheckResult{}, seq: map[string]uint64{}}
}

func (f *fixture) renderer() *Renderer {
	r := New(f.st, tokyo, "v1.2.3")
	r.Now = func() time.Time { return now }
	return r
}

// enroll enrolls a terminal at when with a fresh token.
func (f *fixture) enroll(id, host string, when time.Time) {
	f.t.Helper()
	sum := sha256.Sum256([]byte("token-" + id))
	if err := f.st.CreateEnrollmentToken(f.ctx, store.EnrollmentToken{
		ID: "tok-" + id, Hash: sum[:], CreatedAt: when.Add(-time.Hour), ExpiresAt: when.Add(time.Hour), Uses: 1, CreatedBy: "admin1",
	}, store.NoAudit); err != nil {
		f.t.Fatal(err)
	}
	serial := sha256.Sum256([]byte(id))
	term := store.Terminal{ID: id, Hostname: host, State: store.StateActive, EnrolledAt: when}
	cert := store.Certificate{Serial: hex.EncodeToString(serial[:8]), TerminalID: id, NotBefore: when, NotAfter: when.AddDate(1, 0, 0)}
	if err := f.st.Enroll(f.ctx, sum[:], when, term, cert); err != nil {
		f.t.Fatal(err)
	}
}

// verdict stores the terminal's verdict at when: it fails the checks of
// fails (name to detail key, with args) and passes the others. The failure
// intervals open and close accordingly.
func (f *fixture) verdict(id string, when time.Time, fails map[string][]string) {
	f.t.Helper()
	f.save(id, when, store.NonCompliant, fails)
}

// undetermined stores the terminal's verdict at when like verdict, with
// the checks of unknown (name to detail key, with args) undetermined.
func (f *fixture) undetermined(id string, when time.Time, fails, unknown map[string][]string) {
	f.t.Helper()
	f.saveAll(id, when, store.NonCompliant, fails, unknown)
}

func (f *fixture) save(id string, when time.Time, state string, fails map[string][]string) {
	f.t.Helper()
	f.saveAll(id, when, state, fails, nil)
}

func (f *fixture) saveAll(id string, when time.Time, state string, fails, unknown map[string][]string) {
	f.t.Helper()
	prev := f.failing[id]
	now := map[string]store.CheckResult{}
	c := store.Compliance{TerminalID: id, State: state, StateSince: when, EvaluatedAt: when}
	var u store.ComplianceUpdate
	for _, name := range store.Checks {
		r := store.CheckResult{Name: name, Status: store.CheckPass, Since: when}
		switch d, ok := fails[name]; {
		case state == store.ComplianceRevoked:
			r.Status, r.Detail = store.CheckUnknown, "check.revoked"
		case ok:
			r.Status, r.Detail, r.Args = store.CheckFail, d[0], d[1:]
			if old, had := prev[name]; had {
				r.Since = old.Since
			}
			now[name] = r
		case unknown[name] != nil:
			r.Status, r.Detail, r.Args = store.CheckUnknown, unknown[name][0], unknown[name][1:]
		}
		if _, had := prev[name]; had && r.Status != store.CheckFail {
			u.Closed = append(u.Closed, name)
		}
		if _, had := prev[name]; !had && r.Status == store.CheckFail {
			u.Opened = append(u.Opened, r)
		}
		c.Checks = append(c.Checks, r)
	}
	u.Compliance = c
	if err := f.st.SaveCompliance(f.ctx, []store.ComplianceUpdate{u}); err != nil {
		f.t.Fatal(err)
	}
	f.failing[id] = now
}

// event marshals an Event with attributes.
func event(typ string, when time.Time, attrs map[string]string) []byte {
	b, err := proto.Marshal(&mnguardv1.Event{Time: timestamppb.New(when), Type: typ, Attributes: attrs})
	if err != nil {
		panic(err)
	}
	return b
}

// agentEvents stores events the terminal's agent reported, all received
// at received.
func (f *fixture) agentEvents(id string, received time.Time, typ string, times []time.Time, attrs map[string]string) {
	f.t.Helper()
	r := store.Report{TerminalID: id, ReceivedAt: received}
	for _, when := range times {
		f.seq[id]++
		r.Events = append(r.Events, store.Event{Seq: f.seq[id], Time: when, Type: typ, Message: typ, Data: event(typ, when, attrs)})
	}
	if _, err := f.st.SaveReport(f.ctx, r); err != nil {
		f.t.Fatal(err)
	}
}

// loginEvent stores the collector's event of a login verification.
func (f *fixture) loginEvent(id string, when time.Time, user, reason string) {
	f.t.Helper()
	attrs := map[string]string{"user": user, "service": "login", "result": "rejected", "method": "totp", "reason": reason}
	if err := f.st.AddServerEvent(f.ctx, store.ServerEvent{
		TerminalID: id, Time: when, Type: eventLoginVerify, Message: "login rejected for " + user + ": " + reason,
		Data: event(eventLoginVerify, when, attrs),
	}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) exemption(e store.Exemption) {
	f.t.Helper()
	if e.Source == "" {
		e.Source = store.ExemptionOnline
	}
	if e.Source == store.ExemptionOnline {
		e.Token = []byte("signed-" + e.ID)
	}
	if e.Duration == 0 {
		e.Duration = time.Hour
	}
	e.NotBefore, e.NotAfter = e.IssuedAt, e.IssuedAt.Add(e.Duration)
	if e.VendorID == "" {
		e.VendorID, e.ProductID = "0781", "5581"
	}
	if e.Issuer == "" {
		e.Issuer = "helpdesk-b (helpdesk)"
	}
	if err := f.st.CreateExemption(f.ctx, e, store.NoAudit); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) audit(when time.Time, actor, action, target, detail string) store.AuditEntry {
	f.t.Helper()
	e, err := f.st.AppendAudit(f.ctx, store.AuditEntry{Time: when, Actor: actor, Action: action, Target: target, Detail: detail})
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

func (f *fixture) operator(name, role string, when time.Time, by string) {
	f.t.Helper()
	if err := f.st.CreateOperator(f.ctx, store.Operator{Name: name, Role: role, CreatedAt: when, CreatedBy: by},
		store.AuditEntry{Time: when, Actor: by, Action: "operator.add", Target: name, Detail: "role " + role}); err != nil {
		f.t.Fatal(err)
	}
}

// networkPolicy stores the network policy p, set at when by actor, with
// its audit entry.
func (f *fixture) networkPolicy(when time.Time, actor string, p *mnguardv1.NetworkPolicy) {
	f.t.Helper()
	b, err := proto.Marshal(p)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, _, err := f.st.SetNetworkPolicy(f.ctx, store.NetworkPolicy{Policy: b, Version: p.GetVersion(), UpdatedAt: when, UpdatedBy: actor}, "",
		func(store.NetworkPolicy, bool) store.AuditEntry {
			return store.AuditEntry{Time: when, Actor: actor, Action: actionNetworkPolicySet, Target: p.GetVersion(),
				Detail: "networks 198.51.100.0/24 2001:db8::/32@tcp/443,tcp/8000-8100,udp/53; dns 198.51.100.53; enforce on (was none)"}
		}); err != nil {
		f.t.Fatal(err)
	}
}

// The script a hostile reason carries: it must come out escaped.
const hostile = "<script>alert(1)</script>"

// populate fills the store with a month of activity around April 2026.
func (f *fixture) populate() {
	f.t.Helper()
	// Operators and the audit log, in time order.
	f.operator("admin1", store.RoleAdmin, at(time.March, 20, 9, 0), "mnguard-server init")

	// Terminals.
	f.enroll("t-a", "pc-a", at(time.March, 1, 9, 0))
	f.enroll("t-c", "pc-c", at(time.March, 15, 9, 0))
	f.enroll("t-b", "pc-b", at(time.April, 10, 9, 0))
	f.enroll("t-d", "pc-d", at(time.May, 2, 9, 0))

	// Compliance. t-a fails media from 30 March to 2 April (one day in
	// the period) and again from 29 April noon on (36 hours in it).
	f.verdict("t-a", at(time.March, 1, 10, 0), map[string][]string{store.CheckFresh: {"check.fresh.stale", "x"}})
	f.verdict("t-a", at(time.March, 2, 10, 0), nil)
	f.verdict("t-a", at(time.March, 30, 0, 0), map[string][]string{store.CheckMedia: {"check.media.unhealthy", "udev rule missing"}})
	f.verdict("t-a", at(time.April, 2, 0, 0), nil)
	f.verdict("t-a", at(time.April, 29, 12, 0), map[string][]string{store.CheckMedia: {"check.media.writable", "sdb", "mounted rw"}})
	// It fails MFA only from the first moment after the period.
	f.verdict("t-a", at(time.May, 1, 0, 0), map[string][]string{
		store.CheckMedia: {"check.media.writable", "sdb", "mounted rw"}, store.CheckMFA: {"check.mfa.not_enforced", "sshd"},
	})
	// t-b fails media for half an hour, and MFA for the last hour of the
	// period: it ends exactly when the period does.
	f.verdict("t-b", at(time.April, 10, 10, 0), nil)
	f.verdict("t-b", at(time.April, 15, 10, 0), map[string][]string{store.CheckMedia: {"check.media.monitor", "monitor"}})
	f.verdict("t-b", at(time.April, 15, 10, 30), nil)
	// It breaks network isolation for four hours (a phone tethered over
	// USB) and then is judged again only once the agent holds the new
	// network policy.
	f.verdict("t-b", at(time.April, 20, 10, 0), map[string][]string{
		store.CheckNetwork: {"check.network.findings", "1", "usb_adapter", "usb0: usb ancestor 1-2, interface class e0/01/03 (RNDIS)"}})
	f.verdict("t-b", at(time.April, 20, 14, 0), nil)
	f.verdict("t-b", at(time.April, 30, 23, 0), map[string][]string{store.CheckMFA: {"check.mfa.not_enforced", "gdm"}})
	f.undetermined("t-b", at(time.May, 1, 0, 0), nil, map[string][]string{
		store.CheckNetwork: {"check.network.policy_pending", "n-00c0ffee", "n-1a2b3c4d"}})
	// t-c fails media from 18 April until it is revoked on 20 April.
	f.verdict("t-c", at(time.April, 18, 0, 0), map[string][]string{store.CheckMedia: {"check.media.not_reported"}})
	if err := f.st.RevokeTerminal(f.ctx, "t-c", "disposed "+hostile, at(time.April, 20, 12, 0), store.NoAudit); err != nil {
		f.t.Fatal(err)
	}
	f.save("t-c", at(time.April, 20, 12, 0), store.ComplianceRevoked, nil)

	// Exemptions.
	f.exemption(store.Exemption{ID: "ex-0", TerminalID: "t-a", Serial: "S0", IssuedAt: at(time.March, 31, 23, 59), Reason: "before", Ticket: "T-0"})
	f.exemption(store.Exemption{ID: "ex-1", TerminalID: "t-a", Serial: "S1", IssuedAt: at(time.April, 5, 10, 0), Reason: "copy minutes " + hostile, Ticket: "INC-1"})
	f.exemption(store.Exemption{ID: "ex-2", TerminalID: "t-b", Serial: "S2", IssuedAt: at(time.April, 12, 14, 0), Duration: 2 * time.Hour,
		Reason: "wrong stick", Ticket: `=HYPERLINK("http://x")`})
	if _, err := f.st.RevokeExemption(f.ctx, "ex-2", "helpdesk-b (helpdesk)", "wrong device", at(time.April, 12, 14, 30), store.NoAudit); err != nil {
		f.t.Fatal(err)
	}
	f.exemption(store.Exemption{ID: "ex-3", TerminalID: "t-a", AllowNoSerial: true, IssuedAt: at(time.April, 25, 16, 0),
		Source: store.ExemptionOffline, Challenge: "ABCDE12345", Duration: 30 * time.Minute, Reason: "cut off", Ticket: "INC-3"})
	f.exemption(store.Exemption{ID: "ex-5", TerminalID: "t-a", Serial: "S5", IssuedAt: at(time.May, 1, 0, 0), Reason: "after", Ticket: "T-5"})

	// The agents' reports of writes: ex-1 twice (the first counts), the
	// offline ex-3 under the agent's name for it; ex-2 only on another
	// terminal, which does not count; ex-0 written to but not listed.
	used := "media.exemption_used"
	f.agentEvents("t-a", at(time.April, 5, 10, 21), used, []time.Time{at(time.April, 5, 10, 20)}, map[string]string{"exemption_id": "ex-1", "device": "sdb"})
	f.agentEvents("t-a", at(time.April, 5, 10, 41), used, []time.Time{at(time.April, 5, 10, 40)}, map[string]string{"exemption_id": "ex-1", "device": "sdb"})
	f.agentEvents("t-a", at(time.April, 12, 14, 10), used, []time.Time{at(time.April, 12, 14, 9)}, map[string]string{"exemption_id": "ex-2"})
	f.agentEvents("t-a", at(time.April, 1, 0, 5), used, []time.Time{at(time.April, 1, 0, 4)}, map[string]string{"exemption_id": "ex-0"})
	// Three at one received time (a batch after an outage).
	f.agentEvents("t-a", at(time.April, 25, 16, 30), used,
		[]time.Time{at(time.April, 25, 16, 5), at(time.April, 25, 16, 6), at(time.April, 25, 16, 7)},
		map[string]string{"exemption_id": offlineIDPrefix + "ABCDE12345"})
	// Other agent events that are not writes.
	f.agentEvents("t-b", at(time.April, 12, 14, 5), "media.exemption_applied", []time.Time{at(time.April, 12, 14, 4)}, map[string]string{"exemption_id": "ex-2"})

	// Isolation findings: t-b's phone tethered over USB, and connections
	// through it; one before the period and one after do not count, nor
	// does a collector's event of the type.
	finding := "network.finding"
	f.agentEvents("t-b", at(time.April, 20, 10, 1), finding, []time.Time{at(time.April, 20, 10, 0)},
		map[string]string{"kind": "usb_adapter", "id": "usb_adapter:usb0", "detail": "usb0: RNDIS phone", "interface": "usb0"})
	f.agentEvents("t-b", at(time.April, 20, 10, 31), finding, []time.Time{at(time.April, 20, 10, 30), at(time.April, 20, 10, 5)},
		map[string]string{"kind": "socket", "id": "socket:1", "detail": "tcp 192.168.42.129:50312 → 203.0.113.7:443 established",
			"process": "curl", "pid": "4242", "user": "sato " + hostile})
	f.agentEvents("t-a", at(time.March, 31, 23, 0), finding, []time.Time{at(time.March, 31, 23, 0)}, map[string]string{"kind": "wireless"})
	f.agentEvents("t-a", at(time.May, 1, 0, 1), finding, []time.Time{at(time.May, 1, 0, 0)}, map[string]string{"kind": "wireless"})
	if err := f.st.AddServerEvent(f.ctx, store.ServerEvent{TerminalID: "t-a", Time: at(time.April, 20, 0, 0), Type: finding,
		Data: event(finding, at(time.April, 20, 0, 0), map[string]string{"kind": "dns"})}); err != nil {
		f.t.Fatal(err)
	}

	// Logins: two lockouts in the period, one a moment after; a wrong code
	// that did not lock; an agent claiming a lockout does not count.
	f.loginEvent("t-a", at(time.April, 8, 8, 0), "sato", "wrong code, lock reached")
	f.loginEvent("t-a", at(time.April, 8, 7, 59), "sato", "wrong code")
	f.loginEvent("t-b", at(time.April, 30, 23, 59).Add(59*time.Second), "suzuki", "replayed step, lock reached")
	f.loginEvent("t-b", at(time.May, 1, 0, 0), "tanaka", "wrong code, lock reached")
	f.agentEvents("t-a", at(time.April, 9, 9, 0), eventLoginVerify, []time.Time{at(time.April, 9, 9, 0)},
		map[string]string{"user": "mallory", "reason": "wrong code, lock reached"})

	// The audit log of the period.
	f.operator("helpdesk-b", store.RoleHelpdesk, at(time.April, 2, 9, 0), "admin1 (admin)")
	f.audit(at(time.April, 3, 9, 0), "admin1 (sign-in from 10.0.0.5)", actionSignIn, "admin1", "console session opened")
	f.audit(at(time.April, 3, 9, 1), "admin1 (sign-in from 10.0.0.5)", actionSignInFailed, "admin1", "wrong code")
	f.audit(at(time.April, 3, 9, 2), "admin1 (sign-in from 10.0.0.5)", actionSignIn, "admin1", "console session opened")
	f.audit(at(time.April, 3, 9, 3), "helpdesk-b (sign-in from 10.0.0.6)", actionSignInRefused, "helpdesk-b", "locked")
	f.audit(at(time.April, 8, 9, 0), "helpdesk-b (helpdesk)", actionUnlock, "sato", "locked since 2026-04-07T23:00:00Z after 10 failures")
	f.audit(at(time.April, 9, 9, 0), "helpdesk-b (helpdesk)", actionOfflineLogin, "suzuki", "terminal t-b, valid until 2026-04-09T01:00:00Z")
	f.audit(at(time.April, 12, 14, 0), "helpdesk-b (helpdesk)", "exemption.issue", "ex-2", "terminal t-b")
	// The network policy, set after the tethering of 20 April with
	// enforcement on (audited by the store with the change).
	f.networkPolicy(at(time.April, 21, 10, 0), "admin1 (admin)", &mnguardv1.NetworkPolicy{
		Version: "n-1a2b3c4d", Enforce: true,
		Networks: []*mnguardv1.AllowedNetwork{{Cidr: "198.51.100.0/24"}, {Cidr: "2001:db8::/32", Ports: []*mnguardv1.PortRange{
			{Protocol: "tcp", First: 443, Last: 443}, {Protocol: "tcp", First: 8000, Last: 8100}, {Protocol: "udp", First: 53, Last: 53}}}},
		DnsServers: []string{"198.51.100.53"},
	})
	f.audit(at(time.April, 25, 16, 0), "helpdesk-b (helpdesk)", actionOfflineExemption, "ex-3", "terminal t-a, device 0781:5581:")
	f.audit(at(time.April, 26, 9, 0), "admin1 (admin)", "operator.set_role", "helpdesk-b", "helpdesk -> auditor "+hostile)
	f.audit(at(time.April, 26, 9, 5), "admin1 (admin)", "operator_token.create", "tok-9", "for operator admin1 (admin)")
	f.audit(at(time.April, 30, 23, 59), "admin1 (admin)", "operator.set_password", "admin1", "")
	// After the period: neither listed, nor counted, nor walked.
	f.audit(at(time.May, 1, 0, 0), "admin1 (admin)", "operator.reset_totp", "admin1", "")
	f.operator("auditor1", store.RoleAuditor, at(time.May, 3, 9, 0), "admin1 (admin)")
	if _, err := f.st.UpdateOperator(f.ctx, "helpdesk-b", func(o *store.Operator, a *store.AuditEntry) error {
		o.DisabledAt = at(time.May, 4, 9, 0)
		a.Action, a.Target = "operator.disable", "helpdesk-b"
		return nil
	}, store.AuditEntry{Time: at(time.May, 4, 9, 0), Actor: "admin1 (admin)"}); err != nil {
		f.t.Fatal(err)
	}
}

// Audit entries of populate: 1 (admin1) before the period, 2 to 14 in it
// (the last at 23:59 on 30 April), 15 to 17 after.
const (
	auditInPeriod = 13
	auditLastInIt = 14
)
