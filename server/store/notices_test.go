package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestUserNotices(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if err := s.CreateUser(ctx, newUser("u"), codes("r", 2), tAudit); err != nil {
		t.Fatal(err)
	}
	if n, err := s.TakeUserNotice(ctx, "u"); err != nil || n != "" {
		t.Fatalf("no notice: TakeUserNotice = %q, %v", n, err)
	}
	// A check that refuses changes nothing and appends no audit entry.
	audits := func() int {
		es, err := s.AuditLog(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	before := audits()
	no := errors.New("not now")
	if _, err := s.AddUserNotice(ctx, "u", "refused", func(User) error { return no }, tAudit); !errors.Is(err, no) {
		t.Fatalf("refusing check: %v", err)
	}
	if u := mustUser(t, s, "u"); u.Notice != "" || audits() != before {
		t.Fatalf("refused notice stored: %q, %d audit entries (was %d)", u.Notice, audits(), before)
	}
	// The newest five are kept, one a line.
	for i := range 7 {
		if _, err := s.AddUserNotice(ctx, "u", fmt.Sprintf("notice %d", i), nil, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ReplaceRecoveryCodes(ctx, "u", codes("s", 2), "notice 7", tAudit); err != nil {
		t.Fatal(err)
	}
	want := "notice 3\nnotice 4\nnotice 5\nnotice 6\nnotice 7"
	if u := mustUser(t, s, "u"); u.Notice != want || audits() != before+8 {
		t.Fatalf("notices %q, %d audit entries; want %q, %d", u.Notice, audits(), want, before+8)
	}
	if n, err := s.TakeUserNotice(ctx, "u"); err != nil || n != want {
		t.Fatalf("TakeUserNotice = %q, %v", n, err)
	}
	if n, err := s.TakeUserNotice(ctx, "u"); err != nil || n != "" {
		t.Fatalf("taken twice: %q, %v", n, err)
	}
	for _, bad := range []string{"two\nlines", strings.Repeat("x", maxNoticeBytes+1), "\xff"} {
		if _, err := s.AddUserNotice(ctx, "u", bad, nil, tAudit); err == nil {
			t.Errorf("AddUserNotice(%.20q) accepted", bad)
		}
	}
	if _, err := s.AddUserNotice(ctx, "nobody", "n", nil, tAudit); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := s.TakeUserNotice(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := s.AddUserNotice(ctx, "u", "n", nil, AuditEntry{}); err == nil {
		t.Error("AddUserNotice without an audit entry accepted")
	}
}
