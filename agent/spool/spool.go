// Package spool is the agent's durable outbox of events.
//
// Events are appended with the next sequence number and kept, fsynced, in a
// bbolt file until the server acknowledges them. Sequence numbers start at
// 1, only grow, and are never reused: not after an acknowledgement, not after
// a restart, and not after events were dropped. The server stores each
// (terminal, seq) once, so resending an event is always safe.
//
// The spool is bounded (Options.MaxEvents). When it is full, Append drops the
// oldest events to make room and counts them; Dropped returns the count,
// which survives restarts, and the server also sees the gap in sequence
// numbers. A stored record that cannot be decoded is removed when Pending
// meets it, logged, and counted in Corrupt, so that one bad record cannot
// stop delivery of the events behind it.
package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// DefaultMaxEvents is the capacity of a spool when Options.MaxEvents is 0.
const DefaultMaxEvents = 100000

// lockTimeout is how long Open waits for another process to release the
// file.
const lockTimeout = time.Second

var (
	bucketEvents = []byte("events") // 8-byte big-endian seq → Event; the bucket's sequence is the last seq
	bucketMeta   = []byte("meta")
	keyDropped   = []byte("dropped") // uint64: events dropped because the spool was full
	keyCorrupt   = []byte("corrupt") // uint64: records removed because they did not decode
)

// ErrClosed is returned by the methods of a closed Spool.
var ErrClosed = errors.New("spool: closed")

// ErrInUse is matched (errors.Is) by the error of Open when another process
// holds the spool file.
var ErrInUse = errors.New("spool in use by another process")

type inUseError struct {
	path string
	err  error
}

func (e *inUseError) Error() string {
	return fmt.Sprintf("spool %s is in use by another process", e.path)
}

func (e *inUseError) Unwrap() error        { return e.err }
func (e *inUseError) Is(target error) bool { return target == ErrInUse }

// Options configure a Spool. The zero value is usable.
type Options struct {
	// MaxEvents is how many events the spool holds before it drops the
	// oldest; 0 means DefaultMaxEvents. Lowering it on an existing spool
	// takes effect at the next Append.
	MaxEvents int
	// Logger receives the corrupt records removed from the spool and the
	// events dropped when it is full; nil means slog.Default().
	Logger *slog.Logger
}

// A Spool is a durable, bounded queue of events. It is safe for concurrent
// use; one process at a time may have a spool file open.
type Spool struct {
	db   *bolt.DB
	path string
	max  int
	log  *slog.Logger

	wmu sync.Mutex // serialises write transactions, so the mirror below is exact

	mu      sync.Mutex // guards the fields below, a mirror of the file
	closed  bool
	n       int
	lastSeq uint64
	dropped uint64
	corrupt uint64
}

// Open opens or creates the spool file at path with the default Options.
func Open(path string) (*Spool, error) {
	return OpenWithOptions(path, Options{})
}

