package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/operators"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

var testPageKey = []byte("0123456789abcdef0123456789abcdef")

func TestPageTokenRoundTrip(t *testing.T) {
	sc := newPageScope(pageTerminals, "non-compliant", "", "pc", "hostname", "false")
	for _, k := range []store.PageKey{
		{Strings: []string{"MN-PC-001", "6f1c2b7e-4a4e-4c53-9d1a-2f3b5c7d9e01"}},
		{Ints: []int64{-1, 0, 1 << 62}, Strings: []string{""}},
		{Ints: []int64{1764000000000000000}},
		{},
	} {
		tok := encodePageToken(testPageKey, sc, k)
		got, err := parsePageToken(testPageKey, sc, tok)
		if err != nil {
			t.Fatalf("parse %v: %v", k, err)
		}
		if !slices.Equal(got.Ints, k.Ints) || !slices.Equal(got.Strings, k.Strings) {
			t.Errorf("round trip of %v gave %v", k, got)
		}
	}
	if k, err := parsePageToken(testPageKey, sc, ""); k != nil || err != nil {
		t.Errorf("empty token: %v, %v; want the first page", k, err)
	}
}

func TestPageTokenRefused(t *testing.T) {
	sc := newPageScope(pageTerminals, "", "", "", "hostname", "false")
	tok := encodePageToken(testPageKey, sc, store.PageKey{Strings: []string{"MN-PC-001", "id"}})
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		key   []byte
		scope pageScope
		tok   string
		want  string
	}{
		"other filters":    {testPageKey, newPageScope(pageTerminals, "stale", "", "", "hostname", "false"), tok, "other filters"},
		"other sort":       {testPageKey, newPageScope(pageTerminals, "", "", "", "hostname", "true"), tok, "other filters"},
		"other list":       {testPageKey, newPageScope(pageUsers), tok, "another list"},
		"other collector":  {[]byte("another key, another collector!!"), sc, tok, "not issued by this collector"},
		"not base64":       {testPageKey, sc, "not a token!", "not a page token"},
		"padded":           {testPageKey, sc, tok + "==", "not a page token"},
		"too short":        {testPageKey, sc, tok[:20], "not a page token"},
		"too long":         {testPageKey, sc, strings.Repeat("A", maxPageTokenLen+1), "longer than"},
		"truncated":        {testPageKey, sc, tok[:len(tok)-2], ""},
		"version":          {testPageKey, sc, base64.RawURLEncoding.EncodeToString(append([]byte{9}, raw[1:]...)), "collector version"},
		"appended garbage": {testPageKey, sc, tok + "AAAA", "damaged"},
	}
	// Every single bit flipped.
	for i := range raw {
		for bit := range 8 {
			b := slices.Clone(raw)
			b[i] ^= 1 << bit
			cases[fmt.Sprintf("byte %d bit %d", i, bit)] = struct {
				key   []byte
				scope pageScope
				tok   string
				want  string
			}{testPageKey, sc, base64.RawURLEncoding.EncodeToString(b), ""}
		}
	}
	for name, tt := range cases {
		k, err := parsePageToken(tt.key, tt.scope, tt.tok)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, %v; want InvalidArgument with %q", name, k, err, tt.want)
		}
	}
}

func TestPageKeyFrom(t *testing.T) {
	_, a, _ := ed25519.GenerateKey(nil)
	_, b, _ := ed25519.GenerateKey(nil)
	// Replicas share the signing key, so a token of one holds at another.
	if string(pageKeyFrom(a)) != string(pageKeyFrom(slices.Clone(a))) {
		t.Error("the same signing key gave two page token keys")
	}
	// Without a signing key each collector makes its own.
	r1, r2 := pageKeyFrom(nil), pageKeyFrom(nil)
	if string(pageKeyFrom(a)) == string(pageKeyFrom(b)) || string(r1) == string(r2) {
		t.Error("different collectors share a page token key")
	}
}

func TestPageSize(t *testing.T) {
	for _, tt := range []struct {
		size, limit uint32
		def, want   int
		err         bool
	}{
		{0, 0, 500, 500, false},
		{0, 0, 100, 100, false},
		{1, 0, 500, 1, false},
		{1000, 0, 500, 1000, false},
		{1001, 0, 500, 0, true},
		{0, 50, 500, 50, false},
		{0, 100000, 500, 1000, false}, // legacy limits are served as pages
		{20, 100000, 500, 20, false},
	} {
		got, err := pageSize(tt.size, tt.limit, tt.def)
		if got != tt.want || (err != nil) != tt.err || err != nil && status.Code(err) != codes.InvalidArgument {
			t.Errorf("pageSize(%d, %d, %d) = %d, %v; want %d, error %v", tt.size, tt.limit, tt.def, got, err, tt.want, tt.err)
		}
	}
}

