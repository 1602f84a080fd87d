package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNetworkPolicy: none at first; a set stores the policy and its audit
// entry (made from the policy before) together; a stale expected version
// changes nothing and appends nothing; the policy survives reopening the
// database.
func TestNetworkPolicy(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	if _, err := s.NetworkPolicy(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before any set: %v, want ErrNotFound", err)
	}
	audit := func(action string) func(NetworkPolicy, bool) AuditEntry {
		return func(before NetworkPolicy, found bool) AuditEntry {
			old := "none"
			if found {
				old = before.Version
			}
			return AuditEntry{Time: t0, Actor: "admin (admin, token)", Action: action, Detail: old}
		}
	}
	p1 := NetworkPolicy{Policy: []byte{0x12, 0x01, 'a'}, Version: "n-00000001", UpdatedAt: t0, UpdatedBy: "admin (admin, token)"}
	// Expecting a version while none is set is a conflict.
	if _, _, err := s.SetNetworkPolicy(ctx, p1, "n-deadbeef", audit("x")); !errors.Is(err, ErrConflict) {
		t.Fatalf("expected version with none set: %v, want ErrConflict", err)
	}
	before, found, err := s.SetNetworkPolicy(ctx, p1, "", audit("network_policy.set"))
	if err != nil || found || before.Version != "" {
		t.Fatalf("first set: before %+v found %v err %v", before, found, err)
	}
	got, err := s.NetworkPolicy(ctx)
	if err != nil || string(got.Policy) != string(p1.Policy) || got.Version != p1.Version || !got.UpdatedAt.Equal(t0) || got.UpdatedBy != p1.UpdatedBy {
		t.Fatalf("read back %+v, %v; want %+v", got, err, p1)
	}
	p2 := NetworkPolicy{Policy: []byte{0x12, 0x01, 'b'}, Version: "n-00000002", UpdatedAt: t0.Add(time.Minute), UpdatedBy: "other (admin, web)"}
	// A stale expectation: nothing changes, nothing is audited.
	log0, _ := s.AuditLog(ctx, 0)
	if _, _, err := s.SetNetworkPolicy(ctx, p2, "n-99999999", audit("x")); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "n-00000001 is in force") {
		t.Fatalf("stale expected version: %v, want ErrConflict naming the version in force", err)
	}
	if got, _ := s.NetworkPolicy(ctx); got.Version != p1.Version {
		t.Fatalf("stale set changed the policy to %s", got.Version)
	}
	if log1, _ := s.AuditLog(ctx, 0); len(log1) != len(log0) {
		t.Fatalf("stale set appended %d audit entries", len(log1)-len(log0))
	}
	before, found, err = s.SetNetworkPolicy(ctx, p2, p1.Version, audit("network_policy.set"))
	if err != nil || !found || before.Version != p1.Version {
		t.Fatalf("second set: before %+v found %v err %v", before, found, err)
	}
	es, err := s.AuditLog(ctx, 0)
	if err != nil || len(es) < 2 || es[0].Action != "network_policy.set" || es[0].Detail != p1.Version || es[1].Detail != "none" {
		t.Fatalf("audit log %+v, %v: want two network_policy.set entries, newest saying n-00000001 before", es, err)
	}

	// Invalid input is refused before the database.
	for _, bad := range []NetworkPolicy{
		{Version: "n-1", UpdatedAt: t0, UpdatedBy: "a"},
		{Policy: []byte{1}, UpdatedAt: t0, UpdatedBy: "a"},
		{Policy: []byte{1}, Version: "n-1", UpdatedBy: "a"},
		{Policy: []byte{1}, Version: "n-1", UpdatedAt: t0},
		{Policy: make([]byte, maxNetworkPolicyBytes+1), Version: "n-1", UpdatedAt: t0, UpdatedBy: "a"},
	} {
		if _, _, err := s.SetNetworkPolicy(ctx, bad, "", audit("x")); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, _, err := s.SetNetworkPolicy(ctx, p1, "", nil); err == nil {
		t.Error("set without audit accepted")
	}

	// Reopened: the policy is still there.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.NetworkPolicy(ctx); err != nil || got.Version != p2.Version || string(got.Policy) != string(p2.Policy) {
		t.Fatalf("after reopening: %+v, %v", got, err)
	}
	if err := s2.VerifyAuditChain(ctx); err != nil {
		t.Error(err)
	}
}

// TestNetworkPolicyAuditRefused: when the audit entry cannot be appended,
// the policy is not changed either.
func TestNetworkPolicyAuditRefused(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	p := NetworkPolicy{Policy: []byte{1}, Version: "n-1", UpdatedAt: t0, UpdatedBy: "a"}
	if _, _, err := s.SetNetworkPolicy(ctx, p, "", func(NetworkPolicy, bool) AuditEntry { return AuditEntry{} }); err == nil {
		t.Fatal("set with an audit entry without actor accepted")
	}
	if _, err := s.NetworkPolicy(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("policy stored without its audit entry: %v", err)
	}
}

// TestNetworkPolicyCompareAndSet: of many sets expecting the same version
// at once, exactly one wins.
func TestNetworkPolicyCompareAndSet(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a := func(NetworkPolicy, bool) AuditEntry { return tAudit }
	if _, _, err := s.SetNetworkPolicy(ctx, NetworkPolicy{Policy: []byte{0}, Version: "n-0", UpdatedAt: t0, UpdatedBy: "a"}, "", a); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := NetworkPolicy{Policy: []byte{byte(i + 1)}, Version: "n-" + string(rune('a'+i)), UpdatedAt: t0, UpdatedBy: "a"}
			_, _, err := s.SetNetworkPolicy(ctx, p, "n-0", a)
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, ErrConflict):
				t.Errorf("set %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of %d concurrent sets expecting n-0 won, want 1", wins, n)
	}
}
