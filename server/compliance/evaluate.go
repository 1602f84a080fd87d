// Package compliance computes the collector's verdict on each terminal
// from its checks — removable media enforced, logins behind TOTP, network
// isolated, agent fresh and current, certificate not about to expire, no
// exemption in force past its end — and keeps it current: a periodic
// evaluation turns a silent terminal stale without anyone looking, and each
// change of state is an event.
package compliance

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
)

// Defaults of Policy.
const (
	// StaleAfter report intervals without a report make a terminal stale.
	StaleAfter = 3
	// OfflineAfter without a report, a stale terminal counts as offline.
	OfflineAfter = 7 * 24 * time.Hour
	// CertWarning: a certificate this close to its end fails its check.
	CertWarning = 14 * 24 * time.Hour
)

// Policy is what the checks compare against.
type Policy struct {
	// ReportInterval is what agents are told (the collector's
	// --report-interval).
	ReportInterval time.Duration
	// Version is the collector's own version; MinAgentVersion, when set,
	// replaces it as the oldest current agent version.
	Version         string
	MinAgentVersion string
	// NetworkPolicyVersion returns the version of the network policy the
	// collector pushes (NetworkPolicy.version); nil, or a func returning
	// "", when the collector holds no network policy.
	NetworkPolicyVersion func() string
}

// networkPolicyVersion is the collector's network policy version, "" for
// none.
func (p Policy) networkPolicyVersion() string {
	if p.NetworkPolicyVersion == nil {
		return ""
	}
	return p.NetworkPolicyVersion()
}

// Facts is what the checks read from a terminal's latest posture.
type Facts struct {
	// Has is false when the terminal never sent a posture.
	Has         bool
	CollectedAt time.Time
	Media       *mnguardv1.MediaPosture
	MFA         *mnguardv1.MfaPosture
	// Network is the segment-isolation section; nil from agents without
	// it.
	Network *mnguardv1.NetworkPosture
	// Exemptions the agent holds and applies (or is ending).
	Exemptions   []*mnguardv1.ExemptionState
	AgentVersion string
	Platform     string
	Addresses    []string
	Search       string
}

// FactsOf extracts the facts of a posture received for the terminal.
func FactsOf(id, hostname string, p *mnguardv1.Posture) Facts {
	f := Facts{Has: p != nil}
	terms := []string{strings.ToLower(hostname), id}
	if p != nil {
		f.CollectedAt = p.GetCollectedAt().AsTime()
		f.Media, f.MFA, f.Network = p.GetMedia(), p.GetMfa(), p.GetNetwork()
		f.AgentVersion = p.GetAgentVersion()
		if f.AgentVersion == "" {
			f.AgentVersion = p.GetHost().GetAgentVersion()
		}
		h := p.GetHost()
		f.Platform = strings.TrimSpace(h.GetPlatform() + " " + h.GetPlatformVersion())
		if f.Platform == "" {
			f.Platform = h.GetOs()
		}
		if n := h.GetHostname(); n != "" && !strings.EqualFold(n, hostname) {
			terms = append(terms, strings.ToLower(n))
		}
		for _, ifc := range p.GetInterfaces() {
			if slices.Contains(ifc.GetFlags(), "loopback") {
				continue
			}
			for _, a := range ifc.GetAddrs() {
				ip, _, _ := strings.Cut(a, "/")
				f.Addresses = append(f.Addresses, ip)
				terms = append(terms, strings.ToLower(ip))
			}
		}
		for _, d := range p.GetMedia().GetDevices() {
			if d.GetSerial() != "" {
				terms = append(terms, strings.ToLower(d.GetSerial()))
			}
		}
		for _, d := range p.GetUsbDevices() {
			if d.GetSerial() != "" {
				terms = append(terms, strings.ToLower(d.GetSerial()))
			}
		}
		for _, e := range p.GetMedia().GetExemptions() {
			if e.GetState() == "applied" || e.GetState() == "ending" {
				f.Exemptions = append(f.Exemptions, e)
			}
		}
	}
	// Unit separators keep a search from matching across two terms.
	f.Search = strings.Join(terms, "\x1f")
	return f
}

