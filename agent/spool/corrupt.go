package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// corruptError says the spool file is damaged as a whole.
type corruptError struct{ reason string }

func (e *corruptError) Error() string { return "damaged spool file: " + e.reason }

// openChecked opens the spool file; a damaged one is renamed
// PATH.corrupt-TIMESTAMP, kept, and replaced by a new spool whose first
// event says so. Sequence numbers go on from the mark (seqmark.go).
func (s *Spool) openChecked() error {
	err := s.openFile()
	var ce *corruptError
	if !errors.As(err, &ce) {
		return err
	}
	// Read before the new file reserves numbers of its own.
	floor, merr := readMark(s.path)
	if merr != nil {
		s.log.Warn("spool: sequence mark unreadable", slog.Any("error", merr))
	}
	// Colons are not allowed in Windows file names.
	aside := s.path + ".corrupt-" + s.now().UTC().Format("20060102T150405.000000000Z")
	if rerr := os.Rename(s.path, aside); rerr != nil {
		return fmt.Errorf("spool: open %s: %s, and it could not be set aside (move it away by hand to start with an empty spool): %w", s.path, ce.reason, rerr)
	}
	s.log.Error("spool: damaged file set aside and replaced by an empty spool; the events it held are not delivered",
		slog.String("path", s.path), slog.String("kept_as", aside), slog.String("reason", ce.reason))
	if err := s.openFile(); err != nil {
		return err
	}
	s.aside = SetAside{Path: aside, Reason: ce.reason}
	// Numbers the damaged file used must not come again.
	how := "sequence mark"
	if floor == 0 {
		// No mark (a spool from before marks): microseconds since 1970
		// are above any count of events this terminal made.
		floor, how = uint64(s.now().UnixMicro()), "clock"
	}
	if s.LastSeq() < floor {
		if err := s.setSequence(floor); err != nil {
			s.db.Close()
			return fmt.Errorf("spool: open %s: %w", s.path, err)
		}
	}
	s.log.Info("spool: new spool continues the sequence numbers", slog.Uint64("after", s.LastSeq()), slog.String("from", how))
	e := &mnguardv1.Event{
		Time: timestamppb.New(s.now()), Type: EventCorruptFileSetAside, Severity: mnguardv1.Severity_SEVERITY_ALERT,
		Message:    fmt.Sprintf("the agent's spool file was damaged (%s); kept as %s, a new one was started: events it held were not delivered", ce.reason, aside),
		Attributes: map[string]string{"path": aside, "reason": ce.reason, "next_seq": strconv.FormatUint(s.LastSeq()+1, 10)},
	}
	if _, err := s.Append(e); err != nil {
		s.db.Close()
		return fmt.Errorf("spool: open %s: record the damaged file: %w", s.path, err)
	}
	return nil
}

// setSequence makes the next event's number floor+1.
func (s *Spool) setSequence(floor uint64) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).SetSequence(floor)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lastSeq = floor
	s.mu.Unlock()
	return nil
}

// openFile opens the bbolt file at s.path, checks it whole and loads the
// mirror. A damaged file is a *corruptError: bbolt's own refusals (not a
// bbolt file, bad meta checksums, wrong version, too small), a file shorter
// than its pages, pages its consistency check refuses, and any panic or
// memory fault bbolt meets reading it.
func (s *Spool) openFile() (err error) {
	var db *bolt.DB
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if db != nil {
			func() {
				defer func() { _ = recover() }()
				db.Close()
			}()
		}
		err = &corruptError{reason: fmt.Sprintf("reading it failed: %v", r)}
	}()
	// A damaged file can point bbolt at pages past its end: a memory
	// fault then is a panic recovered above, not the end of the agent.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(s.path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType, // the spool churns: many frees
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return &inUseError{path: s.path, err: err}
	case err != nil && damagedOpen(err):
		db = nil
		return &corruptError{reason: err.Error()}
	case err != nil:
		db = nil
		return fmt.Errorf("spool: open %s: %w", s.path, err)
	}
	if reason := checkFile(db, s.path); reason != "" {
		db.Close()
		db = nil
		return &corruptError{reason: reason}
	}
	s.db = db
	if err := db.Update(s.load); err != nil {
		db.Close()
		db = nil
		if isDiskError(err) {
			return fmt.Errorf("spool: open %s: %w", s.path, err)
		}
		return &corruptError{reason: err.Error()}
	}
	mark, merr := readMark(s.path)
	if merr != nil {
		s.log.Warn("spool: sequence mark unreadable; written anew", slog.Any("error", merr))
	}
	s.mark = mark
	if s.lastSeq == 0 && mark > 0 {
		// A new file beside an old mark: the spool was deleted by hand.
		if err := s.setSequence(mark); err != nil {
			db.Close()
			db = nil
			return fmt.Errorf("spool: open %s: %w", s.path, err)
		}
	}
	s.wmu.Lock()
	s.reserve(s.lastSeq + 1)
	s.wmu.Unlock()
	return nil
}

// damagedOpen says bbolt refused to open the file for what is in it.
func damagedOpen(err error) bool {
	if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrInvalidMapping) {
		return true
	}
	// bbolt's "file size too small" has no sentinel.
	return strings.Contains(err.Error(), "file size too small")
}

// isDiskError says err came from the disk, not from the file's content.
func isDiskError(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe)
}

// checkFile returns why the open file is damaged, or "".
func checkFile(db *bolt.DB, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "" // not about the content; the next step reports it
	}
	var reason string
	err = db.View(func(tx *bolt.Tx) error {
		if hwm := tx.Size(); fi.Size() < hwm {
			reason = fmt.Sprintf("truncated: %d bytes, its pages need %d", fi.Size(), hwm)
			return nil
		}
		for cerr := range tx.Check() {
			if reason == "" {
				reason = "consistency check: " + cerr.Error()
			}
		}
		return nil
	})
	if err != nil && reason == "" {
		reason = err.Error()
	}
	return reason
}
