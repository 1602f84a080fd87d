package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// auditCount is the number of entries in the audit log.
func auditCount(tb testing.TB, s *DB) int {
	tb.Helper()
	return count(tb, s, `SELECT COUNT(*) FROM audit_log`)
}

// lastAudit returns the newest audit entry.
func lastAudit(tb testing.TB, s *DB) AuditEntry {
	tb.Helper()
	es, err := s.AuditLog(context.Background(), 1)
	if err != nil || len(es) != 1 {
		tb.Fatalf("AuditLog(1) = %v, %v", es, err)
	}
	return es[0]
}

// audited runs fn and checks that it appended want audit entries (0 or
// 1) and that the chain still holds.
func audited(tb testing.TB, s *DB, want int, fn func() error) error {
	tb.Helper()
	before := auditCount(tb, s)
	err := fn()
	if got := auditCount(tb, s) - before; got != want {
		tb.Errorf("%d audit entries appended (err %v), want %d", got, err, want)
	}
	if err := s.VerifyAuditChain(context.Background()); err != nil {
		tb.Error(err)
	}
	return err
}

func auditOf(action, target string) AuditEntry {
	return AuditEntry{Time: t0, Actor: "root", Action: action, Target: target}
}

func createOperator(tb testing.TB, s *DB, name, role string) Operator {
	tb.Helper()
	o := Operator{Name: name, Role: role, PasswordHash: "hash-" + name, TOTPSealed: []byte("sealed-" + name),
		CreatedAt: t0, CreatedBy: "root"}
	if err := s.CreateOperator(context.Background(), o, auditOf("operator.add", name)); err != nil {
		tb.Fatal(err)
	}
	return mustOperator(tb, s, name)
}

