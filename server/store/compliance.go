package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Compliance checks, in the order the console shows them.
const (
	CheckMedia       = "media"
	CheckMFA         = "mfa"
	CheckNetwork     = "network"
	CheckFresh       = "fresh"
	CheckVersion     = "version"
	CheckCertificate = "certificate"
	CheckExemptions  = "exemptions"
)

// Checks lists every compliance check.
var Checks = []string{CheckMedia, CheckMFA, CheckNetwork, CheckFresh, CheckVersion, CheckCertificate, CheckExemptions}

// ValidCheck reports whether name is a compliance check.
func ValidCheck(name string) bool {
	for _, c := range Checks {
		if c == name {
			return true
		}
	}
	return false
}

// Check statuses.
const (
	CheckPass    = "pass"
	CheckFail    = "fail"
	CheckUnknown = "unknown"
)

// Compliance states of a terminal.
const (
	Compliant    = "compliant"
	NonCompliant = "non-compliant"
	// Stale: the terminal has not reported for 3 report intervals; what
	// the collector knows of it is out of date.
	Stale = "stale"
	// ComplianceRevoked: the terminal is revoked and no longer evaluated.
	ComplianceRevoked = "revoked"
)

// ValidComplianceState reports whether s is a compliance state.
func ValidComplianceState(s string) bool {
	return s == Compliant || s == NonCompliant || s == Stale || s == ComplianceRevoked
}

// CheckResult is one check of one terminal.
type CheckResult struct {
	Name   string
	Status string // CheckPass, CheckFail or CheckUnknown
	// Detail says why it fails or is unknown: a message key of the
	// collector's catalogue (package i18n), rendered with Args; "" when
	// it passes.
	Detail string
	Args   []string
	// Since is when the check got this status.
	Since time.Time
}

// Compliance is the collector's verdict on one terminal.
type Compliance struct {
	TerminalID string
	State      string
	StateSince time.Time
	// Offline: not heard of for 7 days (state Stale).
	Offline bool
	// Checks holds one result per name of Checks, in that order.
	Checks []CheckResult
	// PostureAt is the received time of the posture evaluated.
	PostureAt time.Time
	// What the console lists without reading the posture.
	AgentVersion string
	Platform     string
	Addresses    string // space-separated IP addresses
	Search       string // lowercased host name, ID, addresses and device serials
	EvaluatedAt  time.Time
}

// Check returns the result of the named check (zero if absent).
func (c Compliance) Check(name string) CheckResult {
	for _, r := range c.Checks {
		if r.Name == name {
			return r
		}
	}
	return CheckResult{}
}

// Failing returns the names of the failing checks.
func (c Compliance) Failing() []string {
	var out []string
	for _, r := range c.Checks {
		if r.Status == CheckFail {
			out = append(out, r.Name)
		}
	}
	return out
}

// checkColumn is the terminal_compliance column of a check.
func checkColumn(name string) string { return "c_" + name }

type checkDetail struct {
	Detail string   `json:"d,omitempty"`
	Args   []string `json:"a,omitempty"`
	Since  int64    `json:"s,omitempty"`
}

func checkCompliance(c Compliance) error {
	if c.TerminalID == "" {
		return errors.New("compliance: terminal ID is empty")
	}
	if !ValidComplianceState(c.State) {
		return fmt.Errorf("compliance of %s: unknown state %q", c.TerminalID, c.State)
	}
	if len(c.Checks) != len(Checks) {
		return fmt.Errorf("compliance of %s: %d checks, want %d", c.TerminalID, len(c.Checks), len(Checks))
	}
	for i, r := range c.Checks {
		if r.Name != Checks[i] {
			return fmt.Errorf("compliance of %s: check %d is %q, want %q", c.TerminalID, i, r.Name, Checks[i])
		}
		if r.Status != CheckPass && r.Status != CheckFail && r.Status != CheckUnknown {
			return fmt.Errorf("compliance of %s: check %s: unknown status %q", c.TerminalID, r.Name, r.Status)
		}
		if err := storableTime("check since", r.Since); err != nil {
			return err
		}
	}
	for what, t := range map[string]time.Time{"state_since": c.StateSince, "posture_at": c.PostureAt, "evaluated_at": c.EvaluatedAt} {
		if err := storableTime(what, t); err != nil {
			return err
		}
	}
	if c.StateSince.IsZero() || c.EvaluatedAt.IsZero() {
		return fmt.Errorf("compliance of %s: state_since and evaluated_at are required", c.TerminalID)
	}
	return nil
}

