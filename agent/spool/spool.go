// Package spool is the agent's durable outbox of events and of its latest
// posture snapshot.
//
// Events are appended with the next sequence number and kept, fsynced, in a
// bbolt file until the server acknowledges them (it does so after its
// commit). Sequence numbers start at 1, only grow, and are never reused: not
// after an acknowledgement, not after a restart, not after events were
// dropped, and not after a damaged file was set aside (a small side file,
// PATH.seq, reserves numbers ahead, see seqmark.go). The server stores each
// (terminal, seq) once, so resending an event is always safe.
//
// The latest posture snapshot is kept beside the events (SetPosture) until
// the server acknowledges the report that carried it (AckPosture), so that
// an agent restarted while the collector is away still holds it.
//
// The spool is bounded by Options.MaxEvents and Options.MaxBytes. When a new
// event does not fit, the posture snapshot goes first (the agent collects a
// new one at every report anyway), then the oldest events. Dropped events
// are not silent: the same transaction stores a "spool.events_dropped" event
// with their count and sequence range, itself delivered like any other (one
// per loss, grown in place while it is not yet handed out for delivery). An
// event that cannot be written at all (the disk is full) fails Append with
// the error; the spool counts such failures and stores a
// "spool.events_dropped" event with reason "write_failed" once a write
// succeeds again. A stored record that cannot be decoded is removed when
// Pending meets it, logged, and counted in Corrupt, so that one bad record
// cannot stop delivery of the events behind it.
//
// A loss is never reported less than it was, but may be reported twice:
// an older loss event dropped for room while a report carrying it is in
// flight has its count folded into the new one too. The count of events
// that could not be written lives in memory until a write succeeds: an
// agent stopped while its disk is still full loses that count (the log
// has every refused event).
//
// A spool file that is damaged as a whole (not a bbolt file, truncated, bad
// checksums, broken pages) is renamed PATH.corrupt-TIMESTAMP and kept for
// inspection; a new spool is created in its place and its first event,
// "spool.corrupt_file_set_aside", names the file kept (see corrupt.go).
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

// DefaultMaxBytes bounds the stored records (events and the posture
// snapshot) when Options.MaxBytes is 0: 100,000 events of ~300 bytes and
// room to spare. The file itself is larger by bbolt's pages and free list.
const DefaultMaxBytes = 64 << 20

// MinMaxBytes is the smallest Options.MaxBytes: room for a posture
// snapshot and some events.
const MinMaxBytes = 64 << 10

// lockTimeout is how long Open waits for another process to release the
// file.
const lockTimeout = time.Second

var (
	bucketEvents  = []byte("events") // 8-byte big-endian seq → Event; the bucket's sequence is the last seq
	bucketMeta    = []byte("meta")
	bucketPosture = []byte("posture")  // keyPosture → Posture; the bucket's sequence is the last generation
	keyPosture    = []byte("latest")   // the posture snapshot not yet acknowledged
	keyPostureGen = []byte("gen")      // uint64: its generation
	keyDropped    = []byte("dropped")  // uint64: events dropped because the spool was full
	keyCorrupt    = []byte("corrupt")  // uint64: records removed because they did not decode
	keyPDropped   = []byte("pdropped") // uint64: posture snapshots dropped for room
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
	// MaxBytes bounds the encoded size of the stored events and posture
	// snapshot; 0 means DefaultMaxBytes, less than MinMaxBytes is an
	// error. A loss record stored when events are dropped may exceed it by
	// its own few hundred bytes.
	MaxBytes int64
	// Logger receives the corrupt records removed from the spool, the
	// events dropped when it is full and a damaged file set aside; nil
	// means slog.Default().
	Logger *slog.Logger
	// Now names the damaged file set aside and times the loss events
	// (tests); nil is time.Now.
	Now func() time.Time
}

