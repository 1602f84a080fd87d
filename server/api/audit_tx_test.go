package api

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testAudit is the audit entry the tests pass with a change they make
// directly in the store.
var testAudit = store.AuditEntry{Actor: "test", Action: "test.fixture"}

// auditRefused is what the test trigger makes every audit insert fail with.
const auditRefused = "audit log refused by the test trigger"

// dbFile opens the collector's database file on a connection of its own,
// as a second process would.
func (c *collector) dbFile() *sql.DB {
	c.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(c.dataDir, "mnguard.db")+"?_busy_timeout=10000")
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { db.Close() })
	return db
}

// refuseAudit installs (on) or drops (off) a trigger in the database file
// that makes every insert into the audit log fail.
func refuseAudit(t *testing.T, db *sql.DB, on bool) {
	t.Helper()
	q := `DROP TRIGGER IF EXISTS test_refuse_audit`
	if on {
		q = `CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, '` + auditRefused + `'); END`
	}
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

// dump is the content of every table but the audit log, sorted: what a
// change changes.
func dump(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('audit_log', 'schema_migrations') ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	var b strings.Builder
	for _, tab := range tables {
		rows, err := db.Query(`SELECT * FROM "` + tab + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("%q", vals))
		}
		rows.Close()
		slices.Sort(lines)
		fmt.Fprintf(&b, "%s: %d rows\n%s\n", tab, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

func auditCount(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit_log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestChangesAuditedOrNotAtAll calls every state-changing admin RPC while
// the audit log refuses writes (a trigger on the real database file): each
// must fail and change nothing. Then, with the audit log back, the same
// call succeeds, changes the database and adds its audit entry — so the
// comparison can tell a change.
func TestChangesAuditedOrNotAtAll(t *testing.T) {
	c := startCollectorWith(t, true, func(cfg *Config) {
		cfg.ExemptionMaxDuration = 4 * time.Hour
		var err error
		// The operators' TOTP secrets under a key of their own.
		if cfg.Operators, err = operators.New(cfg.Store, bytes.Repeat([]byte{7}, logins.KeySize), operators.DefaultPolicy()); err != nil {
			t.Fatal(err)
		}
	})
	ctx := t.Context()
	admin, actx := c.admin(store.RoleAdmin)
	help, hctx := c.admin(store.RoleHelpdesk)
	agent, term := c.terminal()
	_, term2 := c.terminal()
	tid := term.GetTerminalId()
	now := time.Now()

	// Fixtures, one for each case.
	secrets := map[string]string{}
	for _, name := range []string{"u-confirm", "u-lock", "u-reset", "u-delete", "u-resync", "u-rec", "u-off"} {
		en, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		secrets[name] = en.GetSecret()
	}
	if _, err := help.ConfirmUser(hctx, &mnguardv1.ConfirmUserRequest{Name: "u-off", Code: c.code(secrets["u-off"], 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.RecordFailure(ctx, "u-lock", now, 1); err != nil {
		t.Fatal(err)
	}
	reportDevices(t, agent, stick, stick2)
	issued, err := help.IssueExemption(hctx, issueReq(tid, stick2))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []store.Operator{
		{Name: "o-disable", Role: store.RoleHelpdesk}, {Name: "o-enable", Role: store.RoleHelpdesk},
		{Name: "o-delete", Role: store.RoleHelpdesk}, {Name: "o-totp", Role: store.RoleHelpdesk},
		{Name: "o-role", Role: store.RoleHelpdesk}, {Name: "o-password", Role: store.RoleHelpdesk},
		{Name: "o-unlock", Role: store.RoleHelpdesk}, {Name: "o-token", Role: store.RoleHelpdesk},
	} {
		o.CreatedAt = now
		if err := c.st.CreateOperator(ctx, o, store.AuditEntry{Actor: "test", Action: "operator.add"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.DisableOperator(actx, &mnguardv1.DisableOperatorRequest{Name: "o-enable"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.RecordOperatorFailure(ctx, "o-unlock", now, 1, store.AuditEntry{Actor: "test", Action: "operator.sign_in_failed"}); err != nil {
		t.Fatal(err)
	}
	if err := c.st.CreateOperatorToken(ctx, store.OperatorToken{ID: "revoke-me", Name: "o-token", Hash: HashToken("x"), CreatedAt: now},
		store.AuditEntry{Actor: "test", Action: "operator.token"}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		call func() error
	}{
		{"EnrollUser", func() error {
			_, err := admin.EnrollUser(actx, &mnguardv1.EnrollUserRequest{Name: "n-enroll"})
			return err
		}},
		{"ConfirmUser", func() error {
			_, err := help.ConfirmUser(hctx, &mnguardv1.ConfirmUserRequest{Name: "u-confirm", Code: c.code(secrets["u-confirm"], 0)})
			return err
		}},
		{"UnlockUser", func() error {
			_, err := help.UnlockUser(hctx, &mnguardv1.UnlockUserRequest{Name: "u-lock"})
			return err
		}},
		{"ResetUser", func() error {
			_, err := admin.ResetUser(actx, &mnguardv1.ResetUserRequest{Name: "u-reset"})
			return err
		}},
		{"DeleteUser", func() error {
			_, err := admin.DeleteUser(actx, &mnguardv1.DeleteUserRequest{Name: "u-delete"})
			return err
		}},
		{"ResyncUser", func() error {
			_, err := help.ResyncUser(hctx, &mnguardv1.ResyncUserRequest{Name: "u-resync",
				Code1: c.code(secrets["u-resync"], 20*30*time.Second), Code2: c.code(secrets["u-resync"], 21*30*time.Second)})
			return err
		}},
		{"NewRecoveryCodes", func() error {
			_, err := admin.NewRecoveryCodes(actx, &mnguardv1.NewRecoveryCodesRequest{Name: "u-rec"})
			return err
		}},
		{"IssueOfflineLoginCode", func() error {
			_, err := help.IssueOfflineLoginCode(hctx, &mnguardv1.IssueOfflineLoginCodeRequest{TerminalId: tid, User: "u-off", Challenge: "1234-5678"})
			return err
		}},
		{"RevokeTerminal", func() error {
			_, err := admin.RevokeTerminal(actx, &mnguardv1.RevokeTerminalRequest{Id: term2.GetTerminalId(), Reason: "stolen"})
			return err
		}},
		{"CreateEnrollmentToken", func() error {
			_, err := admin.CreateEnrollmentToken(actx, &mnguardv1.CreateEnrollmentTokenRequest{Uses: 2})
			return err
		}},
		{"IssueExemption", func() error {
			_, err := help.IssueExemption(hctx, issueReq(tid, stick))
			return err
		}},
		{"RevokeExemption", func() error {
			_, err := help.RevokeExemption(hctx, &mnguardv1.RevokeExemptionRequest{Id: issued.GetExemption().GetExemption().GetId(), Reason: "done"})
			return err
		}},
		{"IssueOfflineExemptionCode", func() error {
			_, err := help.IssueOfflineExemptionCode(hctx, &mnguardv1.IssueOfflineExemptionCodeRequest{
				TerminalId: tid, Challenge: challenge(t, stick, time.Hour), Reason: "minutes", Ticket: "INC-1"})
			return err
		}},
		{"AddOperator", func() error {
			_, err := admin.AddOperator(actx, &mnguardv1.AddOperatorRequest{Name: "o-new", Role: store.RoleAuditor, Password: "a long enough passphrase 42"})
			return err
		}},
		{"DisableOperator", func() error {
			_, err := admin.DisableOperator(actx, &mnguardv1.DisableOperatorRequest{Name: "o-disable"})
			return err
		}},
		{"EnableOperator", func() error {
			_, err := admin.EnableOperator(actx, &mnguardv1.EnableOperatorRequest{Name: "o-enable"})
			return err
		}},
		{"DeleteOperator", func() error {
			_, err := admin.DeleteOperator(actx, &mnguardv1.DeleteOperatorRequest{Name: "o-delete"})
			return err
		}},
		{"ResetOperatorTotp", func() error {
			_, err := admin.ResetOperatorTotp(actx, &mnguardv1.ResetOperatorTotpRequest{Name: "o-totp"})
			return err
		}},
		{"SetOperatorRole", func() error {
			_, err := admin.SetOperatorRole(actx, &mnguardv1.SetOperatorRoleRequest{Name: "o-role", Role: store.RoleAuditor})
			return err
		}},
		{"SetOperatorPassword", func() error {
			_, err := admin.SetOperatorPassword(actx, &mnguardv1.SetOperatorPasswordRequest{Name: "o-password", Password: "a long enough passphrase 42"})
			return err
		}},
		{"UnlockOperator", func() error {
			_, err := admin.UnlockOperator(actx, &mnguardv1.UnlockOperatorRequest{Name: "o-unlock"})
			return err
		}},
		{"CreateOperatorToken", func() error {
			_, err := admin.CreateOperatorToken(actx, &mnguardv1.CreateOperatorTokenRequest{Name: "o-token"})
			return err
		}},
		{"RevokeOperatorToken", func() error {
			_, err := admin.RevokeOperatorToken(actx, &mnguardv1.RevokeOperatorTokenRequest{Id: "revoke-me"})
			return err
		}},
		{"SetNetworkPolicy", func() error {
			_, err := admin.SetNetworkPolicy(actx, &mnguardv1.SetNetworkPolicyRequest{Policy: segmentPolicy()})
			return err
		}},
	}
	db := c.dbFile()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refuseAudit(t, db, true)
			before, audits := dump(t, db), auditCount(t, db)
			err := tc.call()
			refuseAudit(t, db, false)
			if err == nil {
				t.Fatal("succeeded although the audit log refused the entry")
			}
			if c := status.Code(err); c == codes.OK || !strings.Contains(err.Error(), auditRefused) {
				t.Errorf("error %v: want the audit log's failure", err)
			}
			if after := dump(t, db); after != before {
				t.Errorf("the change happened without its audit entry:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if n := auditCount(t, db); n != audits {
				t.Errorf("%d audit entries, was %d", n, audits)
			}
			// The same call with the audit log working: the change and
			// its entry.
			if err := tc.call(); err != nil {
				t.Fatalf("with the audit log working: %v", err)
			}
			if dump(t, db) == before {
				t.Error("with the audit log working the call changed nothing: this case cannot tell")
			}
			if n := auditCount(t, db); n != audits+1 {
				t.Errorf("%d audit entries after the change, want %d", n, audits+1)
			}
		})
	}
	if v, err := c.st.VerifyAudit(context.Background(), time.Time{}); err != nil || v.Broken != nil {
		t.Errorf("audit chain: %+v, %v", v, err)
	}
}
