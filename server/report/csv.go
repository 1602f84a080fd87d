package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mnguard/mnguard/internal/csvsafe"
	"github.com/mnguard/mnguard/server/i18n"
)

// The CSV columns, in order (see the package documentation).
const (
	colSection = iota
	colLabel
	colName
	colCheck
	colTerminalID
	colHostname
	colID
	colDevice
	colUser
	colActor
	colAction
	colTarget
	colRole
	colSource
	colReason
	colTicket
	colDetail
	colStatus
	colTime
	colSince
	colNotBefore
	colNotAfter
	colRevokedAt
	colRevokedBy
	colUsedAt
	colCreatedAt
	colLastSignInAt
	colSeconds
	colCount
	colValue
	colHash
	numColumns
)

// csvColumns are the names of the columns, the CSV's first row.
var csvColumns = [numColumns]string{
	"section", "label", "name", "check", "terminal_id", "hostname", "id", "device", "user",
	"actor", "action", "target", "role", "source", "reason", "ticket", "detail", "status",
	"time", "since", "not_before", "not_after", "revoked_at", "revoked_by", "used_at",
	"created_at", "last_sign_in_at", "seconds", "count", "value", "hash",
}

// bom is the UTF-8 byte order mark that starts the CSV.
const bom = "\ufeff"

type csvRow [numColumns]string

// csvTime is a time as the CSV shows it; the zero time is empty.
func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}

// CSV renders the report as one flat CSV table.
func (r *Report) CSV() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(bom)
	w := csv.NewWriter(&buf)
	w.UseCRLF = true
	if err := w.Write(csvColumns[:]); err != nil {
		return nil, fmt.Errorf("report: csv: %w", err)
	}
	for _, row := range r.csvRows() {
		rec := make([]string, numColumns)
		for i, v := range row {
			rec[i] = csvsafe.Cell(v)
		}
		if err := w.Write(rec); err != nil {
			return nil, fmt.Errorf("report: csv: %w", err)
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("report: csv: %w", err)
	}
	return buf.Bytes(), nil
}

