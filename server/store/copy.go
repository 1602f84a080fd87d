package store

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrTargetNotEmpty is returned when Copy is given a target database that
// already holds rows. Copy never merges two installations.
var ErrTargetNotEmpty = errors.New("target database is not empty")

// TableCount is one table's row count after a copy, read back from both
// databases.
type TableCount struct {
	Table  string
	Source int64
	Target int64
}

// CopyReport says what Copy copied and what it verified.
type CopyReport struct {
	// SchemaVersion is the schema version both databases are at.
	SchemaVersion int64
	// Tables in the order they were copied (referenced tables first).
	Tables []TableCount
	// Rows is the total number of rows copied.
	Rows int64
	// AuditEntries and AuditHead are the target's audit log after the
	// copy: its length and the hash of its newest entry (nil when empty),
	// equal to the source's.
	AuditEntries int64
	AuditHead    []byte
}

// copyBatchParams bounds the parameters of one multi-row INSERT (SQLite
// allows 32,766, PostgreSQL 65,535).
const copyBatchParams = 30000

// Copy copies every row of every table of src into dst, which must be
// empty and at the same schema version (open both with this program: it
// migrates them). It is meant for moving an installation from SQLite to
// PostgreSQL (mnguard-server migrate) while no collector runs on either.
//
// Tables are copied referenced-first (by their foreign keys), all in one
// transaction on dst: a copy that fails or is cancelled half-way leaves dst
// as empty as it was, and can be run again. The source is read in one
// read transaction, a consistent snapshot. Identity columns (PostgreSQL)
// are inserted with their values and their sequences set past the largest
// afterwards, so new rows do not collide with copied ones.
//
// After the commit Copy verifies: every table's row count equal in both,
// the target's audit chain intact (VerifyAuditChain) and its newest hash the
// source's. progress, when set, is called after each batch with the table
// and the rows of it copied so far.
func Copy(ctx context.Context, dst, src *DB, progress func(table string, n int64)) (CopyReport, error) {
	rep, err := copyDB(ctx, dst, src, progress)
	if err != nil {
		return rep, fmt.Errorf("store: copy %s to %s: %w", src.Dialect(), dst.Dialect(), err)
	}
	return rep, nil
}

