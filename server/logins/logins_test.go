package logins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/fakeclock"
	"github.com/mnguard/mnguard/internal/totp"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"github.com/pquerna/otp"
	"google.golang.org/protobuf/proto"
)

// t0 is one second into a 30 s step.
var t0 = time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC)

const terminalID = "0b5f7a4e-3c55-4a8e-9d7e-1f2a3b4c5d6e"

type env struct {
	t     testing.TB
	st    *store.DB
	path  string
	key   []byte
	clock *fakeclock.Clock
	svc   *Service
}

// newEnv opens a real SQLite store with one enrolled terminal and a
// Service over it. mod adjusts the default policy.
func newEnv(t testing.TB, mod func(*Policy)) *env {
	t.Helper()
	return newEnvAt(t, filepath.Join(t.TempDir(), "mnguard.db"), mod)
}

// newEnvAt is newEnv on the store at url (store.Open).
func newEnvAt(t testing.TB, path string, mod func(*Policy)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyPath := filepath.Join(dir, "totp.key")
	if err := CreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetKeySealer(ctx, sealer); err != nil {
		t.Fatal(err)
	}
	tokHash := sha256.Sum256([]byte("enroll-token"))
	if err := st.CreateEnrollmentToken(ctx, store.EnrollmentToken{
		ID: "tok", Hash: tokHash[:], CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Uses: 1, UsesLeft: 1, CreatedBy: "test",
	}, store.AuditEntry{Actor: "test", Action: "token.create"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Enroll(ctx, tokHash[:], t0, store.Terminal{
		ID: terminalID, Host: nil, Hostname: "term-01", State: store.StateActive, EnrolledAt: t0,
		OfflineKey: []byte("0123456789abcdef0123456789abcdef"),
	}, store.Certificate{Serial: "01", TerminalID: terminalID, NotBefore: t0, NotAfter: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, path: path, key: key, clock: fakeclock.New(t0)}
	p := DefaultPolicy()
	p.Delay = 0
	p.Now = e.clock.Now
	p.Logger = slog.New(slog.DiscardHandler)
	if mod != nil {
		mod(&p)
	}
	e.svc, err = New(st, key, p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// enroll enrolls name and returns its secret.
func (e *env) enroll(name string) (Enrollment, []byte) {
	e.t.Helper()
	en, err := e.svc.Enroll(context.Background(), name, tOp)
	if err != nil {
		e.t.Fatal(err)
	}
	secret, err := totp.DecodeSecret(en.Secret)
	if err != nil {
		e.t.Fatal(err)
	}
	return en, secret
}

// active enrolls and confirms name, then moves the clock to the next step.
func (e *env) active(name string) []byte {
	e.t.Helper()
	_, secret := e.enroll(name)
	if _, err := e.svc.Confirm(context.Background(), name, e.code(secret, 0), tOp); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Add(30 * time.Second)
	return secret
}

// code returns the default-parameter code of secret at the clock plus d.
func (e *env) code(secret []byte, d time.Duration) string {
	e.t.Helper()
	return codeAt(e.t, secret, e.clock.Now().Add(d), totp.Params{})
}

func codeAt(t testing.TB, secret []byte, at time.Time, p totp.Params) string {
	t.Helper()
	c, err := totp.Generate(secret, at, p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) verify(user, code string) Result {
	e.t.Helper()
	r, err := e.svc.Verify(context.Background(), terminalID, user, "login", code)
	if err != nil {
		e.t.Fatalf("Verify(%s): %v", user, err)
	}
	return r
}

func (e *env) user(name string) store.User {
	e.t.Helper()
	u, err := e.st.User(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// wrongCode returns a 6-digit code that is not secret's code near now.
func (e *env) wrongCode(secret []byte) string {
	e.t.Helper()
	near := map[string]bool{}
	for d := -3; d <= 3; d++ {
		near[e.code(secret, time.Duration(d)*30*time.Second)] = true
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", 123456+i*7919)
		if !near[c] {
			return c
		}
	}
}

func wantResult(t testing.TB, got Result, outcome Outcome, msg, reason string) {
	t.Helper()
	if got.Outcome != outcome || !strings.Contains(got.Message, msg) || !strings.Contains(got.Reason, reason) {
		t.Fatalf("result %+v, want %v, message containing %q, reason containing %q", got, outcome, msg, reason)
	}
}

func TestEnrollConfirm(t *testing.T) {
	e := newEnv(t, func(p *Policy) { p.Issuer = "Example City" })
	ctx := context.Background()
	en, secret := e.enroll("alice")
	if en.User.State != store.UserPending || en.User.Source != store.SourceEnrolled || en.User.CreatedBy != "admin" {
		t.Errorf("enrolled user %+v", en.User)
	}
	if len(secret) != 20 || en.User.Algorithm != "SHA1" || en.User.Digits != 6 || en.User.Period != 30 {
		t.Errorf("secret %d bytes, %s/%d/%d; want 160 bits SHA1/6/30", len(secret), en.User.Algorithm, en.User.Digits, en.User.Period)
	}
	for _, want := range []string{"otpauth://totp/Example%20City:alice?", "secret=" + en.Secret, "issuer=Example%20City", "algorithm=SHA1", "digits=6", "period=30"} {
		if !strings.Contains(en.URL, want) {
			t.Errorf("URL %s lacks %s", en.URL, want)
		}
	}
	if len(en.RecoveryCodes) != 10 || en.User.RecoveryCodesLeft != 10 {
		t.Fatalf("%d recovery codes, %d left", len(en.RecoveryCodes), en.User.RecoveryCodesLeft)
	}
	re := regexp.MustCompile(`^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$`)
	seen := map[string]bool{}
	for _, c := range en.RecoveryCodes {
		if !re.MatchString(c) || seen[c] {
			t.Errorf("recovery code %q: bad shape or repeated", c)
		}
		seen[c] = true
	}

	if _, err := e.svc.Enroll(ctx, "alice", opNamed("admin")); !errors.Is(err, ErrUserExists) {
		t.Errorf("second Enroll = %v, want ErrUserExists", err)
	}
	_, err := e.svc.Confirm(ctx, "alice", e.wrongCode(secret), tOp)
	if !errors.Is(err, ErrWrongCode) {
		t.Fatalf("Confirm(wrong) = %v, want ErrWrongCode", err)
	}
	if u := e.user("alice"); u.Failures != 1 || u.State != store.UserPending {
		t.Errorf("after a wrong confirm: %+v", u)
	}
	if _, err := e.svc.Confirm(ctx, "alice", "12345", tOp); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "5 digits, want 6") {
		t.Errorf("Confirm(5 digits) = %v, want ErrInvalid naming the length", err)
	}
	code := e.code(secret, 0)
	u, err := e.svc.Confirm(ctx, "alice", code, tOp)
	if err != nil {
		t.Fatal(err)
	}
	if u.State != store.UserActive || u.ConfirmedAt.IsZero() || !u.LastLoginAt.IsZero() {
		t.Errorf("confirmed user %+v", u)
	}
	if _, err := e.svc.Confirm(ctx, "alice", code, tOp); !errors.Is(err, ErrNotPending) {
		t.Errorf("second Confirm = %v, want ErrNotPending", err)
	}
	// The confirming code's step is used up for logins too.
	wantResult(t, e.verify("alice", code), Rejected, MsgWrong, reasonReplay)
	if _, err := e.svc.Confirm(ctx, "nobody", code, tOp); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("Confirm(unknown) = %v", err)
	}
	if _, err := e.svc.Enroll(ctx, "bad name", opNamed("admin")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Enroll(bad name) = %v", err)
	}
}

func TestConfirmReplayed(t *testing.T) {
	e := newEnv(t, nil)
	_, secret := e.enroll("alice")
	// A login with the pending user's first code confirms it...
	code := e.code(secret, 0)
	wantResult(t, e.verify("alice", code), Accepted, MsgConfirmed, reasonConfirmed)
	if u := e.user("alice"); u.State != store.UserActive || u.LastLoginAt.IsZero() {
		t.Fatalf("after login: %+v", u)
	}
	// ...and a reset user cannot confirm with an old step.
	if _, err := e.svc.Reset(context.Background(), "alice", tOp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Confirm(context.Background(), "alice", code, tOp); !errors.Is(err, ErrWrongCode) {
		t.Errorf("Confirm with the old secret's code = %v, want ErrWrongCode", err)
	}
}

func TestVerify(t *testing.T) {
	e := newEnv(t, nil)
	secret := e.active("alice")
	code := e.code(secret, 0)
	wantResult(t, e.verify("alice", code), Accepted, MsgAccepted, reasonAccepted)
	wantResult(t, e.verify("alice", code), Rejected, MsgWrong, reasonReplay)
	if u := e.user("alice"); u.Failures != 1 {
		t.Errorf("failures after a replay = %d, want 1", u.Failures)
	}
	// The previous step's code is older than the last accepted: a replay
	// too, though never used.
	wantResult(t, e.verify("alice", e.code(secret, -30*time.Second)), Rejected, MsgWrong, reasonReplay)
	wantResult(t, e.verify("alice", e.wrongCode(secret)), Rejected, MsgWrong, reasonWrong)
	// Malformed codes are refused without counting.
	for _, c := range []string{"12345", "1234567", "abcdef", " 123456", "１２３４５６"} {
		wantResult(t, e.verify("alice", c), Rejected, MsgMalformed, reasonMalformed)
	}
	if u := e.user("alice"); u.Failures != 3 {
		t.Errorf("failures = %d, want 3 (malformed codes do not count)", u.Failures)
	}
	// The next step's code (the token runs ahead): accepted, failures
	// cleared, offset learned.
	r := e.verify("alice", e.code(secret, 30*time.Second))
	wantResult(t, r, Accepted, MsgAccepted, reasonAccepted)
	if u := e.user("alice"); u.Failures != 0 || u.Offset != 1 || u.LastLoginAt.IsZero() {
		t.Errorf("after login: failures %d, offset %d, last login %v", u.Failures, u.Offset, u.LastLoginAt)
	}
	// Two steps ahead of the server, one ahead of the learned offset.
	e.clock.Add(30 * time.Second)
	wantResult(t, e.verify("alice", e.code(secret, 60*time.Second)), Accepted, MsgAccepted, "")
	// Outside the window around the offset.
	e.clock.Add(30 * time.Second)
	wantResult(t, e.verify("alice", e.code(secret, -60*time.Second)), Rejected, MsgWrong, "")
	if got := e.svc.locks.Len(); got != 0 {
		t.Errorf("%d user locks left after the calls returned", got)
	}
}

func TestVerifyUnknownUser(t *testing.T) {
	e := newEnv(t, nil)
	wantResult(t, e.verify("nobody", "123456"), UnknownUser, MsgUnknownUser, reasonUnknown)
	if _, err := e.svc.Verify(context.Background(), terminalID, "no body", "login", "123456"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify(bad name) = %v, want ErrInvalid", err)
	}
	evs := e.serverEvents()
	if len(evs) != 1 || evs[0].GetAttributes()["result"] != "unknown_user" || evs[0].GetSeverity() != mnguardv1.Severity_SEVERITY_WARNING {
		t.Fatalf("events %v", evs)
	}
}

// serverEvents returns the server events of the terminal, oldest first.
func (e *env) serverEvents() []*mnguardv1.Event {
	e.t.Helper()
	evs, err := e.st.Events(context.Background(), terminalID, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*mnguardv1.Event
	for i := len(evs) - 1; i >= 0; i-- {
		ev := evs[i]
		if ev.Source != "server" {
			e.t.Errorf("event %+v: source %q", ev, ev.Source)
			continue
		}
		pe := &mnguardv1.Event{}
		if err := proto.Unmarshal(ev.Data, pe); err != nil {
			e.t.Fatal(err)
		}
		if pe.GetType() != EventType || ev.Type != EventType || int32(pe.GetSeverity()) != ev.Severity {
			e.t.Errorf("event %+v / %v", ev, pe)
		}
		out = append(out, pe)
	}
	return out
}

func TestVerifyEvents(t *testing.T) {
	e := newEnv(t, func(p *Policy) { p.LockAfter = 2 })
	secret := e.active("alice")
	codes := []string{e.code(secret, 0), e.wrongCode(secret), e.wrongCode(secret), e.code(secret, 30*time.Second)}
	e.verify("alice", codes[0])
	e.verify("alice", codes[1])
	e.verify("alice", codes[2])
	e.verify("alice", codes[3])
	type want struct {
		result, reason string
		sev            mnguardv1.Severity
	}
	wants := []want{
		{"accepted", reasonAccepted, mnguardv1.Severity_SEVERITY_INFO},
		{"rejected", reasonWrong, mnguardv1.Severity_SEVERITY_WARNING},
		{"rejected", "wrong code, lock reached", mnguardv1.Severity_SEVERITY_ALERT},
		{"locked", reasonLocked, mnguardv1.Severity_SEVERITY_ALERT},
	}
	evs := e.serverEvents()
	if len(evs) != len(wants) {
		t.Fatalf("%d events, want %d", len(evs), len(wants))
	}
	for i, w := range wants {
		a := evs[i].GetAttributes()
		if a["result"] != w.result || a["reason"] != w.reason || evs[i].GetSeverity() != w.sev ||
			a["user"] != "alice" || a["service"] != "login" || a["method"] != MethodTOTP {
			t.Errorf("event %d: %v %v, want %+v", i, evs[i].GetSeverity(), a, w)
		}
		raw, _ := proto.Marshal(evs[i])
		for _, c := range codes {
			if strings.Contains(string(raw), c) {
				t.Errorf("event %d contains a code", i)
			}
		}
	}
}

func TestDelay(t *testing.T) {
	const delay = 200 * time.Millisecond
	e := newEnv(t, func(p *Policy) { p.Delay = delay })
	secret := e.active("alice")
	timed := func(code string) (Result, time.Duration) {
		start := time.Now()
		r := e.verify("alice", code)
		return r, time.Since(start)
	}
	for i := 1; i <= 3; i++ {
		r, took := timed(e.wrongCode(secret))
		wantResult(t, r, Rejected, MsgWrong, reasonWrong)
		if took >= delay {
			t.Errorf("attempt %d (after %d failures) took %v, want no delay", i, i-1, took)
		}
	}
	r, took := timed(e.code(secret, 0))
	wantResult(t, r, Accepted, MsgAccepted, "")
	if took < delay {
		t.Errorf("attempt after 3 failures took %v, want at least %v", took, delay)
	}
	t.Logf("undelayed attempts under %v; the 4th took %v", delay, took)
	// Cleared by the success: no delay.
	e.clock.Add(30 * time.Second)
	if _, took := timed(e.code(secret, 0)); took >= delay {
		t.Errorf("attempt after a success took %v", took)
	}

	// A cancelled context ends the wait, and nothing is counted.
	for range 3 {
		e.verify("alice", e.wrongCode(secret))
	}
	ctx, cancel := context.WithTimeout(context.Background(), delay/4)
	defer cancel()
	start := time.Now()
	_, err := e.svc.Verify(ctx, terminalID, "alice", "login", e.wrongCode(secret))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) >= delay {
		t.Errorf("Verify with a short deadline = %v after %v", err, time.Since(start))
	}
	if u := e.user("alice"); u.Failures != 3 {
		t.Errorf("failures = %d, want 3: the abandoned attempt must not count", u.Failures)
	}

	// Parallel guesses wait in line: n attempts take n delays.
	const n = 3
	var wg sync.WaitGroup
	start = time.Now()
	for range n {
		wg.Go(func() { e.verify("alice", e.wrongCode(secret)) })
	}
	wg.Wait()
	if took := time.Since(start); took < n*delay {
		t.Errorf("%d parallel delayed attempts took %v, want at least %v", n, took, n*delay)
	}
}

func TestLockout(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	secret := e.active("alice")
	for i := 1; i <= 9; i++ {
		wantResult(t, e.verify("alice", e.wrongCode(secret)), Rejected, MsgWrong, reasonWrong)
	}
	if u := e.user("alice"); !u.LockedAt.IsZero() || u.Failures != 9 {
		t.Fatalf("after 9 failures: locked %v, failures %d", u.LockedAt, u.Failures)
	}
	wantResult(t, e.verify("alice", e.wrongCode(secret)), Rejected, MsgNowLocked, "lock reached")
	u := e.user("alice")
	if u.LockedAt.IsZero() || u.Failures != 10 {
		t.Fatalf("after 10 failures: locked %v, failures %d", u.LockedAt, u.Failures)
	}
	// Locked: the right code gets the same answer as a wrong one, is not
	// checked (its step stays unused) and counts nothing.
	good := e.code(secret, 0)
	wantResult(t, e.verify("alice", good), Locked, MsgLocked, reasonLocked)
	wantResult(t, e.verify("alice", e.wrongCode(secret)), Locked, MsgLocked, reasonLocked)
	if u := e.user("alice"); u.Failures != 10 {
		t.Errorf("failures while locked = %d, want 10", u.Failures)
	}
	if _, err := e.svc.Confirm(ctx, "alice", good, tOp); !errors.Is(err, ErrLocked) {
		t.Errorf("Confirm while locked = %v, want ErrLocked", err)
	}
	if _, _, err := e.svc.OfflineLoginCode(ctx, terminalID, "alice", "12345678", tOp); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "unlock first") {
		t.Errorf("OfflineLoginCode while locked = %v", err)
	}
	u, err := e.svc.Unlock(ctx, "alice", tOp)
	if err != nil {
		t.Fatal(err)
	}
	if !u.LockedAt.IsZero() || u.Failures != 0 {
		t.Errorf("after unlock: %+v", u)
	}
	wantResult(t, e.verify("alice", good), Accepted, MsgAccepted, "")
	if _, err := e.svc.Unlock(ctx, "nobody", tOp); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("Unlock(unknown) = %v", err)
	}
}

func TestRecoveryCodes(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	en, secret := e.enroll("alice")
	rc := en.RecoveryCodes[3]
	wantResult(t, e.verify("alice", rc), Rejected, MsgRecoveryPending, reasonRecPend)
	if _, err := e.svc.Confirm(ctx, "alice", e.code(secret, 0), tOp); err != nil {
		t.Fatal(err)
	}
	e.verify("alice", e.wrongCode(secret))
	// Typed in upper case with spaces: still the code.
	typed := strings.ToUpper(strings.ReplaceAll(rc, "-", " "))
	r := e.verify("alice", typed)
	wantResult(t, r, Accepted, "recovery code accepted; 9 left", reasonRecovery)
	if r.Method != MethodRecovery {
		t.Errorf("method %q", r.Method)
	}
	if u := e.user("alice"); u.Failures != 0 || u.RecoveryCodesLeft != 9 || u.LastLoginAt.IsZero() {
		t.Errorf("after a recovery login: %+v", u)
	}
	wantResult(t, e.verify("alice", rc), Rejected, MsgWrong, reasonRecWrong)
	wantResult(t, e.verify("alice", "abcd-efgh-ijkl-mnop"), Rejected, MsgWrong, reasonRecWrong)
	if u := e.user("alice"); u.Failures != 2 {
		t.Errorf("failures = %d, want 2", u.Failures)
	}
	// New codes replace the old ones.
	u, codes, err := e.svc.NewRecoveryCodes(ctx, "alice", tOp)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 || u.RecoveryCodesLeft != 10 {
		t.Fatalf("%d new codes, %d left", len(codes), u.RecoveryCodesLeft)
	}
	wantResult(t, e.verify("alice", en.RecoveryCodes[4]), Rejected, MsgWrong, reasonRecWrong)
	wantResult(t, e.verify("alice", codes[0]), Accepted, "9 left", reasonRecovery)
	if _, _, err := e.svc.NewRecoveryCodes(ctx, "nobody", tOp); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("NewRecoveryCodes(unknown) = %v", err)
	}
}

func TestResync(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	_, secret := e.enroll("alice")
	// The token's clock runs 5 minutes fast.
	const drift = 5 * time.Minute
	wantResult(t, e.verify("alice", e.code(secret, drift)), Rejected, MsgWrong, reasonWrong)
	// The helpdesk reads two consecutive codes off the token.
	c1 := e.code(secret, drift)
	e.clock.Add(30 * time.Second)
	c2 := e.code(secret, drift)
	if _, err := e.svc.Resync(ctx, "alice", c2, c1, tOp); !errors.Is(err, ErrWrongCode) {
		t.Errorf("Resync(swapped codes) = %v, want ErrWrongCode", err)
	}
	if _, err := e.svc.Resync(ctx, "alice", c1, "12", tOp); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "second code") {
		t.Errorf("Resync(malformed) = %v, want ErrInvalid naming the second code", err)
	}
	u, err := e.svc.Resync(ctx, "alice", c1, c2, tOp)
	if err != nil {
		t.Fatal(err)
	}
	if u.Offset != 10 || u.State != store.UserPending || u.Failures != 1 {
		t.Errorf("after resync: offset %d (want 10), state %s, failures %d (resync changes nothing else)", u.Offset, u.State, u.Failures)
	}
	if _, err := e.svc.Resync(ctx, "alice", c1, c2, tOp); !errors.Is(err, ErrReplay) {
		t.Errorf("Resync with used codes = %v, want ErrReplay", err)
	}
	wantResult(t, e.verify("alice", c2), Rejected, MsgWrong, reasonReplay)
	e.clock.Add(30 * time.Second)
	wantResult(t, e.verify("alice", e.code(secret, drift)), Accepted, MsgConfirmed, reasonConfirmed)
	// Further than ResyncSteps away: not found.
	far := time.Duration(ResyncSteps+5) * 30 * time.Second
	if _, err := e.svc.Resync(ctx, "alice", e.code(secret, far), e.code(secret, far+30*time.Second), tOp); !errors.Is(err, ErrWrongCode) {
		t.Errorf("Resync(far) = %v, want ErrWrongCode", err)
	}
}

func TestReset(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	old := e.active("alice")
	for range 10 {
		e.verify("alice", e.wrongCode(old))
	}
	en, err := e.svc.Reset(ctx, "alice", opNamed("admin2"))
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := totp.DecodeSecret(en.Secret)
	u := en.User
	if u.State != store.UserPending || !u.LockedAt.IsZero() || u.Failures != 0 || u.LastStep != 0 || len(en.RecoveryCodes) != 10 {
		t.Errorf("after reset: %+v", u)
	}
	wantResult(t, e.verify("alice", e.code(old, 0)), Rejected, MsgWrong, "")
	wantResult(t, e.verify("alice", e.code(secret, 0)), Accepted, MsgConfirmed, "")
	if _, err := e.svc.Reset(ctx, "nobody", opNamed("admin")); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("Reset(unknown) = %v", err)
	}
	if err := e.svc.Delete(ctx, "alice", tOp); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, "alice", tOp); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("second Delete = %v", err)
	}
	wantResult(t, e.verify("alice", e.code(secret, 30*time.Second)), UnknownUser, MsgUnknownUser, "")
}

