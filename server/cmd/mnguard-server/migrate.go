package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/mnguard/mnguard/server/collector"
	"github.com/mnguard/mnguard/server/store"
)

const migrateUsage = `usage: mnguard-server migrate --from sqlite:DIR --to postgres://USER@HOST:PORT/DATABASE

Copies an installation's database from SQLite to an empty PostgreSQL
database and verifies the copy: every table's row count, the audit chain
on PostgreSQL and its newest hash against SQLite's. Stop the collector
first. The target is brought to this program's schema first, the source
too (as serve would), and the copy runs in one transaction: a copy that
fails leaves the target empty and can be run again. The data directory's
keys stay where they are: start serve --db with this directory (or copies
of it on each replica).

Flags:
`

// migrateCmd runs "mnguard-server migrate".
func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mnguard-server migrate: %s\n", oneLine(err))
		return 1
	}
	fs := flag.NewFlagSet("mnguard-server migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, migrateUsage)
		fs.PrintDefaults()
	}
	from := fs.String("from", "", "the installation to copy: sqlite:DIR (its data directory) or sqlite:FILE (the database file)")
	to := fs.String("to", getenv("MNGUARD_DB"), "the empty PostgreSQL database to copy into: postgres://… (env MNGUARD_DB)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	src, err := sourceFile(*from)
	if err != nil {
		return fail(err)
	}
	if *to == "" {
		return fail(errors.New("--to: the PostgreSQL database to copy into, postgres://USER@HOST:PORT/DATABASE"))
	}
	dst, err := parseDB("--to", *to, "")
	if err != nil {
		return fail(err)
	}
	if !dst.postgres {
		return fail(fmt.Errorf("--to %s: not PostgreSQL; migrate copies an SQLite installation into PostgreSQL (postgres://…)", dst.desc))
	}

	srcDB, err := store.OpenSQLite(ctx, src)
	if err != nil {
		return fail(err)
	}
	defer srcDB.Close()
	dstDB, err := store.Open(ctx, dst.url)
	if err != nil {
		return fail(fmt.Errorf("open %s: %s", dst.desc, dst.scrub(err)))
	}
	defer dstDB.Close()

	fmt.Fprintf(stderr, "copying SQLite %s to %s\n", src, dst.desc)
	last := ""
	rep, err := store.Copy(ctx, dstDB, srcDB, func(table string, n int64) {
		if table != last {
			last = table
			fmt.Fprintf(stderr, "  %s\n", table)
		}
	})
	if err != nil {
		if errors.Is(err, store.ErrTargetNotEmpty) {
			return fail(fmt.Errorf("%s: %s; migrate copies into a new, empty database only", dst.desc, dst.scrub(err)))
		}
		return fail(errors.New(dst.scrub(err)))
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TABLE\tSQLITE\tPOSTGRESQL\t")
	for _, t := range rep.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", t.Table, t.Source, t.Target)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "copied %d rows of %d tables at schema version %d; audit chain verified on PostgreSQL: %d entries, newest hash %x (equal to SQLite's)\n",
		rep.Rows, len(rep.Tables), rep.SchemaVersion, rep.AuditEntries, rep.AuditHead)
	return 0
}

// sourceFile resolves --from to an existing SQLite database file: the
// data directory's mnguard.db, or the file named. It never creates one
// (opening a missing file would).
func sourceFile(from string) (string, error) {
	if from == "" {
		return "", errors.New("--from: the installation to copy, sqlite:DIR (its data directory)")
	}
	path, ok := strings.CutPrefix(from, "sqlite:")
	if !ok {
		if strings.Contains(from, "://") {
			return "", fmt.Errorf("--from %s: migrate copies from SQLite only: give sqlite:DIR", from)
		}
		path = from
	}
	if path == "" {
		return "", errors.New("--from sqlite:: name the data directory, e.g. sqlite:/var/lib/mnguard-server")
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("--from %s: no such directory or file", from)
		}
		return "", fmt.Errorf("--from: %w", err)
	}
	if fi.IsDir() {
		path = filepath.Join(path, collector.DBFile)
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("--from %s: the directory holds no %s: not an mnguard-server data directory", from, collector.DBFile)
			}
			return "", fmt.Errorf("--from: %w", err)
		}
	}
	return path, nil
}