// OpenWithOptions opens or creates the spool file at path (mode 0600). If
// another process has it open, it fails after a second with an error that
// matches ErrInUse and reads "spool PATH is in use by another process".
func OpenWithOptions(path string, opts Options) (*Spool, error) {
	if opts.MaxEvents < 0 {
		return nil, fmt.Errorf("spool: open %s: negative MaxEvents %d", path, opts.MaxEvents)
	}
	s := &Spool{path: path, max: opts.MaxEvents, log: opts.Logger}
	if s.max == 0 {
		s.max = DefaultMaxEvents
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType, // the spool churns: many frees
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &inUseError{path: path, err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	s.db = db
	err = db.Update(func(tx *bolt.Tx) error {
		ev, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		s.n = ev.Stats().KeyN
		s.lastSeq = ev.Sequence()
		s.dropped = getUint64(meta, keyDropped)
		s.corrupt = getUint64(meta, keyCorrupt)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	return s, nil
}

// Close closes the spool file. It waits for operations in progress; later
// calls of any method return ErrClosed. Closing twice is not an error.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("spool: close %s: %w", s.path, err)
	}
	return nil
}

func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// txErr maps bbolt's error for a closed database to ErrClosed.
func txErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Append stores e with the next sequence number, which it also sets in
// e.Seq, and returns that number once the event is on disk. If the spool is
// full, the oldest events are dropped first (see Dropped). On error nothing
// is stored and e.Seq is left as it was.
func (s *Spool) Append(e *mnguardv1.Event) (uint64, error) {
	if e == nil {
		return 0, errors.New("spool: append: nil event")
	}
	if s.isClosed() {
		return 0, fmt.Errorf("spool: append: %w", ErrClosed)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()

	oldSeq := e.Seq
	var seq uint64
	dropped := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		e.Seq = seq
		data, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("marshal event: %w", err)
		}
		// Make room: s.n is exact because writers hold s.wmu.
		c := b.Cursor()
		for n := s.n; n >= s.max; n-- {
			k, _ := c.First()
			if k == nil {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
			dropped++
		}
		if dropped > 0 {
			if err := addUint64(tx.Bucket(bucketMeta), keyDropped, uint64(dropped)); err != nil {
				return err
			}
		}
		return b.Put(seqKey(seq), data)
	})
	if err != nil {
		e.Seq = oldSeq
		return 0, fmt.Errorf("spool: append: %w", txErr(err))
	}
	s.mu.Lock()
	s.n += 1 - dropped
	s.lastSeq = seq
	s.dropped += uint64(dropped)
	s.mu.Unlock()
	if dropped > 0 {
		s.log.Warn("spool: full, dropped oldest events",
			slog.String("path", s.path), slog.Int("dropped", dropped), slog.Int("max_events", s.max))
	}
	return seq, nil
}

// Pending returns up to limit events, oldest first, without removing them;
// limit <= 0 means all. Records that do not decode are removed, logged and
// counted (see Corrupt) instead of being returned.
func (s *Spool) Pending(limit int) ([]*mnguardv1.Event, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("spool: pending: %w", ErrClosed)
	}
	for {
		var out []*mnguardv1.Event
		var bad []corruptRecord
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			for k, v := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
				if len(k) != 8 {
					bad = append(bad, corruptRecord{key: clone(k), err: fmt.Errorf("key of %d bytes", len(k))})
					continue
				}
				e := &mnguardv1.Event{}
				if err := proto.Unmarshal(v, e); err != nil {
					bad = append(bad, corruptRecord{key: clone(k), size: len(v), err: err})
					continue
				}
				e.Seq = binary.BigEndian.Uint64(k) // the key is authoritative
				out = append(out, e)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("spool: pending: %w", txErr(err))
		}
		if len(bad) == 0 {
			return out, nil
		}
		if err := s.removeCorrupt(bad); err != nil {
			return nil, fmt.Errorf("spool: pending: %w", err)
		}
		// Read again: the removed records may have hidden events within
		// the limit. Each round removes at least one record, so this ends.
	}
}

type corruptRecord struct {
	key  []byte
	size int
	err  error
}

func (s *Spool) removeCorrupt(bad []corruptRecord) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	removed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		removed = 0
		for _, r := range bad {
			if b.Get(r.key) == nil {
				continue // acknowledged meanwhile
			}
			if err := b.Delete(r.key); err != nil {
				return err
			}
			removed++
		}
		if removed == 0 {
			return nil
		}
		return addUint64(tx.Bucket(bucketMeta), keyCorrupt, uint64(removed))
	})
	if err != nil {
		return fmt.Errorf("remove corrupt records: %w", txErr(err))
	}
	s.mu.Lock()
	s.n -= removed
	s.corrupt += uint64(removed)
	s.mu.Unlock()
	for _, r := range bad {
		attrs := []slog.Attr{slog.String("path", s.path), slog.Int("size", r.size), slog.Any("error", r.err)}
		if len(r.key) == 8 {
			attrs = append(attrs, slog.Uint64("seq", binary.BigEndian.Uint64(r.key)))
		}
		s.log.LogAttrs(context.Background(), slog.LevelError, "spool: removed corrupt record", attrs...)
	}
	return nil
}

// Ack removes the events with the given sequence numbers. Numbers that are
// not in the spool (already acknowledged, dropped, never assigned) are
// ignored.
func (s *Spool) Ack(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if s.isClosed() {
		return fmt.Errorf("spool: ack: %w", ErrClosed)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	removed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		removed = 0
		for _, seq := range seqs {
			k := seqKey(seq)
			if b.Get(k) == nil {
				continue
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: ack: %w", txErr(err))
	}
	s.mu.Lock()
	s.n -= removed
	s.mu.Unlock()
	return nil
}

// Len returns the number of events in the spool.
func (s *Spool) Len() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("spool: len: %w", ErrClosed)
	}
	return s.n, nil
}

// LastSeq returns the sequence number of the last event appended, ever, to
// this spool file; 0 if none was.
func (s *Spool) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq
}

// Dropped returns how many events have been dropped, in the life of the
// spool file, because it was full. The count is persistent and only grows;
// the agent reports it (or its increase since the last report) so that the
// loss is visible at the server.
func (s *Spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Corrupt returns how many stored records, in the life of the spool file,
// could not be decoded and were removed. Like Dropped it is persistent and
// only grows.
func (s *Spool) Corrupt() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.corrupt
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func getUint64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func addUint64(b *bolt.Bucket, key []byte, delta uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, getUint64(b, key)+delta))
}