// TestConcurrentSameStep: two verifications of one correct code race;
// exactly one wins, also across two Services (replicas) over one store,
// where only the store's compare-and-set decides.
func TestConcurrentSameStep(t *testing.T) {
	for _, replicas := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicas=%v", replicas), func(t *testing.T) {
			e := newEnv(t, nil)
			secret := e.active("alice")
			svcs := []*Service{e.svc, e.svc}
			if replicas {
				other, err := New(e.st, e.key, e.svc.Policy())
				if err != nil {
					t.Fatal(err)
				}
				svcs[1] = other
			}
			for round := range 10 {
				code := e.code(secret, 0)
				results := make([]Result, 2)
				var wg sync.WaitGroup
				for i := range 2 {
					wg.Go(func() {
						r, err := svcs[i].Verify(context.Background(), terminalID, "alice", "login", code)
						if err != nil {
							t.Error(err)
						}
						results[i] = r
					})
				}
				wg.Wait()
				accepted := 0
				for _, r := range results {
					if r.Outcome == Accepted {
						accepted++
					}
				}
				if accepted != 1 {
					t.Fatalf("round %d: %d accepted: %+v", round, accepted, results)
				}
				e.clock.Add(30 * time.Second)
				if _, err := e.svc.Unlock(context.Background(), "alice", tOp); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestImportCSV(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	data, err := os.ReadFile("../seeds/testdata/tokens.csv")
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Import(ctx, ImportRequest{Data: data, Op: opNamed("admin")})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alice": "SN0001/SHA1/6/30", "bob": "SN0002/SHA256/8/60", "carol": "SN0003/SHA1/6/30"}
	if res.Tokens != 3 || res.Assigned != 3 || len(res.Users) != 3 {
		t.Fatalf("imported %+v", res)
	}
	for _, name := range res.Users {
		u := e.user(name)
		got := fmt.Sprintf("%s/%s/%d/%d", u.TokenSerial, u.Algorithm, u.Digits, u.Period)
		if got != want[u.Name] || u.State != store.UserPending || u.Source != store.SourceImported || u.CreatedBy != "admin" {
			t.Errorf("user %s: %s %s %s, want %s pending imported", u.Name, got, u.State, u.Source, want[u.Name])
		}
	}
	// bob's token: SHA-256, 8 digits, 60 s.
	seed := []byte("12345678901234567890")
	p := totp.Params{Algorithm: otp.AlgorithmSHA256, Digits: otp.DigitsEight, Period: 60}
	wantResult(t, e.verify("bob", codeAt(t, seed, e.clock.Now(), p)), Accepted, MsgConfirmed, "")

	// Again: everyone exists, nothing changes.
	_, err = e.svc.Import(ctx, ImportRequest{Data: data, Format: FormatCSV, Op: tOp})
	if !errors.Is(err, ErrUserExists) || !strings.Contains(err.Error(), "alice, bob, carol") {
		t.Fatalf("second import = %v, want ErrUserExists naming the users", err)
	}
	if u := e.user("bob"); u.State != store.UserActive {
		t.Errorf("failed import changed bob: %+v", u)
	}
	// With replace: bob is pending again on the (same) token.
	if _, err := e.svc.Import(ctx, ImportRequest{Data: data, Replace: true, Op: tOp}); err != nil {
		t.Fatal(err)
	}
	if u := e.user("bob"); u.State != store.UserPending || u.LastStep != 0 {
		t.Errorf("replaced bob: %+v", u)
	}
}

func TestImportErrors(t *testing.T) {
	pskcOpenSSL, err := os.ReadFile("../seeds/testdata/openssl-aes256.xml")
	if err != nil {
		t.Fatal(err)
	}
	opensslKey, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	tests := []struct {
		name string
		req  ImportRequest
		want string
	}{
		{"empty", ImportRequest{}, "empty"},
		{"bad format", ImportRequest{Data: []byte("x"), Format: "xlsx"}, `format "xlsx"`},
		{"key and password", ImportRequest{Data: pskcOpenSSL, Key: opensslKey, Password: "pw"}, "not both"},
		{"key for csv", ImportRequest{Data: []byte("serial,user,seed\n"), Key: opensslKey}, "only for PSKC"},
		{"assignment not in file", ImportRequest{Data: pskcOpenSSL, Key: opensslKey, Assign: map[string]string{"ACME-0009": "erin"}}, `token "ACME-0009", which is not in the pskc seed file`},
		{"assignment against file", ImportRequest{Data: pskcOpenSSL, Key: opensslKey, Assign: map[string]string{"ACME-0001": "erin"}}, `the file gives it to user alice, the assignment to erin`},
		{"wrong key", ImportRequest{Data: pskcOpenSSL, Key: make([]byte, 32)}, "decryption failed"},
		{"no key", ImportRequest{Data: pskcOpenSSL}, "key is required"},
		{"bad name", ImportRequest{Data: []byte("serial,user,seed\nSN1,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\nSN2,bad name,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")}, `token "SN2": invalid: user name "bad name"`},
		{"duplicate user", ImportRequest{Data: []byte("serial,user,seed\nSN1,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\nSN2,alice,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")}, `user alice has two tokens`},
		{"bad seed", ImportRequest{Data: []byte("serial,user,seed\nSN1,alice,GEZDGNBV\n")}, "csv seed file"},
		{"no rows", ImportRequest{Data: []byte("serial,user,seed\n")}, "no seeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			_, err := e.svc.Import(context.Background(), tt.req)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Import = %v, want ErrInvalid containing %q", err, tt.want)
			}
			if us, _ := e.svc.Users(context.Background()); len(us) != 0 {
				t.Errorf("failed import left %d users", len(us))
			}
		})
	}
}

