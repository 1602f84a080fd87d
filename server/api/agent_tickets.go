package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"sync"
	"time"
)

// TLS session tickets that outlive the process. crypto/tls encrypts the
// tickets it hands out under keys it draws at random for each Config: a
// restarted collector, or another replica, could open none of them, and
// every terminal coming back after a restart paid for a full handshake
// (the reconnect storm of a restart ran at about 600 terminals a second).
// With Config.SessionTicketSecret the keys derive from that secret and the
// day instead: the same on every replica given the same data directory
// keys, new every day, and the previous day's still accepted, so a ticket
// lives at most two days.

// ticketPeriod is how long one session ticket key is the one tickets are
// issued under.
const ticketPeriod = 24 * time.Hour

// ticketKeys returns the session ticket keys at now: the current period's
// first (tickets are issued under it), then the previous period's.
func ticketKeys(secret []byte, now time.Time) [][32]byte {
	p := now.Unix() / int64(ticketPeriod/time.Second)
	return [][32]byte{ticketKey(secret, p), ticketKey(secret, p-1)}
}

func ticketKey(secret []byte, period int64) [32]byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("mnguard collector TLS session ticket key v1\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(period))
	m.Write(b[:])
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

// ticketConfigs hands every handshake a copy of base whose session ticket
// keys are those of the current period, made once per period.
type ticketConfigs struct {
	base   *tls.Config
	secret []byte
	now    func() time.Time
	mu     sync.Mutex
	period int64
	cfg    *tls.Config
}

func (t *ticketConfigs) get(*tls.ClientHelloInfo) (*tls.Config, error) {
	now := t.now()
	p := now.Unix() / int64(ticketPeriod/time.Second)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cfg == nil || p != t.period {
		c := t.base.Clone()
		c.GetConfigForClient = nil
		c.SetSessionTicketKeys(ticketKeys(t.secret, now))
		t.cfg, t.period = c, p
	}
	return t.cfg, nil
}
