package pki

import (
	"crypto/x509"
	"math"
	"testing"
	"time"
)

func TestRenewalDue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(90 * 24 * time.Hour)}
	day := 24 * time.Hour
	tests := []struct {
		name     string
		r        Renewal
		now      time.Time
		min, max time.Time // inclusive bounds of the result
	}{
		{name: "default third", now: t0, min: t0.Add(60 * day), max: t0.Add(60 * day)},
		{name: "half", r: Renewal{Before: 0.5}, now: t0, min: t0.Add(45 * day), max: t0.Add(45 * day)},
		{name: "zero means default", r: Renewal{Before: 0}, now: t0, min: t0.Add(60 * day), max: t0.Add(60 * day)},
		{name: "negative means default", r: Renewal{Before: -1}, now: t0, min: t0.Add(60 * day), max: t0.Add(60 * day)},
		{name: "one means default", r: Renewal{Before: 1}, now: t0, min: t0.Add(60 * day), max: t0.Add(60 * day)},
		{name: "NaN means default", r: Renewal{Before: math.NaN()}, now: t0, min: t0.Add(60 * day), max: t0.Add(60 * day)},
		{name: "jitter", r: Renewal{Jitter: 6 * time.Hour}, now: t0, min: t0.Add(60*day - 6*time.Hour), max: t0.Add(60 * day)},
		{name: "jitter never before NotBefore", r: Renewal{Before: 0.9, Jitter: 30 * day}, now: t0.Add(-day), min: t0, max: t0.Add(9 * day)},
		{name: "overdue is now", now: t0.Add(80 * day), min: t0.Add(80 * day), max: t0.Add(80 * day)},
		{name: "expired is now", now: t0.Add(100 * day), min: t0.Add(100 * day), max: t0.Add(100 * day)},
		{name: "clock before NotBefore", now: t0.Add(-10 * day), min: t0.Add(60 * day), max: t0.Add(60 * day)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 {
				got := tt.r.Due(cert, tt.now)
				if got.Before(tt.min) || got.After(tt.max) {
					t.Fatalf("Due = %v, want in [%v, %v]", got, tt.min, tt.max)
				}
			}
		})
	}
}