func TestImportPSKC(t *testing.T) {
	e := newEnv(t, nil)
	data, err := os.ReadFile("../seeds/testdata/totp-plain.xml")
	if err != nil {
		t.Fatal(err)
	}
	// The second token names no user in the file; give it one.
	const tail = "<TimeInterval><PlainValue>60</PlainValue></TimeInterval>\n      </Data>"
	if !strings.Contains(string(data), tail) {
		t.Fatal("testdata changed")
	}
	data = []byte(strings.Replace(string(data), tail, tail+"\n      <UserId>dave@example.lg.jp</UserId>", 1))
	res, err := e.svc.Import(context.Background(), ImportRequest{Data: data, Format: FormatAuto, Op: tOp})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Users) != 2 || res.Users[0] != "bob" || res.Users[1] != "dave@example.lg.jp" {
		t.Fatalf("imported %+v", res)
	}
	if u := e.user("dave@example.lg.jp"); u.Algorithm != "SHA512" || u.TokenSerial != "SN-1002" {
		t.Fatalf("imported %+v", u)
	}
	seed := []byte("123456789012345678901234567890123456789012345678901234")
	p := totp.Params{Algorithm: otp.AlgorithmSHA512, Digits: otp.DigitsEight, Period: 60}
	wantResult(t, e.verify("dave@example.lg.jp", codeAt(t, seed, e.clock.Now(), p)), Accepted, MsgConfirmed, "")
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "totp.key")
	if _, err := LoadKey(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadKey(missing) = %v, want ErrNotExist", err)
	}
	if err := CreateKey(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Errorf("key file mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), KeySize)
	}
	key, err := LoadKey(path)
	if err != nil || len(key) != KeySize {
		t.Fatalf("LoadKey = %d bytes, %v", len(key), err)
	}
	if err := CreateKey(path); err == nil {
		t.Error("CreateKey over an existing key succeeded")
	}
	again, _ := LoadKey(path)
	if string(again) != string(key) {
		t.Error("the key changed")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadKey(0644) = %v, want a mode error", err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, make([]byte, 16), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(short); err == nil || !strings.Contains(err.Error(), "16 bytes, want 32") {
		t.Errorf("LoadKey(16 bytes) = %v", err)
	}
	if _, err := New(nil, make([]byte, 16), DefaultPolicy()); err == nil {
		t.Error("New with a 16-byte key succeeded")
	}
}

