package report

import (
	"time"

	"github.com/mnguard/mnguard/server/store"
)

// Report is the self-inspection report of one period. Times are in the
// collector's time zone.
type Report struct {
	Language string `json:"language"`
	Title    string `json:"title"`
	TimeZone string `json:"time_zone"`
	// FirstDay and LastDay are the period's days, YYYY-MM-DD; From and To
	// its bounds: From <= t < To.
	FirstDay string    `json:"first_day"`
	LastDay  string    `json:"last_day"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	// GeneratedAt is when the report was made. Complete is false when the
	// period had not ended then: the figures run up to GeneratedAt.
	GeneratedAt time.Time `json:"generated_at"`
	Complete    bool      `json:"complete"`
	Version     string    `json:"collector_version"`

	// Compliance has one entry per compliance check, in store.Checks order.
	Compliance []CheckSummary `json:"compliance"`
	// Exemptions are the exemptions issued in the period, oldest first.
	Exemptions []ExemptionGrant `json:"exemptions"`
	MFA        MFA              `json:"mfa"`
	Network    Network          `json:"network"`
	Terminals  TerminalChanges  `json:"terminals"`
	Operators  Operators        `json:"operators"`
	AuditChain AuditChain       `json:"audit_chain"`
}

// CheckSummary is one compliance check over the period.
type CheckSummary struct {
	Check string `json:"check"` // a name of store.Checks
	Label string `json:"label"`
	// FailingAtEnd counts the terminals failing the check at the end of
	// the period; FailedInPeriod those that failed it at any time in it.
	FailingAtEnd   int `json:"failing_at_end"`
	FailedInPeriod int `json:"failed_in_period"`
	// UnknownNow counts the active terminals whose result for the check
	// could not be determined when the report was made (not evaluated
	// yet, or the agent does not report it; network isolation also while
	// the collector holds no network policy or the terminal has not
	// received it yet).
	UnknownNow int `json:"unknown_now"`
	// Terminals are those that failed the check in the period: the ones
	// failing at the end first, then by host name.
	Terminals []CheckFailure `json:"terminals"`
}

// Network is segment isolation (Art. 6(3)(a)) over the period: the network
// policy, its changes, and what agents reported breaking it.
type Network struct {
	// Policy is the network policy in force when the report was made; nil
	// when none was set.
	Policy *NetworkPolicy `json:"policy,omitempty"`
	// Changes are the changes of the network policy in the period, from
	// the audit log, oldest first.
	Changes []AuditItem `json:"changes"`
	// Findings are what agents reported breaking isolation in the period
	// (their network.finding events), per terminal and kind: the terminals
	// in host name order, each's kinds by count, most first.
	Findings []NetworkFindings `json:"findings"`
	// FindingEvents counts those events.
	FindingEvents int `json:"finding_events"`
}

// NetworkPolicy is the network policy in force.
type NetworkPolicy struct {
	Version string `json:"version"`
	Enforce bool   `json:"enforce"`
	// Networks in the CLI's form: "198.51.100.0/24",
	// "2001:db8::/32@tcp/443,udp/53".
	Networks   []string  `json:"networks"`
	DNSServers []string  `json:"dns_servers"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
	UpdatedBy  string    `json:"updated_by"`
}

// NetworkFindings is one kind of finding one terminal's agent reported in
// the period.
type NetworkFindings struct {
	TerminalID string `json:"terminal_id"`
	Hostname   string `json:"hostname"`
	// Kind is the finding's kind as the agent names it ("socket",
	// "usb_adapter", …); Label says it in the report's language.
	Kind  string `json:"kind"`
	Label string `json:"label"`
	// Count is how many were reported; First and Last when (the agent's
	// time of the event).
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Example is the detail of the first one, e.g. "tcp 192.0.2.10:50312
	// → 203.0.113.7:443 established (curl, pid 4242)".
	Example string `json:"example"`
}

// UnknownNoteKey is the catalogue key of the note that explains UnknownNow.
func (c CheckSummary) UnknownNoteKey() string {
	if c.Check == store.CheckNetwork {
		return "report.compliance.unknown_note_network"
	}
	return "report.compliance.unknown_note"
}

// CheckFailure is one terminal that failed a check in the period.
type CheckFailure struct {
	TerminalID string `json:"terminal_id"`
	Hostname   string `json:"hostname"`
	// FailingAtEnd: still failing at the end of the period, since Since
	// (which may lie before the period).
	FailingAtEnd bool      `json:"failing_at_end"`
	Since        time.Time `json:"since,omitzero"`
	// FailedSeconds is the time it failed within the period; Stretches the
	// number of separate failures that overlap the period.
	FailedSeconds int64 `json:"failed_seconds"`
	Stretches     int   `json:"stretches"`
	// DetailKey is the message key of the failure's reason (of the failure
	// at the end, or else of the last one); Detail its text.
	DetailKey string `json:"detail_key"`
	Detail    string `json:"detail"`
}

