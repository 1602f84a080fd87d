package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newExemption(id, terminal string, start time.Time, d time.Duration) Exemption {
	return Exemption{
		ID: id, TerminalID: terminal, VendorID: "0781", ProductID: "5581", Serial: "SN-" + id,
		NotBefore: start, NotAfter: start.Add(d), Duration: d,
		Issuer: "helpdesk-op (helpdesk)", Reason: "copy the minutes", Ticket: "INC-42",
		Source: ExemptionOnline, Token: []byte("token-" + id), IssuedAt: start,
	}
}

func offlineExemption(id, terminal, challenge string, start time.Time) Exemption {
	e := newExemption(id, terminal, start, 30*time.Minute)
	e.Source, e.Token, e.Challenge = ExemptionOffline, nil, challenge
	return e
}

// sameExemption reports the first difference, times compared with Equal.
func sameExemption(got, want Exemption) error {
	for _, tt := range []struct {
		name      string
		got, want time.Time
	}{
		{"NotBefore", got.NotBefore, want.NotBefore}, {"NotAfter", got.NotAfter, want.NotAfter},
		{"IssuedAt", got.IssuedAt, want.IssuedAt}, {"DeliveredAt", got.DeliveredAt, want.DeliveredAt},
		{"RevokedAt", got.RevokedAt, want.RevokedAt},
	} {
		if !tt.got.Equal(tt.want) {
			return fmt.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	got.NotBefore, got.NotAfter, got.IssuedAt, got.DeliveredAt, got.RevokedAt = want.NotBefore, want.NotAfter,
		want.IssuedAt, want.DeliveredAt, want.RevokedAt
	if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
		return fmt.Errorf("got  %s\nwant %s", g, w)
	}
	return nil
}

func ids(es []Exemption) string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return strings.Join(out, ",")
}

