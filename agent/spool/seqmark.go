package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
)

// The sequence mark: PATH.seq holds a number above every sequence number
// the spool has handed out, written (temp file, fsync, rename) before the
// numbers below it are used, seqReserve at a time. When the spool file is
// damaged and replaced, or deleted by hand, the new one starts at the mark:
// the collector stores each (terminal, seq) once, so a number used again
// would make it take a new event for a copy of an old one and drop it.

// seqReserve is how many numbers one write of the mark reserves.
const seqReserve = 1 << 14

// maxMarkBytes bounds the mark file: a decimal uint64 and a newline.
const maxMarkBytes = 32

func markPath(path string) string { return path + ".seq" }

// parseMark decodes the mark file's content: decimal digits and a newline.
func parseMark(data []byte) (uint64, error) {
	if len(data) > maxMarkBytes {
		return 0, fmt.Errorf("%d bytes, at most %d", len(data), maxMarkBytes)
	}
	digits, ok := bytes.CutSuffix(data, []byte("\n"))
	if !ok {
		return 0, errors.New("no newline at the end")
	}
	if len(digits) == 0 || (len(digits) > 1 && digits[0] == '0') {
		return 0, fmt.Errorf("%q is not a number", digits)
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number", digits)
		}
	}
	v, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", digits, err)
	}
	return v, nil
}

// readMark reads the mark; 0 and no error when there is no mark file.
func readMark(path string) (uint64, error) {
	f, err := os.Open(markPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMarkBytes+1))
	if err != nil {
		return 0, err
	}
	v, err := parseMark(data)
	if err != nil {
		return 0, fmt.Errorf("sequence mark %s: %w", markPath(path), err)
	}
	return v, nil
}

// writeMark replaces the mark file, durably.
func writeMark(path string, v uint64) error {
	dst := markPath(path)
	f, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.WriteString(strconv.FormatUint(v, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if runtime.GOOS != "windows" {
		if d, err := os.Open(filepath.Dir(dst)); err == nil {
			err = d.Sync()
			d.Close()
			return err
		}
	}
	return nil
}

// reserve makes sure the mark is above next, the highest number the
// caller is about to use. Called with wmu held. A mark that cannot be
// written (disk full) is logged and the append goes on: the mark matters
// only if the file is later lost, and refusing events now would lose them
// for sure.
func (s *Spool) reserve(next uint64) {
	if next < s.mark {
		return
	}
	m := next + seqReserve
	if err := writeMark(s.path, m); err != nil {
		s.log.Warn("spool: sequence mark not written; numbers stay unique unless the spool file is lost before it is",
			slog.String("path", markPath(s.path)), slog.Any("error", err))
		return
	}
	s.mark = m
}
