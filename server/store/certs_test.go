package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestCheckEnrollmentToken: the read-only check gives the same answers as
// Enroll, and uses nothing up.
func TestCheckEnrollmentToken(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	ok := createToken(t, s, "ok", 2, t0.Add(time.Hour))
	expired := createToken(t, s, "old", 1, t0.Add(-time.Second))
	spent := createToken(t, s, "spent", 1, t0.Add(time.Hour))
	term, cert := newTerminal("t-spent", "spent")
	if err := s.Enroll(ctx, spent, t0, term, cert); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		hash []byte
		want error
	}{
		{"usable", ok, nil},
		{"unknown", hashOf("nobody"), ErrTokenUnknown},
		{"empty", nil, ErrTokenUnknown},
		{"expired", expired, ErrTokenExpired},
		{"exhausted", spent, ErrTokenExhausted},
	} {
		if err := s.CheckEnrollmentToken(ctx, tt.hash, t0); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if n := usesLeft(t, s, "ok"); n != 2 {
		t.Errorf("checking used the token: %d uses left, want 2", n)
	}
}

func renewed(id, serial string, at time.Time) Certificate {
	return Certificate{Serial: serial, TerminalID: id, NotBefore: at.Add(-time.Minute), NotAfter: at.Add(90 * 24 * time.Hour), IssuedAt: at}
}

// TestRenewCertificate: renewals are spaced by the interval, atomic with
// their audit entry, and retire what they supersede; first use retires the
// older certificates, once.
func TestRenewCertificate(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	first := enroll(t, s, "t1", "one")
	audit := AuditEntry{Actor: "terminal t1", Action: "certificate.renew"}
	at := t0.Add(10 * time.Minute)

	last, err := s.LastCertificateIssued(ctx, "t1")
	if err != nil || !last.Equal(first.NotBefore) {
		t.Fatalf("LastCertificateIssued = %v, %v; want the enrollment certificate's not_before %v", last, err, first.NotBefore)
	}
	if _, err := s.LastCertificateIssued(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LastCertificateIssued of an unknown terminal: %v", err)
	}
	// Too soon: nothing stored, no audit.
	var soon *TooSoonError
	err = s.RenewCertificate(ctx, renewed("t1", "a1", t0), first.Serial, time.Hour, audit)
	if !errors.Is(err, ErrTooSoon) || !errors.As(err, &soon) || !soon.Next.Equal(first.NotBefore.Add(time.Hour)) {
		t.Fatalf("renewal within the interval: %v", err)
	}
	// A broken audit entry fails the renewal whole.
	if err := s.RenewCertificate(ctx, renewed("t1", "a1", at), first.Serial, time.Minute, AuditEntry{}); err == nil {
		t.Fatal("renewal with an audit entry that cannot be written succeeded")
	}
	if _, err := s.Certificate(ctx, "a1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a renewal whose audit failed stored its certificate: %v", err)
	}
	if err := s.RenewCertificate(ctx, renewed("t1", "a1", at), first.Serial, time.Minute, audit); err != nil {
		t.Fatal(err)
	}
	// Another unused renewal from the first certificate retires a1.
	if err := s.RenewCertificate(ctx, renewed("t1", "a2", at.Add(time.Minute)), first.Serial, time.Minute, audit); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Certificate(ctx, "a1"); c.RetiredAt.IsZero() || c.ReplacedBy != "a2" {
		t.Errorf("unused a1 after a2 was issued: retired %v by %q, want retired by a2", c.RetiredAt, c.ReplacedBy)
	}
	if c, _ := s.Certificate(ctx, first.Serial); !c.RetiredAt.IsZero() {
		t.Errorf("the certificate renewed from retired before its successor was used: %v", c.RetiredAt)
	}
	// First use of a2 retires the first; a second use changes nothing.
	use := AuditEntry{Actor: "terminal t1", Action: "certificate.retire"}
	retired, err := s.UseCertificate(ctx, "a2", at.Add(2*time.Minute), use)
	if err != nil || !slices.Equal(retired, []string{first.Serial}) {
		t.Fatalf("first use of a2 retired %v, %v; want [%s]", retired, err, first.Serial)
	}
	if c, _ := s.Certificate(ctx, first.Serial); c.RetiredAt.IsZero() || c.ReplacedBy != "a2" {
		t.Errorf("first certificate after a2 was used: %+v", c)
	}
	if c, _ := s.Certificate(ctx, "a2"); !c.FirstUsedAt.Equal(at.Add(2*time.Minute)) || !c.IssuedAt.Equal(at.Add(time.Minute)) {
		t.Errorf("a2: %+v", c)
	}
	if retired, err := s.UseCertificate(ctx, "a2", at.Add(3*time.Minute), use); err != nil || len(retired) != 0 {
		t.Errorf("second use: %v, %v", retired, err)
	}
	if _, err := s.UseCertificate(ctx, "nope", at, use); !errors.Is(err, ErrNotFound) {
		t.Errorf("use of an unknown certificate: %v", err)
	}
	// Audited: three renewals (one refused, one failed, not among them)
	// and one retirement by use.
	log, err := s.AuditLog(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range log {
		got[e.Action]++
	}
	if got["certificate.renew"] != 2 || got["certificate.retire"] != 1 {
		t.Errorf("audit actions %v, want 2 certificate.renew and 1 certificate.retire", got)
	}
	// A revoked terminal renews nothing.
	if err := s.RevokeTerminal(ctx, "t1", "stolen", at.Add(time.Hour), tAudit); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewCertificate(ctx, renewed("t1", "a3", at.Add(2*time.Hour)), "a2", time.Minute, audit); !errors.Is(err, ErrRevoked) {
		t.Errorf("renewal of a revoked terminal: %v", err)
	}
}
