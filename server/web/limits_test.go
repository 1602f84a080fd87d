package web

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/server/store"
)

// TestSigninThrottle: a client that fails SigninBurst sign-ins with names
// that do not exist is then refused before any password is checked — also
// with an operator's right credentials — until its bucket refills; the
// operators it never named are not locked by it.
func TestSigninThrottle(t *testing.T) {
	e := newEnv(t)
	desk := e.addOperator("sato", store.RoleHelpdesk)
	try := func(name, password, code string) (*http.Response, string) {
		c := e.newClient()
		c.get("/signin")
		return c.post("/signin", url.Values{"name": {name}, "password": {password}, "code": {code}}, true)
	}
	for i := range SigninBurst {
		resp, _ := try("nobody"+strconv.Itoa(i), "guess guess guess", "123456")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %s, want 401", i+1, resp.Status)
		}
	}
	resp, body := try(desk.name, desk.password, e.code(desk, 0))
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, `data-error="signin.throttled"`) {
		t.Fatalf("sign-in after %d failures from one address: %s, want 429 and signin.throttled", SigninBurst, resp.Status)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" {
		t.Error("429 without Retry-After")
	}
	o, err := e.st.Operator(t.Context(), desk.name)
	if err != nil {
		t.Fatal(err)
	}
	if o.Failures != 0 || !o.LockedAt.IsZero() {
		t.Errorf("the refused attempt counted against %s: failures %d, locked %v", desk.name, o.Failures, o.LockedAt)
	}
	// One refill later the address has one attempt again.
	e.clock.Add(SigninRefill)
	if resp, _ := try(desk.name, desk.password, e.code(desk, 0)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in after a refill: %s, want 303", resp.Status)
	}
	// A success costs nothing: the bucket is as the refill left it, and
	// the next failure empties it again.
	if resp, _ := try("nobody", "guess guess guess", "123456"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("failure after a refill: %s, want 401", resp.Status)
	}
	if resp, _ := try("nobody", "guess guess guess", "123456"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second failure after one refill: %s, want 429", resp.Status)
	}
}

// TestSigninThrottleKeys: IPv4 addresses count one by one, an IPv6 /64 as
// one client, an IPv4-mapped IPv6 address as its IPv4 address; the table
// stays bounded.
func TestSigninThrottleKeys(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	th := newSigninThrottle()
	for range SigninBurst {
		th.failed("192.0.2.1", now)
		th.failed("2001:db8:1:2::1", now)
	}
	for _, c := range []struct {
		host string
		want bool
	}{
		{"192.0.2.1", false},
		{"::ffff:192.0.2.1", false},
		{"192.0.2.2", true},
		{"2001:db8:1:2::1", false},
		{"2001:db8:1:2:ffff::9", false},
		{"2001:db8:1:3::1", true},
	} {
		if got := th.allowed(c.host, now); got != c.want {
			t.Errorf("allowed(%s) = %v, want %v", c.host, got, c.want)
		}
	}
	if !th.allowed("192.0.2.1", now.Add(SigninRefill)) {
		t.Error("no attempt after a refill")
	}
	for i := range maxSigninAddrs + 10 {
		th.failed("10."+strconv.Itoa(i>>16&255)+"."+strconv.Itoa(i>>8&255)+"."+strconv.Itoa(i&255), now)
	}
	if n := len(th.addrs); n > maxSigninAddrs {
		t.Errorf("%d addresses held, want at most %d", n, maxSigninAddrs)
	}
}

// TestLiveStreamsPerSession: one session holds at most MaxLiveStreams live
// streams; a new one replaces the oldest, which ends with "done" so its
// page does not reconnect; the others stay open.
func TestLiveStreamsPerSession(t *testing.T) {
	e := newEnv(t)
	admin := e.addOperator("admin", store.RoleAdmin)
	id := e.terminal("term-01", "SN1", false)
	c := e.mustSignIn(admin)
	resp, _ := c.post("/exemptions", url.Values{"terminal": {id}, "device": {"0781:5581:SN1"}, "duration": {"1h"}, "reason": {"r"}, "ticket": {"t"}}, true)
	exID := strings.TrimPrefix(strings.Split(resp.Header.Get("Location"), "?")[0], "/exemptions/")
	type stream struct {
		ended chan string
		body  io.Closer
	}
	open := func() stream {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/exemptions/"+exID+"/live", nil)
		req.Header.Set("Accept", "text/event-stream")
		live, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if live.StatusCode != http.StatusOK {
			t.Fatalf("live stream: %s", live.Status)
		}
		s := stream{ended: make(chan string, 1), body: live.Body}
		// The first event arrives once the stream is admitted.
		br := bufio.NewReader(live.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		go func() {
			b, _ := io.ReadAll(br)
			s.ended <- string(b)
		}()
		t.Cleanup(func() { live.Body.Close() })
		return s
	}
	var streams []stream
	for range MaxLiveStreams {
		streams = append(streams, open())
	}
	for i, s := range streams {
		select {
		case b := <-s.ended:
			t.Fatalf("stream %d of %d ended: %q", i+1, MaxLiveStreams, b)
		default:
		}
	}
	streams = append(streams, open())
	select {
	case b := <-streams[0].ended:
		if !strings.Contains(b, "event: done") {
			t.Errorf("the replaced stream ended without saying so: %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%d streams of one session open after 5s, want %d", MaxLiveStreams+1, MaxLiveStreams)
	}
	time.Sleep(100 * time.Millisecond)
	for i, s := range streams[1:] {
		select {
		case b := <-s.ended:
			t.Errorf("stream %d ended too: %q", i+2, b)
		default:
		}
	}
}