func copyDB(ctx context.Context, dst, src *DB, progress func(string, int64)) (rep CopyReport, err error) {
	if dst == src {
		return rep, errors.New("source and target are the same database")
	}
	if progress == nil {
		progress = func(string, int64) {}
	}
	sv, err := copySchemaVersion(ctx, src.r)
	if err != nil {
		return rep, fmt.Errorf("source: %w", err)
	}
	dv, err := copySchemaVersion(ctx, dst.w)
	if err != nil {
		return rep, fmt.Errorf("target: %w", err)
	}
	if sv != dv {
		return rep, fmt.Errorf("source schema version %d, target %d: open both with the same mnguard-server (it migrates them) and copy again", sv, dv)
	}
	rep.SchemaVersion = sv

	rtx, err := src.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: copySnapshotLevel(src)})
	if err != nil {
		return rep, fmt.Errorf("source: begin: %w", err)
	}
	defer rtx.Rollback()
	wtx, err := dst.w.BeginTx(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("target: begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(wtx))
		}
	}()

	if dst.Dialect() == DialectPostgres {
		// A replica started meanwhile waits for the copy rather than
		// writing into the middle of it.
		if _, err := wtx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, WriteLockKey); err != nil {
			return rep, fmt.Errorf("target: lock: %w", err)
		}
	}
	srcTables, err := copySchemaTables(ctx, rtx, src.Dialect())
	if err != nil {
		return rep, fmt.Errorf("source: %w", err)
	}
	dstTables, err := copySchemaTables(ctx, wtx, dst.Dialect())
	if err != nil {
		return rep, fmt.Errorf("target: %w", err)
	}
	if a, b := slices.Sorted(maps.Keys(srcTables)), slices.Sorted(maps.Keys(dstTables)); !slices.Equal(a, b) {
		return rep, fmt.Errorf("the databases hold different tables (source %s, target %s): not one mnguard schema", strings.Join(a, ","), strings.Join(b, ","))
	}
	order, err := copyOrder(dstTables)
	if err != nil {
		return rep, fmt.Errorf("target: %w", err)
	}
	for _, t := range order {
		if err := copySameColumns(t, srcTables[t.name]); err != nil {
			return rep, err
		}
	}
	// Emptiness is checked inside the transaction that fills it.
	for _, t := range order {
		var any int
		err := wtx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM `+copyQuote(t.name)+` LIMIT 1) x`).Scan(&any)
		if err != nil {
			return rep, fmt.Errorf("target: count %s: %w", t.name, err)
		}
		if any > 0 {
			return rep, fmt.Errorf("%w: table %s holds rows (copy only into a freshly created database)", ErrTargetNotEmpty, t.name)
		}
	}
	for _, t := range order {
		n, err := copyTable(ctx, wtx, rtx, t, dst.Dialect(), progress)
		if err != nil {
			return rep, fmt.Errorf("table %s: %w", t.name, err)
		}
		rep.Rows += n
		rep.Tables = append(rep.Tables, TableCount{Table: t.name, Source: n})
	}
	if dst.Dialect() == DialectPostgres {
		if err := copyResetIdentities(ctx, wtx, order); err != nil {
			return rep, err
		}
	}
	if err := wtx.Commit(); err != nil {
		return rep, fmt.Errorf("target: commit: %w", err)
	}
	return rep, verifyCopy(ctx, dst, src, &rep)
}

// verifyCopy reads back what Copy wrote: row counts, the audit chain and
// its head.
func verifyCopy(ctx context.Context, dst, src *DB, rep *CopyReport) error {
	var bad []string
	for i := range rep.Tables {
		tc := &rep.Tables[i]
		q := `SELECT COUNT(*) FROM ` + copyQuote(tc.Table)
		if err := src.r.QueryRowContext(ctx, q).Scan(&tc.Source); err != nil {
			return fmt.Errorf("verify: source: count %s: %w", tc.Table, err)
		}
		if err := dst.r.QueryRowContext(ctx, q).Scan(&tc.Target); err != nil {
			return fmt.Errorf("verify: target: count %s: %w", tc.Table, err)
		}
		if tc.Source != tc.Target {
			bad = append(bad, fmt.Sprintf("%s: source %d rows, target %d", tc.Table, tc.Source, tc.Target))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("verify: row counts differ (was the source written to during the copy?): %s", strings.Join(bad, "; "))
	}
	if err := dst.VerifyAuditChain(ctx); err != nil {
		return fmt.Errorf("verify: target: %w", err)
	}
	sv, err := src.VerifyAudit(ctx, time.Time{})
	if err != nil {
		return fmt.Errorf("verify: source: %w", err)
	}
	dv, err := dst.VerifyAudit(ctx, time.Time{})
	if err != nil {
		return fmt.Errorf("verify: target: %w", err)
	}
	if sv.Entries != dv.Entries || !bytes.Equal(sv.Head.Hash, dv.Head.Hash) {
		return fmt.Errorf("verify: audit log differs: source %d entries ending in %x, target %d ending in %x", sv.Entries, sv.Head.Hash, dv.Entries, dv.Head.Hash)
	}
	rep.AuditEntries, rep.AuditHead = dv.Entries, dv.Head.Hash
	return nil
}

// copySnapshotLevel is the isolation of Copy's read transaction: SQLite's
// read transactions are snapshots already (WAL) and its driver takes no
// other level.
func copySnapshotLevel(s *DB) sql.IsolationLevel {
	if s.Dialect() == DialectPostgres {
		return sql.LevelRepeatableRead
	}
	return sql.LevelDefault
}

// copyQuerier is what Copy reads the catalog through: a transaction.
type copyQuerier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

func copySchemaVersion(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}) (int64, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !v.Valid {
		return 0, errors.New("no schema: not an mnguard database")
	}
	return v.Int64, nil
}

// Kinds of column values Copy converts between the dialects.
const (
	copyKindOther = iota
	copyKindInt
	copyKindText
	copyKindBytes
	copyKindBool
)

type copyColumn struct {
	name     string
	kind     int
	typ      string // as the catalog names it, e.g. bigint, bytea
	identity bool   // PostgreSQL GENERATED … AS IDENTITY
}

type copyTableInfo struct {
	name string
	cols []copyColumn
	refs []string // tables its foreign keys reference
}

// copyIdentRE is what a table or column name of the schema looks like; names
// read from the catalog are checked against it before they are quoted
// into SQL.
var copyIdentRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func copyQuote(s string) string { return `"` + s + `"` }

// copySchemaTables reads the tables (except schema_migrations), their columns
// and their foreign keys from the catalog.
func copySchemaTables(ctx context.Context, q copyQuerier, dialect string) (map[string]*copyTableInfo, error) {
	tables := map[string]*copyTableInfo{}
	var names []string
	listQ := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`
	if dialect == DialectPostgres {
		listQ = `SELECT table_name FROM information_schema.tables
	WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`
	}
	if err := copyStrings(ctx, q, &names, listQ); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, n := range names {
		if n == "schema_migrations" {
			continue
		}
		if !copyIdentRE.MatchString(n) {
			return nil, fmt.Errorf("table %q: not a name mnguard's schema uses", n)
		}
		t := &copyTableInfo{name: n}
		tables[n] = t
		if err := copyReadColumns(ctx, q, dialect, t); err != nil {
			return nil, fmt.Errorf("table %s: %w", n, err)
		}
	}
	if dialect == DialectPostgres {
		rows, err := q.QueryContext(ctx, `SELECT a.relname, b.relname FROM pg_constraint c
	JOIN pg_class a ON a.oid = c.conrelid JOIN pg_class b ON b.oid = c.confrelid
	JOIN pg_namespace n ON n.oid = a.relnamespace
	WHERE c.contype = 'f' AND n.nspname = current_schema()`)
		if err != nil {
			return nil, fmt.Errorf("list foreign keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var from, to string
			if err := rows.Scan(&from, &to); err != nil {
				return nil, err
			}
			if t := tables[from]; t != nil {
				t.refs = append(t.refs, to)
			}
		}
		return tables, rows.Err()
	}
	for _, t := range tables {
		if err := copyStrings(ctx, q, &t.refs, `SELECT "table" FROM pragma_foreign_key_list($1)`, t.name); err != nil {
			return nil, fmt.Errorf("table %s: list foreign keys: %w", t.name, err)
		}
	}
	return tables, nil
}