// FuzzParsePageToken: no input panics, and a token accepted is the one
// its key encodes to (nothing else is accepted for it).
func FuzzParsePageToken(f *testing.F) {
	sc := newPageScope(pageEvents, "", "media.", "", "")
	f.Add(encodePageToken(testPageKey, sc, store.PageKey{Ints: []int64{1764000000000000000, 7}, Strings: []string{"agent"}}))
	f.Add(encodePageToken(testPageKey, sc, store.PageKey{}))
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, tok string) {
		k, err := parsePageToken(testPageKey, sc, tok)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refused with %v, want InvalidArgument", err)
			}
			return
		}
		if k == nil {
			if tok != "" {
				t.Fatalf("%q accepted as the first page", tok)
			}
			return
		}
		if again := encodePageToken(testPageKey, sc, *k); again != tok {
			t.Fatalf("%q accepted as %v, which encodes to %q", tok, k, again)
		}
	})
}

// FuzzDecodePageKey: the key part of a token (behind the MAC, so a forger
// never reaches it, but bounded all the same) never panics, and what it
// accepts encodes back to the same bytes.
func FuzzDecodePageKey(f *testing.F) {
	sc := newPageScope(pageAudit)
	for _, k := range []store.PageKey{{Ints: []int64{42}}, {Strings: []string{"a", "b"}}, {Ints: []int64{-5}, Strings: []string{strings.Repeat("x", 300)}}} {
		raw, _ := base64.RawURLEncoding.DecodeString(encodePageToken(testPageKey, sc, k))
		f.Add(raw[pageHeaderLen : len(raw)-pageMACLen])
	}
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{9, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodePageKey(b)
		if err != nil {
			return
		}
		if len(k.Ints) > maxKeyParts || len(k.Strings) > maxKeyParts {
			t.Fatalf("key of %d integers and %d strings accepted", len(k.Ints), len(k.Strings))
		}
		raw, _ := base64.RawURLEncoding.DecodeString(encodePageToken(testPageKey, sc, k))
		if got := raw[pageHeaderLen : len(raw)-pageMACLen]; string(got) != string(b) {
			t.Fatalf("%x decoded to %v, which encodes to %x", b, k, got)
		}
	})
}

