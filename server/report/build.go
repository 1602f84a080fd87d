package report

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/i18n"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/protobuf/proto"
)

// Event types and attributes the report reads. The server may not import
// the agent, so the agent's names are repeated here (agent/media: the
// events of exempted devices carry the exemption's ID as "exemption_id").
const (
	// eventLoginVerify is recorded by the collector (server/logins) for
	// every login verification; its "reason" ends in lockReached when the
	// attempt locked the account.
	eventLoginVerify = "login.verify"
	lockReached      = "lock reached"
	// eventExemptionUsed is reported by the agent at the first write to
	// an exempted device.
	eventExemptionUsed = "media.exemption_used"
	attrExemptionID    = "exemption_id"
	// offlineIDPrefix: the agent names an offline exemption
	// "offline-" + its normalized challenge, not by the collector's ID.
	offlineIDPrefix = "offline-"
	// eventNetworkFinding is reported by the agent (agent/netcheck) when
	// something starts breaking isolation; its attributes say what.
	eventNetworkFinding = "network.finding"
)

// Audit actions the report reads.
const (
	actionUnlock           = "user.unlock"
	actionOfflineLogin     = "user.offline_code"
	actionOfflineExemption = "exemption.offline_code"
	actionSignIn           = "operator.sign_in"
	actionSignInFailed     = "operator.sign_in_failed"
	actionSignInRefused    = "operator.sign_in_refused"
	// actionNetworkPolicySet is the collector's (server/api) audit action
	// of a change of the network policy.
	actionNetworkPolicySet = "network_policy.set"
)

// operatorPrefixes select the audit entries about operators and their API
// tokens (which act in their name).
var operatorPrefixes = []string{"operator.", "operator_token."}

// pageSize is how many events or audit entries one query reads (a
// variable so that tests can make pages small).
var pageSize = 2000

// builder gathers one Report.
type builder struct {
	st   store.Store
	loc  *time.Location
	lang string
	// The period is [start, end); cut is end, or now while the period
	// lasts: nothing after it is known.
	start, end, cut, now time.Time
	rep                  *Report
	hosts                map[string]string
}

