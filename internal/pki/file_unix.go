//go:build !windows

package pki

import (
	"fmt"
	"os"
)

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// CheckPrivateFileMode returns an error naming path if the file is
// accessible to its group or to others (mode & 0o077 != 0). Private keys must
// be 0600 or stricter. On Windows, where access is governed by ACLs, it only
// checks that the file exists.
func CheckPrivateFileMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: a private key must not be accessible to group or others; run: chmod 600 %s", path, mode, path)
	}
	return nil
}
