package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Keyset pages. A list that may grow past what one answer can carry is read
// a page at a time, each page starting after the sort key of the last row
// of the one before (not at an OFFSET): rows added or removed meanwhile
// shift no page, so a walk over every page lists each row that stayed
// exactly once, in order, and a page costs the same wherever it starts.

// PageKey is the sort key of the last row of a page: where the next page
// starts. Ints and Strings hold its parts in the order each Page method
// states; times are Unix nanoseconds, as stored.
type PageKey struct {
	Ints    []int64
	Strings []string
}

// ErrPageKey is returned for a PageKey that does not have the parts of
// its list.
var ErrPageKey = errors.New("page key does not fit this list")

// check reports ErrPageKey unless k has ints integers and strs strings.
func (k *PageKey) check(ints, strs int) error {
	if len(k.Ints) != ints || len(k.Strings) != strs {
		return fmt.Errorf("%w: want %d integers and %d strings, got %d and %d", ErrPageKey, ints, strs, len(k.Ints), len(k.Strings))
	}
	return nil
}

// keyColumn is one part of a list's sort key: an SQL expression, whether
// it is an integer (else text), and its direction.
type keyColumn struct {
	expr string
	int  bool
	desc bool
}

// keysetAfter is the condition "the row sorts after k" for the sort key
// cols, appending its arguments with arg. Where every part runs the same
// way it is one row-value comparison, which an index on those columns
// answers; otherwise the lexicographic chain a > x OR a = x AND (...).
func keysetAfter(cols []keyColumn, k PageKey, arg func(any) string) string {
	vals := make([]string, len(cols))
	ii, si := 0, 0
	for i, c := range cols {
		if c.int {
			vals[i] = arg(k.Ints[ii])
			ii++
		} else {
			vals[i] = arg(k.Strings[si])
			si++
		}
	}
	op := func(c keyColumn) string {
		if c.desc {
			return " < "
		}
		return " > "
	}
	same := true
	for _, c := range cols[1:] {
		same = same && c.desc == cols[0].desc
	}
	if same {
		exprs := make([]string, len(cols))
		for i, c := range cols {
			exprs[i] = c.expr
		}
		if len(cols) == 1 {
			return cols[0].expr + op(cols[0]) + vals[0]
		}
		return "(" + strings.Join(exprs, ", ") + ")" + op(cols[0]) + "(" + strings.Join(vals, ", ") + ")"
	}
	cond := cols[len(cols)-1].expr + op(cols[len(cols)-1]) + vals[len(cols)-1]
	for i := len(cols) - 2; i >= 0; i-- {
		cond = "(" + cols[i].expr + op(cols[i]) + vals[i] + " OR " + cols[i].expr + " = " + vals[i] + " AND " + cond + ")"
	}
	return cond
}

// keyCounts is how many integer and text parts cols has.
func keyCounts(cols []keyColumn) (ints, strs int) {
	for _, c := range cols {
		if c.int {
			ints++
		} else {
			strs++
		}
	}
	return ints, strs
}

// orderBy is the ORDER BY list of cols.
func orderBy(cols []keyColumn) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = c.expr
		if c.desc {
			parts[i] += " DESC"
		}
	}
	return strings.Join(parts, ", ")
}

// terminalKey is the sort key of a terminal list: the one TerminalPage
// orders by, made total by the ID.
func terminalKey(sort string, desc bool) ([]keyColumn, error) {
	switch sort {
	case "", SortHostname:
		return []keyColumn{{"t.hostname", false, desc}, {"t.id", false, desc}}, nil
	case SortState:
		return []keyColumn{{terminalStateRank, true, desc}, {"t.hostname", false, false}, {"t.id", false, false}}, nil
	case SortLastSeen:
		return []keyColumn{{"COALESCE(t.last_seen_at, 0)", true, desc}, {"t.hostname", false, false}, {"t.id", false, false}}, nil
	case SortAgentVersion:
		return []keyColumn{{"COALESCE(c.agent_version, '')", false, desc}, {"t.hostname", false, false}, {"t.id", false, false}}, nil
	case SortEnrolled:
		return []keyColumn{{"t.enrolled_at", true, desc}, {"t.id", false, desc}}, nil
	}
	return nil, fmt.Errorf("unknown sort key %q", sort)
}