// ExemptionGrant is one exemption issued in the period.
type ExemptionGrant struct {
	ID         string `json:"id"`
	TerminalID string `json:"terminal_id"`
	Hostname   string `json:"hostname"`
	// Device is VID:PID:SERIAL; AllowNoSerial is set when a device without
	// a serial number was allowed by an explicit override.
	Device        string    `json:"device"`
	AllowNoSerial bool      `json:"allow_no_serial"`
	Issuer        string    `json:"issuer"`
	Reason        string    `json:"reason"`
	Ticket        string    `json:"ticket"`
	Source        string    `json:"source"` // store.ExemptionOnline or ExemptionOffline
	IssuedAt      time.Time `json:"issued_at"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokedBy     string    `json:"revoked_by,omitempty"`
	RevokeReason  string    `json:"revoke_reason,omitempty"`
	// Used is set when the terminal's agent reported a write to the device
	// under the exemption (event media.exemption_used); UsedAt is the
	// first such report's time. An agent that cannot count writes never
	// reports one.
	Used   bool      `json:"used"`
	UsedAt time.Time `json:"used_at,omitzero"`
}

// MFA is what happened to terminal logins in the period.
type MFA struct {
	// Lockouts are the login verifications that locked an account.
	Lockouts []Lockout `json:"lockouts"`
	// Unlocks, OfflineLoginCodes and OfflineExemptionCodes are audit
	// entries (user.unlock, user.offline_code, exemption.offline_code).
	Unlocks               []AuditItem `json:"unlocks"`
	OfflineLoginCodes     []AuditItem `json:"offline_login_codes"`
	OfflineExemptionCodes []AuditItem `json:"offline_exemption_codes"`
}

// Lockout is a login verification that locked the account.
type Lockout struct {
	Time       time.Time `json:"time"`
	TerminalID string    `json:"terminal_id"`
	Hostname   string    `json:"hostname"`
	User       string    `json:"user"`
	Service    string    `json:"service"`
	Reason     string    `json:"reason"`
}

// AuditItem is one audit log entry.
type AuditItem struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// TerminalChanges are the terminals enrolled and revoked in the period.
type TerminalChanges struct {
	Enrolled []TerminalItem `json:"enrolled"`
	Revoked  []TerminalItem `json:"revoked"`
}

// TerminalItem is a terminal enrolled or revoked in the period.
type TerminalItem struct {
	ID         string    `json:"id"`
	Hostname   string    `json:"hostname"`
	State      string    `json:"state"` // now: store.StateActive or StateRevoked
	EnrolledAt time.Time `json:"enrolled_at"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	Reason     string    `json:"revoke_reason,omitempty"`
}

// Operators are the operators now and what changed about them in the
// period.
type Operators struct {
	Current []OperatorItem `json:"current"`
	// Changes are the audit entries operator.* and operator_token.* of
	// the period, sign-ins left out; they are counted instead.
	Changes        []AuditItem `json:"changes"`
	SignIns        int         `json:"sign_ins"`
	SignInsFailed  int         `json:"sign_ins_failed"`
	SignInsRefused int         `json:"sign_ins_refused"`
}

// OperatorItem is one operator as the report was made.
type OperatorItem struct {
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Disabled     bool      `json:"disabled"`
	Locked       bool      `json:"locked"`
	CreatedAt    time.Time `json:"created_at"`
	CreatedBy    string    `json:"created_by"`
	LastSignInAt time.Time `json:"last_sign_in_at,omitzero"`
}

// AuditChain is the verification of the audit log's hash chain from its
// first entry through the last one of the period.
type AuditChain struct {
	OK bool `json:"ok"`
	// BrokenAt is the first entry that does not follow from its
	// predecessor, BrokenReason why; the walk stopped there.
	BrokenAt     int64  `json:"broken_at,omitempty"`
	BrokenReason string `json:"broken_reason,omitempty"`
	// EntriesWalked counts the entries verified; Head is the newest of
	// them (ID 0 when there are none), HeadHash its hash in hex.
	EntriesWalked int64     `json:"entries_walked"`
	HeadID        int64     `json:"head_id"`
	HeadTime      time.Time `json:"head_time,omitzero"`
	HeadHash      string    `json:"head_hash"`
	// EntriesInPeriod counts the audit entries dated in the period.
	EntriesInPeriod int `json:"entries_in_period"`
}

// ExemptionsUsed counts the exemptions under which a write was reported.
func (r *Report) ExemptionsUsed() int {
	n := 0
	for _, e := range r.Exemptions {
		if e.Used {
			n++
		}
	}
	return n
}

// ExemptionsRevoked counts the exemptions revoked (so far).
func (r *Report) ExemptionsRevoked() int {
	n := 0
	for _, e := range r.Exemptions {
		if !e.RevokedAt.IsZero() {
			n++
		}
	}
	return n
}

// ChecksFailingAtEnd counts the checks that some terminal fails at the end
// of the period.
func (r *Report) ChecksFailingAtEnd() int {
	n := 0
	for _, c := range r.Compliance {
		if c.FailingAtEnd > 0 {
			n++
		}
	}
	return n
}
