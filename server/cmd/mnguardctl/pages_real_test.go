package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"database/sql"
	"encoding/csv"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mnguard/mnguard/internal/pki"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/ca"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// realTerminals is how many terminals the real paging test lists: more
// than one answer could carry before pages (gRPC's 4 MiB broke at about
// 26,700).
const realTerminals = 30000

// pagedCollector is the collector's admin API (package api) on loopback
// over TLS, on a real SQLite store filled with terminals straight through
// SQL, with an admin's API token.
type pagedCollector struct {
	addr, pin, token string
	st               *store.DB
	// raw is a second connection to the database, to add terminals
	// while the collector serves.
	raw *sql.DB
	// pages wraps the store: its hook runs before each terminal page.
	pages *hookedStore
}

// hookedStore is the real store; before every terminal page after the
// first, it calls beforePage with where the page starts.
type hookedStore struct {
	*store.DB
	mu         sync.Mutex
	beforePage func(after store.PageKey)
}

func (h *hookedStore) TerminalKeyPage(ctx context.Context, f store.TerminalFilter, after *store.PageKey, limit int) ([]store.TerminalSummary, *store.PageKey, int, error) {
	h.mu.Lock()
	hook := h.beforePage
	h.mu.Unlock()
	if hook != nil && after != nil {
		hook(*after)
	}
	return h.DB.TerminalKeyPage(ctx, f, after, limit)
}

// startPagedCollector starts the admin API with n terminals named
// MN-PC-00000 to MN-PC-(n-1), inserted in random order.
func startPagedCollector(tb testing.TB, n int) *pagedCollector {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	now := time.Now()
	authority, _, err := ca.LoadOrCreate(dir, now)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, "mnguard.db")
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	rc := &pagedCollector{st: st, raw: raw, pin: pki.Pin(authority.CertDER()), pages: &hookedStore{DB: st}}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("MN-PC-%05d", i)
	}
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	start := time.Now()
	if err := rc.addTerminals(names...); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("inserted %d terminals in %s", n, time.Since(start).Round(time.Millisecond))

	tok, err := api.NewOperatorToken()
	if err != nil {
		tb.Fatal(err)
	}
	audit := store.AuditEntry{Time: now, Actor: "test", Action: "operator.add"}
	if err := st.CreateOperator(ctx, store.Operator{Name: "admin-op", Role: store.RoleAdmin, CreatedAt: now}, audit); err != nil {
		tb.Fatal(err)
	}
	if err := st.CreateOperatorToken(ctx, store.OperatorToken{ID: "tok-admin", Name: "admin-op", Hash: api.HashToken(tok), CreatedAt: now}, audit); err != nil {
		tb.Fatal(err)
	}
	rc.token = tok
	_, signer, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	svc := api.New(api.Config{Store: rc.pages, CA: authority, Version: "test", Logger: slog.New(slog.DiscardHandler), ExemptionSigner: signer})
	cert, err := authority.ServerCertificate([]string{"127.0.0.1"}, now, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	srv := svc.NewGRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(l)
	tb.Cleanup(srv.Stop)
	rc.addr = l.Addr().String()
	return rc
}

