package api

import (
	"sync"
	"time"
)

// beats drives the heartbeats and certificate expiry of every Subscribe
// stream from one goroutine, a timing wheel: a stream is in one slot of
// the wheel, which the goroutine visits once per heartbeat interval. A
// ticker and a timer per stream cost a runtime timer each and woke 100,000
// goroutines on their own schedules; here a stream is an entry in a map,
// and the visits are spread evenly over the interval. No goroutine runs
// while no stream is registered.
type beats struct {
	every time.Duration
	tick  time.Duration
	now   func() time.Time

	mu      sync.Mutex
	slots   []map[*beat]struct{}
	next    int // the slot a new stream goes to: round-robin
	pos     int // the slot visited last
	n       int
	running bool
}

// beat is one stream's entry.
type beat struct {
	// c is signalled (it holds at most one token) when the stream is due a
	// heartbeat.
	c chan struct{}
	// expired is closed when the stream's certificate expired.
	expired  chan struct{}
	notAfter time.Time
	slot     int
	once     sync.Once
	timer    *time.Timer
}

// beatSlots is the number of slots of the wheel: the goroutine wakes
// beatSlots times per heartbeat interval.
const beatSlots = 64

func newBeats(every time.Duration, now func() time.Time) *beats {
	tick := max(every/beatSlots, time.Millisecond)
	n := max(int(every/tick), 1)
	b := &beats{every: every, tick: tick, now: now, slots: make([]map[*beat]struct{}, n)}
	for i := range b.slots {
		b.slots[i] = make(map[*beat]struct{})
	}
	return b
}

// add registers a stream whose certificate expires at notAfter.
func (b *beats) add(notAfter time.Time) *beat {
	e := &beat{c: make(chan struct{}, 1), expired: make(chan struct{}), notAfter: notAfter}
	if !b.now().Before(notAfter) {
		e.expire()
		return e
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e.slot = b.next
	b.next = (b.next + 1) % len(b.slots)
	b.slots[e.slot][e] = struct{}{}
	b.n++
	b.soon(e)
	if !b.running {
		b.running = true
		go b.run()
	}
	return e
}

// soon gives e a timer of its own when its certificate expires before
// the wheel's next visit: expiry is exact, and only the few streams whose
// certificates end within an interval hold a timer.
func (b *beats) soon(e *beat) {
	if e.timer != nil {
		return
	}
	if left := e.notAfter.Sub(b.now()); left < 2*b.every {
		e.timer = time.AfterFunc(left, e.expire)
	}
}

func (e *beat) expire() { e.once.Do(func() { close(e.expired) }) }

// remove unregisters the stream.
func (b *beats) remove(e *beat) {
	if e.timer != nil {
		e.timer.Stop()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.slots[e.slot][e]; ok {
		delete(b.slots[e.slot], e)
		b.n--
	}
}

// run visits one slot per tick until no stream is registered.
func (b *beats) run() {
	t := time.NewTicker(b.tick)
	defer t.Stop()
	for range t.C {
		b.mu.Lock()
		if b.n == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.pos = (b.pos + 1) % len(b.slots)
		now := b.now()
		for e := range b.slots[b.pos] {
			if !now.Before(e.notAfter) {
				e.expire()
				continue
			}
			b.soon(e)
			select {
			case e.c <- struct{}{}:
			default: // the stream has not taken the last one yet
			}
		}
		b.mu.Unlock()
	}
}

// count is the number of registered streams.
func (b *beats) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
