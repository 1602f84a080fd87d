package e2e

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver the collector uses
)

// TestAuditTamper: an entry of the audit log edited in the database file —
// the append-only trigger dropped first, as someone with the file could —
// is caught: 'mnguardctl audit verify' exits non-zero naming the entry, and
// the self-inspection report says the chain is broken.
func TestAuditTamper(t *testing.T) {
	c := newCollector(t)
	for i := range 3 {
		c.token(t, "1h", i+1)
	}
	out, errOut, code := c.ctl(t, "audit", "verify")
	if code != 0 {
		t.Fatalf("audit verify on an intact log: exit %d: %s%s", code, out, errOut)
	}

	db, err := sql.Open("sqlite", filepath.Join(c.dir, "mnguard.db")+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_log SET detail = 'forged' WHERE id = 2`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("an UPDATE of the audit log with its trigger in place: %v, want refused", err)
	}
	for _, q := range []string{`DROP TRIGGER audit_log_no_update`, `UPDATE audit_log SET detail = 'uses=99' WHERE id = 2`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	out, errOut, code = c.ctl(t, "audit", "verify")
	if code == 0 || !strings.Contains(errOut, "broken at entry 2") {
		t.Fatalf("audit verify after the edit: exit %d, stdout %q, stderr %q; want non-zero naming entry 2", code, out, errOut)
	}
	// The report's days are the collector's (--time-zone, Asia/Tokyo by
	// default: no summer time); UTC's date is yesterday there after 15:00.
	today := time.Now().In(time.FixedZone("JST", 9*60*60)).Format(time.DateOnly)
	rep, errOut, code := c.ctl(t, "reports", "self-inspection", "--from", today, "--to", today, "-o", "json")
	if code != 0 {
		t.Fatalf("report: exit %d: %s", code, errOut)
	}
	var r struct {
		AuditChain struct {
			OK       bool  `json:"ok"`
			BrokenAt int64 `json:"broken_at"`
		} `json:"audit_chain"`
	}
	if err := json.Unmarshal([]byte(rep), &r); err != nil {
		t.Fatal(err)
	}
	if r.AuditChain.OK || r.AuditChain.BrokenAt != 2 {
		t.Errorf("the report's audit chain: %+v, want broken at 2", r.AuditChain)
	}
}
