//go:build linux

package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/config"
	"github.com/mnguard/mnguard/agent/mfa"
	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/offlinecode"
	"github.com/mnguard/mnguard/internal/testenv"
	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const testTerminal = "3f2a9c1e-7b4d-4e0f-9a55-0c1d2e3f4a5b"

var testOfflineKey = []byte("0123456789abcdef0123456789abcdef")

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gate is a daemon's login gate under test: the real socket served by
// loginGate, the real spool, the daemon's log.
type gate struct {
	d     *Daemon
	sock  string
	logs  *syncBuffer
	spool *spool.Spool
	clock *fakeClock
	stop  context.CancelFunc // stops the gate
	// codes are the secrets typed in this test; none may appear in a log
	// or an event.
	codes []string
}

// startGate builds a Daemon talking to the collector at server and serves
// its login gate until the test ends. subscribe also runs its
// subscription loop; mods change the configuration.
func startGate(t *testing.T, server string, subscribe bool, mods ...func(*config.Config)) *gate {
	t.Helper()
	// Only root may ask the gate about users other than itself.
	testenv.RequireRoot(t, "asking the login gate for other users")
	dir := t.TempDir()
	sp, err := spool.OpenWithOptions(filepath.Join(dir, "spool.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{sock: filepath.Join(dir, "run", "pam.sock"), logs: &syncBuffer{}, spool: sp,
		clock: &fakeClock{t: time.Date(2026, 11, 25, 10, 20, 0, 0, time.UTC)}}
	log := slog.New(slog.NewTextHandler(g.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := config.Default()
	cfg.MFA.Socket = g.sock
	for _, mod := range mods {
		mod(&cfg)
	}
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	g.d = &Daemon{
		opts: Options{Config: cfg, Now: g.clock.Now}, log: log, spool: sp, wake: make(chan struct{}, 1),
		id:   &state.Identity{Enrollment: state.Enrollment{TerminalID: testTerminal}, OfflineKey: testOfflineKey},
		conn: conn, client: mnguardv1.NewAgentServiceClient(conn),
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	var wg sync.WaitGroup
	wg.Go(func() { g.d.loginGate(ctx) })
	if subscribe {
		wg.Go(func() { g.d.subscribeLoop(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		conn.Close()
		g.checkNoCodes(t)
		sp.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.d.mu.Lock()
		serving := g.d.gateServing
		g.d.mu.Unlock()
		if serving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the login gate does not serve:\n%s", g.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return g
}

// ask sends one request over the real socket, as pam_mnguard.so does.
func (g *gate) ask(t *testing.T, req mfa.Request) mfa.Response {
	t.Helper()
	if req.Code != "" {
		g.codes = append(g.codes, req.Code, strings.ReplaceAll(req.Code, "-", ""))
	}
	p, err := mfa.EncodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", g.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := mfa.WriteFrame(c, p); err != nil {
		t.Fatal(err)
	}
	rp, err := mfa.ReadFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	r, err := mfa.DecodeResponse(rp)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (g *gate) begin(t *testing.T, user string) mfa.Response {
	t.Helper()
	return g.ask(t, mfa.Request{Type: mfa.TypeBegin, User: user, Service: "login"})
}

func (g *gate) verify(t *testing.T, user, code string) mfa.Response {
	t.Helper()
	return g.ask(t, mfa.Request{Type: mfa.TypeVerify, User: user, Service: "login", Code: code})
}

var challengeRE = regexp.MustCompile(`Offline challenge for [^\n]*?: (\d{4}-\d{4})\. Ask the helpdesk`)

// challengeIn returns the challenge a message shows, "" if none.
func challengeIn(msg string) string {
	if m := challengeRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// offlineCode is what the helpdesk reads out for user and challenge at now.
func offlineCode(t *testing.T, user, challenge string, now time.Time) string {
	t.Helper()
	c, err := offlinecode.LoginCode(testOfflineKey, testTerminal, user, challenge, offlinecode.WindowOf(now))
	if err != nil {
		t.Fatal(err)
	}
	return offlinecode.Format(c)
}

// events returns the spooled events of type typ.
func (g *gate) events(t *testing.T, typ string) []*mnguardv1.Event {
	t.Helper()
	evs, err := g.spool.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	var out []*mnguardv1.Event
	for _, e := range evs {
		if e.GetType() == typ {
			out = append(out, e)
		}
	}
	return out
}

// checkNoCodes fails if a typed code is in the log or in any event.
func (g *gate) checkNoCodes(t *testing.T) {
	t.Helper()
	evs, err := g.spool.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	all.WriteString(g.logs.String())
	for _, e := range evs {
		fmt.Fprintf(&all, "\n%s %s %v", e.GetType(), e.GetMessage(), e.GetAttributes())
	}
	for _, c := range g.codes {
		if len(c) >= 6 && strings.Contains(all.String(), c) {
			t.Errorf("code %q appears in the log or the events:\n%s", c, all.String())
		}
	}
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestLoginOffline: with the collector down, begin shows a challenge, a
// TOTP code is refused (Unavailable, showing the same challenge), the
// helpdesk's code is accepted once, and every attempt is an event without
// the code.
func TestLoginOffline(t *testing.T) {
	g := startGate(t, closedAddr(t), false)

	r := g.begin(t, "alice")
	ch := challengeIn(r.Message)
	if r.Result != mfa.Accepted || ch == "" || !strings.Contains(r.Message, "server cannot be reached") ||
		!strings.Contains(r.Message, "alice") || !strings.Contains(r.Message, "terminal 3f2a9c1e") ||
		!strings.Contains(r.Message, "Ask the helpdesk for an offline login code") {
		t.Fatalf("begin while offline: %v %q", r.Result, r.Message)
	}
	t.Logf("begin: %s", r.Message)
	if again := g.begin(t, "alice"); challengeIn(again.Message) != ch {
		t.Errorf("second begin shows %q, want the pending challenge %s", again.Message, ch)
	}
	if bob := challengeIn(g.begin(t, "bob").Message); bob == "" || bob == ch {
		t.Errorf("bob's challenge %q, want his own", bob)
	}

	start := time.Now()
	r = g.verify(t, "alice", "123456")
	if r.Result != mfa.Unavailable || challengeIn(r.Message) != ch || !strings.Contains(r.Message, "cannot check the code") {
		t.Errorf("TOTP code while offline: %v %q, want unavailable with challenge %s", r.Result, r.Message, ch)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refusal took %v with the collector's port closed", d)
	}

	// Bob's code does not open alice's account.
	bobCh := challengeIn(g.begin(t, "bob").Message)
	if r := g.verify(t, "alice", offlineCode(t, "bob", bobCh, g.clock.Now())); r.Result != mfa.Rejected {
		t.Errorf("bob's offline code for alice: %v %q", r.Result, r.Message)
	}

	code := offlineCode(t, "alice", ch, g.clock.Now())
	r = g.verify(t, "alice", code)
	if r.Result != mfa.Accepted || !strings.Contains(r.Message, "offline login code accepted") {
		t.Fatalf("helpdesk code: %v %q", r.Result, r.Message)
	}
	// Each code works once. Again (typed with spaces): no challenge is
	// pending, so it goes to the collector, which cannot be reached; a new
	// challenge is offered. Once more: it does not answer the new challenge.
	r = g.verify(t, "alice", strings.ReplaceAll(code, "-", " "))
	if next := challengeIn(r.Message); r.Result != mfa.Unavailable || next == "" || next == ch {
		t.Errorf("used code again: %v %q, want unavailable with a new challenge", r.Result, r.Message)
	}
	r = g.verify(t, "alice", code)
	if r.Result != mfa.Rejected || !strings.Contains(r.Message, "wrong offline login code") {
		t.Errorf("used code for the new challenge: %v %q, want rejected", r.Result, r.Message)
	}

	var offline, unavailable int
	for _, e := range g.events(t, EventLogin) {
		a := e.GetAttributes()
		if a["user"] == "" || a["service"] != "login" || a["result"] == "" || a["path"] == "" {
			t.Errorf("login event lacks user, service, result or path: %v", a)
		}
		switch {
		case a["path"] == "offline" && a["result"] == "accepted":
			offline++
			if e.GetSeverity() != mnguardv1.Severity_SEVERITY_ALERT || a["challenge"] != strings.ReplaceAll(ch, "-", "") {
				t.Errorf("offline login event: %v %v", e.GetSeverity(), a)
			}
		case a["path"] == "server" && a["result"] == "unavailable":
			unavailable++
			if e.GetSeverity() < mnguardv1.Severity_SEVERITY_WARNING {
				t.Errorf("refusal while unreachable is only %v", e.GetSeverity())
			}
		}
	}
	if offline != 1 || unavailable != 2 {
		t.Errorf("events: %d offline logins, %d refusals while unreachable; want 1 and 2", offline, unavailable)
	}
	if n := len(g.events(t, "login.offline_challenge")); n != 3 {
		t.Errorf("%d login.offline_challenge events, want 3 (alice, bob, alice's second)", n)
	}
	logs := g.logs.String()
	for _, want := range []string{"LOGIN WITH AN OFFLINE CODE", "LOGIN REFUSED: the collector cannot check the code", "level=WARN"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestLoginOfflineWrongCodes: five wrong codes void the challenge; the
// right code then no longer works.
func TestLoginOfflineWrongCodes(t *testing.T) {
	g := startGate(t, closedAddr(t), false)
	ch := challengeIn(g.begin(t, "alice").Message)
	right := offlineCode(t, "alice", ch, g.clock.Now())
	wrong := "00000-00000"
	if strings.ReplaceAll(right, "-", "") == "0000000000" {
		wrong = "11111-11111"
	}
	for i := 1; i <= maxOfflineTries; i++ {
		r := g.verify(t, "alice", wrong)
		if r.Result != mfa.Rejected {
			t.Fatalf("wrong code %d: %v %q", i, r.Result, r.Message)
		}
		if want := fmt.Sprintf("%d more tries", maxOfflineTries-i); i < maxOfflineTries && !strings.Contains(r.Message, want) {
			t.Errorf("wrong code %d: %q lacks %q", i, r.Message, want)
		}
		if i == maxOfflineTries && !strings.Contains(r.Message, "challenge is void") {
			t.Errorf("last wrong code: %q", r.Message)
		}
	}
	r := g.verify(t, "alice", right)
	if r.Result == mfa.Accepted {
		t.Fatal("the right code works after the challenge was void")
	}
	if next := challengeIn(r.Message); next == ch {
		t.Errorf("the void challenge is still offered: %q", r.Message)
	}
	var void bool
	for _, e := range g.events(t, EventLogin) {
		if e.GetAttributes()["path"] == "offline" && e.GetAttributes()["tries_left"] == "0" && e.GetSeverity() == mnguardv1.Severity_SEVERITY_ALERT {
			void = true
		}
	}
	if !void {
		t.Error("no alert event for the void challenge")
	}
}

// TestLoginOfflineExpiry: a challenge older than 30 minutes is gone; the
// helpdesk's code for it is refused and begin shows a new one. A clock set
// back voids it too.
func TestLoginOfflineExpiry(t *testing.T) {
	g := startGate(t, closedAddr(t), false)
	ch := challengeIn(g.begin(t, "alice").Message)
	g.clock.Advance(challengeTTL - time.Minute)
	if again := challengeIn(g.begin(t, "alice").Message); again != ch {
		t.Fatalf("challenge changed before expiry: %s, then %s", ch, again)
	}
	g.clock.Advance(time.Minute)
	code := offlineCode(t, "alice", ch, g.clock.Now())
	if r := g.verify(t, "alice", code); r.Result == mfa.Accepted {
		t.Fatal("code for an expired challenge accepted")
	}
	fresh := challengeIn(g.begin(t, "alice").Message)
	if fresh == "" || fresh == ch {
		t.Fatalf("after expiry begin shows %q, want a new challenge", fresh)
	}

	g.clock.Advance(-2 * time.Hour)
	if r := g.verify(t, "alice", offlineCode(t, "alice", fresh, g.clock.Now())); r.Result == mfa.Accepted {
		t.Fatal("code accepted after the clock went back two hours")
	}
}

// fakeCollector answers VerifyLogin by code and keeps Subscribe streams
// open with one policy message.
type fakeCollector struct {
	mnguardv1.UnimplementedAgentServiceServer
	mu    sync.Mutex
	calls []*mnguardv1.VerifyLoginRequest
}

func (f *fakeCollector) Subscribe(_ *mnguardv1.SubscribeRequest, s mnguardv1.AgentService_SubscribeServer) error {
	if err := s.Send(&mnguardv1.SubscribeResponse{Push: &mnguardv1.SubscribeResponse_Policy{Policy: &mnguardv1.Policy{Version: "p1"}}}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (f *fakeCollector) VerifyLogin(ctx context.Context, r *mnguardv1.VerifyLoginRequest) (*mnguardv1.VerifyLoginResponse, error) {
	f.mu.Lock()
	f.calls = append(f.calls, r)
	f.mu.Unlock()
	res := func(lr mnguardv1.LoginResult, msg string) (*mnguardv1.VerifyLoginResponse, error) {
		return &mnguardv1.VerifyLoginResponse{Result: lr, Message: msg}, nil
	}
	switch r.GetCode() {
	case "111111":
		return res(mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED, "")
	case "222222":
		return res(mnguardv1.LoginResult_LOGIN_RESULT_REJECTED, "")
	case "333333":
		return res(mnguardv1.LoginResult_LOGIN_RESULT_LOCKED, "")
	case "444444":
		return res(mnguardv1.LoginResult_LOGIN_RESULT_UNKNOWN_USER, "user 444444 unknown")
	case "555555":
		// The collector holds an answer after repeated failures.
		time.Sleep(3 * time.Second)
		return res(mnguardv1.LoginResult_LOGIN_RESULT_ACCEPTED, "")
	case "666666":
		return nil, status.Error(codes.Internal, "database is locked")
	case "777777":
		return res(mnguardv1.LoginResult_LOGIN_RESULT_REJECTED, "wrong code 777777")
	}
	return nil, status.Error(codes.InvalidArgument, "code: want 6 digits or a recovery code")
}

func startCollector(t *testing.T) (*fakeCollector, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCollector{}
	srv := grpc.NewServer()
	mnguardv1.RegisterAgentServiceServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return f, ln.Addr().String()
}

// TestLoginOnline: with the collector reachable begin shows nothing and
// the collector's answers map to the PAM module's results; when the
// collector cannot answer, the next begin offers a challenge until it
// answers again.
func TestLoginOnline(t *testing.T) {
	f, addr := startCollector(t)
	g := startGate(t, addr, true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.d.mu.Lock()
		up := g.d.st.Connected
		g.d.mu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription did not come up:\n%s", g.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if r := g.begin(t, "alice"); r.Result != mfa.Accepted || r.Message != "" {
		t.Errorf("begin while online: %v %q, want accepted without a message", r.Result, r.Message)
	}
	for _, tc := range []struct {
		code string
		want mfa.Result
		msg  string
	}{
		{"111111", mfa.Accepted, ""},
		{"222222", mfa.Rejected, "wrong code"},
		{"333333", mfa.Locked, ""},
		{"444444", mfa.Rejected, "no second factor is enrolled for this user"},
		{"777777", mfa.Rejected, "wrong code"}, // the collector's message repeats the code: dropped
		{"12", mfa.Rejected, "code: want 6 digits or a recovery code"},
		{"555555", mfa.Accepted, ""},
	} {
		t.Run(tc.code, func(t *testing.T) {
			r := g.verify(t, "alice", tc.code)
			if r.Result != tc.want || r.Message != tc.msg {
				t.Errorf("got %v %q, want %v %q", r.Result, r.Message, tc.want, tc.msg)
			}
		})
	}
	if n := len(f.calls); n != 7 {
		t.Errorf("collector asked %d times, want 7", n)
	}

	// The collector fails: refused, with a challenge now and at the next begin.
	r := g.verify(t, "alice", "666666")
	ch := challengeIn(r.Message)
	if r.Result != mfa.Unavailable || ch == "" {
		t.Fatalf("collector failing: %v %q, want unavailable with a challenge", r.Result, r.Message)
	}
	if b := g.begin(t, "alice"); challengeIn(b.Message) != ch {
		t.Errorf("begin after a failed verification: %q, want challenge %s", b.Message, ch)
	}
	// The helpdesk's code works while the collector is up again.
	if r := g.verify(t, "alice", offlineCode(t, "alice", ch, g.clock.Now())); r.Result != mfa.Accepted {
		t.Errorf("offline code: %v %q", r.Result, r.Message)
	}
	// An answered verification shows the collector is back: no challenge.
	g.verify(t, "alice", "111111")
	if b := g.begin(t, "alice"); b.Message != "" {
		t.Errorf("begin after the collector answered again: %q", b.Message)
	}

	results := map[string]int{}
	for _, e := range g.events(t, EventLogin) {
		a := e.GetAttributes()
		results[a["path"]+" "+a["result"]]++
	}
	// Attempts the collector answered are its own events (it records them);
	// the agent spools only what the collector did not record: the
	// malformed code it refused before checking, the refusal while it
	// failed, and the offline login.
	want := map[string]int{"server rejected": 1, "server unavailable": 1, "offline accepted": 1}
	if fmt.Sprint(results) != fmt.Sprint(want) {
		t.Errorf("login events by path and result: %v, want %v", results, want)
	}
}

// TestLoginNotPermitted: a peer refused by the socket's credential check is
// an event.
func TestLoginNotPermitted(t *testing.T) {
	g := startGate(t, closedAddr(t), false)
	v := newLoginVerifier(g.d, nil)
	v.notPermitted(mfa.Request{Type: mfa.TypeBegin, User: "root", Service: "sshd"}, 1000)
	evs := g.events(t, EventLogin)
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	a := evs[0].GetAttributes()
	if a["user"] != "root" || a["service"] != "sshd" || a["result"] != "not permitted" || a["path"] != "agent" || a["peer_uid"] != "1000" {
		t.Errorf("event attributes %v", a)
	}
}