// terminalStateRank orders terminals by how much they need attention.
const terminalStateRank = `(CASE WHEN t.state = 'revoked' THEN 4 WHEN c.state = 'non-compliant' THEN 0 WHEN c.state = 'stale' THEN 1
	WHEN c.state IS NULL THEN 2 ELSE 3 END)`

// terminalSummaryColumns are the columns scanSummaries reads.
const terminalSummaryColumns = `SELECT t.id, t.hostname, t.state, t.enrolled_at, t.last_seen_at, t.revoked_at,
	(SELECT c2.serial FROM certificates c2 WHERE c2.terminal_id = t.id ORDER BY c2.not_after DESC, c2.serial DESC LIMIT 1),
	(SELECT MAX(c2.not_after) FROM certificates c2 WHERE c2.terminal_id = t.id), ` + complianceColumns

// TerminalKeyPage returns up to limit terminals of those f selects (its
// Limit ignored), in f's order, starting after the terminal whose sort key
// is after (nil: from the first, skipping f.Offset), with the key of the
// last one returned when more follow (nil on the last page) and how many
// f selects in all. The key holds, by sort: hostname: [] and [hostname,
// id]; state: [rank] and [hostname, id]; last_seen: [nanoseconds, 0 for
// never] and [hostname, id]; agent_version: [] and [version, hostname,
// id]; enrolled: [nanoseconds] and [id].
func (s *DB) TerminalKeyPage(ctx context.Context, f TerminalFilter, after *PageKey, limit int) ([]TerminalSummary, *PageKey, int, error) {
	ts, next, n, err := s.terminalKeyPage(ctx, f, after, limit)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("store: terminal page: %w", err)
	}
	return ts, next, n, nil
}