func copyStrings(ctx context.Context, q copyQuerier, out *[]string, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		*out = append(*out, s)
	}
	return rows.Err()
}

func copyReadColumns(ctx context.Context, q copyQuerier, dialect string, t *copyTableInfo) error {
	query := `SELECT name, type, 'NO' FROM pragma_table_info($1) ORDER BY cid`
	if dialect == DialectPostgres {
		query = `SELECT column_name, data_type, is_identity FROM information_schema.columns
	WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`
	}
	rows, err := q.QueryContext(ctx, query, t.name)
	if err != nil {
		return fmt.Errorf("list columns: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, typ, ident string
		if err := rows.Scan(&name, &typ, &ident); err != nil {
			return err
		}
		if !copyIdentRE.MatchString(name) {
			return fmt.Errorf("column %q: not a name mnguard's schema uses", name)
		}
		t.cols = append(t.cols, copyColumn{name: name, kind: copyColumnKind(typ), typ: strings.ToLower(typ), identity: ident == "YES"})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(t.cols) == 0 {
		return errors.New("no columns")
	}
	return nil
}

// copyColumnKind classifies a declared column type of either dialect.
func copyColumnKind(typ string) int {
	t := strings.ToUpper(typ)
	switch {
	case strings.Contains(t, "INT"):
		return copyKindInt
	case t == "BLOB" || t == "BYTEA":
		return copyKindBytes
	case strings.Contains(t, "TEXT") || strings.Contains(t, "CHAR"):
		return copyKindText
	case strings.HasPrefix(t, "BOOL"):
		return copyKindBool
	}
	return copyKindOther
}

// copySameColumns checks that a table has the same column names in both
// databases (their order and declared types may differ).
func copySameColumns(dst, src *copyTableInfo) error {
	names := func(t *copyTableInfo) []string {
		var out []string
		for _, c := range t.cols {
			out = append(out, c.name)
		}
		slices.Sort(out)
		return out
	}
	if a, b := names(src), names(dst); !slices.Equal(a, b) {
		return fmt.Errorf("table %s has columns %s in the source and %s in the target: not the same schema", dst.name, strings.Join(a, ","), strings.Join(b, ","))
	}
	return nil
}

// copyOrder sorts the tables so that every table comes after the tables
// its foreign keys reference, ties by name. A reference of a table to
// itself is left to the row order (none in the schema today).
func copyOrder(tables map[string]*copyTableInfo) ([]*copyTableInfo, error) {
	var order []*copyTableInfo
	done := map[string]bool{}
	for len(order) < len(tables) {
		var ready []*copyTableInfo
		for name, t := range tables {
			if done[name] {
				continue
			}
			ok := true
			for _, r := range t.refs {
				if r != name && !done[r] {
					if _, known := tables[r]; !known {
						return nil, fmt.Errorf("table %s references %s, which is not in the schema", name, r)
					}
					ok = false
				}
			}
			if ok {
				ready = append(ready, t)
			}
		}
		if len(ready) == 0 {
			return nil, errors.New("the tables' foreign keys form a cycle: no order to copy them in")
		}
		slices.SortFunc(ready, func(a, b *copyTableInfo) int { return cmp.Compare(a.name, b.name) })
		for _, t := range ready {
			done[t.name] = true
		}
		order = append(order, ready...)
	}
	return order, nil
}

// copyTable copies one table's rows in primary-key order, many rows a
// statement, and returns how many it copied.
func copyTable(ctx context.Context, w, r copyQuerier, t *copyTableInfo, dstDialect string, progress func(string, int64)) (int64, error) {
	if dstDialect == DialectPostgres && copyArrays(t) {
		return copyTableArrays(ctx, w, r, t, progress)
	}
	return copyTableValues(ctx, w, r, t, dstDialect, progress)
}

// copyArrays reports whether every column of t has a kind that
// copyTableArrays sends as an array.
func copyArrays(t *copyTableInfo) bool {
	for _, c := range t.cols {
		if c.kind == copyKindOther || !copyTypeRE.MatchString(c.typ) {
			return false
		}
	}
	return true
}

// copyTypeRE is what a PostgreSQL type name that Copy casts to looks like.
var copyTypeRE = regexp.MustCompile(`^[a-z][a-z ]*$`)

// copyArrayRows is the number of rows copyTableArrays sends a statement.
const copyArrayRows = 2000

// copyTableArrays copies a table into PostgreSQL one column array per
// parameter (INSERT … SELECT FROM unnest($1::text[], …)): one statement
// text for the whole table, prepared once, instead of thousands of
// parameters parsed for every batch (several times faster).
func copyTableArrays(ctx context.Context, w, r copyQuerier, t *copyTableInfo, progress func(string, int64)) (int64, error) {
	cols := make([]string, len(t.cols))
	casts := make([]string, len(t.cols))
	identity := false
	for i, c := range t.cols {
		cols[i] = copyQuote(c.name)
		casts[i] = "$" + strconv.Itoa(i+1) + "::" + c.typ + "[]"
		identity = identity || c.identity
	}
	q := `INSERT INTO ` + copyQuote(t.name) + ` (` + strings.Join(cols, ", ") + `) `
	if identity {
		q += `OVERRIDING SYSTEM VALUE `
	}
	q += `SELECT * FROM unnest(` + strings.Join(casts, ", ") + `)`
	rows, err := r.QueryContext(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM `+copyQuote(t.name)+` ORDER BY 1`)
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	defer rows.Close()
	arrays := make([]copyArray, len(t.cols))
	reset := func() {
		for i, c := range t.cols {
			arrays[i] = newCopyArray(c.kind)
		}
	}
	reset()
	var n int64
	inBatch := 0
	flush := func() error {
		if inBatch == 0 {
			return nil
		}
		args := make([]any, len(arrays))
		for i, a := range arrays {
			args[i] = a.value()
		}
		if _, err := w.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		n += int64(inBatch)
		inBatch = 0
		reset()
		progress(t.name, n)
		return nil
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("read: %w", err)
		}
		for i, c := range t.cols {
			v, err := copyConvert(vals[i], c.kind)
			if err == nil {
				err = arrays[i].add(v)
			}
			if err != nil {
				return n, fmt.Errorf("row %d, column %s: %w", n+int64(inBatch)+1, c.name, err)
			}
		}
		inBatch++
		if inBatch == copyArrayRows {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read: %w", err)
	}
	return n, flush()
}

// copyArray collects one column's values of a batch, NULL as nil.
type copyArray struct {
	ints  []*int64
	texts []*string
	bytes [][]byte
	bools []*bool
	kind  int
}

func newCopyArray(kind int) copyArray { return copyArray{kind: kind} }

func (a *copyArray) add(v any) error {
	switch a.kind {
	case copyKindInt:
		switch x := v.(type) {
		case nil:
			a.ints = append(a.ints, nil)
		case int64:
			a.ints = append(a.ints, &x)
		default:
			return fmt.Errorf("%T in an integer column", v)
		}
	case copyKindText:
		switch x := v.(type) {
		case nil:
			a.texts = append(a.texts, nil)
		case string:
			a.texts = append(a.texts, &x)
		default:
			return fmt.Errorf("%T in a text column", v)
		}
	case copyKindBytes:
		switch x := v.(type) {
		case nil:
			a.bytes = append(a.bytes, nil)
		case []byte:
			if x == nil {
				x = []byte{} // an empty value, not NULL (that is v == nil)
			}
			a.bytes = append(a.bytes, x)
		default:
			return fmt.Errorf("%T in a binary column", v)
		}
	case copyKindBool:
		switch x := v.(type) {
		case nil:
			a.bools = append(a.bools, nil)
		case bool:
			a.bools = append(a.bools, &x)
		default:
			return fmt.Errorf("%T in a boolean column", v)
		}
	default:
		return errors.New("no array for this column type")
	}
	return nil
}

func (a *copyArray) value() any {
	switch a.kind {
	case copyKindInt:
		return a.ints
	case copyKindText:
		return a.texts
	case copyKindBytes:
		return a.bytes
	}
	return a.bools
}

// copyTableValues copies a table with multi-row INSERT … VALUES
// statements: for SQLite, and for column types copyTableArrays does not
// send.
func copyTableValues(ctx context.Context, w, r copyQuerier, t *copyTableInfo, dstDialect string, progress func(string, int64)) (int64, error) {
	cols := make([]string, len(t.cols))
	identity := false
	for i, c := range t.cols {
		cols[i] = copyQuote(c.name)
		identity = identity || c.identity
	}
	rows, err := r.QueryContext(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM `+copyQuote(t.name)+` ORDER BY 1`)
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	defer rows.Close()
	head := `INSERT INTO ` + copyQuote(t.name) + ` (` + strings.Join(cols, ", ") + `) `
	if identity && dstDialect == DialectPostgres {
		head += `OVERRIDING SYSTEM VALUE `
	}
	head += `VALUES `
	perBatch := max(1, copyBatchParams/len(cols))
	var (
		n     int64
		args  []any
		inRow int
	)
	flush := func() error {
		if inRow == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString(head)
		for i := range inRow {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for j := range cols {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(i*len(cols) + j + 1))
			}
			b.WriteByte(')')
		}
		if _, err := w.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		n += int64(inRow)
		args, inRow = args[:0], 0
		progress(t.name, n)
		return nil
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("read: %w", err)
		}
		for i, c := range t.cols {
			v, err := copyConvert(vals[i], c.kind)
			if err != nil {
				return n, fmt.Errorf("row %d, column %s: %w", n+int64(inRow)+1, c.name, err)
			}
			args = append(args, v)
		}
		inRow++
		if inRow == perBatch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("read: %w", err)
	}
	if err := flush(); err != nil {
		return n, err
	}
	return n, nil
}