// Input is everything the verdict on one terminal depends on.
type Input struct {
	store.ComplianceInput
	Facts Facts
	// Revoked holds, by exemption ID, when the collector revoked the
	// exemptions the agent still applies (none when not revoked).
	Revoked map[string]time.Time
}

// Evaluate computes the verdict on one terminal at now. Since-times are
// carried over from in.Prev for checks (and the state) that did not
// change.
func Evaluate(in Input, now time.Time, p Policy) store.Compliance {
	c := store.Compliance{
		TerminalID: in.TerminalID, PostureAt: in.PostureReceivedAt, EvaluatedAt: now,
		AgentVersion: in.Facts.AgentVersion, Platform: in.Facts.Platform,
		Addresses: strings.Join(in.Facts.Addresses, " "), Search: in.Facts.Search,
	}
	if c.Search == "" {
		c.Search = strings.ToLower(in.Hostname) + "\x1f" + in.TerminalID
	}
	var fresh, offline bool
	if in.State == store.StateRevoked {
		for _, name := range store.Checks {
			c.Checks = append(c.Checks, result(name, store.CheckUnknown, "check.revoked"))
		}
		c.State = store.ComplianceRevoked
	} else {
		var freshResult store.CheckResult
		freshResult, fresh, offline = checkFresh(in, now, p)
		asOf := now
		if !fresh && in.Facts.Has {
			// What the last posture said was true when it was collected.
			asOf = in.Facts.CollectedAt
		}
		c.Checks = []store.CheckResult{
			checkMedia(in.Facts),
			checkMFA(in.Facts),
			checkNetwork(in.Facts, p),
			freshResult,
			checkVersion(in.Facts, p),
			checkCertificate(in.CertNotAfter, now),
			checkExemptions(in, asOf, p),
		}
		switch {
		case !fresh && freshResult.Status == store.CheckFail:
			c.State = store.Stale
		case len(c.Failing()) > 0:
			c.State = store.NonCompliant
		default:
			c.State = store.Compliant
		}
	}
	c.Offline = offline
	c.StateSince = now
	prev := in.Prev
	if prev != nil && prev.State == c.State {
		c.StateSince = prev.StateSince
	}
	for i := range c.Checks {
		c.Checks[i].Since = now
		if prev != nil {
			if old := prev.Check(c.Checks[i].Name); old.Status == c.Checks[i].Status && !old.Since.IsZero() {
				c.Checks[i].Since = old.Since
			}
		}
	}
	return c
}