func mustOperator(tb testing.TB, s *DB, name string) Operator {
	tb.Helper()
	o, err := s.Operator(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// sameOperator reports the first difference between two operators, times
// compared with Equal.
func sameOperator(got, want Operator) error {
	for _, tt := range []struct {
		name      string
		got, want time.Time
	}{
		{"LastFailureAt", got.LastFailureAt, want.LastFailureAt}, {"LockedAt", got.LockedAt, want.LockedAt},
		{"DisabledAt", got.DisabledAt, want.DisabledAt}, {"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"LastSignInAt", got.LastSignInAt, want.LastSignInAt},
	} {
		if !tt.got.Equal(tt.want) {
			return fmt.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	got.LastFailureAt, got.LockedAt, got.DisabledAt, got.CreatedAt, got.LastSignInAt = want.LastFailureAt,
		want.LockedAt, want.DisabledAt, want.CreatedAt, want.LastSignInAt
	if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
		return fmt.Errorf("got  %s\nwant %s", g, w)
	}
	return nil
}

func newSession(id, operator string, at time.Time) Session {
	return Session{IDHash: hashOf("session-" + id), Operator: operator, CSRF: "csrf-" + id, CreatedAt: at, LastSeenAt: at,
		RemoteAddr: "192.0.2.7:51234", UserAgent: "Mozilla/5.0"}
}

// signIn opens session id for the operator with the next TOTP step.
func signIn(tb testing.TB, s *DB, name, id string, at time.Time) Session {
	tb.Helper()
	o := mustOperator(tb, s, name)
	ses := newSession(id, name, at)
	if _, err := s.OperatorSignedIn(context.Background(), SignIn{Name: name, ExpectLastStep: o.TOTPLastStep,
		LastStep: o.TOTPLastStep + 1, At: at, Session: ses}, auditOf("operator.sign_in", name)); err != nil {
		tb.Fatal(err)
	}
	return ses
}

func TestCreateOperator(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if has, err := s.HasOperators(ctx); err != nil || has {
		t.Fatalf("HasOperators on an empty store = %v, %v", has, err)
	}
	want := Operator{Name: "山田 太郎", Role: RoleHelpdesk, PasswordHash: "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$a2V5",
		TOTPSealed: []byte{0, 1, 2, 0xff}, Language: "ja", CreatedAt: t0, CreatedBy: "root"}
	a := AuditEntry{Time: t0, Actor: "root", Action: "operator.add", Target: want.Name, Detail: "role helpdesk"}
	if err := audited(t, s, 1, func() error { return s.CreateOperator(ctx, want, a) }); err != nil {
		t.Fatal(err)
	}
	if e := lastAudit(t, s); e.Actor != a.Actor || e.Action != a.Action || e.Target != a.Target || e.Detail != a.Detail || !e.Time.Equal(t0) {
		t.Errorf("audit entry %+v, want %+v", e, a)
	}
	got, err := s.Operator(ctx, want.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameOperator(got, want); err != nil {
		t.Error(err)
	}
	if has, err := s.HasOperators(ctx); err != nil || !has {
		t.Errorf("HasOperators = %v, %v; want true", has, err)
	}

	// A taken name: ErrExists, the operator unchanged, no audit entry.
	dup := Operator{Name: want.Name, Role: RoleAdmin, CreatedAt: t0}
	if err := audited(t, s, 0, func() error { return s.CreateOperator(ctx, dup, a) }); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: err = %v, want ErrExists", err)
	}
	if got := mustOperator(t, s, want.Name); got.Role != RoleHelpdesk || got.PasswordHash != want.PasswordHash {
		t.Errorf("after a refused duplicate: %+v", got)
	}

	for _, tt := range []struct {
		name string
		o    Operator
		a    AuditEntry
	}{
		{"empty name", Operator{Role: RoleAdmin}, a},
		{"control character", Operator{Name: "a\nb", Role: RoleAdmin}, a},
		{"long name", Operator{Name: string(bytes.Repeat([]byte("x"), maxUserName+1)), Role: RoleAdmin}, a},
		{"unknown role", Operator{Name: "x", Role: "root"}, a},
		{"no role", Operator{Name: "x"}, a},
		{"unknown language", Operator{Name: "x", Role: RoleAdmin, Language: "fr"}, a},
		{"negative failures", Operator{Name: "x", Role: RoleAdmin, Failures: -1}, a},
		{"unstorable time", Operator{Name: "x", Role: RoleAdmin, CreatedAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}, a},
		{"audit without actor", Operator{Name: "x", Role: RoleAdmin}, AuditEntry{Action: "operator.add"}},
		{"audit without action", Operator{Name: "x", Role: RoleAdmin}, AuditEntry{Actor: "root"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := audited(t, s, 0, func() error { return s.CreateOperator(ctx, tt.o, tt.a) }); err == nil {
				t.Error("no error")
			}
			if _, err := s.Operator(ctx, tt.o.Name); !errors.Is(err, ErrNotFound) {
				t.Errorf("refused operator stored: %v", err)
			}
		})
	}

	// A zero CreatedAt means now; no TOTP secret stays nil.
	before := time.Now()
	if err := s.CreateOperator(ctx, Operator{Name: "suzuki", Role: RoleAuditor}, a); err != nil {
		t.Fatal(err)
	}
	if o := mustOperator(t, s, "suzuki"); o.CreatedAt.Before(before) || o.CreatedAt.After(time.Now()) || o.TOTPSealed != nil ||
		o.PasswordHash != "" || !o.Enabled() {
		t.Errorf("operator with defaults: %+v", o)
	}
	if _, err := s.Operator(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown operator: %v, want ErrNotFound", err)
	}

	createOperator(t, s, "abe", RoleAdmin)
	createOperator(t, s, "watanabe", RoleAdmin)
	os, err := s.Operators(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range os {
		names = append(names, o.Name)
	}
	if want := []string{"abe", "suzuki", "watanabe", "山田 太郎"}; !slices.Equal(names, want) {
		t.Errorf("Operators = %v, want %v", names, want)
	}
	if err := sameOperator(os[3], want); err != nil {
		t.Errorf("listed: %v", err)
	}
}

func TestUpdateOperator(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "root", RoleAdmin)
	yamada := createOperator(t, s, "yamada", RoleHelpdesk)
	errChange := errors.New("refused by the change")

	t.Run("changes and audits", func(t *testing.T) {
		var out Operator
		err := audited(t, s, 1, func() error {
			var err error
			out, err = s.UpdateOperator(ctx, "yamada", func(o *Operator, a *AuditEntry) error {
				if o.Role != RoleHelpdesk {
					t.Errorf("change sees role %q", o.Role)
				}
				o.Role, o.Language, o.PasswordHash = RoleAuditor, "en", "new-hash"
				o.Failures, o.LastFailureAt, o.LockedAt = 3, t0.Add(time.Minute), t0.Add(time.Minute)
				// Name and creation cannot change.
				o.Name, o.CreatedAt, o.CreatedBy = "someone else", t0.Add(time.Hour), "mallory"
				a.Detail = "role helpdesk -> auditor"
				return nil
			}, auditOf("operator.set_role", "yamada"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		want := yamada
		want.Role, want.Language, want.PasswordHash = RoleAuditor, "en", "new-hash"
		want.Failures, want.LastFailureAt, want.LockedAt = 3, t0.Add(time.Minute), t0.Add(time.Minute)
		if err := sameOperator(out, want); err != nil {
			t.Errorf("returned: %v", err)
		}
		if err := sameOperator(mustOperator(t, s, "yamada"), want); err != nil {
			t.Errorf("stored: %v", err)
		}
		if _, err := s.Operator(ctx, "someone else"); !errors.Is(err, ErrNotFound) {
			t.Errorf("renamed by a change: %v", err)
		}
		if e := lastAudit(t, s); e.Detail != "role helpdesk -> auditor" || e.Action != "operator.set_role" {
			t.Errorf("audit entry %+v", e)
		}
	})

	before := mustOperator(t, s, "yamada")
	for _, tt := range []struct {
		name    string
		op      string
		change  func(*Operator, *AuditEntry) error
		a       AuditEntry
		wantErr error
	}{
		{"change refuses", "yamada", func(o *Operator, _ *AuditEntry) error { o.Role = RoleAdmin; return errChange },
			auditOf("x", "yamada"), errChange},
		{"unknown role", "yamada", func(o *Operator, _ *AuditEntry) error { o.Role = "superuser"; return nil },
			auditOf("x", "yamada"), nil},
		{"unknown language", "yamada", func(o *Operator, _ *AuditEntry) error { o.Language = "de"; return nil },
			auditOf("x", "yamada"), nil},
		{"audit without actor", "yamada", func(o *Operator, _ *AuditEntry) error { o.Language = "ja"; return nil },
			AuditEntry{Action: "x"}, nil},
		{"change clears the actor", "yamada", func(o *Operator, a *AuditEntry) error { o.Language = "ja"; a.Actor = ""; return nil },
			auditOf("x", "yamada"), nil},
		{"unknown operator", "nobody", func(o *Operator, _ *AuditEntry) error { return nil },
			auditOf("x", "nobody"), ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := audited(t, s, 0, func() error {
				_, err := s.UpdateOperator(ctx, tt.op, tt.change, tt.a)
				return err
			})
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if err := sameOperator(mustOperator(t, s, "yamada"), before); err != nil {
				t.Errorf("changed by a refused update: %v", err)
			}
		})
	}
}

func TestLastAdmin(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "root", RoleAdmin)
	createOperator(t, s, "yamada", RoleHelpdesk)
	ses := signIn(t, s, "root", "root-1", t0)

	update := func(name string, change func(*Operator)) error {
		_, err := s.UpdateOperator(ctx, name, func(o *Operator, _ *AuditEntry) error {
			change(o)
			return nil
		}, auditOf("operator.change", name))
		return err
	}
	demote := func(o *Operator) { o.Role = RoleHelpdesk }
	disable := func(o *Operator) { o.DisabledAt = t0.Add(time.Hour) }
	enable := func(o *Operator) { o.DisabledAt = time.Time{} }
	promote := func(o *Operator) { o.Role = RoleAdmin }

	steps := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"demote the only admin", func() error { return update("root", demote) }, ErrLastAdmin},
		{"disable the only admin", func() error { return update("root", disable) }, ErrLastAdmin},
		{"delete the only admin", func() error { return s.DeleteOperator(ctx, "root", auditOf("operator.delete", "root")) }, ErrLastAdmin},
		{"other changes of the only admin", func() error { return update("root", func(o *Operator) { o.Language = "en" }) }, nil},
		{"changes of others", func() error { return update("yamada", disable) }, nil},
		{"re-enable", func() error { return update("yamada", enable) }, nil},
		{"promote a second admin", func() error { return update("yamada", promote) }, nil},
		{"now root may be demoted", func() error { return update("root", demote) }, nil},
		{"but yamada is the last one", func() error { return update("yamada", disable) }, ErrLastAdmin},
		{"a third admin", func() error {
			return s.CreateOperator(ctx, Operator{Name: "sato", Role: RoleAdmin, CreatedAt: t0}, auditOf("operator.add", "sato"))
		}, nil},
		{"disable the third admin", func() error { return update("sato", disable) }, nil},
		{"a disabled admin does not count", func() error { return update("yamada", disable) }, ErrLastAdmin},
		{"nor does a disabled admin's demotion", func() error { return update("yamada", demote) }, ErrLastAdmin},
		{"a disabled admin may be deleted", func() error { return s.DeleteOperator(ctx, "sato", auditOf("operator.delete", "sato")) }, nil},
		{"demoting a helpdesk with no other admin change", func() error { return update("root", func(o *Operator) { o.Role = RoleAuditor }) }, nil},
	}
	for _, st := range steps {
		before := auditCount(t, s)
		err := st.do()
		if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
			t.Fatalf("%s: err = %v, want %v", st.name, err, st.wantErr)
		}
		if st.wantErr != nil && auditCount(t, s) != before {
			t.Errorf("%s: refused, but %d audit entries appended", st.name, auditCount(t, s)-before)
		}
	}
	// The refusals changed nothing.
	if o := mustOperator(t, s, "yamada"); o.Role != RoleAdmin || !o.Enabled() {
		t.Errorf("yamada after refusals: %+v", o)
	}
	// root was refused being disabled: its session lived on.
	if _, _, err := s.SessionByHash(ctx, ses.IDHash); err != nil {
		t.Errorf("session of root: %v", err)
	}
	if err := s.VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}
}

func TestDisableEndsSessions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "root", RoleAdmin)
	createOperator(t, s, "yamada", RoleHelpdesk)
	s1 := signIn(t, s, "yamada", "y1", t0)
	s2 := signIn(t, s, "yamada", "y2", t0.Add(time.Minute))
	other := signIn(t, s, "root", "r1", t0)

	// A change that does not disable keeps the sessions.
	if _, err := s.UpdateOperator(ctx, "yamada", func(o *Operator, _ *AuditEntry) error { o.Language = "en"; return nil },
		auditOf("operator.set_language", "yamada")); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM web_sessions WHERE operator = 'yamada'`); n != 2 {
		t.Fatalf("%d sessions of yamada after a language change, want 2", n)
	}
	if err := audited(t, s, 1, func() error {
		_, err := s.UpdateOperator(ctx, "yamada", func(o *Operator, _ *AuditEntry) error { o.DisabledAt = t0.Add(time.Hour); return nil },
			auditOf("operator.disable", "yamada"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, ses := range []Session{s1, s2} {
		if _, _, err := s.SessionByHash(ctx, ses.IDHash); !errors.Is(err, ErrNotFound) {
			t.Errorf("session %s of a disabled operator: %v, want ErrNotFound", ses.CSRF, err)
		}
	}
	if _, o, err := s.SessionByHash(ctx, other.IDHash); err != nil || o.Name != "root" {
		t.Errorf("session of another operator: %v, %v", o.Name, err)
	}
	if o := mustOperator(t, s, "yamada"); o.Enabled() || !o.DisabledAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("disabled operator: %+v", o)
	}
}

func TestDeleteOperator(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "root", RoleAdmin)
	createOperator(t, s, "yamada", RoleHelpdesk)
	createOperator(t, s, "suzuki", RoleAuditor)
	for _, tok := range []OperatorToken{
		{ID: "y1", Name: "yamada", Hash: hashOf("y1"), CreatedAt: t0},
		{ID: "y2", Name: "yamada", Hash: hashOf("y2"), CreatedAt: t0, RevokedAt: t0},
		{ID: "s1", Name: "suzuki", Hash: hashOf("s1"), CreatedAt: t0},
		{ID: "r1", Name: "root", Hash: hashOf("r1"), CreatedAt: t0},
	} {
		if err := s.CreateOperatorToken(ctx, tok, auditOf("operator_token.create", tok.Name)); err != nil {
			t.Fatal(err)
		}
	}
	ys := signIn(t, s, "yamada", "y", t0)
	ss := signIn(t, s, "suzuki", "s", t0)
	rs := signIn(t, s, "root", "r", t0)

	if err := audited(t, s, 1, func() error { return s.DeleteOperator(ctx, "yamada", auditOf("operator.delete", "yamada")) }); err != nil {
		t.Fatal(err)
	}
	if e := lastAudit(t, s); e.Action != "operator.delete" || e.Target != "yamada" {
		t.Errorf("audit entry %+v", e)
	}
	if _, err := s.Operator(ctx, "yamada"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted operator: %v", err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM operator_tokens WHERE name = 'yamada'`); n != 0 {
		t.Errorf("%d tokens of the deleted operator left", n)
	}
	if _, _, err := s.SessionByHash(ctx, ys.IDHash); !errors.Is(err, ErrNotFound) {
		t.Errorf("session of the deleted operator: %v", err)
	}
	// Others keep theirs.
	if toks, err := s.OperatorTokens(ctx, "suzuki"); err != nil || len(toks) != 1 {
		t.Errorf("tokens of suzuki: %v, %v", toks, err)
	}
	for _, ses := range []Session{ss, rs} {
		if _, _, err := s.SessionByHash(ctx, ses.IDHash); err != nil {
			t.Errorf("session %s: %v", ses.CSRF, err)
		}
	}
	// A recreated operator of the same name inherits nothing.
	createOperator(t, s, "yamada", RoleAdmin)
	if toks, err := s.OperatorTokens(ctx, "yamada"); err != nil || len(toks) != 0 {
		t.Errorf("tokens of a recreated operator: %v, %v", toks, err)
	}

	for _, tt := range []struct {
		name    string
		op      string
		a       AuditEntry
		wantErr error
	}{
		{"unknown", "nobody", auditOf("operator.delete", "nobody"), ErrNotFound},
		{"audit without actor", "suzuki", AuditEntry{Action: "operator.delete"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := audited(t, s, 0, func() error { return s.DeleteOperator(ctx, tt.op, tt.a) })
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := s.Operator(ctx, "suzuki"); err != nil {
		t.Errorf("refused delete removed the operator: %v", err)
	}

	// The last enabled admin stays, with its tokens and sessions.
	if err := s.DeleteOperator(ctx, "yamada", auditOf("operator.delete", "yamada")); err != nil {
		t.Fatal(err)
	}
	err := audited(t, s, 0, func() error { return s.DeleteOperator(ctx, "root", auditOf("operator.delete", "root")) })
	if !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("deleting the last admin: %v, want ErrLastAdmin", err)
	}
	if _, err := s.OperatorTokenByHash(ctx, hashOf("r1")); err != nil {
		t.Errorf("token of the refused delete: %v", err)
	}
	if _, _, err := s.SessionByHash(ctx, rs.IDHash); err != nil {
		t.Errorf("session of the refused delete: %v", err)
	}
}

// TestDeleteOperatorWithoutAdmins: a store whose operators came from
// helpdesk tokens has no admin; deleting one of them must not be refused
// as the last admin.
func TestDeleteOperatorWithoutAdmins(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "yamada", RoleHelpdesk)
	createOperator(t, s, "suzuki", RoleAuditor)
	if err := audited(t, s, 1, func() error { return s.DeleteOperator(ctx, "yamada", auditOf("operator.delete", "yamada")) }); err != nil {
		t.Fatalf("deleting a helpdesk operator in a store without admins: %v", err)
	}
	if _, err := s.UpdateOperator(ctx, "suzuki", func(o *Operator, _ *AuditEntry) error { o.DisabledAt = t0; return nil },
		auditOf("operator.disable", "suzuki")); err != nil {
		t.Errorf("disabling an auditor in a store without admins: %v", err)
	}
}

