package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func newToken(serial string) HardwareToken {
	return HardwareToken{
		Serial: serial, Kind: TokenHOTP, SecretSealed: []byte("sealed-" + serial), Algorithm: "SHA1", Digits: 6,
		Counter: 7, NotAfter: t0.Add(365 * 24 * time.Hour), CreatedAt: t0, CreatedBy: "admin",
	}
}

func importAudit() AuditEntry {
	return AuditEntry{Time: t0, Actor: "admin (admin, token)", Action: "user.import"}
}

// TestImportTokens: users and unassigned tokens in one transaction with
// the audit entry; a serial belongs to one user or unassigned token; any
// conflict stores nothing, audit entry included.
func TestImportTokens(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	hotp := newUser("hana")
	hotp.Kind, hotp.Period, hotp.Counter, hotp.NotAfter = TokenHOTP, 0, 42, t0.Add(time.Hour)
	res, err := s.ImportTokens(ctx, TokenImport{Users: []User{newUser("a"), hotp}, Unassigned: []HardwareToken{newToken("T1"), newToken("T2")}}, importAudit())
	if err != nil {
		t.Fatal(err)
	}
	if res != (ImportResult{Created: 2, Unassigned: 2}) {
		t.Errorf("result %+v", res)
	}
	u, err := s.User(ctx, "hana")
	if err != nil || u.Kind != TokenHOTP || u.Counter != 42 || u.Period != 0 || !u.NotAfter.Equal(t0.Add(time.Hour)) {
		t.Fatalf("hana: %+v, %v", u, err)
	}
	if u, _ := s.User(ctx, "a"); u.Kind != TokenTOTP || u.Period != 60 || !u.NotAfter.IsZero() {
		t.Errorf("a: %+v", u)
	}
	ts, err := s.HardwareTokens(ctx)
	if err != nil || len(ts) != 2 || ts[0].Serial != "T1" || ts[0].Counter != 7 || ts[0].Kind != TokenHOTP {
		t.Fatalf("tokens %+v, %v", ts, err)
	}
	if n := auditCount(t, s); n != 1 {
		t.Fatalf("%d audit entries, want 1", n)
	}

	for _, tt := range []struct {
		name string
		in   TokenImport
		want string
	}{
		{"existing user", TokenImport{Users: []User{newUser("b"), newUser("a")}}, "user a"},
		{"serial of another user", TokenImport{Users: []User{func() User { u := newUser("c"); u.TokenSerial = "SN-a"; return u }()}}, "token SN-a belongs to user a"},
		{"serial unassigned", TokenImport{Users: []User{func() User { u := newUser("c"); u.TokenSerial = "T1"; return u }()}}, "token T1 is imported already, unassigned"},
		{"unassigned serial of a user", TokenImport{Unassigned: []HardwareToken{newToken("SN-hana")}}, "token SN-hana belongs to user hana"},
		{"unassigned twice", TokenImport{Unassigned: []HardwareToken{newToken("T2")}}, "token T2 is imported already"},
	} {
		_, err := s.ImportTokens(ctx, tt.in, importAudit())
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrExists with %q", tt.name, err, tt.want)
		}
	}
	for _, tt := range []struct {
		name string
		in   TokenImport
		want string
	}{
		{"serial twice", TokenImport{Users: []User{newUser("x")}, Unassigned: []HardwareToken{newToken("SN-x")}}, "token SN-x appears more than once"},
		{"TOTP with counter", TokenImport{Users: []User{func() User { u := newUser("y"); u.Counter = 1; return u }()}}, "no counter"},
		{"HOTP with period", TokenImport{Unassigned: []HardwareToken{func() HardwareToken { t := newToken("T9"); t.Period = 30; return t }()}}, "no period"},
		{"bad kind", TokenImport{Unassigned: []HardwareToken{func() HardwareToken { t := newToken("T9"); t.Kind = "motp"; return t }()}}, "unknown token kind"},
	} {
		if _, err := s.ImportTokens(ctx, tt.in, importAudit()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if us, _ := s.Users(ctx); len(us) != 2 {
		t.Errorf("failed imports left %d users, want 2", len(us))
	}
	if n := auditCount(t, s); n != 1 {
		t.Errorf("failed imports left %d audit entries, want 1", n)
	}
	// The audit entry is part of the transaction: an entry the log
	// refuses stores no token.
	if _, err := s.ImportTokens(ctx, TokenImport{Unassigned: []HardwareToken{newToken("T5")}}, AuditEntry{}); err == nil {
		t.Fatal("import without an audit actor succeeded")
	}
	if _, err := s.HardwareToken(ctx, "T5"); !errors.Is(err, ErrNotFound) {
		t.Errorf("import refused for its audit entry stored T5: %v", err)
	}

	// Replace: a user's token, and an unassigned token given to a user.
	repl := newUser("a")
	repl.TokenSerial = "T1"
	res, err = s.ImportTokens(ctx, TokenImport{Users: []User{repl}, Unassigned: []HardwareToken{newToken("T2")}, Replace: true}, importAudit())
	if err != nil {
		t.Fatal(err)
	}
	if res != (ImportResult{Replaced: 2, Unassigned: 1}) {
		t.Errorf("replace result %+v", res)
	}
	if u, _ := s.User(ctx, "a"); u.TokenSerial != "T1" {
		t.Errorf("a after replace: %+v", u)
	}
	if ts, _ := s.HardwareTokens(ctx); len(ts) != 1 || ts[0].Serial != "T2" {
		t.Errorf("tokens after replace: %+v", ts)
	}
}

// TestImportTokens100000 stores 100,000 tokens in one transaction.
func TestImportTokens100000(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	s, _ := openTest(t)
	var in TokenImport
	for i := range 100_000 {
		if i%2 == 0 {
			in.Users = append(in.Users, newUser(fmt.Sprintf("u%06d", i)))
		} else {
			in.Unassigned = append(in.Unassigned, newToken(fmt.Sprintf("T%06d", i)))
		}
	}
	start := time.Now()
	res, err := s.ImportTokens(context.Background(), in, importAudit())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("100,000 tokens stored in %v", time.Since(start))
	if res.Created != 50_000 || res.Unassigned != 50_000 {
		t.Errorf("result %+v", res)
	}
}

// TestAssignToken moves an unassigned token to a user, with its audit
// entry, once.
func TestAssignToken(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	if _, err := s.ImportTokens(ctx, TokenImport{Users: []User{newUser("a")}, Unassigned: []HardwareToken{newToken("T1")}}, importAudit()); err != nil {
		t.Fatal(err)
	}
	assign := func(name string, replace bool) (User, error) {
		u := newUser(name)
		u.TokenSerial, u.Kind, u.Period, u.Counter = "T1", TokenHOTP, 0, 7
		return s.AssignToken(ctx, "T1", u, replace, AuditEntry{Time: t0, Actor: "admin", Action: "user.assign"})
	}
	if _, err := assign("a", false); !errors.Is(err, ErrExists) {
		t.Fatalf("assign to an existing user = %v, want ErrExists", err)
	}
	u, err := assign("b", false)
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "b" || u.Kind != TokenHOTP || u.Counter != 7 || u.State != UserPending {
		t.Errorf("assigned: %+v", u)
	}
	if _, err := assign("c", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("second assign = %v, want ErrNotFound", err)
	}
	if n := auditCount(t, s); n != 2 {
		t.Errorf("%d audit entries, want 2 (import, assign)", n)
	}
}