const complianceColumns = `c.terminal_id, c.state, c.state_since, c.offline, c.c_media, c.c_mfa, c.c_network, c.c_fresh,
	c.c_version, c.c_certificate, c.c_exemptions, c.details, c.posture_at, c.agent_version, c.platform, c.addresses,
	c.search, c.evaluated_at`

// complianceDest scans complianceColumns of a row that may have none
// (a LEFT JOIN): ok reports whether it had.
type complianceDest struct {
	id                  sql.NullString
	state               sql.NullString
	since               time.Time
	offline             sql.NullInt64
	checks              [7]sql.NullString
	details             sql.NullString
	postureAt           time.Time
	version, plat, addr sql.NullString
	search              sql.NullString
	evaluated           time.Time
}

func (d *complianceDest) dests() []any {
	out := []any{&d.id, &d.state, scanTime(&d.since), &d.offline}
	for i := range d.checks {
		out = append(out, &d.checks[i])
	}
	return append(out, &d.details, scanTime(&d.postureAt), &d.version, &d.plat, &d.addr, &d.search, scanTime(&d.evaluated))
}

func (d *complianceDest) value() (*Compliance, error) {
	if !d.id.Valid {
		return nil, nil
	}
	c := &Compliance{
		TerminalID: d.id.String, State: d.state.String, StateSince: d.since, Offline: d.offline.Int64 == 1,
		PostureAt: d.postureAt, AgentVersion: d.version.String, Platform: d.plat.String, Addresses: d.addr.String,
		Search: d.search.String, EvaluatedAt: d.evaluated,
	}
	details := map[string]checkDetail{}
	if d.details.String != "" {
		if err := json.Unmarshal([]byte(d.details.String), &details); err != nil {
			return nil, fmt.Errorf("compliance of %s: details: %w", c.TerminalID, err)
		}
	}
	for i, name := range Checks {
		r := CheckResult{Name: name, Status: d.checks[i].String, Detail: details[name].Detail, Args: details[name].Args}
		if s := details[name].Since; s != 0 {
			r.Since = time.Unix(0, s).UTC()
		}
		c.Checks = append(c.Checks, r)
	}
	return c, nil
}

// ComplianceInput is what the evaluation of one terminal starts from.
type ComplianceInput struct {
	TerminalID        string
	Hostname          string
	State             string // StateActive or StateRevoked
	EnrolledAt        time.Time
	LastSeenAt        time.Time
	RevokedAt         time.Time
	CertNotAfter      time.Time
	PostureReceivedAt time.Time
	// Prev is the stored verdict; nil when the terminal was never
	// evaluated.
	Prev *Compliance
}

// complianceInputsChunk is how many terminals one query of
// ComplianceInputs names: far below the parameters a statement may have
// (SQLite 32,766, PostgreSQL 65,535; a fleet gone silent at once is due
// all at once), and a short hold of SQLite's writer.
const complianceInputsChunk = 500

const qComplianceInputs = `SELECT t.id, t.hostname, t.state, t.enrolled_at, t.last_seen_at, t.revoked_at,
	(SELECT MAX(c2.not_after) FROM certificates c2 WHERE c2.terminal_id = t.id), p.received_at, ` + complianceColumns + `
FROM terminals t
LEFT JOIN postures p ON p.terminal_id = t.id
LEFT JOIN terminal_compliance c ON c.terminal_id = t.id`

