// Package store keeps the collector's state: terminals, certificates,
// enrollment and operator tokens, posture, events and the audit log.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns; callers test them with errors.Is.
var (
	ErrNotFound       = errors.New("not found")
	ErrTokenUnknown   = errors.New("enrollment token not recognised")
	ErrTokenExpired   = errors.New("enrollment token expired")
	ErrTokenExhausted = errors.New("enrollment token has no uses left")
	ErrRevoked        = errors.New("revoked")
)

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
	OfflineKey   []byte
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

// OperatorToken is an API token of an operator; stored hashed.
type OperatorToken struct {
	ID        string
	Name      string
	Role      string
	Hash      []byte
	CreatedAt time.Time
	RevokedAt time.Time
}

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
	// Terminal returns the terminal with its latest posture.
	Terminal(ctx context.Context, id string) (Terminal, error)
	// Terminals lists all terminals (without posture bytes or offline keys),
	// ordered by hostname.
	Terminals(ctx context.Context) ([]Terminal, error)
	// RevokeTerminal marks the terminal and all its certificates revoked.
	RevokeTerminal(ctx context.Context, id, reason string, now time.Time) error
	// SaveReport stores a report: latest posture, history (when the
	// fingerprint changed), last-seen time and events, each (terminal, seq)
	// once.
	SaveReport(ctx context.Context, r Report) (ReportResult, error)
	// Events lists events, newest first; terminalID "" means all.
	Events(ctx context.Context, terminalID string, limit int) ([]Event, error)

	CreateEnrollmentToken(ctx context.Context, t EnrollmentToken) error
	EnrollmentTokens(ctx context.Context) ([]EnrollmentToken, error)

	CreateOperatorToken(ctx context.Context, t OperatorToken) error
	// OperatorTokenByHash returns ErrNotFound for unknown tokens and
	// ErrRevoked for revoked ones.
	OperatorTokenByHash(ctx context.Context, hash []byte) (OperatorToken, error)

	// AppendAudit appends to the audit log, filling ID, PrevHash and Hash.
	AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error)
	AuditLog(ctx context.Context, limit int) ([]AuditEntry, error)

	// Ping reports whether the store can be read, for health checks.
	Ping(ctx context.Context) error
	Close() error
}