// nextChange returns the earliest time at or after now at which the
// clock alone may change the verdict on the terminal of in: its silence
// growing stale or offline, its certificate nearing or reaching its end,
// an exemption it applies passing its end or revocation and the grace.
// The zero time means never (a revoked terminal). Early answers only cost
// an evaluation that changes nothing; a late one would leave a verdict
// wrong until then.
func nextChange(in Input, now time.Time, p Policy) time.Time {
	if in.State == store.StateRevoked {
		return time.Time{}
	}
	var next time.Time
	at := func(t time.Time) {
		if !t.Before(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	seen := in.LastSeenAt
	if seen.IsZero() {
		seen = in.EnrolledAt
	}
	// Stale once silent longer than the limit.
	limit := StaleAfter * p.ReportInterval
	at(seen.Add(limit + time.Nanosecond))
	at(seen.Add(OfflineAfter))
	if !in.CertNotAfter.IsZero() {
		at(in.CertNotAfter.Add(-CertWarning))
		at(in.CertNotAfter)
	}
	grace := exemptionGrace(p)
	for _, x := range in.Facts.Exemptions {
		if r, ok := in.Revoked[x.GetId()]; ok {
			at(r.Add(grace + time.Nanosecond))
		}
		if end := x.GetNotAfter(); end != nil {
			at(end.AsTime().Add(grace + time.Nanosecond))
		}
	}
	return next
}

func result(name, status, detail string, args ...string) store.CheckResult {
	return store.CheckResult{Name: name, Status: status, Detail: detail, Args: args}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func checkMedia(f Facts) store.CheckResult {
	const n = store.CheckMedia
	m := f.Media
	switch {
	case !f.Has:
		return result(n, store.CheckFail, "check.no_posture")
	case m == nil:
		return result(n, store.CheckFail, "check.media.not_reported")
	case m.GetMode() != "enforce":
		return result(n, store.CheckFail, "check.media.monitor", m.GetMode())
	case !m.GetHealthy():
		return result(n, store.CheckFail, "check.media.unhealthy", m.GetUnhealthyReason())
	}
	for _, d := range m.GetDevices() {
		if d.GetState() == "writable" {
			return result(n, store.CheckFail, "check.media.writable", d.GetName(), d.GetDetail())
		}
	}
	return result(n, store.CheckPass, "")
}

func checkMFA(f Facts) store.CheckResult {
	const n = store.CheckMFA
	switch {
	case !f.Has:
		return result(n, store.CheckFail, "check.no_posture")
	case f.MFA == nil:
		return result(n, store.CheckFail, "check.mfa.not_reported")
	case !f.MFA.GetEnforced():
		return result(n, store.CheckFail, "check.mfa.not_enforced", f.MFA.GetReason())
	}
	return result(n, store.CheckPass, "")
}

// policyFree are the kinds of network findings that need no policy: a
// wireless or USB/Bluetooth network adapter, or an interface the agent
// could not classify, breaks isolation whatever the allowed networks.
var policyFree = []string{"wireless", "usb_adapter", "bluetooth_adapter", "unknown_interface"}

// checkNetwork judges segment isolation from the posture's network section
// against the collector's network policy. Without a policy on the
// collector, or while the agent does not yet hold the collector's, the
// verdict is unknown — unless the agent reports findings, which fail it
// either way (without a policy, only those that need none).
func checkNetwork(f Facts, p Policy) store.CheckResult {
	const n = store.CheckNetwork
	switch {
	case !f.Has:
		return result(n, store.CheckFail, "check.no_posture")
	case f.Network == nil:
		return result(n, store.CheckFail, "check.network.not_reported")
	}
	np := f.Network
	findings := np.GetFindings()
	want := p.networkPolicyVersion()
	if want == "" {
		var free []*mnguardv1.NetworkFinding
		for _, x := range findings {
			if slices.Contains(policyFree, x.GetKind()) {
				free = append(free, x)
			}
		}
		if len(free) > 0 {
			return findingsResult(free)
		}
		return result(n, store.CheckUnknown, "check.network.no_policy")
	}
	if len(findings) > 0 {
		return findingsResult(findings)
	}
	if have := np.GetPolicyVersion(); have != want {
		if have == "" {
			have = "—"
		}
		return result(n, store.CheckUnknown, "check.network.policy_pending", want, have)
	}
	if e := np.GetEnforcement(); e.GetRequested() && !e.GetInPlace() {
		return result(n, store.CheckFail, "check.network.enforcement", e.GetDetail())
	}
	if errs := np.GetScanErrors(); len(errs) > 0 {
		// The agent reports a failed part of the scan as a finding too;
		// without one, isolation is still not proven.
		return result(n, store.CheckFail, "check.network.scan_error", errs[0])
	}
	return result(n, store.CheckPass, "")
}

// findingsResult fails the network check with the number of findings and
// the first one's kind and detail.
func findingsResult(fs []*mnguardv1.NetworkFinding) store.CheckResult {
	return result(store.CheckNetwork, store.CheckFail, "check.network.findings",
		strconv.Itoa(len(fs)), fs[0].GetKind(), fs[0].GetDetail())
}

// checkFresh says whether the terminal reported within StaleAfter report
// intervals, and whether it has been silent for OfflineAfter.
func checkFresh(in Input, now time.Time, p Policy) (r store.CheckResult, fresh, offline bool) {
	const n = store.CheckFresh
	limit := StaleAfter * p.ReportInterval
	if in.LastSeenAt.IsZero() {
		if now.Sub(in.EnrolledAt) <= limit {
			return result(n, store.CheckUnknown, "check.fresh.waiting", stamp(in.EnrolledAt)), true, false
		}
		return result(n, store.CheckFail, "check.fresh.never", stamp(in.EnrolledAt)), false, now.Sub(in.EnrolledAt) >= OfflineAfter
	}
	silent := now.Sub(in.LastSeenAt)
	switch {
	case silent >= OfflineAfter:
		return result(n, store.CheckFail, "check.fresh.offline", stamp(in.LastSeenAt)), false, true
	case silent > limit:
		return result(n, store.CheckFail, "check.fresh.stale", stamp(in.LastSeenAt), limit.String()), false, false
	}
	return result(n, store.CheckPass, ""), true, false
}

func checkVersion(f Facts, p Policy) store.CheckResult {
	const n = store.CheckVersion
	v := f.AgentVersion
	switch {
	case !f.Has:
		return result(n, store.CheckFail, "check.no_posture")
	case v == "":
		return result(n, store.CheckFail, "check.version.unknown")
	case p.MinAgentVersion != "":
		if older, ok := olderThan(v, p.MinAgentVersion); !ok {
			return result(n, store.CheckFail, "check.version.unparsable", v, p.MinAgentVersion)
		} else if older {
			return result(n, store.CheckFail, "check.version.old", v, p.MinAgentVersion)
		}
		return result(n, store.CheckPass, "")
	case v == p.Version:
		return result(n, store.CheckPass, "")
	}
	if older, ok := olderThan(v, p.Version); ok && !older {
		return result(n, store.CheckPass, "")
	}
	return result(n, store.CheckFail, "check.version.differs", v, p.Version)
}

var versionRE = regexp.MustCompile(`^v?([0-9]+)\.([0-9]+)\.([0-9]+)`)

// olderThan reports whether version v is older than min, comparing their
// leading MAJOR.MINOR.PATCH numbers (a "v" prefix and anything after them,
// such as git describe's "-3-gabc1234", are ignored); ok is false when
// either has none.
func olderThan(v, min string) (older, ok bool) {
	a, b := versionRE.FindStringSubmatch(v), versionRE.FindStringSubmatch(min)
	if a == nil || b == nil {
		return false, false
	}
	for i := 1; i <= 3; i++ {
		x, errX := strconv.ParseUint(a[i], 10, 32)
		y, errY := strconv.ParseUint(b[i], 10, 32)
		if errX != nil || errY != nil {
			return false, false
		}
		if x != y {
			return x < y, true
		}
	}
	return false, true
}

func checkCertificate(notAfter, now time.Time) store.CheckResult {
	const n = store.CheckCertificate
	switch {
	case notAfter.IsZero():
		return result(n, store.CheckFail, "check.certificate.none")
	case !now.Before(notAfter):
		return result(n, store.CheckFail, "check.certificate.expired", stamp(notAfter))
	case notAfter.Sub(now) < CertWarning:
		return result(n, store.CheckFail, "check.certificate.expiring", stamp(notAfter))
	}
	return result(n, store.CheckPass, "")
}

// exemptionGrace is how long after its end (or revocation) an exemption
// may still show as applied: the agent ends it at once, but its posture
// reaches the collector up to a report interval later, and writers are
// given a grace period.
func exemptionGrace(p Policy) time.Duration {
	return max(2*time.Minute, 2*p.ReportInterval)
}

func checkExemptions(in Input, asOf time.Time, p Policy) store.CheckResult {
	const n = store.CheckExemptions
	if !in.Facts.Has {
		return result(n, store.CheckUnknown, "check.no_posture")
	}
	grace := exemptionGrace(p)
	for _, e := range in.Facts.Exemptions {
		if at, ok := in.Revoked[e.GetId()]; ok && asOf.Sub(at) > grace {
			return result(n, store.CheckFail, "check.exemptions.revoked", e.GetId(), deviceText(e.GetDevice()), stamp(at))
		}
		if end := e.GetNotAfter(); end != nil && asOf.Sub(end.AsTime()) > grace {
			return result(n, store.CheckFail, "check.exemptions.past_end", e.GetId(), deviceText(e.GetDevice()), stamp(end.AsTime()))
		}
	}
	return result(n, store.CheckPass, "")
}

func deviceText(d *mnguardv1.DeviceIdentity) string {
	return fmt.Sprintf("%s:%s:%s", d.GetVendorId(), d.GetProductId(), d.GetSerial())
}