// ComplianceInputs returns the inputs of the terminals with the IDs, or of
// every terminal when ids is nil. It reads no posture.
//
// The terminals named are mostly those whose reports were just stored: on
// SQLite their pages are in the writer's cache, while a reader's cache is
// emptied by every commit of another connection and read back a pread at a
// time (9.6 s of CPU per 30 s at 1,667 reports/s, 1.7 s from the writer:
// about 35 µs a terminal), so the writer reads them. Every terminal (ids
// nil) is too long a read to hold reports back: the readers do that. On
// PostgreSQL both are the pool.
func (s *DB) ComplianceInputs(ctx context.Context, ids []string) ([]ComplianceInput, error) {
	if ids == nil {
		return complianceInputs(ctx, s.r, qComplianceInputs, nil, nil)
	}
	var out []ComplianceInput
	for part := range slices.Chunk(ids, complianceInputsChunk) {
		ph := make([]string, len(part))
		args := make([]any, len(part))
		for i, id := range part {
			ph[i] = fmt.Sprintf("$%d", i+1)
			args[i] = id
		}
		var err error
		out, err = complianceInputs(ctx, s.w, qComplianceInputs+` WHERE t.id IN (`+strings.Join(ph, ", ")+`)`, args, out)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// complianceInputs appends the inputs that query q selects to out.
func complianceInputs(ctx context.Context, db *sql.DB, q string, args []any, out []ComplianceInput) ([]ComplianceInput, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: compliance inputs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			in ComplianceInput
			d  complianceDest
		)
		dests := append([]any{&in.TerminalID, &in.Hostname, &in.State, scanTime(&in.EnrolledAt), scanTime(&in.LastSeenAt),
			scanTime(&in.RevokedAt), scanTime(&in.CertNotAfter), scanTime(&in.PostureReceivedAt)}, d.dests()...)
		if err := rows.Scan(dests...); err != nil {
			return nil, fmt.Errorf("store: compliance inputs: %w", err)
		}
		if in.Prev, err = d.value(); err != nil {
			return nil, fmt.Errorf("store: compliance inputs: %w", err)
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: compliance inputs: %w", err)
	}
	return out, nil
}

// LatestPosture returns the terminal's latest posture (marshalled
// protobuf) and when it arrived; ErrNotFound when it has none.
func (s *DB) LatestPosture(ctx context.Context, terminalID string) ([]byte, time.Time, error) {
	var (
		b  []byte
		at time.Time
	)
	err := s.r.QueryRowContext(ctx, `SELECT posture, received_at FROM postures WHERE terminal_id = $1`, terminalID).Scan(&b, scanTime(&at))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: posture of %s: %w", terminalID, err)
	}
	return b, at, nil
}

// ComplianceUpdate is a new verdict on one terminal and what changed.
type ComplianceUpdate struct {
	Compliance Compliance
	// Opened are the checks that started failing (at their Since);
	// Closed the names of those that stopped (at EvaluatedAt).
	Opened []CheckResult
	Closed []string
	// Event, when set, is recorded as a server event of the terminal.
	Event *ServerEvent
}