// TestSecretsSealed: neither the secrets (raw or base32) nor the recovery
// codes are anywhere in the database files.
func TestSecretsSealed(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	var needles []string
	for _, name := range []string{"alice", "bob"} {
		en, secret := e.enroll(name)
		needles = append(needles, string(secret), en.Secret, strings.ToLower(en.Secret))
		for _, c := range en.RecoveryCodes {
			needles = append(needles, c, strings.ReplaceAll(c, "-", ""))
		}
	}
	csv := "serial,user,seed\nSN9,carol,ORSXG5BAONSWKZBAMZXXEIDDMFZG63BB\n"
	if _, err := e.svc.Import(ctx, ImportRequest{Data: []byte(csv), Op: tOp}); err != nil {
		t.Fatal(err)
	}
	needles = append(needles, "ORSXG5BAONSWKZBAMZXXEIDDMFZG63BB", "test seed for carol!")
	// Checkpoint nothing on purpose: read the main file and the WAL as
	// they are.
	files, _ := filepath.Glob(e.path + "*")
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if len(all) == 0 {
		t.Fatal("no database bytes")
	}
	for _, n := range needles {
		if strings.Contains(string(all), n) {
			t.Errorf("database files contain a secret or code (%d bytes)", len(n))
		}
	}
	if !strings.Contains(string(all), "alice") {
		t.Error("database files do not even contain the user name: the search reads the wrong files")
	}
	u := e.user("alice")
	if len(u.SecretSealed) != 1+12+20+16 || u.SecretSealed[0] != sealVersion {
		t.Errorf("sealed secret %d bytes, version %d", len(u.SecretSealed), u.SecretSealed[0])
	}
}

