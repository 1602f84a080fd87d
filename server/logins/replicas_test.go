package logins

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/internal/testenv"
	"github.com/mnguard/mnguard/server/store"
)

// replicas returns two Services on one PostgreSQL database, as two
// collectors sharing it (and the data directory's totp.key) run them.
func replicas(t *testing.T, mod func(*Policy)) (*env, *Service) {
	t.Helper()
	a := newEnvAt(t, testenv.Postgres(t), mod)
	st, err := store.Open(context.Background(), a.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.SetKeySealer(context.Background(), a.svc.KeySealer()); err != nil {
		t.Fatal(err)
	}
	b, err := New(st, a.key, a.svc.Policy())
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// Ten wrong codes spread over two replicas at once lock the user, exactly
// at the tenth; the delayed ones go one per Delay across both replicas,
// not one per Delay per replica; a right code is refused afterwards.
func TestLockoutAcrossReplicas(t *testing.T) {
	const delay = 300 * time.Millisecond
	a, b := replicas(t, func(p *Policy) { p.Delay = delay })
	secret := a.active("alice")
	services := []*Service{a.svc, b}
	wrong := a.wrongCode(secret)
	var (
		mu      sync.Mutex
		answers []time.Time
		results []Result
		wg      sync.WaitGroup
	)
	start := time.Now()
	for i := range 10 {
		wg.Go(func() {
			r, err := services[i%2].Verify(context.Background(), terminalID, "alice", "login", wrong)
			if err != nil {
				t.Errorf("attempt %d on replica %d: %v", i, i%2, err)
				return
			}
			mu.Lock()
			answers = append(answers, time.Now())
			results = append(results, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	locked := 0
	for _, r := range results {
		if r.Outcome != Rejected {
			t.Errorf("wrong code: %v (%s), want rejected", r.Outcome, r.Reason)
		}
		if r.Message == MsgNowLocked {
			locked++
		}
	}
	if locked != 1 {
		t.Errorf("%d answers said the account is now locked, want exactly one", locked)
	}
	u := a.user("alice")
	if u.Failures != 10 || u.LockedAt.IsZero() {
		t.Fatalf("after 10 wrong codes over two replicas: %d failures, locked at %v; want 10, locked", u.Failures, u.LockedAt)
	}
	// The first DelayAfter (3) attempts of each replica may overlap; the
	// seven after the third failure each wait their own slot.
	slices.SortFunc(answers, func(x, y time.Time) int { return x.Compare(y) })
	if min := 6 * delay; took < min {
		t.Errorf("10 parallel wrong codes over two replicas answered in %v: the delayed ones did not take turns (want at least %v)", took, min)
	}
	t.Logf("10 wrong codes over 2 replicas: answered in %v (delay %v after 3 failures)", took.Round(time.Millisecond), delay)
	// Locked on both replicas: the right code is refused, unchecked.
	for i, s := range services {
		r, err := s.Verify(context.Background(), terminalID, "alice", "login", a.code(secret, 0))
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != Locked || r.Message != MsgLocked {
			t.Errorf("right code on replica %d after the lockout: %v %q, want locked", i, r.Outcome, r.Message)
		}
	}
}
