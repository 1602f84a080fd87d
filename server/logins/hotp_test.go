package logins

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/server/seeds"
	"github.com/mnguard/mnguard/server/store"
)

// oathtoolHOTP returns the codes of counters from to from+n-1 of secret
// from oathtool (OATH Toolkit, Debian package oathtool), an independent
// RFC 4226 implementation. It skips when oathtool is missing, except
// under CI=true.
func oathtoolHOTP(t *testing.T, secret []byte, digits int, from uint64, n int) []string {
	t.Helper()
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("oathtool not found (apt-get install oathtool); CI must run this test: %v", err)
		}
		t.Skipf("oathtool not found (apt-get install oathtool): %v", err)
	}
	out, err := exec.Command(bin, "--hotp", "-d", strconv.Itoa(digits), "-c", strconv.FormatUint(from, 10),
		"-w", strconv.Itoa(n-1), hex.EncodeToString(secret)).Output()
	if err != nil {
		t.Fatalf("oathtool: %v", err)
	}
	codes := strings.Fields(string(out))
	if len(codes) != n {
		t.Fatalf("oathtool printed %d codes, want %d", len(codes), n)
	}
	return codes
}

var hotpSecret = []byte("12345678901234567890")

// hotpUser stores a pending HOTP user whose next counter is counter, as
// an import of a hardware token does.
func (e *env) hotpUser(name string, digits int, counter int64, notAfter time.Time) {
	e.t.Helper()
	sealed, err := e.svc.seal.seal(name, hotpSecret)
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.st.ImportTokens(context.Background(), store.TokenImport{Users: []store.User{{
		Name: name, SecretSealed: sealed, Kind: store.TokenHOTP, Algorithm: "SHA1", Digits: digits,
		Counter: counter, NotAfter: notAfter, TokenSerial: "HOTP-" + name, CreatedAt: e.clock.Now(),
	}}}, store.AuditEntry{Actor: "test", Action: "user.import"})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestHOTPKnownAnswers checks the code generator against RFC 4226
// Appendix D.
func TestHOTPKnownAnswers(t *testing.T) {
	want := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	tok, err := hotpParams(store.User{Algorithm: "SHA1", Digits: 6})
	if err != nil {
		t.Fatal(err)
	}
	for c, w := range want {
		if got := tok.code(hotpSecret, uint64(c)); got != w {
			t.Errorf("counter %d: %s, want %s", c, got, w)
		}
	}
}

// TestHOTPLogin: look-ahead of 10, the counter moves past the match,
// replays and codes beyond the window are refused and counted, and the
// lockout is TOTP's. Codes come from oathtool.
func TestHOTPLogin(t *testing.T) {
	for _, digits := range []int{6, 8} {
		t.Run(strconv.Itoa(digits), func(t *testing.T) {
			e := newEnv(t, nil)
			const start = 1000
			e.hotpUser("hana", digits, start, time.Time{})
			codes := oathtoolHOTP(t, hotpSecret, digits, start, 40) // codes[i] is counter start+i

			// Pending: the first code confirms, as a TOTP code does.
			r := e.verify("hana", codes[3])
			wantResult(t, r, Accepted, MsgConfirmed, reasonConfirmed)
			if r.Method != MethodHOTP {
				t.Errorf("method %q, want %q", r.Method, MethodHOTP)
			}
			if u := e.user("hana"); u.Counter != start+4 || u.State != store.UserActive || u.Kind != store.TokenHOTP {
				t.Fatalf("after counter %d: %+v", start+3, u)
			}
			// Replays: the same code, and an older one.
			wantResult(t, e.verify("hana", codes[3]), Rejected, MsgWrong, reasonReplayCounter)
			wantResult(t, e.verify("hana", codes[1]), Rejected, MsgWrong, reasonReplayCounter)
			// Beyond the window: counter+11.
			wantResult(t, e.verify("hana", codes[4+HOTPWindow+1]), Rejected, MsgWrong, reasonWrong)
			if u := e.user("hana"); u.Failures != 3 || u.Counter != start+4 {
				t.Fatalf("after three refusals: failures %d counter %d", u.Failures, u.Counter)
			}
			// At the window's edge: counter+10, which clears the failures.
			wantResult(t, e.verify("hana", codes[4+HOTPWindow]), Accepted, MsgAccepted, reasonAccepted)
			if u := e.user("hana"); u.Counter != start+4+HOTPWindow+1 || u.Failures != 0 {
				t.Fatalf("after the window's edge: %+v", u)
			}
			// Malformed: not counted.
			wantResult(t, e.verify("hana", "12345"), Rejected, MsgMalformed, reasonMalformed)

			// Lockout after LockAfter wrong codes, as for TOTP; then even
			// the right code is not looked at.
			next := codes[4+HOTPWindow+1]
			wrong := strings.Repeat("9", digits)
			for i := range DefaultLockAfter {
				r := e.verify("hana", wrong)
				if r.Outcome != Rejected || (i == DefaultLockAfter-1) != strings.Contains(r.Reason, "lock reached") {
					t.Fatalf("wrong code %d: %+v", i+1, r)
				}
			}
			wantResult(t, e.verify("hana", next), Locked, MsgLocked, reasonLocked)
			if _, err := e.svc.Unlock(context.Background(), "hana", tOp); err != nil {
				t.Fatal(err)
			}
			wantResult(t, e.verify("hana", next), Accepted, MsgAccepted, reasonAccepted)
		})
	}
}

// TestHOTPResync: two consecutive codes up to 1,000 presses ahead move
// the counter past them; codes that are not consecutive, or are below the
// counter, are refused.
func TestHOTPResync(t *testing.T) {
	e := newEnv(t, nil)
	e.hotpUser("ken", 6, 0, time.Time{})
	ctx := context.Background()
	codes := oathtoolHOTP(t, hotpSecret, 6, 0, HOTPResyncWindow+2)
	if _, err := e.svc.Resync(ctx, "ken", codes[700], codes[702], tOp); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("resync with codes two apart = %v, want ErrWrongCode", err)
	}
	if _, err := e.svc.Resync(ctx, "ken", codes[HOTPResyncWindow], codes[HOTPResyncWindow+1], tOp); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("resync beyond the window = %v, want ErrWrongCode", err)
	}
	u, err := e.svc.Resync(ctx, "ken", codes[700], codes[701], tOp)
	if err != nil {
		t.Fatal(err)
	}
	if u.Counter != 702 || u.State != store.UserPending {
		t.Fatalf("after resync: %+v", u)
	}
	// Used codes are not found again.
	if _, err := e.svc.Resync(ctx, "ken", codes[700], codes[701], tOp); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("resync with used codes = %v, want ErrWrongCode", err)
	}
	wantResult(t, e.verify("ken", codes[701]), Rejected, MsgWrong, reasonReplayCounter)
	wantResult(t, e.verify("ken", codes[702]), Accepted, MsgConfirmed, reasonConfirmed)
	if es, err := e.st.AuditLog(ctx, 10); err != nil || !hasAction(es, "user.resync") {
		t.Errorf("audit log %v (%v): no user.resync", es, err)
	}
}