// alterToken changes one character in the middle of a token.
func alterToken(tok string) string {
	i := len(tok) / 2
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// addTerminals inserts active terminals with these host names straight
// into the collector's database, enrolled a millisecond apart, the last
// seen at times cycling through a few values (so sorts have ties).
func (c *collector) addTerminals(names ...string) []string {
	c.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(c.dataDir, "mnguard.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		c.t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		c.t.Fatal(err)
	}
	defer tx.Rollback()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i, name := range names {
		id := uuid.NewString()
		var seen any
		if i%4 != 0 {
			seen = base.Add(time.Duration(i%3) * time.Hour).UnixNano()
		}
		if _, err := tx.Exec(`INSERT INTO terminals (id, hostname, state, enrolled_at, last_seen_at) VALUES ($1, $2, 'active', $3, $4)`,
			id, name, base.Add(time.Duration(i)*time.Millisecond).UnixNano(), seen); err != nil {
			c.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := tx.Commit(); err != nil {
		c.t.Fatal(err)
	}
	return ids
}

// walkTerminals lists every page of req and returns the IDs in order and
// the number of pages.
func walkTerminals(t *testing.T, admin mnguardv1.AdminServiceClient, ctx context.Context, req *mnguardv1.ListTerminalsRequest) ([]string, int) {
	t.Helper()
	var (
		ids   []string
		pages int
	)
	for {
		resp, err := admin.ListTerminals(ctx, req)
		if err != nil {
			t.Fatalf("page %d: %v", pages+1, err)
		}
		pages++
		if pages > 10000 {
			t.Fatalf("no last page after %d pages: the walk goes round", pages)
		}
		max := int(req.GetPageSize())
		if max == 0 {
			max = defaultPageSize
		}
		if len(resp.GetTerminals()) > max {
			t.Fatalf("page %d: %d terminals, more than %d", pages, len(resp.GetTerminals()), max)
		}
		for _, tm := range resp.GetTerminals() {
			ids = append(ids, tm.GetId())
		}
		if resp.GetNextPageToken() == "" {
			return ids, pages
		}
		// The offset placed the first page; the token places the next.
		req.PageToken, req.Offset = resp.GetNextPageToken(), 0
	}
}

// TestListTerminalsPages walks the pages in every sort, both ways, and
// compares with the whole list in one (the store's export).
func TestListTerminalsPages(t *testing.T) {
	c := startCollector(t, false)
	var names []string
	for i := range 23 {
		names = append(names, fmt.Sprintf("pc-%02d", (i*7)%11)) // duplicate host names
	}
	c.addTerminals(names...)
	admin, ctx := c.admin(store.RoleAuditor)
	for _, sort := range []string{"", "hostname", "state", "last_seen", "agent_version", "enrolled"} {
		for _, desc := range []bool{false, true} {
			all, _, err := c.st.TerminalPage(ctx, store.TerminalFilter{Sort: sort, Desc: desc})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, tm := range all {
				want = append(want, tm.ID)
			}
			for _, size := range []uint32{1, 4, 23, 1000} {
				got, pages := walkTerminals(t, admin, ctx, &mnguardv1.ListTerminalsRequest{Sort: sort, Descending: desc, PageSize: size})
				if !slices.Equal(got, want) {
					t.Errorf("sort %q desc %v, pages of %d: got\n%v\nwant\n%v", sort, desc, size, got, want)
				}
				if wantPages := max(1, (len(want)+int(size)-1)/int(size)); pages != wantPages {
					t.Errorf("sort %q desc %v, pages of %d: %d pages, want %d", sort, desc, size, pages, wantPages)
				}
			}
		}
	}
	// Filters: search, with the offset placing the first page.
	got, _ := walkTerminals(t, admin, ctx, &mnguardv1.ListTerminalsRequest{Search: "pc-0", PageSize: 2, Offset: 1})
	all, _, err := c.st.TerminalPage(ctx, store.TerminalFilter{Search: "pc-0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all)-1 || got[0] != all[1].ID {
		t.Errorf("search pc-0 from offset 1: %d terminals, want %d", len(got), len(all)-1)
	}
}

func TestListTerminalsPageLimits(t *testing.T) {
	c := startCollector(t, false)
	var names []string
	for i := range 1205 {
		names = append(names, fmt.Sprintf("MN-PC-%04d", i))
	}
	c.addTerminals(names...)
	admin, ctx := c.admin(store.RoleAdmin)

	// A client from before pages: no page fields. It gets the first 500,
	// the total and a token.
	resp, err := admin.ListTerminals(ctx, &mnguardv1.ListTerminalsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTerminals()) != defaultPageSize || resp.GetTotal() != 1205 || resp.GetNextPageToken() == "" {
		t.Errorf("no page fields: %d terminals of %d, next %q; want %d, 1205 and a token", len(resp.GetTerminals()), resp.GetTotal(), resp.GetNextPageToken(), defaultPageSize)
	}
	// Its limit of old is the page size, at most 1000.
	resp, err = admin.ListTerminals(ctx, &mnguardv1.ListTerminalsRequest{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTerminals()) != maxPageSize {
		t.Errorf("limit 100000: %d terminals, want %d", len(resp.GetTerminals()), maxPageSize)
	}
	ids, pages := walkTerminals(t, admin, ctx, &mnguardv1.ListTerminalsRequest{PageSize: 1000})
	if len(ids) != 1205 || pages != 2 {
		t.Errorf("pages of 1000: %d terminals in %d pages, want 1205 in 2", len(ids), pages)
	}

	_, err = admin.ListTerminals(ctx, &mnguardv1.ListTerminalsRequest{PageSize: 1001})
	wantCode(t, err, codes.InvalidArgument, "page_size: at most 1000")

	first, err := admin.ListTerminals(ctx, &mnguardv1.ListTerminalsRequest{PageSize: 10, Sort: "hostname"})
	if err != nil {
		t.Fatal(err)
	}
	tok := first.GetNextPageToken()
	for name, req := range map[string]*mnguardv1.ListTerminalsRequest{
		"other sort":   {PageToken: tok, Sort: "enrolled"},
		"other order":  {PageToken: tok, Sort: "hostname", Descending: true},
		"other search": {PageToken: tok, Sort: "hostname", Search: "MN"},
		"other state":  {PageToken: tok, Sort: "hostname", State: "stale"},
		"with offset":  {PageToken: tok, Sort: "hostname", Offset: 5},
		"altered":      {PageToken: alterToken(tok), Sort: "hostname"},
		"forged":       {PageToken: encodePageToken(testPageKey, newPageScope(pageTerminals, "", "", "", "hostname", "false"), store.PageKey{Strings: []string{"MN-PC-0500", ""}}), Sort: "hostname"},
		"garbage":      {PageToken: "!!", Sort: "hostname"},
	} {
		_, err := admin.ListTerminals(ctx, req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	// A token of another list is refused.
	if _, err := admin.CreateEnrollmentToken(ctx, &mnguardv1.CreateEnrollmentTokenRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateEnrollmentToken(ctx, &mnguardv1.CreateEnrollmentTokenRequest{}); err != nil {
		t.Fatal(err)
	}
	toks, err := admin.ListEnrollmentTokens(ctx, &mnguardv1.ListEnrollmentTokensRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.ListTerminals(ctx, &mnguardv1.ListTerminalsRequest{PageToken: toks.GetNextPageToken()})
	wantCode(t, err, codes.InvalidArgument, "page_token: belongs to another list")
	// The same token with the same filters goes on where it left off.
	next, err := admin.ListTerminals(ctx, &mnguardv1.ListTerminalsRequest{PageSize: 10, Sort: "hostname", PageToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	if got := next.GetTerminals()[0].GetHost().GetHostname(); got != "MN-PC-0010" {
		t.Errorf("second page starts at %s, want MN-PC-0010", got)
	}
}

// TestListPagesOtherLists walks the other lists a page of one or two at
// a time and compares with the whole list.
func TestListPagesOtherLists(t *testing.T) {
	c := startCollectorWith(t, true, func(cfg *Config) {
		var err error
		if cfg.Operators, err = operators.New(cfg.Store, bytes.Repeat([]byte{7}, logins.KeySize), operators.DefaultPolicy()); err != nil {
			t.Fatal(err)
		}
	})
	admin, ctx := c.admin(store.RoleAdmin)
	for i := range 5 {
		if _, err := admin.CreateEnrollmentToken(ctx, &mnguardv1.CreateEnrollmentTokenRequest{Note: fmt.Sprint("t", i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.EnrollUser(ctx, &mnguardv1.EnrollUserRequest{Name: fmt.Sprintf("user%d", 4-i)}); err != nil {
			t.Fatal(err)
		}
	}
	ids := c.addTerminals("a", "b")
	for i := range 7 {
		msg := fmt.Sprint("e", i)
		data, err := proto.Marshal(&mnguardv1.Event{Type: "login.failure", Message: msg})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.st.AddServerEvent(ctx, store.ServerEvent{TerminalID: ids[i%2], Time: time.Date(2026, 11, 1, 0, 0, i/3, 0, time.UTC),
			Type: "login.failure", Message: msg, Data: data}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("enrollment tokens", func(t *testing.T) {
		var got []string
		req := &mnguardv1.ListEnrollmentTokensRequest{PageSize: 2}
		for {
			resp, err := admin.ListEnrollmentTokens(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range resp.GetTokens() {
				got = append(got, x.GetNote())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if want := []string{"t0", "t1", "t2", "t3", "t4"}; !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("users", func(t *testing.T) {
		var got []string
		req := &mnguardv1.ListUsersRequest{PageSize: 2}
		for {
			resp, err := admin.ListUsers(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range resp.GetUsers() {
				got = append(got, x.GetName())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if want := []string{"user0", "user1", "user2", "user3", "user4"}; !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("operators", func(t *testing.T) {
		var got []string
		req := &mnguardv1.ListOperatorsRequest{PageSize: 1}
		for {
			resp, err := admin.ListOperators(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range resp.GetOperators() {
				got = append(got, x.GetName())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if want := []string{"admin-op", "auditor-op", "helpdesk-op"}; !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("events", func(t *testing.T) {
		all, err := c.st.FilterEvents(ctx, store.EventFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var want, got []string
		for _, e := range all {
			want = append(want, e.Message)
		}
		req := &mnguardv1.ListEventsRequest{PageSize: 2}
		for {
			resp, err := admin.ListEvents(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range resp.GetEvents() {
				got = append(got, x.GetEvent().GetMessage())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if len(want) != 7 || !slices.Equal(got, want) {
			t.Errorf("got %v, want %v (7)", got, want)
		}
		first, err := admin.ListEvents(ctx, &mnguardv1.ListEventsRequest{PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		_, err = admin.ListEvents(ctx, &mnguardv1.ListEventsRequest{PageSize: 2, PageToken: alterToken(first.GetNextPageToken())})
		wantCode(t, err, codes.InvalidArgument, "page_token: damaged")
		_, err = admin.ListEvents(ctx, &mnguardv1.ListEventsRequest{PageSize: 2, Type: "login.", PageToken: first.GetNextPageToken()})
		wantCode(t, err, codes.InvalidArgument, "page_token: was issued for other filters")
	})
	t.Run("audit", func(t *testing.T) {
		all, err := c.st.FilterAudit(ctx, store.AuditFilter{Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var want, got []int64
		for _, e := range all {
			want = append(want, e.ID)
		}
		req := &mnguardv1.ListAuditRequest{PageSize: 3}
		for {
			resp, err := admin.ListAudit(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range resp.GetEntries() {
				got = append(got, x.GetId())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if len(want) < 10 || !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("page size", func(t *testing.T) {
		_, err := admin.ListUsers(ctx, &mnguardv1.ListUsersRequest{PageSize: 5000})
		wantCode(t, err, codes.InvalidArgument, "page_size: at most 1000")
		_, err = admin.ListAudit(ctx, &mnguardv1.ListAuditRequest{PageSize: 1001})
		wantCode(t, err, codes.InvalidArgument, "page_size: at most 1000")
	})
}