// A Spool is a durable, bounded queue of events plus the latest posture
// snapshot. It is safe for concurrent use; one process at a time may have a
// spool file open.
type Spool struct {
	db       *bolt.DB
	path     string
	max      int
	maxBytes int64
	log      *slog.Logger
	now      func() time.Time
	aside    SetAside // the damaged file set aside at open, if one was

	wmu sync.Mutex // serialises write transactions, so the mirror below is exact
	// mark is the sequence number reserved in PATH.seq: every number
	// handed out is below it. Guarded by wmu.
	mark uint64

	mu       sync.Mutex // guards the fields below, a mirror of the file
	closed   bool
	n        int
	bytes    int64 // encoded size of the stored events and posture
	lastSeq  uint64
	dropped  uint64
	corrupt  uint64
	pdropped uint64
	// openLoss is the seq of the stored loss event that later drops may
	// still grow; 0 once Pending handed it out (it may be on its way to
	// the server, whose copy would not grow).
	openLoss uint64
	// unstored counts the events whose Append failed to write since the
	// last loss event said so; first and last are their times.
	unstored                    uint64
	unstoredFirst, unstoredLast time.Time
	writeFailed                 uint64 // the life-of-process count, for Stats
}

// SetAside describes a damaged spool file found at open and kept aside.
type SetAside struct {
	// Path is where the damaged file now is; empty when none was found.
	Path string
	// Reason says what was wrong with it.
	Reason string
}

// Open opens or creates the spool file at path with the default Options.
func Open(path string) (*Spool, error) {
	return OpenWithOptions(path, Options{})
}

// OpenWithOptions opens or creates the spool file at path (mode 0600). If
// another process has it open, it fails after a second with an error that
// matches ErrInUse and reads "spool PATH is in use by another process". A
// damaged file is set aside and replaced (see SetAsideFile).
func OpenWithOptions(path string, opts Options) (*Spool, error) {
	if opts.MaxEvents < 0 {
		return nil, fmt.Errorf("spool: open %s: negative MaxEvents %d", path, opts.MaxEvents)
	}
	if opts.MaxBytes != 0 && opts.MaxBytes < MinMaxBytes {
		return nil, fmt.Errorf("spool: open %s: MaxBytes %d is below the minimum %d", path, opts.MaxBytes, MinMaxBytes)
	}
	s := &Spool{path: path, max: opts.MaxEvents, maxBytes: opts.MaxBytes, log: opts.Logger, now: opts.Now}
	if s.max == 0 {
		s.max = DefaultMaxEvents
	}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxBytes
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.openChecked(); err != nil {
		return nil, err
	}
	return s, nil
}