func hasAction(es []store.AuditEntry, action string) bool {
	for _, e := range es {
		if e.Action == action {
			return true
		}
	}
	return false
}

// TestHOTPCounterCompareAndSet: the counter moves only from the value
// expected, only forward, only for HOTP users.
func TestHOTPCounterCompareAndSet(t *testing.T) {
	e := newEnv(t, nil)
	e.hotpUser("mei", 6, 5, time.Time{})
	ctx := context.Background()
	if _, err := e.st.AcceptCounter(ctx, store.CounterUpdate{Name: "mei", ExpectCounter: 5, Counter: 8}); err != nil {
		t.Fatal(err)
	}
	// Another replica still expects 5: refused.
	if _, err := e.st.AcceptCounter(ctx, store.CounterUpdate{Name: "mei", ExpectCounter: 5, Counter: 7}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale compare-and-set = %v, want ErrConflict", err)
	}
	// A counter never goes back.
	if _, err := e.st.AcceptCounter(ctx, store.CounterUpdate{Name: "mei", ExpectCounter: 8, Counter: 8}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("same counter = %v, want ErrConflict", err)
	}
	// Not for TOTP users.
	e.enroll("toto")
	if _, err := e.st.AcceptCounter(ctx, store.CounterUpdate{Name: "toto", ExpectCounter: 0, Counter: 1}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("TOTP user = %v, want ErrConflict", err)
	}
}

// TestConfirmResetsFailures: an operator's successful confirm clears the
// failures that wrong codes counted, for TOTP and HOTP.
func TestConfirmResetsFailures(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	_, secret := e.enroll("sora")
	for range 4 {
		e.verify("sora", e.wrongCode(secret))
	}
	if u := e.user("sora"); u.Failures != 4 {
		t.Fatalf("failures %d, want 4", u.Failures)
	}
	u, err := e.svc.Confirm(ctx, "sora", e.code(secret, 0), tOp)
	if err != nil {
		t.Fatal(err)
	}
	if u.Failures != 0 || e.user("sora").Failures != 0 {
		t.Errorf("TOTP confirm left %d failures, want 0", e.user("sora").Failures)
	}

	e.hotpUser("haru", 6, 0, time.Time{})
	codes := oathtoolHOTP(t, hotpSecret, 6, 0, 3)
	for range 4 {
		e.verify("haru", "999999")
	}
	if u := e.user("haru"); u.Failures != 4 {
		t.Fatalf("failures %d, want 4", u.Failures)
	}
	if u, err = e.svc.Confirm(ctx, "haru", codes[1], tOp); err != nil {
		t.Fatal(err)
	}
	if u.Failures != 0 || u.State != store.UserActive || u.Counter != 2 {
		t.Errorf("HOTP confirm: %+v, want active, 0 failures, counter 2", u)
	}
}

