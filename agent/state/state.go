// Package state keeps the agent's enrollment and status files in its state
// directory.
package state

import (
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mnguard/mnguard/internal/pki"
)

// Files in the state directory.
const (
	KeyFile        = "agent.key"
	CertFile       = "agent.crt"
	CAFile         = "ca.crt"
	ExemptionFile  = "exemption.pub"
	OfflineKeyFile = "offline.key"
	EnrollmentFile = "enrollment.json"
	StatusFile     = "status.json"
	SpoolFile      = "spool.db"
	// NetworkPolicyFile holds the last network policy the collector
	// pushed and the agent accepted (protobuf), so that a restart without
	// the collector (after a reboot: no firewall rules left) enforces it
	// again at once.
	NetworkPolicyFile = "network-policy.pb"
	// NetworkUSBCutFile lists the USB network adapters enforcement cut
	// off the bus, so that a restarted agent authorizes them again when
	// enforcement is turned off.
	NetworkUSBCutFile = "network-usb-cut.json"
)

// ErrNotEnrolled means the state directory holds no enrollment.
var ErrNotEnrolled = errors.New("not enrolled: run 'mnguard-agent enroll --server HOST:PORT --token T --ca-pin sha256:HEX'")

// Enrollment is what enrollment.json records.
type Enrollment struct {
	TerminalID string    `json:"terminal_id"`
	Server     string    `json:"server"`
	CAPin      string    `json:"ca_pin"`
	EnrolledAt time.Time `json:"enrolled_at"`
}

// Identity is everything the agent needs to talk to its collector.
type Identity struct {
	Enrollment
	Key          crypto.Signer
	Cert         *x509.Certificate
	CA           *x509.Certificate
	ExemptionKey ed25519.PublicKey
	OfflineKey   []byte
}

// TLSCertificate returns the identity as a client certificate.
func (id *Identity) TLSCertificate() *tls.Certificate {
	return &tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
}

// Dir is a state directory.
type Dir string

func (d Dir) path(name string) string { return filepath.Join(string(d), name) }

// Path returns the path of a file in the directory.
func (d Dir) Path(name string) string { return d.path(name) }

// Enrolled reports whether an enrollment is recorded.
func (d Dir) Enrolled() bool {
	_, err := os.Stat(d.path(EnrollmentFile))
	return err == nil
}

// SaveIdentity writes a new identity; the key and secrets are 0600.
// enrollment.json is written last, so a crash midway leaves the directory
// "not enrolled" rather than half enrolled.
func (d Dir) SaveIdentity(id *Identity) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("state: create %s: %w", d, err)
	}
	keyPEM, err := pki.MarshalKeyPEM(id.Key)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	enr, err := json.MarshalIndent(id.Enrollment, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{KeyFile, keyPEM, 0o600},
		{CertFile, pki.CertPEM(id.Cert.Raw), 0o600},
		{CAFile, pki.CertPEM(id.CA.Raw), 0o644},
		{ExemptionFile, id.ExemptionKey, 0o644},
		{OfflineKeyFile, id.OfflineKey, 0o600},
		{EnrollmentFile, append(enr, '\n'), 0o600},
	}
	for _, f := range files {
		if err := pki.WriteFileAtomic(d.path(f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("state: write %s: %w", f.name, err)
		}
	}
	return nil
}

// SaveCertificate replaces the certificate after a renewal. Renewal keeps
// the key, so one atomic write leaves a matching pair at every moment.
func (d Dir) SaveCertificate(cert *x509.Certificate) error {
	if err := pki.WriteFileAtomic(d.path(CertFile), pki.CertPEM(cert.Raw), 0o600); err != nil {
		return fmt.Errorf("state: write certificate: %w", err)
	}
	return nil
}