func (r *Report) csvRows() []csvRow {
	lang := r.Language
	t := func(key string, args ...any) string { return i18n.T(lang, key, args...) }
	var rows []csvRow
	add := func(section, label string, set func(*csvRow)) {
		var row csvRow
		row[colSection], row[colLabel] = section, label
		if set != nil {
			set(&row)
		}
		rows = append(rows, row)
	}
	meta := func(name, value string) {
		add("meta", t("report.csv.meta."+name), func(x *csvRow) { x[colName], x[colValue] = name, value })
	}
	count := func(name, check, label string, n int) {
		add("count", label, func(x *csvRow) {
			x[colName], x[colCheck], x[colCount] = name, check, strconv.Itoa(n)
		})
	}
	audit := func(section, label string, items []AuditItem) {
		for _, it := range items {
			add(section, label, func(x *csvRow) {
				x[colID], x[colTime], x[colActor] = strconv.FormatInt(it.ID, 10), csvTime(it.Time), it.Actor
				x[colAction], x[colTarget], x[colDetail] = it.Action, it.Target, it.Detail
			})
		}
	}

	meta("title", r.Title)
	meta("first_day", r.FirstDay)
	meta("last_day", r.LastDay)
	meta("from", csvTime(r.From))
	meta("to", csvTime(r.To))
	meta("time_zone", r.TimeZone)
	meta("generated_at", csvTime(r.GeneratedAt))
	meta("complete", strconv.FormatBool(r.Complete))
	meta("collector_version", r.Version)
	meta("language", r.Language)

	for _, c := range r.Compliance {
		count("failing_at_end", c.Check, t("report.csv.failing_at_end", c.Label), c.FailingAtEnd)
		count("failed_in_period", c.Check, t("report.csv.failed_in_period", c.Label), c.FailedInPeriod)
		count("unknown_now", c.Check, t("report.csv.unknown_now", c.Label), c.UnknownNow)
	}
	count("exemptions_issued", "", t("report.csv.exemptions_issued"), len(r.Exemptions))
	count("exemptions_used", "", t("report.csv.exemptions_used"), r.ExemptionsUsed())
	count("exemptions_revoked", "", t("report.csv.exemptions_revoked"), r.ExemptionsRevoked())
	count("lockouts", "", t("report.mfa.lockouts"), len(r.MFA.Lockouts))
	count("unlocks", "", t("report.mfa.unlocks"), len(r.MFA.Unlocks))
	count("offline_login_codes", "", t("report.mfa.offline_login_codes"), len(r.MFA.OfflineLoginCodes))
	count("offline_exemption_codes", "", t("report.mfa.offline_exemption_codes"), len(r.MFA.OfflineExemptionCodes))
	count("network_finding_events", "", t("report.csv.network_finding_events"), r.Network.FindingEvents)
	count("network_policy_changes", "", t("report.csv.network_policy_changes"), len(r.Network.Changes))
	count("terminals_enrolled", "", t("report.terminals.enrolled"), len(r.Terminals.Enrolled))
	count("terminals_revoked", "", t("report.terminals.revoked"), len(r.Terminals.Revoked))
	count("operators", "", t("report.operators.current"), len(r.Operators.Current))
	count("operator_changes", "", t("report.operators.changes"), len(r.Operators.Changes))
	count("sign_ins", "", t("report.operators.sign_ins_ok"), r.Operators.SignIns)
	count("sign_ins_failed", "", t("report.operators.sign_ins_failed"), r.Operators.SignInsFailed)
	count("sign_ins_refused", "", t("report.operators.sign_ins_refused"), r.Operators.SignInsRefused)
	count("audit_entries_in_period", "", t("report.audit.in_period"), r.AuditChain.EntriesInPeriod)

	for _, c := range r.Compliance {
		for _, f := range c.Terminals {
			add("failure", c.Label, func(x *csvRow) {
				x[colCheck], x[colTerminalID], x[colHostname] = c.Check, f.TerminalID, f.Hostname
				x[colStatus] = "recovered"
				if f.FailingAtEnd {
					x[colStatus], x[colSince] = "failing", csvTime(f.Since)
				}
				x[colSeconds], x[colCount] = strconv.FormatInt(f.FailedSeconds, 10), strconv.Itoa(f.Stretches)
				x[colName], x[colDetail] = f.DetailKey, f.Detail
			})
		}
	}
	for _, e := range r.Exemptions {
		add("exemption", t("report.exemptions.title"), func(x *csvRow) {
			x[colID], x[colTerminalID], x[colHostname], x[colDevice] = e.ID, e.TerminalID, e.Hostname, e.Device
			x[colActor], x[colReason], x[colTicket], x[colSource] = e.Issuer, e.Reason, e.Ticket, e.Source
			x[colTime], x[colNotBefore], x[colNotAfter] = csvTime(e.IssuedAt), csvTime(e.NotBefore), csvTime(e.NotAfter)
			x[colRevokedAt], x[colRevokedBy], x[colDetail] = csvTime(e.RevokedAt), e.RevokedBy, e.RevokeReason
			x[colStatus] = "not_used"
			if e.Used {
				x[colStatus], x[colUsedAt] = "used", csvTime(e.UsedAt)
			}
			x[colValue] = strconv.FormatBool(e.AllowNoSerial)
		})
	}
	for _, l := range r.MFA.Lockouts {
		add("lockout", t("report.mfa.lockouts"), func(x *csvRow) {
			x[colTime], x[colTerminalID], x[colHostname] = csvTime(l.Time), l.TerminalID, l.Hostname
			x[colUser], x[colTarget], x[colReason] = l.User, l.Service, l.Reason
		})
	}
	audit("unlock", t("report.mfa.unlocks"), r.MFA.Unlocks)
	audit("offline_login_code", t("report.mfa.offline_login_codes"), r.MFA.OfflineLoginCodes)
	audit("offline_exemption_code", t("report.mfa.offline_exemption_codes"), r.MFA.OfflineExemptionCodes)
	if p := r.Network.Policy; p != nil {
		add("network_policy", t("report.csv.network_policy"), func(x *csvRow) {
			x[colID], x[colStatus], x[colTime], x[colActor] = p.Version, "enforce_off", csvTime(p.UpdatedAt), p.UpdatedBy
			if p.Enforce {
				x[colStatus] = "enforce_on"
			}
			x[colTarget], x[colValue] = strings.Join(p.Networks, " "), strings.Join(p.DNSServers, " ")
		})
	}
	audit("network_policy_change", t("report.network.changes"), r.Network.Changes)
	for _, f := range r.Network.Findings {
		add("network_finding", f.Label, func(x *csvRow) {
			x[colTerminalID], x[colHostname], x[colName], x[colCount] = f.TerminalID, f.Hostname, f.Kind, strconv.Itoa(f.Count)
			x[colSince], x[colTime], x[colDetail] = csvTime(f.First), csvTime(f.Last), f.Example
		})
	}
	for _, tm := range r.Terminals.Enrolled {
		add("enrolled", t("report.terminals.enrolled"), func(x *csvRow) {
			x[colTerminalID], x[colHostname], x[colTime], x[colStatus] = tm.ID, tm.Hostname, csvTime(tm.EnrolledAt), tm.State
		})
	}
	for _, tm := range r.Terminals.Revoked {
		add("revoked", t("report.terminals.revoked"), func(x *csvRow) {
			x[colTerminalID], x[colHostname], x[colTime], x[colReason] = tm.ID, tm.Hostname, csvTime(tm.RevokedAt), tm.Reason
		})
	}
	for _, o := range r.Operators.Current {
		add("operator", t("report.operators.current"), func(x *csvRow) {
			x[colName], x[colRole] = o.Name, o.Role
			switch {
			case o.Disabled:
				x[colStatus] = "disabled"
			case o.Locked:
				x[colStatus] = "locked"
			default:
				x[colStatus] = "enabled"
			}
			x[colCreatedAt], x[colLastSignInAt] = csvTime(o.CreatedAt), csvTime(o.LastSignInAt)
		})
	}
	audit("operator_change", t("report.operators.changes"), r.Operators.Changes)

	a := r.AuditChain
	add("audit_chain", t("report.audit.title"), func(x *csvRow) {
		x[colStatus], x[colCount] = "ok", strconv.FormatInt(a.EntriesWalked, 10)
		if !a.OK {
			x[colStatus], x[colValue], x[colReason] = "broken", strconv.FormatInt(a.BrokenAt, 10), a.BrokenReason
		}
		if a.HeadID != 0 {
			x[colID], x[colTime], x[colHash] = strconv.FormatInt(a.HeadID, 10), csvTime(a.HeadTime), a.HeadHash
		}
	})
	return rows
}

// JSON renders the report as JSON: the Report, indented.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: json: %w", err)
	}
	return append(b, '\n'), nil
}