// TestExpiredToken: a token past its key's expiry logs nobody in, with a
// message that says so, and counts no failure; its import is refused.
func TestExpiredToken(t *testing.T) {
	e := newEnv(t, nil)
	notAfter := e.clock.Now().Add(24 * time.Hour)
	e.hotpUser("rin", 6, 0, notAfter)
	codes := oathtoolHOTP(t, hotpSecret, 6, 0, 3)
	wantResult(t, e.verify("rin", codes[0]), Accepted, MsgConfirmed, "")
	e.clock.Add(25 * time.Hour)
	r := e.verify("rin", codes[1])
	wantResult(t, r, Rejected, "expired on "+notAfter.UTC().Format(time.DateOnly), reasonExpired)
	if u := e.user("rin"); u.Failures != 0 || u.Counter != 1 {
		t.Errorf("expired token: %+v, want no failure and the counter unmoved", u)
	}
	e.hotpUser("yui", 6, 0, notAfter)
	if _, err := e.svc.Confirm(context.Background(), "yui", codes[0], tOp); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Confirm of an expired token = %v", err)
	}
	// An import of an expired token is refused.
	sd := seeds.Seed{Kind: seeds.HOTP, Serial: "SN1", Secret: hotpSecret, Algorithm: "SHA1", Digits: 6, NotAfter: notAfter}
	if _, err := checkSeed(sd, e.clock.Now()); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `token "SN1": its key expired on`) {
		t.Errorf("checkSeed of an expired token = %v", err)
	}
}

// TestImportUnassigned: tokens a file gives to nobody are kept, log nobody
// in, and Assign gives them to a user; --assign does it at import.
func TestImportUnassigned(t *testing.T) {
	data, err := os.ReadFile("../seeds/testdata/openssl-aes256.xml")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	ctx := context.Background()

	e := newEnv(t, nil)
	res, err := e.svc.Import(ctx, ImportRequest{Data: data, Key: key, Op: tOp})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens != 2 || res.Assigned != 1 || res.Unassigned != 1 {
		t.Fatalf("import: %+v", res)
	}
	ts, err := e.svc.Tokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].Serial != "ACME-0002" || ts[0].CreatedBy != tOp.Name {
		t.Fatalf("unassigned tokens %+v, %v", ts, err)
	}
	if us, _ := e.svc.Users(ctx); len(us) != 1 {
		t.Fatalf("%d users, want alice alone", len(us))
	}
	// Importing it again: the serial exists.
	if _, err := e.svc.Import(ctx, ImportRequest{Data: data, Key: key, Op: tOp}); !errors.Is(err, ErrUserExists) {
		t.Fatalf("second import = %v, want ErrUserExists", err)
	}
	if _, err := e.svc.Assign(ctx, "ACME-0009", "erin", false, tOp); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("Assign of an unknown serial = %v", err)
	}
	if _, err := e.svc.Assign(ctx, "ACME-0002", "alice", false, tOp); !errors.Is(err, ErrUserExists) {
		t.Fatalf("Assign to an existing user = %v", err)
	}
	u, err := e.svc.Assign(ctx, "ACME-0002", "erin", false, tOp)
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "erin" || u.TokenSerial != "ACME-0002" || u.State != store.UserPending || u.Source != store.SourceImported {
		t.Fatalf("assigned: %+v", u)
	}
	if ts, _ := e.svc.Tokens(ctx); len(ts) != 0 {
		t.Errorf("still unassigned: %+v", ts)
	}
	if _, err := e.svc.Assign(ctx, "ACME-0002", "fumi", false, tOp); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("second Assign = %v, want ErrUnknownToken", err)
	}
	if es, err := e.st.AuditLog(ctx, 10); err != nil || !hasAction(es, "user.assign") || !hasAction(es, "user.import") {
		t.Errorf("audit log %+v (%v): want user.import and user.assign", es, err)
	}

	// With an assignment at import.
	e = newEnv(t, nil)
	res, err = e.svc.Import(ctx, ImportRequest{Data: data, Key: key, Op: tOp, Assign: map[string]string{"ACME-0002": "erin"}})
	if err != nil || res.Assigned != 2 || res.Unassigned != 0 {
		t.Fatalf("import with assignment: %+v, %v", res, err)
	}
	if u := e.user("erin"); u.TokenSerial != "ACME-0002" {
		t.Fatalf("erin: %+v", u)
	}
}
