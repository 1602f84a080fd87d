package web

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sign-in throttling per client address. The per-operator counter in
// package operators delays and locks one operator; it does nothing against
// a client that tries many names (each unknown name still costs an argon2id
// hash) or that locks every operator in turn. So failed sign-ins are also
// counted per client address: SigninBurst failures at once, then one more
// every SigninRefill; beyond that the address is refused before any
// password is hashed, until the bucket refills.
const (
	SigninBurst  = 20
	SigninRefill = 6 * time.Second // 10 a minute
	// signinIdle drops an address's bucket once it is full again and
	// unused; maxSigninAddrs bounds the table.
	signinIdle     = SigninBurst * SigninRefill
	maxSigninAddrs = 100_000
)

// signinThrottle counts failed sign-ins per client address: an IPv4
// address, or an IPv6 /64 (one host's whole prefix).
type signinThrottle struct {
	mu    sync.Mutex
	addrs map[netip.Prefix]*signinBucket
	swept time.Time
}

type signinBucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newSigninThrottle() *signinThrottle {
	return &signinThrottle{addrs: make(map[netip.Prefix]*signinBucket)}
}

// signinKey is the bucket of a RemoteAddr host; an unparsable one shares a
// single bucket rather than escaping the count.
func signinKey(host string) netip.Prefix {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.WithZone("").Prefix(64)
	return p
}

// allowed reports whether host may try to sign in at now: whether it has a
// failure left.
func (t *signinThrottle) allowed(host string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.addrs[signinKey(host)]
	return b == nil || b.lim.TokensAt(now) >= 1
}

// failed counts a failed sign-in from host at now.
func (t *signinThrottle) failed(host string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := signinKey(host)
	b := t.addrs[k]
	if b == nil {
		t.sweep(now)
		b = &signinBucket{lim: rate.NewLimiter(rate.Every(SigninRefill), SigninBurst)}
		t.addrs[k] = b
	}
	b.lim.AllowN(now, 1)
	b.last = now
}

// sweep drops, at most once a minute, the buckets idle long enough to be
// full again; a table still full is emptied (an attacker holding that many
// addresses or /64 prefixes gains nothing from the count anyway), so memory
// stays bounded and no request pays for more than one pass.
func (t *signinThrottle) sweep(now time.Time) {
	if len(t.addrs) >= maxSigninAddrs {
		clear(t.addrs)
		t.swept = now
		return
	}
	if now.Sub(t.swept) < time.Minute {
		return
	}
	t.swept = now
	for k, b := range t.addrs {
		if now.Sub(b.last) >= signinIdle {
			delete(t.addrs, k)
		}
	}
}