func TestCreateExemption(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	enroll(t, s, "term-2", "pc-2")

	on := newExemption("ex-1", "term-1", t0, time.Hour)
	if err := s.CreateExemption(ctx, on, tAudit); err != nil {
		t.Fatal(err)
	}
	got, err := s.Exemption(ctx, "ex-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sameExemption(got, on); err != nil {
		t.Error(err)
	}

	off := offlineExemption("ex-2", "term-1", "ABCDE12345", t0)
	off.Serial, off.AllowNoSerial = "", true
	if err := s.CreateExemption(ctx, off, tAudit); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Exemption(ctx, "ex-2"); err != nil || sameExemption(got, off) != nil {
		t.Errorf("offline exemption: %+v, %v", got, sameExemption(got, off))
	}

	// Each challenge is answered once per terminal; another terminal may
	// show the same one.
	err = s.CreateExemption(ctx, offlineExemption("ex-3", "term-1", "ABCDE12345", t0.Add(time.Minute)), tAudit)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "ABCDE12345") {
		t.Errorf("same challenge again: %v, want ErrExists", err)
	}
	if err := s.CreateExemption(ctx, offlineExemption("ex-4", "term-2", "ABCDE12345", t0), tAudit); err != nil {
		t.Errorf("same challenge on another terminal: %v", err)
	}
	// A repeated ID is an error, not ErrExists of a challenge.
	if err := s.CreateExemption(ctx, newExemption("ex-1", "term-2", t0, time.Hour), tAudit); err == nil || errors.Is(err, ErrExists) {
		t.Errorf("repeated ID: %v", err)
	}

	if err := s.RevokeTerminal(ctx, "term-2", "stolen", t0, tAudit); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		edit func(*Exemption)
		want error
	}{
		{"unknown terminal", func(e *Exemption) { e.TerminalID = "term-9" }, ErrNotFound},
		{"revoked terminal", func(e *Exemption) { e.TerminalID = "term-2" }, ErrRevoked},
		{"no ID", func(e *Exemption) { e.ID = "" }, nil},
		{"no terminal", func(e *Exemption) { e.TerminalID = "" }, nil},
		{"no vendor", func(e *Exemption) { e.VendorID = "" }, nil},
		{"no serial without override", func(e *Exemption) { e.Serial = "" }, nil},
		{"no issuer", func(e *Exemption) { e.Issuer = "" }, nil},
		{"no end", func(e *Exemption) { e.NotAfter = time.Time{} }, nil},
		{"no issue time", func(e *Exemption) { e.IssuedAt = time.Time{} }, nil},
		{"end before start", func(e *Exemption) { e.NotAfter = e.NotBefore }, nil},
		{"zero duration", func(e *Exemption) { e.Duration = 0 }, nil},
		{"fractional duration", func(e *Exemption) { e.Duration = 1500 * time.Millisecond }, nil},
		{"unknown source", func(e *Exemption) { e.Source = "manual" }, nil},
		{"online without token", func(e *Exemption) { e.Token = nil }, nil},
		{"online with challenge", func(e *Exemption) { e.Challenge = "ABCDE12345" }, nil},
		{"offline with token", func(e *Exemption) { e.Source = ExemptionOffline; e.Challenge = "X" }, nil},
		{"offline without challenge", func(e *Exemption) { e.Source, e.Token = ExemptionOffline, nil }, nil},
		{"revoked already", func(e *Exemption) { e.RevokedAt = t0 }, nil},
		{"time out of range", func(e *Exemption) { e.NotAfter = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := newExemption("ex-bad", "term-1", t0, time.Hour)
			tt.edit(&e)
			err := s.CreateExemption(ctx, e, tAudit)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if n := count(t, s, `SELECT COUNT(*) FROM exemptions`); n != 3 {
		t.Errorf("%d exemptions stored, want 3", n)
	}
	if _, err := s.Exemption(ctx, "ex-bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown exemption: %v, want ErrNotFound", err)
	}
}

func TestExemptionsList(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	enroll(t, s, "term-2", "pc-2")
	for _, e := range []Exemption{
		newExemption("a-expired", "term-1", t0.Add(-2*time.Hour), time.Hour),
		newExemption("b-active", "term-1", t0.Add(-time.Minute), time.Hour),
		newExemption("c-future", "term-1", t0.Add(time.Hour), time.Hour),
		newExemption("d-revoked", "term-1", t0.Add(-30*time.Second), time.Hour),
		offlineExemption("e-offline", "term-1", "ABCDE12345", t0),
		newExemption("f-other", "term-2", t0.Add(-10*time.Second), time.Hour),
	} {
		if err := s.CreateExemption(ctx, e, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeExemption(ctx, "d-revoked", "admin", "done early", t0, tAudit); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		terminal string
		at       time.Time
		limit    int
		want     string
	}{
		{"all", "", time.Time{}, 0, "c-future,e-offline,f-other,d-revoked,b-active,a-expired"},
		{"limited", "", time.Time{}, 2, "c-future,e-offline"},
		{"terminal", "term-1", time.Time{}, 0, "c-future,e-offline,d-revoked,b-active,a-expired"},
		{"active now", "term-1", t0, 0, "e-offline,b-active"},
		{"active anywhere", "", t0, 0, "e-offline,f-other,b-active"},
		// not_after is exclusive: at the end it is over.
		{"just before the end", "term-1", t0.Add(59*time.Minute - time.Nanosecond), 0, "b-active"},
		{"at the end", "term-1", t0.Add(59 * time.Minute), 0, ""},
		{"in an hour", "term-1", t0.Add(time.Hour), 0, "c-future"},
		{"unknown terminal", "term-9", time.Time{}, 0, ""},
	} {
		es, err := s.Exemptions(ctx, tt.terminal, tt.at, tt.limit)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := ids(es); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
	for _, e := range []string{"b-active", "e-offline"} {
		got, err := s.Exemption(ctx, e)
		if err != nil || !got.ActiveAt(t0) || got.ActiveAt(got.NotAfter) || got.ActiveAt(got.NotBefore.Add(-time.Nanosecond)) {
			t.Errorf("%s.ActiveAt: %+v, %v", e, got, err)
		}
	}
}

func TestRevokeExemption(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	e := newExemption("ex-1", "term-1", t0, time.Hour)
	if err := s.CreateExemption(ctx, e, tAudit); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(10 * time.Minute)
	got, err := s.RevokeExemption(ctx, "ex-1", "helpdesk-op (helpdesk)", "the copy is done", at, tAudit)
	if err != nil {
		t.Fatal(err)
	}
	e.RevokedAt, e.RevokedBy, e.RevokeReason = at, "helpdesk-op (helpdesk)", "the copy is done"
	if err := sameExemption(got, e); err != nil {
		t.Errorf("returned: %v", err)
	}
	if stored, err := s.Exemption(ctx, "ex-1"); err != nil || sameExemption(stored, e) != nil {
		t.Errorf("stored: %v, %v", sameExemption(stored, e), err)
	}

	// Again: refused, the first revocation stays.
	_, err = s.RevokeExemption(ctx, "ex-1", "admin-op (admin)", "again", at.Add(time.Minute), tAudit)
	if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "helpdesk-op") {
		t.Errorf("revoked twice: %v, want ErrRevoked naming the first", err)
	}
	if stored, _ := s.Exemption(ctx, "ex-1"); stored.RevokedBy != "helpdesk-op (helpdesk)" || !stored.RevokedAt.Equal(at) {
		t.Errorf("second revocation changed the first: %+v", stored)
	}

	// Expired: nothing to revoke.
	if err := s.CreateExemption(ctx, newExemption("ex-2", "term-1", t0, time.Hour), tAudit); err != nil {
		t.Fatal(err)
	}
	_, err = s.RevokeExemption(ctx, "ex-2", "admin", "", t0.Add(time.Hour), tAudit)
	if !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v, want ErrExpired", err)
	}
	if stored, _ := s.Exemption(ctx, "ex-2"); !stored.RevokedAt.IsZero() {
		t.Errorf("expired exemption was marked revoked: %+v", stored)
	}
	if _, err := s.RevokeExemption(ctx, "ex-9", "admin", "", at, tAudit); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeExemption(ctx, "ex-2", "", "", at, tAudit); err == nil {
		t.Error("revoked by nobody")
	}
}

// TestRevokeExemptionConcurrent: of many revocations at once exactly one
// wins; the others see ErrRevoked.
func TestRevokeExemptionConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	if err := s.CreateExemption(ctx, newExemption("ex-1", "term-1", t0, time.Hour), tAudit); err != nil {
		t.Fatal(err)
	}
	var (
		wg          sync.WaitGroup
		won, reject atomic.Int32
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.RevokeExemption(ctx, "ex-1", fmt.Sprintf("op-%d", i), "", t0.Add(time.Minute), tAudit)
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, ErrRevoked):
				reject.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || reject.Load() != 7 {
		t.Errorf("%d revocations won, %d refused; want 1 and 7", won.Load(), reject.Load())
	}
}