// LoadIdentity reads the identity written at enrollment.
func (d Dir) LoadIdentity() (*Identity, error) {
	raw, err := os.ReadFile(d.path(EnrollmentFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	id := &Identity{}
	if err := json.Unmarshal(raw, &id.Enrollment); err != nil {
		return nil, fmt.Errorf("state: %s is damaged: %w", d.path(EnrollmentFile), err)
	}
	if err := pki.CheckPrivateFileMode(d.path(KeyFile)); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(d.path(name))
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		return b, nil
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	if id.Key, err = pki.ParseKeyPEM(keyPEM); err != nil {
		return nil, fmt.Errorf("state: %s: %w", KeyFile, err)
	}
	for _, c := range []struct {
		name string
		dst  **x509.Certificate
	}{{CertFile, &id.Cert}, {CAFile, &id.CA}} {
		b, err := read(c.name)
		if err != nil {
			return nil, err
		}
		if *c.dst, err = pki.ParseCertPEM(b); err != nil {
			return nil, fmt.Errorf("state: %s: %w", c.name, err)
		}
	}
	if err := pki.CheckKeyPair(id.Cert, id.Key); err != nil {
		return nil, fmt.Errorf("state: %s does not match %s: %w", CertFile, KeyFile, err)
	}
	if pki.Pin(id.CA.Raw) != id.CAPin {
		return nil, fmt.Errorf("state: %s does not match the pinned CA %s", CAFile, id.CAPin)
	}
	if id.ExemptionKey, err = read(ExemptionFile); err != nil {
		return nil, err
	}
	if len(id.ExemptionKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("state: %s: want a %d-byte Ed25519 key", ExemptionFile, ed25519.PublicKeySize)
	}
	if id.OfflineKey, err = read(OfflineKeyFile); err != nil {
		return nil, err
	}
	return id, nil
}

// Status is what the running agent says about itself in status.json, for
// 'mnguard-agent status'.
type Status struct {
	PID            int       `json:"pid"`
	StartedAt      time.Time `json:"started_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Connected      bool      `json:"connected"`
	ConnectedSince time.Time `json:"connected_since,omitzero"`
	LastReportAt   time.Time `json:"last_report_at,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
	PendingEvents  int       `json:"pending_events"`
	PolicyVersion  string    `json:"policy_version,omitempty"`
	ReportInterval string    `json:"report_interval,omitempty"`
	CertNotAfter   time.Time `json:"cert_not_after,omitzero"`
	Stopped        bool      `json:"stopped,omitempty"`
	// Collector is the collector address (HOST:PORT as configured, and
	// the IP address it resolved to) the agent is connected to or trying.
	Collector string `json:"collector,omitempty"`
	// Failovers counts the moves to another collector address since the
	// agent started.
	Failovers uint64 `json:"failovers,omitempty"`
	// Spool is the durable outbox's state; absent from older agents.
	Spool *SpoolStatus `json:"spool,omitempty"`
	// Network is the segment-isolation check; absent until its first
	// scan.
	Network *NetworkStatus `json:"network,omitempty"`
}

// SpoolStatus is the durable outbox: its fill, and every loss.
type SpoolStatus struct {
	Bytes     int64 `json:"bytes"`
	MaxBytes  int64 `json:"max_bytes"`
	MaxEvents int   `json:"max_events"`
	// PostureKept: a posture snapshot waits for the collector's
	// acknowledgement.
	PostureKept bool `json:"posture_kept,omitempty"`
	// Dropped, PostureDropped and Corrupt count, for the life of the spool
	// file, events dropped for room, posture snapshots dropped for room
	// and undecodable records removed.
	Dropped        uint64 `json:"dropped,omitempty"`
	PostureDropped uint64 `json:"posture_dropped,omitempty"`
	Corrupt        uint64 `json:"corrupt,omitempty"`
	// WriteFailed counts, since the agent started, events that could not
	// be written (disk full); WriteError is the last such error.
	WriteFailed uint64 `json:"write_failed,omitempty"`
	WriteError  string `json:"write_error,omitempty"`
	// SetAside is where a damaged spool file found at start was kept, and
	// SetAsideReason what was wrong with it.
	SetAside       string `json:"set_aside,omitempty"`
	SetAsideReason string `json:"set_aside_reason,omitempty"`
}

// NetworkStatus is what the segment-isolation check last found.
type NetworkStatus struct {
	// PolicyVersion is the network policy in force; empty while the
	// collector sent none.
	PolicyVersion string `json:"policy_version,omitempty"`
	// PolicyError says why the agent refused the last network policy the
	// collector pushed (it keeps the one before); empty when none was
	// refused since.
	PolicyError string `json:"policy_error,omitempty"`
	// EnforceRequested: the policy asks the agent to enforce it.
	EnforceRequested bool `json:"enforce_requested,omitempty"`
	// EnforceInPlace: the agent's own rules are installed and match.
	EnforceInPlace bool   `json:"enforce_in_place,omitempty"`
	Mechanism      string `json:"mechanism,omitempty"`
	// EnforceDetail is what enforcement last did, or why it is not in
	// place.
	EnforceDetail string    `json:"enforce_detail,omitempty"`
	Repairs       uint32    `json:"repairs,omitempty"`
	LastScan      time.Time `json:"last_scan,omitzero"`
	ScanErrors    []string  `json:"scan_errors,omitempty"`
	// Findings is how many things break isolation now; FirstFindings are
	// the first MaxStatusFindings of them.
	Findings      int              `json:"findings"`
	FirstFindings []NetworkFinding `json:"first_findings,omitempty"`
}

// MaxStatusFindings bounds NetworkStatus.FirstFindings: status.json stays
// small; the collector holds them all.
const MaxStatusFindings = 5

// NetworkFinding is one thing that breaks isolation.
type NetworkFinding struct {
	Kind      string    `json:"kind"`
	Detail    string    `json:"detail"`
	Process   string    `json:"process,omitempty"`
	PID       uint32    `json:"pid,omitempty"`
	User      string    `json:"user,omitempty"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
}

// WriteStatus replaces status.json.
func (d Dir) WriteStatus(s Status) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return pki.WriteFileAtomic(d.path(StatusFile), append(b, '\n'), 0o644)
}

// ReadStatus reads status.json; os.ErrNotExist when the agent never ran.
func (d Dir) ReadStatus() (Status, error) {
	var s Status
	b, err := os.ReadFile(d.path(StatusFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("state: %s is damaged: %w", d.path(StatusFile), err)
	}
	return s, nil
}
