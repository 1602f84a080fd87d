package web

import (
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
