package limitread

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	if err := os.WriteFile(name, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := File(name, 5); err != nil || string(b) != "12345" {
		t.Errorf("File(5 bytes, limit 5) = %q, %v", b, err)
	}
	_, err := File(name, 4)
	var tl *TooLargeError
	var pe *fs.PathError
	if !errors.As(err, &tl) || tl.Limit != 4 || !errors.As(err, &pe) || pe.Path != name || err.Error() != "read "+name+": longer than 4 bytes" {
		t.Errorf("File(5 bytes, limit 4) = %v, want a path error saying longer than 4 bytes", err)
	}
	if _, err := File(filepath.Join(dir, "missing"), 4); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
