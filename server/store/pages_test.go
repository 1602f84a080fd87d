package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestKeysetAfter(t *testing.T) {
	for _, tt := range []struct {
		cols []keyColumn
		key  PageKey
		want string
	}{
		{[]keyColumn{{"name", false, false}}, PageKey{Strings: []string{"a"}}, "name > $1"},
		{[]keyColumn{{"a", true, true}, {"b", false, true}}, PageKey{Ints: []int64{1}, Strings: []string{"x"}}, "(a, b) < ($1, $2)"},
		{[]keyColumn{{"r", true, true}, {"h", false, false}, {"i", false, false}}, PageKey{Ints: []int64{1}, Strings: []string{"x", "y"}},
			"(r < $1 OR r = $1 AND (h > $2 OR h = $2 AND i > $3))"},
	} {
		var args []any
		got := keysetAfter(tt.cols, tt.key, func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) })
		if got != tt.want {
			t.Errorf("keysetAfter = %q, want %q", got, tt.want)
		}
	}
}

// addPagedTerminals inserts n terminals with repeating host names, last
// seen and enrolled times (ties everywhere but the ID), some never seen.
func addPagedTerminals(tb testing.TB, s *DB, prefix string, n int) {
	tb.Helper()
	for i := range n {
		var seen any
		if i%5 != 0 {
			seen = t0.Add(time.Duration(i%3) * time.Minute).UnixNano()
		}
		if _, err := s.w.Exec(`INSERT INTO terminals (id, hostname, state, enrolled_at, last_seen_at) VALUES ($1, $2, $3, $4, $5)`,
			fmt.Sprintf("%s-%04d-%08x", prefix, i, rand.Uint32()), fmt.Sprintf("pc-%02d", rand.IntN(n/3+1)),
			[]string{StateActive, StateActive, StateRevoked}[i%3], t0.Add(time.Duration(i%4)*time.Second).UnixNano(), seen); err != nil {
			tb.Fatal(err)
		}
	}
}

func summaryIDs(ts []TerminalSummary) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

// TestTerminalKeyPage walks every sort, both ways, in pages and compares
// with the whole list in one.
func TestTerminalKeyPage(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	addPagedTerminals(t, s, "t", 40)
	for _, sort := range []string{"", SortHostname, SortState, SortLastSeen, SortAgentVersion, SortEnrolled} {
		for _, desc := range []bool{false, true} {
			for _, f := range []TerminalFilter{{Sort: sort, Desc: desc}, {Sort: sort, Desc: desc, State: ComplianceRevoked}} {
				all, total, err := s.TerminalPage(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, size := range []int{1, 7, 100} {
					var (
						got   []string
						after *PageKey
						pages int
					)
					for {
						page, next, n, err := s.TerminalKeyPage(ctx, f, after, size)
						if err != nil {
							t.Fatalf("%+v: %v", f, err)
						}
						if n != total || len(page) > size {
							t.Fatalf("%+v: page of %d, total %d; want at most %d, total %d", f, len(page), n, size, total)
						}
						got = append(got, summaryIDs(page)...)
						if pages++; next == nil || pages > 100 {
							break
						}
						after = next
					}
					if want := summaryIDs(all); !slices.Equal(got, want) {
						t.Errorf("%+v, pages of %d:\ngot  %v\nwant %v", f, size, got, want)
					}
				}
			}
		}
	}
}

// TestTerminalKeyPageGrowing adds terminals between pages: those ahead
// of the walk are listed once, those behind it not, none twice.
func TestTerminalKeyPageGrowing(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	addPagedTerminals(t, s, "t", 30)
	before, _, err := s.TerminalPage(ctx, TerminalFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		got   []string
		after *PageKey
		ahead []string
	)
	for i := 0; ; i++ {
		page, next, _, err := s.TerminalKeyPage(ctx, TerminalFilter{}, after, 4)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, summaryIDs(page)...)
		if next == nil {
			break
		}
		after = next
		// One right after the last listed (same host name, next ID), one
		// at the end, one at the start.
		id := next.Strings[1] + "-z"
		for _, row := range [][2]string{{id, next.Strings[0]}, {fmt.Sprintf("end-%04d", i), "pc-zz"}, {fmt.Sprintf("start-%d", i), "pc-"}} {
			if _, err := s.w.Exec(`INSERT INTO terminals (id, hostname, state, enrolled_at) VALUES ($1, $2, 'active', $3)`, row[0], row[1], t0.UnixNano()); err != nil {
				t.Fatal(err)
			}
		}
		ahead = append(ahead, id, fmt.Sprintf("end-%04d", i))
	}
	want := map[string]bool{}
	for _, id := range append(summaryIDs(before), ahead...) {
		want[id] = true
	}
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] || !want[id] {
			t.Errorf("%s listed twice or behind the walk", id)
		}
		seen[id] = true
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("%s not listed", id)
		}
	}
}