func TestOperatorSignedIn(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "root", RoleAdmin)
	createOperator(t, s, "yamada", RoleHelpdesk)
	at := t0.Add(time.Minute)
	for range 2 {
		if _, err := s.RecordOperatorFailure(ctx, "yamada", t0, 10, auditOf("operator.sign_in_failed", "yamada")); err != nil {
			t.Fatal(err)
		}
	}

	ses := newSession("y1", "yamada", at)
	in := SignIn{Name: "yamada", ExpectLastStep: 0, LastStep: 1000, Offset: -1, At: at, Session: ses}
	var o Operator
	if err := audited(t, s, 1, func() error {
		var err error
		o, err = s.OperatorSignedIn(ctx, in, auditOf("operator.sign_in", "yamada"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if o.TOTPLastStep != 1000 || o.TOTPOffset != -1 || o.Failures != 0 || !o.LastSignInAt.Equal(at) || !o.LastFailureAt.Equal(t0) {
		t.Errorf("after sign-in: %+v", o)
	}
	if err := sameOperator(mustOperator(t, s, "yamada"), o); err != nil {
		t.Errorf("stored: %v", err)
	}
	got, so, err := s.SessionByHash(ctx, ses.IDHash)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.IDHash, ses.IDHash) || got.Operator != "yamada" || got.CSRF != ses.CSRF || !got.CreatedAt.Equal(at) ||
		!got.LastSeenAt.Equal(at) || got.RemoteAddr != ses.RemoteAddr || got.UserAgent != ses.UserAgent {
		t.Errorf("session %+v, want %+v", got, ses)
	}
	if err := sameOperator(so, o); err != nil {
		t.Errorf("session's operator: %v", err)
	}

	sessions := func() int { return count(t, s, `SELECT COUNT(*) FROM web_sessions`) }
	for _, tt := range []struct {
		name    string
		in      SignIn
		a       AuditEntry
		wantErr error
	}{
		{"replayed step", SignIn{Name: "yamada", ExpectLastStep: 0, LastStep: 1000, At: at, Session: newSession("x", "yamada", at)},
			auditOf("operator.sign_in", "yamada"), ErrConflict},
		{"stale expectation", SignIn{Name: "yamada", ExpectLastStep: 999, LastStep: 1001, At: at, Session: newSession("x", "yamada", at)},
			auditOf("operator.sign_in", "yamada"), ErrConflict},
		{"step not after the last", SignIn{Name: "yamada", ExpectLastStep: 1000, LastStep: 1000, At: at, Session: newSession("x", "yamada", at)},
			auditOf("operator.sign_in", "yamada"), ErrConflict},
		{"step going back", SignIn{Name: "yamada", ExpectLastStep: 1000, LastStep: 999, At: at, Session: newSession("x", "yamada", at)},
			auditOf("operator.sign_in", "yamada"), ErrConflict},
		{"unknown operator", SignIn{Name: "nobody", ExpectLastStep: 0, LastStep: 1, At: at, Session: newSession("x", "nobody", at)},
			auditOf("operator.sign_in", "nobody"), ErrNotFound},
		{"session without CSRF", SignIn{Name: "yamada", ExpectLastStep: 1000, LastStep: 1001, At: at,
			Session: Session{IDHash: hashOf("x"), Operator: "yamada", CreatedAt: at, LastSeenAt: at}},
			auditOf("operator.sign_in", "yamada"), nil},
		{"session without times", SignIn{Name: "yamada", ExpectLastStep: 1000, LastStep: 1001, At: at,
			Session: Session{IDHash: hashOf("x"), Operator: "yamada", CSRF: "c"}},
			auditOf("operator.sign_in", "yamada"), nil},
		{"session ID taken", SignIn{Name: "yamada", ExpectLastStep: 1000, LastStep: 1001, At: at, Session: newSession("y1", "yamada", at)},
			auditOf("operator.sign_in", "yamada"), nil},
		{"audit without actor", SignIn{Name: "yamada", ExpectLastStep: 1000, LastStep: 1001, At: at, Session: newSession("x", "yamada", at)},
			AuditEntry{Action: "operator.sign_in"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := sessions()
			err := audited(t, s, 0, func() error {
				_, err := s.OperatorSignedIn(ctx, tt.in, tt.a)
				return err
			})
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if n := sessions(); n != before {
				t.Errorf("%d sessions, want %d", n, before)
			}
			// The step is taken all or nothing: a failed session insert
			// leaves it as it was.
			if err := sameOperator(mustOperator(t, s, "yamada"), o); err != nil {
				t.Errorf("changed by a refused sign-in: %v", err)
			}
		})
	}

	// Locked and disabled operators are refused, even with a fresh step.
	locked := createOperator(t, s, "sato", RoleHelpdesk)
	if _, err := s.RecordOperatorFailure(ctx, "sato", t0, 1, auditOf("operator.sign_in_failed", "sato")); err != nil {
		t.Fatal(err)
	}
	disabled := createOperator(t, s, "suzuki", RoleAuditor)
	if _, err := s.UpdateOperator(ctx, "suzuki", func(o *Operator, _ *AuditEntry) error { o.DisabledAt = t0; return nil },
		auditOf("operator.disable", "suzuki")); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Operator{locked, disabled} {
		err := audited(t, s, 0, func() error {
			_, err := s.OperatorSignedIn(ctx, SignIn{Name: o.Name, ExpectLastStep: 0, LastStep: 5, At: at,
				Session: newSession("z-"+o.Name, o.Name, at)}, auditOf("operator.sign_in", o.Name))
			return err
		})
		if !errors.Is(err, ErrConflict) {
			t.Errorf("%s: err = %v, want ErrConflict", o.Name, err)
		}
		if got := mustOperator(t, s, o.Name); got.TOTPLastStep != 0 || !got.LastSignInAt.IsZero() {
			t.Errorf("%s after a refused sign-in: %+v", o.Name, got)
		}
	}
}

// TestOperatorSignedInConcurrent: of many sign-ins with the same code,
// exactly one wins.
func TestOperatorSignedInConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "yamada", RoleHelpdesk)
	before := auditCount(t, s)
	var (
		wg        sync.WaitGroup
		won, lost atomic.Int32
	)
	for i := range 16 {
		wg.Go(func() {
			_, err := s.OperatorSignedIn(ctx, SignIn{Name: "yamada", ExpectLastStep: 0, LastStep: 77, At: t0,
				Session: newSession(fmt.Sprint(i), "yamada", t0)}, auditOf("operator.sign_in", "yamada"))
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, ErrConflict):
				lost.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || lost.Load() != 15 {
		t.Errorf("%d won, %d lost; want 1 and 15", won.Load(), lost.Load())
	}
	if n := count(t, s, `SELECT COUNT(*) FROM web_sessions`); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	if n := auditCount(t, s) - before; n != 1 {
		t.Errorf("%d audit entries, want 1", n)
	}
}

func TestRecordOperatorFailure(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "yamada", RoleHelpdesk)
	for i := 1; i <= 5; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		var o Operator
		if err := audited(t, s, 1, func() error {
			var err error
			o, err = s.RecordOperatorFailure(ctx, "yamada", at, 3, auditOf("operator.sign_in_failed", "yamada"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		wantLocked := time.Time{}
		if i >= 3 {
			// Locked at the third; later failures keep the first lock's time.
			wantLocked = t0.Add(3 * time.Minute)
		}
		if o.Failures != i || !o.LastFailureAt.Equal(at) || !o.LockedAt.Equal(wantLocked) {
			t.Errorf("failure %d: failures %d, last %v, locked %v; want locked %v", i, o.Failures, o.LastFailureAt, o.LockedAt, wantLocked)
		}
		if err := sameOperator(mustOperator(t, s, "yamada"), o); err != nil {
			t.Errorf("failure %d stored: %v", i, err)
		}
	}

	createOperator(t, s, "suzuki", RoleAuditor)
	for range 20 {
		if o, err := s.RecordOperatorFailure(ctx, "suzuki", t0, 0, auditOf("operator.sign_in_failed", "suzuki")); err != nil || !o.LockedAt.IsZero() {
			t.Fatalf("lockAfter 0: %+v, %v", o, err)
		}
	}
	for _, tt := range []struct {
		name string
		op   string
		at   time.Time
		a    AuditEntry
	}{
		{"unknown", "nobody", t0, auditOf("operator.sign_in_failed", "nobody")},
		{"audit without actor", "suzuki", t0, AuditEntry{Action: "x"}},
		{"unstorable time", "suzuki", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), auditOf("operator.sign_in_failed", "suzuki")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := audited(t, s, 0, func() error {
				_, err := s.RecordOperatorFailure(ctx, tt.op, tt.at, 3, tt.a)
				return err
			}); err == nil {
				t.Error("no error")
			}
		})
	}
	if _, err := s.RecordOperatorFailure(ctx, "nobody", t0, 3, auditOf("x", "nobody")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v, want ErrNotFound", err)
	}
	if o := mustOperator(t, s, "suzuki"); o.Failures != 20 {
		t.Errorf("suzuki has %d failures, want 20", o.Failures)
	}

	// Concurrent failures all count, and lock exactly at the limit.
	createOperator(t, s, "sato", RoleHelpdesk)
	var (
		wg      sync.WaitGroup
		lockedN atomic.Int32
	)
	for i := range 12 {
		wg.Go(func() {
			o, err := s.RecordOperatorFailure(ctx, "sato", t0.Add(time.Duration(i)*time.Second), 10, auditOf("x", "sato"))
			if err != nil {
				t.Error(err)
			}
			if o.Failures == 10 && !o.LockedAt.IsZero() {
				lockedN.Add(1)
			}
		})
	}
	wg.Wait()
	if o := mustOperator(t, s, "sato"); o.Failures != 12 || o.LockedAt.IsZero() || lockedN.Load() != 1 {
		t.Errorf("after 12 concurrent failures: %d failures, locked %v; %d callers saw the lock at 10", o.Failures, o.LockedAt, lockedN.Load())
	}
}

func TestOperatorTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "root", RoleAdmin)
	createOperator(t, s, "yamada", RoleHelpdesk)
	exp := t0.Add(30 * 24 * time.Hour)
	toks := []OperatorToken{
		// Role is the operator's, whatever the caller says.
		{ID: "k1", Name: "yamada", Role: RoleAdmin, Hash: hashOf("k1"), CreatedAt: t0, ExpiresAt: exp, Note: "監査用 script"},
		{ID: "k2", Name: "yamada", Hash: hashOf("k2"), CreatedAt: t0.Add(time.Hour)},
		{ID: "k3", Name: "root", Hash: hashOf("k3"), CreatedAt: t0.Add(2 * time.Hour)},
	}
	for _, tok := range toks {
		if err := audited(t, s, 1, func() error {
			return s.CreateOperatorToken(ctx, tok, auditOf("operator_token.create", tok.Name))
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name    string
		tok     OperatorToken
		a       AuditEntry
		wantErr error
	}{
		{"unknown operator", OperatorToken{ID: "x", Name: "nobody", Hash: hashOf("x")}, auditOf("x", "nobody"), ErrNotFound},
		{"taken ID", OperatorToken{ID: "k1", Name: "yamada", Hash: hashOf("x")}, auditOf("x", "yamada"), nil},
		{"taken hash", OperatorToken{ID: "x", Name: "yamada", Hash: hashOf("k2")}, auditOf("x", "yamada"), nil},
		{"no ID", OperatorToken{Name: "yamada", Hash: hashOf("x")}, auditOf("x", "yamada"), nil},
		{"no hash", OperatorToken{ID: "x", Name: "yamada"}, auditOf("x", "yamada"), nil},
		{"unstorable expiry", OperatorToken{ID: "x", Name: "yamada", Hash: hashOf("x"), ExpiresAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)},
			auditOf("x", "yamada"), nil},
		{"audit without actor", OperatorToken{ID: "x", Name: "yamada", Hash: hashOf("x")}, AuditEntry{Action: "x"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := audited(t, s, 0, func() error { return s.CreateOperatorToken(ctx, tt.tok, tt.a) })
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := s.OperatorTokenByHash(ctx, hashOf("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused token stored: %v", err)
	}

	got, err := s.OperatorTokenByHash(ctx, hashOf("k1"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "k1" || got.Name != "yamada" || got.Role != RoleHelpdesk || !bytes.Equal(got.Hash, hashOf("k1")) ||
		!got.CreatedAt.Equal(t0) || !got.ExpiresAt.Equal(exp) || !got.RevokedAt.IsZero() || got.Note != "監査用 script" || got.OperatorDisabled {
		t.Errorf("OperatorTokenByHash = %+v", got)
	}
	if got, err := s.OperatorTokenByHash(ctx, hashOf("k2")); err != nil || !got.ExpiresAt.IsZero() {
		t.Errorf("token without expiry: %+v, %v", got, err)
	}

	// Newest first, without hashes; the role as created.
	list, err := s.OperatorTokens(ctx, "yamada")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "k2" || list[1].ID != "k1" || list[1].Hash != nil || list[1].Role != RoleHelpdesk ||
		!list[1].ExpiresAt.Equal(exp) || list[1].Note != "監査用 script" || !list[0].CreatedAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("OperatorTokens(yamada) = %+v", list)
	}
	if list, err := s.OperatorTokens(ctx, "nobody"); err != nil || len(list) != 0 {
		t.Errorf("OperatorTokens(nobody) = %+v, %v", list, err)
	}

	// The token follows its operator's role and enabled state.
	if _, err := s.UpdateOperator(ctx, "yamada", func(o *Operator, _ *AuditEntry) error { o.Role = RoleAuditor; return nil },
		auditOf("operator.set_role", "yamada")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.OperatorTokenByHash(ctx, hashOf("k1")); err != nil || got.Role != RoleAuditor || got.OperatorDisabled {
		t.Errorf("after demotion: %+v, %v", got, err)
	}
	if list, _ := s.OperatorTokens(ctx, "yamada"); len(list) != 2 || list[1].Role != RoleHelpdesk {
		t.Errorf("listed role after demotion: %+v (want the role at creation)", list)
	}
	if _, err := s.UpdateOperator(ctx, "yamada", func(o *Operator, _ *AuditEntry) error { o.DisabledAt = t0; return nil },
		auditOf("operator.disable", "yamada")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.OperatorTokenByHash(ctx, hashOf("k1")); err != nil || !got.OperatorDisabled {
		t.Errorf("after disabling: %+v, %v", got, err)
	}

	// Revocation.
	revokedAt := t0.Add(3 * time.Hour)
	if err := audited(t, s, 1, func() error {
		return s.RevokeOperatorToken(ctx, "k1", revokedAt, auditOf("operator_token.revoke", "k1"))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OperatorTokenByHash(ctx, hashOf("k1")); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked token: %v, want ErrRevoked", err)
	}
	if list, _ := s.OperatorTokens(ctx, "yamada"); len(list) != 2 || !list[1].RevokedAt.Equal(revokedAt) {
		t.Errorf("listed after revocation: %+v", list)
	}
	for _, tt := range []struct {
		name    string
		id      string
		at      time.Time
		a       AuditEntry
		wantErr error
	}{
		{"again", "k1", revokedAt.Add(time.Hour), auditOf("operator_token.revoke", "k1"), ErrRevoked},
		{"unknown", "nope", revokedAt, auditOf("operator_token.revoke", "nope"), ErrNotFound},
		{"audit without actor", "k2", revokedAt, AuditEntry{Action: "operator_token.revoke"}, nil},
		{"unstorable time", "k2", time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), auditOf("operator_token.revoke", "k2"), nil},
	} {
		t.Run("revoke "+tt.name, func(t *testing.T) {
			err := audited(t, s, 0, func() error { return s.RevokeOperatorToken(ctx, tt.id, tt.at, tt.a) })
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// The first revocation's time stays; k2 is still live.
	if list, _ := s.OperatorTokens(ctx, "yamada"); !list[1].RevokedAt.Equal(revokedAt) || !list[0].RevokedAt.IsZero() {
		t.Errorf("after refused revocations: %+v", list)
	}
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "yamada", RoleHelpdesk)
	ses := signIn(t, s, "yamada", "a", t0)

	seen := func() time.Time {
		t.Helper()
		got, _, err := s.SessionByHash(ctx, ses.IDHash)
		if err != nil {
			t.Fatal(err)
		}
		return got.LastSeenAt
	}
	for _, tt := range []struct {
		name string
		at   time.Time
		want time.Time
	}{
		{"forward", t0.Add(time.Minute), t0.Add(time.Minute)},
		{"same time", t0.Add(time.Minute), t0.Add(time.Minute)},
		{"never back", t0.Add(30 * time.Second), t0.Add(time.Minute)},
		{"forward by a nanosecond", t0.Add(time.Minute + 1), t0.Add(time.Minute + 1)},
	} {
		if err := s.TouchSession(ctx, ses.IDHash, tt.at); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if got := seen(); !got.Equal(tt.want) {
			t.Errorf("%s: last seen %v, want %v", tt.name, got, tt.want)
		}
	}
	if err := s.TouchSession(ctx, hashOf("nope"), t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("touching an unknown session: %v, want ErrNotFound", err)
	}
	if _, _, err := s.SessionByHash(ctx, hashOf("nope")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown session: %v, want ErrNotFound", err)
	}

	// Deleting, with and without an audit entry.
	quiet := signIn(t, s, "yamada", "b", t0)
	if err := audited(t, s, 0, func() error { return s.DeleteSession(ctx, quiet.IDHash, nil) }); err != nil {
		t.Fatal(err)
	}
	a := auditOf("operator.sign_out", "yamada")
	if err := audited(t, s, 0, func() error { return s.DeleteSession(ctx, ses.IDHash, &AuditEntry{Action: "x"}) }); err == nil {
		t.Error("audit entry without actor accepted")
	}
	if _, _, err := s.SessionByHash(ctx, ses.IDHash); err != nil {
		t.Errorf("session deleted although its audit entry was refused: %v", err)
	}
	if err := audited(t, s, 1, func() error { return s.DeleteSession(ctx, ses.IDHash, &a) }); err != nil {
		t.Fatal(err)
	}
	if e := lastAudit(t, s); e.Action != "operator.sign_out" {
		t.Errorf("audit entry %+v", e)
	}
	for _, h := range [][]byte{ses.IDHash, quiet.IDHash} {
		if _, _, err := s.SessionByHash(ctx, h); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted session: %v", err)
		}
		if err := audited(t, s, 0, func() error { return s.DeleteSession(ctx, h, &a) }); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleting again: %v, want ErrNotFound", err)
		}
	}
}

func TestDeleteExpiredSessions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createOperator(t, s, "yamada", RoleHelpdesk)
	// created at t0+c minutes, last seen t0+l minutes.
	for _, x := range []struct {
		id   string
		c, l int
	}{{"old-busy", 0, 100}, {"new-idle", 50, 55}, {"edge", 60, 90}, {"fresh", 80, 100}, {"idle-edge", 70, 90}} {
		ses := signIn(t, s, "yamada", x.id, t0.Add(time.Duration(x.c)*time.Minute))
		if err := s.TouchSession(ctx, ses.IDHash, t0.Add(time.Duration(x.l)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	// Idle since before t0+90m, or created before t0+60m.
	n, err := s.DeleteExpiredSessions(ctx, t0.Add(90*time.Minute), t0.Add(60*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("deleted %d sessions, want 2", n)
	}
	for id, want := range map[string]bool{"old-busy": false, "new-idle": false, "edge": true, "fresh": true, "idle-edge": true} {
		_, _, err := s.SessionByHash(ctx, hashOf("session-"+id))
		if (err == nil) != want {
			t.Errorf("session %s: %v, want kept %v", id, err, want)
		}
	}
	if n, err := s.DeleteExpiredSessions(ctx, t0.Add(90*time.Minute), t0.Add(60*time.Minute)); err != nil || n != 0 {
		t.Errorf("again: %d, %v", n, err)
	}
}

// TestMigrateOperatorsFromTokens opens a database that only migrations
// 0001-0003 created, holding operator tokens, and finds an operator for
// each name that had tokens, with the most powerful role among them.
func TestMigrateOperatorsFromTokens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	ms, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 4 || ms[3].version != 4 {
		t.Fatalf("migrations %v: want 0004 fourth", ms)
	}
	db, err := sql.Open("sqlite", path+"?_foreign_keys=1&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(ctx, db, ms[:3]); err != nil {
		t.Fatal(err)
	}
	ns := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	for _, row := range []struct {
		id, name, role string
		created        int64
		revoked        any
	}{
		{"a1", "yamada", RoleHelpdesk, ns(2 * time.Hour), nil},
		{"a2", "yamada", RoleAdmin, ns(time.Hour), ns(3 * time.Hour)}, // revoked: still the strongest role
		{"a3", "yamada", RoleAuditor, ns(4 * time.Hour), nil},
		{"b1", "suzuki", RoleAuditor, ns(0), nil},
		{"c1", "sato", RoleHelpdesk, ns(5 * time.Hour), nil},
		{"c2", "sato", RoleAuditor, ns(6 * time.Hour), nil},
	} {
		if _, err := db.Exec(`INSERT INTO operator_tokens (id, name, role, hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			row.id, row.name, row.role, hashOf(row.id), row.created, row.revoked); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	os, err := s.Operators(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Operator{
		{Name: "sato", Role: RoleHelpdesk, CreatedAt: t0.Add(5 * time.Hour), CreatedBy: "migration 0004"},
		{Name: "suzuki", Role: RoleAuditor, CreatedAt: t0, CreatedBy: "migration 0004"},
		{Name: "yamada", Role: RoleAdmin, CreatedAt: t0.Add(time.Hour), CreatedBy: "migration 0004"},
	}
	if len(os) != len(want) {
		t.Fatalf("operators after migration: %+v", os)
	}
	for i := range want {
		if err := sameOperator(os[i], want[i]); err != nil {
			t.Errorf("operator %d: %v", i, err)
		}
	}
	// The tokens work, in their operator's name and role.
	got, err := s.OperatorTokenByHash(ctx, hashOf("a3"))
	if err != nil || got.Name != "yamada" || got.Role != RoleAdmin || !got.ExpiresAt.IsZero() || got.Note != "" || got.OperatorDisabled {
		t.Errorf("migrated token: %+v, %v", got, err)
	}
	if _, err := s.OperatorTokenByHash(ctx, hashOf("a2")); !errors.Is(err, ErrRevoked) {
		t.Errorf("migrated revoked token: %v", err)
	}
	if list, err := s.OperatorTokens(ctx, "sato"); err != nil || len(list) != 2 || list[0].ID != "c2" || list[0].Role != RoleAuditor {
		t.Errorf("migrated tokens of sato: %+v, %v", list, err)
	}
	// The migrated operators can be managed: yamada is the only admin.
	if err := s.DeleteOperator(ctx, "yamada", auditOf("operator.delete", "yamada")); !errors.Is(err, ErrLastAdmin) {
		t.Errorf("deleting the only migrated admin: %v, want ErrLastAdmin", err)
	}
	if err := s.DeleteOperator(ctx, "sato", auditOf("operator.delete", "sato")); err != nil {
		t.Errorf("deleting a migrated helpdesk operator: %v", err)
	}
}
