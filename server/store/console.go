package store

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Sort keys of TerminalFilter.
const (
	SortHostname     = "hostname"
	SortState        = "state"
	SortLastSeen     = "last_seen"
	SortAgentVersion = "agent_version"
	SortEnrolled     = "enrolled"
)

// ValidSort reports whether s is a TerminalFilter sort key ("" included).
func ValidSort(s string) bool {
	switch s {
	case "", SortHostname, SortState, SortLastSeen, SortAgentVersion, SortEnrolled:
		return true
	}
	return false
}

// TerminalFilter selects and orders a page of terminals.
type TerminalFilter struct {
	// State is a compliance state (ComplianceRevoked for revoked
	// terminals); "" for all.
	State string
	// FailingCheck keeps terminals failing that check; "" for all.
	FailingCheck string
	// Search keeps terminals whose host name, ID, an address or a device
	// serial contains it, case-insensitively.
	Search string
	Sort   string
	Desc   bool
	// Limit <= 0 means no limit; Offset applies either way.
	Limit, Offset int
}

// TerminalSummary is a terminal as lists show it.
type TerminalSummary struct {
	ID           string
	Hostname     string
	State        string // StateActive or StateRevoked
	EnrolledAt   time.Time
	LastSeenAt   time.Time
	RevokedAt    time.Time
	CertSerial   string
	CertNotAfter time.Time
	// Compliance is nil until the terminal is evaluated.
	Compliance *Compliance
}

