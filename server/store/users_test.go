package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func newUser(name string) User {
	return User{
		Name: name, SecretSealed: []byte("sealed-" + name), Algorithm: "SHA256", Digits: 8, Period: 60,
		Source: SourceImported, TokenSerial: "SN-" + name, CreatedAt: t0, CreatedBy: "admin",
	}
}

func codes(prefix string, n int) [][]byte {
	var hs [][]byte
	for i := range n {
		hs = append(hs, hashOf(fmt.Sprintf("%s-%d", prefix, i)))
	}
	return hs
}

func createUser(tb testing.TB, s *DB, name string, recovery [][]byte) User {
	tb.Helper()
	u := newUser(name)
	if err := s.CreateUser(context.Background(), u, recovery, tAudit); err != nil {
		tb.Fatal(err)
	}
	got, err := s.User(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

func mustUser(tb testing.TB, s *DB, name string) User {
	tb.Helper()
	u, err := s.User(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// sameUser reports the first difference between two users, times compared
// with Equal.
func sameUser(got, want User) error {
	if want.Kind == "" {
		want.Kind = TokenTOTP // what a user without a kind gets
	}
	times := [][3]any{
		{"LockedAt", got.LockedAt, want.LockedAt}, {"LastFailureAt", got.LastFailureAt, want.LastFailureAt},
		{"CreatedAt", got.CreatedAt, want.CreatedAt}, {"ConfirmedAt", got.ConfirmedAt, want.ConfirmedAt},
		{"LastLoginAt", got.LastLoginAt, want.LastLoginAt},
	}
	for _, tt := range times {
		if !tt[1].(time.Time).Equal(tt[2].(time.Time)) {
			return fmt.Errorf("%s = %v, want %v", tt[0], tt[1], tt[2])
		}
	}
	got.LockedAt, got.LastFailureAt, got.CreatedAt, got.ConfirmedAt, got.LastLoginAt = want.LockedAt,
		want.LastFailureAt, want.CreatedAt, want.ConfirmedAt, want.LastLoginAt
	if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
		return fmt.Errorf("got  %s\nwant %s", g, w)
	}
	return nil
}

func TestCreateUser(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	u := newUser("yamada")
	// TOTP state, failures and lock of a new user are ignored.
	u.LastStep, u.Offset, u.Failures, u.LockedAt, u.LastLoginAt = 9, 2, 3, t0, t0
	if err := s.CreateUser(ctx, u, codes("r", 10), tAudit); err != nil {
		t.Fatal(err)
	}
	want := newUser("yamada")
	want.State, want.RecoveryCodesLeft = UserPending, 10
	if err := sameUser(mustUser(t, s, "yamada"), want); err != nil {
		t.Error(err)
	}

	// Defaults.
	if err := s.CreateUser(ctx, User{Name: "sato", SecretSealed: []byte{1}}, nil, tAudit); err != nil {
		t.Fatal(err)
	}
	sato := mustUser(t, s, "sato")
	if sato.State != UserPending || sato.Algorithm != "SHA1" || sato.Digits != 6 || sato.Period != 30 ||
		sato.Source != SourceEnrolled || sato.CreatedAt.IsZero() || sato.RecoveryCodesLeft != 0 {
		t.Errorf("defaults: %+v", sato)
	}

	err := s.CreateUser(ctx, newUser("yamada"), codes("other", 2), tAudit)
	if !errors.Is(err, ErrExists) {
		t.Errorf("taken name: err = %v, want ErrExists", err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM recovery_codes WHERE user_name = 'yamada'`); n != 10 {
		t.Errorf("taken name: yamada has %d recovery codes, want 10", n)
	}
	if _, err := s.User(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: err = %v, want ErrNotFound", err)
	}

	bad := []struct {
		name     string
		edit     func(*User)
		recovery [][]byte
	}{
		{"empty name", func(u *User) { u.Name = "" }, nil},
		{"control character", func(u *User) { u.Name = "a\nb" }, nil},
		{"invalid UTF-8", func(u *User) { u.Name = "a\xffb" }, nil},
		{"long name", func(u *User) { u.Name = strings.Repeat("a", 257) }, nil},
		{"empty secret", func(u *User) { u.SecretSealed = nil }, nil},
		{"algorithm", func(u *User) { u.Algorithm = "MD5" }, nil},
		{"digits", func(u *User) { u.Digits = 7 }, nil},
		{"short period", func(u *User) { u.Period = 14 }, nil},
		{"long period", func(u *User) { u.Period = 121 }, nil},
		{"state", func(u *User) { u.State = "locked" }, nil},
		{"source", func(u *User) { u.Source = "magic" }, nil},
		{"created at", func(u *User) { u.CreatedAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }, nil},
		{"empty recovery hash", func(*User) {}, [][]byte{{1}, {}}},
		{"repeated recovery hash", func(*User) {}, [][]byte{{1}, {2}, {1}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			u := newUser("new")
			tt.edit(&u)
			if err := s.CreateUser(ctx, u, tt.recovery, tAudit); err == nil {
				t.Error("no error")
			}
			if n := count(t, s, `SELECT COUNT(*) FROM users`); n != 2 {
				t.Errorf("%d users stored, want 2", n)
			}
		})
	}
}

func TestUsers(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if us, err := s.Users(ctx); err != nil || len(us) != 0 {
		t.Fatalf("empty store: %v, %v", us, err)
	}
	for _, n := range []string{"suzuki", "ito", "kato"} {
		createUser(t, s, n, codes(n, 3))
	}
	if _, err := s.UseRecoveryCode(ctx, "kato", hashOf("kato-1"), t0); err != nil {
		t.Fatal(err)
	}
	us, err := s.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range us {
		got = append(got, fmt.Sprintf("%s:%d", u.Name, u.RecoveryCodesLeft))
	}
	if want := []string{"ito:3", "kato:2", "suzuki:3"}; !slices.Equal(got, want) {
		t.Errorf("users %v, want %v", got, want)
	}
}

func TestDeleteUser(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "a", codes("a", 3))
	createUser(t, s, "b", codes("b", 3))
	if err := s.DeleteUser(ctx, "a", tAudit); err != nil {
		t.Fatal(err)
	}
	if _, err := s.User(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted user: err = %v, want ErrNotFound", err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM recovery_codes WHERE user_name = 'a'`); n != 0 {
		t.Errorf("%d recovery codes of the deleted user left", n)
	}
	if mustUser(t, s, "b").RecoveryCodesLeft != 3 {
		t.Error("another user's codes deleted")
	}
	if err := s.DeleteUser(ctx, "a", tAudit); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete again: err = %v, want ErrNotFound", err)
	}
	// The name is free again, without the old codes.
	if u := createUser(t, s, "a", nil); u.RecoveryCodesLeft != 0 {
		t.Errorf("recreated user has %d recovery codes", u.RecoveryCodesLeft)
	}
}

func TestResetUser(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", codes("old", 3))
	if _, err := s.AcceptStep(ctx, StepUpdate{Name: "u", LastStep: 100, Offset: 1, At: t0, Confirm: true, Login: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordFailure(ctx, "u", t0.Add(time.Minute), 1); err != nil {
		t.Fatal(err)
	}

	reset := User{Name: "u", SecretSealed: []byte("new"), Algorithm: "SHA1", Digits: 6, Period: 30,
		Source: SourceEnrolled, State: UserActive, CreatedAt: t0.Add(time.Hour), CreatedBy: "someone"}
	if err := s.ResetUser(ctx, reset, codes("new", 5), "", tAudit); err != nil {
		t.Fatal(err)
	}
	want := User{Name: "u", State: UserPending, SecretSealed: []byte("new"), Algorithm: "SHA1", Digits: 6,
		Period: 30, Source: SourceEnrolled, CreatedAt: t0, CreatedBy: "admin", LastLoginAt: t0, RecoveryCodesLeft: 5}
	if err := sameUser(mustUser(t, s, "u"), want); err != nil {
		t.Error(err)
	}
	if _, err := s.UseRecoveryCode(ctx, "u", hashOf("old-0"), t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("old recovery code: err = %v, want ErrNotFound", err)
	}

	if err := s.ResetUser(ctx, newUser("nobody"), nil, "", tAudit); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: err = %v, want ErrNotFound", err)
	}
	// A failure leaves everything as it was.
	if err := s.ResetUser(ctx, newUser("u"), [][]byte{{1}, {1}}, "", tAudit); err == nil {
		t.Error("repeated recovery hash: no error")
	}
	if err := s.ResetUser(ctx, User{Name: "u"}, nil, "", tAudit); err == nil {
		t.Error("no secret: no error")
	}
	if err := sameUser(mustUser(t, s, "u"), want); err != nil {
		t.Errorf("after failed resets: %v", err)
	}
}

func TestReplaceRecoveryCodes(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", codes("old", 3))
	if _, err := s.UseRecoveryCode(ctx, "u", hashOf("old-0"), t0); err != nil {
		t.Fatal(err)
	}
	if err := s.ReplaceRecoveryCodes(ctx, "u", codes("new", 4), "", tAudit); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM recovery_codes WHERE user_name = 'u'`); n != 4 {
		t.Errorf("%d recovery codes stored, want 4 (used ones deleted too)", n)
	}
	if _, err := s.UseRecoveryCode(ctx, "u", hashOf("old-1"), t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("old code: err = %v, want ErrNotFound", err)
	}
	if _, err := s.UseRecoveryCode(ctx, "u", hashOf("new-3"), t0); err != nil {
		t.Errorf("new code: %v", err)
	}
	if err := s.ReplaceRecoveryCodes(ctx, "nobody", codes("x", 1), "", tAudit); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: err = %v, want ErrNotFound", err)
	}
	if err := s.ReplaceRecoveryCodes(ctx, "u", [][]byte{{1}, {1}}, "", tAudit); err == nil {
		t.Error("repeated hash: no error")
	}
	if err := s.ReplaceRecoveryCodes(ctx, "", nil, "", tAudit); err == nil {
		t.Error("empty name: no error")
	}
	if u := mustUser(t, s, "u"); u.RecoveryCodesLeft != 3 {
		t.Errorf("after failed replaces: %d codes left, want 3", u.RecoveryCodesLeft)
	}
	if err := s.ReplaceRecoveryCodes(ctx, "u", nil, "", tAudit); err != nil {
		t.Fatal(err)
	}
	if u := mustUser(t, s, "u"); u.RecoveryCodesLeft != 0 {
		t.Errorf("after replacing with none: %d codes left", u.RecoveryCodesLeft)
	}
}

func TestAcceptStep(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", nil)
	t1, t2, t3 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)

	steps := []struct {
		name    string
		u       StepUpdate
		wantErr error // nil: success
		check   func(User) string
	}{
		{"resync only", StepUpdate{Name: "u", ExpectLastStep: 0, LastStep: 10, Offset: -1, At: t1}, nil,
			func(u User) string {
				if u.LastStep != 10 || u.Offset != -1 || u.State != UserPending || !u.ConfirmedAt.IsZero() || !u.LastLoginAt.IsZero() {
					return fmt.Sprintf("%+v", u)
				}
				return ""
			}},
		{"confirm", StepUpdate{Name: "u", ExpectLastStep: 10, LastStep: 11, At: t1, Confirm: true}, nil,
			func(u User) string {
				if u.LastStep != 11 || u.Offset != 0 || u.State != UserActive || !u.ConfirmedAt.Equal(t1) || !u.LastLoginAt.IsZero() {
					return fmt.Sprintf("%+v", u)
				}
				return ""
			}},
		{"confirm again keeps first time", StepUpdate{Name: "u", ExpectLastStep: 11, LastStep: 12, At: t2, Confirm: true}, nil,
			func(u User) string {
				if u.State != UserActive || !u.ConfirmedAt.Equal(t1) {
					return fmt.Sprintf("%+v", u)
				}
				return ""
			}},
		{"replayed step", StepUpdate{Name: "u", ExpectLastStep: 11, LastStep: 12, At: t2, Login: true}, ErrConflict, nil},
		{"stale expectation", StepUpdate{Name: "u", ExpectLastStep: 5, LastStep: 13, At: t2, Login: true}, ErrConflict, nil},
		{"same step", StepUpdate{Name: "u", ExpectLastStep: 12, LastStep: 12, At: t2, Login: true}, ErrConflict, nil},
		{"step goes back", StepUpdate{Name: "u", ExpectLastStep: 12, LastStep: 11, At: t2, Login: true}, ErrConflict, nil},
		{"login", StepUpdate{Name: "u", ExpectLastStep: 12, LastStep: 20, Offset: 1, At: t3, Login: true}, nil,
			func(u User) string {
				if u.LastStep != 20 || u.Offset != 1 || u.Failures != 0 || !u.LastLoginAt.Equal(t3) || !u.ConfirmedAt.Equal(t1) {
					return fmt.Sprintf("%+v", u)
				}
				return ""
			}},
		{"unknown user", StepUpdate{Name: "nobody", ExpectLastStep: 0, LastStep: 1}, ErrNotFound, nil},
	}
	for _, st := range steps {
		got, err := s.AcceptStep(ctx, st.u)
		if st.wantErr != nil {
			if !errors.Is(err, st.wantErr) {
				t.Errorf("%s: err = %v, want %v", st.name, err, st.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if msg := st.check(got); msg != "" {
			t.Errorf("%s: returned %s", st.name, msg)
		}
		if err := sameUser(mustUser(t, s, "u"), got); err != nil {
			t.Errorf("%s: stored user differs from returned: %v", st.name, err)
		}
	}

	// Failures are cleared by a login; a locked user cannot log in or
	// confirm, but the helpdesk can resynchronise it.
	if _, err := s.RecordFailure(ctx, "u", t3, 0); err != nil {
		t.Fatal(err)
	}
	if u := mustUser(t, s, "u"); u.Failures != 1 {
		t.Fatalf("failures = %d, want 1", u.Failures)
	}
	if u, err := s.AcceptStep(ctx, StepUpdate{Name: "u", ExpectLastStep: 20, LastStep: 21, At: t3, Login: true}); err != nil || u.Failures != 0 {
		t.Fatalf("login after failure: %+v, %v", u, err)
	}
	if _, err := s.RecordFailure(ctx, "u", t3, 1); err != nil {
		t.Fatal(err)
	}
	for _, up := range []StepUpdate{
		{Name: "u", ExpectLastStep: 21, LastStep: 22, At: t3, Login: true},
		{Name: "u", ExpectLastStep: 21, LastStep: 22, At: t3, Confirm: true},
	} {
		if _, err := s.AcceptStep(ctx, up); !errors.Is(err, ErrConflict) {
			t.Errorf("locked user, %+v: err = %v, want ErrConflict", up, err)
		}
	}
	if u := mustUser(t, s, "u"); u.LastStep != 21 || u.LockedAt.IsZero() || !u.LastLoginAt.Equal(t3) {
		t.Errorf("locked user changed: %+v", u)
	}
	if u, err := s.AcceptStep(ctx, StepUpdate{Name: "u", ExpectLastStep: 21, LastStep: 30, Offset: 3, At: t3}); err != nil ||
		u.LastStep != 30 || u.LockedAt.IsZero() {
		t.Errorf("resync of a locked user: %+v, %v", u, err)
	}

	for _, up := range []StepUpdate{
		{Name: "", ExpectLastStep: 0, LastStep: 1},
		{Name: "u", ExpectLastStep: -1, LastStep: 1},
		{Name: "u", ExpectLastStep: 30, LastStep: 31, At: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), Login: true},
	} {
		if _, err := s.AcceptStep(ctx, up); err == nil || errors.Is(err, ErrConflict) {
			t.Errorf("%+v: err = %v, want a validation error", up, err)
		}
	}
}

// TestAcceptStepConcurrent: of many callers that verified a code against the
// same last step, exactly one wins.
func TestAcceptStepConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", nil)
	const n = 20
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		winners   []int64
		conflicts int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			step := int64(100 + i)
			_, err := s.AcceptStep(ctx, StepUpdate{Name: "u", ExpectLastStep: 0, LastStep: step, At: t0, Login: true})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, step)
			case errors.Is(err, ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 || conflicts != n-1 {
		t.Fatalf("%d winners, %d conflicts; want 1 and %d", len(winners), conflicts, n-1)
	}
	if u := mustUser(t, s, "u"); u.LastStep != winners[0] {
		t.Errorf("last step %d, want the winner's %d", u.LastStep, winners[0])
	}
}

func TestRecordFailure(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", nil)
	for i := 1; i <= 4; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		u, err := s.RecordFailure(ctx, "u", at, 3)
		if err != nil {
			t.Fatal(err)
		}
		wantLock := time.Time{}
		if i >= 3 {
			wantLock = t0.Add(3 * time.Minute) // the first lock's time
		}
		if u.Failures != i || !u.LastFailureAt.Equal(at) || !u.LockedAt.Equal(wantLock) {
			t.Errorf("failure %d: failures %d, last %v, locked %v", i, u.Failures, u.LastFailureAt, u.LockedAt)
		}
	}
	u, err := s.UnlockUser(ctx, "u", tUnlock)
	if err != nil {
		t.Fatal(err)
	}
	if u.Failures != 0 || !u.LockedAt.IsZero() || !u.LastFailureAt.Equal(t0.Add(4*time.Minute)) {
		t.Errorf("unlocked: %+v", u)
	}
	if err := sameUser(mustUser(t, s, "u"), u); err != nil {
		t.Errorf("stored user differs from returned: %v", err)
	}
	// lockAfter 0 never locks.
	for range 20 {
		if u, err = s.RecordFailure(ctx, "u", t0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if u.Failures != 20 || !u.LockedAt.IsZero() {
		t.Errorf("lockAfter 0: %+v", u)
	}
	// A lower limit than the failures so far locks at the next failure.
	if u, err = s.RecordFailure(ctx, "u", t0, 5); err != nil || u.LockedAt.IsZero() {
		t.Errorf("limit lowered: %+v, %v", u, err)
	}

	if _, err := s.RecordFailure(ctx, "nobody", t0, 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: err = %v, want ErrNotFound", err)
	}
	if _, err := s.UnlockUser(ctx, "nobody", tUnlock); !errors.Is(err, ErrNotFound) {
		t.Errorf("unlock unknown user: err = %v, want ErrNotFound", err)
	}
	if _, err := s.RecordFailure(ctx, "u", t0, -1); err == nil {
		t.Error("negative lockAfter: no error")
	}
	if _, err := s.RecordFailure(ctx, "", t0, 3); err == nil {
		t.Error("empty name: no error")
	}
}

// TestRecordFailureConcurrent: every failure counts, and the lock is set
// once, by the failure that reached the limit.
func TestRecordFailureConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", nil)
	const n, lockAfter = 30, 10
	results := make([]User, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, err := s.RecordFailure(ctx, "u", t0.Add(time.Duration(i)*time.Second), lockAfter)
			if err != nil {
				t.Error(err)
			}
			results[i] = u
		}()
	}
	wg.Wait()
	var lockedBy time.Time
	seen := make(map[int]bool)
	for i, u := range results {
		seen[u.Failures] = true
		if u.Failures == lockAfter {
			lockedBy = t0.Add(time.Duration(i) * time.Second)
		}
		if (u.Failures >= lockAfter) == u.LockedAt.IsZero() {
			t.Errorf("failures %d, locked at %v", u.Failures, u.LockedAt)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct failure counts returned, want %d: an increment was lost", len(seen), n)
	}
	u := mustUser(t, s, "u")
	if u.Failures != n || !u.LockedAt.Equal(lockedBy) {
		t.Errorf("failures %d locked at %v; want %d, locked at %v", u.Failures, u.LockedAt, n, lockedBy)
	}
}

func TestUseRecoveryCode(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", codes("u", 3))
	createUser(t, s, "v", codes("v", 3))
	if _, err := s.RecordFailure(ctx, "u", t0, 0); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Hour)
	u, err := s.UseRecoveryCode(ctx, "u", hashOf("u-1"), at)
	if err != nil {
		t.Fatal(err)
	}
	if u.Failures != 0 || !u.LastLoginAt.Equal(at) || u.RecoveryCodesLeft != 2 {
		t.Errorf("after use: %+v", u)
	}
	var usedAt time.Time
	if err := s.r.QueryRow(`SELECT used_at FROM recovery_codes WHERE user_name = 'u' AND hash = $1`,
		hashOf("u-1")).Scan(scanTime(&usedAt)); err != nil || !usedAt.Equal(at) {
		t.Errorf("used_at = %v, %v; want %v", usedAt, err, at)
	}

	for _, tt := range []struct {
		name, user string
		hash       []byte
	}{
		{"used twice", "u", hashOf("u-1")},
		{"wrong code", "u", hashOf("u-9")},
		{"another user's code", "u", hashOf("v-0")},
		{"unknown user", "nobody", hashOf("u-0")},
	} {
		if _, err := s.UseRecoveryCode(ctx, tt.user, tt.hash, at); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", tt.name, err)
		}
	}
	if _, err := s.UseRecoveryCode(ctx, "u", nil, at); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("empty hash: err = %v, want a validation error", err)
	}

	// A locked user: refused whether the code is right or not, and the
	// code stays unused.
	if _, err := s.RecordFailure(ctx, "u", at, 1); err != nil {
		t.Fatal(err)
	}
	for _, h := range [][]byte{hashOf("u-2"), hashOf("u-9")} {
		if _, err := s.UseRecoveryCode(ctx, "u", h, at); !errors.Is(err, ErrConflict) {
			t.Errorf("locked: err = %v, want ErrConflict", err)
		}
	}
	if u := mustUser(t, s, "u"); u.RecoveryCodesLeft != 2 || u.Failures != 1 {
		t.Errorf("locked user changed: %+v", u)
	}
}

// TestUseRecoveryCodeConcurrent: a code is used by exactly one caller.
func TestUseRecoveryCodeConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	createUser(t, s, "u", codes("u", 2))
	const n = 20
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		wins, notFound int
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UseRecoveryCode(ctx, "u", hashOf("u-0"), t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrNotFound):
				notFound++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || notFound != n-1 {
		t.Errorf("%d wins, %d not found; want 1 and %d", wins, notFound, n-1)
	}
	if u := mustUser(t, s, "u"); u.RecoveryCodesLeft != 1 {
		t.Errorf("%d codes left, want 1", u.RecoveryCodesLeft)
	}
}

func TestImportUsers(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	snapshot := func() []User {
		us, err := s.Users(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return us
	}
	same := func(a, b []User) error {
		if len(a) != len(b) {
			return fmt.Errorf("%d users, want %d", len(a), len(b))
		}
		for i := range a {
			if err := sameUser(a[i], b[i]); err != nil {
				return err
			}
		}
		return nil
	}

	in := []User{newUser("a"), newUser("b")}
	in[1].Source = "" // defaults to imported
	if err := s.ImportUsers(ctx, in, false); err != nil {
		t.Fatal(err)
	}
	if in[1].Source != "" {
		t.Error("ImportUsers changed its argument")
	}
	before := snapshot()
	if len(before) != 2 || before[1].Source != SourceImported || before[1].State != UserPending {
		t.Fatalf("imported: %+v", before)
	}

	// An existing name fails the whole import.
	err := s.ImportUsers(ctx, []User{newUser("c"), newUser("b"), newUser("d")}, false)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "user b") {
		t.Errorf("clash: err = %v, want ErrExists naming b", err)
	}
	if err := same(snapshot(), before); err != nil {
		t.Errorf("after a failed import: %v", err)
	}
	// As does a name twice in one import, or an invalid user, also with
	// replace.
	for _, batch := range [][]User{
		{newUser("c"), newUser("c")},
		{newUser("c"), {Name: "d"}},
		{newUser("c"), {Name: "", SecretSealed: []byte{1}}},
	} {
		for _, replace := range []bool{false, true} {
			if err := s.ImportUsers(ctx, batch, replace); err == nil {
				t.Errorf("import %d users (replace %v): no error", len(batch), replace)
			}
		}
	}
	if err := s.ImportUsers(ctx, []User{newUser("c"), newUser("c")}, false); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("name twice: err = %v", err)
	}
	if err := same(snapshot(), before); err != nil {
		t.Errorf("after failed imports: %v", err)
	}

	// Replace: a's token is replaced, its state cleared, its recovery
	// codes, creation and last login kept; c is new.
	if err := s.ReplaceRecoveryCodes(ctx, "a", codes("a", 4), "", tAudit); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcceptStep(ctx, StepUpdate{Name: "a", LastStep: 50, Offset: 2, At: t0, Confirm: true, Login: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordFailure(ctx, "a", t0, 1); err != nil {
		t.Fatal(err)
	}
	repl := User{Name: "a", SecretSealed: []byte("new-seed"), Algorithm: "SHA1", Digits: 6, Period: 30,
		TokenSerial: "SN-NEW", State: UserActive, CreatedAt: t0.Add(time.Hour), CreatedBy: "importer"}
	if err := s.ImportUsers(ctx, []User{repl, newUser("c")}, true); err != nil {
		t.Fatal(err)
	}
	want := User{Name: "a", State: UserPending, SecretSealed: []byte("new-seed"), Algorithm: "SHA1", Digits: 6,
		Period: 30, Source: SourceImported, TokenSerial: "SN-NEW", CreatedAt: t0, CreatedBy: "admin",
		LastLoginAt: t0, RecoveryCodesLeft: 4}
	if err := sameUser(mustUser(t, s, "a"), want); err != nil {
		t.Errorf("replaced user: %v", err)
	}
	if _, err := s.User(ctx, "c"); err != nil {
		t.Errorf("new user of a replacing import: %v", err)
	}
	if err := s.ImportUsers(ctx, nil, false); err != nil {
		t.Errorf("empty import: %v", err)
	}
}

func TestServerEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "t1", "pc-01")
	enroll(t, s, "t2", "pc-02")
	// Agent events of t1 at t0+0s..t0+4s (seq 1..5), of t2 at t0+10s.
	for i := range 5 {
		if _, err := s.SaveReport(ctx, Report{TerminalID: "t1", ReceivedAt: t0.Add(time.Duration(i) * time.Second),
			Events: []Event{{Seq: uint64(i + 1), Time: t0, Type: "agent"}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SaveReport(ctx, Report{TerminalID: "t2", ReceivedAt: t0.Add(10 * time.Second),
		Events: []Event{{Seq: 1, Time: t0, Type: "agent"}}}); err != nil {
		t.Fatal(err)
	}
	// Server events of t1 between and at the same time as agent events.
	for _, e := range []ServerEvent{
		{TerminalID: "t1", Time: t0.Add(1500 * time.Millisecond), Type: "login.success", Severity: 1, Message: "yamada", Data: []byte{1, 2}},
		{TerminalID: "t1", Time: t0.Add(3 * time.Second), Type: "login.failure", Severity: 2},
		{TerminalID: "t2", Time: t0.Add(20 * time.Second), Type: "login.locked", Severity: 3},
		{TerminalID: "t1", Time: t0.Add(-time.Second), Type: "login.success"},
	} {
		if err := s.AddServerEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []ServerEvent{
		{TerminalID: "nobody", Time: t0, Type: "x"},
		{TerminalID: "", Time: t0, Type: "x"},
		{TerminalID: "t1", Time: t0, Type: ""},
	} {
		if err := s.AddServerEvent(ctx, e); err == nil {
			t.Errorf("%+v: no error", e)
		}
	}
	if err := s.AddServerEvent(ctx, ServerEvent{TerminalID: "nobody", Type: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown terminal: err = %v, want ErrNotFound", err)
	}

	list := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			if e.Source == "server" {
				out = append(out, fmt.Sprintf("%s/%s", e.TerminalID, e.Type))
			} else {
				out = append(out, fmt.Sprintf("%s/%s/%d", e.TerminalID, e.Source, e.Seq))
			}
		}
		return out
	}
	tests := []struct {
		terminal string
		limit    int
		want     []string
	}{
		{"", 0, []string{"t2/login.locked", "t2/agent/1", "t1/agent/5", "t1/login.failure", "t1/agent/4",
			"t1/agent/3", "t1/login.success", "t1/agent/2", "t1/agent/1", "t1/login.success"}},
		{"", 3, []string{"t2/login.locked", "t2/agent/1", "t1/agent/5"}},
		{"t1", 4, []string{"t1/agent/5", "t1/login.failure", "t1/agent/4", "t1/agent/3"}},
		{"t1", 100, []string{"t1/agent/5", "t1/login.failure", "t1/agent/4", "t1/agent/3", "t1/login.success",
			"t1/agent/2", "t1/agent/1", "t1/login.success"}},
		{"t2", 1, []string{"t2/login.locked"}},
		{"nobody", 10, nil},
	}
	for _, tt := range tests {
		evs, err := s.Events(ctx, tt.terminal, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := list(evs); !slices.Equal(got, tt.want) {
			t.Errorf("Events(%q, %d) = %v\nwant %v", tt.terminal, tt.limit, got, tt.want)
		}
	}

	evs, err := s.Events(ctx, "t1", 2)
	if err != nil {
		t.Fatal(err)
	}
	e := evs[1]
	if e.Source != "server" || e.Seq != 0 || e.Severity != 2 || !e.Time.Equal(t0.Add(3*time.Second)) ||
		!e.ReceivedAt.Equal(e.Time) || e.Data != nil {
		t.Errorf("server event: %+v", e)
	}
	evs, err = s.Events(ctx, "t1", 5)
	if err != nil {
		t.Fatal(err)
	}
	if e := evs[4]; e.Message != "yamada" || e.Severity != 1 || string(e.Data) != "\x01\x02" {
		t.Errorf("server event with data: %+v", e)
	}
	// Equal times: the server event first.
	if err := s.AddServerEvent(ctx, ServerEvent{TerminalID: "t1", Time: t0.Add(4 * time.Second), Type: "tie"}); err != nil {
		t.Fatal(err)
	}
	if evs, err = s.Events(ctx, "t1", 2); err != nil || !slices.Equal(list(evs), []string{"t1/tie", "t1/agent/5"}) {
		t.Errorf("tie: %v, %v", list(evs), err)
	}
	// Server events of revoked terminals are still recorded.
	if err := s.RevokeTerminal(ctx, "t2", "lost", t0, tAudit); err != nil {
		t.Fatal(err)
	}
	if err := s.AddServerEvent(ctx, ServerEvent{TerminalID: "t2", Time: t0, Type: "login.refused"}); err != nil {
		t.Errorf("revoked terminal: %v", err)
	}
}

// TestEventsQueryPlan guards that listing events reads the indexes instead
// of sorting whole tables.
func TestEventsQueryPlan(t *testing.T) {
	sqliteOnly(t) // SQLite's EXPLAIN QUERY PLAN
	s, _ := openTest(t)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{eventsQuery("", ""), []any{10}},
		{eventsQuery("WHERE terminal_id = $2", "WHERE terminal_id = $2"), []any{10, "t1"}},
		{eventsQuery("WHERE type = $2", "WHERE type = $2"), []any{10, "media.attached"}},
		{eventsQuery("WHERE terminal_id = $2 AND (received_at < $3 OR received_at = $3 AND seq < $4)",
			"WHERE terminal_id = $2 AND received_at < $3"), []any{10, "t1", int64(1), int64(5)}},
	} {
		rows, err := s.r.Query(`EXPLAIN QUERY PLAN `+q.sql, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "\n")
		for _, line := range plan {
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == "SCAN" || f[0] == "SEARCH") && (f[1] == "events" || f[1] == "server_events") &&
				!strings.Contains(line, "USING INDEX") {
				t.Errorf("plan reads %s without an index:\n%s", f[1], text)
			}
		}
		if n := strings.Count(text, "TEMP B-TREE"); n > 1 {
			t.Errorf("plan sorts %d times, want only the merged rows:\n%s", n, text)
		}
	}
}

// TestMigrateFromInit opens a database that only 0001_init created, with
// data in it, and finds the data kept and the users tables usable.
func TestMigrateFromInit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	ms, err := loadMigrations(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path+"?_foreign_keys=1&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(ctx, db, ms[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO terminals (id, hostname, state, enrolled_at) VALUES ('t1', 'pc-01', 'active', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO events (terminal_id, seq, received_at) VALUES ('t1', 1, 5)`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := count(t, s, `SELECT COUNT(*) FROM schema_migrations`); n != len(ms) {
		t.Errorf("%d migrations recorded, want %d", n, len(ms))
	}
	if term, err := s.Terminal(ctx, "t1"); err != nil || term.Hostname != "pc-01" {
		t.Errorf("terminal after migration: %+v, %v", term, err)
	}
	createUser(t, s, "u", codes("u", 2))
	if err := s.AddServerEvent(ctx, ServerEvent{TerminalID: "t1", Time: time.Unix(0, 7), Type: "login.success"}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, "t1", 10)
	if err != nil || len(evs) != 2 || evs[0].Source != "server" || evs[1].Source != "agent" {
		t.Errorf("events after migration: %+v, %v", evs, err)
	}
}

// BenchmarkAcceptStep measures a login's compare-and-set, each goroutine
// on its own user.
func BenchmarkAcceptStep(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	const users = 64
	for i := range users {
		createUser(b, s, fmt.Sprintf("user%02d", i), codes("r", 10))
	}
	var (
		mu   sync.Mutex
		next int
	)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		name := fmt.Sprintf("user%02d", next%users)
		next++
		mu.Unlock()
		u, err := s.User(ctx, name)
		if err != nil {
			b.Error(err)
			return
		}
		last := u.LastStep
		for pb.Next() {
			up := StepUpdate{Name: name, ExpectLastStep: last, LastStep: last + 1, At: time.Now(), Login: true}
			u, err := s.AcceptStep(ctx, up)
			switch {
			case errors.Is(err, ErrConflict): // two goroutines share a user
				if u, err = s.User(ctx, name); err != nil {
					b.Error(err)
					return
				}
				last = u.LastStep
			case err != nil:
				b.Error(err)
				return
			default:
				last = u.LastStep
			}
		}
	})
}
