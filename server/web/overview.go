package web

import (
	"net/http"
	"strconv"
	"time"

	"github.com/mnguard/mnguard/server/store"
)

type overviewView struct {
	Counts  store.ComplianceCounts
	Active  int
	States  []stateCount
	Checks  []checkCount
	Chart   chart
	Events  []eventRow
	Unevald int
}

type stateCount struct {
	State string
	N     int
}

type checkCount struct {
	Check string
	N     int
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ctx := r.Context()
	counts, err := s.cfg.Store.CountCompliance(ctx)
	if err != nil {
		return err
	}
	v := overviewView{Counts: counts, Unevald: counts.Unevaluated}
	for _, st := range []string{store.NonCompliant, store.Stale, store.Compliant} {
		v.States = append(v.States, stateCount{st, counts.States[st]})
		v.Active += counts.States[st]
	}
	for _, ch := range store.Checks {
		v.Checks = append(v.Checks, checkCount{ch, counts.Failing[ch]})
	}
	today := c.now.In(s.cfg.Location)
	first := today.AddDate(0, 0, -(chartDays - 1))
	days, err := s.cfg.Store.ComplianceDays(ctx, first.Format(time.DateOnly), today.Format(time.DateOnly))
	if err != nil {
		return err
	}
	v.Chart = newChart(first, days)
	evs, err := s.cfg.Store.FilterEvents(ctx, store.EventFilter{Limit: 10})
	if err != nil {
		return err
	}
	if v.Events, err = s.eventRows(ctx, evs); err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "overview", v)
}

// chartDays is the overview chart's span.
const chartDays = 30

// Chart geometry, in SVG user units.
const (
	chartW      = 720
	chartH      = 220
	chartLeft   = 40
	chartBottom = 24
	chartTop    = 10
)

// chart is the overview's stacked bar chart of terminals per state per
// day, computed here so that the template only places rectangles.
type chart struct {
	W, H   int
	Bars   []bar
	Max    int
	Ticks  []tick
	Labels []label
	Empty  bool
}

type bar struct {
	X, W     int
	Segments []segment
	Day      string
	Total    int
	C, N, S  int
	HasData  bool
}

type segment struct {
	Class     string
	Y, Height int
	Count     int
}

type tick struct {
	Y     int
	Value string
}

type label struct {
	X, Y int
	Text string
}

func newChart(first time.Time, days []store.ComplianceDay) chart {
	byDay := make(map[string]store.ComplianceDay, len(days))
	ch := chart{W: chartW, H: chartH, Empty: len(days) == 0}
	for _, d := range days {
		byDay[d.Day] = d
		ch.Max = max(ch.Max, d.Compliant+d.NonCompliant+d.Stale)
	}
	scale := ch.Max
	if scale == 0 {
		scale = 1
	}
	plotH := chartH - chartBottom - chartTop
	slot := (chartW - chartLeft) / chartDays
	for i := range chartDays {
		day := first.AddDate(0, 0, i).Format(time.DateOnly)
		d, ok := byDay[day]
		b := bar{X: chartLeft + i*slot + slot/8, W: slot - slot/4, Day: day, HasData: ok}
		if ok {
			b.C, b.N, b.S = d.Compliant, d.NonCompliant, d.Stale
			b.Total = d.Compliant + d.NonCompliant + d.Stale
			y := chartH - chartBottom
			for _, part := range []struct {
				class string
				n     int
			}{{"compliant", d.Compliant}, {"non-compliant", d.NonCompliant}, {"stale", d.Stale}} {
				if part.n == 0 {
					continue
				}
				h := max(part.n*plotH/scale, 1)
				y -= h
				b.Segments = append(b.Segments, segment{Class: part.class, Y: y, Height: h, Count: part.n})
			}
		}
		if i%5 == 0 || i == chartDays-1 {
			ch.Labels = append(ch.Labels, label{X: b.X + b.W/2, Y: chartH - 6, Text: day[5:]})
		}
		ch.Bars = append(ch.Bars, b)
	}
	for _, f := range []int{0, 2, 4} {
		v := scale * f / 4
		ch.Ticks = append(ch.Ticks, tick{Y: chartH - chartBottom - v*plotH/scale, Value: strconv.Itoa(v)})
	}
	return ch
}