// load creates the buckets if needed and fills the mirror from the file,
// walking every record: the size bound needs their sizes, and a walk reads
// every page, so a damaged one shows now rather than at delivery.
func (s *Spool) load(tx *bolt.Tx) error {
	ev, err := tx.CreateBucketIfNotExists(bucketEvents)
	if err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	pb, err := tx.CreateBucketIfNotExists(bucketPosture)
	if err != nil {
		return err
	}
	s.n, s.bytes = 0, 0
	err = ev.ForEach(func(k, v []byte) error {
		s.n++
		s.bytes += int64(len(v))
		return nil
	})
	if err != nil {
		return err
	}
	s.bytes += int64(len(pb.Get(keyPosture)))
	s.lastSeq = ev.Sequence()
	s.dropped = getUint64(meta, keyDropped)
	s.corrupt = getUint64(meta, keyCorrupt)
	s.pdropped = getUint64(meta, keyPDropped)
	return nil
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
// full, the posture snapshot and then the oldest events are dropped first,
// and the drop recorded in a loss event (see the package doc). On error
// nothing is stored, e.Seq is left as it was, and a write failure is
// counted for the next loss event.
func (s *Spool) Append(e *mnguardv1.Event) (uint64, error) {
	if e == nil {
		return 0, errors.New("spool: append: nil event")
	}
	if s.isClosed() {
		return 0, fmt.Errorf("spool: append: %w", ErrClosed)
	}
	// Validate before anything is written: an event that cannot be
	// encoded is the caller's error, not a loss of the spool's.
	if _, err := proto.Marshal(e); err != nil {
		return 0, fmt.Errorf("spool: append: marshal event: %w", err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.reserve(s.LastSeq() + 2) // the event and maybe a loss event

	oldSeq := e.Seq
	var r appendResult
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		r, err = s.appendTx(tx, e)
		return err
	})
	if err != nil {
		e.Seq = oldSeq
		err = txErr(err)
		if !errors.Is(err, ErrClosed) {
			s.noteUnstored()
		}
		return 0, fmt.Errorf("spool: append: %w", err)
	}
	s.applyResult(r)
	return e.Seq, nil
}

// appendResult is what one append transaction changed, applied to the
// mirror once it committed.
type appendResult struct {
	added         int    // records added (the event, loss events)
	removed       int    // events dropped
	foldedRecords int    // older loss events dropped, their counts folded into the new one
	dropCount     uint64 // events the new loss event must report
	bytes         int64  // size change
	lastSeq       uint64
	postureGone   bool
	lossSeq       uint64 // the open loss event after the transaction; 0: none
	unstoredDone  bool   // the write-failure loss event was stored
	dropRange     [2]uint64
}

// appendTx stores e (and the loss events due) in tx.
func (s *Spool) appendTx(tx *bolt.Tx, e *mnguardv1.Event) (appendResult, error) {
	b := tx.Bucket(bucketEvents)
	meta := tx.Bucket(bucketMeta)
	s.mu.Lock()
	n, size, openLoss := s.n, s.bytes, s.openLoss
	unstored, uFirst, uLast := s.unstored, s.unstoredFirst, s.unstoredLast
	s.mu.Unlock()
	r := appendResult{lossSeq: openLoss}

	put := func(ev *mnguardv1.Event) error {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		ev.Seq = seq
		data, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal event: %w", err)
		}
		if err := b.Put(seqKey(seq), data); err != nil {
			return err
		}
		r.added++
		r.bytes += int64(len(data))
		r.lastSeq = seq
		return nil
	}
	if unstored > 0 {
		if err := put(lossEvent(s.now(), "write_failed", unstored, 0, 0, uFirst, uLast)); err != nil {
			return r, err
		}
		r.unstoredDone = true
	}

	data, err := proto.Marshal(e)
	if err != nil {
		return r, fmt.Errorf("marshal event: %w", err)
	}
	need := int64(len(data)) + 8 // and its seq
	// Make room: the posture snapshot first, then the oldest events (never
	// the open loss event, which says what was dropped).
	if n+r.added+1 > s.max || size+r.bytes+need > s.maxBytes {
		pb := tx.Bucket(bucketPosture)
		if v := pb.Get(keyPosture); v != nil {
			if err := pb.Delete(keyPosture); err != nil {
				return r, err
			}
			r.bytes -= int64(len(v))
			r.postureGone = true
			if err := addUint64(meta, keyPDropped, 1); err != nil {
				return r, err
			}
		}
	}
	c := b.Cursor()
	for n+r.added-r.removed-r.foldedRecords+1 > s.max || size+r.bytes+need > s.maxBytes {
		// After a Delete, bbolt's Next may skip a key: start over from
		// the first, which is now the oldest left.
		k, v := c.First()
		if len(k) == 8 && binary.BigEndian.Uint64(k) == openLoss {
			k, v = c.Next()
		}
		if k == nil {
			break // nothing left to drop: the event alone is over the bound
		}
		var seq uint64
		if len(k) == 8 {
			seq = binary.BigEndian.Uint64(k)
		}
		count, first, last := uint64(1), seq, seq
		if old, ok := decodeLoss(v); ok {
			// An older loss event: what it reported goes into the new
			// one, so that no loss goes unreported.
			count, first, last = lossRange(old)
			r.foldedRecords++
		} else {
			r.removed++
		}
		if err := c.Delete(); err != nil {
			return r, err
		}
		r.bytes -= int64(len(v))
		r.dropCount += count
		if first != 0 && (r.dropRange[0] == 0 || first < r.dropRange[0]) {
			r.dropRange[0] = first
		}
		r.dropRange[1] = max(r.dropRange[1], last)
	}
	if err := put(e); err != nil {
		return r, err
	}
	if r.removed > 0 {
		if err := addUint64(meta, keyDropped, uint64(r.removed)); err != nil {
			return r, err
		}
	}
	if r.dropCount > 0 {
		if err := s.recordDrop(tx, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// recordDrop grows the open loss event by the events just dropped, or
// stores a new one.
func (s *Spool) recordDrop(tx *bolt.Tx, r *appendResult) error {
	b := tx.Bucket(bucketEvents)
	now := s.now()
	if r.lossSeq != 0 {
		if v := b.Get(seqKey(r.lossSeq)); v != nil {
			old := &mnguardv1.Event{}
			if err := proto.Unmarshal(v, old); err == nil {
				count, first, last := lossRange(old)
				ev := lossEvent(old.GetTime().AsTime(), "spool_full", count+r.dropCount, min(first, r.dropRange[0]), max(last, r.dropRange[1]), time.Time{}, time.Time{})
				ev.Seq = r.lossSeq
				data, err := proto.Marshal(ev)
				if err != nil {
					return fmt.Errorf("marshal loss event: %w", err)
				}
				r.bytes += int64(len(data) - len(v))
				return b.Put(seqKey(r.lossSeq), data)
			}
		}
	}
	ev := lossEvent(now, "spool_full", r.dropCount, r.dropRange[0], r.dropRange[1], time.Time{}, time.Time{})
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	ev.Seq = seq
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("marshal loss event: %w", err)
	}
	if err := b.Put(seqKey(seq), data); err != nil {
		return err
	}
	r.added++
	r.bytes += int64(len(data))
	r.lastSeq = seq
	r.lossSeq = seq
	return nil
}

func (s *Spool) applyResult(r appendResult) {
	s.mu.Lock()
	s.n += r.added - r.removed - r.foldedRecords
	s.bytes += r.bytes
	if r.lastSeq > s.lastSeq {
		s.lastSeq = r.lastSeq
	}
	s.dropped += uint64(r.removed)
	if r.postureGone {
		s.pdropped++
	}
	if r.dropCount > 0 {
		s.openLoss = r.lossSeq
	}
	var unstored uint64
	if r.unstoredDone {
		unstored = s.unstored
		s.unstored = 0
	}
	s.mu.Unlock()
	if r.postureGone {
		s.log.Warn("spool: full, dropped the unsent posture snapshot (a new one is collected at the next report)",
			slog.String("path", s.path), slog.Int64("max_bytes", s.maxBytes), slog.Int("max_events", s.max))
	}
	if r.removed > 0 {
		s.log.Error("spool: full, dropped oldest events; a spool.events_dropped event reports them",
			slog.String("path", s.path), slog.Int("dropped", r.removed), slog.Uint64("first_seq", r.dropRange[0]),
			slog.Uint64("last_seq", r.dropRange[1]), slog.Int("max_events", s.max), slog.Int64("max_bytes", s.maxBytes))
	}
	if unstored > 0 {
		s.log.Warn("spool: writable again; the events that could not be written are reported by a spool.events_dropped event",
			slog.String("path", s.path), slog.Uint64("count", unstored))
	}
}

// noteUnstored counts an event that could not be written.
func (s *Spool) noteUnstored() {
	now := s.now()
	s.mu.Lock()
	if s.unstored == 0 {
		s.unstoredFirst = now
	}
	s.unstored++
	s.writeFailed++
	s.unstoredLast = now
	n := s.unstored
	s.mu.Unlock()
	s.log.Error("spool: event not stored (write failed); it is counted and reported once the spool can be written",
		slog.String("path", s.path), slog.Uint64("unstored", n))
}

// FlushLoss stores the loss event for events whose Append failed, if there
// are such, without waiting for the next Append. The agent calls it before
// each report, so that the loss reaches the collector once the disk has
// room again even if nothing else happens.
func (s *Spool) FlushLoss() error {
	if s.isClosed() {
		return fmt.Errorf("spool: flush loss: %w", ErrClosed)
	}
	s.mu.Lock()
	unstored := s.unstored
	s.mu.Unlock()
	if unstored == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.reserve(s.LastSeq() + 1)
	var r appendResult
	err := s.db.Update(func(tx *bolt.Tx) error {
		s.mu.Lock()
		u, first, last := s.unstored, s.unstoredFirst, s.unstoredLast
		s.mu.Unlock()
		b := tx.Bucket(bucketEvents)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		ev := lossEvent(s.now(), "write_failed", u, 0, 0, first, last)
		ev.Seq = seq
		data, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		r = appendResult{added: 1, bytes: int64(len(data)), lastSeq: seq, unstoredDone: true}
		return b.Put(seqKey(seq), data)
	})
	if err != nil {
		return fmt.Errorf("spool: flush loss: %w", txErr(err))
	}
	s.mu.Lock()
	r.lossSeq = s.openLoss
	s.mu.Unlock()
	s.applyResult(r)
	return nil
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
		// Hold wmu: the open loss event must not grow between this read
		// and the moment it counts as handed out.
		s.wmu.Lock()
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
		if err == nil {
			s.mu.Lock()
			for _, e := range out {
				if e.Seq == s.openLoss {
					s.openLoss = 0
				}
			}
			s.mu.Unlock()
		}
		s.wmu.Unlock()
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
	var freed int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		removed, freed = 0, 0
		for _, r := range bad {
			v := b.Get(r.key)
			if v == nil {
				continue // acknowledged meanwhile
			}
			freed += int64(len(v))
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
	s.bytes -= freed
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
	var freed int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		removed, freed = 0, 0
		for _, seq := range seqs {
			k := seqKey(seq)
			v := b.Get(k)
			if v == nil {
				continue
			}
			freed += int64(len(v))
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
	s.bytes -= freed
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
// this spool file (or, after a damaged file was set aside, the number the
// new one started from); 0 if none was.
func (s *Spool) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq
}

// Dropped returns how many events have been dropped, in the life of the
// spool file, because it was full. The count is persistent and only grows;
// each drop is also reported by a spool.events_dropped event.
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

// Stats is a snapshot of the spool's counters, for status output.
type Stats struct {
	Events         int
	Bytes          int64
	MaxEvents      int
	MaxBytes       int64
	Dropped        uint64 // events dropped for room, life of the file
	PostureDropped uint64 // posture snapshots dropped for room, life of the file
	Corrupt        uint64 // undecodable records removed, life of the file
	WriteFailed    uint64 // Appends that failed to write, life of the process
	Unreported     uint64 // of those, not yet in a stored loss event
	PostureKept    bool   // a posture snapshot awaits acknowledgement
	SetAside       SetAside
}

// Stats returns the spool's counters.
func (s *Spool) Stats() Stats {
	kept := false
	if !s.isClosed() {
		_ = s.db.View(func(tx *bolt.Tx) error {
			kept = tx.Bucket(bucketPosture).Get(keyPosture) != nil
			return nil
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Events: s.n, Bytes: s.bytes, MaxEvents: s.max, MaxBytes: s.maxBytes, Dropped: s.dropped, PostureDropped: s.pdropped,
		Corrupt: s.corrupt, WriteFailed: s.writeFailed, Unreported: s.unstored, PostureKept: kept, SetAside: s.aside,
	}
}

// SetAsideFile says whether Open found the spool file damaged and kept it
// aside, where, and why.
func (s *Spool) SetAsideFile() SetAside { return s.aside }

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
