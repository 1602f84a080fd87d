package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// newReplicas starts two collectors on the PostgreSQL database of dsn, as
// a deployment behind a load balancer runs them (see newReplica). Both
// get flags.
func newReplicas(t testing.TB, dsn string, flags ...string) (a, b *collector) {
	t.Helper()
	a = newPGCollector(t, dsn, flags...)
	return a, newReplica(t, a)
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

var busOriginRE = regexp.MustCompile(`replica bus started.*origin=([0-9a-f]+)`)

// busOrigin is the replica's name on the bus, from its log.
func (c *collector) busOrigin(t *testing.T) string {
	t.Helper()
	var origin string
	eventually(t, 10*time.Second, func() error {
		m := busOriginRE.FindStringSubmatch(c.proc.out.String())
		if m == nil {
			return fmt.Errorf("no 'replica bus started' in the collector's log")
		}
		origin = m[1]
		return nil
	})
	return origin
}

// killListener ends the replica's LISTEN connection from the database side
// (pg_terminate_backend) and returns its backend's PID.
func (c *collector) killListener(t *testing.T, dsn string) int32 {
	t.Helper()
	origin := c.busOrigin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pid int32
	if err := conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
WHERE application_name = $1 AND query ILIKE 'LISTEN%' AND datname = current_database()`, "mnguard-bus/"+origin).Scan(&pid); err != nil {
		t.Fatalf("the LISTEN connection of replica %s: %v", origin, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
	}
	return pid
}