func (s *DB) terminalKeyPage(ctx context.Context, f TerminalFilter, after *PageKey, limit int) ([]TerminalSummary, *PageKey, int, error) {
	if limit <= 0 {
		return nil, nil, 0, fmt.Errorf("page size %d: must be positive", limit)
	}
	cols, err := terminalKey(f.Sort, f.Desc)
	if err != nil {
		return nil, nil, 0, err
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	where, err := terminalWhere(f, &args)
	if err != nil {
		return nil, nil, 0, err
	}
	const from = ` FROM terminals t LEFT JOIN terminal_compliance c ON c.terminal_id = t.id `
	var total int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*)`+from+where, args...).Scan(&total); err != nil {
		return nil, nil, 0, err
	}
	if after != nil {
		if err := after.check(keyCounts(cols)); err != nil {
			return nil, nil, 0, err
		}
		cond := keysetAfter(cols, *after, arg)
		if where == "" {
			where = "WHERE " + cond
		} else {
			where += " AND " + cond
		}
	}
	exprs := make([]string, len(cols))
	for i, c := range cols {
		exprs[i] = c.expr
	}
	page := " ORDER BY " + orderBy(cols) + " LIMIT " + arg(limit+1)
	if after == nil && f.Offset > 0 {
		page += " OFFSET " + arg(f.Offset)
	}
	if f.Sort == "" || f.Sort == SortHostname {
		// The index on (hostname, id) is the order: the page's rows are
		// read in one pass, each computed once (a second query for them
		// took twice as long).
		out, err := s.scanSummaries(ctx, terminalSummaryColumns+from+where+page, args...)
		if err != nil {
			return nil, nil, 0, err
		}
		var next *PageKey
		if len(out) > limit {
			out = out[:limit]
			last := out[limit-1]
			next = &PageKey{Strings: []string{last.Hostname, last.ID}}
		}
		return out, next, total, nil
	}
	// Other orders have no index: sort only the IDs and keys, then read
	// the page's rows (see terminalPage).
	rows, err := s.r.QueryContext(ctx, `SELECT t.id, `+strings.Join(exprs, ", ")+from+where+page, args...)
	if err != nil {
		return nil, nil, 0, err
	}
	var (
		ids  []any
		ph   []string
		keys []PageKey
	)
	for rows.Next() {
		var id string
		k := PageKey{}
		dests := []any{&id}
		ints, strs := keyCounts(cols)
		iv, sv := make([]int64, ints), make([]string, strs)
		ii, si := 0, 0
		for _, c := range cols {
			if c.int {
				dests = append(dests, &iv[ii])
				ii++
			} else {
				dests = append(dests, &sv[si])
				si++
			}
		}
		if err := rows.Scan(dests...); err != nil {
			rows.Close()
			return nil, nil, 0, err
		}
		k.Ints, k.Strings = iv, sv
		ids = append(ids, id)
		keys = append(keys, k)
		ph = append(ph, fmt.Sprintf("$%d", len(ids)))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, 0, err
	}
	var next *PageKey
	if len(ids) > limit {
		ids, ph = ids[:limit], ph[:limit]
		next = &keys[limit-1]
	}
	if len(ids) == 0 {
		return nil, nil, total, nil
	}
	got, err := s.scanSummaries(ctx, terminalSummaryColumns+from+"WHERE t.id IN ("+strings.Join(ph, ", ")+")", ids...)
	if err != nil {
		return nil, nil, 0, err
	}
	byID := make(map[string]TerminalSummary, len(got))
	for _, t := range got {
		byID[t.ID] = t
	}
	out := make([]TerminalSummary, 0, len(ids))
	for _, id := range ids {
		// A terminal deleted between the two reads is left out.
		if t, ok := byID[id.(string)]; ok {
			out = append(out, t)
		}
	}
	return out, next, total, nil
}

// pageQuery reads up to limit rows of base (a SELECT ending before its
// WHERE, with conds to AND), ordered by cols, after the key after; scan
// reads one row and returns its key. It returns the key of the last row
// when more follow.
func pageQuery[T any](ctx context.Context, s *DB, base string, conds []string, args []any, cols []keyColumn,
	after *PageKey, limit int, scan func(rowScanner) (T, PageKey, error)) ([]T, *PageKey, error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("page size %d: must be positive", limit)
	}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if after != nil {
		if err := after.check(keyCounts(cols)); err != nil {
			return nil, nil, err
		}
		conds = append(conds, keysetAfter(cols, *after, arg))
	}
	q := base
	if len(conds) > 0 {
		q += "WHERE " + strings.Join(conds, " AND ") + " "
	}
	q += "ORDER BY " + orderBy(cols) + " LIMIT " + arg(limit+1)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		out  []T
		last PageKey
		more bool
	)
	for rows.Next() {
		if len(out) == limit {
			more = true
			break
		}
		v, k, err := scan(rows)
		if err != nil {
			return nil, nil, err
		}
		out, last = append(out, v), k
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if more {
		return out, &last, nil
	}
	return out, nil, nil
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(...any) error }

// ExemptionPage lists up to limit exemptions, newest first (by issue
// time, then ID, descending), of one terminal (terminalID "" for all),
// only those in force at activeAt unless it is zero, after the key
// ([issued_at nanoseconds] and [id]), with the key of the last when more
// follow.
func (s *DB) ExemptionPage(ctx context.Context, terminalID string, activeAt time.Time, after *PageKey, limit int) ([]Exemption, *PageKey, error) {
	if err := storableTime("active_at", activeAt); err != nil {
		return nil, nil, fmt.Errorf("store: exemption page: %w", err)
	}
	var (
		conds []string
		args  []any
	)
	if terminalID != "" {
		args = append(args, terminalID)
		conds = append(conds, fmt.Sprintf("terminal_id = $%d", len(args)))
	}
	if !activeAt.IsZero() {
		args = append(args, dbTime(activeAt))
		conds = append(conds, fmt.Sprintf("revoked_at IS NULL AND not_after > $%d AND not_before <= $%[1]d", len(args)))
	}
	cols := []keyColumn{{"issued_at", true, true}, {"id", false, true}}
	es, next, err := pageQuery(ctx, s, exemptionColumns, conds, args, cols, after, limit, func(r rowScanner) (Exemption, PageKey, error) {
		e, err := scanExemption(r)
		return e, PageKey{Ints: []int64{e.IssuedAt.UnixNano()}, Strings: []string{e.ID}}, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: exemption page: %w", err)
	}
	return es, next, nil
}

// EnrollmentTokenPage lists up to limit enrollment tokens, oldest first
// (by creation, then ID), after the key ([created_at nanoseconds] and
// [id]), with the key of the last when more follow.
func (s *DB) EnrollmentTokenPage(ctx context.Context, after *PageKey, limit int) ([]EnrollmentToken, *PageKey, error) {
	const base = `SELECT id, hash, created_at, expires_at, uses, uses_left, created_by, note FROM enrollment_tokens `
	cols := []keyColumn{{"created_at", true, false}, {"id", false, false}}
	ts, next, err := pageQuery(ctx, s, base, nil, nil, cols, after, limit, func(r rowScanner) (EnrollmentToken, PageKey, error) {
		var t EnrollmentToken
		err := r.Scan(&t.ID, &t.Hash, scanTime(&t.CreatedAt), scanTime(&t.ExpiresAt), &t.Uses, &t.UsesLeft, &t.CreatedBy, &t.Note)
		return t, PageKey{Ints: []int64{t.CreatedAt.UnixNano()}, Strings: []string{t.ID}}, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: enrollment token page: %w", err)
	}
	return ts, next, nil
}

// UserPage lists up to limit TOTP users by name after the key ([] and
// [name]), with the key of the last when more follow.
func (s *DB) UserPage(ctx context.Context, after *PageKey, limit int) ([]User, *PageKey, error) {
	cols := []keyColumn{{"u.name", false, false}}
	us, next, err := pageQuery(ctx, s, userQuery, nil, nil, cols, after, limit, func(r rowScanner) (User, PageKey, error) {
		u, err := scanUser(r)
		return u, PageKey{Strings: []string{u.Name}}, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: user page: %w", err)
	}
	return us, next, nil
}

// HardwareTokenPage lists up to limit unassigned hardware tokens by serial
// after the key ([] and [serial]), with the key of the last when more
// follow.
func (s *DB) HardwareTokenPage(ctx context.Context, after *PageKey, limit int) ([]HardwareToken, *PageKey, error) {
	cols := []keyColumn{{"serial", false, false}}
	ts, next, err := pageQuery(ctx, s, hardwareTokenQuery, nil, nil, cols, after, limit, func(r rowScanner) (HardwareToken, PageKey, error) {
		t, err := scanHardwareToken(r)
		return t, PageKey{Strings: []string{t.Serial}}, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: hardware token page: %w", err)
	}
	return ts, next, nil
}

// OperatorPage lists up to limit operators by name after the key ([] and
// [name]), with the key of the last when more follow.
func (s *DB) OperatorPage(ctx context.Context, after *PageKey, limit int) ([]Operator, *PageKey, error) {
	cols := []keyColumn{{"name", false, false}}
	os, next, err := pageQuery(ctx, s, operatorColumns, nil, nil, cols, after, limit, func(r rowScanner) (Operator, PageKey, error) {
		o, err := scanOperator(r)
		return o, PageKey{Strings: []string{o.Name}}, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: operator page: %w", err)
	}
	return os, next, nil
}
