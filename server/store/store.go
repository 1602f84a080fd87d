// Package store keeps the collector's state: terminals, certificates,
// enrollment and operator tokens, posture, events, TOTP login users,
// helpdesk exemptions, the network policy and the audit log.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors a Store returns; callers test them with errors.Is.
var (
	ErrNotFound       = errors.New("not found")
	ErrTokenUnknown   = errors.New("enrollment token not recognised")
	ErrTokenExpired   = errors.New("enrollment token expired")
	ErrTokenExhausted = errors.New("enrollment token has no uses left")
	ErrRevoked        = errors.New("revoked")
	// ErrExists is returned when creating something whose name is taken.
	ErrExists = errors.New("already exists")
	// ErrConflict is returned by a compare-and-set whose expectation no
	// longer holds: someone else changed the row first.
	ErrConflict = errors.New("changed concurrently")
	// ErrExpired is returned when revoking an exemption that has ended by
	// itself. Revoking a revoked one returns ErrRevoked.
	ErrExpired = errors.New("expired")
	// ErrTooSoon is returned by a rate-limited change asked for again
	// before its interval passed (see TooSoonError).
	ErrTooSoon = errors.New("too soon")
	// ErrUnavailable is matched (errors.Is) by the error of an operation
	// that could not reach the database (PostgreSQL down or restarting, the
	// connection lost) and therefore stored nothing: the caller may retry,
	// and an agent's report answered with it is not acknowledged.
	ErrUnavailable = errors.New("database unavailable")
)

// TooSoonError says when a rate-limited change was last made and when it
// may be made again.
type TooSoonError struct {
	Last, Next time.Time
}