// copyConvert turns a value read from one dialect into what the target
// column takes: SQLite may hand back text for a BLOB column and has no
// booleans.
func copyConvert(v any, kind int) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []byte:
		switch kind {
		case copyKindText:
			return string(x), nil
		case copyKindInt:
			return nil, errors.New("bytes in an integer column")
		}
		return slices.Clone(x), nil
	case string:
		switch kind {
		case copyKindBytes:
			return []byte(x), nil
		case copyKindInt:
			i, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("text %q in an integer column", x)
			}
			return i, nil
		}
		return x, nil
	case int64:
		switch kind {
		case copyKindBool:
			return x != 0, nil
		case copyKindText, copyKindBytes:
			return nil, fmt.Errorf("integer %d in a %s column", x, map[int]string{copyKindText: "text", copyKindBytes: "binary"}[kind])
		}
		return x, nil
	case float64:
		if kind == copyKindInt {
			if x != float64(int64(x)) {
				return nil, fmt.Errorf("fraction %v in an integer column", x)
			}
			return int64(x), nil
		}
		return x, nil
	}
	return v, nil
}

// copyResetIdentities sets the sequence of every identity column past the
// largest value copied, so the next row PostgreSQL numbers does not collide.
func copyResetIdentities(ctx context.Context, w copyQuerier, tables []*copyTableInfo) error {
	for _, t := range tables {
		for _, c := range t.cols {
			if !c.identity {
				continue
			}
			_, err := w.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence($1, $2),
	COALESCE((SELECT MAX(`+copyQuote(c.name)+`) FROM `+copyQuote(t.name)+`), 0) + 1, false)`, t.name, c.name)
			if err != nil {
				return fmt.Errorf("table %s: reset the sequence of %s: %w", t.name, c.name, err)
			}
		}
	}
	return nil
}