// SaveCompliance stores the verdicts, their failure intervals and events,
// all in one transaction.
func (s *DB) SaveCompliance(ctx context.Context, us []ComplianceUpdate) error {
	if len(us) == 0 {
		return nil
	}
	for _, u := range us {
		if err := checkCompliance(u.Compliance); err != nil {
			return fmt.Errorf("store: save compliance: %w", err)
		}
	}
	err := s.write(ctx, func(tx wtx) error {
		for _, u := range us {
			if err := saveCompliance(ctx, tx, u); err != nil {
				return fmt.Errorf("terminal %s: %w", u.Compliance.TerminalID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: save compliance: %w", err)
	}
	return nil
}

func saveCompliance(ctx context.Context, tx wtx, u ComplianceUpdate) error {
	c := u.Compliance
	details := make(map[string]checkDetail, len(c.Checks))
	args := []any{c.TerminalID, c.State, dbTime(c.StateSince), boolArg(c.Offline)}
	for _, r := range c.Checks {
		args = append(args, r.Status)
		d := checkDetail{Detail: r.Detail, Args: r.Args}
		if !r.Since.IsZero() {
			d.Since = r.Since.UnixNano()
		}
		details[r.Name] = d
	}
	b, err := json.Marshal(details)
	if err != nil {
		return err
	}
	args = append(args, string(b), dbTime(c.PostureAt), c.AgentVersion, c.Platform, c.Addresses, c.Search, dbTime(c.EvaluatedAt))
	if _, err := tx.exec(ctx, `INSERT INTO terminal_compliance (terminal_id, state, state_since, offline,
	c_media, c_mfa, c_network, c_fresh, c_version, c_certificate, c_exemptions, details, posture_at,
	agent_version, platform, addresses, search, evaluated_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
	ON CONFLICT (terminal_id) DO UPDATE SET state = excluded.state, state_since = excluded.state_since,
	offline = excluded.offline, c_media = excluded.c_media, c_mfa = excluded.c_mfa, c_network = excluded.c_network,
	c_fresh = excluded.c_fresh, c_version = excluded.c_version, c_certificate = excluded.c_certificate,
	c_exemptions = excluded.c_exemptions, details = excluded.details, posture_at = excluded.posture_at,
	agent_version = excluded.agent_version, platform = excluded.platform, addresses = excluded.addresses,
	search = excluded.search, evaluated_at = excluded.evaluated_at`, args...); err != nil {
		return fmt.Errorf("upsert compliance: %w", err)
	}
	for _, name := range u.Closed {
		// An interval never ends before it started (the schema refuses
		// it), also when the clock stepped back since it was opened.
		if _, err := tx.exec(ctx, `UPDATE compliance_intervals
	SET ended_at = CASE WHEN started_at > $3 THEN started_at ELSE $3 END
	WHERE terminal_id = $1 AND check_name = $2 AND ended_at IS NULL`, c.TerminalID, name, dbTime(c.EvaluatedAt)); err != nil {
			return fmt.Errorf("close interval %s: %w", name, err)
		}
	}
	for _, r := range u.Opened {
		since := r.Since
		if since.IsZero() {
			since = c.EvaluatedAt
		}
		args, err := json.Marshal(nonNil(r.Args))
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `INSERT INTO compliance_intervals (terminal_id, check_name, started_at, ended_at, detail, args)
	VALUES ($1, $2, $3, NULL, $4, $5)`, c.TerminalID, r.Name, dbTime(since), r.Detail, string(args)); err != nil {
			return fmt.Errorf("open interval %s: %w", r.Name, err)
		}
	}
	if e := u.Event; e != nil {
		if e.Time.IsZero() {
			e.Time = c.EvaluatedAt
		}
		if _, err := tx.exec(ctx, `INSERT INTO server_events (terminal_id, occurred_at, received_at, type, severity, message, data)
	VALUES ($1, $2, $2, $3, $4, $5, $6)`, c.TerminalID, dbTime(e.Time), e.Type, int64(e.Severity), e.Message, blobArg(e.Data)); err != nil {
			return fmt.Errorf("compliance event: %w", err)
		}
	}
	return nil
}

// TerminalCompliance returns the stored verdict on the terminal;
// ErrNotFound when it was never evaluated.
func (s *DB) TerminalCompliance(ctx context.Context, terminalID string) (Compliance, error) {
	var d complianceDest
	err := s.r.QueryRowContext(ctx, `SELECT `+complianceColumns+` FROM terminal_compliance c WHERE c.terminal_id = $1`, terminalID).Scan(d.dests()...)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	var c *Compliance
	if err == nil {
		c, err = d.value()
	}
	if err != nil {
		return Compliance{}, fmt.Errorf("store: compliance of %s: %w", terminalID, err)
	}
	return *c, nil
}

// ComplianceCounts is how many terminals are in each state and fail each
// check.
type ComplianceCounts struct {
	States  map[string]int
	Failing map[string]int
	// Unevaluated counts active terminals without a verdict yet.
	Unevaluated int
}

// CountCompliance counts the stored verdicts.
func (s *DB) CountCompliance(ctx context.Context) (ComplianceCounts, error) {
	out := ComplianceCounts{States: map[string]int{}, Failing: map[string]int{}}
	q := `SELECT state, COUNT(*)`
	for _, name := range Checks {
		q += `, SUM(CASE WHEN ` + checkColumn(name) + ` = 'fail' THEN 1 ELSE 0 END)`
	}
	q += ` FROM terminal_compliance GROUP BY state`
	rows, err := s.r.QueryContext(ctx, q)
	if err != nil {
		return out, fmt.Errorf("store: count compliance: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			state string
			n     int
			fails = make([]int, len(Checks))
		)
		dests := []any{&state, &n}
		for i := range fails {
			dests = append(dests, &fails[i])
		}
		if err := rows.Scan(dests...); err != nil {
			return out, fmt.Errorf("store: count compliance: %w", err)
		}
		out.States[state] += n
		if state == ComplianceRevoked {
			continue
		}
		for i, name := range Checks {
			out.Failing[name] += fails[i]
		}
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("store: count compliance: %w", err)
	}
	// Every evaluated active terminal is compliant, non-compliant or
	// stale (index-only counts; the anti-join cost a scan of terminals).
	var active int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM terminals WHERE state = 'active'`).Scan(&active); err != nil {
		return out, fmt.Errorf("store: count compliance: %w", err)
	}
	out.Unevaluated = max(0, active-out.States[Compliant]-out.States[NonCompliant]-out.States[Stale])
	return out, nil
}

// ComplianceDay is the count of terminals per state and failing check as
// last evaluated on one day.
type ComplianceDay struct {
	Day          string // YYYY-MM-DD in the collector's time zone
	Compliant    int
	NonCompliant int
	Stale        int
	Failing      map[string]int
	UpdatedAt    time.Time
}

// SaveComplianceDay stores the counts of a day, replacing earlier ones.
func (s *DB) SaveComplianceDay(ctx context.Context, d ComplianceDay) error {
	if _, err := time.Parse(time.DateOnly, d.Day); err != nil {
		return fmt.Errorf("store: save compliance day %q: not YYYY-MM-DD", d.Day)
	}
	b, err := json.Marshal(d.Failing)
	if err != nil {
		return fmt.Errorf("store: save compliance day %s: %w", d.Day, err)
	}
	if d.UpdatedAt.IsZero() {
		d.UpdatedAt = time.Now()
	}
	err = s.write(ctx, func(tx wtx) error {
		_, err := tx.exec(ctx, `INSERT INTO compliance_daily (day, compliant, non_compliant, stale, failing, updated_at)
	VALUES ($1, $2, $3, $4, $5, $6)
	ON CONFLICT (day) DO UPDATE SET compliant = excluded.compliant, non_compliant = excluded.non_compliant,
	stale = excluded.stale, failing = excluded.failing, updated_at = excluded.updated_at`,
			d.Day, d.Compliant, d.NonCompliant, d.Stale, string(b), dbTime(d.UpdatedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: save compliance day %s: %w", d.Day, err)
	}
	return nil
}

// ComplianceDays returns the stored days from first to last (inclusive,
// YYYY-MM-DD), oldest first; days without a record are left out.
func (s *DB) ComplianceDays(ctx context.Context, first, last string) ([]ComplianceDay, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT day, compliant, non_compliant, stale, failing, updated_at
	FROM compliance_daily WHERE day >= $1 AND day <= $2 ORDER BY day`, first, last)
	if err != nil {
		return nil, fmt.Errorf("store: compliance days: %w", err)
	}
	defer rows.Close()
	var out []ComplianceDay
	for rows.Next() {
		var (
			d       ComplianceDay
			failing string
		)
		if err := rows.Scan(&d.Day, &d.Compliant, &d.NonCompliant, &d.Stale, &failing, scanTime(&d.UpdatedAt)); err != nil {
			return nil, fmt.Errorf("store: compliance days: %w", err)
		}
		if err := json.Unmarshal([]byte(failing), &d.Failing); err != nil {
			return nil, fmt.Errorf("store: compliance day %s: %w", d.Day, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: compliance days: %w", err)
	}
	return out, nil
}

// ComplianceInterval is a stretch of time a terminal failed a check; End
// is zero while it still fails.
type ComplianceInterval struct {
	TerminalID string
	Check      string
	Start, End time.Time
	// Detail and Args say why, as the check said when it started to
	// fail (see CheckResult).
	Detail string
	Args   []string
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

// ComplianceIntervals returns the failure intervals that overlap [from,
// to), ordered by check, terminal and start.
func (s *DB) ComplianceIntervals(ctx context.Context, from, to time.Time) ([]ComplianceInterval, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT terminal_id, check_name, started_at, ended_at, detail, args
	FROM compliance_intervals WHERE started_at < $2 AND (ended_at IS NULL OR ended_at > $1)
	ORDER BY check_name, terminal_id, started_at`, dbTime(from), dbTime(to))
	if err != nil {
		return nil, fmt.Errorf("store: compliance intervals: %w", err)
	}
	defer rows.Close()
	var out []ComplianceInterval
	for rows.Next() {
		var (
			iv   ComplianceInterval
			args string
		)
		if err := rows.Scan(&iv.TerminalID, &iv.Check, scanTime(&iv.Start), scanTime(&iv.End), &iv.Detail, &args); err != nil {
			return nil, fmt.Errorf("store: compliance intervals: %w", err)
		}
		if err := json.Unmarshal([]byte(args), &iv.Args); err != nil {
			return nil, fmt.Errorf("store: compliance interval of %s: args: %w", iv.TerminalID, err)
		}
		out = append(out, iv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: compliance intervals: %w", err)
	}
	return out, nil
}