// addTerminals inserts active terminals with these host names, in one
// transaction.
func (rc *pagedCollector) addTerminals(names ...string) error {
	tx, err := rc.raw.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins, err := tx.Prepare(`INSERT INTO terminals (id, hostname, state, enrolled_at) VALUES ($1, $2, 'active', $3)`)
	if err != nil {
		return err
	}
	at := time.Now().UnixNano()
	for i, name := range names {
		if _, err := ins.Exec(uuid.NewString(), name, at+int64(i)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (rc *pagedCollector) env() map[string]string {
	return map[string]string{"MNGUARD_SERVER": rc.addr, "MNGUARD_CA_PIN": rc.pin, "MNGUARD_TOKEN": rc.token, "MNGUARD_TIMEOUT": "60s"}
}

// TestTerminalsListRealPages lists 30,000 terminals of a real collector
// with mnguardctl: every one, once, in order; then again while terminals
// are added before every page: those sorting after where the walk stands
// are listed once, those before it not at all, and none twice.
func TestTerminalsListRealPages(t *testing.T) {
	rc := startPagedCollector(t, realTerminals)

	start := time.Now()
	cpu0, _ := processCPU()
	r := runReal(t, rc.env(), "terminals", "list")
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	if r.code != 0 {
		t.Fatalf("terminals list: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != realTerminals+1 {
		t.Fatalf("terminals list printed %d lines, want a header and %d terminals", len(lines), realTerminals)
	}
	for i, l := range lines[1:] {
		if want := fmt.Sprintf("MN-PC-%05d", i); !strings.Contains(l, " "+want+" ") {
			t.Fatalf("line %d is %q, want terminal %s", i+2, l, want)
		}
	}
	t.Logf("mnguardctl terminals list: %d terminals (table, pages of 1000) in %s, %s CPU (collector and CLI)", realTerminals, elapsed.Round(time.Millisecond), (cpu1 - cpu0).Round(time.Millisecond))

	// Before every page after the first, add three terminals: one sorting
	// right after the last one listed, one at the very end (both must be
	// listed), one at the start (before the walk: must not be).
	var (
		mu           sync.Mutex
		added, early []string
		pages        int
		hookErr      error
	)
	rc.pages.mu.Lock()
	rc.pages.beforePage = func(after store.PageKey) {
		mu.Lock()
		defer mu.Unlock()
		pages++
		last := after.Strings[0] // sort by host name: [host name, ID]
		next := fmt.Sprintf("%s-added-%d", last, pages)
		end := fmt.Sprintf("MN-PC-99999-added-%d", pages)
		start := fmt.Sprintf("MN-PC-00000-added-%d", pages)
		if err := rc.addTerminals(next, end, start); err != nil && hookErr == nil {
			hookErr = err
		}
		added = append(added, next, end)
		early = append(early, start)
	}
	rc.pages.mu.Unlock()
	start = time.Now()
	r = runReal(t, rc.env(), "terminals", "list", "-o", "csv")
	elapsed = time.Since(start)
	if r.code != 0 {
		t.Fatalf("terminals list -o csv: exit %d: %s", r.code, r.stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != "id" || rows[0][1] != "hostname" {
		t.Fatalf("CSV header %v", rows[0])
	}
	listed := map[string]int{}
	var prev [2]string
	for i, row := range rows[1:] {
		key := [2]string{row[1], row[0]}
		if i > 0 && !(prev[0] < key[0] || prev[0] == key[0] && prev[1] < key[1]) {
			t.Fatalf("row %d (%s %s) does not sort after row %d (%s %s): out of order or twice", i+1, key[0], key[1], i, prev[0], prev[1])
		}
		prev = key
		listed[row[1]]++
	}
	for i := range realTerminals {
		if name := fmt.Sprintf("MN-PC-%05d", i); listed[name] != 1 {
			t.Errorf("terminal %s listed %d times, want once", name, listed[name])
		}
	}
	for _, name := range added {
		if listed[name] != 1 {
			t.Errorf("terminal %s, added after the page before, listed %d times, want once", name, listed[name])
		}
	}
	for _, name := range early {
		if listed[name] != 0 {
			t.Errorf("terminal %s, added where the walk had passed, listed %d times, want none", name, listed[name])
		}
	}
	if want := realTerminals + len(added); len(rows)-1 != want {
		t.Errorf("listed %d terminals, want %d (%d, and %d added ahead of the walk)", len(rows)-1, want, realTerminals, len(added))
	}
	if pages < realTerminals/1000 {
		t.Errorf("the collector answered %d pages after the first, want at least %d", pages, realTerminals/1000-1)
	}
	t.Logf("terminals list -o csv while adding: %d terminals in %d pages, %s", len(rows)-1, pages+1, elapsed.Round(time.Millisecond))
}

// BenchmarkListTerminalsPage is the time of one ListTerminals page of
// 1000 terminals sorted by host name among 30,000, asked over TLS on
// loopback and decoded: the first page, and a page in the middle reached
// by its token.
func BenchmarkListTerminalsPage(b *testing.B) {
	rc := startPagedCollector(b, realTerminals)
	tlsCfg, err := pki.PinnedTLSConfig(rc.pin, "127.0.0.1", nil)
	if err != nil {
		b.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+rc.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	client := mnguardv1.NewAdminServiceClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+rc.token)
	// The token of page 15.
	req := &mnguardv1.ListTerminalsRequest{PageSize: 1000}
	for range 14 {
		resp, err := client.ListTerminals(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		req.PageToken = resp.GetNextPageToken()
	}
	middle := req.PageToken
	for _, bc := range []struct{ name, token string }{{"first", ""}, {"middle", middle}} {
		b.Run(bc.name, func(b *testing.B) {
			req := &mnguardv1.ListTerminalsRequest{PageSize: 1000, PageToken: bc.token}
			cpu0, cpuOK := processCPU()
			for b.Loop() {
				resp, err := client.ListTerminals(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetTerminals()) != 1000 || resp.GetNextPageToken() == "" {
					b.Fatalf("page of %d terminals, next %q", len(resp.GetTerminals()), resp.GetNextPageToken())
				}
			}
			b.ReportMetric(float64(b.Elapsed())/float64(time.Millisecond)/float64(b.N), "ms/page")
			// CPU of collector and client together (one process).
			if cpu1, ok := processCPU(); ok && cpuOK {
				b.ReportMetric(float64(cpu1-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/page")
			}
		})
	}
}
