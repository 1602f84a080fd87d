package main

import (
	"strings"
	"testing"
)

// TestTerminalsListWalksPages: every page is asked for, on one
// connection, and printed as one table; --limit stops early.
func TestTerminalsListWalksPages(t *testing.T) {
	h := newHarness()
	one := h.run(t, "terminals", "list")
	if one.code != 0 {
		t.Fatalf("exit %d: %s", one.code, one.stderr)
	}
	h = newHarness()
	r := h.run(t, "terminals", "list", "--page-size", "1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if n := len(h.fake.terminals); h.fake.terminalCalls != n || h.dials != 1 {
		t.Errorf("%d requests on %d connections for %d terminals in pages of 1; want %d on 1", h.fake.terminalCalls, h.dials, n, n)
	}
	if r.stdout != one.stdout {
		t.Errorf("pages of 1 printed\n%s\nwant, as in one page,\n%s", r.stdout, one.stdout)
	}
	for _, format := range []string{"json", "csv"} {
		h1, h2 := newHarness(), newHarness()
		a, b := h1.run(t, "terminals", "list", "-o", format), h2.run(t, "terminals", "list", "-o", format, "--page-size", "2")
		if a.code != 0 || b.code != 0 || a.stdout != b.stdout {
			t.Errorf("-o %s: one page and pages of 2 differ:\n%s\n%s\n%s%s", format, a.stdout, b.stdout, a.stderr, b.stderr)
		}
		if strings.Contains(b.stdout, "next_page_token") || strings.Contains(b.stdout, "fake-page") {
			t.Errorf("-o %s: the page token is printed:\n%s", format, b.stdout)
		}
	}

	h = newHarness()
	r = h.run(t, "terminals", "list", "--page-size", "1", "--limit", "2")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if h.fake.terminalCalls != 2 || strings.Count(r.stdout, "\n") != 4 || !strings.Contains(r.stdout, "terminals 1 to 2 of 3") {
		t.Errorf("--limit 2 in pages of 1: %d requests, printed\n%s", h.fake.terminalCalls, r.stdout)
	}
	// The last request asks only for what --limit leaves.
	h = newHarness()
	if r = h.run(t, "terminals", "list", "--page-size", "2", "--limit", "3"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := h.fake.lastTerminals.GetPageSize(); h.fake.terminalCalls != 2 || got != 1 {
		t.Errorf("--limit 3 in pages of 2: %d requests, the last for %d; want 2, the last for 1", h.fake.terminalCalls, got)
	}
	// The offset places the first page only.
	h = newHarness()
	if r = h.run(t, "terminals", "list", "--page-size", "1", "--offset", "1"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := h.fake.lastTerminals; h.fake.terminalCalls != 2 || got.GetOffset() != 0 || got.GetPageToken() != "fake-page:2" {
		t.Errorf("--offset 1 in pages of 1: %d requests, the last %v", h.fake.terminalCalls, got)
	}
}

// TestTerminalsListPageFailures: a failure on a later page prints nothing
// and says which page; a collector repeating a token is not followed for
// ever.
func TestTerminalsListPageFailures(t *testing.T) {
	h := newHarness()
	h.fake.failPage = 2
	r := h.run(t, "terminals", "list", "--page-size", "1")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "list terminals: ") || !strings.Contains(r.stderr, "(page 2)") {
		t.Errorf("failure on page 2: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	h = newHarness()
	h.fake.pageLoop = true
	r = h.run(t, "terminals", "list", "--page-size", "1")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "answered a page token of an earlier page") || h.fake.terminalCalls > 3 {
		t.Errorf("repeated token: exit %d after %d requests, stdout %q, stderr %q", r.code, h.fake.terminalCalls, r.stdout, r.stderr)
	}
}