// TestSealBinding: a sealed secret opens only for its user and key, and a
// secret moved to another user's row fails the login with an error.
func TestSealBinding(t *testing.T) {
	key := make([]byte, KeySize)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.seal("alice", []byte("12345678901234567890"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.open("alice", sealed); err != nil || string(got) != "12345678901234567890" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := s.open("bob", sealed); err == nil || !strings.Contains(err.Error(), "another user") {
		t.Errorf("open for bob = %v", err)
	}
	other, _ := newSealer(append([]byte{1}, key[1:]...))
	if _, err := other.open("alice", sealed); err == nil {
		t.Error("opened under another key")
	}
	bad := append([]byte{2}, sealed[1:]...)
	if _, err := s.open("alice", bad); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("open(version 2) = %v", err)
	}
	if _, err := s.open("alice", sealed[:20]); err == nil {
		t.Error("opened a truncated secret")
	}
	again, _ := s.seal("alice", []byte("12345678901234567890"))
	if string(again) == string(sealed) {
		t.Error("sealing twice gave the same bytes: nonce not random")
	}

	e := newEnv(t, nil)
	secret := e.active("alice")
	e.active("bob")
	alice := e.user("alice")
	bob := e.user("bob")
	bob.SecretSealed = alice.SecretSealed
	if err := e.st.ImportUsers(context.Background(), []store.User{bob}, true); err != nil {
		t.Fatal(err)
	}
	if r, err := e.svc.Verify(context.Background(), terminalID, "bob", "login", e.code(secret, 0)); err == nil || r.Outcome == Accepted {
		t.Errorf("bob with alice's sealed secret: %+v, %v; want an error", r, err)
	}
}

func TestOfflineLoginCode(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	_, secret := e.enroll("alice")
	// Not before the user confirmed the enrollment: the code would be a
	// second factor the helpdesk chose.
	if _, _, err := e.svc.OfflineLoginCode(ctx, terminalID, "alice", "1234 5678", tOp); !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("pending user: OfflineLoginCode = %v, want ErrNotConfirmed", err)
	}
	if _, err := e.svc.Confirm(ctx, "alice", e.code(secret, 0), tOp); err != nil {
		t.Fatal(err)
	}
	code, until, err := e.svc.OfflineLoginCode(ctx, terminalID, "alice", "1234 5678", tOp)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d{5}-\d{5}$`).MatchString(code) {
		t.Errorf("code %q, want 12345-67890", code)
	}
	if !until.After(e.clock.Now().Add(time.Hour)) || until.After(e.clock.Now().Add(2*time.Hour)) {
		t.Errorf("valid until %v, now %v", until, e.clock.Now())
	}
	tests := []struct {
		terminal, user, challenge string
		want                      error
	}{
		{terminalID, "alice", "1234567", ErrInvalid},
		{terminalID, "alice", "1234567a", ErrInvalid},
		{terminalID, "al ice", "12345678", ErrInvalid},
		{terminalID, "nobody", "12345678", ErrUnknownUser},
		{"9b5f7a4e-3c55-4a8e-9d7e-1f2a3b4c5d6e", "alice", "12345678", ErrUnknownTerminal},
	}
	for _, tt := range tests {
		if _, _, err := e.svc.OfflineLoginCode(ctx, tt.terminal, tt.user, tt.challenge, tOp); !errors.Is(err, tt.want) {
			t.Errorf("OfflineLoginCode(%s, %s, %s) = %v, want %v", tt.terminal, tt.user, tt.challenge, err, tt.want)
		}
	}
	if err := e.st.RevokeTerminal(ctx, terminalID, "test", t0, store.AuditEntry{Actor: "test", Action: "terminal.revoke"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.OfflineLoginCode(ctx, terminalID, "alice", "12345678", tOp); !errors.Is(err, ErrTerminalRevoked) {
		t.Errorf("revoked terminal: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "alice", "Alice", "_svc", "0day", "taro.yamada", "t-yamada", "yamada@city.example.lg.jp", "user_01", strings.Repeat("a", 64)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	bad := []struct{ name, want string }{
		{"", "empty"},
		{strings.Repeat("a", 65), "65 bytes, at most 64"},
		{strings.Repeat("a", 10000), "10000 bytes"},
		{".hidden", "must start with"},
		{"-rf", "must start with"},
		{"@domain", "must start with"},
		{"taro yamada", "a space at byte 5"},
		{"alice\n", "control character U+000A at byte 6"},
		{"ali\x00ce", "control character U+0000"},
		{"山田", "non-ASCII"},
		{"a/b", `character '/'`},
		{"a:b", `character ':'`},
		{"a\\b", `character '\\'`},
		{"a\xffb", "non-ASCII"},
	}
	for _, tt := range bad {
		err := ValidateName(tt.name)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ValidateName(%.20q) = %v, want ErrInvalid containing %q", tt.name, err, tt.want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("error is %d bytes long", len(err.Error()))
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mod  func(*Policy)
		want string
	}{
		{func(p *Policy) { p.Window = -1 }, "window -1"},
		{func(p *Policy) { p.Window = 11 }, "window 11"},
		{func(p *Policy) { p.DelayAfter = -1 }, "delay after -1"},
		{func(p *Policy) { p.Delay = -time.Second }, "delay -1s"},
		{func(p *Policy) { p.Delay = 6 * time.Second }, "delay 6s"},
		{func(p *Policy) { p.LockAfter = 0 }, "lock after 0"},
		{func(p *Policy) { p.LockAfter = 101 }, "lock after 101"},
		{func(p *Policy) { p.Issuer = "a\nb" }, "control character"},
	}
	for _, tt := range tests {
		p := DefaultPolicy()
		tt.mod(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate() = %v, want %q", err, tt.want)
		}
	}
	if _, err := New(nil, make([]byte, KeySize), Policy{}); err == nil {
		t.Error("New accepted the zero Policy")
	}
}

func TestNormalizeRecovery(t *testing.T) {
	for in, want := range map[string]string{
		"abcd-efgh-ijkl-mnop":     "abcdefghijklmnop",
		"ABCD EFGH IJKL MNOP":     "abcdefghijklmnop",
		"abcdefghijklmnop":        "abcdefghijklmnop",
		"a2c4-e6g7-ijkl-mnop":     "a2c4e6g7ijklmnop",
		"123456":                  "",
		"12345678":                "",
		"abcd-efgh-ijkl-mno":      "",
		"abcd-efgh-ijkl-mnop-q":   "",
		"abcd-efgh-ijkl-mn0p":     "",
		"abcd_efgh_ijkl_mnop":     "",
		strings.Repeat("-", 1000): "",
	} {
		got, ok := normalizeRecovery(in)
		if got != want || ok != (want != "") {
			t.Errorf("normalizeRecovery(%.30q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	e := newEnv(b, nil)
	secret := e.active("alice")
	b.ResetTimer()
	for b.Loop() {
		e.clock.Add(30 * time.Second)
		r, err := e.svc.Verify(context.Background(), terminalID, "alice", "login", e.code(secret, 0))
		if err != nil || r.Outcome != Accepted {
			b.Fatalf("%+v, %v", r, err)
		}
	}
}

// tOp is the operator of the tests' changes.
var tOp = Operator{Name: "admin", Role: store.RoleAdmin, Actor: "admin (admin, token)"}

func opNamed(name string) Operator {
	return Operator{Name: name, Role: store.RoleAdmin, Actor: name + " (admin, token)"}
}

// TestIssuedCodesNotice: codes an operator issues for a user (recovery
// codes, an offline login code, a reset) are audited with the operator in
// their transaction and announced, with who and when, in the message of
// the user's next accepted login only.
func TestIssuedCodesNotice(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	secret := e.active("alice")
	desk := Operator{Name: "ito", Role: store.RoleHelpdesk, Actor: "ito (helpdesk, console)"}

	if r := e.verify("alice", e.code(secret, 0)); r.Outcome != Accepted || r.Message != MsgAccepted {
		t.Fatalf("login before any codes were issued: %+v", r)
	}
	when := e.clock.Now().Local().Format("2006-01-02 15:04 MST")
	if _, _, err := e.svc.OfflineLoginCode(ctx, terminalID, "alice", "12345678", desk); err != nil {
		t.Fatal(err)
	}
	_, codes, err := e.svc.NewRecoveryCodes(ctx, "alice", tOp)
	if err != nil {
		t.Fatal(err)
	}
	audit, err := e.st.AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action+" by "+a.Actor+" on "+a.Target)
	}
	for _, want := range []string{"user.offline_code by ito (helpdesk, console) on alice", "user.recovery_codes by admin (admin, token) on alice"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit log %q lacks %q", actions, want)
		}
	}

	e.clock.Add(30 * time.Second)
	r := e.verify("alice", e.code(secret, 0))
	for _, want := range []string{
		MsgAccepted + ". An offline login code for terminal term-01 was issued for you on " + when + " by helpdesk operator ito. If you did not ask for it, call your administrator.",
		"New recovery codes were issued for you on " + when + " by administrator admin. If you did not ask for them, call your administrator.",
	} {
		if r.Outcome != Accepted || !strings.Contains(r.Message, want) {
			t.Errorf("first login after codes were issued: %+v; want the message to contain %q", r, want)
		}
	}
	if u := e.user("alice"); u.Notice != "" {
		t.Errorf("notice %q left after it was shown", u.Notice)
	}
	// Shown once: the recovery code's login, then a TOTP login, say
	// nothing more.
	if r := e.verify("alice", codes[0]); r.Outcome != Accepted || strings.Contains(r.Message, "issued") {
		t.Errorf("second login: %+v", r)
	}
	e.clock.Add(30 * time.Second)
	if r := e.verify("alice", e.code(secret, 0)); r.Outcome != Accepted || r.Message != MsgAccepted {
		t.Errorf("third login: %+v", r)
	}

	// A failed login shows nothing and keeps the notice.
	if _, err := e.svc.Reset(ctx, "alice", tOp); err != nil {
		t.Fatal(err)
	}
	if r := e.verify("alice", e.code(secret, 30*time.Second)); r.Outcome == Accepted || strings.Contains(r.Message, "issued") {
		t.Errorf("refused login after a reset: %+v", r)
	}
	if u := e.user("alice"); !strings.Contains(u.Notice, "Your TOTP token was reset and new recovery codes were issued for you on") {
		t.Errorf("notice after a reset: %q", u.Notice)
	}
}

// TestNoticesFitTheAgent: however many notices wait, the message fits the
// agent's 512 bytes and says how many it left out.
func TestNoticesFitTheAgent(t *testing.T) {
	now := time.Date(2026, 12, 7, 11, 31, 0, 0, time.UTC)
	op := Operator{Name: strings.Repeat("o", 64), Role: store.RoleHelpdesk}
	one := offlineNotice(now, op, strings.Repeat("h", 64))
	for n := 1; n <= 5; n++ {
		got := withNotices(MsgAccepted, strings.TrimSuffix(strings.Repeat(one+"\n", n), "\n"))
		shown := strings.Count(got, "An offline login code")
		switch {
		case len(got) > maxLoginMessage:
			t.Errorf("%d notices: %d bytes, more than %d", n, len(got), maxLoginMessage)
		case shown == 0:
			t.Errorf("%d notices: none shown: %q", n, got)
		case shown < n && !strings.Contains(got, fmt.Sprintf("%d more notices", n-shown)):
			t.Errorf("%d notices, %d shown, without saying so: %q", n, shown, got)
		case !strings.HasPrefix(got, MsgAccepted+". "):
			t.Errorf("%d notices: %q", n, got)
		}
	}
}