func (e *TooSoonError) Error() string {
	return fmt.Sprintf("too soon: last at %s, next allowed from %s", e.Last.UTC().Format(time.RFC3339), e.Next.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrTooSoon) true.
func (e *TooSoonError) Is(target error) bool { return target == ErrTooSoon }

// Exemption sources.
const (
	// ExemptionOnline: signed by the collector and pushed to the agent.
	ExemptionOnline = "online"
	// ExemptionOffline: a response code the helpdesk read out to a
	// terminal that could not reach the collector.
	ExemptionOffline = "offline"
)

// Exemption is a helpdesk exemption: write access to one device on one
// terminal from NotBefore until NotAfter.
type Exemption struct {
	ID         string
	TerminalID string
	// The device: four lowercase hex digits each, and the serial number
	// ("" only with AllowNoSerial).
	VendorID, ProductID, Serial string
	AllowNoSerial               bool
	NotBefore, NotAfter         time.Time
	// Duration is NotAfter - NotBefore, whole seconds.
	Duration time.Duration
	// Issuer is the operator who issued it.
	Issuer, Reason, Ticket string
	Source                 string // ExemptionOnline or ExemptionOffline
	// Token is the SignedExemption (marshalled protobuf) of an online
	// exemption; nil for offline ones.
	Token []byte
	// Challenge is the offline challenge it answers; "" for online ones.
	Challenge string
	IssuedAt  time.Time
	// DeliveredAt is when a Subscribe stream first carried it; zero until
	// then.
	DeliveredAt  time.Time
	RevokedAt    time.Time
	RevokedBy    string
	RevokeReason string
}

// ActiveAt reports whether the exemption is in force at t: not revoked
// and NotBefore <= t < NotAfter.
func (e Exemption) ActiveAt(t time.Time) bool {
	return e.RevokedAt.IsZero() && !t.Before(e.NotBefore) && t.Before(e.NotAfter)
}

// User states.
const (
	UserPending = "pending"
	UserActive  = "active"
)

// User sources.
const (
	SourceEnrolled = "enrolled"
	SourceImported = "imported"
)

// User is a login user with a TOTP token.
type User struct {
	Name  string
	State string // UserPending or UserActive
	// SecretSealed is the TOTP secret encrypted by the caller (AES-GCM);
	// the store never sees it in the clear.
	SecretSealed []byte
	Algorithm    string // "SHA1", "SHA256", "SHA512"
	Digits       int
	Period       int // seconds
	Source       string
	TokenSerial  string
	// LastStep is the last accepted TOTP time step (0: none); Offset the
	// learned clock offset in steps. Changed only by compare-and-set.
	LastStep int64
	Offset   int64
	// Failures counts consecutive failed attempts; LockedAt is set (non-zero)
	// when the user is locked.
	Failures      int
	LockedAt      time.Time
	LastFailureAt time.Time
	CreatedAt     time.Time
	CreatedBy     string
	ConfirmedAt   time.Time
	LastLoginAt   time.Time
	// RecoveryCodesLeft is the number of unused recovery codes (read only).
	RecoveryCodesLeft int
	// Kind is TokenTOTP or TokenHOTP; "" means TOTP. An HOTP user's Period
	// is 0 and LastStep and Offset stay 0.
	Kind string
	// Counter is an HOTP token's next expected counter (0 for TOTP).
	// Changed only by compare-and-set (AcceptCounter).
	Counter int64
	// NotAfter is when the token's key expires; zero means never.
	NotAfter time.Time
	// Notice is what the user is told at the next successful login about
	// codes an operator issued for them, one notice a line; "" if none
	// (read only: set by the methods that issue codes, cleared by
	// TakeUserNotice).
	Notice string
}

// StepUpdate is a compare-and-set of a user's TOTP state after an accepted
// code: it applies only while the stored LastStep still equals
// ExpectLastStep.
type StepUpdate struct {
	Name           string
	ExpectLastStep int64
	LastStep       int64
	Offset         int64
	At             time.Time
	// Confirm makes a pending user active (ConfirmedAt = At).
	Confirm bool
	// Login records At as LastLoginAt and clears Failures.
	Login bool
	// Audit, if set, is appended to the audit log in the same
	// transaction (an operator's confirm or resync).
	Audit *AuditEntry
}

// ServerEvent is an event the collector records about a terminal itself,
// e.g. a login verification. Listed with the agents' events (source
// "server").
type ServerEvent struct {
	ID         int64
	TerminalID string
	Time       time.Time
	Type       string
	Severity   int32
	Message    string
	// Data holds an Event message (marshalled protobuf) with attributes.
	Data []byte
}

// Terminal states.
const (
	StateActive  = "active"
	StateRevoked = "revoked"
)

// Terminal is an enrolled terminal.
type Terminal struct {
	ID string
	// Host holds the HostFacts message, marshalled protobuf.
	Host         []byte
	Hostname     string
	State        string
	EnrolledAt   time.Time
	LastSeenAt   time.Time // zero until the first report
	RevokedAt    time.Time // zero unless revoked
	RevokeReason string
	// OfflineKey is written by Enroll, sealed at rest (see KeySealer); a
	// read leaves it nil: Store.OfflineKey opens it.
	OfflineKey []byte
	// Newest certificate.
	CertSerial   string
	CertNotAfter time.Time
	// Latest posture (marshalled protobuf) and when it arrived; nil if none.
	Posture           []byte
	PostureReceivedAt time.Time
	// Number of rows in the posture history.
	PostureHistoryCount int
}

// Certificate records a client certificate issued to a terminal.
type Certificate struct {
	Serial     string // lowercase hex
	TerminalID string
	NotBefore  time.Time
	NotAfter   time.Time
	RevokedAt  time.Time
	// IssuedAt is when a renewal issued it; zero for enrollment
	// certificates (NotBefore stands in).
	IssuedAt time.Time
	// FirstUsedAt is the first authenticated call with it; zero until then.
	FirstUsedAt time.Time
	// RetiredAt is when a newer certificate of the terminal replaced it,
	// ReplacedBy that certificate's serial; a retired certificate is
	// refused.
	RetiredAt  time.Time
	ReplacedBy string
}

// EnrollmentToken is a token that lets agents enroll; the secret itself is
// never stored, only its SHA-256.
type EnrollmentToken struct {
	ID        string
	Hash      []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	Uses      int
	UsesLeft  int
	CreatedBy string
	Note      string
}

// Operator roles.
const (
	RoleAdmin    = "admin"
	RoleHelpdesk = "helpdesk"
	RoleAuditor  = "auditor"
)

// Event is one stored terminal event.
type Event struct {
	TerminalID string
	Seq        uint64
	Time       time.Time
	ReceivedAt time.Time
	Type       string
	Severity   int32
	Message    string
	// Data holds the whole Event message, marshalled protobuf.
	Data []byte
	// Source is "agent" for reported events, "server" for ServerEvents.
	Source string
	// ID is a server event's ID (0 for an agent event).
	ID int64
}

// EventCursor is a place in the list of events (newest first): paging
// continues after it with EventFilter.Before.
type EventCursor struct {
	ReceivedAt time.Time
	Source     string // "agent" or "server"
	// Key is the agent event's seq or the server event's ID.
	Key int64
}

// Cursor is the event's place in the list.
func (e Event) Cursor() EventCursor {
	if e.Source == "server" {
		return EventCursor{ReceivedAt: e.ReceivedAt, Source: e.Source, Key: e.ID}
	}
	return EventCursor{ReceivedAt: e.ReceivedAt, Source: e.Source, Key: int64(e.Seq)}
}

// Report is what one agent Report call stores, in one transaction.
type Report struct {
	TerminalID string
	ReceivedAt time.Time
	// Posture is nil when the report carries only events.
	Posture     []byte
	CollectedAt time.Time
	// Fingerprint identifies the posture's content without its volatile
	// fields; a history row is added only when it differs from the latest.
	Fingerprint []byte
	Events      []Event
}

// ReportResult says which event sequence numbers were new.
type ReportResult struct {
	Stored     []uint64
	Duplicates []uint64
}

// AuditEntry is one line of the append-only, hash-chained audit log.
type AuditEntry struct {
	ID       int64
	Time     time.Time
	Actor    string
	Action   string
	Target   string
	Detail   string
	PrevHash []byte
	Hash     []byte
}

// Store is the collector's storage. Implementations are safe for concurrent use.
type Store interface {
	// Enroll consumes one use of the enrollment token with the given hash
	// and records the terminal and its first certificate, atomically. It
	// returns ErrTokenUnknown, ErrTokenExpired or ErrTokenExhausted (and
	// stores nothing) when the token does not allow it.
	Enroll(ctx context.Context, tokenHash []byte, now time.Time, t Terminal, c Certificate) error
	// AddCertificate records a renewed certificate of an active terminal.
	AddCertificate(ctx context.Context, c Certificate) error
	// Certificate returns the certificate with the serial, ErrNotFound if
	// unknown.
	Certificate(ctx context.Context, serial string) (Certificate, error)
	// CheckEnrollmentToken reports, changing nothing, whether the token
	// with the hash would let a terminal enroll at now: nil, or
	// ErrTokenUnknown, ErrTokenExpired or ErrTokenExhausted. Enroll checks
	// again when it consumes the use.
	CheckEnrollmentToken(ctx context.Context, tokenHash []byte, now time.Time) error
	// LastCertificateIssued returns when the terminal's newest certificate
	// was issued; ErrNotFound if it has none.
	LastCertificateIssued(ctx context.Context, terminalID string) (time.Time, error)
	// RenewCertificate records c (c.IssuedAt set), issued by a call
	// authenticated with the certificate of serial replaces, unless the
	// terminal's newest certificate was issued less than minInterval
	// before c.IssuedAt: then an error wrapping ErrTooSoon (a
	// *TooSoonError) and nothing stored. Certificates of the terminal
	// issued after replaces and never used retire (the caller evidently
	// never got them). The audit entry a is appended in the same
	// transaction. ErrRevoked or ErrNotFound for a revoked or unknown
	// terminal.
	RenewCertificate(ctx context.Context, c Certificate, replaces string, minInterval time.Duration, a AuditEntry) error
	// UseCertificate records the first authenticated use of the
	// certificate at at, and retires every older certificate of its
	// terminal, appending an audit entry (a, with Target and Detail
	// filled) in the same transaction when it retired any. It returns the
	// serials retired; none when the certificate was used before.
	UseCertificate(ctx context.Context, serial string, at time.Time, a AuditEntry) ([]string, error)
	// Terminal returns the terminal with its latest posture, without its
	// offline key.
	Terminal(ctx context.Context, id string) (Terminal, error)
	// OfflineKey opens the terminal's offline key; ErrNotFound if the
	// terminal is unknown or has none, an error wrapping ErrNoKeySealer or
	// ErrKeySealer when it cannot be opened.
	OfflineKey(ctx context.Context, id string) ([]byte, error)
	// Terminals lists all terminals (without posture bytes or offline keys),
	// ordered by hostname.
	Terminals(ctx context.Context) ([]Terminal, error)
	// RevokeTerminal marks the terminal and all its certificates revoked
	// and appends a to the audit log, in one transaction.
	RevokeTerminal(ctx context.Context, id, reason string, now time.Time, a AuditEntry) error
	// SaveReport stores a report: latest posture, history (when the
	// fingerprint changed), last-seen time and events, each (terminal, seq)
	// once.
	SaveReport(ctx context.Context, r Report) (ReportResult, error)
	// Events lists events, newest first; terminalID "" means all. Server
	// events are included, with Source "server" and Seq 0.
	Events(ctx context.Context, terminalID string, limit int) ([]Event, error)
	// AddServerEvent records an event the collector observed about a
	// terminal; ErrNotFound if the terminal is unknown.
	AddServerEvent(ctx context.Context, e ServerEvent) error

	// Every method below that an operator's action calls takes the audit
	// entry and appends it in the transaction of the change: both are
	// stored or neither.

	// CreateUser adds a user with its recovery code hashes; ErrExists if
	// the name is taken.
	CreateUser(ctx context.Context, u User, recoveryHashes [][]byte, a AuditEntry) error
	// ImportUsers adds (or, with replace, replaces the tokens of) users in
	// one transaction: all or nothing. Without replace an existing name
	// fails the whole import with an error wrapping ErrExists that names
	// the user. Replacing keeps the recovery codes, clears lock, failures
	// and TOTP state, and sets the user pending.
	ImportUsers(ctx context.Context, users []User, replace bool) error
	// User returns the user, ErrNotFound if unknown.
	User(ctx context.Context, name string) (User, error)
	// Users lists all users by name.
	Users(ctx context.Context) ([]User, error)
	// DeleteUser removes the user and its recovery codes; ErrNotFound if
	// unknown.
	DeleteUser(ctx context.Context, name string, a AuditEntry) error
	// ResetUser replaces the user's secret, parameters, source and serial
	// and recovery codes; clears TOTP state, failures and lock; sets the
	// user pending and adds notice (if not "") to the user's pending
	// notices, in one transaction. ErrNotFound if unknown.
	ResetUser(ctx context.Context, u User, recoveryHashes [][]byte, notice string, a AuditEntry) error
	// ReplaceRecoveryCodes replaces all of the user's recovery codes, used
	// ones included, and adds notice (if not "") to the user's pending
	// notices; ErrNotFound if the user is unknown.
	ReplaceRecoveryCodes(ctx context.Context, name string, hashes [][]byte, notice string, a AuditEntry) error
	// AddUserNotice adds notice to the user's pending notices and appends
	// a, in one transaction, if check (nil: none) accepts the user as it
	// is in that transaction; otherwise it returns check's error and
	// changes nothing. ErrNotFound if unknown.
	AddUserNotice(ctx context.Context, name, notice string, check func(User) error, a AuditEntry) (User, error)
	// TakeUserNotice returns the user's pending notices and clears them
	// (a successful login delivered them); "" if none. ErrNotFound if the
	// user is unknown.
	TakeUserNotice(ctx context.Context, name string) (string, error)
	// AcceptStep applies a StepUpdate with compare-and-set and returns the
	// updated user; ErrNotFound if the user is gone, ErrConflict if
	// LastStep changed meanwhile, if u.LastStep <= u.ExpectLastStep (a
	// step never goes back), or if Login or Confirm is set and the user is
	// locked (a concurrent failure may have locked it).
	AcceptStep(ctx context.Context, u StepUpdate) (User, error)
	// UseRecoveryCode marks the unused recovery code with the hash used,
	// clears Failures and records the login; ErrNotFound if the user has
	// no such unused code, ErrConflict (and the code stays unused) if the
	// user is locked. Exactly one caller wins a race.
	UseRecoveryCode(ctx context.Context, name string, hash []byte, at time.Time) (User, error)
	// RecordFailure counts one failed attempt atomically and locks the user
	// (LockedAt = at) when Failures reaches lockAfter (0: never). It returns
	// the updated user; ErrNotFound if unknown. Failures keep counting
	// while locked; LockedAt keeps the first lock's time.
	RecordFailure(ctx context.Context, name string, at time.Time, lockAfter int) (User, error)
	// UnlockUser clears LockedAt and Failures and appends the audit entry
	// audit makes of the user as it was; ErrNotFound if unknown.
	UnlockUser(ctx context.Context, name string, audit func(before User) AuditEntry) (User, error)

	// Hardware tokens (tokens.go): imports of up to 100,000 tokens, tokens
	// that belong to no user yet, and HOTP counters.
	ImportTokens(ctx context.Context, in TokenImport, a AuditEntry) (ImportResult, error)
	HardwareTokens(ctx context.Context) ([]HardwareToken, error)
	// HardwareToken returns the unassigned token, ErrNotFound if none.
	HardwareToken(ctx context.Context, serial string) (HardwareToken, error)
	AssignToken(ctx context.Context, serial string, u User, replace bool, a AuditEntry) (User, error)
	AcceptCounter(ctx context.Context, u CounterUpdate) (User, error)

	// CreateExemption records an exemption of an active terminal (an error
	// wrapping ErrNotFound or ErrRevoked otherwise). An offline exemption
	// whose terminal and challenge are recorded already returns an error
	// wrapping ErrExists: each challenge is answered once.
	CreateExemption(ctx context.Context, e Exemption, a AuditEntry) error
	// Exemption returns the exemption, ErrNotFound if unknown.
	Exemption(ctx context.Context, id string) (Exemption, error)
	// Exemptions lists exemptions, newest issued first; terminalID ""
	// means all terminals. A non-zero activeAt keeps only those in force
	// then (see Exemption.ActiveAt); a limit <= 0 means no limit.
	Exemptions(ctx context.Context, terminalID string, activeAt time.Time, limit int) ([]Exemption, error)
	// RevokeExemption ends the exemption at at and returns it; ErrNotFound
	// if unknown, ErrRevoked if revoked already (the first revocation
	// stays), ErrExpired if it ended at or before at.
	RevokeExemption(ctx context.Context, id, by, reason string, at time.Time, a AuditEntry) (Exemption, error)
	// MarkExemptionDelivered records the first time a stream carried the
	// exemption and reports whether this call was that first time;
	// ErrNotFound if unknown.
	MarkExemptionDelivered(ctx context.Context, id string, at time.Time) (bool, error)

	// NetworkPolicy returns the network policy, ErrNotFound if none was
	// ever set.
	NetworkPolicy(ctx context.Context) (NetworkPolicy, error)
	// SetNetworkPolicy replaces the network policy and appends the audit
	// entry audit makes of the one before (found false: there was none),
	// in one transaction; with expectVersion not "" it returns an error
	// wrapping ErrConflict, changing nothing, unless the policy in force
	// has that version. It returns the policy before.
	SetNetworkPolicy(ctx context.Context, p NetworkPolicy, expectVersion string, audit func(before NetworkPolicy, found bool) AuditEntry) (before NetworkPolicy, found bool, err error)

	CreateEnrollmentToken(ctx context.Context, t EnrollmentToken, a AuditEntry) error
	EnrollmentTokens(ctx context.Context) ([]EnrollmentToken, error)

	// Operators, their API tokens and console sessions. Every change
	// appends its audit entry in the same transaction.
	CreateOperator(ctx context.Context, o Operator, a AuditEntry) error
	Operator(ctx context.Context, name string) (Operator, error)
	Operators(ctx context.Context) ([]Operator, error)
	UpdateOperator(ctx context.Context, name string, change func(o *Operator, a *AuditEntry) error, a AuditEntry) (Operator, error)
	DeleteOperator(ctx context.Context, name string, a AuditEntry) error
	OperatorSignedIn(ctx context.Context, in SignIn, a AuditEntry) (Operator, error)
	RecordOperatorFailure(ctx context.Context, name string, at time.Time, lockAfter int, a AuditEntry) (Operator, error)
	CreateOperatorToken(ctx context.Context, t OperatorToken, a AuditEntry) error
	// OperatorTokenByHash returns ErrNotFound for unknown tokens and
	// ErrRevoked for revoked ones.
	OperatorTokenByHash(ctx context.Context, hash []byte) (OperatorToken, error)
	OperatorTokens(ctx context.Context, name string) ([]OperatorToken, error)
	RevokeOperatorToken(ctx context.Context, id string, at time.Time, a AuditEntry) error
	SessionByHash(ctx context.Context, hash []byte) (Session, Operator, error)
	TouchSession(ctx context.Context, hash []byte, at time.Time) error
	DeleteSession(ctx context.Context, hash []byte, a *AuditEntry) error
	DeleteExpiredSessions(ctx context.Context, idleBefore, createdBefore time.Time) (int, error)

	// Compliance: the inputs of the evaluation, its verdicts and history.
	ComplianceInputs(ctx context.Context, ids []string) ([]ComplianceInput, error)
	LatestPosture(ctx context.Context, terminalID string) ([]byte, time.Time, error)
	SaveCompliance(ctx context.Context, us []ComplianceUpdate) error
	TerminalCompliance(ctx context.Context, terminalID string) (Compliance, error)
	CountCompliance(ctx context.Context) (ComplianceCounts, error)
	SaveComplianceDay(ctx context.Context, d ComplianceDay) error
	ComplianceDays(ctx context.Context, first, last string) ([]ComplianceDay, error)
	ComplianceIntervals(ctx context.Context, from, to time.Time) ([]ComplianceInterval, error)

	// Console queries.
	TerminalPage(ctx context.Context, f TerminalFilter) ([]TerminalSummary, int, error)
	TerminalHostnames(ctx context.Context, ids []string) (map[string]string, error)
	FilterEvents(ctx context.Context, f EventFilter) ([]Event, error)
	ExemptionsIssued(ctx context.Context, from, to time.Time) ([]Exemption, error)

	// AppendAudit appends to the audit log, filling ID, PrevHash and Hash.
	// It is for what changes nothing else (a sign-in refused, an export):
	// a change appends its entry in its own transaction.
	AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error)
	AuditLog(ctx context.Context, limit int) ([]AuditEntry, error)
	FilterAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
	VerifyAudit(ctx context.Context, upTo time.Time) (AuditVerification, error)

	// Ping reports whether the store can be read, for health checks.
	Ping(ctx context.Context) error
	Close() error
}
