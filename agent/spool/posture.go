package spool

import (
	"errors"
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// ErrNoRoom is matched by the error of SetPosture when the snapshot does
// not fit within Options.MaxBytes beside the events: events are never
// dropped for a posture snapshot. The snapshot is then not kept (the one
// it would have replaced is gone too, being older).
var ErrNoRoom = errors.New("no room in the spool")

// SetPosture keeps p as the latest posture snapshot, replacing the one kept
// before, and returns its generation for AckPosture. It is on disk when
// SetPosture returns.
func (s *Spool) SetPosture(p *mnguardv1.Posture) (uint64, error) {
	if p == nil {
		return 0, errors.New("spool: set posture: nil posture")
	}
	if s.isClosed() {
		return 0, fmt.Errorf("spool: set posture: %w", ErrClosed)
	}
	data, err := proto.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("spool: set posture: marshal: %w", err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var gen uint64
	var delta int64
	noRoom := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketPosture)
		old := int64(len(pb.Get(keyPosture)))
		s.mu.Lock()
		size := s.bytes
		s.mu.Unlock()
		if size-old+int64(len(data)) > s.maxBytes {
			noRoom = true
			delta = -old
			if old == 0 {
				return nil
			}
			if err := pb.Delete(keyPosture); err != nil {
				return err
			}
			return addUint64(tx.Bucket(bucketMeta), keyPDropped, 1)
		}
		var err error
		if gen, err = pb.NextSequence(); err != nil {
			return err
		}
		if err := pb.Put(keyPostureGen, seqKey(gen)); err != nil {
			return err
		}
		delta = int64(len(data)) - old
		return pb.Put(keyPosture, data)
	})
	if err != nil {
		return 0, fmt.Errorf("spool: set posture: %w", txErr(err))
	}
	s.mu.Lock()
	s.bytes += delta
	if noRoom {
		s.pdropped++
	}
	s.mu.Unlock()
	if noRoom {
		s.log.Warn("spool: full of events, posture snapshot not kept (it is still sent; a new one is collected at the next report)",
			slog.String("path", s.path), slog.Int("size", len(data)), slog.Int64("max_bytes", s.maxBytes))
		return 0, fmt.Errorf("spool: set posture: %w", ErrNoRoom)
	}
	return gen, nil
}

// LatestPosture returns the posture snapshot kept and its generation, or
// nil and 0 when none is (none set, or acknowledged, or dropped). A kept
// snapshot that does not decode is removed and counted in Corrupt.
func (s *Spool) LatestPosture() (*mnguardv1.Posture, uint64, error) {
	if s.isClosed() {
		return nil, 0, fmt.Errorf("spool: posture: %w", ErrClosed)
	}
	var data []byte
	var gen uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketPosture)
		data = clone(pb.Get(keyPosture))
		gen = getUint64(pb, keyPostureGen)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("spool: posture: %w", txErr(err))
	}
	if data == nil {
		return nil, 0, nil
	}
	p := &mnguardv1.Posture{}
	if err := proto.Unmarshal(data, p); err != nil {
		s.log.Error("spool: removed corrupt posture snapshot", slog.String("path", s.path), slog.Any("error", err))
		if err := s.dropPosture(gen, true); err != nil {
			return nil, 0, err
		}
		return nil, 0, nil
	}
	return p, gen, nil
}

// AckPosture removes the kept snapshot if it is still generation gen: the
// collector stored it. A newer snapshot set meanwhile stays.
func (s *Spool) AckPosture(gen uint64) error {
	if gen == 0 {
		return nil
	}
	if s.isClosed() {
		return fmt.Errorf("spool: ack posture: %w", ErrClosed)
	}
	return s.dropPosture(gen, false)
}

func (s *Spool) dropPosture(gen uint64, corrupt bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var freed int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketPosture)
		v := pb.Get(keyPosture)
		if v == nil || getUint64(pb, keyPostureGen) != gen {
			return nil
		}
		freed = int64(len(v))
		if err := pb.Delete(keyPosture); err != nil {
			return err
		}
		if corrupt {
			return addUint64(tx.Bucket(bucketMeta), keyCorrupt, 1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: ack posture: %w", txErr(err))
	}
	s.mu.Lock()
	s.bytes -= freed
	if corrupt && freed > 0 {
		s.corrupt++
	}
	s.mu.Unlock()
	return nil
}

// PostureDropped returns how many posture snapshots, in the life of the
// spool file, were dropped or not kept for room.
func (s *Spool) PostureDropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pdropped
}