func (b *builder) build(ctx context.Context) error {
	ts, err := b.st.Terminals(ctx)
	if err != nil {
		return err
	}
	b.hosts = make(map[string]string, len(ts))
	for _, t := range ts {
		b.hosts[t.ID] = t.Hostname
	}
	b.terminals(ts)
	for _, step := range []func(context.Context) error{b.compliance, b.exemptions, b.lockouts, b.network, b.operators, b.audit} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// in reports whether t lies in the period.
func (b *builder) in(t time.Time) bool { return !t.Before(b.start) && t.Before(b.end) }

func (b *builder) terminals(ts []store.Terminal) {
	tc := TerminalChanges{Enrolled: []TerminalItem{}, Revoked: []TerminalItem{}}
	for _, t := range ts {
		it := TerminalItem{
			ID: t.ID, Hostname: t.Hostname, State: t.State, EnrolledAt: b.at(t.EnrolledAt),
			RevokedAt: b.at(t.RevokedAt), Reason: t.RevokeReason,
		}
		if b.in(t.EnrolledAt) {
			tc.Enrolled = append(tc.Enrolled, it)
		}
		if !t.RevokedAt.IsZero() && b.in(t.RevokedAt) {
			tc.Revoked = append(tc.Revoked, it)
		}
	}
	slices.SortStableFunc(tc.Enrolled, func(x, y TerminalItem) int {
		return cmp.Or(x.EnrolledAt.Compare(y.EnrolledAt), cmp.Compare(x.ID, y.ID))
	})
	slices.SortStableFunc(tc.Revoked, func(x, y TerminalItem) int {
		return cmp.Or(x.RevokedAt.Compare(y.RevokedAt), cmp.Compare(x.ID, y.ID))
	})
	b.rep.Terminals = tc
}

// at is t in the collector's time zone; the zero time stays zero.
func (b *builder) at(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.In(b.loc)
}

// compliance summarizes every check from the failure intervals of the
// period, and counts the undetermined results of now.
func (b *builder) compliance(ctx context.Context) error {
	ivs, err := b.st.ComplianceIntervals(ctx, b.start, b.end)
	if err != nil {
		return err
	}
	summaries, _, err := b.st.TerminalPage(ctx, store.TerminalFilter{})
	if err != nil {
		return err
	}
	byCheck := map[string]map[string][]store.ComplianceInterval{}
	for _, iv := range ivs {
		if byCheck[iv.Check] == nil {
			byCheck[iv.Check] = map[string][]store.ComplianceInterval{}
		}
		byCheck[iv.Check][iv.TerminalID] = append(byCheck[iv.Check][iv.TerminalID], iv)
	}
	b.rep.Compliance = make([]CheckSummary, 0, len(store.Checks))
	for _, check := range store.Checks {
		cs := CheckSummary{Check: check, Label: i18n.T(b.lang, "report.check."+check), Terminals: []CheckFailure{}}
		for _, s := range summaries {
			if s.State != store.StateActive {
				continue
			}
			if s.Compliance == nil || s.Compliance.Check(check).Status == store.CheckUnknown {
				cs.UnknownNow++
			}
		}
		for id, list := range byCheck[check] {
			f, ok := b.failure(id, list)
			if !ok {
				continue
			}
			cs.Terminals = append(cs.Terminals, f)
			cs.FailedInPeriod++
			if f.FailingAtEnd {
				cs.FailingAtEnd++
			}
		}
		slices.SortFunc(cs.Terminals, func(x, y CheckFailure) int {
			if x.FailingAtEnd != y.FailingAtEnd {
				if x.FailingAtEnd {
					return -1
				}
				return 1
			}
			return cmp.Or(cmp.Compare(x.Hostname, y.Hostname), cmp.Compare(x.TerminalID, y.TerminalID))
		})
		b.rep.Compliance = append(b.rep.Compliance, cs)
	}
	return nil
}

// failure sums the intervals of one terminal failing check; ok is false
// when none of them overlaps [start, cut).
func (b *builder) failure(id string, ivs []store.ComplianceInterval) (CheckFailure, bool) {
	f := CheckFailure{TerminalID: id, Hostname: b.hosts[id]}
	type span struct{ from, to time.Time }
	var (
		spans []span
		last  *store.ComplianceInterval
		atEnd *store.ComplianceInterval
	)
	for i := range ivs {
		iv := &ivs[i]
		from, to := iv.Start, b.cut
		if from.Before(b.start) {
			from = b.start
		}
		if !iv.End.IsZero() && iv.End.Before(to) {
			to = iv.End
		}
		if !from.Before(to) {
			continue
		}
		spans = append(spans, span{from, to})
		if last == nil || !iv.Start.Before(last.Start) {
			last = iv
		}
		if iv.End.IsZero() || !iv.End.Before(b.cut) {
			if atEnd == nil || iv.Start.Before(atEnd.Start) {
				atEnd = iv
			}
		}
	}
	if len(spans) == 0 {
		return f, false
	}
	// The union of the spans: one failure is never counted twice.
	slices.SortFunc(spans, func(x, y span) int { return x.from.Compare(y.from) })
	var total time.Duration
	cur0 := spans[0]
	for _, s := range spans[1:] {
		if !s.from.After(cur0.to) {
			if s.to.After(cur0.to) {
				cur0.to = s.to
			}
			continue
		}
		total += cur0.to.Sub(cur0.from)
		cur0 = s
	}
	total += cur0.to.Sub(cur0.from)
	f.FailedSeconds = int64(total / time.Second)
	f.Stretches = len(spans)

	shown := last
	if atEnd != nil {
		f.FailingAtEnd, f.Since, shown = true, b.at(atEnd.Start), atEnd
	}
	f.DetailKey = shown.Detail
	f.Detail = detailText(b.lang, shown.Detail, shown.Args)
	return f, true
}

var argIndexRE = regexp.MustCompile(`%\[([0-9]+)\]`)

// detailText renders a check detail (a message key) with args; arguments
// the text asks for but that are not known show as an ellipsis.
func detailText(lang, key string, args []string) string {
	if key == "" {
		return ""
	}
	n := len(args)
	for _, m := range argIndexRE.FindAllStringSubmatch(i18n.T(lang, key), -1) {
		if i, err := strconv.Atoi(m[1]); err == nil && i > n && i <= 32 {
			n = i
		}
	}
	as := make([]any, n)
	for i := range as {
		as[i] = "…"
		if i < len(args) {
			as[i] = args[i]
		}
	}
	return i18n.T(lang, key, as...)
}

// attributes decodes the attributes of a stored event; nil when the data
// is not an Event.
func attributes(data []byte) map[string]string {
	var ev mnguardv1.Event
	if err := proto.Unmarshal(data, &ev); err != nil {
		return nil
	}
	return ev.GetAttributes()
}

// eachEvent calls fn for every event f selects, reading them page by page
// with the store's cursor (f.Limit and f.Before are its own).
func eachEvent(ctx context.Context, st store.Store, f store.EventFilter, fn func(store.Event)) error {
	f.Limit, f.Before = pageSize, nil
	for {
		evs, err := st.FilterEvents(ctx, f)
		if err != nil {
			return err
		}
		for _, e := range evs {
			fn(e)
		}
		if len(evs) < f.Limit {
			return nil
		}
		c := evs[len(evs)-1].Cursor()
		f.Before = &c
	}
}

// exemptions lists the exemptions issued in the period and whether their
// agents reported a write under them.
func (b *builder) exemptions(ctx context.Context) error {
	es, err := b.st.ExemptionsIssued(ctx, b.start, b.end)
	if err != nil {
		return err
	}
	b.rep.Exemptions = make([]ExemptionGrant, 0, len(es))
	if len(es) == 0 {
		return nil
	}
	// First write per terminal and the agent's name of the exemption.
	used := map[[2]string]time.Time{}
	err = eachEvent(ctx, b.st, store.EventFilter{Type: eventExemptionUsed, Since: es[0].IssuedAt}, func(e store.Event) {
		if e.Source != "agent" {
			return
		}
		id := attributes(e.Data)[attrExemptionID]
		if id == "" {
			return
		}
		k := [2]string{e.TerminalID, id}
		if t, ok := used[k]; !ok || e.Time.Before(t) {
			used[k] = e.Time
		}
	})
	if err != nil {
		return err
	}
	for _, e := range es {
		g := ExemptionGrant{
			ID: e.ID, TerminalID: e.TerminalID, Hostname: b.hosts[e.TerminalID],
			Device: e.VendorID + ":" + e.ProductID + ":" + e.Serial, AllowNoSerial: e.AllowNoSerial,
			Issuer: e.Issuer, Reason: e.Reason, Ticket: e.Ticket, Source: e.Source,
			IssuedAt: b.at(e.IssuedAt), NotBefore: b.at(e.NotBefore), NotAfter: b.at(e.NotAfter),
			RevokedAt: b.at(e.RevokedAt), RevokedBy: e.RevokedBy, RevokeReason: e.RevokeReason,
		}
		names := []string{e.ID}
		if e.Source == store.ExemptionOffline && e.Challenge != "" {
			names = append(names, offlineIDPrefix+e.Challenge)
		}
		for _, n := range names {
			if t, ok := used[[2]string{e.TerminalID, n}]; ok && (!g.Used || t.Before(g.UsedAt)) {
				g.Used, g.UsedAt = true, b.at(t)
			}
		}
		b.rep.Exemptions = append(b.rep.Exemptions, g)
	}
	return nil
}

// lockouts lists the login verifications of the period that locked an
// account. Only the collector's own events count: an agent cannot report
// one.
func (b *builder) lockouts(ctx context.Context) error {
	b.rep.MFA.Lockouts = []Lockout{}
	needle := []byte(lockReached)
	err := eachEvent(ctx, b.st, store.EventFilter{Type: eventLoginVerify, Since: b.start, Until: b.end}, func(e store.Event) {
		// The attribute's bytes are in the encoded event: most events are
		// passed over without decoding.
		if e.Source != "server" || !bytes.Contains(e.Data, needle) {
			return
		}
		a := attributes(e.Data)
		if !strings.HasSuffix(a["reason"], lockReached) {
			return
		}
		b.rep.MFA.Lockouts = append(b.rep.MFA.Lockouts, Lockout{
			Time: b.at(e.Time), TerminalID: e.TerminalID, Hostname: b.hosts[e.TerminalID],
			User: a["user"], Service: a["service"], Reason: a["reason"],
		})
	})
	if err != nil {
		return err
	}
	slices.SortStableFunc(b.rep.MFA.Lockouts, func(x, y Lockout) int {
		return cmp.Or(x.Time.Compare(y.Time), cmp.Compare(x.TerminalID, y.TerminalID), cmp.Compare(x.User, y.User))
	})
	return nil
}

// network reads the network policy in force and the isolation findings
// agents reported in the period (the policy's changes come with the audit
// log).
func (b *builder) network(ctx context.Context) error {
	nw := &b.rep.Network
	nw.Findings = []NetworkFindings{}
	stored, err := b.st.NetworkPolicy(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		nw.Policy = policyOf(stored)
		nw.Policy.UpdatedAt = b.at(nw.Policy.UpdatedAt)
	}
	type key struct{ terminal, kind string }
	byKey := map[key]*NetworkFindings{}
	err = eachEvent(ctx, b.st, store.EventFilter{Type: eventNetworkFinding, Since: b.start, Until: b.end}, func(e store.Event) {
		if e.Source != "agent" {
			return
		}
		a := attributes(e.Data)
		kind := a["kind"]
		if kind == "" {
			kind = "unknown"
		}
		nw.FindingEvents++
		k := key{e.TerminalID, kind}
		f := byKey[k]
		when := b.at(e.Time)
		if f == nil {
			f = &NetworkFindings{TerminalID: e.TerminalID, Hostname: b.hosts[e.TerminalID], Kind: kind, Label: findingLabel(b.lang, kind),
				First: when, Last: when}
			byKey[k] = f
		}
		f.Count++
		if when.Before(f.First) || when.Equal(f.First) {
			f.First, f.Example = when, findingExample(a)
		}
		if when.After(f.Last) {
			f.Last = when
		}
	})
	if err != nil {
		return err
	}
	for _, f := range byKey {
		nw.Findings = append(nw.Findings, *f)
	}
	slices.SortFunc(nw.Findings, func(x, y NetworkFindings) int {
		return cmp.Or(cmp.Compare(x.Hostname, y.Hostname), cmp.Compare(x.TerminalID, y.TerminalID), cmp.Compare(y.Count, x.Count), cmp.Compare(x.Kind, y.Kind))
	})
	return nil
}

// policyOf is the stored network policy as the report shows it; a policy
// that does not decode shows its version alone.
func policyOf(stored store.NetworkPolicy) *NetworkPolicy {
	p := &NetworkPolicy{Version: stored.Version, UpdatedAt: stored.UpdatedAt, UpdatedBy: stored.UpdatedBy, Networks: []string{}, DNSServers: []string{}}
	var m mnguardv1.NetworkPolicy
	if err := proto.Unmarshal(stored.Policy, &m); err != nil {
		return p
	}
	p.Enforce = m.GetEnforce()
	for _, n := range m.GetNetworks() {
		s := n.GetCidr()
		for i, r := range n.GetPorts() {
			sep := ","
			if i == 0 {
				sep = "@"
			}
			s += fmt.Sprintf("%s%s/%d", sep, r.GetProtocol(), r.GetFirst())
			if r.GetLast() > r.GetFirst() {
				s += fmt.Sprintf("-%d", r.GetLast())
			}
		}
		p.Networks = append(p.Networks, s)
	}
	p.DNSServers = append(p.DNSServers, m.GetDnsServers()...)
	return p
}

// findingLabel is a finding's kind in lang: the console's name for it, or
// the kind itself when the catalogue has none.
func findingLabel(lang, kind string) string {
	if k := "netfinding." + kind; i18n.Has(k) {
		return i18n.T(lang, k)
	}
	return kind
}

// findingExample is a finding event's detail with the process behind it:
// "… — curl (PID 4242, taro)".
func findingExample(a map[string]string) string {
	s := a["detail"]
	var who []string
	if pid := a["pid"]; pid != "" && pid != "0" {
		who = append(who, "PID "+pid)
	}
	if u := a["user"]; u != "" {
		who = append(who, u)
	}
	if p := a["process"]; p != "" || len(who) > 0 {
		s += " — " + p
		if len(who) > 0 {
			s += " (" + strings.Join(who, ", ") + ")"
		}
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ToValidUTF8(s, "")
}

func (b *builder) operators(ctx context.Context) error {
	ops, err := b.st.Operators(ctx)
	if err != nil {
		return err
	}
	b.rep.Operators.Current = make([]OperatorItem, 0, len(ops))
	for _, o := range ops {
		b.rep.Operators.Current = append(b.rep.Operators.Current, OperatorItem{
			Name: o.Name, Role: o.Role, Disabled: !o.Enabled(), Locked: !o.LockedAt.IsZero(),
			CreatedAt: b.at(o.CreatedAt), CreatedBy: o.CreatedBy, LastSignInAt: b.at(o.LastSignInAt),
		})
	}
	return nil
}

// audit reads the audit entries of the period once, sorting out those the
// report lists, and verifies the chain through the period's end.
func (b *builder) audit(ctx context.Context) error {
	m, o, nw := &b.rep.MFA, &b.rep.Operators, &b.rep.Network
	m.Unlocks, m.OfflineLoginCodes, m.OfflineExemptionCodes, o.Changes = []AuditItem{}, []AuditItem{}, []AuditItem{}, []AuditItem{}
	nw.Changes = []AuditItem{}
	n := 0
	f := store.AuditFilter{Since: b.start, Until: b.end, Limit: pageSize}
	for {
		es, err := b.st.FilterAudit(ctx, f)
		if err != nil {
			return err
		}
		for _, e := range es {
			n++
			it := AuditItem{ID: e.ID, Time: b.at(e.Time), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail}
			switch {
			case e.Action == actionUnlock:
				m.Unlocks = append(m.Unlocks, it)
			case e.Action == actionOfflineLogin:
				m.OfflineLoginCodes = append(m.OfflineLoginCodes, it)
			case e.Action == actionOfflineExemption:
				m.OfflineExemptionCodes = append(m.OfflineExemptionCodes, it)
			case e.Action == actionSignIn:
				o.SignIns++
			case e.Action == actionSignInFailed:
				o.SignInsFailed++
			case e.Action == actionSignInRefused:
				o.SignInsRefused++
			case e.Action == actionNetworkPolicySet:
				nw.Changes = append(nw.Changes, it)
			case slices.ContainsFunc(operatorPrefixes, func(p string) bool { return strings.HasPrefix(e.Action, p) }):
				o.Changes = append(o.Changes, it)
			}
		}
		if len(es) < f.Limit {
			break
		}
		// Newest first: the next page is older than this one's last.
		f.BeforeID = es[len(es)-1].ID
	}
	for _, l := range [][]AuditItem{m.Unlocks, m.OfflineLoginCodes, m.OfflineExemptionCodes, o.Changes, nw.Changes} {
		slices.SortFunc(l, func(x, y AuditItem) int { return cmp.Compare(x.ID, y.ID) })
	}

	// Through the last entry of the period: one at its end belongs to the
	// next day.
	v, err := b.st.VerifyAudit(ctx, b.end.Add(-time.Nanosecond))
	if err != nil {
		return err
	}
	a := AuditChain{
		OK: v.Broken == nil, EntriesWalked: v.Entries, HeadID: v.Head.ID, HeadTime: b.at(v.Head.Time),
		HeadHash: hex.EncodeToString(v.Head.Hash), EntriesInPeriod: n,
	}
	if v.Broken != nil {
		a.BrokenAt, a.BrokenReason = v.Broken.ID, v.Broken.Reason
	}
	b.rep.AuditChain = a
	return nil
}