func TestOtherPages(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	for i := range 5 {
		createToken(t, s, fmt.Sprintf("tok-%d", 4-i), 1, t0.Add(time.Hour))
		if err := s.CreateOperator(ctx, Operator{Name: fmt.Sprintf("op-%d", (i*3)%5), Role: RoleAdmin, CreatedAt: t0}, tAudit); err != nil {
			t.Fatal(err)
		}
	}
	walk := func(page func(after *PageKey) ([]string, *PageKey, error)) []string {
		var (
			out   []string
			after *PageKey
		)
		for range 20 {
			got, next, err := page(after)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, got...)
			if next == nil {
				break
			}
			after = next
		}
		return out
	}
	toks := walk(func(after *PageKey) ([]string, *PageKey, error) {
		ts, next, err := s.EnrollmentTokenPage(ctx, after, 2)
		var out []string
		for _, t := range ts {
			out = append(out, t.ID)
		}
		return out, next, err
	})
	// All created at t0: by ID.
	if want := []string{"tok-0", "tok-1", "tok-2", "tok-3", "tok-4"}; !slices.Equal(toks, want) {
		t.Errorf("enrollment tokens %v, want %v", toks, want)
	}
	ops := walk(func(after *PageKey) ([]string, *PageKey, error) {
		os, next, err := s.OperatorPage(ctx, after, 2)
		var out []string
		for _, o := range os {
			out = append(out, o.Name)
		}
		return out, next, err
	})
	if want := []string{"op-0", "op-1", "op-2", "op-3", "op-4"}; !slices.Equal(ops, want) {
		t.Errorf("operators %v, want %v", ops, want)
	}
	if _, _, err := s.OperatorPage(ctx, &PageKey{Ints: []int64{1}}, 2); !errors.Is(err, ErrPageKey) {
		t.Errorf("a key of another list: %v, want ErrPageKey", err)
	}
	if _, _, _, err := s.TerminalKeyPage(ctx, TerminalFilter{Sort: SortState}, &PageKey{Strings: []string{"a", "b"}}, 2); !errors.Is(err, ErrPageKey) {
		t.Errorf("a key of another sort: %v, want ErrPageKey", err)
	}
	if _, _, err := s.UserPage(ctx, nil, 0); err == nil {
		t.Error("a page of 0 users: no error")
	}
}

// BenchmarkTerminalKeyPage is one page of 1000 of 30,000 terminals by
// host name, from the middle (the store's share of ListTerminals).
func BenchmarkTerminalKeyPage(b *testing.B) {
	s, _ := openTest(b)
	ctx := context.Background()
	tx, err := s.w.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := range 30000 {
		if _, err := tx.Exec(`INSERT INTO terminals (id, hostname, state, enrolled_at) VALUES ($1, $2, 'active', $3)`,
			fmt.Sprintf("id-%05d", i), fmt.Sprintf("MN-PC-%05d", (i*7919)%30000), t0.UnixNano()); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	after := &PageKey{Strings: []string{"MN-PC-15000", ""}}
	for b.Loop() {
		ts, next, _, err := s.TerminalKeyPage(ctx, TerminalFilter{}, after, 1000)
		if err != nil || len(ts) != 1000 || next == nil {
			b.Fatalf("page of %d, next %v: %v", len(ts), next, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed())/float64(time.Millisecond)/float64(b.N), "ms/page")
}
