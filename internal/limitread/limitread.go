// Package limitread reads files whose size is not ours to trust (sysfs
// attributes, resolver files, state files another process may have
// replaced) with a bound, so that an oversized file is an error rather
// than memory.
package limitread

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// TooLargeError says a file held more than Limit bytes.
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string { return fmt.Sprintf("longer than %d bytes", e.Limit) }

// File reads the file at path whole. A file of more than limit bytes is
// an *fs.PathError (Op "read") wrapping a *TooLargeError; a missing file
// is the os.Open error (errors.Is(err, fs.ErrNotExist)).
func File(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return From(f, path, limit)
}

// From reads r whole, as File does; name is the path its errors give.
func From(r io.Reader, name string, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &fs.PathError{Op: "read", Path: name, Err: &TooLargeError{Limit: limit}}
	}
	return b, nil
}
