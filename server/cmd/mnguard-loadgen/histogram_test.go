package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456, 1 << 40, 1<<63 + 5} {
		i := bucketOf(v)
		if lo, hi := lowerBound(i), lowerBound(i+1); v < lo || v >= hi {
			t.Errorf("value %d in bucket %d = [%d, %d)", v, i, lo, hi)
		}
	}
}

// TestQuantiles compares the histogram's percentiles with exact ones over
// random latencies: within the bucket error.
func TestQuantiles(t *testing.T) {
	var h histogram
	var all []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		d := time.Duration(r.ExpFloat64()*5e3) * time.Microsecond
		h.add(d)
		all = append(all, d.Truncate(time.Microsecond))
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)-1))]
		got := h.quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.3f: histogram %s, exact %s", q, got, exact)
		}
	}
	if h.maxDur() != all[len(all)-1] {
		t.Errorf("max %s, want %s", h.maxDur(), all[len(all)-1])
	}
}