// likePattern is a LIKE pattern matching s anywhere, with LIKE's wildcards
// in s escaped ('\' is the escape character).
func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// terminalWhere builds the WHERE clause of f, appending its arguments.
func terminalWhere(f TerminalFilter, args *[]any) (string, error) {
	var conds []string
	arg := func(v any) string {
		*args = append(*args, v)
		return fmt.Sprintf("$%d", len(*args))
	}
	switch {
	case f.State == ComplianceRevoked:
		conds = append(conds, "t.state = 'revoked'")
	case f.State != "":
		if !ValidComplianceState(f.State) {
			return "", fmt.Errorf("unknown state %q", f.State)
		}
		conds = append(conds, "t.state = 'active' AND c.state = "+arg(f.State))
	}
	if f.FailingCheck != "" {
		if !ValidCheck(f.FailingCheck) {
			return "", fmt.Errorf("unknown check %q", f.FailingCheck)
		}
		conds = append(conds, "t.state = 'active' AND c."+checkColumn(f.FailingCheck)+" = 'fail'")
	}
	if f.Search != "" {
		// The evaluated terminals' search column holds host name, ID,
		// addresses and serials; it is read from its narrow index. Those
		// not evaluated yet are searched by host name and ID.
		p := arg(likePattern(f.Search))
		conds = append(conds, "(t.id IN (SELECT s.terminal_id FROM terminal_compliance s INDEXED BY terminal_compliance_search WHERE s.search LIKE "+p+
			` ESCAPE '\') OR c.terminal_id IS NULL AND (lower(t.hostname) LIKE `+p+` ESCAPE '\' OR t.id LIKE `+p+` ESCAPE '\'))`)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return "WHERE " + strings.Join(conds, " AND "), nil
}

// TerminalPage returns one page of the terminals f selects, and how many
// it selects in all.
func (s *DB) TerminalPage(ctx context.Context, f TerminalFilter) ([]TerminalSummary, int, error) {
	ts, n, err := s.terminalPage(ctx, f)
	if err != nil {
		return nil, 0, fmt.Errorf("store: terminal page: %w", err)
	}
	return ts, n, nil
}

func (s *DB) terminalPage(ctx context.Context, f TerminalFilter) ([]TerminalSummary, int, error) {
	if !ValidSort(f.Sort) {
		return nil, 0, fmt.Errorf("unknown sort key %q", f.Sort)
	}
	var args []any
	where, err := terminalWhere(f, &args)
	if err != nil {
		return nil, 0, err
	}
	const from = ` FROM terminals t LEFT JOIN terminal_compliance c ON c.terminal_id = t.id `
	var total int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*)`+from+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	dir := "ASC"
	if f.Desc {
		dir = "DESC"
	}
	var order string
	switch f.Sort {
	case "", SortHostname:
		order = "t.hostname " + dir + ", t.id " + dir
	case SortState:
		order = `CASE WHEN t.state = 'revoked' THEN 4 WHEN c.state = 'non-compliant' THEN 0 WHEN c.state = 'stale' THEN 1
	WHEN c.state IS NULL THEN 2 ELSE 3 END ` + dir + `, t.hostname, t.id`
	case SortLastSeen:
		order = "COALESCE(t.last_seen_at, 0) " + dir + ", t.hostname, t.id"
	case SortAgentVersion:
		order = "COALESCE(c.agent_version, '') " + dir + ", t.hostname, t.id"
	case SortEnrolled:
		order = "t.enrolled_at " + dir + ", t.id " + dir
	}
	const columns = `SELECT t.id, t.hostname, t.state, t.enrolled_at, t.last_seen_at, t.revoked_at,
	(SELECT c2.serial FROM certificates c2 WHERE c2.terminal_id = t.id ORDER BY c2.not_after DESC, c2.serial DESC LIMIT 1),
	(SELECT MAX(c2.not_after) FROM certificates c2 WHERE c2.terminal_id = t.id), ` + complianceColumns
	if f.Limit <= 0 && f.Offset <= 0 {
		// Everything (an export): one pass.
		out, err := s.scanSummaries(ctx, columns+from+where+" ORDER BY "+order, args...)
		return out, total, err
	}
	// A page: sort only the IDs, then read the page's rows. Sorting whole
	// rows made SQLite compute every row's certificate and compliance
	// columns first (150 ms for a page sorted by state of 10,000).
	limit := int64(f.Limit)
	if limit <= 0 {
		limit = math.MaxInt64 // no limit, but still the offset
	}
	args = append(args, limit, max(f.Offset, 0))
	rows, err := s.r.QueryContext(ctx, fmt.Sprintf(`SELECT t.id`+from+where+" ORDER BY "+order+" LIMIT $%d OFFSET $%d", len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, err
	}
	var ids []any
	var ph []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, 0, err
		}
		ids = append(ids, id)
		ph = append(ph, fmt.Sprintf("$%d", len(ids)))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if len(ids) == 0 {
		return nil, total, nil
	}
	got, err := s.scanSummaries(ctx, columns+from+"WHERE t.id IN ("+strings.Join(ph, ", ")+")", ids...)
	if err != nil {
		return nil, 0, err
	}
	byID := make(map[string]TerminalSummary, len(got))
	for _, t := range got {
		byID[t.ID] = t
	}
	out := make([]TerminalSummary, 0, len(ids))
	for _, id := range ids {
		if t, ok := byID[id.(string)]; ok {
			out = append(out, t)
		}
	}
	return out, total, nil
}

func (s *DB) scanSummaries(ctx context.Context, q string, args ...any) ([]TerminalSummary, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []TerminalSummary
	for rows.Next() {
		var (
			t      TerminalSummary
			d      complianceDest
			serial *string
		)
		dests := append([]any{&t.ID, &t.Hostname, &t.State, scanTime(&t.EnrolledAt), scanTime(&t.LastSeenAt),
			scanTime(&t.RevokedAt), &serial, scanTime(&t.CertNotAfter)}, d.dests()...)
		if err := rows.Scan(dests...); err != nil {
			return nil, err
		}
		if serial != nil {
			t.CertSerial = *serial
		}
		if t.Compliance, err = d.value(); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// EventFilter selects events.
type EventFilter struct {
	TerminalID string
	// Type keeps events of exactly that type; TypePrefix those whose type
	// starts with it ("media.", "media.exemption_").
	Type, TypePrefix string
	// Since and Until bound the received time: Since <= t < Until; zero
	// for no bound.
	Since, Until time.Time
	// Before, when set, keeps the events listed after it (older ones):
	// the next page.
	Before *EventCursor
	// Limit <= 0 means 100.
	Limit int
}

// FilterEvents lists the events f selects, newest first, as Events does.
func (s *DB) FilterEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	evs, err := s.filterEvents(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("store: filter events: %w", err)
	}
	return evs, nil
}

func (s *DB) filterEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	if f.Limit <= 0 {
		f.Limit = defaultLimit
	}
	for what, t := range map[string]time.Time{"since": f.Since, "until": f.Until} {
		if err := storableTime(what, t); err != nil {
			return nil, err
		}
	}
	args := []any{f.Limit}
	var conds []string
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.TerminalID != "" {
		conds = append(conds, "terminal_id = "+arg(f.TerminalID))
	}
	if f.Type != "" {
		conds = append(conds, "type = "+arg(f.Type))
	}
	if f.TypePrefix != "" {
		// Types are printable ASCII (dotted lowercase): everything that
		// starts with the prefix sorts below the prefix and DEL.
		conds = append(conds, "type >= "+arg(f.TypePrefix)+" AND type < "+arg(f.TypePrefix+"\x7f"))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "received_at >= "+arg(dbTime(f.Since)))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "received_at < "+arg(dbTime(f.Until)))
	}
	agent, server := conds, conds
	if b := f.Before; b != nil {
		if err := storableTime("before", b.ReceivedAt); err != nil {
			return nil, err
		}
		// After the cursor: received earlier, or at the same time and
		// further down the list (agent events after server ones, then
		// by descending seq or ID).
		at, key := arg(dbTime(b.ReceivedAt)), arg(b.Key)
		switch b.Source {
		case "server":
			agent = append(slices.Clip(agent), "received_at <= "+at)
			server = append(slices.Clip(server), "(received_at < "+at+" OR received_at = "+at+" AND id < "+key+")")
		case "agent":
			agent = append(slices.Clip(agent), "(received_at < "+at+" OR received_at = "+at+" AND seq < "+key+")")
			server = append(slices.Clip(server), "received_at < "+at)
		default:
			return nil, fmt.Errorf("cursor source %q is not agent or server", b.Source)
		}
	}
	where := func(conds []string) string {
		if len(conds) == 0 {
			return ""
		}
		return "WHERE " + strings.Join(conds, " AND ")
	}
	rows, err := s.r.QueryContext(ctx, eventsQuery(where(agent), where(server)), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var (
			e             Event
			seq, sev, key int64
		)
		if err := rows.Scan(&e.TerminalID, &seq, scanTime(&e.Time), scanTime(&e.ReceivedAt),
			&e.Type, &sev, &e.Message, &e.Data, &e.Source, &key); err != nil {
			return nil, err
		}
		e.Seq, e.Severity = uint64(seq), int32(sev)
		if e.Source == "server" {
			e.ID = key
		}
		evs = append(evs, e)
	}
	return evs, rows.Err()
}

// AuditFilter selects audit entries.
type AuditFilter struct {
	// Limit <= 0 means 100.
	Limit int
	// BeforeID > 0 keeps entries with a smaller ID.
	BeforeID int64
	// Since <= time < Until; zero for no bound.
	Since, Until time.Time
	// ActionPrefix keeps entries whose action starts with it.
	ActionPrefix string
	// Ascending lists oldest first (the report); the default is newest
	// first.
	Ascending bool
}

// FilterAudit lists the audit entries f selects.
func (s *DB) FilterAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	es, err := s.filterAudit(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("store: filter audit log: %w", err)
	}
	return es, nil
}

func (s *DB) filterAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	if f.Limit <= 0 {
		f.Limit = defaultLimit
	}
	var (
		args  []any
		conds []string
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.BeforeID > 0 {
		conds = append(conds, "id < "+arg(f.BeforeID))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "at >= "+arg(dbTime(f.Since)))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "at < "+arg(dbTime(f.Until)))
	}
	if f.ActionPrefix != "" {
		// substr counts characters, not bytes.
		conds = append(conds, "substr(action, 1, "+arg(utf8.RuneCountInString(f.ActionPrefix))+") = "+arg(f.ActionPrefix))
	}
	q := auditColumns
	if len(conds) > 0 {
		q += "WHERE " + strings.Join(conds, " AND ") + " "
	}
	if f.Ascending {
		q += "ORDER BY id ASC "
	} else {
		q += "ORDER BY id DESC "
	}
	q += "LIMIT " + arg(f.Limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var es []AuditEntry
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, rows.Err()
}

// AuditVerification is the result of walking the audit chain.
type AuditVerification struct {
	// Entries is the number of entries walked.
	Entries int64
	// Head is the newest entry walked; zero when the log is empty.
	Head AuditEntry
	// Broken is set when an entry does not follow from its predecessor;
	// the walk stops there.
	Broken *AuditChainError
}

// VerifyAudit walks the audit chain in ID order up to and including the
// newest entry at or before upTo (zero: the whole log) and reports where
// it breaks, if it does.
func (s *DB) VerifyAudit(ctx context.Context, upTo time.Time) (AuditVerification, error) {
	v, err := s.verifyAudit(ctx, upTo)
	if err != nil {
		return AuditVerification{}, fmt.Errorf("store: verify audit chain: %w", err)
	}
	return v, nil
}

func (s *DB) verifyAudit(ctx context.Context, upTo time.Time) (AuditVerification, error) {
	q := auditColumns + `ORDER BY id`
	var args []any
	if !upTo.IsZero() {
		// Through the last entry at or before upTo: entries are appended
		// in time order, but a clock may have stepped back in between.
		q = auditColumns + `WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM audit_log WHERE at <= $1) ORDER BY id`
		args = append(args, dbTime(upTo))
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return AuditVerification{}, err
	}
	defer rows.Close()
	var v AuditVerification
	c := newAuditChecker()
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return AuditVerification{}, err
		}
		if err := c.check(e); err != nil {
			v.Broken = err.(*AuditChainError)
			return v, nil
		}
		v.Entries++
		v.Head = e
	}
	return v, rows.Err()
}

// ExemptionsIssued lists the exemptions issued in [from, to), oldest first.
func (s *DB) ExemptionsIssued(ctx context.Context, from, to time.Time) ([]Exemption, error) {
	rows, err := s.r.QueryContext(ctx, exemptionColumns+`WHERE issued_at >= $1 AND issued_at < $2 ORDER BY issued_at, id`, dbTime(from), dbTime(to))
	if err != nil {
		return nil, fmt.Errorf("store: exemptions issued: %w", err)
	}
	defer rows.Close()
	var es []Exemption
	for rows.Next() {
		e, err := scanExemption(rows)
		if err != nil {
			return nil, fmt.Errorf("store: exemptions issued: %w", err)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: exemptions issued: %w", err)
	}
	return es, nil
}

// TerminalHostnames returns the host names of the terminals with the IDs
// (unknown IDs are left out).
func (s *DB) TerminalHostnames(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := make([]any, n)
		ph := make([]string, n)
		for i, id := range ids[:n] {
			args[i], ph[i] = id, fmt.Sprintf("$%d", i+1)
		}
		rows, err := s.r.QueryContext(ctx, `SELECT id, hostname FROM terminals WHERE id IN (`+strings.Join(ph, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("store: terminal host names: %w", err)
		}
		for rows.Next() {
			var id, host string
			if err := rows.Scan(&id, &host); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: terminal host names: %w", err)
			}
			out[id] = host
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("store: terminal host names: %w", err)
		}
		ids = ids[n:]
	}
	return out, nil
}
