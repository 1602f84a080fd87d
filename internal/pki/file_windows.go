//go:build windows

package pki

import "os"

// syncDir is a no-op on Windows: directories cannot be opened for sync, and
// MoveFileEx (used by os.Rename) replaces the target in place.
func syncDir(string) error { return nil }

// CheckPrivateFileMode returns an error naming path if the file is
// accessible to its group or to others (mode & 0o077 != 0). Private keys must
// be 0600 or stricter. On Windows, where access is governed by ACLs, it only
// checks that the file exists.
func CheckPrivateFileMode(path string) error {
	_, err := os.Stat(path)
	return err
}
