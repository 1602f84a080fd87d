package main

import (
	"math/bits"
	"time"
)

// histogram counts latencies in microseconds in log-linear buckets (64 per
// power of two: under 1.6 % error), so a run of millions of reports needs
// no list of samples and per-second percentiles cost nothing.
type histogram struct {
	counts [64 + 64*32]uint64
	n      uint64
	max    uint64
}

const subBits = 6

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits // >= 1
	m := v >> e                  // in [32, 64)
	return 1<<subBits + (e-1)*32 + int(m-32)
}

// lowerBound is the smallest value in bucket i.
func lowerBound(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	i -= 1 << subBits
	e := i/32 + 1
	m := uint64(i%32 + 32)
	return m << e
}

func (h *histogram) add(d time.Duration) {
	v := uint64(max(d.Microseconds(), 0))
	h.counts[bucketOf(v)]++
	h.n++
	h.max = max(h.max, v)
}

// quantile returns the value under which a fraction q of the samples lie
// (the midpoint of its bucket, never above the maximum seen).
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo := lowerBound(i)
			hi := lowerBound(i + 1)
			v := min(lo+(hi-lo)/2, h.max)
			return time.Duration(v) * time.Microsecond
		}
	}
	return time.Duration(h.max) * time.Microsecond
}

func (h *histogram) maxDur() time.Duration { return time.Duration(h.max) * time.Microsecond }