func TestMarkExemptionDelivered(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	if err := s.CreateExemption(ctx, newExemption("ex-1", "term-1", t0, time.Hour), tAudit); err != nil {
		t.Fatal(err)
	}
	first, err := s.MarkExemptionDelivered(ctx, "ex-1", t0.Add(time.Second))
	if err != nil || !first {
		t.Fatalf("first delivery: %v, %v", first, err)
	}
	first, err = s.MarkExemptionDelivered(ctx, "ex-1", t0.Add(time.Minute))
	if err != nil || first {
		t.Errorf("second delivery: %v, %v; want false", first, err)
	}
	if e, _ := s.Exemption(ctx, "ex-1"); !e.DeliveredAt.Equal(t0.Add(time.Second)) {
		t.Errorf("delivered_at = %v, want the first delivery", e.DeliveredAt)
	}
	if _, err := s.MarkExemptionDelivered(ctx, "ex-9", t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v, want ErrNotFound", err)
	}
}

// TestExemptionSchemaRefuses: the schema itself refuses rows the store
// would never write, for writers other than this store.
func TestExemptionSchemaRefuses(t *testing.T) {
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	ins := `INSERT INTO exemptions (id, terminal_id, vendor_id, product_id, serial, allow_no_serial, not_before,
	not_after, duration_seconds, issuer, source, challenge, issued_at, token) VALUES `
	for name, values := range map[string]string{
		"no serial, no override":    `('x', 'term-1', '0781', '5581', '', 0, 1, 2, 1, 'op', 'online', NULL, 1, x'00')`,
		"online without token":      `('x', 'term-1', '0781', '5581', 's', 0, 1, 2, 1, 'op', 'online', NULL, 1, NULL)`,
		"offline without challenge": `('x', 'term-1', '0781', '5581', 's', 0, 1, 2, 1, 'op', 'offline', NULL, 1, NULL)`,
		"end before start":          `('x', 'term-1', '0781', '5581', 's', 0, 2, 1, 1, 'op', 'online', NULL, 1, x'00')`,
		"unknown source":            `('x', 'term-1', '0781', '5581', 's', 0, 1, 2, 1, 'op', 'manual', NULL, 1, x'00')`,
	} {
		if _, err := s.w.Exec(ins + values); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRevokeTerminalEndsExemptions: a revoked terminal's exemptions in
// force are revoked with it; ended ones and other terminals' stay as they
// are.
func TestRevokeTerminalEndsExemptions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	enroll(t, s, "term-1", "pc-1")
	enroll(t, s, "term-2", "pc-2")
	for _, e := range []Exemption{
		newExemption("ex-live", "term-1", t0, time.Hour),
		newExemption("ex-over", "term-1", t0.Add(-2*time.Hour), time.Hour),
		newExemption("ex-other", "term-2", t0, time.Hour),
	} {
		if err := s.CreateExemption(ctx, e, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	at := t0.Add(time.Minute)
	if err := s.RevokeTerminal(ctx, "term-1", "stolen", at, tAudit); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"ex-live": true, "ex-over": false, "ex-other": false} {
		e, err := s.Exemption(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := !e.RevokedAt.IsZero(); got != want {
			t.Errorf("%s revoked = %v, want %v", id, got, want)
		}
		if want && (!e.RevokedAt.Equal(at) || e.RevokedBy != "terminal revoked" || e.RevokeReason != "stolen") {
			t.Errorf("%s: revoked at %v by %q for %q", id, e.RevokedAt, e.RevokedBy, e.RevokeReason)
		}
	}
}
